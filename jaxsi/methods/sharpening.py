"""SFT-Sharpening: best-of-N by the model's own likelihood, then SFT (Huang et al. 2024).

"Self-Improvement in Language Models: The Sharpening Mechanism"
(arXiv:2412.01951), §3.1. With the model's own sequence log-likelihood as
the self-reward, r_self(x, y) = log π(y | x) (Eq. 3; optionally divided by
|y|), SFT-Sharpening draws N responses y_1..y_N ~ π(· | x), keeps
ŷ = argmax_i log π(y_i | x) (best-of-N) and fine-tunes π on (x, ŷ) —
amortising the expensive inference-time maximum-likelihood search into the
weights ("sharpening" π towards its own mode). No verifier is used; the
verifier only *monitors* the selected responses' accuracy.

As a composition: ``sample(N, T) → score log π(y|x) → best-of-N → SFT``.
"""

from __future__ import annotations

import numpy as np

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts


def sharpening(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
               length_normalize: bool = False, include_labeled: bool = False,
               train_from: str = "current", eval_temperature: float = 1.0,
               evaluate_best_of_n: bool = True, name: str = "sharpening"
               ) -> spec.RoundsMethod:
  """SFT-Sharpening (Huang et al. 2024, §3.1, Eq. 3) as a ``RoundsMethod``.

  Args:
    rollout: the shared sampling settings: ``n`` = N responses per prompt
      at ``temperature`` (scoring is always at temperature 1: the model's own
      likelihood); the completion budget is ``RoundsConfig.max_new_tokens``.
    length_normalize: select by the per-token mean log-likelihood.
    include_labeled: also train on the labeled warm-start set.
    train_from: 'current' (iterated sharpening) or 'base'.
    eval_temperature: temperature of the ``RoundsConfig.eval_n`` held-out
      samples of the extra evaluation.
    evaluate_best_of_n: every round, also report on held-out samples the
      sampling pass@1 (``random_choice``) and the accuracy of best-of-N by the
      model's own likelihood (``likelihood_best_of_n``) — the quantity
      sharpening amortises: after sharpening, pass@1 should approach it.
    name: method name.

  Returns:
    The method (latest round's data only).
  """
  common.check_rollout("sharpening", rollout)
  score = "logprob_mean" if length_normalize else "logprob"

  def sample_chunk(ctx, tasks, plan):
    del plan
    return common.sample_records(ctx, tasks, rollout, with_logprob=True)

  def select(records, plan, ctx):
    del plan, ctx
    best = common.best_of_n(records, score=score)
    stats = common.sample_stats(records)
    return common.to_examples(best), [], dict(
        stats, kept=len(best),
        selected_accuracy=float(np.mean([r["correct"] for r in best])) if best else 0.0,
        selected_logprob=float(np.mean([r[score] for r in best])) if best else 0.0,
        mean_logprob=float(np.mean([r[score] for r in records])) if records else 0.0)

  def evaluate(ctx, test):
    out, _, logp = common.sampled_eval(ctx, test, n=ctx.config.eval_n,
                                       temperature=eval_temperature)
    out["mean_logprob"] = float(np.mean(logp))
    return out

  return spec.RoundsMethod(name=name, rollout=rollouts.Sample(rollout),
                           sample_chunk=sample_chunk, select=select,
                           train_from=train_from, accumulate=False,
                           include_labeled=include_labeled,
                           evaluate=evaluate if evaluate_best_of_n else None)
