r"""Rollout stages for label-free RL: pseudo-label monitoring, paired rephrasings.

Label-free rewards never read the gold answer, but a researcher must see how
good the self-generated signal is and when it collapses (SRT,
arXiv:2505.21444 §5: agreement → 1 while accuracy falls). Reward stages
cannot log metrics through the loop (only their columns and failure
counts travel), so these stages compute the monitors from the scored batch
and put them in ``Batch.metrics`` (logged under their names):

* :class:`LabelMonitor` wraps any single-turn stage; with ``vote=True`` it
  logs ``label_free/pseudo_label_acc`` (the group's majority answer is right
  by the verifier), ``label_free/agreement``, ``label_free/no_label_frac``,
  ``label_free/unparseable_frac`` and ``label_free/sample_acc``; with
  ``vote=False`` only ``label_free/sample_acc``.
* :class:`Rephrased` samples every prompt q and its rephrasing q' (Co-Reward,
  arXiv:2508.00410 §3): ``n`` completions each, so B = 2·R·n; groups
  ``0..R−1`` are the originals, ``R..2R−1`` the rephrasings (group id = the
  group's first row), and ``traj.pair_ids[i]`` = the first row (the group
  id) of the partner group. Both halves are graded in one reward call, so a
  cross-group reward sees both groups of every pair. Its monitors read the
  partner's vote as the label.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.rewards import label_free as label_lib
from jaxsi.sampling import rollouts

PREFIX = "label_free/"


def graded_rows(ctx, traj, task_index):
  """(rows, tasks, texts, group_ids, pair_ids) of the valid rows (host)."""
  valid = np.asarray(traj.valid, bool)
  rows = np.flatnonzero(valid)
  tokens, mask = np.asarray(traj.tokens), np.asarray(traj.loss_mask, bool)
  texts = [ctx.tokenizer.decode(tokens[r][mask[r]].tolist()) for r in rows]
  tasks = [ctx.tasks[int(task_index[r])] for r in rows]
  groups = np.asarray(traj.group_ids)[rows]
  pairs = None if traj.pair_ids is None else np.asarray(traj.pair_ids)[rows]
  return rows, tasks, texts, groups, pairs


def monitor_metrics(ctx, batch: rollouts.Batch, *, vote: bool,
                    cross: bool = False) -> dict:
  """The ``label_free/*`` monitors of a scored batch (see module docstring)."""
  _, tasks, texts, groups, pairs = graded_rows(ctx, batch.traj, batch.task_index)
  if not vote:
    acc = (float(np.mean([t.verify(c) for t, c in zip(tasks, texts)]))
           if texts else 0.0)
    return {PREFIX + "sample_acc": acc}
  stats = label_lib.pseudo_label_stats(tasks, texts, groups,
                                       label_groups=pairs if cross else None)
  return {PREFIX + k: float(v) for k, v in stats.items()}


class _Wrapper(rollouts.Stage):
  """Delegates the Stage interface to ``self.inner``."""

  @property
  def spec(self):
    return self.inner.spec

  def prompt_variants(self) -> dict:
    return self.inner.prompt_variants()

  def reward_names(self, names: tuple) -> tuple:
    return self.inner.reward_names(names)

  def length(self, prompt_len: int) -> int:
    return self.inner.length(prompt_len)

  def supervised_extras(self, tasks) -> list:
    return self.inner.supervised_extras(tasks)


@dataclasses.dataclass(frozen=True)
class LabelMonitor(_Wrapper):
  """``inner``'s batch plus the ``label_free/*`` monitors (module docstring).

  Attributes:
    inner: a single-turn rollout stage (``Sample``, ``RefillUntil`` …).
    vote: also report the majority-vote pseudo-label statistics.
  """

  inner: Any = rollouts.Sample()
  vote: bool = True

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    batch = self.inner(ctx, params, rng)
    metrics = dict(batch.metrics)
    metrics.update(monitor_metrics(ctx, batch, vote=self.vote))
    return dataclasses.replace(batch, metrics=metrics)


def _concat(a, b):
  return jax.tree.map(lambda x, y: np.concatenate([np.asarray(x), np.asarray(y)]),
                      a, b)


@dataclasses.dataclass(frozen=True)
class Rephrased(rollouts.Stage):
  """Every prompt and its rephrasing, ``n`` samples each, paired (Co-Reward).

  Attributes:
    spec: the rollout spec (``n`` per prompt and per rephrasing).
    rephrase_fn: task → the rephrased prompt text
      (``jaxsi.data.rephrase.rephrase_prompt``).
    variant: the prompt-variant name the loop encodes it under.
  """

  spec: spec_lib.RolloutSpec = spec_lib.RolloutSpec()
  rephrase_fn: Callable[[Any], str] = None
  variant: str = "rephrased"

  def prompt_variants(self) -> dict:
    if self.rephrase_fn is None:
      raise ValueError("Rephrased: give a rephrase_fn (task -> prompt text)")
    return {self.variant: self.rephrase_fn}

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    if self.rephrase_fn is None:
      raise ValueError("Rephrased: give a rephrase_fn (task -> prompt text)")
    n = self.spec.n
    task_index = np.asarray(ctx.next_prompts())
    r = task_index.shape[0]
    t0 = time.perf_counter()
    original = ctx.generate(params, task_index, jax.random.fold_in(rng, 0), n=n)
    rephrased = ctx.generate(params, task_index, jax.random.fold_in(rng, 1), n=n,
                             variant=self.variant)
    t_gen = time.perf_counter() - t0
    group = np.arange(2 * r, dtype=np.int32) * n
    partner = np.concatenate([group[r:], group[:r]])
    traj = _concat(original, rephrased).replace(
        group_ids=np.repeat(group, n), pair_ids=np.repeat(partner, n))
    rows = np.concatenate([np.repeat(task_index, n)] * 2)
    t0 = time.perf_counter()
    rewards, failed = ctx.rewards(traj, rows)
    t_rew = time.perf_counter() - t0
    zero = rollouts.group_zero_variance(rollouts.total_reward(rewards),
                                        traj.valid, n)
    batch = rollouts.Batch(
        traj=traj, rewards=rewards, task_index=rows,
        info=dict(gen_s=t_gen, reward_s=t_rew, reward_failed=failed,
                  gen_tokens=int(np.asarray(traj.loss_mask).sum()),
                  gen_batches=1, frac_zero_variance_groups=float(zero.mean()),
                  effective_batch_frac=float(1.0 - zero.mean())))
    batch.metrics.update(monitor_metrics(ctx, batch, vote=True, cross=True))
    return batch


__all__ = ["LabelMonitor", "Rephrased", "graded_rows", "monitor_metrics"]
