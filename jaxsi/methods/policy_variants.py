r"""GRPO-style methods that change only the policy-gradient term: GSPO and CISPO.

::

  GSPO   chain(old_logprobs, group_advantages, drop_zero_variance_groups)
         objective = pg_clip(ratio='sequence', ε=(3e-4, 4e-4), agg='seq-mean-token-mean')
  CISPO  the same chain; objective = cispo(ε_high cap, agg='token-mean')
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.grpo import _group_pg
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import advantages, policy_losses

RewardFns = Union[Callable, Sequence[Callable]]


def gspo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         eps_low: float = 3e-4, eps_high: float = 4e-4, kl_coef: float = 0.0,
         extra_transforms: Sequence[Any] = (), name: str = "gspo"
         ) -> base.Method:
  r"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization",
  arXiv:2507.18071, the GSPO objective and its sequence ratio s_i).

  J(θ) = E[ 1/G Σ_i min(s_i(θ) Â_i, clip(s_i(θ), 1−ε_l, 1+ε_h) Â_i) ] with the
  length-normalised sequence ratio
  s_i(θ) = (π_θ(y_i|x) / π_old(y_i|x))^{1/|y_i|} = exp(1/|y_i| Σ_t log r_{i,t})
  and the group-normalised Â_i of GRPO. Clipping ranges are small (paper:
  3e-4 / 4e-4) because s_i averages the token log-ratios. TRL
  ``importance_sampling_level='sequence'``, ``loss_type='grpo'``.

  Returns:
    The Method.
  """
  agg = "seq-mean-token-mean"
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      kl_coef=kl_coef, kl_estimator="k3", agg=agg,
      advantage=advantages.group_advantages(scale="group"),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high,
                                    ratio="sequence", agg=agg),
      drop_zero_variance=True)


def cispo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                temperature=1.0),
          optim: OptimSpec = OptimSpec(),
          reward_fns: RewardFns = (reward_lib.correctness_reward,),
          eps_high: float = 5.0, form: str = "trl", kl_coef: float = 0.0,
          extra_transforms: Sequence[Any] = (), name: str = "cispo"
          ) -> base.Method:
  r"""CISPO (MiniMax 2025, "MiniMax-M1", arXiv:2506.13585, the CISPO objective).

  J(θ) = E[ 1/Σ_i|o_i| Σ_i Σ_t sg[r̂_{i,t}(θ)] Â_{i,t} log π_θ(o_{i,t}|·) ]
  with the clipped importance-sampling weight r̂ = clip(r, 1−ε_low, 1+ε_high):
  the weight, not the token's gradient, is clipped, so every token keeps a
  gradient. ``form='trl'`` caps r at the absolute ``eps_high`` (TRL
  ``loss_type='cispo'``, ScaleRL's 5.0; no lower clip); ``'verl'`` clips
  two-sided with ε = 0.2 (pass ``eps_high=0.2``). Token-level aggregation.

  Returns:
    The Method.
  """
  agg = "token-mean"
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      kl_coef=kl_coef, kl_estimator="k3", agg=agg,
      advantage=advantages.group_advantages(scale="group"),
      pg_term=policy_losses.cispo(form=form, eps_high=eps_high, agg=agg),
      drop_zero_variance=True)
