r"""Judging in miniature: 'question, candidate answer → judgment' examples.

A tiny model can only judge what it was taught. This module turns the
synthetic verifiable tasks into judging data whose labels come from the task
verifiers (``Task.verify``), in a ``jaxsi.rewards.judging.JudgeFormat``:

* :func:`corrupt` — a wrong candidate from a correct target (one digit of
  the text changed, deterministically from a seed); its label is still the
  verifier's, so a corruption that happens to be right is labeled right.
* :func:`judging_examples` — warm-start SFT examples ``{prompt: judge
  prompt, completion: label judgment}``: per labeled task, its target
  (correct) and ``wrong_per_task`` corruptions; or :func:`examples_from`
  arbitrary (task, candidate) lists (e.g. the model's own samples).
* :func:`judging_tasks` — judging *tasks* (``Task`` with category
  ``'judgment'``): sampling them gives judgments; their verifier
  (:func:`verify_judgment`, registered as ``'judgment'``) is 1.0 iff the
  parsed judgment agrees with the underlying task's verifier, so the mean
  reward of a judging task set is **judge accuracy against the verifier**.
* :func:`judge_metrics` — judge accuracy, balanced accuracy (mean of the
  accuracies on verifier-correct and verifier-wrong candidates), mean score
  on correct vs wrong candidates and status counts, from parsed judgments.

Self-Rewarding LMs (Yuan et al. 2024, arXiv:2401.10020, §2.1) seed the model
with LLM-as-a-judge "EFT" data (evaluation fine-tuning) next to instruction
data; these examples are that seed in miniature, labeled by verifiers
instead of humans.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import numpy as np

from jaxsi.data.registry import Task
from jaxsi.rewards import judging
from jaxsi.rewards import verifiers

CATEGORY = "judgment"
DIGITS = "0123456789"


def corrupt(text: str, rng: np.random.Generator) -> Optional[str]:
  """``text`` with one digit replaced by a different digit (None: no digit).

  Prefers the digits of the final answer (after the last ``'#### '`` marker
  when present, else the whole text), so a scratchpad's wrong candidate has
  a wrong answer and not only a wrong step.
  """
  start = text.rfind("#### ")
  start = 0 if start < 0 else start + 5
  pos = [i for i in range(start, len(text)) if text[i] in DIGITS]
  if not pos:
    pos = [i for i, ch in enumerate(text) if ch in DIGITS]
  if not pos:
    return None
  i = int(rng.choice(pos))
  new = DIGITS[(DIGITS.index(text[i]) + int(rng.integers(1, 10))) % 10]
  return text[:i] + new + text[i + 1:]


def candidates(tasks: Sequence[Task], *, wrong_per_task: int = 1, seed: int = 0
               ) -> list[tuple[Task, str]]:
  """``(task, candidate)``: each task's target, then ``wrong_per_task``
  corruptions of it (tasks without a target, or without a digit, give only
  what exists)."""
  if int(wrong_per_task) != wrong_per_task or wrong_per_task < 0:
    raise ValueError(f"candidates: wrong_per_task must be an integer >= 0, got"
                     f" {wrong_per_task!r}")
  rng = np.random.default_rng([int(seed), 0x7D6E])
  out = []
  for t in tasks:
    if not t.target:
      raise ValueError(f"candidates: task {t.id!r} has no target to judge")
    out.append((t, t.target))
    for _ in range(int(wrong_per_task)):
      c = corrupt(t.target, rng)
      if c is not None:
        out.append((t, c))
  return out


def examples_from(pairs: Sequence[tuple[Task, str]],
                  fmt: Union[str, judging.JudgeFormat]) -> list[dict]:
  """SFT examples ``{prompt, completion, task_id}`` judging each candidate,
  labeled ``fmt.label(task.verify(candidate) >= 1)`` — with a rationale
  format (``fmt.rationale_sep``), ``fmt.judgment(correct, rationale=the
  task's target)``: the judge writes the right solution, then the score.
  Pairwise formats are built by :func:`pairwise_examples`."""
  fmt = judging.get_format(fmt)
  if fmt.kind == "pairwise":
    raise ValueError(f"examples_from: {fmt.name!r} is pairwise; use pairwise_examples")
  return [dict(prompt=fmt.prompt(t.prompt, c, answer=t.answer),
               completion=fmt.judgment(t.verify(c) >= 1.0, rationale=t.target or ""),
               task_id=f"{t.id}/judge")
          for t, c in pairs]


def judging_examples(tasks: Sequence[Task], fmt: Union[str, judging.JudgeFormat], *,
                     wrong_per_task: int = 1, seed: int = 0) -> list[dict]:
  """Warm-start judging examples of labeled tasks (:func:`candidates` →
  :func:`examples_from`; pairwise: :func:`pairwise_examples`)."""
  fmt = judging.get_format(fmt)
  if fmt.kind == "pairwise":
    return pairwise_examples(tasks, fmt, seed=seed)
  return examples_from(candidates(tasks, wrong_per_task=wrong_per_task, seed=seed), fmt)


def pairwise_examples(tasks: Sequence[Task], fmt: Union[str, judging.JudgeFormat], *,
                      seed: int = 0) -> list[dict]:
  """Pairwise judging examples: per task, (target, corruption) in a random
  order, labeled by the verifier (``fmt.label(correct_a, correct_b)``)."""
  fmt = judging.get_format(fmt)
  if fmt.kind != "pairwise":
    raise ValueError(f"pairwise_examples: {fmt.name!r} is not pairwise")
  rng = np.random.default_rng([int(seed), 0xAB])
  out = []
  pool = candidates(tasks, wrong_per_task=1, seed=seed)
  by_task: dict = {}
  for t, c in pool:
    by_task.setdefault(t.id, (t, []))[1].append(c)
  for t, cands in by_task.values():
    if len(cands) < 2:
      continue
    a, b = cands[0], cands[1]
    if rng.random() < 0.5:
      a, b = b, a
    out.append(dict(prompt=fmt.prompt(t.prompt, a, answer=t.answer, completion_b=b),
                    completion=fmt.label(t.verify(a) >= 1.0, t.verify(b) >= 1.0),
                    task_id=f"{t.id}/judge"))
  return out


def judging_tasks(tasks: Sequence[Task], completions: Sequence[str],
                  fmt: Union[str, judging.JudgeFormat]) -> list[Task]:
  """One judging task per (task, completion): its prompt is the judging
  prompt, its answer the label judgment, its verifier :func:`verify_judgment`.

  ``meta`` holds ``format`` (the format name), ``correct`` (the underlying
  verifier's verdict on the completion) and ``source`` (the task id). The
  label is only read by the verifier, i.e. by evaluation metrics: sampling
  the judging prompt never sees it.
  """
  fmt = judging.get_format(fmt)
  if fmt.kind == "pairwise":
    raise ValueError(f"judging_tasks: {fmt.name!r} is pairwise (one candidate per task)")
  if len(tasks) != len(completions):
    raise ValueError(f"judging_tasks: {len(tasks)} tasks for {len(completions)}"
                     " completions")
  out = []
  for i, (t, c) in enumerate(zip(tasks, completions)):
    correct = bool(t.verify(c) >= 1.0)
    out.append(Task(id=f"{t.id}/judge/{i}", prompt=fmt.prompt(t.prompt, c, answer=t.answer),
                    answer=fmt.label(correct), category=CATEGORY,
                    difficulty=t.difficulty, target=fmt.label(correct),
                    meta={"verifier": CATEGORY, "format": fmt, "correct": correct,
                          "source": t.id}))
  return out


def verify_judgment(task: Any, completion: str) -> float:
  """1.0 iff the judgment parses and agrees with the underlying verifier
  (pairwise: with the label of ``meta['correct']`` and ``meta['correct_b']``)."""
  fmt = judging.get_format(task.meta["format"])
  score, _ = fmt.parse(completion)
  if fmt.kind == "pairwise":
    return float(fmt.agrees(score, bool(task.meta["correct"]),
                            bool(task.meta["correct_b"])))
  return float(fmt.agrees(score, bool(task.meta["correct"])))


if CATEGORY not in verifiers.verifier_names():
  verifiers.register_verifier(CATEGORY, verify_judgment)


def judge_metrics(fmt: Union[str, judging.JudgeFormat], scores: Sequence[float],
                  statuses: Sequence[str], correct: Sequence[bool],
                  prefix: str = "judge/") -> dict:
  """Judge-vs-verifier metrics of parsed judgments of candidates.

  Args:
    fmt: the (pointwise or verdict) format the scores come from.
    scores: parsed scores (NaN: unparsed).
    statuses: their statuses.
    correct: the verifier's verdict on each judged candidate.
    prefix: key prefix.

  Returns:
    ``accuracy`` (agreement with the verifier; unparsed = wrong),
    ``balanced_accuracy`` (mean of the accuracies on verifier-correct and
    verifier-wrong candidates; the available one if only one kind exists),
    ``score_correct`` / ``score_wrong`` (mean parsed score on each kind,
    NaN if none), ``parsed_rate``, and the status counts.
  """
  fmt = judging.get_format(fmt)
  scores = np.asarray(scores, np.float64)
  correct = np.asarray(correct, bool)
  if not (len(scores) == len(statuses) == len(correct)):
    raise ValueError(f"judge_metrics: {len(scores)} scores, {len(statuses)} statuses,"
                     f" {len(correct)} labels")
  agree = np.asarray([fmt.agrees(s, c) for s, c in zip(scores, correct)], bool)
  parsed = np.isfinite(scores)

  def mean(x):
    return float(np.mean(x)) if len(x) else float("nan")

  acc_c, acc_w = mean(agree[correct]), mean(agree[~correct])
  both = [a for a in (acc_c, acc_w) if np.isfinite(a)]
  out = {"accuracy": mean(agree), "balanced_accuracy": mean(both),
         "score_correct": mean(scores[correct & parsed]),
         "score_wrong": mean(scores[~correct & parsed]),
         "parsed_rate": mean(parsed)}
  out = {prefix + k: v for k, v in out.items()}
  out.update(judging.count_statuses(statuses, prefix=prefix))
  return out


# ------------------------------------------------ meta-judging (judge the judge)
def judgment_agrees(fmt: Union[str, judging.JudgeFormat], judgment: str,
                    correct: bool) -> bool:
  """Whether a judgment text parses and agrees with the verifier's verdict."""
  fmt = judging.get_format(fmt)
  score, _ = fmt.parse(judgment)
  return bool(fmt.agrees(score, bool(correct)))


def _check_meta(fmt, meta_fmt, where):
  fmt, meta_fmt = judging.get_format(fmt), judging.get_format(meta_fmt)
  if fmt.kind == "pairwise":
    raise ValueError(f"{where}: the judge format {fmt.name!r} must score one candidate"
                     " (pointwise or verdict)")
  if meta_fmt.kind != "pairwise":
    raise ValueError(f"{where}: the meta-judge format {meta_fmt.name!r} must be pairwise")
  return fmt, meta_fmt


def meta_judging_examples(tasks: Sequence[Task], fmt: Union[str, judging.JudgeFormat],
                          meta_fmt: Union[str, judging.JudgeFormat] = "meta_pairwise", *,
                          wrong_per_task: int = 1, seed: int = 0) -> list[dict]:
  """Warm-start meta-judging examples: which of two judgments is right.

  Per (task, candidate) of :func:`candidates` (the target and
  ``wrong_per_task`` corruptions), the judgment that agrees with the verifier
  (``fmt.label(correct)``) and the one that does not (``fmt.label(not
  correct)``), in a random order (seeded), form the meta-judging prompt
  ``meta_fmt.prompt(fmt.prompt(x, candidate), A, completion_b=B)``; its
  label is ``meta_fmt.label(A agrees, B agrees)`` (``A`` or ``B``). This is
  the miniature's seed for the meta-judge of Meta-Rewarding LMs (Wu et al.
  2024, arXiv:2407.19594): the paper's seed model meta-judges from its
  instruction tuning, a tiny model must be shown the task once.
  """
  fmt, meta_fmt = _check_meta(fmt, meta_fmt, "meta_judging_examples")
  rng = np.random.default_rng([int(seed), 0x3E7A])
  out = []
  for t, c in candidates(tasks, wrong_per_task=wrong_per_task, seed=seed):
    correct = t.verify(c) >= 1.0
    right = fmt.judgment(correct, rationale=t.target)
    wrong = fmt.judgment(not correct, rationale=t.target)
    a, b, a_ok = (right, wrong, True) if rng.random() < 0.5 else (wrong, right, False)
    out.append(dict(prompt=meta_fmt.prompt(fmt.prompt(t.prompt, c, answer=t.answer), a,
                                           answer=t.answer, completion_b=b),
                    completion=meta_fmt.label(a_ok, not a_ok), task_id=f"{t.id}/meta"))
  return out


def meta_judging_tasks(tasks: Sequence[Task], completions: Sequence[str],
                       judgments_a: Sequence[str], judgments_b: Sequence[str],
                       fmt: Union[str, judging.JudgeFormat],
                       meta_fmt: Union[str, judging.JudgeFormat] = "meta_pairwise"
                       ) -> list[Task]:
  """One meta-judging task per (task, candidate, judgment A, judgment B).

  Its prompt is ``meta_fmt.prompt(fmt.prompt(x, candidate), A,
  completion_b=B)``; ``meta['correct']`` / ``meta['correct_b']`` say whether
  A / B agree with the verifier (:func:`judgment_agrees`), so its verifier
  (:func:`verify_judgment`) scores the meta-judgment against them — for
  metrics only: sampling the prompt never sees them.
  """
  fmt, meta_fmt = _check_meta(fmt, meta_fmt, "meta_judging_tasks")
  if not len(tasks) == len(completions) == len(judgments_a) == len(judgments_b):
    raise ValueError(f"meta_judging_tasks: {len(tasks)} tasks, {len(completions)}"
                     f" completions, {len(judgments_a)} + {len(judgments_b)} judgments")
  out = []
  for i, (t, c, a, b) in enumerate(zip(tasks, completions, judgments_a, judgments_b)):
    correct = bool(t.verify(c) >= 1.0)
    a_ok, b_ok = judgment_agrees(fmt, a, correct), judgment_agrees(fmt, b, correct)
    label = meta_fmt.label(a_ok, b_ok)
    out.append(Task(id=f"{t.id}/meta/{i}",
                    prompt=meta_fmt.prompt(fmt.prompt(t.prompt, c, answer=t.answer), a,
                                           answer=t.answer, completion_b=b),
                    answer=label, category=CATEGORY, difficulty=t.difficulty,
                    target=label,
                    meta={"verifier": CATEGORY, "format": meta_fmt, "correct": a_ok,
                          "correct_b": b_ok, "source": t.id}))
  return out


__all__ = ["corrupt", "candidates", "examples_from", "judging_examples",
           "pairwise_examples", "judging_tasks", "verify_judgment", "judge_metrics",
           "judgment_agrees", "meta_judging_examples", "meta_judging_tasks",
           "CATEGORY"]


# ------------------------------------------------ judging tasks as a task set
from jaxsi.data import registry  # pylint: disable=g-import-not-at-top,wrong-import-position

JUDGE_TASK = "judge"


def judge_tasks(n: int, *, difficulty: int, seed: int = 0, base: str = "addition",
                judge_format: Union[str, judging.JudgeFormat] = "score_1_5",
                correct_fraction: float = 0.5, **base_format) -> list[Task]:
  """``n`` judging tasks over ``base`` problems (registered as ``'judge'``).

  The task set of a generative reward model trained by RL (SPCT,
  ``jaxsi.methods.spct``): per ``base`` problem (its generator called with
  ``difficulty``, ``seed`` and ``base_format``), the candidate is its target
  with probability ``correct_fraction``, else a :func:`corrupt`\\ ion of it
  (the verifier labels the candidate either way, so a corruption that happens
  to be right is labeled right); the judging task is :func:`judging_tasks`'s
  (prompt = the judging prompt, target = the label judgment, verifier =
  :func:`verify_judgment`). Deterministic in ``(n, difficulty, seed)``.

  Raises:
    ValueError: a pairwise format, or ``correct_fraction`` outside [0, 1].
  """
  fmt = judging.get_format(judge_format)
  if not 0.0 <= correct_fraction <= 1.0:
    raise ValueError(f"judge_tasks: correct_fraction must be in [0, 1], got"
                     f" {correct_fraction!r}")
  problems = registry.get_generator(base)(int(n), difficulty=int(difficulty),
                                          seed=int(seed), **base_format)
  rng = np.random.default_rng([int(seed), int(difficulty), 0x6A7])
  completions = []
  for t in problems:
    wrong = rng.random() >= correct_fraction
    c = corrupt(t.target, rng) if wrong else None
    completions.append(t.target if c is None else c)
  return judging_tasks(problems, completions, fmt)


if JUDGE_TASK not in registry.task_names():
  registry.register_task(JUDGE_TASK, judge_tasks)
