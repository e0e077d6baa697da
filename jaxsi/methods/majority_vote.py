r"""Majority-vote RL without labels: TTRL, SRT and Co-Reward, as compositions.

The reward is the model's agreement with itself (``jaxsi.rewards.label_free``);
the rest is the group policy gradient of the RLVR family::

  TTRL       rollout(N) · reward(majority of the own group, over all N) ·
             chain(old_logprobs, random_group_subset(M), ref_logprobs,
                   group_advantages(scale='group'), drop_zero_variance_groups)
             objective = pg_clip(0.2, 0.2) + β·kl(k3)
  SRT        rollout(n) · reward(majority of the own group) ·
             chain(old_logprobs, rloo_advantages)   objective = pg_clip(0.2)
  Co-Reward  rollout(q and q', n each, paired) · reward(majority of the
             *partner* group) · chain(old_logprobs, group_advantages,
             drop_zero_variance_groups)             objective = pg_clip + β·kl

Every rollout logs ``label_free/pseudo_label_acc`` (the vote against the
verifier, monitoring only), ``label_free/agreement`` and
``label_free/sample_acc`` (``jaxsi.sampling.label_free``).
"""

from __future__ import annotations

from typing import Any, Sequence

from jaxsi.data import rephrase as rephrase_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import label_free as label_lib
from jaxsi.sampling import label_free as stages_lib
from jaxsi.sampling import rollouts
from jaxsi.transforms import (advantages, filters, importance, kl,
                              policy_losses, rescoring, subsample)
from jaxsi.transforms.base import chain, objective


def _pg_objective(*, eps_low, eps_high, kl_coef, kl_estimator, agg):
  terms = [(1.0, policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high,
                                       agg=agg), "pg")]
  if kl_coef:
    terms.append((kl_coef, kl.kl_penalty(estimator=kl_estimator, agg=agg), "kl"))
  return objective(*terms)


def _monitored(spec):
  return stages_lib.LabelMonitor(rollouts.Sample(spec), vote=True)


def ttrl(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(), train_fraction: float = 0.5,
         eps_low: float = 0.2, eps_high: float = 0.2, kl_coef: float = 0.0,
         kl_estimator: str = "k3", agg: str = "seq-mean-token-mean",
         drop_zero_variance: bool = True, extra_transforms: Sequence[Any] = (),
         name: str = "ttrl") -> base.Method:
  r"""TTRL (Zuo et al. 2025, "TTRL: Test-Time Reinforcement Learning",
  arXiv:2504.16084, §2 Eq. for the majority-vote reward, §3 setup).

  N = ``rollout.n`` samples vote (ŷ = majority answer), r_i = 1[a_i = ŷ];
  the update uses a uniform random ``train_fraction`` of each group (the
  paper votes over 64 and trains on 32: 0.5) with the GRPO objective
  (group-normalised advantages over the trained subset, PPO clip). β =
  ``kl_coef`` = 0 by default (GK: read as TTRL's setting, not checked); a
  positive β adds GRPO's k3 KL to the warm start.

  Args:
    rollout: N (votes per prompt), budget, temperature.
    optim: epochs × minibatches.
    train_fraction: M / N, the trained share of each group.
    eps_low, eps_high: PPO clip ε.
    kl_coef, kl_estimator: β and estimator of the KL to the warm start.
    agg: token aggregation.
    drop_zero_variance: drop trained groups with equal rewards.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method.
  """
  if not 0.0 < train_fraction <= 1.0:
    raise ValueError(f"ttrl: train_fraction must be in (0, 1] (the trained"
                     f" share M/N of each group), got {train_fraction!r}")
  parts = [importance.old_logprobs(),
           subsample.random_group_subset(keep=float(train_fraction))]
  if kl_coef:
    parts.insert(0, rescoring.ref_logprobs())
  parts.append(advantages.group_advantages(scale="group"))
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      reward_fns=(label_lib.majority_vote_reward(group_size=rollout.n),),
      transform=chain(*parts),
      objective=_pg_objective(eps_low=eps_low, eps_high=eps_high,
                              kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg),
      roles=base.reference_role(kl_coef), stage=_monitored,
      extra_transforms=extra_transforms)


def srt(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(), eps: float = 0.2,
        agg: str = "seq-mean-token-mean", extra_transforms: Sequence[Any] = (),
        name: str = "srt") -> base.Method:
  r"""SRT, Self-Rewarded Training (Shafayat et al. 2025, "Can Large Reasoning
  Models Self-Train?", arXiv:2505.21444, §3).

  r_i = 1[a_i = majority answer of the group], all n samples trained, with
  the RLOO baseline A_i = r_i − mean_{j≠i} r_j and a PPO-clipped ratio
  (GK: the paper builds on an RLOO-style group policy gradient without a
  KL term; the exact estimator is not checked against its equations).

  Args:
    rollout: n samples per prompt (votes = trained samples).
    optim, extra_transforms, name: as :func:`ttrl`.
    eps: PPO clip ε.
    agg: token aggregation.

  Returns:
    The Method.
  """
  parts = [importance.old_logprobs(), advantages.rloo_advantages()]
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      reward_fns=(label_lib.majority_vote_reward(group_size=rollout.n),),
      transform=chain(*parts),
      objective=_pg_objective(eps_low=eps, eps_high=eps, kl_coef=0.0,
                              kl_estimator="k3", agg=agg),
      stage=_monitored, extra_transforms=extra_transforms)


def co_reward(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                    temperature=1.0),
              optim: OptimSpec = OptimSpec(), eps_low: float = 0.2,
              eps_high: float = 0.2, kl_coef: float = 0.0,
              kl_estimator: str = "k3", agg: str = "seq-mean-token-mean",
              drop_zero_variance: bool = True,
              extra_transforms: Sequence[Any] = (),
              name: str = "co_reward") -> base.Method:
  r"""Co-Reward (Zhang et al. 2025, "Co-Reward: Self-supervised Reinforcement
  Learning for Large Language Model Reasoning via Contrastive Agreement",
  arXiv:2508.00410, §3).

  Every problem q is sampled with its rephrasing q' (``data.rephrase``,
  ``n`` samples each: B = 2·R·n); a rollout of q earns 1[a = ŷ(q')] and a
  rollout of q' earns 1[a = ŷ(q)] (cross-referenced majority votes), and
  each group gets GRPO's group-normalised advantages and the clipped
  objective.

  Args:
    rollout: n samples per prompt and per rephrasing.
    optim, eps_low, eps_high, kl_coef, kl_estimator, agg,
      drop_zero_variance, extra_transforms, name: as :func:`ttrl`.

  Returns:
    The Method.
  """
  parts = [importance.old_logprobs(), advantages.group_advantages(scale="group")]
  if kl_coef:
    parts.insert(0, rescoring.ref_logprobs())
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      reward_fns=(label_lib.cross_agreement_reward(group_size=rollout.n),),
      transform=chain(*parts),
      objective=_pg_objective(eps_low=eps_low, eps_high=eps_high,
                              kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg),
      roles=base.reference_role(kl_coef),
      stage=lambda spec: stages_lib.Rephrased(
          spec, rephrase_fn=rephrase_lib.rephrase_prompt),
      extra_transforms=extra_transforms)


__all__ = ["co_reward", "srt", "ttrl"]
