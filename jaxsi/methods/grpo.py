r"""GRPO and its two best-known corrections, Dr. GRPO and DAPO, as compositions.

All three share the rollout (n samples per prompt, temperature sampling), the
verifier reward and the group-relative advantage; they differ only in the
pieces below (DESIGN.md "Worked compositions")::

  GRPO     chain(ref_logprobs, old_logprobs, group_advantages(scale='group'),
                 drop_zero_variance_groups)
           objective = pg_clip(ε=(0.2, 0.2), agg='seq-mean-token-mean')
                       + β·kl(k3)
  Dr.GRPO  group_advantages(scale='none'), agg='seq-mean-token-sum-norm'
           (constant length normaliser), β = 0
  DAPO     ε=(0.2, 0.28) clip-higher, agg='token-mean', no KL,
           overlong_penalty on the reward, dynamic sampling (the loop refills
           zero-variance groups)
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import rollouts
from jaxsi.transforms import (advantages, filters, importance, kl,
                              policy_losses, rescoring, rewards)
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]


def grpo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         eps_low: float = 0.2, eps_high: float = 0.2, kl_coef: float = 0.04,
         kl_estimator: str = "k3", scale: str = "group",
         agg: str = "seq-mean-token-mean", drop_zero_variance: bool = True,
         extra_transforms: Sequence[Any] = (),
         name: str = "grpo") -> base.Method:
  r"""GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, Eq. 3 and 4).

  J(θ) = E[ 1/G Σ_i 1/|o_i| Σ_t min(r_{i,t} Â_i, clip(r_{i,t}, 1−ε, 1+ε) Â_i)
            − β D_KL(π_θ ‖ π_ref) ]
  with Â_i = (R_i − mean(R_g)) / std(R_g) (outcome supervision, §4.1.2) and
  the k3 estimator D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1 (Eq. 4). Matches TRL
  ``GRPOTrainer(loss_type='grpo', beta=0.04)`` (formulas.md §1.1–1.4).
  Zero-variance groups (all-equal rewards, Â = 0) are dropped from the loss
  (``valid = False``), as the DESIGN composition prescribes.

  Args:
    rollout: group size G (``n``), completion budget, sampling (and
      scoring) temperature, strategy (default temperature sampling;
      greedy at temperature 0).
    optim: optimisation passes (``epochs``) x ``minibatches`` per rollout
      batch.
    reward_fns: host reward fn(s) ``fn(tasks, completions)``.
    eps_low: ε_low of the clip.
    eps_high: ε_high of the clip.
    kl_coef: β of the KL penalty (0 disables it and the reference model).
    kl_estimator: KL estimator name (``jaxsi.transforms.kl``).
    scale: advantage scaling 'group' | 'batch' | 'none'.
    agg: token aggregation of the policy and KL terms.
    drop_zero_variance: drop all-equal groups from the loss.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method.
  """
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      reward_fns=reward_fns, kl_coef=kl_coef, kl_estimator=kl_estimator,
      agg=agg, extra_transforms=extra_transforms,
      advantage=advantages.group_advantages(scale=scale),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg),
      drop_zero_variance=drop_zero_variance)


def _group_pg(*, name, rollout, optim, reward_fns, kl_coef, kl_estimator, agg,
              advantage, pg_term, drop_zero_variance, extra_transforms=(),
              shaping=(), max_len=None,
              dynamic_sampling=None, guide=None, extra_terms=(),
              teacher=False, pre=(), guide_importance=True) -> base.Method:
  """Shared composition of the group-relative policy-gradient methods."""
  parts = list(pre)
  if kl_coef:
    parts.append(rescoring.ref_logprobs())
  parts.append(importance.old_logprobs())
  if guide is not None and guide_importance:
    parts.append(base.guided_old_logprobs())
  parts.extend(shaping)
  parts.append(advantage)
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  terms = [(1.0, pg_term, "pg")]
  if kl_coef:
    terms.append((kl_coef, kl.kl_penalty(estimator=kl_estimator, agg=agg,
                                         max_len=max_len), "kl"))
  terms.extend(extra_terms)
  roles = base.reference_role(kl_coef)
  if teacher:
    roles += (base.Role(base.TEACHER),)
  stage = None
  if dynamic_sampling is not None or guide is not None:
    def stage(spec):
      stage = rollouts.Sample(spec)
      if dynamic_sampling is not None:
        stage = rollouts.RefillUntil(spec, **dynamic_sampling)
      if guide is not None:
        stage = rollouts.HintedResample(stage, **guide)
      return stage
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms), roles=roles,
      stage=stage, extra_transforms=extra_transforms)


def dr_grpo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                  temperature=1.0),
            optim: OptimSpec = OptimSpec(),
            reward_fns: RewardFns = (reward_lib.correctness_reward,),
            eps_low: float = 0.2, eps_high: float = 0.2, kl_coef: float = 0.0,
            kl_estimator: str = "k3", max_len: Optional[int] = None,
            drop_zero_variance: bool = True,
            extra_transforms: Sequence[Any] = (),
            name: str = "dr_grpo") -> base.Method:
  r"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training: A
  Critical Perspective", arXiv:2503.20783, §3.2, the Dr. GRPO objective).

  GRPO without its two biases: no per-group std division
  (Â_i = R_i − mean(R_g)) and no per-sequence 1/|o_i| length normalisation —
  the token sum of each sequence is divided by a constant L_max instead
  (``agg='seq-mean-token-sum-norm'``: Σ_{i,t} ℓ / (G·L_max)). L_max defaults
  to the padded length T = prompt bucket + ``max_new_tokens``; pass
  ``max_len=max_new_tokens`` for TRL ``loss_type='dr_grpo'`` exactly. β = 0 as
  in the paper.

  Args: as :func:`grpo`; ``max_len`` is L_max.

  Returns:
    The Method.
  """
  agg = "seq-mean-token-sum-norm"
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      reward_fns=reward_fns, kl_coef=kl_coef, kl_estimator=kl_estimator,
      agg=agg, extra_transforms=extra_transforms,
      advantage=advantages.group_advantages(scale="none"),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg,
                                    max_len=max_len),
      drop_zero_variance=drop_zero_variance, max_len=max_len)


