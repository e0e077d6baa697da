r"""Rollout stages: how a method turns prompts into a scored batch.

A rollout stage is a frozen dataclass with a :class:`~jaxsi.spec.RolloutSpec`
(``spec``) called once per iteration as ``stage(ctx, params, rng) -> Batch``.
``ctx`` is the loop's rollout context; a stage uses only:

* ``ctx.next_prompts()`` → int[R] task indices of the next prompt batch
  (advances the resumable data position);
* ``ctx.generate(params, task_index, rng, *, n, variant=None, valid=None)``
  → host Trajectory (jitted sampler; ``variant`` names one of the stage's
  :meth:`prompt_variants`, e.g. the prompt with a hint);
* ``ctx.rewards(traj, task_index)`` → ``(f32[B, K], reward info)``: the
  method's reward stages on the valid rows;
* for episodes: ``ctx.model``, ``ctx.tokenizer``, ``ctx.tasks``,
  ``ctx.prompt_arrays(task_index)``, ``ctx.turn_reward`` (the summed reward
  stages as ``fn(tasks, texts)``), ``ctx.stop_ids``, ``ctx.pad_id``.

The loop knows no stage by name: DAPO's refill (:class:`RefillUntil`),
Guide's hinted resampling (:class:`HintedResample`) and multi-turn episodes
(:class:`Episodes`) are stages like plain sampling (:class:`Sample`). Every
stage keeps shapes fixed (R prompts × n samples, T columns), so the jitted
steps after it compile once.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import strategies
from jaxsi.trajectory import positions_from_mask


@dataclasses.dataclass
class Batch:
  """A host-side rollout batch before the jitted transforms.

  Attributes:
    traj: Trajectory of numpy arrays.
    rewards: f32[B, K] (NaN: failed or not graded).
    task_index: int[B] index into the run's task list.
    info: timings and counts the loop logs (``gen_s``, ``reward_s``,
      ``reward_failed``, ``gen_tokens``, ``gen_batches``,
      ``effective_batch_frac``, ``frac_zero_variance_groups``).
    metrics: stage-specific metrics logged under their own names.
  """

  traj: Any
  rewards: np.ndarray
  task_index: np.ndarray
  info: dict
  metrics: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ helpers
def strategy_of(spec: spec_lib.RolloutSpec):
  """The sampling strategy of a RolloutSpec (greedy at temperature 0)."""
  if spec.strategy is not None:
    return spec.strategy
  if spec.temperature == 0:
    return strategies.Greedy()
  return strategies.Sampling(temperature=float(spec.temperature))


def left_pad(rows, length: int, pad_id: int):
  """(int32[R, length], bool[R, length]) left-padded prompt arrays."""
  tokens = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, r in enumerate(rows):
    if len(r) > length:
      raise ValueError(f"prompt {i} has {len(r)} tokens > prompt bucket {length}")
    if r:
      tokens[i, length - len(r):] = r
      mask[i, length - len(r):] = True
  return tokens, mask


def total_reward(rewards: np.ndarray) -> np.ndarray:
  """f32[B] NaN-aware sum of the reward columns (NaN when all are NaN)."""
  r = np.asarray(rewards, np.float32)
  s = np.nansum(r, axis=1)
  return np.where(np.all(np.isnan(r), axis=1), np.nan, s).astype(np.float32)


def group_zero_variance(scores: np.ndarray, valid: np.ndarray, n: int,
                        atol: float = 0.0) -> np.ndarray:
  """bool[R]: groups (contiguous, size n) whose valid finite scores are equal.

  Groups with fewer than two usable samples count as zero-variance (no
  learning signal), matching ``advantages.frac_zero_std_groups``.
  """
  s = scores.reshape(-1, n)
  ok = (valid & np.isfinite(scores)).reshape(-1, n)
  hi = np.where(ok, s, -np.inf).max(axis=1)
  lo = np.where(ok, s, np.inf).min(axis=1)
  count = ok.sum(axis=1)
  return (count < 2) | (hi - lo <= atol)


def _concat(parts):
  return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


def _take(tree, index):
  return jax.tree.map(lambda x: x[index], tree)


def _add_info(info: dict, other: dict) -> None:
  for key in ("gen_s", "reward_s", "reward_failed", "gen_tokens"):
    info[key] += other[key]


class Stage:
  """Defaults shared by the rollout stages."""

  spec: spec_lib.RolloutSpec

  def prompt_variants(self) -> dict:
    """``{name: fn(task) -> prompt text}`` prompts the stage samples besides
    the task's own (the loop encodes them once and sizes the bucket)."""
    return {}

  def reward_names(self, names: tuple) -> tuple:
    """Column names of ``Batch.rewards`` given the reward stages' names."""
    return tuple(names)

  def length(self, prompt_len: int) -> int:
    """T of the batch's trajectories for a prompt bucket ``prompt_len``."""
    return prompt_len + self.spec.max_new_tokens

  def supervised_extras(self, tasks) -> list:
    """Extra (prompt, target) pairs a warm start should teach (default none)."""
    del tasks
    return []


