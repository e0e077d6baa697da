r"""Value-function objective terms: the PPO critic and reward-model score regression."""

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


def score_regression():
  r"""Pointwise reward-model regression: L = ½·Σ_b w_b (v_b − y_b)² / #valid.

  A sequence-level score read from the value head: v_b = ``outputs.values``
  at the row's last ``loss_mask`` token (the head on the hidden state that
  predicts it, i.e. after the whole completion but its final token), y_b =
  ``traj.rewards[:, 0]`` (the target score, stop-gradient), w_b =
  ``traj.weights``; rows with ``valid = False`` or no loss token are left
  out. The pointwise counterpart of a Bradley–Terry pairwise reward model
  (a preference term on pairs).

  Returns:
    An objective term; metrics: score_mse, score_pred_mean, score_target_mean.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.values is None or traj.rewards is None:
      raise ValueError("score_regression needs outputs.values and traj.rewards")
    t = traj.tokens.shape[1]
    lm = traj.loss_mask.astype(bool)
    last = t - 1 - jnp.argmax(lm[:, ::-1], axis=-1)
    v = jnp.take_along_axis(outputs.values, last[:, None], axis=-1)[:, 0]
    y = sg(traj.rewards[:, 0].astype(jnp.float32))
    m = (traj.valid & jnp.any(lm, axis=-1)).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(m), 1.0)
    err = jnp.square(v - y)
    loss = 0.5 * jnp.sum(m * traj.weights * err) / count
    metrics = {"score_mse": jnp.sum(m * sg(err)) / count,
               "score_pred_mean": jnp.sum(m * sg(v)) / count,
               "score_target_mean": jnp.sum(m * y) / count}
    return loss, metrics

  return term
