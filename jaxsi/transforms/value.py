r"""Value-function objective terms: the PPO critic and reward-model objectives.

Reward models read one scalar per sequence from the value head
(:func:`sequence_scores`): the pointwise regression :func:`score_regression`
and the Bradley–Terry pairwise loss :func:`bradley_terry` (pairs in the
``jaxsi.transforms.preference`` layout).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms import preference
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


def sequence_scores(values, traj: Trajectory):
  r"""One reward-model score per row: the value head at its last loss token.

  v_b = ``values[b, last_b]`` with last_b the last ``loss_mask`` position of
  row b (the head on the hidden state that predicts that token, i.e. after
  the whole completion but its final token — with ``sft_arrays`` rows and
  finished samples the final token is EOS, so the score has read every
  completion token). The one read shared by every reward-model term and by
  ``jaxsi.rewards.reward_model.score``.

  Args:
    values: f32[B, T] value-head outputs aligned with ``traj.tokens``.
    traj: the trajectory (``tokens``, ``loss_mask``).

  Returns:
    ``(v f32[B], has_loss bool[B])``; rows without a loss token read
    position T − 1 and are marked ``has_loss = False``.
  """
  t = traj.tokens.shape[1]
  lm = jnp.asarray(traj.loss_mask).astype(bool)
  last = t - 1 - jnp.argmax(lm[:, ::-1], axis=-1)
  v = jnp.take_along_axis(jnp.asarray(values), last[:, None], axis=-1)[:, 0]
  return v, jnp.any(lm, axis=-1)


def score_regression():
  r"""Pointwise reward-model regression: L = ½·Σ_b w_b (v_b − y_b)² / #valid.

  A sequence-level score read from the value head (:func:`sequence_scores`:
  ``outputs.values`` at the row's last ``loss_mask`` token), y_b =
  ``traj.rewards[:, 0]`` (the target score, stop-gradient), w_b =
  ``traj.weights``; rows with ``valid = False`` or no loss token are left
  out. The pointwise counterpart of :func:`bradley_terry`.

  Returns:
    An objective term; metrics: score_mse, score_pred_mean, score_target_mean.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.values is None or traj.rewards is None:
      raise ValueError("score_regression needs outputs.values and traj.rewards")
    v, has_loss = sequence_scores(outputs.values, traj)
    y = sg(traj.rewards[:, 0].astype(jnp.float32))
    m = (traj.valid & has_loss).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(m), 1.0)
    err = jnp.square(v - y)
    loss = 0.5 * jnp.sum(m * traj.weights * err) / count
    metrics = {"score_mse": jnp.sum(m * sg(err)) / count,
               "score_pred_mean": jnp.sum(m * sg(v)) / count,
               "score_target_mean": jnp.sum(m * y) / count}
    return loss, metrics

  return term


MARGIN_KEY = "margin"


def bradley_terry(*, margin: float = 0.0,
                  center_rewards_coefficient: Optional[float] = None,
                  num_pairs=None):
  r"""Bradley–Terry pairwise reward-model loss on the value head's sequence score.

  InstructGPT's reward-model loss (Ouyang et al. 2022, arXiv:2203.02155,
  Eq. 1: loss(θ) = −E log σ(r_θ(x, y_w) − r_θ(x, y_l))) with the two options
  of TRL's ``RewardTrainer``: a margin m subtracted inside the sigmoid
  (Llama 2, Touvron et al. 2023, arXiv:2307.09288, Eq. 2; TRL's ``margin``
  column) and the centering penalty λ·(r⁺ + r⁻)² that pulls rewards towards
  mean zero (Eisenstein et al. 2023, arXiv:2312.09244; TRL's
  ``center_rewards_coefficient``)::

    L = Σ_pairs w·[−log σ(r⁺ − r⁻ − m)] / n  +  λ·Σ_pairs w·(r⁺ + r⁻)² / n

  r = :func:`sequence_scores` (the value head at the last loss token; stop
  nothing: both sides carry gradient), pairs in the
  ``jaxsi.transforms.preference`` layout (``extras['is_chosen']``,
  ``pair_ids`` chosen → rejected; ``fit.preference_data`` halves). A pair
  counts iff both rows are valid and have a loss token; w = the chosen row's
  ``traj.weights`` (1 in TRL, whose means are unweighted). n = counted pairs
  (or ``num_pairs``, the global count under micro-batching). m = ``margin``
  plus, when present, the chosen row's ``traj.extras['margin']`` (per-pair
  margins, TRL's ``margin`` column). A tie r⁺ = r⁻ (m = 0) costs log 2.

  Args:
    margin: a constant margin m added to every pair's (per-pair) margin.
    center_rewards_coefficient: λ ≥ 0, or None (no centering term; TRL's
      default).
    num_pairs: the loss denominator (default: the counted pairs).

  Returns:
    An objective term reading ``outputs.values``; metrics: ``rm/accuracy``
    (pairs with r⁺ > r⁻, ties ½), ``rm/margin`` (mean r⁺ − r⁻),
    ``rm/chosen``, ``rm/rejected`` (mean scores), ``rm/num_pairs``,
    ``rm/center`` (mean (r⁺ + r⁻)², whether or not it is in the loss).

  Raises:
    ValueError: a non-finite margin or a negative / non-finite λ.
  """
  if not math.isfinite(float(margin)):
    raise ValueError(f"bradley_terry: margin must be finite, got {margin!r}")
  if center_rewards_coefficient is not None and not (
      math.isfinite(float(center_rewards_coefficient))
      and center_rewards_coefficient >= 0):
    raise ValueError("bradley_terry: center_rewards_coefficient must be None or a"
                     f" finite number >= 0, got {center_rewards_coefficient!r}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.values is None:
      raise ValueError("bradley_terry needs outputs.values (a model with a value head)")
    r, has_loss = sequence_scores(outputs.values, traj)
    j, mask = preference.pair_index(traj)
    mask = mask & has_loss & has_loss[j]
    rc, rr = r, r[j]
    m = jnp.full(r.shape, float(margin), jnp.float32)
    if MARGIN_KEY in traj.extras:
      m = m + jnp.asarray(traj.extras[MARGIN_KEY], jnp.float32)
    diff = rc - rr
    counted = mask.astype(jnp.float32)
    n = jnp.sum(counted) if num_pairs is None else jnp.asarray(num_pairs, jnp.float32)
    n = jnp.maximum(n, 1.0)
    w = jnp.where(mask, traj.weights, 0.0)
    center = jnp.square(rc + rr)
    loss = jnp.sum(w * -jax.nn.log_sigmoid(diff - m)) / n
    if center_rewards_coefficient is not None:
      loss = loss + float(center_rewards_coefficient) * jnp.sum(w * center) / n
    count = jnp.maximum(jnp.sum(counted), 1.0)

    def mean(x):
      return jnp.sum(jnp.where(mask, sg(x), 0.0)) / count

    wins = (diff > 0).astype(jnp.float32) + 0.5 * (diff == 0).astype(jnp.float32)
    metrics = {"rm/accuracy": mean(wins), "rm/margin": mean(diff),
               "rm/chosen": mean(rc), "rm/rejected": mean(rr),
               "rm/num_pairs": jnp.sum(counted), "rm/center": mean(center)}
    return loss, metrics

  return term
