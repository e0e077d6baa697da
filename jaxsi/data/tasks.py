"""Task sets from registered generators, and disjoint train/test splits.

The ``Task`` record and the generator registry live in
:mod:`jaxsi.data.registry` and are re-exported here (``tasks.Task``,
``tasks.register_task``, ``tasks.task_names``, ``tasks.get_generator``).
Generators are registered by name (``addition``, ``multiplication``,
``expression``, ``countdown``, ``pair_sum``; see ``jaxsi.data.synthetic``, which
this module imports so the built-ins are always registered) and called through
``make_tasks(name, n, difficulty=..., seed=..., **fmt)``. This module also
defines the ``addition_self_verify`` generator (in-sequence self-verification).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Dict, Hashable, Optional, Sequence, Union

import numpy as np

from jaxsi.data import spans
from jaxsi.data import synthetic
# Re-exported: callers use tasks.Task, tasks.register_task, ...
from jaxsi.data.registry import (  # pylint: disable=unused-import
    Generator, Task, get_generator, problem_key, register_task, task_names)
from jaxsi.rewards import verifiers


def make_tasks(name: str, n: int, *, difficulty: Union[int, Sequence[int]],
               seed: int = 0, unique: bool = False, **fmt) -> list[Task]:
  """Generates ``n`` tasks of a registered kind, deterministically.

  Args:
    name: registered task name or alias (``'addition'``/``'add'``, …).
    n: number of tasks.
    difficulty: an int, or a sequence of ints to draw from uniformly per task
      (mixed-difficulty sets for curricula).
    seed: the same (name, n, difficulty, seed, fmt) always gives the same tasks.
    unique: drop duplicate problems (may return fewer than ``n`` only when the
      problem space is too small; then it raises instead).
    **fmt: format options of that generator (``scratchpad``, ``reverse``, …).

  Returns:
    A list of ``n`` Tasks.

  Raises:
    ValueError: unknown name, unknown format option, bad n/difficulty, or
      ``unique`` and not enough distinct problems.
  """
  gen = get_generator(name)
  if not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f"make_tasks({name!r}): n must be an int >= 0, got {n!r}")
  params = inspect.signature(gen).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    allowed = sorted(k for k, p in params.items()
                     if p.kind is p.KEYWORD_ONLY and k not in ("difficulty", "seed"))
    bad = sorted(set(fmt) - set(allowed))
    if bad:
      raise ValueError(
          f"make_tasks({name!r}): unknown format option(s) {bad}; "
          f"allowed: {allowed}")
  if isinstance(difficulty, (int, np.integer)):
    tasks = gen(int(n), difficulty=int(difficulty), seed=int(seed), **fmt)
    if unique:
      tasks = _top_up_unique(tasks, n, lambda s: gen(
          int(n), difficulty=int(difficulty), seed=s, **fmt), seed, name)
    return tasks
  levels = [int(d) for d in difficulty]
  if not levels:
    raise ValueError(f"make_tasks({name!r}): empty difficulty sequence")
  rng = np.random.default_rng([int(seed), 0x5EED])
  picks = rng.integers(0, len(levels), size=int(n))
  tasks: list[Task] = [None] * int(n)  # type: ignore[list-item]
  for k, d in enumerate(levels):
    idx = np.flatnonzero(picks == k)
    if idx.size == 0:
      continue
    sub = gen(int(idx.size), difficulty=d, seed=int(seed) * 1000 + k, **fmt)
    for j, t in zip(idx, sub):
      tasks[j] = t
  if unique:
    tasks = _top_up_unique(tasks, n, lambda s: make_tasks(
        name, n, difficulty=levels, seed=s, **fmt), seed, name)
  return tasks


def _top_up_unique(tasks, n, regenerate, seed, name, max_rounds: int = 20):
  out, seen = [], set()
  for t in tasks:
    if t.key not in seen:
      seen.add(t.key)
      out.append(t)
  r = 0
  while len(out) < n and r < max_rounds:
    r += 1
    for t in regenerate(seed + 7919 * r):
      if t.key not in seen and len(out) < n:
        seen.add(t.key)
        out.append(dataclasses.replace(t, id=f"{t.id}/u{r}"))
  if len(out) < n:
    raise ValueError(
        f"make_tasks({name!r}): only {len(out)} distinct problems found, "
        f"{n} requested; raise the difficulty or lower n")
  return out


# ------------------------------------------------------------------ splits
def dedupe(tasks: Sequence[Task], *, key: Callable[[Task], Hashable] = problem_key
           ) -> list[Task]:
  """Keeps the first task of every problem key, in order."""
  seen, out = set(), []
  for t in tasks:
    k = key(t)
    if k not in seen:
      seen.add(k)
      out.append(t)
  return out


def split_tasks(tasks: Sequence[Task], *, test_fraction: Optional[float] = None,
                n_test: Optional[int] = None, seed: int = 0,
                key: Callable[[Task], Hashable] = problem_key
                ) -> tuple[list[Task], list[Task]]:
  """Splits tasks into train/test with no problem on both sides.

  Tasks are grouped by ``key`` (default ``(category, prompt)``); whole groups
  are assigned to one side, so duplicates never leak across the split.

  Args:
    tasks: the tasks.
    test_fraction: fraction of distinct problems in the test split.
    n_test: or an exact number of distinct test problems.
    seed: shuffling seed.
    key: problem identity.

  Returns:
    ``(train, test)``, each in the original order.

  Raises:
    ValueError: neither or both of test_fraction/n_test, or out of range.
  """
  if (test_fraction is None) == (n_test is None):
    raise ValueError("split_tasks: give exactly one of test_fraction, n_test")
  groups: Dict[Hashable, list[int]] = {}
  for i, t in enumerate(tasks):
    groups.setdefault(key(t), []).append(i)
  keys = list(groups)
  if n_test is None:
    if not 0.0 <= test_fraction <= 1.0:
      raise ValueError(f"split_tasks: test_fraction={test_fraction} not in [0, 1]")
    n_test = int(round(test_fraction * len(keys)))
  if not 0 <= n_test <= len(keys):
    raise ValueError(
        f"split_tasks: n_test={n_test} but only {len(keys)} distinct problems")
  order = np.random.default_rng(seed).permutation(len(keys))
  test_keys = {keys[i] for i in order[:n_test]}
  train = [t for t in tasks if key(t) not in test_keys]
  test = [t for t in tasks if key(t) in test_keys]
  return train, test


def make_train_test(name: str, *, n_train: int, n_test: int,
                    difficulty: Union[int, Sequence[int]],
                    test_difficulty: Union[int, Sequence[int], None] = None,
                    seed: int = 0, **fmt) -> tuple[list[Task], list[Task]]:
  """Generates disjoint train and test sets (no shared ``(category, prompt)``).

  The test set is generated first (unique problems), then train problems that
  collide with it are replaced by fresh ones. ``test_difficulty`` (default
  ``difficulty``) allows length-generalisation splits (train ≤ d, test d + 1).

  Raises:
    ValueError: the problem space is too small for the requested sizes.
  """
  test_difficulty = difficulty if test_difficulty is None else test_difficulty
  test = make_tasks(name, n_test, difficulty=test_difficulty, seed=seed + 1,
                    unique=True, **fmt)
  test_keys = {t.key for t in test}
  train, r = [], 0
  while len(train) < n_train:
    if r > 20:
      raise ValueError(
          f"make_train_test({name!r}): could not find {n_train} train problems "
          f"disjoint from the {n_test} test problems; raise the difficulty")
    batch = make_tasks(name, max(n_train, 16), difficulty=difficulty,
                       seed=seed + 2 + 7919 * r, **fmt)
    for t in batch:
      if t.key not in test_keys and len(train) < n_train:
        train.append(t if r == 0 else dataclasses.replace(t, id=f"{t.id}/r{r}"))
    r += 1
  return train, test


# ---------------------------------------- in-sequence self-verification
SELF_VERIFY_VERIFIER = "self_verify"


def _verdict_format(task: Task):
  fmt = dict((task.meta or {}).get("verdict_format", {}))
  return spans.VerdictFormat(**fmt)


def attempt_correct(task: Task, attempt_text: str) -> float:
  """1.0 if one attempt's text answers ``task`` (numeric, reversed per meta)."""
  meta = task.meta or {}
  text = attempt_text.strip()
  if not text:
    return 0.0
  ok = verifiers.numeric_match(text, task.answer,
                               reverse=bool(meta.get("reverse", False)))
  return 1.0 if ok else 0.0


