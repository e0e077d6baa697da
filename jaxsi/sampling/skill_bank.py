r"""Skill-SD's summariser: skills written from the policy's own finished trajectories.

Skill-SD (seeds catalog_02 [20]; GK, the paper's equations unchecked)
summarises finished trajectories into skills and conditions only the
self-teacher on them (``methods.opsd.skill_sd``). :class:`SkillSummaries` is
the rollout stage that keeps those skills: after each batch is sampled and
graded, the verified-correct trajectories (the policy's own successful
behaviour) are added to a per-category bank, and the skill of a category is
``summarise(bank[category])``; the privileged prompt of a task is
``skill + '|' + prompt`` (as ``privileged.skill_context``). The batch is
re-laid under the skills written from EARLIER batches (a sample never sees
its own success), then the bank is updated.

The summary on the synthetic tasks is extractive: :func:`worked_examples`
writes the last ``max_examples`` distinct solved problems as
``'12+34=64;55+11=66'`` (the problem and the policy's own completion). A
generative natural-language summary by a model (the paper's summariser is an
LLM prompted with the trajectories) is not built: the tiny synthetic models
cannot write one. Before the bank has a success for a category, the fixed
skill of ``privileged.SKILLS`` (or ``fallback``) is used. The bank lives in
the stage (host memory): it is not checkpointed, so a resumed run starts
with an empty bank.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from jaxsi.data import batching
from jaxsi.sampling import privileged
from jaxsi.sampling import rollouts

SKILL_SEP = ";"


def worked_examples(examples: Sequence[tuple]) -> str:
  """``'p1c1;p2c2'``: each (prompt, completion) written out, joined by ';'."""
  return SKILL_SEP.join(f"{p}{c}" for p, c in examples)


@dataclasses.dataclass(frozen=True)
class _Given(rollouts.Stage):
  """A stage that returns an already sampled batch (for the layout step)."""

  spec: Any = None
  batch: Any = None

  def __call__(self, ctx, params, rng):
    del ctx, params, rng
    return self.batch


@dataclasses.dataclass(frozen=True)
class SkillSummaries(privileged.Privileged):
  """``Privileged`` whose context is a skill summarised from past successes.

  Attributes (besides ``Privileged``'s; ``context_fn`` is not read):
    max_examples: successes kept per category (>= 1).
    summarise: ``fn([(prompt, completion), ...]) -> str`` (default
      :func:`worked_examples`).
    fallback: category → skill text before the first success (default
      ``privileged.SKILLS``).
    bank: category → list of (prompt, completion), newest last (mutable
      state of the run).
  """

  context_fn: Callable[[Any], str] = privileged.skill_context
  max_examples: int = 2
  summarise: Callable[[Sequence[tuple]], str] = worked_examples
  fallback: Optional[Mapping[str, str]] = dataclasses.field(default=None, compare=False,
                                                            hash=False)
  bank: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

  def __post_init__(self):
    super().__post_init__()
    if int(self.max_examples) != self.max_examples or self.max_examples < 1:
      raise ValueError(f"SkillSummaries: max_examples must be an integer >= 1, got"
                       f" {self.max_examples!r}")

  def skill(self, category: str) -> str:
    """The category's current skill text (summary, or the fallback)."""
    if self.bank.get(category):
      return self.summarise(self.bank[category])
    table = privileged.SKILLS if self.fallback is None else self.fallback
    if category not in table:
      raise KeyError(f"SkillSummaries: no success and no fallback skill for category"
                     f" {category!r} (known: {sorted(table)}); pass fallback={{...}}")
    return table[category]

  def context(self, task) -> str:
    """``skill(task.category) + '|' + task.prompt``."""
    return f"{self.skill(task.category)}{privileged.SEP}{task.prompt}"

  def add(self, task, completion: str) -> None:
    """Records one verified success (distinct prompts, the newest kept)."""
    rows = [r for r in self.bank.get(task.category, []) if r[0] != task.prompt]
    rows.append((task.prompt, completion))
    self.bank[task.category] = rows[-int(self.max_examples):]

  def supervised_extras(self, tasks) -> list:
    """(skill of OTHER labelled tasks + '|' + prompt, target) for every
    ``teach``-th task, so the warm-started teacher knows the format."""
    out = list(self.inner.supervised_extras(tasks))
    tasks = list(tasks)
    if not self.teach:
      return out
    for i in range(0, len(tasks), int(self.teach)):
      t = tasks[i]
      others = [(u.prompt, u.target or u.answer) for u in tasks
                if u.category == t.category and u.prompt != t.prompt][:self.max_examples]
      skill = self.summarise(others) if others else self.skill(t.category)
      out.append((f"{skill}{privileged.SEP}{t.prompt}", t.target or t.answer))
    return out

  def context_variants(self) -> dict:
    return {}   # encoded per batch from the bank, not once

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    batch = self.inner(ctx, params, rng)
    tasks = ctx.tasks
    rows = [batching.encode_prompt(ctx.tokenizer, self.context(t)) for t in tasks]
    lctx = copy.copy(ctx)
    lctx.prompt_variants = dict(ctx.prompt_variants, **{self.name: rows})
    layout = privileged.Privileged(inner=_Given(spec=self.spec, batch=batch),
                                   context_fn=self.context, name=self.name,
                                   buckets=self.buckets, teach=0)
    out = layout(lctx, params, rng)
    # Update the bank with this batch's verified successes.
    traj = batch.traj
    correct = np.nan_to_num(np.asarray(batch.rewards, np.float64)[:, 0]) >= 1.0
    valid = np.asarray(traj.valid, bool)
    tokens, mask = np.asarray(traj.tokens), np.asarray(traj.loss_mask, bool)
    eos = int(ctx.tokenizer.eos_id)
    for r in np.flatnonzero(correct & valid):
      ids = [int(x) for x in tokens[r][mask[r]] if int(x) != eos]
      self.add(tasks[int(batch.task_index[r])], ctx.tokenizer.decode(ids))
    out.metrics["skill_sd/bank_size"] = float(sum(len(v) for v in self.bank.values()))
    return out


__all__ = ["SKILL_SEP", "SkillSummaries", "worked_examples"]
