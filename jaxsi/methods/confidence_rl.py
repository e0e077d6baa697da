r"""RL on the model's own confidence: Intuitor, RLSC, EM-RL / EM-FT, RLHF-Sharpening.

No labels and no verifier: the signal is a statistic of a role's own
next-token distributions (``jaxsi.sampling.confidence``) or an objective on
the model's own samples::

  Intuitor        reward = self-certainty under the live policy ·
                  GRPO chain · pg_clip + β·kl
  EM-RL           reward = log π(y|x) (sequence) or −Σ_t H_t (token) under
                  the live policy · GRPO chain · pg_clip + β·kl
  RLHF-Sharpening reward = log π_base(y|x) / |y| under the frozen base ·
                  GRPO chain · pg_clip + β·kl(π ‖ π_base)
  RLSC            objective = −Σ_i (p_old(y_i) + α) log p_θ(y_i)  (no reward)
  EM-FT           objective = mean token entropy on own samples (no reward)

Every rollout logs ``label_free/sample_acc`` (the verifier's accuracy of
the samples, monitoring only). RLSC and EM-FT need no reward; the loop
requires a reward stage, so theirs is the verifier column ``correct``, which
no transform or term reads (a monitor).
"""

from __future__ import annotations

from typing import Any, Sequence

from jaxsi import spec as spec_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import confidence
from jaxsi.sampling import label_free as stages_lib
from jaxsi.sampling import rollouts
from jaxsi.transforms import (advantages, entropy, filters, importance, kl,
                              policy_losses, rescoring)
from jaxsi.transforms import confidence as confidence_terms
from jaxsi.transforms.base import chain, objective


def _monitored(spec):
  return stages_lib.LabelMonitor(rollouts.Sample(spec), vote=False)


def _confidence_pg(*, name, rollout, optim, reward, kl_coef, kl_estimator,
                   eps_low, eps_high, agg, drop_zero_variance, extra_transforms,
                   scale="group", need_reference=False):
  parts = []
  if kl_coef:
    parts.append(rescoring.ref_logprobs())
  parts += [importance.old_logprobs(), advantages.group_advantages(scale=scale)]
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  terms = [(1.0, policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high,
                                       agg=agg), "pg")]
  if kl_coef:
    terms.append((kl_coef, kl.kl_penalty(estimator=kl_estimator, agg=agg), "kl"))
  roles = base.reference_role(kl_coef or need_reference)
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=(reward,),
      transform=chain(*parts), objective=objective(*terms), roles=roles,
      stage=_monitored, extra_transforms=extra_transforms)


def intuitor(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                   temperature=1.0),
             optim: OptimSpec = OptimSpec(), kl_coef: float = 0.005,
             kl_estimator: str = "k3", eps_low: float = 0.2,
             eps_high: float = 0.2, agg: str = "seq-mean-token-mean",
             drop_zero_variance: bool = False,
             extra_transforms: Sequence[Any] = (),
             name: str = "intuitor") -> base.Method:
  r"""Intuitor (Zhao et al. 2025, "Learning to Reason without External
  Rewards", arXiv:2505.19590, §3, RLIF with self-certainty).

  GRPO whose reward is the self-certainty of each sample under the live
  policy, u_i = 1/|o_i| Σ_t KL(U ‖ π_θ(· | q, o_<t)) (Kang et al. 2025
  arXiv:2502.18581), group-normalised into the advantage. Self-certainty is
  continuous, so groups are kept even when their rewards tie
  (``drop_zero_variance=False``). β = 0.005 with the k3 ("low_var_kl")
  estimator is the authors' setting: their verl recipe
  (sunblaze-ucb/Intuitor, ``verl-intuitor/math_intuitor.sh``) sets
  ``kl_loss_coef=0.005``, ``kl_loss_type=low_var_kl``, n = 8, lr 3e-6.

  Args:
    rollout: G samples per prompt, budget, temperature (the self-certainty
      is read at the scoring temperature).
    optim: epochs × minibatches.
    kl_coef, kl_estimator: β and estimator of the KL to the warm start.
    eps_low, eps_high: PPO clip ε.
    agg: token aggregation.
    drop_zero_variance: drop groups with equal rewards.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method.
  """
  reward = confidence.ConfidenceReward(
      role=spec_lib.POLICY, kind="self_certainty",
      temperature=base.resolve_rollout(rollout).scoring_temperature,
      name="self_certainty")
  return _confidence_pg(name=name, rollout=rollout, optim=optim, reward=reward,
                        kl_coef=kl_coef, kl_estimator=kl_estimator,
                        eps_low=eps_low, eps_high=eps_high, agg=agg,
                        drop_zero_variance=drop_zero_variance,
                        extra_transforms=extra_transforms)


