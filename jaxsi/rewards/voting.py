"""Majority vote over extracted answers (self-consistency).

Self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of
Thought Reasoning in Language Models") samples several completions and keeps
the most frequent final answer. Here the most frequent answer wins; ties go to
the answer whose first occurrence comes earliest. ``None`` and blank strings
(unparseable) never win. Answers are compared as exact strings: canonicalise
them first (``verifiers.canonical_answer`` or the answer extractor).

Used by evaluation (``maj@k`` in ``jaxsi.training.evaluation``) and by the
self-training methods that pseudo-label with the majority answer.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


def _parseable(answer: Any) -> bool:
  return answer is not None and not (isinstance(answer, str) and not answer.strip())


def majority_vote(answers: Sequence[Any]) -> tuple[Any, Optional[int]]:
  """Majority answer among ``answers``, with deterministic tie-breaking.

  Args:
    answers: Extracted answers; ``None`` or blank strings are unparseable.

  Returns:
    ``(answer, index)``: the winning answer and the index of its first
    occurrence, or ``(None, None)`` when no answer is parseable. Ties between
    equally frequent answers go to the one that occurs first.
  """
  counts: dict[Any, int] = {}
  first: dict[Any, int] = {}
  for i, a in enumerate(answers):
    if not _parseable(a):
      continue
    counts[a] = counts.get(a, 0) + 1
    first.setdefault(a, i)
  if not counts:
    return None, None
  winner = min(counts, key=lambda a: (-counts[a], first[a]))
  return winner, first[winner]
