r"""NFT: Negative-aware Fine-Tuning (Chen et al. 2025, "Bridging Supervised
Learning and Reinforcement Learning in Math Reasoning", arXiv:2505.18116).

NFT trains on both correct and incorrect self-generated answers with a
supervised (likelihood) objective. Incorrect answers are modelled through an
*implicit negative policy*: with r̂_q the accuracy of prompt q's group and
π⁺ the policy on correct answers, π_old = r̂_q π⁺ + (1 − r̂_q) π⁻, so
π⁻_θ = (π_old − r̂_q π_θ) / (1 − r̂_q) when π⁺ is parametrised by the trained
π_θ. Per token, with R_t = π_θ(a_t|·) / π_old(a_t|·):

  L(θ) = − Σ ω(q) Σ_t [ r · log R_t
                        + (1 − r) · log max((1 − r̂_q R_t) / (1 − r̂_q), ε) ]

(the NFT objective; the clip max(·, ε) keeps the negative likelihood
finite). Composition::

  NFT  chain(old_logprobs, group_accuracy)   objective = nft_loss(ε, agg='token-mean')

The per-token form above is from general knowledge of the paper (GK in
METHODS.md); the tests check its gradient at R = 1, which equals GRPO's
direction: positives +∇log π, negatives −r̂/(1 − r̂)·∇log π.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.trajectory import Trajectory, group_count, group_sum
from jaxsi.transforms import aggregation, importance
from jaxsi.transforms.advantages import scorable, sequence_rewards
from jaxsi.transforms.base import (Context, ModelOutputs, TrajectoryTransform,
                                   chain, objective, stateless)

RewardFns = Union[Callable, Sequence[Callable]]
sg = jax.lax.stop_gradient

ACCURACY_KEY = "group_accuracy"
CORRECT_KEY = "correct"


def group_accuracy(*, threshold: float = 0.5) -> TrajectoryTransform:
  """Writes r̂_q (``extras['group_accuracy']``) and r (``extras['correct']``).

  A sample is correct when its summed reward is > ``threshold``; r̂_q is the
  fraction of correct valid samples in its group. Metrics 'nft/accuracy',
  'nft/frac_all_correct', 'nft/frac_all_wrong' (fractions of samples).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj)
    ok = scorable(traj, scores)
    correct = ok & (scores > threshold)
    n = group_count(traj.group_ids, ok)
    acc = group_sum(correct.astype(jnp.float32), traj.group_ids, ok) / jnp.maximum(n, 1.0)
    extras = dict(traj.extras)
    extras[ACCURACY_KEY] = acc
    extras[CORRECT_KEY] = correct.astype(jnp.float32)
    okf = ok.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(okf), 1.0)
    metrics = {
        "nft/accuracy": jnp.sum(correct * okf) / denom,
        "nft/frac_all_correct": jnp.sum((acc >= 1.0) * okf) / denom,
        "nft/frac_all_wrong": jnp.sum((acc <= 0.0) * okf) / denom,
    }
    return traj.replace(extras=extras, valid=traj.valid & ok), metrics

  return stateless(fn)


def nft_loss(*, eps: float = 1e-2, max_accuracy: float = 0.99,
             agg: str = "token-mean", prompt_weight: str = "none"):
  r"""The NFT objective term (module docstring).

  Reads ``outputs.logprobs``, ``traj.old_logprobs``,
  ``extras['correct']`` (r ∈ {0, 1}) and ``extras['group_accuracy']`` (r̂_q).
  r̂_q is capped at ``max_accuracy`` in the negative branch (an all-correct
  group has no negatives, so the cap only avoids 0/0).

  Args:
    eps: lower clip ε of the implicit negative ratio.
    max_accuracy: cap of r̂_q in (1 − r̂_q R)/(1 − r̂_q).
    agg: aggregation mode.
    prompt_weight: 'none' (ω = 1) or 'inverse_accuracy' (ω = 1 − r̂_q, which
      down-weights easy prompts, a variant discussed in the paper).

  Returns:
    An objective term; metrics 'pos_ratio_mean', 'neg_ratio_mean',
    'neg_clipfrac'.
  """
  if prompt_weight not in ("none", "inverse_accuracy"):
    raise ValueError(f"prompt_weight={prompt_weight!r}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.old_logprobs is None or ACCURACY_KEY not in traj.extras:
      raise ValueError("nft_loss needs traj.old_logprobs and the group_accuracy"
                       " transform")
    m = traj.loss_mask
    logr = jnp.where(m, outputs.logprobs - traj.old_logprobs, 0.0)
    ratio = jnp.exp(logr)
    r = sg(jnp.asarray(traj.extras[CORRECT_KEY], jnp.float32))[:, None]
    acc = sg(jnp.minimum(jnp.asarray(traj.extras[ACCURACY_KEY], jnp.float32),
                         max_accuracy))[:, None]
    neg_arg = (1.0 - acc * ratio) / (1.0 - acc)
    neg = jnp.log(jnp.maximum(neg_arg, eps))
    ll = r * logr + (1.0 - r) * neg
    w = 1.0 if prompt_weight == "none" else (1.0 - acc)
    loss = aggregation.aggregate_trajectory(-w * ll, traj, mode=agg)
    pos_mask = m & (r > 0.5)
    neg_mask = m & (r < 0.5)
    metrics = {
        "pos_ratio_mean": aggregation.masked_token_mean(sg(ratio), traj, pos_mask),
        "neg_ratio_mean": aggregation.masked_token_mean(sg(ratio), traj, neg_mask),
        "neg_clipfrac": aggregation.masked_token_mean(
            sg((neg_arg < eps).astype(jnp.float32)), traj, neg_mask),
    }
    return loss, metrics

  return term


def nft(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(),
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        eps: float = 1e-2, threshold: float = 0.5,
        prompt_weight: str = "none", agg: str = "token-mean",
        extra_transforms: Sequence[Any] = (), name: str = "nft") -> base.Method:
  """NFT as a method (see the module docstring for the paper and equation).

  Args:
    rollout, optim, reward_fns, extra_transforms, name: as ``grpo``.
    eps: lower clip of the negative branch.
    threshold: reward > threshold counts as correct.
    prompt_weight: ω(q), see :func:`nft_loss`.
    agg: aggregation mode.

  Returns:
    The Method.
  """
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=chain(importance.old_logprobs(), group_accuracy(threshold=threshold)),
      objective=objective((1.0, nft_loss(eps=eps, agg=agg,
                                         prompt_weight=prompt_weight), "nft")))