def verify_self_verification(task: Task, completion: str) -> float:
  """Verifier of the verdict format: the *final* attempt's answer is correct.

  The completion ``attempt [verdict] (revision [verdict])*`` is parsed with
  ``jaxsi.data.spans.parse_self_verification`` (markers and M from
  ``task.meta['verdict_format']``); the last non-empty attempt is the answer.
  """
  final = spans.parse_self_verification(completion,
                                        _verdict_format(task)).final_answer
  return 0.0 if final is None else attempt_correct(task, final)


verifiers.register_verifier(SELF_VERIFY_VERIFIER, verify_self_verification,
                            overwrite=True)


def wrong_answer(correct: int, rng: np.random.Generator) -> int:
  """A plausible wrong sum: a dropped carry, one changed digit, or ±1..9."""
  s = str(correct)
  for _ in range(20):
    kind = rng.integers(0, 3)
    if kind == 0 and len(s) > 1:        # change one digit
      i = int(rng.integers(0, len(s)))
      d = int(rng.integers(0, 10))
      cand = int(s[:i] + str(d) + s[i + 1:])
    elif kind == 1:                      # off by a few
      cand = correct + int(rng.choice([-1, 1])) * int(rng.integers(1, 10))
    else:                                # drop the leading carry / a digit
      cand = int(s[1:]) if len(s) > 1 else correct + 1
    if cand >= 0 and cand != correct:
      return cand
  return correct + 1