# ------------------------------------------------------------------- stages
@dataclasses.dataclass(frozen=True)
class Sample(Stage):
  """``n`` completions for each of R prompts, graded by the reward stages."""

  spec: spec_lib.RolloutSpec = spec_lib.RolloutSpec()

  def one_batch(self, ctx, params, rng, *, n: Optional[int] = None) -> Batch:
    """One generation batch of the next R prompts (advances the position)."""
    n = self.spec.n if n is None else n
    task_index = np.asarray(ctx.next_prompts())
    t0 = time.perf_counter()
    traj = ctx.generate(params, task_index, rng, n=n)
    t_gen = time.perf_counter() - t0
    rows = np.repeat(task_index, n)
    t0 = time.perf_counter()
    rewards, failed = ctx.rewards(traj, rows)
    t_rew = time.perf_counter() - t0
    return Batch(traj=traj, rewards=rewards, task_index=rows,
                 info=dict(gen_s=t_gen, reward_s=t_rew, reward_failed=failed,
                           gen_tokens=int(traj.loss_mask.sum())))

  def __call__(self, ctx, params, rng) -> Batch:
    batch = self.one_batch(ctx, params, jax.random.fold_in(rng, 0))
    zero = group_zero_variance(total_reward(batch.rewards), batch.traj.valid,
                               self.spec.n)
    batch.info.update(frac_zero_variance_groups=float(zero.mean()),
                      gen_batches=1,
                      effective_batch_frac=float(1.0 - zero.mean()))
    return batch


@dataclasses.dataclass(frozen=True)
class RefillUntil(Stage):
  """Regenerate until R groups pass ``keep`` (DAPO dynamic sampling).

  DAPO (Yu et al. 2025, arXiv:2503.14476, §3.2 / Alg. 1): keep generating
  batches of R prompts, keep the groups whose sequence rewards are not all
  equal (0 < #correct < G), stop when R such groups are collected or after
  ``max_batches`` generation batches; the batch is then completed with
  rejected groups marked ``valid=False``, so shapes stay fixed.

  Attributes:
    spec: the rollout spec.
    max_batches: generation batches per step at most (verl
      ``max_num_gen_batches``).
    atol: a group is zero-variance when max − min ≤ atol.
    keep: ``fn(scores f32[R, n], valid bool[R, n]) -> bool[R]`` groups to
      keep (default: not zero-variance).
  """

  spec: spec_lib.RolloutSpec = spec_lib.RolloutSpec()
  max_batches: int = 4
  atol: float = 0.0
  keep: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None

  def _kept(self, batch: Batch) -> np.ndarray:
    n = self.spec.n
    scores = total_reward(batch.rewards)
    if self.keep is not None:
      return np.asarray(self.keep(scores.reshape(-1, n),
                                  np.asarray(batch.traj.valid).reshape(-1, n)), bool)
    return ~group_zero_variance(scores, batch.traj.valid, n, self.atol)

  def __call__(self, ctx, params, rng) -> Batch:
    n = self.spec.n
    sampler = Sample(self.spec)
    first = sampler.one_batch(ctx, params, jax.random.fold_in(rng, 0))
    r = first.task_index.shape[0] // n
    batches = [first]
    zero0 = group_zero_variance(total_reward(first.rewards), first.traj.valid, n)
    info = dict(first.info, frac_zero_variance_groups=float(zero0.mean()))
    kept = [self._kept(first)]
    while sum(int(k.sum()) for k in kept) < r and len(batches) < self.max_batches:
      b = sampler.one_batch(ctx, params, jax.random.fold_in(rng, len(batches)))
      batches.append(b)
      kept.append(self._kept(b))
      _add_info(info, b.info)
    kept_all = np.concatenate(kept)
    keep = np.flatnonzero(kept_all)[:r]
    fill = np.flatnonzero(~kept_all)[:r - keep.size]
    groups = np.concatenate([keep, fill])
    rows = (groups[:, None] * n + np.arange(n)[None, :]).reshape(-1)
    traj = _take(_concat([b.traj for b in batches]), rows)
    valid = traj.valid.copy()
    valid[keep.size * n:] = False
    traj = traj.replace(valid=valid,
                        group_ids=np.repeat(np.arange(r, dtype=np.int32) * n, n))
    info.update(gen_batches=len(batches), effective_batch_frac=keep.size / r)
    return Batch(traj=traj,
                 rewards=np.concatenate([b.rewards for b in batches])[rows],
                 task_index=np.concatenate([b.task_index for b in batches])[rows],
                 info=info)


