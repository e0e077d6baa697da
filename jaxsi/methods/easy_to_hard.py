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

The paper votes across independently trained models (different seeds):
``vote_models = m`` trains m - 1 *peer* models from their own random
initialisations alongside the main one — each with its own warm start on the
labeled set and, every round, its own M-step (from its previous round) on
exactly the main model's training set — and every model's greedy answer
(plus the ``rollout`` temperature samples of the main model, if any) votes.
Peers live in ``workdir/peers/model_{i}/pool`` (one checkpoint per round,
resumable like the main pool). With ``vote_models = 1`` the vote is over
temperature samples of one model, whose errors are strongly correlated (a
systematic mistake at the new level is repeated by most samples).
``filtering=False`` keeps every problem's greedy self-label of the main model
unfiltered (the paper's ablation that degrades as errors compound).

As a composition: ``problems(level d₀+r) → sample(greedy of each model +
n at T) → majority vote → length filter → SFT(labeled ∪ accumulated) from
current``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional, Sequence


from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts


def easy_to_hard(*, start_difficulty: int,
                 rollout: Optional[spec.RolloutSpec] = spec.RolloutSpec(
                     n=4, temperature=0.7),
                 filtering: bool = True,
                 min_agreement: float = 0.6, length_filter: bool = True,
                 length_tolerance: int = 0, max_problems_per_round: int = 0,
                 vote_models: int = 1, name: str = "easy_to_hard"
                 ) -> spec.RoundsMethod:
  """Easy-to-hard self-improvement (Lee et al. 2025, §3) as a ``RoundsMethod``.

  Args:
    start_difficulty: d₀, the highest labeled difficulty; round r labels
      level d₀ + r.
    rollout: the shared sampling settings of the main model's voting
      samples (``n`` per problem at ``temperature``) that vote with its
      greedy answer, or None for none (greedy answers only); the completion
      budget is ``RoundsConfig.max_new_tokens``.
    filtering: majority vote + length filter (False: unfiltered greedy
      self-labels).
    min_agreement: minimum vote share of the majority answer.
    length_filter: apply the length filter.
    length_tolerance: allowed deviation (characters) from the modal length.
    max_problems_per_round: use at most this many problems of the level
      (0: all).
    vote_models: models whose greedy answers vote (1 = the main model only;
      m > 1 adds m - 1 independently initialised peers, see module doc).
    name: method name.

  Returns:
    The method: continue from current, accumulate, labeled data included.
  """
  if rollout is not None:
    common.check_rollout("easy_to_hard", rollout)
  if vote_models < 1:
    raise ValueError("easy_to_hard: vote_models must be >= 1")

  def peer_dir(ctx, i):
    return os.path.join(ctx.workdir, "peers", f"model_{i}")

  def peer_params(ctx, i: int, r: int):
    """Peer ``i`` after round ``r`` (trained now if not in its pool)."""
    pool = ctx.open_pool("peers", f"model_{i}", "pool")
    try:
      if r in pool:
        return pool.params(r, like=ctx.base_params)
    finally:
      pool.close()
    if r == 0:
      start = ctx.init_params(ctx.config.seed * 7919 + i)
      examples, steps = list(ctx.labeled_examples), ctx.config.warm_start_steps
    else:
      start = peer_params(ctx, i, r - 1)
      examples, steps = ctx.round_train_set(r), ctx.round_steps(r)
    ckpt = os.path.join(peer_dir(ctx, i), f"train_{r:03d}")
    params = ctx.fit_sft(params=start, examples=examples, steps=steps, ckpt_dir=ckpt,
                         seed=(ctx.config.seed * 1009 + r) * 31 + i,
                         desc=f"peer{i}_round{r}")
    pool = ctx.open_pool("peers", f"model_{i}", "pool")
    try:
      pool.save(r, params)
    finally:
      pool.close()
    shutil.rmtree(ckpt, ignore_errors=True)
    return params

  def problems(r: int, unlabeled: Sequence[Any]):
    level = start_difficulty + r
    out = [t for t in unlabeled if t.difficulty == level]
    if not out:
      raise ValueError(f"easy_to_hard: round {r} needs unlabeled problems of"
                       f" difficulty {level}; none given")
    return out[:max_problems_per_round] if max_problems_per_round else out

  def sample_chunk(ctx, tasks, plan):
    del plan
    greedy = common.sample_records(ctx, tasks, common.GREEDY, voter=0)
    if not filtering:
      return greedy
    votes = [greedy]
    if rollout is not None:
      votes.append(common.sample_records(ctx, tasks, rollout, voter=0))
    for i in range(1, vote_models):
      votes.append(common.sample_records(ctx, tasks, common.GREEDY,
                                         params=peer_params(ctx, i, ctx.round - 1),
                                         voter=i))
    offset = 0
    for group in votes:   # unique sample index per task across voters
      width = max((r["sample"] for r in group), default=-1) + 1
      for r in group:
        r["sample"] += offset
      offset += width
    by_task = common.group_by_task([r for g in votes for r in g])  # main greedy first
    return [r for recs in by_task.values() for r in recs]

  def select(records, plan, ctx):
    del plan, ctx
    if filtering:
      kept, metrics = common.majority_filter(
          records, min_agreement=min_agreement, length_filter=length_filter,
          length_tolerance=length_tolerance)
    else:
      kept = [recs[0] for recs in common.group_by_task(records).values()]
      acc = sum(r["correct"] for r in kept) / max(1, len(kept))
      metrics = dict(problems=len(kept), voted=len(kept), kept=len(kept),
                     label_accuracy=acc, unfiltered_label_accuracy=acc)
    return common.to_examples(kept), [], metrics

  return spec.RoundsMethod(name=name,
                           rollout=None if rollout is None else rollouts.Sample(rollout),
                           sample_chunk=sample_chunk, select=select, problems=problems,
                           train_from="current", accumulate=True, include_labeled=True)
