r"""Critic-free REINFORCE-family methods: RLOO and REINFORCE++.

::

  RLOO         chain([ref_logprobs, old_logprobs, kl_in_reward(mode='sequence')],
                     rloo_advantages)
               objective = pg_clip(ratio='sequence', agg='seq-mean-token-mean')
  REINFORCE++  chain([ref_logprobs], old_logprobs, score_at_eos,
                     [kl_in_reward(mode='token')], reinforce_pp_advantages)
               objective = pg_clip(agg='token-mean')
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import advantages, importance, policy_losses, rescoring, rewards
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]


def rloo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         eps: float = 0.2, kl_coef: float = 0.05, normalize: bool = False,
         extra_transforms: Sequence[Any] = (), name: str = "rloo"
         ) -> base.Method:
  r"""RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
  Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740,
  the RLOO estimator; Kool et al. 2019).

  A_i = R_i − 1/(k−1) Σ_{j≠i} R_j with the sequence reward
  R_i = r_i − β Σ_t (log π_old − log π_ref) (KL folded into the reward, k1,
  TRL ``RLOOTrainer``, formulas.md §2.1), a sequence-level importance ratio and
  the PPO clip (TRL's RLOO loss). β = 0 drops the reference model.

  Args:
    rollout: ``n`` = k samples per prompt; budget, temperature, strategy.
    optim, reward_fns, extra_transforms, name: as ``grpo``.
    eps: PPO clip ε.
    kl_coef: β of the sequence KL in the reward.
    normalize: whiten the advantages over the batch (TRL ``normalize_advantages``).

  Returns:
    The Method.
  """
  parts = []
  if kl_coef:
    parts += [rescoring.ref_logprobs(), importance.old_logprobs(),
              rewards.compose_rewards(),
              rewards.kl_in_reward(beta=kl_coef, estimator="k1", mode="sequence",
                                   clamp=False)]
  else:
    parts += [importance.old_logprobs(), rewards.compose_rewards()]
  parts.append(advantages.rloo_advantages(normalize=normalize))
  pg = policy_losses.pg_clip(eps_low=eps, eps_high=eps, ratio="sequence",
                             agg="seq-mean-token-mean")
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=chain(*parts),
      objective=objective((1.0, pg, "pg")), roles=base.reference_role(kl_coef))


def reinforce_pp(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                       temperature=1.0),
                 optim: OptimSpec = OptimSpec(),
                 reward_fns: RewardFns = (reward_lib.correctness_reward,),
                 eps: float = 0.2, kl_coef: float = 0.01, gamma: float = 1.0,
                 baseline: bool = False, extra_transforms: Sequence[Any] = (),
                 name: str = "reinforce_pp") -> base.Method:
  r"""REINFORCE++ (Hu 2025, arXiv:2501.03262, the token-level KL reward and
  global advantage normalisation).

  Token rewards r_t = 1[t = EOS]·R − β·KL_t with KL_t = log π_old − log π_ref
  (k1, per token, verl ``apply_kl_penalty``); returns G_t = Σ_{s≥t} γ^{s−t} r_s;
  advantages = G whitened over the whole batch (global normalisation instead
  of a critic or a per-prompt baseline); PPO clipped loss, token-mean. With
  ``baseline=True`` it is REINFORCE++-baseline (group mean subtracted, then
  batch-whitened; KL then belongs in the loss and is not used here).

  Args:
    rollout, optim, reward_fns, extra_transforms, name: as ``grpo``.
    eps: PPO clip ε.
    kl_coef: β of the per-token KL reward (0: no reference model).
    gamma: discount γ.
    baseline: use the group-mean baseline variant.

  Returns:
    The Method.
  """
  parts = []
  if kl_coef and not baseline:
    parts.append(rescoring.ref_logprobs())
  parts.append(importance.old_logprobs())
  if baseline:
    parts.append(advantages.reinforce_pp_baseline_advantages())
  else:
    parts.append(rewards.score_at_eos())
    if kl_coef:
      parts.append(rewards.kl_in_reward(beta=kl_coef, estimator="k1",
                                        mode="token", clamp=False))
    parts.append(advantages.reinforce_pp_advantages(gamma=gamma))
  pg = policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg="token-mean")
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=chain(*parts),
      objective=objective((1.0, pg, "pg")),
      roles=base.reference_role(kl_coef and not baseline))