TEACHER_RESPONSE_KEY = "teacher_response"


def target_response(task) -> str:
  """The task's labeled target: the response of a perfect teacher."""
  return task.target


@dataclasses.dataclass(frozen=True)
class WithTeacherResponse(Sample):
  """n − 1 policy samples plus one teacher response per prompt (DNO).

  Rosset et al. 2024, "Direct Nash Optimization" (arXiv:2404.03715), §5 /
  Alg. 2 (DNO-Prct): every prompt's candidate set holds the policy's samples
  *and* a response of a stronger teacher (GPT-4-Turbo there), all scored by
  the preference oracle, so the teacher's response becomes the chosen one
  when the oracle prefers it. Here each group of ``spec.n`` rows is
  ``n − 1`` samples of the policy followed by one row whose completion is
  ``response_fn(task)`` (default :func:`target_response`, the labeled
  target), tokenized with a stop token and graded by the same reward
  stages; ``extras[TEACHER_RESPONSE_KEY]`` marks those rows. A teacher row
  has no behaviour log-probs (zeros): it is meant for pair builders and
  DPO-family terms, which rescore both sides themselves, not for ratio
  terms. A response longer than the budget is cut (``teacher/truncated``).

  Attributes:
    spec: the rollout spec; ``n`` ≥ 2 counts the teacher's row.
    response_fn: task → the teacher's response text.
  """

  response_fn: Callable[[Any], str] = target_response

  def __call__(self, ctx, params, rng) -> Batch:
    n = int(self.spec.n)
    if n < 2:
      raise ValueError(f"WithTeacherResponse: spec.n must be >= 2 (n - 1 samples + the"
                       f" teacher's row), got {n}")
    batch = self.one_batch(ctx, params, jax.random.fold_in(rng, 0), n=n - 1)
    traj = batch.traj
    b, t = traj.tokens.shape
    r = b // (n - 1)
    p = t - self.spec.max_new_tokens

    def grow(x):   # [R·(n−1), ...] → [R·n, ...]: a copy of each group's last row
      x = np.asarray(x)
      if x.ndim == 0 or x.shape[0] != b:
        return x
      g = x.reshape((r, n - 1) + x.shape[1:])
      return np.concatenate([g, g[:, -1:]], axis=1).reshape((r * n,) + x.shape[1:])

    new = jax.tree.map(grow, traj)
    rows = np.arange(r) * n + (n - 1)
    task_index = grow(batch.task_index)
    tokens = np.array(new.tokens)
    input_mask = np.array(new.input_mask)
    loss_mask = np.array(new.loss_mask)
    budget = t - p
    stop = int(ctx.tokenizer.eos_id)
    truncated = 0
    lengths = np.zeros((r,), np.int32)
    for i, row in enumerate(rows):
      ids = list(ctx.tokenizer.encode(self.response_fn(ctx.tasks[task_index[row]]))) + [stop]
      if len(ids) > budget:
        ids, truncated = ids[:budget], truncated + 1
      lengths[i] = len(ids)
      tokens[row, p:] = ctx.pad_id
      tokens[row, p:p + len(ids)] = ids
      input_mask[row, p:] = False
      input_mask[row, p:p + len(ids)] = True
      loss_mask[row, p:] = False
      loss_mask[row, p:p + len(ids)] = True
    updates = dict(tokens=tokens, input_mask=input_mask, loss_mask=loss_mask,
                   positions=np.asarray(positions_from_mask(input_mask)),
                   group_ids=np.repeat(np.arange(r, dtype=np.int32) * n, n))
    for name in ("behaviour_logprobs", "turn_ids"):
      arr = getattr(new, name)
      if arr is not None:
        arr = np.array(arr)
        arr[rows, p:] = 0
        if name == "turn_ids":
          arr[rows, p:] = loss_mask[rows, p:]
        updates[name] = arr
    extras = {}
    for key, arr in new.extras.items():
      arr = np.array(arr)
      if arr.ndim >= 2 and arr.shape[1] == t:
        arr[rows, p:] = 0
      extras[key] = arr
    if "finished" in extras:   # ends with the stop token (not cut by the budget)
      extras["finished"][rows] = tokens[rows, p + lengths - 1] == stop
    if "completion_length" in extras:
      extras["completion_length"][rows] = lengths
    is_teacher = np.zeros((r * n,), bool)
    is_teacher[rows] = True
    extras[TEACHER_RESPONSE_KEY] = is_teacher
    new = new.replace(extras=extras, **updates)
    rewards = grow(batch.rewards).copy()
    info = dict(batch.info)
    t0 = time.perf_counter()
    trew, failed = ctx.rewards(_take(new, rows), task_index[rows])
    info["reward_s"] += time.perf_counter() - t0
    info["reward_failed"] += failed
    rewards[rows] = trew
    zero = group_zero_variance(total_reward(rewards), new.valid, n)
    info.update(frac_zero_variance_groups=float(zero.mean()), gen_batches=1,
                effective_batch_frac=float(1.0 - zero.mean()))
    metrics = dict(batch.metrics)
    metrics["teacher/truncated"] = float(truncated) / max(r, 1)
    ok = np.asarray(new.valid)[rows]
    metrics["teacher/reward"] = (float(np.nanmean(total_reward(trew)[ok]))
                                 if ok.any() else float("nan"))
    return Batch(traj=new, rewards=rewards, task_index=task_index, info=info,
                 metrics=metrics)


