"""B-STaR: balancing exploration and exploitation in self-taught reasoners.

Zeng et al. 2024, "B-STaR: Monitoring and Balancing Exploration and
Exploitation in Self-Taught Reasoners" (arXiv:2412.17256). Iterated
rejection-sampling self-training (sample K → reward filter → SFT from the
current model) that *monitors* each iteration's

* exploration — how many distinct correct solutions the policy finds:
  Pass@K (a problem counts when any of its K samples is correct) and the
  number of distinct correct samples per problem;
* exploitation — how well the reward selects correct solutions:
  Reward@K-S, the precision of the reward-threshold selection against the
  verifier (fraction of selected samples that are correct);

and *balances* them by choosing, each iteration, the sampling temperature T
and the reward threshold τ that maximise the balance score (§4, Eq. 3)::

  bs = (1/|Q|) Σ_i min(n'_i / n*, 1) · n'_i / n_i

with n_i the selected samples of problem i and n'_i the distinct correct
ones among them (0 when n_i = 0); n* is the target number of distinct
correct samples per problem. The choice is made on a probe subset of the
round's problems with the current model, then the round samples with T and
selects with τ.

Reward: the paper uses a process reward model; with no learned RM here the
reward is the label-free self-consistency score (fraction of the problem's
K samples sharing the sample's answer), and ``require_correct`` also applies
the answer checker (the paper's math setting combines both).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts


def balance_score(records: Sequence[dict], *, threshold: float, n_star: int,
                  require_correct: bool = True, score_key: str = "score") -> float:
  """B-STaR balance score (Zeng et al. 2024, Eq. 3) of one (T, τ) choice.

  Args:
    records: candidate records with ``score_key``, ``correct``, ``completion``.
    threshold: τ; a sample is selected iff score ≥ τ (and correct if
      ``require_correct``).
    n_star: n*, the target number of distinct correct samples per problem.
    require_correct: the answer checker also filters.
    score_key: the reward field.

  Returns:
    The mean over problems of min(n'/n*, 1)·n'/n (0 for problems with n = 0).
  """
  scores = []
  for recs in common.group_by_task(records).values():
    sel = [r for r in recs if r[score_key] >= threshold
           and (r["correct"] or not require_correct)]
    if not sel:
      scores.append(0.0)
      continue
    distinct = len({r["completion"] for r in sel if r["correct"]})
    scores.append(min(distinct / n_star, 1.0) * distinct / len(sel))
  return float(np.mean(scores)) if scores else 0.0


def exploration_exploitation(records: Sequence[dict], *, threshold: float,
                             score_key: str = "score") -> dict:
  """Per-round monitors: Pass@K, distinct correct/problem, Reward@K-S precision."""
  stats = common.sample_stats(records)
  sel = [r for r in records if r[score_key] >= threshold]
  return dict(pass_at_k=stats["pass_at_n"], distinct_correct=stats["distinct_correct"],
              sample_accuracy=stats["sample_accuracy"],
              reward_precision=float(np.mean([r["correct"] for r in sel])) if sel else 0.0,
              reward_recall=(sum(r["correct"] for r in sel)
                             / max(1, sum(r["correct"] for r in records))))


def _scored(records):
  for r, s in zip(records, common.answer_agreement(records)):
    r["score"] = s
  return records


def bstar(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8),
          temperatures: Sequence[float] = (0.5, 0.8, 1.1),
          thresholds: Sequence[float] = (0.0, 0.25, 0.5),
          n_star: int = 4, probe_size: int = 128, require_correct: bool = True,
          max_per_prompt: int = 4, include_labeled: bool = True,
          name: str = "bstar") -> spec.RoundsMethod:
  """B-STaR (Zeng et al. 2024, Eq. 3) as a ``RoundsMethod``.

  Args:
    rollout: the shared sampling settings: ``n`` = K samples per problem
      (the completion budget is ``RoundsConfig.max_new_tokens``). Its
      ``temperature`` and ``strategy`` are not used: each round samples at
      the temperature chosen from ``temperatures``.
    temperatures: candidate sampling temperatures (B-STaR's own grid).
    thresholds: candidate reward thresholds τ.
    n_star: n* of the balance score.
    probe_size: problems used to choose (T, τ) each round.
    require_correct: the answer checker filters too.
    max_per_prompt: kept distinct samples per problem.
    include_labeled: add the labeled warm-start set to each M-step.
    name: method name.

  Returns:
    The method: continue from current, latest round's data only.
  """
  common.check_rollout("bstar", rollout)
  if not temperatures or not thresholds:
    raise ValueError("bstar: give at least one temperature and one threshold")

  def plan(ctx, tasks):
    probe = list(tasks[:probe_size])
    grid, rng = [], ctx.rng
    for i, temp in enumerate(temperatures):
      recs = _scored(common.sample_records(
          ctx, probe, spec.RolloutSpec(n=rollout.n, temperature=temp), rng=rng))
      for tau in thresholds:
        grid.append(dict(temperature=float(temp), threshold=float(tau),
                         balance=balance_score(recs, threshold=tau, n_star=n_star,
                                               require_correct=require_correct),
                         **exploration_exploitation(recs, threshold=tau)))
      rng = jax.random.fold_in(rng, i + 1)
    best = max(grid, key=lambda g: (g["balance"], -g["temperature"], -g["threshold"]))
    return dict(temperature=best["temperature"], threshold=best["threshold"],
                probe_balance=best["balance"], grid=grid)

  def sample_chunk(ctx, tasks, plan):
    return _scored(common.sample_records(
        ctx, tasks, spec.RolloutSpec(n=rollout.n, temperature=plan["temperature"])))

  def select(records, plan, ctx):
    del ctx
    tau = plan["threshold"]
    for r in records:
      r["selected"] = bool(r["score"] >= tau and (r["correct"] or not require_correct))
    examples = common.keep_correct(records, max_per_prompt=max_per_prompt,
                                   key="selected")
    return examples, [], dict(
        exploration_exploitation(records, threshold=tau), kept=len(examples),
        balance=balance_score(records, threshold=tau, n_star=n_star,
                              require_correct=require_correct))

  return spec.RoundsMethod(name=name, rollout=rollouts.Sample(rollout),
                           sample_chunk=sample_chunk, select=select, plan=plan,
                           train_from="current", accumulate=False,
                           include_labeled=include_labeled)
