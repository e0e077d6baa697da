r"""Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

The value-based advantages of PPO: :func:`gae` is the mask-aware backward
recursion (verl ``compute_gae_advantage_return``; tokens outside the loss
mask — observation or feedback tokens of a multi-turn sample — are skipped),
:func:`gae_advantages` the trajectory transform. The group-relative
estimators (GRPO, RLOO, REINFORCE++, pass@k) are in
:mod:`jaxsi.transforms.advantages`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.advantages import masked_whiten, token_rewards
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array


def _mean(x: Array, mask: Array) -> Array:
  m = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


def gae(token_rewards: Array, values: Array, mask: Array, *, gamma: float,
        lam: float) -> tuple[Array, Array]:
  r"""Mask-aware GAE over [B, T] (verl ``compute_gae_advantage_return``).

  Backward over t::

      δ_t = r_t + γ·nextV − V_t;     g = δ_t + γλ·g_prev
      nextV ← V_t m_t + (1 − m_t)·nextV;   g_prev ← g m_t + (1 − m_t)·g_prev

  so tokens with m_t = 0 (observation / feedback tokens of a multi-turn
  sample) are skipped: their rewards and values do not change the
  advantages or returns of the loss tokens. Returns ``(A_raw, A_raw + V)``
  (before whitening), a reverse ``lax.scan``.
  """
  m = mask.astype(jnp.float32)
  b = token_rewards.shape[0]

  def step(carry, x):
    next_v, last = carry
    r, v, mt = x
    delta = r + gamma * next_v - v
    g = delta + gamma * lam * last
    next_v = v * mt + (1.0 - mt) * next_v
    last = g * mt + (1.0 - mt) * last
    return (next_v, last), last

  zeros = jnp.zeros((b,), jnp.float32)
  _, adv = jax.lax.scan(step, (zeros, zeros),
                        (token_rewards.T, values.T, m.T), reverse=True)
  adv = adv.T
  return adv, adv + values


def gae_advantages(*, gamma: float = 1.0, lam: float = 1.0,
                   whiten: bool = True,
                   reward_weights: Optional[Sequence[float]] = None
                   ) -> TrajectoryTransform:
  r"""PPO advantages by GAE (Schulman et al. 2016, arXiv:1506.02438).

  :func:`gae` on ``traj.token_rewards`` (or the sequence score at the last
  loss token) and ``traj.values``; ``returns = A_raw + V``; then
  ``A = masked_whiten(A_raw, m)`` (verl: unbiased variance,
  rsqrt(var + 1e-8); formulas.md §3.1) over loss tokens of valid samples.
  Defaults γ = λ = 1 as verl. Advantages and returns are 0 outside loss
  tokens of valid samples.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.values is None:
      raise ValueError("gae_advantages needs traj.values (f32[B, T])")
    r = token_rewards(traj, reward_weights)
    v = jnp.asarray(traj.values, jnp.float32)
    adv, ret = gae(r, v, traj.loss_mask, gamma=gamma, lam=lam)
    smask = traj.sample_mask
    if whiten:
      adv = masked_whiten(adv, smask > 0)
    adv, ret = adv * smask, ret * smask
    return (traj.replace(advantages=adv, returns=ret),
            {"return/mean": _mean(ret, smask > 0),
             "value/mean": _mean(v, smask > 0),
             "advantage/abs_mean": _mean(jnp.abs(adv), smask > 0)})

  return stateless(fn)