@dataclasses.dataclass(frozen=True)
class HintedResample(Stage):
  """Hint-conditioned resamples of all-fail groups (Guide-GRPO).

  Nath et al. 2025, "Adaptive Guidance Accelerates Reinforcement Learning of
  Reasoning Models" (arXiv:2506.13923). After ``inner`` has produced the
  batch, every group whose samples all fail (max reward ≤ ``fail_threshold``)
  gets ``round(fraction·n)`` new completions sampled from the prompt with a
  hint appended (``hint_fn(task) -> str``); they are placed under the
  **plain** prompt (same columns: the completion does not move) and replace
  that many of the group's failed samples, graded for the plain task.
  ``extras[GUIDED_KEY]`` marks them and ``extras[HINT_LOGPROBS_KEY]`` keeps
  their behaviour log-probs under the hinted prompt (the π_old of the
  paper's off-policy correction, see ``transforms.importance``).

  Attributes:
    inner: the stage producing the batch (``Sample`` or ``RefillUntil``).
    hint_fn: task → hint text appended to the prompt text.
    fraction: fraction of an all-fail group replaced by guided samples.
    fail_threshold: a group fails when every reward ≤ this.
  """

  inner: Any = Sample()
  hint_fn: Callable[[Any], str] = None
  fraction: float = 0.5
  fail_threshold: float = 0.0

  @property
  def spec(self):
    return self.inner.spec

  def prompt_variants(self) -> dict:
    hint_fn = self.hint_fn
    return dict(self.inner.prompt_variants(),
                hinted=lambda task: task.prompt + hint_fn(task))

  def supervised_extras(self, tasks) -> list:
    """Teach using a hint (copy the target given after the prompt): the
    hinted resamples need that skill. Every second labelled task."""
    return [(t.prompt + self.hint_fn(t), t.target) for t in list(tasks)[::2]]

  def __call__(self, ctx, params, rng) -> Batch:
    if self.hint_fn is None:
      raise ValueError("HintedResample: give a hint_fn")
    batch = self.inner(ctx, params, rng)
    n = self.spec.n
    k = max(1, min(n, int(round(self.fraction * n))))
    traj = batch.traj
    b, t = traj.tokens.shape
    r = b // n
    scores = total_reward(batch.rewards).reshape(r, n)
    valid = traj.valid.reshape(r, n)
    fail = np.all(np.where(valid, np.nan_to_num(scores, nan=-np.inf)
                           <= self.fail_threshold, True), axis=1) & valid.any(axis=1)
    guided = np.zeros((b,), bool)
    hint_lp = np.zeros((b, t), np.float32)
    info = dict(batch.info)
    metrics = dict(batch.metrics)
    metrics["guide/groups"] = float(fail.sum())
    metrics["guide/success"] = 0.0
    rewards = batch.rewards
    if fail.any():
      groups = np.flatnonzero(fail)
      # Fixed shape: R prompt rows, the non-failing ones are dummy rows.
      task_rows = batch.task_index.reshape(r, n)[:, 0]
      t0 = time.perf_counter()
      gtraj = ctx.generate(params, task_rows, jax.random.fold_in(rng, 10_000),
                           n=k, variant="hinted", valid=fail)
      info["gen_s"] += time.perf_counter() - t0
      info["gen_tokens"] += int(gtraj.loss_mask.sum())
      p = t - self.spec.max_new_tokens
      src = (groups[:, None] * k + np.arange(k)[None, :]).reshape(-1)
      dst = (groups[:, None] * n + (n - k) + np.arange(k)[None, :]).reshape(-1)
      new = jax.tree.map(np.copy, traj)
      # Completion columns from the guided sample, prompt columns stay plain:
      # every [B, T] field and every [B, T, ...] extra, per row.
      for name in ("tokens", "input_mask", "loss_mask", "behaviour_logprobs",
                   "turn_ids"):
        arr = getattr(new, name)
        if arr is not None:
          arr[dst, p:] = getattr(gtraj, name)[src, p:]
      extras = dict(new.extras)
      for key, arr in extras.items():
        src_arr = gtraj.extras.get(key)
        if src_arr is None:
          continue
        if arr.ndim >= 2 and arr.shape[1] == t:
          arr[dst, p:] = src_arr[src, p:]
        elif arr.ndim >= 1 and arr.shape[0] == b:
          arr[dst] = src_arr[src]
      new = new.replace(extras=extras,
                        positions=np.asarray(positions_from_mask(new.input_mask)))
      guided[dst] = True
      hint_lp[dst] = new.behaviour_logprobs[dst]
      t0 = time.perf_counter()
      grew, failed = ctx.rewards(_take(new, dst), batch.task_index[dst])
      info["reward_s"] += time.perf_counter() - t0
      info["reward_failed"] += failed
      rewards = batch.rewards.copy()
      rewards[dst] = grew
      metrics["guide/success"] = float(np.nanmean(total_reward(grew)
                                                  > self.fail_threshold))
      traj = new
    extras = dict(traj.extras)
    extras[spec_lib.GUIDED_KEY] = guided
    extras[spec_lib.HINT_LOGPROBS_KEY] = hint_lp
    return Batch(traj=traj.replace(extras=extras), rewards=rewards,
                 task_index=batch.task_index, info=info, metrics=metrics)


