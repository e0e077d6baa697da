r"""Value-function objective term (PPO critic)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

sg = jax.lax.stop_gradient


def value_loss(
    *,
    clip: Optional[float] = 0.5,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Clipped value loss: L = ½·agg_t max((v − R)², (clip(v, v_old − c, v_old + c) − R)²).

  PPO (Schulman et al. 2017) value clipping. Matches verl (verl-project@1dda039)
  ``compute_value_loss`` (cliprange_value default 0.5, agg = loss_agg_mode) and
  TRL PPOTrainer's vf loss (cliprange_value 0.2, masked mean = token-mean).
  Reads ``outputs.values`` (v, with gradient), ``traj.values`` (v_old, the
  values at sampling time) and ``traj.returns`` (R, stop-gradient). With
  ``clip=None`` (or ``traj.values`` None) the loss is ½·agg((v − R)²).

  Args:
    clip: c (cliprange_value) or None.
    agg: aggregation mode.
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metrics: vf_clipfrac (clipped branch strictly larger),
    vpred_mean, vf_mse (token mean of (v − R)²).
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.values is None or traj.returns is None:
      raise ValueError("value_loss needs outputs.values and traj.returns")
    v = outputs.values
    ret = sg(traj.returns)
    l1 = jnp.square(v - ret)
    if clip is None or traj.values is None:
      loss_bt = l1
      clipped = jnp.zeros_like(l1)
    else:
      v_old = sg(traj.values)
      vc = jnp.clip(v, v_old - clip, v_old + clip)
      l2 = jnp.square(vc - ret)
      loss_bt = jnp.maximum(l1, l2)
      clipped = (l2 > l1).astype(jnp.float32)
    loss = 0.5 * aggregation.aggregate_trajectory(
        loss_bt, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    metrics = {
        "vf_clipfrac": aggregation.masked_token_mean(sg(clipped), traj),
        "vpred_mean": aggregation.masked_token_mean(sg(v), traj),
        "vf_mse": aggregation.masked_token_mean(sg(l1), traj),
    }
    return loss, metrics

  return term
