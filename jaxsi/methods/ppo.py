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
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import advantages, policy_losses, rescoring, rewards, value
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]


def ppo(*, n: int = 4, max_new_tokens: int = 16, temperature: float = 1.0,
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        eps: float = 0.2, vf_coef: float = 0.5, vf_clip: float = 0.2,
        gamma: float = 1.0, lam: float = 0.95, kl_coef: float = 0.0,
        epochs: int = 2, minibatches: int = 2, strategy: Any = None,
        name: str = "ppo") -> base.RLMethod:
  r"""PPO (Schulman et al. 2017, arXiv:1707.06347, Eq. 7 and 9) with GAE
  (Schulman et al. 2016, arXiv:1506.02438, Eq. 16), as in RLHF (Ouyang et al.
  2022) and TRL/verl PPO (formulas.md §2.9, §3.1).

  The value head V_φ shares the decoder; the score is placed on the EOS token
  (minus β·KL_t per token when ``kl_coef`` > 0); Â = whiten(GAE(γ, λ));
  L = L^CLIP + c_v · ½ max((V − R)², (clip(V, V_old ± ε_v) − R)²), token-mean;
  ``epochs`` passes of ``minibatches`` optimizer steps per rollout batch. The
  model must be built with ``ModelConfig.value_head=True``.

  Args:
    n: samples per prompt (PPO needs no groups; n > 1 just batches prompts).
    max_new_tokens, temperature, reward_fns, strategy, name: as ``grpo``.
    eps: PPO clip ε.
    vf_coef: value loss weight c_v.
    vf_clip: value clip ε_v.
    gamma: discount γ.
    lam: GAE λ.
    kl_coef: β of the per-token KL reward (0: no reference model).
    epochs: passes over each rollout batch.
    minibatches: minibatches per pass.

  Returns:
    The RLMethod (``with_values=True``).
  """
  parts = []
  if kl_coef:
    parts.append(rescoring.ref_logprobs())
  parts += [base.policy_values(), rewards.score_at_eos()]
  if kl_coef:
    parts.append(rewards.kl_in_reward(beta=kl_coef, estimator="k1",
                                      mode="token", clamp=False))
  parts.append(advantages.gae_advantages(gamma=gamma, lam=lam))
  obj = objective(
      (1.0, policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg="token-mean"),
       "pg"),
      (vf_coef, value.value_loss(clip=vf_clip, agg="token-mean"), "vf"))
  return base.RLMethod(
      name=name, n=n, strategy=strategy or base.default_strategy(temperature),
      max_new_tokens=max_new_tokens, reward_fns=base.as_reward_fns(reward_fns),
      transform=chain(*parts), objective=obj, epochs=epochs,
      minibatches=minibatches, reference=bool(kl_coef), with_values=True)
