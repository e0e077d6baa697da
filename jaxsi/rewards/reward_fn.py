"""Reward functions on the host: the interface, basic rewards, combination, safety.

A reward fn is ``fn(tasks: Sequence[Task], completions: Sequence[str]) ->
np.float32[B]`` (one component) or ``np.float32[B, K]`` (K components). A fn
with K > 1 components declares them as a ``names`` attribute (tuple of K
strings; ``with_names`` sets it), so ``combine`` knows every component name
before calling anything. ``Trajectory.rewards`` is the ``[B, K]`` matrix.

``safe_rewards`` runs any (user) reward fn so that an exception, a wrong
output shape, a non-finite value or a hang only marks the affected samples
(NaN rows, ``failed[b] = True``) and never stops the run.

Why threads and not processes: reward fns are often closures over models or
lambdas (not picklable) and forking a process that has initialised JAX is
unsafe. A timed-out worker is a *daemon* thread that is abandoned, not killed
(Python cannot kill threads): it never blocks the run or interpreter exit, and
``info['live_workers']`` reports how many are still running. Pure-Python loops
and sleeps release the GIL regularly, so the main thread keeps going; a C
extension that holds the GIL forever cannot be isolated by a thread — run
untrusted code in a sandboxed subprocess inside the reward fn instead.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from jaxsi.rewards import answers
from jaxsi.rewards import expression as expr_lib

RewardFn = Callable[[Sequence[Any], Sequence[str]], np.ndarray]

_WORKER_NAME = "jaxsi-reward-worker"


# ------------------------------------------------------------------ names
def with_names(fn: RewardFn, *names: str) -> RewardFn:
  """Returns ``fn`` wrapped with a ``names`` attribute (its K components)."""
  if not names:
    raise ValueError("with_names: give at least one component name")

  def wrapped(tasks, completions):
    return fn(tasks, completions)

  wrapped.names = tuple(names)
  wrapped.__name__ = getattr(fn, "__name__", "reward")
  wrapped.__doc__ = fn.__doc__
  return wrapped


def reward_names(fn: RewardFn) -> tuple[str, ...]:
  """Component names of a reward fn: its ``names`` attribute or its name."""
  names = getattr(fn, "names", None)
  if names:
    return tuple(names)
  return (getattr(fn, "__name__", type(fn).__name__),)


def as_components(rewards: Any, batch_size: int, *, name: str = "reward",
                  num_components: Optional[int] = None) -> np.ndarray:
  """Validates a reward output and returns it as ``float32[B, K]``.

  Raises:
    ValueError: not ``[B]``/``[B, K]``, wrong B, or wrong K — naming the fn.
  """
  try:
    r = np.asarray(rewards, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"reward fn {name!r} returned a non-numeric "
                     f"{type(rewards).__name__}: {e}") from None
  if r.ndim == 1:
    r = r[:, None]
  if r.ndim != 2 or r.shape[0] != batch_size:
    raise ValueError(f"reward fn {name!r} returned shape {np.shape(rewards)}, "
                     f"expected [{batch_size}] or [{batch_size}, K]")
  if num_components is not None and r.shape[1] != num_components:
    raise ValueError(f"reward fn {name!r} returned {r.shape[1]} components, "
                     f"expected {num_components}")
  return r


# ------------------------------------------------------------ basic rewards
def correctness_reward(tasks: Sequence[Any], completions: Sequence[str]
                       ) -> np.ndarray:
  """``float32[B]``: ``tasks[b].verify(completions[b])`` (1.0 correct, 0.0 not)."""
  _check_lengths(tasks, completions, "correctness_reward")
  return np.asarray([t.verify(c) for t, c in zip(tasks, completions)],
                    dtype=np.float32)


correctness_reward.names = ("correct",)


def has_answer_format(task: Any, completion: str) -> bool:
  """Whether ``completion`` is in the task's answer format (right or wrong).

  Tasks whose target has the ``'####'`` marker (``meta['marker']`` overrides)
  need a non-empty marked answer. Otherwise the whole completion must be one
  answer: an expression for countdown, a number when the gold answer is a
  number (a digit string when ``meta['reverse']``), non-empty text otherwise.
  """
  if not isinstance(completion, str):
    return False
  completion = answers.strip_special(completion)
  meta = task.meta or {}
  marker = meta.get("marker", answers.ANSWER_MARKER in task.target)
  if marker:
    return answers.extract_marked(completion) is not None
  text = completion.strip()
  if not text:
    return False
  if task.category == "countdown":
    try:
      expr_lib.parse(text, allow_unary_minus=False)
      return True
    except expr_lib.ExprError:
      return False
  if answers.parse_number(task.answer) is not None:
    if meta.get("reverse", False):
      return answers.reverse_digits(text) is not None
    return answers.parse_number(text) is not None
  return "\n" not in text


def format_reward(tasks: Sequence[Any], completions: Sequence[str]
                  ) -> np.ndarray:
  """``float32[B]``: 1.0 where ``has_answer_format`` holds."""
  _check_lengths(tasks, completions, "format_reward")
  return np.asarray([has_answer_format(t, c) for t, c in zip(tasks, completions)],
                    dtype=np.float32)


format_reward.names = ("format",)


def _check_lengths(tasks, completions, who):
  if len(tasks) != len(completions):
    raise ValueError(f"{who}: {len(tasks)} tasks but {len(completions)} "
                     "completions")


# -------------------------------------------------------------- combining
class CombinedReward:
  """Several reward fns stacked into one ``float32[B, K]`` matrix.

  Attributes:
    fns: the component fns.
    names: ``K`` component names (duplicates get ``'#2'``, ``'#3'`` suffixes).
    weights: ``float32[K]`` weights (a fn's weight applies to all its columns).
  """

  def __init__(self, fns: Sequence[RewardFn], weights: Sequence[float],
               names: Sequence[str]):
    self.fns = tuple(fns)
    self.sizes = tuple(len(reward_names(f)) for f in self.fns)
    self.names = tuple(names)
    per_fn = [float(w) for w in weights]
    self.weights = np.repeat(np.asarray(per_fn, np.float32),
                             self.sizes).astype(np.float32)

  def __call__(self, tasks: Sequence[Any], completions: Sequence[str]
               ) -> np.ndarray:
    _check_lengths(tasks, completions, "combined reward")
    cols = []
    for fn, k in zip(self.fns, self.sizes):
      name = getattr(fn, "__name__", type(fn).__name__)
      cols.append(as_components(fn(tasks, completions), len(tasks), name=name,
                                num_components=k))
    return np.concatenate(cols, axis=1) if cols else np.zeros(
        (len(tasks), 0), np.float32)

  def total(self, rewards: np.ndarray) -> np.ndarray:
    """``float32[B]``: ``rewards @ weights`` (NaN rows stay NaN)."""
    return weighted_sum(rewards, self.weights)

  def __repr__(self) -> str:
    parts = ", ".join(f"{n}×{w:g}" for n, w in zip(self.names, self.weights))
    return f"CombinedReward({parts})"


def combine(*fns: RewardFn, weights: Optional[Sequence[float]] = None,
            names: Optional[Sequence[str]] = None) -> CombinedReward:
  """Stacks reward fns into one ``[B, K]`` fn with component names.

  Args:
    *fns: reward fns (a fn with K > 1 columns must declare ``names``).
    weights: one weight per fn (default 1.0 each); ``CombinedReward.total``
      applies them.
    names: one name per output column (default: the fns' names).

  Returns:
    A ``CombinedReward``.

  Raises:
    ValueError: no fns, or weights/names of the wrong length.
  """
  if not fns:
    raise ValueError("combine: give at least one reward fn")
  if weights is None:
    weights = [1.0] * len(fns)
  if len(weights) != len(fns):
    raise ValueError(f"combine: {len(weights)} weights for {len(fns)} fns")
  default_names = [n for f in fns for n in reward_names(f)]
  if names is None:
    seen, names = {}, []
    for n in default_names:
      seen[n] = seen.get(n, 0) + 1
      names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
  if len(names) != len(default_names):
    raise ValueError(f"combine: {len(names)} names for {len(default_names)} "
                     f"columns {default_names}")
  return CombinedReward(fns, weights, names)


def weighted_sum(rewards: np.ndarray, weights: Sequence[float]) -> np.ndarray:
  """``float32[B]`` = ``Σ_k rewards[:, k] · weights[k]``."""
  r = np.asarray(rewards, np.float32)
  w = np.asarray(weights, np.float32)
  if r.ndim != 2 or r.shape[1] != w.shape[0]:
    raise ValueError(f"weighted_sum: rewards {r.shape} vs weights {w.shape}")
  return (r * w[None, :]).sum(axis=1).astype(np.float32)


def fill_failed(rewards: np.ndarray, failed: np.ndarray, value: float = 0.0
                ) -> np.ndarray:
  """Replaces the rows of failed samples (NaN) by ``value``."""
  out = np.array(rewards, np.float32, copy=True)
  out[np.asarray(failed, bool)] = value
  return out


# ------------------------------------------------------------------ safety
def _call_with_timeout(thunk, timeout_s):
  """Runs ``thunk()`` in a daemon thread; ``('ok'|'error'|'timeout', value)``."""
  box = {}

  def target():
    try:
      box["value"] = thunk()
    except BaseException as e:  # pylint: disable=broad-except
      box["error"] = e

  th = threading.Thread(target=target, name=_WORKER_NAME, daemon=True)
  th.start()
  th.join(max(float(timeout_s), 0.0))
  if th.is_alive():
    return "timeout", None
  if "error" in box:
    return "error", box["error"]
  return "ok", box["value"]


def _retry_units(b: int, groups: Optional[Sequence[int]]):
  """(label, int index) per retry unit: each sample, or each group in order."""
  if groups is None:
    return [(f"sample {i}", np.asarray([i])) for i in range(b)]
  g = np.asarray(groups)
  if g.shape != (b,):
    raise ValueError(f"safe_rewards: groups has shape {g.shape}, expected ({b},)")
  _, first = np.unique(g, return_index=True)
  return [(f"group {g[i]}", np.flatnonzero(g == g[i])) for i in np.sort(first)]


def live_workers() -> int:
  """Abandoned (timed-out) reward worker threads still running."""
  return sum(1 for t in threading.enumerate()
             if t.name == _WORKER_NAME and t.is_alive())


def safe_rewards(fn: RewardFn, tasks: Sequence[Any], completions: Sequence[str],
                 *, timeout_s: float, num_components: Optional[int] = None,
                 retry_individually: bool = True,
                 retry_budget_s: Optional[float] = None,
                 max_errors: int = 5, max_live_workers: int = 32,
                 groups: Optional[Sequence[int]] = None,
                 call: Optional[Callable[[np.ndarray], Any]] = None
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
  """Runs a reward fn so that failures mark samples instead of stopping the run.

  First the whole batch runs in a worker thread with ``timeout_s``. If it
  raises, hangs or returns a wrong shape, and ``retry_individually``, every
  retry unit is re-run alone (each with ``timeout_s``) to isolate the failing
  ones; once ``retry_budget_s`` (default ``4 * timeout_s``) is spent, the
  remaining units are marked failed without running ("skipped"). The retry
  unit is one sample, or with ``groups`` one group (all samples sharing a
  group id, so a reward computed over a group — a majority vote — is never
  evaluated on part of it). Rows with non-finite values are marked failed
  too. See the module docstring for why threads are used.

  Args:
    fn: the reward fn.
    tasks: B tasks.
    completions: B completion texts.
    timeout_s: seconds per call.
    num_components: expected K (default: ``len(fn.names)`` if declared, else
      whatever the first successful call returns; 1 if none succeeds).
    retry_individually: isolate failures sample by sample.
    retry_budget_s: total seconds for the per-sample retries.
    max_errors: error messages kept in ``info['errors']``.
    max_live_workers: if this many abandoned workers are still running (a fn
      that always hangs), new calls are not started: every sample is marked
      failed ("skipped") at once, so hung threads cannot pile up without bound.
    groups: int[B] group ids; retries then run whole groups.
    call: ``call(index) -> output`` evaluates ``fn`` on the rows ``index``
      (int array); default ``fn([tasks[i]…], [completions[i]…])``. Reward
      stages that pass ids use it.

  Returns:
    ``(rewards float32[B, K] with NaN rows where failed, failed bool[B],
    info)``; ``info`` has ``num_failed``, ``num_exceptions``, ``num_timeouts``,
    ``num_bad_output``, ``num_nonfinite``, ``num_skipped``, ``retried``,
    ``errors`` (``'sample b: ...'`` strings), ``seconds``, ``live_workers``.
  """
  t0 = time.monotonic()
  b = len(tasks)
  if len(completions) != b:
    raise ValueError(f"safe_rewards: {b} tasks but {len(completions)} "
                     "completions")
  name = getattr(fn, "__name__", type(fn).__name__)
  k = num_components
  if k is None and getattr(fn, "names", None):
    k = len(fn.names)
  info = {"num_exceptions": 0, "num_timeouts": 0, "num_bad_output": 0,
          "num_nonfinite": 0, "num_skipped": 0, "retried": False, "errors": []}

  def note(kind, where, detail):
    info[kind] += 1
    if len(info["errors"]) < max_errors:
      info["errors"].append(f"{where}: {detail}")

  if call is None:
    def call(index):
      return fn([tasks[i] for i in index], [completions[i] for i in index])

  def attempt(index, where, timeout):
    status, value = _call_with_timeout(lambda: call(index), timeout)
    if status == "timeout":
      note("num_timeouts", where, f"{name} timed out after {timeout:.3g}s")
      return None
    if status == "error":
      note("num_exceptions", where, f"{name} raised {type(value).__name__}: "
           f"{value}")
      return None
    try:
      return as_components(value, len(index), name=name, num_components=k)
    except ValueError as e:
      note("num_bad_output", where, str(e))
      return None

  rows: list[Optional[np.ndarray]] = [None] * b
  skipped = np.zeros((b,), bool)
  if b and live_workers() >= max_live_workers:
    skipped[:] = True
    info["num_skipped"] = b
    info["errors"].append(f"batch: not run, {live_workers()} hung reward "
                          f"workers alive (max_live_workers={max_live_workers})")
  elif b:
    full = attempt(np.arange(b), "batch", timeout_s)
    if full is not None:
      k = full.shape[1]
      rows = list(full)
    elif retry_individually:
      info["retried"] = True
      budget = 4.0 * timeout_s if retry_budget_s is None else retry_budget_s
      deadline = time.monotonic() + budget
      for where, index in _retry_units(b, groups):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          skipped[index] = True
          continue
        out = attempt(index, where, min(timeout_s, remaining))
        if out is not None:
          k = out.shape[1] if k is None else k
          for j, i in enumerate(index):
            rows[i] = out[j]
      info["num_skipped"] = int(skipped.sum())
  k = 1 if k is None else k
  rewards = np.full((b, k), np.nan, np.float32)
  failed = np.ones((b,), bool)
  for i, row in enumerate(rows):
    if row is None:
      continue
    if not np.all(np.isfinite(row)):
      note("num_nonfinite", f"sample {i}", f"{name} returned {row.tolist()}")
      continue
    rewards[i] = row
    failed[i] = False
  info["num_failed"] = int(failed.sum())
  info["seconds"] = time.monotonic() - t0
  info["live_workers"] = live_workers()
  return rewards, failed, info
