"""V-STaR: training verifiers for self-taught reasoners (Hosseini et al. 2024).

"V-STaR: Training Verifiers for Self-Taught Reasoners" (arXiv:2402.06457),
Alg. 1. Each iteration t samples k solutions per problem from the generator
G_{t-1}, checks them with the answer checker and

* adds the correct ones to D_GEN (accumulated over iterations) and trains
  G_t ← SFT(G_base, D_GEN) — STaR without rationalisation, from the base;
* adds **all** solutions, labeled correct/incorrect, to D_VER; the verifier
  is trained by DPO on preference pairs (y⁺ ≻ y⁻) of the same problem
  (Eq. 2; reference = the SFT base model):
  L = −E log σ(β log π_V(y⁺|x)/π_ref(y⁺|x) − β log π_V(y⁻|x)/π_ref(y⁻|x)).

At test time the verifier ranks N generator samples (best-of-N) by its DPO
implicit reward, score(x, y) = log π_V(y|x) − log π_ref(y|x) (Eq. 3).

Here the verifier is retrained after every round on the pairs of rounds
1..t (from the warm-started base, reference = base) so every round can
report best-of-N; its parameters are stored in ``workdir/verifier_pool``.

Mapping to Alg. 1: round r's E-step samples G_{r-1}, so the pairs of rounds
1..r come from G_0..G_{r-1} — *not* from G_r, the generator ranked after
round r. In the paper the generator used at test time is the last
iteration's, whose samples are in D_VER. ``verifier_tasks`` (the training
problems) restores that: after training G_r, k solutions per problem are
sampled from G_r and their pairs are added to round r's verifier data
(``round_r/verifier_samples.json``), so D_VER holds exactly one sample set of
every generator G_0..G_r (G_r's set of round r is superseded by round r+1's
E-step, which samples the same G_r).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts
from jaxsi.trajectory import Trajectory


def train_verifier(ctx: Any, *, pairs: Sequence[dict], steps: int,
                   pairs_per_batch: int, beta: float, seed: int,
                   config: Any = None) -> tuple[Any, dict]:
  """DPO (Eq. 2) of a verifier from ``ctx.base_params`` (reference = base).

  ``ctx.fit_pairs`` (``fit`` on the preference pairs, ``pairs_per_batch``
  pairs per batch, fewer pairs are tiled) with the M-step's optimizer
  settings of ``config`` (default ``ctx.config``).

  Returns:
    (verifier params, metrics averaged over the last fifth of the steps).
  """
  if not pairs:
    raise ValueError("train_verifier: no preference pairs")
  return ctx.fit_pairs(params=ctx.base_params, reference=ctx.base_params, pairs=pairs,
                       steps=steps, seed=seed, objective="dpo",
                       pairs_per_batch=pairs_per_batch, desc="verifier",
                       config=config, beta=beta)


def verifier_scores(ctx: Any, verifier_params: Any, traj: Trajectory) -> np.ndarray:
  """V-STaR score log π_V(y|x) − log π_ref(y|x) of each row (Eq. 3), π_ref = base."""
  return (ctx.sequence_logprobs(traj, params=verifier_params)
          - ctx.sequence_logprobs(traj, params=ctx.base_params))


def vstar(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
          max_per_prompt: int = 4, max_pairs_per_problem: int = 4,
          verifier_steps: int = 200, pairs_per_batch: int = 32, beta: float = 0.1,
          eval_temperature: float = 1.0, include_labeled: bool = True,
          verifier_learning_rate: Optional[float] = None,
          eval_on_base: bool = False, all_pairs: bool = False,
          verifier_tasks: Optional[Sequence[Any]] = None,
          name: str = "vstar") -> spec.RoundsMethod:
  """V-STaR (Hosseini et al. 2024, Alg. 1, Eq. 2–3) as a ``RoundsMethod``.

  Args:
    rollout: the shared sampling settings of the iterations (and of the
      generator's own samples for ``verifier_tasks``): ``n`` = k solutions
      per problem at ``temperature``; the completion budget is
      ``RoundsConfig.max_new_tokens``.
    max_per_prompt: correct solutions kept for D_GEN per problem and round.
    max_pairs_per_problem: DPO pairs per problem and round.
    verifier_steps: DPO steps of each verifier training.
    pairs_per_batch: pairs per DPO batch.
    beta: DPO β.
    eval_temperature: temperature of the N test samples ranked by the
      verifier (N = ``RoundsConfig.eval_n``).
    include_labeled: add the labeled set to D_GEN.
    verifier_learning_rate: learning rate of the DPO verifier (default: the
      run's ``RoundsConfig.learning_rate``).
    eval_on_base: from round 1 on, also rank N samples of the warm-started
      base generator with the round's verifier (``base_*`` metrics).
    all_pairs: DPO pairs = every distinct correct × incorrect combination of
      a problem (up to ``max_pairs_per_problem``) instead of a linear pairing
      (``common.build_pairs``).
    verifier_tasks: training problems, or ``'unlabeled'`` for the run's
      unlabeled set (``RoundContext.unlabeled``; usable from gin); if given,
      round r's verifier is also trained on pairs of k samples per problem of
      the round-r generator itself (the paper's D_VER, see module doc).
    name: method name.

  Returns:
    The method: generator from the base on accumulated D_GEN, verifier by
    DPO after each round, best-of-N evaluation (random choice = mean sample
    accuracy, maj@N, pass@N and verifier best-of-N).
  """
  common.check_rollout("vstar", rollout)
  if isinstance(verifier_tasks, str) and verifier_tasks != "unlabeled":
    raise ValueError("vstar: verifier_tasks must be a list of tasks or "
                     f"'unlabeled', got {verifier_tasks!r}")

  def select(records, plan, ctx):
    del plan, ctx
    examples = common.keep_correct(records, max_per_prompt=max_per_prompt)
    pairs = common.build_pairs(records, max_pairs_per_problem=max_pairs_per_problem,
                               all_pairs=all_pairs)
    return examples, pairs, dict(common.sample_stats(records), kept=len(examples),
                                 pairs=len(pairs))

  def verifier_config(config):
    if verifier_learning_rate is None:
      return config
    return dataclasses.replace(config, learning_rate=float(verifier_learning_rate))

  def verifier_pool(ctx):
    return ctx.open_pool("verifier_pool")

  def after_round(ctx, store):
    vpool = verifier_pool(ctx)
    try:
      if ctx.round in vpool:
        return {"verifier": "restored"}
      pairs, extra = [], {}
      for q in range(1, ctx.round + 1):
        pairs.extend(store.load(q, "selected.json")["pairs"])
      if verifier_tasks is not None:
        own = store.load(ctx.round, "verifier_samples.json")
        if own is None:
          # ctx.params is G_r (after the M-step): samples of the generator
          # this round's verifier will rank.
          tasks = (ctx.unlabeled if isinstance(verifier_tasks, str)
                   else verifier_tasks)
          recs = common.sample_records(ctx, list(tasks), rollout)
          own = dict(pairs=common.build_pairs(recs, all_pairs=all_pairs,
                                              max_pairs_per_problem=max_pairs_per_problem),
                     stats=common.sample_stats(recs))
          store.save(ctx.round, "verifier_samples.json", own)
        pairs.extend(own["pairs"])
        extra = {"own_generator_pairs": len(own["pairs"]),
                 "own_generator_sample_accuracy": own["stats"]["sample_accuracy"]}
      if not pairs:
        return {"verifier_pairs": 0}
      params, m = train_verifier(ctx, pairs=pairs, steps=verifier_steps,
                                 pairs_per_batch=pairs_per_batch, beta=beta,
                                 config=verifier_config(ctx.config),
                                 seed=ctx.config.seed * 31 + ctx.round)
      vpool.save(ctx.round, params)
      return {"verifier_pairs": len(pairs), **extra,
              "verifier_loss": m.get("loss", float("nan")),
              "verifier_pair_accuracy": m.get("rewards/accuracies", float("nan"))}
    finally:
      vpool.close()

  def rank(ctx, vparams, params, test, prefix):
    out, ro, _ = common.sampled_eval(ctx, test, n=ctx.config.eval_n,
                                     temperature=eval_temperature, params=params)
    if vparams is not None:
      correct = np.asarray(ro.correct, bool)
      scores = verifier_scores(ctx, vparams, ro.traj)
      out["verifier_best_of_n"] = common.best_of_n_accuracy(scores, correct, out["n"])
      out["verifier_pair_accuracy"] = common.pair_ranking_accuracy(scores, correct,
                                                                   out["n"])
      # Diagnostic (not the paper's score): log π_V(y|x) alone.
      lv = ctx.sequence_logprobs(ro.traj, params=vparams)
      out["verifier_logpi_best_of_n"] = common.best_of_n_accuracy(lv, correct, out["n"])
    return {prefix + k: v for k, v in out.items()}

  def evaluate(ctx, test):
    # The same N samples per problem for every selector: random choice, maj@N,
    # the generator's own likelihood, the verifier, the oracle pass@N.
    vpool = verifier_pool(ctx)
    try:
      vparams = (vpool.params(ctx.round, like=ctx.base_params)
                 if ctx.round in vpool else None)
    finally:
      vpool.close()
    out = rank(ctx, vparams, ctx.params, test, "")
    if eval_on_base and ctx.round > 0:
      # The verifier on the warm start's samples (where random choice has the
      # most headroom): ``base_*`` keys.
      out.update(rank(ctx, vparams, ctx.base_params, test, "base_"))
    return out

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select, after_round=after_round,
      evaluate=evaluate, train_from="base", accumulate=True,
      include_labeled=include_labeled)
