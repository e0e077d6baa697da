"""Easy-to-hard self-improvement (Lee et al. 2025).

"Self-Improving Transformers Overcome Easy-to-Hard and Length Generalization
Challenges" (arXiv:2502.01612), §3. Train on labeled problems of difficulty
≤ d₀; in round r the model labels unlabeled problems of difficulty d₀ + r
(one level above what it was trained on), the self-labels are filtered by
(i) majority voting (§3.2: keep a label only if most generations agree) and
(ii) length filtering (drop labels whose length deviates from the level's
typical length), added to the training set (data accumulates: labeled ∪
self-labels of rounds 1..r), and training continues from the current model.
No verifier: correctness of the self-labels is only monitored.

The paper votes across independently trained models; here the vote is over
``samples_per_prompt`` temperature samples of one model (plus the greedy
one). ``filtering=False`` keeps every problem's greedy self-label
unfiltered (the paper's ablation that degrades as errors compound).

As a composition: ``problems(level d₀+r) → sample(greedy + n, T) →
majority vote → length filter → SFT(labeled ∪ accumulated) from current``.
"""

from __future__ import annotations

from typing import Any, Sequence

from jaxsi.methods import self_training_common as common
from jaxsi.training import rounds


def easy_to_hard(*, start_difficulty: int, samples_per_prompt: int = 4,
                 temperature: float = 0.7, filtering: bool = True,
                 min_agreement: float = 0.6, length_filter: bool = True,
                 length_tolerance: int = 0, max_problems_per_round: int = 0,
                 name: str = "easy_to_hard") -> rounds.RoundsMethod:
  """Easy-to-hard self-improvement (Lee et al. 2025, §3) as a ``RoundsMethod``.

  Args:
    start_difficulty: d₀, the highest labeled difficulty; round r labels
      level d₀ + r.
    samples_per_prompt: temperature samples voting with the greedy answer.
    temperature: temperature of the voting samples.
    filtering: majority vote + length filter (False: unfiltered greedy
      self-labels).
    min_agreement: minimum vote share of the majority answer.
    length_filter: apply the length filter.
    length_tolerance: allowed deviation (characters) from the modal length.
    max_problems_per_round: use at most this many problems of the level
      (0: all).
    name: method name.

  Returns:
    The method: continue from current, accumulate, labeled data included.
  """

  def problems(r: int, unlabeled: Sequence[Any]):
    level = start_difficulty + r
    out = [t for t in unlabeled if t.difficulty == level]
    if not out:
      raise ValueError(f"easy_to_hard: round {r} needs unlabeled problems of"
                       f" difficulty {level}; none given")
    return out[:max_problems_per_round] if max_problems_per_round else out

  def sample_chunk(ctx, tasks, plan):
    del plan
    greedy = common.sample_records(ctx, tasks, n=1, temperature=0.0)
    if not filtering or samples_per_prompt < 1:
      return greedy
    sampled = common.sample_records(ctx, tasks, n=samples_per_prompt,
                                    temperature=temperature)
    for r in sampled:
      r["sample"] += 1
    by_task = rounds.group_by_task(greedy + sampled)   # greedy first per task
    return [r for recs in by_task.values() for r in recs]

  def select(records, plan, ctx):
    del plan, ctx
    if filtering:
      kept, metrics = common.majority_filter(
          records, min_agreement=min_agreement, length_filter=length_filter,
          length_tolerance=length_tolerance)
    else:
      kept = [recs[0] for recs in rounds.group_by_task(records).values()]
      acc = sum(r["correct"] for r in kept) / max(1, len(kept))
      metrics = dict(problems=len(kept), voted=len(kept), kept=len(kept),
                     label_accuracy=acc, unfiltered_label_accuracy=acc)
    return common.to_examples(kept), [], metrics

  return rounds.RoundsMethod(name=name, sample_chunk=sample_chunk, select=select,
                             problems=problems, train_from="current",
                             accumulate=True, include_labeled=True)
