r"""PPO with a value head and GAE, on verifiable rewards.

::

  PPO  chain([ref_logprobs], policy_values (old log-probs + V_old),
             score_at_eos, [kl_in_reward(mode='token')], gae_advantages(γ, λ))
       objective = pg_clip(agg='token-mean') + c_v · value_loss(clip)
       epochs × minibatches optimizer steps per rollout batch
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.score import REVISE_PROMPT
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import rollouts
from jaxsi.transforms import (advantages, gae, policy_losses, rescoring, rewards,
                              turns, value)
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]


def ppo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=16,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(epochs=2, minibatches=2),
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        eps: float = 0.2, vf_coef: float = 0.5, vf_clip: float = 0.2,
        gamma: float = 1.0, lam: float = 0.95, kl_coef: float = 0.0,
        extra_transforms: Sequence[Any] = (), name: str = "ppo") -> base.Method:
  r"""PPO (Schulman et al. 2017, arXiv:1707.06347, Eq. 7 and 9) with GAE
  (Schulman et al. 2016, arXiv:1506.02438, Eq. 16), as in RLHF (Ouyang et al.
  2022) and TRL/verl PPO (formulas.md §2.9, §3.1).

  The value head V_φ shares the decoder; the score is placed on the EOS token
  (minus β·KL_t per token when ``kl_coef`` > 0); Â = whiten(GAE(γ, λ));
  L = L^CLIP + c_v · ½ max((V − R)², (clip(V, V_old ± ε_v) − R)²), token-mean;
  ``epochs`` passes of ``minibatches`` optimizer steps per rollout batch. The
  model must be built with ``ModelConfig.value_head=True``.

  Args:
    rollout: ``n`` samples per prompt (PPO needs no groups; n > 1 just
      batches prompts), budget, temperature, strategy.
    optim: ``epochs`` passes over each rollout batch x ``minibatches`` per
      pass (default 2 x 2).
    reward_fns, extra_transforms, name: as ``grpo``.
    eps: PPO clip ε.
    vf_coef: value loss weight c_v.
    vf_clip: value clip ε_v.
    gamma: discount γ.
    lam: GAE λ.
    kl_coef: β of the per-token KL reward (0: no reference model).

  Returns:
    The Method (``value_head=True``).
  """
  parts, obj = _ppo_parts(rewards.score_at_eos(), kl_coef=kl_coef, gamma=gamma,
                          lam=lam, eps=eps, vf_coef=vf_coef, vf_clip=vf_clip)
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=chain(*parts),
      objective=obj, roles=base.reference_role(kl_coef), value_head=True)


def _ppo_parts(*placing, kl_coef, gamma, lam, eps, vf_coef, vf_clip):
  """(transforms, objective) of PPO around the reward-placing transforms."""
  parts = []
  if kl_coef:
    parts.append(rescoring.ref_logprobs())
  parts += [base.policy_values(), *placing]
  if kl_coef:
    parts.append(rewards.kl_in_reward(beta=kl_coef, estimator="k1",
                                      mode="token", clamp=False))
  parts.append(gae.gae_advantages(gamma=gamma, lam=lam))
  obj = objective(
      (1.0, policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg="token-mean"),
       "pg"),
      (vf_coef, value.value_loss(clip=vf_clip, agg="token-mean"), "vf"))
  return parts, obj


def multi_turn_ppo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                                         temperature=1.0),
                   optim: OptimSpec = OptimSpec(epochs=2, minibatches=2),
                   reward_fns: RewardFns = (reward_lib.correctness_reward,),
                   max_turns: int = 2, feedback_text: str = REVISE_PROMPT,
                   stop_on_correct: bool = False, inject_length: int = 24,
                   alpha: float = 0.0, eps: float = 0.2, vf_coef: float = 0.5,
                   vf_clip: float = 0.2, gamma: float = 1.0,
                   lam: float = 0.95, kl_coef: float = 0.0,
                   extra_transforms: Sequence[Any] = (),
                   name: str = "multi_turn_ppo") -> base.Method:
  r"""PPO with GAE over a multi-turn episode (token-level credit across turns).

  The per-turn rewards r_k sit on the last token of model turn k
  (``turns.turn_rewards_at_ends``); GAE (arXiv:1506.02438) runs over the
  model tokens only (injected turns are skipped, so V at the first token of
  turn k + 1 bootstraps turn k) and the value head learns the return of
  each model token; the rest is :func:`ppo`. ``alpha > 0`` first applies
  SCoRe's progress bonus to attempt 2 (``turns.score_bonus(alpha,
  bonus_to_first=False)``, 2 turns): SCoRe's reward with a learned critic
  instead of per-turn group baselines. Episode: ``max_turns`` model turns
  separated by ``feedback_text``; ``stop_on_correct`` ends an episode at the
  first correct turn (UFO-style retries).

  Args:
    rollout: ``n`` episodes per prompt, budget of every model turn,
      sampling / scoring temperature, strategy.
    optim: as :func:`ppo`.
    reward_fns: per-turn graders.
    max_turns: model turns per episode.
    feedback_text: the text injected between turns.
    stop_on_correct: end an episode after a correct turn.
    inject_length: columns of every injected turn.
    alpha: SCoRe progress bonus on attempt 2 (0: none; needs max_turns = 2
      and gamma = 1, where it cancels out of attempt 1's return).
    eps, vf_coef, vf_clip, gamma, lam, kl_coef: as :func:`ppo`.
    extra_transforms, name: as :func:`ppo`.

  Returns:
    The Method (episodes rollout, ``value_head=True``: the model needs a value head).
  """
  if alpha and max_turns != 2:
    raise ValueError(f"multi_turn_ppo: alpha needs max_turns=2, got {max_turns}")
  if alpha and gamma != 1.0:
    # score_bonus(bonus_to_first=False) cancels the bonus out of attempt 1's
    # return only at γ = 1 (G1 = r1 + γ r2 − (1 − γ) b otherwise).
    raise ValueError(f"multi_turn_ppo: alpha needs gamma=1, got {gamma}")
  placing = ([turns.score_bonus(alpha=alpha, bonus_to_first=False)]
             if alpha else [])
  placing.append(turns.turn_rewards_at_ends())
  parts, obj = _ppo_parts(*placing, kl_coef=kl_coef, gamma=gamma, lam=lam,
                          eps=eps, vf_coef=vf_coef, vf_clip=vf_clip)
  episode = multiturn.EpisodeSpec(
      max_turns=max_turns, feedback=multiturn.FixedFeedback(feedback_text),
      stop_on_correct=stop_on_correct, inject_length=inject_length)
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=chain(*parts),
      objective=obj, roles=base.reference_role(kl_coef), value_head=True,
      stage=lambda spec: rollouts.Episodes(spec, episode=episode))