def dapo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         eps_low: float = 0.2, eps_high: float = 0.28,
         overlong_buffer: Optional[int] = 4, overlong_factor: float = 1.0,
         dynamic_sampling: bool = True, max_gen_batches: int = 4,
         extra_transforms: Sequence[Any] = (),
         name: str = "dapo") -> base.Method:
  r"""DAPO (Yu et al. 2025, arXiv:2503.14476, §3, the DAPO objective).

  J(θ) = E[ 1/Σ_i|o_i| Σ_i Σ_t min(r_{i,t} Â_{i,t},
                                  clip(r_{i,t}, 1−ε_low, 1+ε_high) Â_{i,t}) ]
  s.t. 0 < |{o_i : correct}| < G. Four changes to GRPO:

  * clip-higher: ε_low = 0.2, ε_high = 0.28 (§3.1);
  * dynamic sampling: over-sample and keep only groups with
    0 < accuracy < 1, so every step has a full batch of informative groups
    (§3.2) — the loop refills filtered groups (``rollouts.RefillUntil``);
  * token-level policy-gradient loss: ``agg='token-mean'`` (§3.3);
  * overlong reward shaping (§3.4, soft overlong punishment): a linear
    penalty in the last ``overlong_buffer`` tokens before ``max_new_tokens``
    (``rewards.overlong_penalty``, lengths in tokens);
  and no KL term. The reward must have one column (compose several first).

  Args:
    rollout, optim, reward_fns, extra_transforms, name: as :func:`grpo`.
    eps_low: ε_low (0.2).
    eps_high: ε_high (0.28).
    overlong_buffer: L_cache in tokens (None disables the shaping).
    overlong_factor: penalty at L = L_max.
    dynamic_sampling: refill zero-variance groups.
    max_gen_batches: generation batches per step at most.

  Returns:
    The Method.
  """
  agg = "token-mean"
  shaping = []
  if overlong_buffer:
    shaping.append(rewards.overlong_penalty(
        max_length=rollout.max_new_tokens, buffer_length=overlong_buffer,
        penalty_factor=overlong_factor))
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      reward_fns=reward_fns, kl_coef=0.0, kl_estimator="k3", agg=agg,
      extra_transforms=extra_transforms,
      advantage=advantages.group_advantages(scale="group"),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg),
      drop_zero_variance=True, shaping=shaping,
      dynamic_sampling=(dict(max_batches=max_gen_batches)
                        if dynamic_sampling else None))
