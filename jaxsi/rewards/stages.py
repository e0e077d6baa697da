r"""Reward stages: the whole batch in, f32[B, K] with named columns out.

A reward stage is called once per rollout batch as ``stage(ctx, inputs)``
and returns ``(rewards f32[B', K], info)`` for the ``B'`` graded rows of
:class:`RewardInputs`. It has a ``names`` attribute (its K column names).
Two kinds:

* **Host rewards** (:func:`host`): a Python function over the batch. A plain
  ``fn(tasks, completions)`` function (verifiers, format checks) is one; a
  function decorated with :func:`batch_reward` receives the
  :class:`RewardInputs` itself — with ``group_ids`` and ``prompt_ids`` — so a
  group reward (a majority vote, a rank within the group) is expressible.
  Failures are isolated as in ``reward_fn.safe_rewards`` (NaN rows, never an
  exception, a timeout per call), and a failed batch call is retried **per
  group**, never per sample, so a group reward never sees part of a group.
* **Device scorers** (:class:`Scorer`): a reward read from a role's
  parameters through the loop's stage context — a judge that writes a
  judgment which is parsed into a score, a learned reward model. ``ctx``
  provides ``generate_text(role, prompts, max_new_tokens, strategy=None)``
  (jitted, batched sampling with that role's parameters; greedy by default)
  and ``role_model_params(role)`` (that role's model and parameters, e.g.
  for a forward pass on the graded rows: ``sampling/confidence.py``).

``as_stages(fns)`` turns what a method lists (stages or plain functions) into
stages; the loop concatenates their columns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from jaxsi.rewards import reward_fn as reward_lib


@dataclasses.dataclass(frozen=True)
class RewardInputs:
  """The graded rows of one rollout batch (host data).

  Attributes:
    tasks: the task of every graded row.
    completions: decoded completion text of every graded row.
    group_ids: int[B'] group of every row (the rows of one prompt's samples
      share one id; every group is complete).
    prompt_ids: int[B'] dataset index of every row's prompt.
    rows: int[B'] row index in the rollout batch.
    traj: the host Trajectory of those rows (numpy), or None.
  """

  tasks: Sequence[Any]
  completions: Sequence[str]
  group_ids: np.ndarray
  prompt_ids: np.ndarray
  rows: np.ndarray
  traj: Any = None

  def __len__(self) -> int:
    return len(self.completions)

  def take(self, index: np.ndarray) -> "RewardInputs":
    """The sub-batch of rows ``index`` (positions in this batch)."""
    index = np.asarray(index, np.int64)
    traj = None
    if self.traj is not None:
      import jax  # pylint: disable=g-import-not-at-top
      traj = jax.tree.map(lambda x: np.asarray(x)[index], self.traj)
    return RewardInputs(tasks=[self.tasks[i] for i in index],
                        completions=[self.completions[i] for i in index],
                        group_ids=np.asarray(self.group_ids)[index],
                        prompt_ids=np.asarray(self.prompt_ids)[index],
                        rows=np.asarray(self.rows)[index], traj=traj)


def batch_reward(fn: Callable[[RewardInputs], Any], *names: str) -> Callable:
  """Marks ``fn(inputs: RewardInputs) -> f32[B] | f32[B, K]`` as a batch reward.

  Args:
    fn: the function (it sees group and prompt ids).
    *names: its column names (default: the function's name).

  Returns:
    ``fn`` with ``takes_inputs = True`` and ``names``.
  """
  fn.takes_inputs = True
  fn.names = tuple(names) if names else (getattr(fn, "__name__", "reward"),)
  return fn


@dataclasses.dataclass(frozen=True, eq=False)
class HostReward:
  """A host reward function run as a stage (see the module docstring).

  Attributes:
    fn: ``fn(tasks, completions)`` or a :func:`batch_reward` function.
    names: its column names.
    timeout_s: seconds per call (None: the loop's ``reward_timeout_s``).
  """

  fn: Callable
  names: tuple
  timeout_s: Optional[float] = None

  def __call__(self, ctx: Any, inputs: RewardInputs):
    timeout = self.timeout_s
    if timeout is None:
      timeout = float(getattr(ctx, "reward_timeout_s", 60.0))
    call = ((lambda index: self.fn(inputs.take(index)))
            if getattr(self.fn, "takes_inputs", False) else None)
    # Per-group retries only matter when the function reads groups, but they
    # are as correct for per-sample functions, so every fn gets them.
    rewards, failed, info = reward_lib.safe_rewards(
        self.fn, inputs.tasks, inputs.completions, timeout_s=timeout,
        num_components=len(self.names), groups=inputs.group_ids, call=call)
    del failed
    return rewards, info

  def __hash__(self):
    return hash((HostReward, id(self.fn), self.names, self.timeout_s))

  def __eq__(self, other):
    return (isinstance(other, HostReward) and other.fn is self.fn
            and other.names == self.names and other.timeout_s == self.timeout_s)


def host(fn: Callable, *, timeout_s: Optional[float] = None) -> HostReward:
  """A host reward stage of ``fn`` (column names from ``fn.names`` or its name)."""
  return HostReward(fn=fn, names=reward_lib.reward_names(fn), timeout_s=timeout_s)


class Scorer:
  """Base of device reward stages that read a role through the stage context.

  Subclasses set ``names`` and ``roles`` (the role names they read, checked
  by the loop before any work) and implement ``__call__(ctx, inputs) ->
  (f32[B', K], info)``.
  """

  names: tuple = ("score",)
  roles: tuple = ()

  def __call__(self, ctx: Any, inputs: RewardInputs):
    raise TypeError(f"{type(self).__name__} must define __call__(ctx, inputs)")


@dataclasses.dataclass(frozen=True, eq=False)
class Judge(Scorer):
  """A role prompted with a judging template; its judgment parsed into a score.

  The judge role (the policy itself, a frozen copy or another model) writes
  one judgment per graded row from ``template.format(prompt=…, completion=…,
  answer=…)``, greedily (jitted, batched like any rollout); ``parse(text)``
  turns it into a float, or None when the judgment is unparseable. Unparseable
  judgments get ``default`` and are counted (``info['judge_unparsed']``),
  never fatal. Self-Rewarding LMs (Yuan et al. 2024, arXiv:2401.10020, §2.2:
  LLM-as-a-Judge prompting) is the method that made this a reward.

  Attributes:
    role: the judging role.
    template: a ``str.format`` template with ``{prompt}``, ``{completion}``
      and ``{answer}`` fields (``answer`` = the task's reference answer, for
      reference-guided judging; leave it out otherwise).
    parse: judgment text → score or None.
    max_new_tokens: judgment budget.
    default: the score of an unparseable judgment.
    name: the column name.
    format: a ``jaxsi.rewards.judging.JudgeFormat`` (pointwise or verdict)
      giving both the template and the parser; then ``template`` and
      ``parse`` must be left at their defaults. Its statuses are counted in
      ``info`` (``judge/ok``, ``judge/unparsed``, ``judge/over_budget``: an
      unparsed judgment that used all ``max_new_tokens`` tokens) and each
      row's status is in ``info['judge_statuses']``.
  """

  role: str = "judge"
  template: str = "{prompt}{completion}?"
  parse: Callable[[str], Optional[float]] = None
  max_new_tokens: int = 4
  default: float = 0.0
  name: str = "judge"
  format: Any = None

  @property
  def names(self):  # pylint: disable=invalid-overridden-method
    return (self.name,)

  @property
  def roles(self):  # pylint: disable=invalid-overridden-method
    return (self.role,)

  def __call__(self, ctx: Any, inputs: RewardInputs):
    if self.format is not None:
      return self._call_format(ctx, inputs)
    if self.parse is None:
      raise ValueError(f"Judge {self.name!r}: give a parse function")
    prompts = [self.template.format(prompt=t.prompt, completion=c,
                                    answer=getattr(t, "answer", ""))
               for t, c in zip(inputs.tasks, inputs.completions)]
    texts = ctx.generate_text(self.role, prompts,
                              max_new_tokens=self.max_new_tokens)
    scores = np.full((len(prompts), 1), self.default, np.float32)
    unparsed = 0
    for i, text in enumerate(texts):
      try:
        value = self.parse(text)
      except (ValueError, TypeError):
        value = None
      if value is None or not np.isfinite(value):
        unparsed += 1
      else:
        scores[i, 0] = float(value)
    return scores, {"judge_unparsed": unparsed, "judgments": texts}

  def _call_format(self, ctx: Any, inputs: RewardInputs):
    from jaxsi.rewards import judging  # pylint: disable=g-import-not-at-top
    fmt = judging.get_format(self.format)
    if fmt.kind == "pairwise":
      raise ValueError(f"Judge {self.name!r}: format {fmt.name!r} is pairwise; a"
                       " Judge scores one completion per row (pointwise or verdict)")
    if self.parse is not None or self.template != Judge.template:
      raise ValueError(f"Judge {self.name!r}: give either format or"
                       " template/parse, not both")
    prompts = [fmt.prompt(t.prompt, c, answer=getattr(t, "answer", ""))
               for t, c in zip(inputs.tasks, inputs.completions)]
    texts = ctx.generate_text(self.role, prompts, max_new_tokens=self.max_new_tokens)
    tok = getattr(ctx, "tokenizer", None)
    scores = np.full((len(prompts), 1), self.default, np.float32)
    statuses = []
    for i, text in enumerate(texts):
      finished = (tok is None
                  or len(tok.encode(text)) < int(self.max_new_tokens))
      value, status = fmt.parse(text, finished=finished)
      statuses.append(status)
      if np.isfinite(value):
        scores[i, 0] = value
    counts = judging.count_statuses(statuses)
    return scores, dict(counts, judge_unparsed=counts["judge/unparsed"]
                        + counts["judge/over_budget"], judgments=texts,
                        judge_statuses=statuses)

  def __hash__(self):
    return id(self)


def as_stages(fns: Sequence[Any]) -> tuple:
  """Reward stages from stages or plain functions (in order)."""
  if callable(fns) and not isinstance(fns, (tuple, list)):
    fns = (fns,)
  out = []
  for f in fns:
    if isinstance(f, (HostReward, Scorer)):
      out.append(f)
    elif callable(f):
      out.append(host(f))
    else:
      raise TypeError(f"reward {f!r} is neither a reward stage nor a function")
  return tuple(out)


def stage_names(stages: Sequence[Any]) -> tuple[str, ...]:
  """The concatenated column names of ``stages``."""
  names = []
  for s in stages:
    names.extend(s.names)
  return tuple(names)


def stage_roles(stages: Sequence[Any]) -> tuple[str, ...]:
  """Role names the device stages read."""
  roles = []
  for s in stages:
    for r in getattr(s, "roles", ()):
      if r not in roles:
        roles.append(r)
  return tuple(roles)