@dataclasses.dataclass(frozen=True)
class Episodes(Stage):
  """Multi-turn episodes (model turn → injected turn → model turn …).

  The batch is R prompts × n episodes (``multiturn.run_episodes``: one KV
  cache, only the injected tokens and the new turn written per turn); its
  rewards are per turn, ``rewards[:, k−1]`` = the reward of model turn k
  (the method's reward stages summed; NaN: not taken / not graded). T is
  fixed, ``P + G + (K − 1)(I + G)``. Metrics: ``sc/acc_t1``, ``sc/acc_t2``,
  ``sc/gap``, ``sc/wrong_to_right``, ``sc/right_to_wrong``,
  ``sc/turns_mean``, ``sc/repeat_frac`` (SCoRe's self-correction metrics,
  Kumar et al. 2024, arXiv:2409.12917, §6).

  Attributes:
    spec: the rollout spec (``max_new_tokens`` is every model turn's budget
      unless the episode sets its own).
    episode: the :class:`~jaxsi.sampling.multiturn.EpisodeSpec`.
    eval_turns: (first, second) 1-based turns the metrics compare.
  """

  spec: spec_lib.RolloutSpec = spec_lib.RolloutSpec()
  episode: multiturn.EpisodeSpec = None
  eval_turns: tuple = (1, 2)

  def __post_init__(self):
    if self.episode is None:
      raise ValueError("Episodes: give an EpisodeSpec")

  def reward_names(self, names: tuple) -> tuple:
    del names
    return tuple(f"turn{k}" for k in range(1, self.episode.max_turns + 1))

  def length(self, prompt_len: int) -> int:
    g = int(self.episode.max_new_tokens or self.spec.max_new_tokens)
    return self.episode.length(prompt_len, g)

  def run(self, ctx, params, task_index, rng, *, strategy=None,
          n: Optional[int] = None) -> multiturn.Episode:
    """Episodes for ``task_index`` (n per task) under ``params``."""
    tokens, mask = ctx.prompt_arrays(task_index)
    return multiturn.run_episodes(
        ctx.model, params, prompt_tokens=tokens, prompt_mask=mask,
        tasks=[ctx.tasks[i] for i in task_index], tokenizer=ctx.tokenizer,
        spec=self.episode, reward_fn=ctx.turn_reward, rng=rng,
        strategy=strategy or ctx.strategy,
        n=int(self.spec.n if n is None else n),
        max_new_tokens=self.spec.max_new_tokens, stop_ids=ctx.stop_ids,
        pad_id=ctx.pad_id, prompt_ids=np.asarray(task_index, np.int32))

  def __call__(self, ctx, params, rng) -> Batch:
    n = self.spec.n
    task_index = np.asarray(ctx.next_prompts())
    t0 = time.perf_counter()
    ep = self.run(ctx, params, task_index, jax.random.fold_in(rng, 0))
    traj = ctx.to_host(ep.traj)
    wall = time.perf_counter() - t0
    first, second = self.eval_turns
    second = min(second, self.episode.max_turns)
    stats = multiturn.self_correction_stats(
        ep.rewards, traj.valid, first=first, second=second,
        threshold=self.episode.success_threshold)
    taken = np.isfinite(ep.rewards)
    valid = np.asarray(traj.valid, bool)
    metrics = {f"sc/{k}": float(v) for k, v in stats.items() if k != "count"}
    metrics["sc/turns_mean"] = float(ep.num_turns[valid].mean())
    metrics["sc/repeat_frac"] = (float(ep.repeats[taken].mean())
                                 if taken.any() else 0.0)
    zero = group_zero_variance(total_reward(ep.rewards), traj.valid, n)
    info = dict(gen_s=wall - ep.info["reward_s"], reward_s=ep.info["reward_s"],
                reward_failed=int((np.isnan(ep.rewards[:, 0]) & valid).sum()
                                  if self.episode.graded(1) else 0),
                gen_tokens=ep.info["gen_tokens"], gen_batches=1,
                frac_zero_variance_groups=float(zero.mean()),
                effective_batch_frac=float(1.0 - zero.mean()))
    return Batch(traj=traj, rewards=ep.rewards,
                 task_index=np.repeat(task_index, n), info=info, metrics=metrics)