def addition_self_verify(n: int, *, difficulty: int, seed: int = 0,
                         max_attempts: int = 3, p_wrong: float = 0.3,
                         correct: str = "[correct]", wrong: str = "[wrong]",
                         pad: bool = False, reverse_operands: bool = False
                         ) -> list[Task]:
  """Reversed-digit addition whose target is ``attempt [verdict] (revision [verdict])*``.

  The SPOC / self-rewarding-correction warm-start format (Zhao et al. 2025,
  arXiv:2506.06923; Xiong et al. 2025, arXiv:2502.19613): most targets are
  ``'64[correct]'`` (``46`` reversed, verified); with probability ``p_wrong``
  per attempt (at most M − 1 times) a wrong attempt (``wrong_answer``) is
  injected first, followed by ``'[wrong]'`` and a new attempt, e.g.
  ``'74[wrong]64[correct]'``. ``meta['injected_wrong']`` counts them (an SFT
  set-up can mask their tokens so the model does not learn to make the
  mistake, only to catch and fix it). ``Task.verify`` scores the final
  attempt (``verify_self_verification``).

  Args:
    n: number of tasks.
    difficulty: digits per operand.
    seed: random seed (the problems equal ``addition(…, reverse=True)``'s).
    max_attempts: M.
    p_wrong: probability of each injected wrong attempt.
    correct: positive verdict marker.
    wrong: negative verdict marker.
    pad: zero-pad operands and answers (``addition(pad=True)``).
    reverse_operands: operands least-significant digit first too
      (``addition(reverse_operands=True)``; easier for tiny models).

  Returns:
    ``n`` tasks of category ``'addition'`` with ``meta['verifier'] =
    'self_verify'`` and ``meta['verdict_format']``.
  """
  fmt = spans.VerdictFormat(correct=correct, wrong=wrong,
                            max_attempts=max_attempts)
  if not 0.0 <= p_wrong <= 1.0:
    raise ValueError(f"addition_self_verify: p_wrong={p_wrong} not in [0, 1]")
  base = synthetic.addition(n, difficulty=difficulty, seed=seed, reverse=True,
                            pad=pad, reverse_operands=reverse_operands)
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(difficulty), 0x5F0C])
  width = difficulty + 1
  out = []
  for t in base:
    value = int(t.answer)
    show = lambda v: (str(v).zfill(width) if pad else str(v))[::-1]
    attempts, verdicts = [], []
    while len(attempts) < max_attempts - 1 and rng.random() < p_wrong:
      attempts.append(show(wrong_answer(value, rng)))
      verdicts.append(False)
    attempts.append(show(value))
    verdicts.append(True)
    meta = dict(t.meta)
    meta.update(verifier=SELF_VERIFY_VERIFIER, format="self_verify",
                verdict_format=dict(correct=correct, wrong=wrong,
                                    max_attempts=max_attempts),
                injected_wrong=len(attempts) - 1)
    out.append(t.replace(id=t.id.replace("addition/", "addition_sv/", 1),
                         target=fmt.render(attempts, verdicts), meta=meta))
  return out


register_task("addition_self_verify", addition_self_verify,
              aliases=("add_sv",))
