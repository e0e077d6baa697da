r"""Policy-gradient objective terms: PPO-clip (+dual clip), GSPO, CISPO, SAPO, GMPO, REINFORCE.

Every factory returns an objective term ``term(outputs, traj) -> (loss, metrics)``.

Inputs read by the terms:

* ``outputs.logprobs`` ℓp: f32[B, T] current-policy log-probs (with gradient).
* ``traj.old_logprobs``: pre-update log-probs; ``None`` means on-policy, i.e.
  ``old = stop_gradient(ℓp)`` (ratio 1, gradient ∇ℓp) as in TRL with
  ``num_iterations=1``.
* ``traj.advantages`` A: f32[B, T] (stop-gradient is applied).
* ``traj.extras['is_weights']`` (optional, f32[B, T] or f32[B]): extra
  importance weights (TIS/MIS rollout correction, verl ``rollout_is_weights`` /
  TRL vLLM IS), multiplied into the per-token loss under stop-gradient.
* ``outputs.entropy`` (optional): reported as the ``entropy`` metric.

Masking: tokens count where ``traj.loss_mask & traj.valid[:, None]``; samples
are scaled by ``traj.weights``; see
:func:`jaxsi.transforms.aggregation.aggregate_trajectory` for the denominators.

Ratio levels (``ratio=``), with the log-ratio δ_t = ℓp_t − old_t on loss tokens:

* ``'token'``: log w_t = δ_t (PPO / GRPO).
* ``'sequence'``: log w_i = Σ_t m δ_t / max(1, L_i), the same for every token of
  row i, full gradient (GSPO; TRL ``importance_sampling_level='sequence'``).
* ``'sequence_token'``: log w_t = ℓp_t − sg[ℓp_t] + sg[log w_i] (GSPO-token; TRL
  experimental ``sequence_token``; verl ``gspo`` policy loss). Same value as
  ``'sequence'``; same gradient when A is constant over a sequence.

``log_ratio_clamp=c`` clamps log w to [−c, c] before exponentiating (verl:
20 for vanilla/sapo/cispo; verl gspo clamps the upper side at 10). TRL does not
clamp (the default ``None``).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

Array = jax.Array
sg = jax.lax.stop_gradient

RATIO_LEVELS = ("token", "sequence", "sequence_token")
IS_WEIGHTS_KEY = "is_weights"


# --------------------------------------------------------------------- helpers
def log_importance_weights(
    logprobs: Array,
    old_logprobs: Optional[Array],
    loss_mask: Array,
    *,
    level: str = "token",
    log_ratio_clamp: Optional[float] = None,
) -> tuple[Array, Array]:
  """Log importance weights log w[b, t] at the requested level.

  Args:
    logprobs: f32[B, T] current log-probs ℓp (differentiable).
    old_logprobs: f32[B, T] or None (None → sg[ℓp]).
    loss_mask: bool[B, T] tokens of the completion.
    level: 'token' | 'sequence' | 'sequence_token' (see module docstring).
    log_ratio_clamp: optional symmetric clamp of log w.

  Returns:
    (log_w f32[B, T], token log-ratio δ f32[B, T]); both 0 off the mask.
  """
  if level not in RATIO_LEVELS:
    raise ValueError(f"ratio level must be one of {RATIO_LEVELS}, got {level!r}")
  m = loss_mask.astype(bool)
  old = sg(logprobs) if old_logprobs is None else old_logprobs
  delta = jnp.where(m, logprobs - old, 0.0)
  if level == "token":
    logw = delta
  else:
    lengths = jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1).astype(delta.dtype)
    seq = jnp.sum(delta, axis=-1, keepdims=True) / lengths
    if level == "sequence":
      logw = jnp.broadcast_to(seq, delta.shape)
    else:
      logw = logprobs - sg(logprobs) + sg(seq)
    logw = jnp.where(m, logw, 0.0)
  if log_ratio_clamp is not None:
    logw = jnp.clip(logw, -log_ratio_clamp, log_ratio_clamp)
  return logw, delta


def _advantages(traj: Trajectory) -> Array:
  if traj.advantages is None:
    raise ValueError("policy-gradient terms need traj.advantages (run an advantage"
                     " transform first)")
  return sg(traj.advantages)


def _is_weights(traj: Trajectory, key: Optional[str], like: Array) -> Array:
  """Stop-gradient extra IS weights broadcast to [B, T] (ones if absent)."""
  if key is None or key not in traj.extras:
    return jnp.ones_like(like)
  w = jnp.asarray(traj.extras[key], like.dtype)
  if w.ndim == 1:
    w = w[:, None]
  return sg(jnp.broadcast_to(w, like.shape))


def _common_metrics(outputs: ModelOutputs, traj: Trajectory, ratio: Array,
                    delta: Array) -> dict:
  metrics = {
      "ratio_mean": aggregation.masked_token_mean(sg(ratio), traj),
      "ratio_max": aggregation.masked_token_max(sg(ratio), traj),
      "ratio_min": -aggregation.masked_token_max(-sg(ratio), traj),
      # verl ppo_kl: mean of (old − ℓp), the k1 estimate of KL(old ‖ π).
      "approx_kl": aggregation.masked_token_mean(-sg(delta), traj),
  }
  if outputs.entropy is not None:
    metrics["entropy"] = aggregation.masked_token_mean(sg(outputs.entropy), traj)
  return metrics


def _agg(loss_bt, traj, agg, max_len, num_tokens, num_sequences):
  return aggregation.aggregate_trajectory(
      loss_bt, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
      num_sequences=num_sequences)


# ------------------------------------------------------------------- PPO clip
def clipped_surrogate(
    ratio: Array,
    advantages: Array,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: Optional[float] = None,
    dual_clip_form: str = "verl",
) -> Array:
  r"""Per-token PPO clipped surrogate loss with asymmetric ε and dual clip.

  ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)); with dual clip c (> 1+ε_high):

  * ``'verl'`` (clip_ratio_c, Ye et al. 2020 "Mastering complex control in
    MOBA games", arXiv:1912.09729): ℓ = min(−A·c, ℓ) where A < 0;
  * ``'trl'`` (GRPOConfig.delta, INTELLECT-2): r ← min(r, δ) on the unclipped
    branch, ℓ = −min(min(r, δ)·A, clip(r)·A).

  The two forms are equal for every r and A when c = δ > 1+ε_high
  (formulas.md §4; tested).

  Args:
    ratio: importance ratio r (any shape).
    advantages: A, same shape.
    eps_low: ε_low.
    eps_high: ε_high (DAPO clip-higher: 0.28).
    dual_clip: c / δ, or None.
    dual_clip_form: 'verl' or 'trl'.

  Returns:
    Per-token loss, same shape as ``ratio``.
  """
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  if dual_clip is None:
    return jnp.maximum(-advantages * ratio, -advantages * clipped)
  if dual_clip_form == "verl":
    lc = jnp.maximum(-advantages * ratio, -advantages * clipped)
    return jnp.where(advantages < 0, jnp.minimum(-advantages * dual_clip, lc), lc)
  if dual_clip_form == "trl":
    r1 = jnp.minimum(ratio, dual_clip)
    return -jnp.minimum(r1 * advantages, clipped * advantages)
  raise ValueError(f"dual_clip_form must be 'verl' or 'trl', got {dual_clip_form!r}")


def pg_clip(
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: Optional[float] = None,
    dual_clip_form: str = "verl",
    ratio: str = "token",
    agg: str = "seq-mean-token-mean",
    log_ratio_clamp: Optional[float] = None,
    is_weights_key: Optional[str] = IS_WEIGHTS_KEY,
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""PPO / GRPO / DAPO / GSPO clipped policy-gradient term.

  L = agg_t( w_IS · max(−A_t·r_t, −A_t·clip(r_t, 1−ε_low, 1+ε_high)) ),
  r_t = exp(log w_t) at the ``ratio`` level (module docstring).

  Schulman et al. 2017 (PPO, arXiv:1707.06347); DAPO clip-higher (Yu et al.
  2025, arXiv:2503.14476); GSPO (Zheng et al. 2025, arXiv:2507.18071). Matches
  TRL 1.10.0.dev0 ``GRPOTrainer._compute_loss`` loss types grpo/bnpo/dr_grpo/
  dapo/luspo (choose ``agg``) and verl (verl-project@1dda039) ``vanilla`` and
  ``gspo`` (``ratio='sequence_token'``) policy losses.

  Args:
    eps_low: lower clip ε_low (TRL epsilon / verl clip_ratio_low).
    eps_high: upper clip ε_high (TRL epsilon_high / verl clip_ratio_high).
    dual_clip: verl clip_ratio_c (e.g. 3.0) / TRL delta, or None.
    dual_clip_form: 'verl' or 'trl' (numerically equal).
    ratio: 'token' | 'sequence' | 'sequence_token'.
    agg: aggregation mode (explicit; see aggregation.py).
    log_ratio_clamp: optional clamp of the log-ratio (verl: 20).
    is_weights_key: extras key of optional IS weights (None to ignore).
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term. Metrics: clipfrac_low (r < 1−ε_low and A < 0),
    clipfrac_high (r > 1+ε_high and A > 0), clipfrac (either), clipfrac_dual
    (A < 0 and r > c), ratio_mean/max/min, approx_kl, entropy (if given).
  """
  if dual_clip is not None and dual_clip <= 1.0 + eps_high:
    raise ValueError(f"dual_clip must be > 1 + eps_high, got {dual_clip}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    adv = _advantages(traj)
    logw, delta = log_importance_weights(
        outputs.logprobs, traj.old_logprobs, traj.loss_mask, level=ratio,
        log_ratio_clamp=log_ratio_clamp)
    r = jnp.exp(logw)
    loss_bt = clipped_surrogate(r, adv, eps_low=eps_low, eps_high=eps_high,
                                dual_clip=dual_clip, dual_clip_form=dual_clip_form)
    loss_bt = loss_bt * _is_weights(traj, is_weights_key, loss_bt)
    loss = _agg(loss_bt, traj, agg, max_len, num_tokens, num_sequences)
    rs = sg(r)
    low = ((rs < 1.0 - eps_low) & (adv < 0)).astype(jnp.float32)
    high = ((rs > 1.0 + eps_high) & (adv > 0)).astype(jnp.float32)
    metrics = _common_metrics(outputs, traj, r, delta)
    metrics["clipfrac_low"] = aggregation.masked_token_mean(low, traj)
    metrics["clipfrac_high"] = aggregation.masked_token_mean(high, traj)
    metrics["clipfrac"] = metrics["clipfrac_low"] + metrics["clipfrac_high"]
    if dual_clip is not None:
      dual = ((rs > dual_clip) & (adv < 0)).astype(jnp.float32)
      metrics["clipfrac_dual"] = aggregation.masked_token_mean(dual, traj)
    return loss, metrics

  return term


# ---------------------------------------------------------------------- CISPO
def cispo(
    *,
    form: str = "trl",
    eps_low: float = 0.2,
    eps_high: Optional[float] = None,
    ratio: str = "token",
    agg: str = "token-mean",
    log_ratio_clamp: Optional[float] = None,
    is_weights_key: Optional[str] = IS_WEIGHTS_KEY,
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""CISPO: clipped-IS-weight REINFORCE (MiniMax-M1, arXiv:2506.13585).

  * ``form='trl'`` (TRL 1.10 loss_type='cispo'): ℓ = −sg[min(r, ε_high)]·A·ℓp,
    ε_high is an ABSOLUTE cap on r (ScaleRL recommends 5.0). Default
    ``eps_high=None`` → 5.0 here; NOTE TRL silently falls back to ε=0.2 when
    epsilon_high is unset — pass ``eps_high=0.2`` to reproduce that.
  * ``form='verl'`` (verl ``cispo``): ℓ = −sg[clip(r, 1−ε_low, 1+ε_high)]·A·ℓp,
    default ε_high = 0.2.

  TRL aggregates cispo with a global token-mean (the default ``agg`` here).

  Args:
    form: 'trl' or 'verl'.
    eps_low: verl lower clip (unused by the TRL form).
    eps_high: TRL absolute cap or verl upper clip.
    ratio: ratio level for r.
    agg, log_ratio_clamp, is_weights_key, max_len, num_tokens, num_sequences:
      as in :func:`pg_clip`.

  Returns:
    An objective term (metrics: cispo_clipfrac, ratio stats, approx_kl).
  """
  if form not in ("trl", "verl"):
    raise ValueError(f"cispo form must be 'trl' or 'verl', got {form!r}")
  if eps_high is None:
    eps_high = 5.0 if form == "trl" else 0.2

  def term(outputs: ModelOutputs, traj: Trajectory):
    adv = _advantages(traj)
    logw, delta = log_importance_weights(
        outputs.logprobs, traj.old_logprobs, traj.loss_mask, level=ratio,
        log_ratio_clamp=log_ratio_clamp)
    r = jnp.exp(logw)
    if form == "trl":
      coef = jnp.minimum(r, eps_high)
      clipped = sg(r) > eps_high
    else:
      coef = jnp.clip(r, 1.0 - eps_low, 1.0 + eps_high)
      clipped = (sg(r) > 1.0 + eps_high) | (sg(r) < 1.0 - eps_low)
    loss_bt = -sg(coef) * adv * outputs.logprobs
    loss_bt = loss_bt * _is_weights(traj, is_weights_key, loss_bt)
    loss = _agg(loss_bt, traj, agg, max_len, num_tokens, num_sequences)
    metrics = _common_metrics(outputs, traj, r, delta)
    metrics["cispo_clipfrac"] = aggregation.masked_token_mean(
        clipped.astype(jnp.float32), traj)
    return loss, metrics

  return term


# ----------------------------------------------------------------------- SAPO
def sapo(
    *,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    ratio: str = "token",
    agg: str = "seq-mean-token-mean",
    log_ratio_clamp: Optional[float] = None,
    is_weights_key: Optional[str] = IS_WEIGHTS_KEY,
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""SAPO: soft adaptive policy optimisation (Qwen, arXiv:2511.20347).

  ℓ = −(4/τ)·σ(τ·(r − 1))·A with τ = τ_pos if A > 0 else τ_neg; the soft gate
  replaces the hard clip (its gradient is r·sech²(τ(r−1)/2)·A·∇ℓp, equal to
  the PPO gradient at r = 1).

  Matches TRL 1.10 loss_type='sapo' and verl ``sapo`` (both aggregate with
  seq-mean-token-mean, the default here; verl clamps the log-ratio at ±20).

  Args:
    tau_pos: τ for A > 0.
    tau_neg: τ for A ≤ 0.
    ratio, agg, log_ratio_clamp, is_weights_key, max_len, num_tokens,
      num_sequences: as in :func:`pg_clip`.

  Returns:
    An objective term.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    adv = _advantages(traj)
    logw, delta = log_importance_weights(
        outputs.logprobs, traj.old_logprobs, traj.loss_mask, level=ratio,
        log_ratio_clamp=log_ratio_clamp)
    r = jnp.exp(logw)
    tau = jnp.where(adv > 0, tau_pos, tau_neg)
    loss_bt = -(4.0 / tau) * jax.nn.sigmoid(tau * (r - 1.0)) * adv
    loss_bt = loss_bt * _is_weights(traj, is_weights_key, loss_bt)
    loss = _agg(loss_bt, traj, agg, max_len, num_tokens, num_sequences)
    return loss, _common_metrics(outputs, traj, r, delta)

  return term


# ----------------------------------------------------------------------- GMPO
def gmpo(
    *,
    eps_low: float = 0.4,
    eps_high: float = 0.4,
    num_sequences=None,
):
  r"""GMPO: geometric-mean policy optimisation (Zhao et al. 2025, arXiv:2507.20673).

  Sign-aware clipping in log space, per token t of sequence i:
  δ_t = ℓp_t − old_t, c_t = clip(δ_t, −ε_low, ε_high),
  δ*_t = min(δ_t, c_t) if A_t > 0 else max(δ_t, c_t);
  w_i = exp(Σ_t m δ*_t / max(1, L_i)); ℓ_i = −w_i·Ā_i, Ā_i = Σ_t m A_t / max(1, L_i);
  L = Σ_i ℓ_i / N (mean over valid sequences; sample weights applied).

  Matches TRL experimental ``GMPOTrainer`` (ε in log space, default 0.4/0.4);
  verl ``geo_mean`` is the same with L_i + 1e-8 instead of max(1, L_i).
  The optional β·k3 KL of TRL GMPO is a separate :func:`kl.kl_penalty` term
  (agg='seq-mean-token-mean').

  Args:
    eps_low: ε_low in log space.
    eps_high: ε_high in log space.
    num_sequences: global sequence count (default: valid rows).

  Returns:
    An objective term.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    adv = _advantages(traj)
    m = traj.loss_mask.astype(bool)
    _, delta = log_importance_weights(outputs.logprobs, traj.old_logprobs, m)
    c = jnp.clip(delta, -eps_low, eps_high)
    dstar = jnp.where(adv > 0, jnp.minimum(delta, c), jnp.maximum(delta, c))
    dstar = jnp.where(m, dstar, 0.0)
    lengths = jnp.maximum(jnp.sum(m, axis=-1), 1).astype(jnp.float32)
    w = jnp.exp(jnp.sum(dstar, axis=-1) / lengths)
    abar = jnp.sum(jnp.where(m, adv, 0.0), axis=-1) / lengths
    seq_loss = -w * abar
    valid = traj.valid.astype(jnp.float32)
    n = (jnp.sum(valid) if num_sequences is None
         else jnp.asarray(num_sequences, jnp.float32))
    loss = jnp.sum(jnp.where(traj.valid, seq_loss * traj.weights, 0.0)) / jnp.maximum(n, 1.0)
    clipped = (jnp.abs(dstar - delta) > 0).astype(jnp.float32)
    metrics = _common_metrics(outputs, traj, jnp.exp(delta), delta)
    metrics["clipfrac"] = aggregation.masked_token_mean(sg(clipped), traj)
    metrics["seq_ratio_mean"] = jnp.sum(sg(w) * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    return loss, metrics

  return term


# ------------------------------------------------------------------ REINFORCE
def reinforce(
    *,
    agg: str = "seq-mean-token-mean",
    is_weights_key: Optional[str] = IS_WEIGHTS_KEY,
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Plain REINFORCE / GPG: ℓ_t = −A_t·ℓp_t·sg[w_IS,t].

  Williams 1992; GPG (Chu et al. 2025, arXiv:2504.02546). Matches verl ``gpg``
  (no IS weights) and verl bypass_mode loss_type='reinforce' (with
  ``traj.extras['is_weights']``). Gradient: −agg(A·w·∇ℓp).

  Args:
    agg, is_weights_key, max_len, num_tokens, num_sequences: as in
      :func:`pg_clip`.

  Returns:
    An objective term.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    adv = _advantages(traj)
    loss_bt = -adv * outputs.logprobs
    loss_bt = loss_bt * _is_weights(traj, is_weights_key, loss_bt)
    loss = _agg(loss_bt, traj, agg, max_len, num_tokens, num_sequences)
    metrics = {"advantage_mean": aggregation.masked_token_mean(adv, traj)}
    if outputs.entropy is not None:
      metrics["entropy"] = aggregation.masked_token_mean(sg(outputs.entropy), traj)
    return loss, metrics

  return term