@dataclasses.dataclass(frozen=True)
class WithContext(Stage):
  """Lays out every sample under a second, privileged prompt for rescoring.

  After ``inner`` has produced the batch, each row's completion is placed
  after ``context_fn(task)`` — the prompt with privileged information (the
  answer, a worked solution, a skill description, a critique) — in
  ``extras[f'{name}_tokens' | f'{name}_input_mask']``, right-aligned with
  ``traj.tokens`` (the completion occupies the same last columns), which is
  the layout ``transforms.rescoring.rescore(context=name)`` scores with any
  role: a teacher, or the policy itself (OPSD, Zhao et al. 2026; π-Distill).
  The privileged prompt is sampled never; it only conditions the rescoring.

  Attributes:
    inner: a single-turn stage (``Sample``, ``RefillUntil``, ``HintedResample``).
    context_fn: task → the privileged prompt text.
    name: the extras prefix (``rescore``: the default of ``rescoring.rescore``).
  """

  inner: Any = Sample()
  context_fn: Callable[[Any], str] = None
  name: str = "rescore"

  @property
  def spec(self):
    return self.inner.spec

  def prompt_variants(self) -> dict:
    if self.context_fn is None:
      raise ValueError("WithContext: give a context_fn")
    return dict(self.inner.prompt_variants(), **{self.name: self.context_fn})

  def __call__(self, ctx, params, rng) -> Batch:
    batch = self.inner(ctx, params, rng)
    traj = batch.traj
    t = traj.tokens.shape[1]
    p = t - self.spec.max_new_tokens
    tokens, mask = ctx.prompt_arrays(batch.task_index, variant=self.name)
    if tokens.shape[1] != p:
      raise ValueError(f"WithContext: prompt bucket {tokens.shape[1]} != the"
                       f" batch's {p} (a multi-turn inner stage?)")
    extras = dict(traj.extras)
    extras[f"{self.name}_tokens"] = np.concatenate(
        [tokens, np.asarray(traj.tokens)[:, p:]], axis=1).astype(np.int32)
    extras[f"{self.name}_input_mask"] = np.concatenate(
        [mask, np.asarray(traj.input_mask)[:, p:]], axis=1)
    return dataclasses.replace(batch, traj=traj.replace(extras=extras))