def em_rl(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                temperature=1.0),
          optim: OptimSpec = OptimSpec(), level: str = "sequence",
          kl_coef: float = 0.001, kl_estimator: str = "k3",
          eps_low: float = 0.2, eps_high: float = 0.2,
          agg: str = "seq-mean-token-mean", drop_zero_variance: bool = False,
          extra_transforms: Sequence[Any] = (), name: str = "em_rl"
          ) -> base.Method:
  r"""EM-RL (Agarwal et al. 2025, "The Unreasonable Effectiveness of Entropy
  Minimization in LLM Reasoning", arXiv:2505.15134, §2, EM-RL).

  Reinforcement learning whose only reward is a negative entropy under the
  live policy:

  * ``level='sequence'`` (EM-RL-sequence): r(y) = Σ_t log π(y_t | x, y_<t)
    = log π(y|x), the one-sample estimate of the negative trajectory
    entropy −H(π(·|x));
  * ``level='token'`` (EM-RL-token): r(y) = −Σ_t H(π(· | x, y_<t)).

  Group-normalised advantages, PPO clip, β·KL to the warm start (β = 0.001
  GK, not checked).

  Args:
    rollout, optim, kl_coef, kl_estimator, eps_low, eps_high, agg,
      drop_zero_variance, extra_transforms, name: as :func:`intuitor`.
    level: ``'sequence'`` or ``'token'``.

  Returns:
    The Method.
  """
  kinds = {"sequence": "logprob", "token": "neg_entropy"}
  if level not in kinds:
    raise ValueError(f"em_rl: level={level!r}; expected 'sequence' or 'token'")
  reward = confidence.ConfidenceReward(
      role=spec_lib.POLICY, kind=kinds[level],
      temperature=base.resolve_rollout(rollout).scoring_temperature,
      name=f"neg_entropy_{level}")
  return _confidence_pg(name=name, rollout=rollout, optim=optim, reward=reward,
                        kl_coef=kl_coef, kl_estimator=kl_estimator,
                        eps_low=eps_low, eps_high=eps_high, agg=agg,
                        drop_zero_variance=drop_zero_variance,
                        extra_transforms=extra_transforms)


def sharpening_rl(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                        temperature=1.0),
                  optim: OptimSpec = OptimSpec(), kl_coef: float = 0.05,
                  kl_estimator: str = "k3", length_normalize: bool = True,
                  eps_low: float = 0.2, eps_high: float = 0.2,
                  agg: str = "seq-mean-token-mean",
                  drop_zero_variance: bool = False,
                  extra_transforms: Sequence[Any] = (),
                  name: str = "sharpening_rl") -> base.Method:
  r"""RLHF-Sharpening (Huang et al. 2024, "Self-Improvement in Language
  Models: The Sharpening Mechanism", arXiv:2412.01951, §3.2).

  KL-regularised RL on the self-reward of the **base** model,
  max_π E_π[r_self(x, y)] − β KL(π ‖ π_base) with r_self = log π_base(y|x)
  (Eq. 3), here length-normalised, log π_base(y|x) / |y| (the paper's
  normalised variant; ``length_normalize=False`` for the sum). π_base is the
  frozen warm start (the ``reference`` role); the reward is read by a
  device scorer under it, the optimisation is the GRPO composition. (The
  rounds version, best-of-N then SFT, is ``methods.sharpening``.)

  Args:
    rollout, optim, kl_estimator, eps_low, eps_high, agg,
      drop_zero_variance, extra_transforms, name: as :func:`intuitor`.
    kl_coef: β of KL(π ‖ π_base).
    length_normalize: divide log π_base(y|x) by |y|.

  Returns:
    The Method.
  """
  reward = confidence.ConfidenceReward(
      role=spec_lib.REFERENCE, kind="logprob",
      temperature=base.resolve_rollout(rollout).scoring_temperature,
      length_normalize=length_normalize, name="base_logprob")
  return _confidence_pg(name=name, rollout=rollout, optim=optim, reward=reward,
                        kl_coef=kl_coef, kl_estimator=kl_estimator,
                        eps_low=eps_low, eps_high=eps_high, agg=agg,
                        drop_zero_variance=drop_zero_variance,
                        extra_transforms=extra_transforms, need_reference=True)


def rlsc(*, rollout: RolloutSpec = RolloutSpec(n=16, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(), alpha: float = 0.1,
         agg: str = "seq-mean-token-sum", extra_transforms: Sequence[Any] = (),
         name: str = "rlsc") -> base.Method:
  r"""RLSC (Li et al. 2025, "Confidence Is All You Need: Few-Shot RL
  Fine-Tuning of Language Models", arXiv:2506.06395, §3).

  Maximises the self-confidence E_{y∼p_θ}[p_θ(y|x)] with the smoothed loss
  L = −Σ_i (p_old(y_i|x) + α) log p_θ(y_i|x) over samples of the frozen
  sampler (``transforms.confidence.rlsc``; 16 samples per question in the
  paper). No reward is used (the ``correct`` column is a monitor).

  Args:
    rollout: samples per question, budget, temperature.
    optim: epochs × minibatches.
    alpha: the smoothing α.
    agg: token aggregation of the loss.
    extra_transforms, name: as :func:`intuitor`.

  Returns:
    The Method.
  """
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      reward_fns=(reward_lib.correctness_reward,),
      transform=chain(importance.old_logprobs()),
      objective=objective((1.0, confidence_terms.rlsc(alpha=alpha, agg=agg),
                           "rlsc")),
      stage=_monitored, extra_transforms=extra_transforms)


def em_ft(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=16,
                                                temperature=1.0),
          optim: OptimSpec = OptimSpec(), agg: str = "token-mean",
          extra_transforms: Sequence[Any] = (), name: str = "em_ft"
          ) -> base.Method:
  r"""EM-FT (Agarwal et al. 2025, arXiv:2505.15134, §2, EM-FT).

  Minimises the mean token entropy of the model's own samples
  (``transforms.entropy.token_entropy``), like SFT without labels. No reward
  (the ``correct`` column is a monitor).

  Args:
    rollout: samples per prompt, budget, temperature.
    optim: epochs × minibatches.
    agg: token aggregation of the entropy.
    extra_transforms, name: as :func:`intuitor`.

  Returns:
    The Method.
  """
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      reward_fns=(reward_lib.correctness_reward,),
      transform=chain(importance.old_logprobs()),
      objective=objective((1.0, entropy.token_entropy(agg=agg), "em")),
      stage=_monitored, extra_transforms=extra_transforms)


__all__ = ["em_ft", "em_rl", "intuitor", "rlsc", "sharpening_rl"]
