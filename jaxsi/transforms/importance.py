"""Importance weights for the training/inference (behaviour/old) mismatch.

The sampler's log-probs (``traj.behaviour_logprobs``, e.g. from a quantised or
differently-batched inference engine) and the trainer's pre-update log-probs
(``traj.old_logprobs``) differ; rollout-correction weights

    ρ = π_old / π_behaviour

fix the bias (truncated IS, "TIS", Yao et al. 2025 "Your Efficient RL
Framework Secretly Brings You Off-Policy RL Training"; masked IS, "MIS").

:func:`importance_weights` stores them in ``traj.extras['is_weights']``
f32[B, T] (token-aligned; sequence-level weights are broadcast over the
sample's loss tokens; 0 outside loss tokens of valid samples; stop-gradient).
Policy-loss terms multiply their per-token loss by this field (verl passes it
as ``rollout_is_weights``; TRL multiplies ``per_token_loss`` by it).

:func:`old_logprobs` fills ``traj.old_logprobs``.
"""

from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless
from jaxsi.transforms.rescoring import score_logprobs

Array = jax.Array


def importance_weights(*, level: Literal["token", "sequence"] = "token",
                       mode: Literal["truncate", "mask", "none"] = "truncate",
                       upper: Optional[float] = 2.0,
                       lower: Optional[float] = None,
                       normalize: bool = False,
                       log_clamp: Optional[float] = 20.0,
                       target_field: str = "old_logprobs",
                       source_field: str = "behaviour_logprobs",
                       key: str = "is_weights") -> TrajectoryTransform:
  r"""Rollout-correction importance weights (TIS / MIS), token or sequence.

  With Δ_{i,t} = (target − source)·m (default old − behaviour)::

      token:     log ρ_{i,t} = Δ_{i,t}
      sequence:  log ρ_i     = Σ_t Δ_{i,t}          (the product, not the geometric mean)
      ρ = exp(clip(log ρ, ±log_clamp))
      truncate:  ρ ← clip(ρ, lower, upper)          (TIS; None = unbounded side)
      mask:      ρ ← ρ · 1[lower ≤ ρ ≤ upper]       (MIS)
      normalize: ρ ← ρ / mean(ρ)                    (over loss tokens of valid
                                                     samples, or over valid samples
                                                     for sequence level)

  verl ``rollout_corr_helper`` (formulas.md §3.6): ``log_clamp=20``,
  ``mode='truncate'``, ``upper=2.0`` (``rollout_is_threshold``), optional batch
  normalisation to mean 1. TRL vLLM correction (§1.5): ``log_clamp=None``;
  ``token_truncate`` / ``sequence_mask`` etc. map to (level, mode), TRL's
  default is ``level='sequence', mode='mask', upper=3.0, lower=None``.

  Args:
    level: 'token' or 'sequence'.
    mode: 'truncate' (TIS), 'mask' (MIS) or 'none' (raw weights).
    upper: upper threshold C_max (None: no upper bound).
    lower: lower threshold C_min (None: no lower bound).
    normalize: rescale to batch mean 1 after truncation/masking.
    log_clamp: symmetric clamp of the log weight (verl 20; None for TRL).
    target_field: trajectory field of the target log-probs.
    source_field: trajectory field of the sampling log-probs.
    key: extras key to write.

  Returns:
    A stateless transform writing ``traj.extras[key]`` f32[B, T]. Metrics:
    'is/mean', 'is/max_raw', 'is/frac_clipped' (fraction of tokens or
    sequences changed by truncation or masking), 'is/log_ratio_mean' (mean
    per-token log π_target − log π_source, a mismatch-KL estimate).
  """
  if level not in ("token", "sequence"):
    raise ValueError(f"level={level!r}; expected 'token' or 'sequence'")
  if mode not in ("truncate", "mask", "none"):
    raise ValueError(f"mode={mode!r}; expected 'truncate', 'mask' or 'none'")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    tgt, src = getattr(traj, target_field), getattr(traj, source_field)
    if tgt is None or src is None:
      raise ValueError(f"importance_weights needs traj.{target_field} and "
                       f"traj.{source_field}")
    m = traj.sample_mask
    valid_tok = m > 0
    delta = jax.lax.stop_gradient((tgt - src) * m)
    if level == "token":
      logw = delta
      unit_mask = valid_tok
    else:
      logw = jnp.sum(delta, axis=1)
      unit_mask = traj.valid & (jnp.sum(m, axis=1) > 0)
    if log_clamp is not None:
      logw = jnp.clip(logw, -log_clamp, log_clamp)
    raw = jnp.exp(logw)
    w = raw
    lo = -jnp.inf if lower is None else lower
    hi = jnp.inf if upper is None else upper
    inside = (raw >= lo) & (raw <= hi)
    if mode == "truncate":
      w = jnp.clip(raw, lo, hi)
    elif mode == "mask":
      w = jnp.where(inside, raw, 0.0)
    unit_f = unit_mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(unit_f), 1.0)
    if normalize:
      mean_w = jnp.sum(w * unit_f) / count
      w = w / jnp.maximum(mean_w, 1e-8)
    tok_w = (w if level == "token" else w[:, None]) * m
    changed = jnp.where(unit_mask, ~inside, False) if mode != "none" else (
        jnp.zeros_like(unit_mask))
    extras = dict(traj.extras)
    extras[key] = tok_w.astype(jnp.float32)
    metrics = {
        "is/mean": jnp.sum(w * unit_f) / count,
        "is/max_raw": jnp.max(jnp.where(unit_mask, raw, 0.0)),
        "is/frac_clipped": jnp.sum(changed.astype(jnp.float32)) / count,
        "is/log_ratio_mean": jnp.sum(delta) / jnp.maximum(jnp.sum(m), 1.0),
    }
    return traj.replace(extras=extras), metrics

  return stateless(fn)


def old_logprobs(*, on_policy: bool = False, scorer: str = "policy",
                 params: str = "policy", entropy_key: Optional[str] = None
                 ) -> TrajectoryTransform:
  """Fills ``traj.old_logprobs`` (log-probs of the pre-update policy).

  ``on_policy=False``: ``sg[ctx.score(scorer, params, traj).logprobs]`` — a
  frozen forward pass of the current parameters before the update (TRL/verl
  recompute them when the sampler's numbers are not trusted or when the batch
  is reused over several optimisation steps). ``on_policy=True``: copies
  ``traj.behaviour_logprobs`` (stop-gradient), valid when the sampler's
  log-probs are exact and the rollout is from the current parameters (verl
  ``bypass_mode``).

  Args:
    on_policy: copy behaviour log-probs instead of scoring.
    scorer: ScoreFn name in ``ctx.scorers``.
    params: parameter-set name in ``ctx.params``.
    entropy_key: also store the per-token entropy in ``traj.extras`` under
      this key (scoring mode only; needed by the entropy filters / D³S).
  """
  if not on_policy:
    return score_logprobs(field="old_logprobs", scorer=scorer, params=params,
                          entropy_key=entropy_key)
  if entropy_key is not None:
    raise ValueError("entropy_key needs a forward pass; use on_policy=False")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.behaviour_logprobs is None:
      raise ValueError("old_logprobs(on_policy=True) needs "
                       "traj.behaviour_logprobs")
    return traj.replace(
        old_logprobs=jax.lax.stop_gradient(traj.behaviour_logprobs)), {}

  return stateless(fn)


def twin_old_logprobs(*, rows_key: str, twin_key: str) -> TrajectoryTransform:
  r"""The behaviour policy of re-laid rows: ``old_logprobs`` from their twin.

  For a row b with ``extras[rows_key][b]`` True (a sample drawn under another
  prompt and re-laid under this one, completion columns aligned), the
  sampling policy is its twin's: ``old_logprobs[b] ← old_logprobs[twin[b]]``
  on loss tokens, so a PPO ratio on row b is the off-policy importance ratio
  π_θ(y_t | x, y_<t) / π_old(y_t | c(x), y_<t) (π-Distill's student term,
  Penaloza et al. 2026, arXiv:2602.04942; ``sampling.privileged.TeacherSample``
  writes both keys). Apply after :func:`old_logprobs`.

  Returns:
    A stateless transform; metric ``twin/log_ratio`` = mean over the
    re-laid rows' loss tokens of log π_old(this layout) − log π_old(twin's):
    how far the two layouts' policies are apart before the update.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.old_logprobs is None or rows_key not in traj.extras or \
        twin_key not in traj.extras:
      raise ValueError(f"twin_old_logprobs needs traj.old_logprobs and"
                       f" traj.extras[{rows_key!r}], [{twin_key!r}]"
                       " (apply old_logprobs() first; the stage writes the keys)")
    relaid = jnp.asarray(traj.extras[rows_key], bool)
    twin = jnp.asarray(traj.extras[twin_key], jnp.int32)
    old = traj.old_logprobs
    twin_old = old[twin]
    sel = relaid[:, None] & traj.loss_mask
    new = jax.lax.stop_gradient(jnp.where(sel, twin_old, old))
    m = (sel & traj.valid[:, None]).astype(jnp.float32)
    gap = jnp.sum((old - twin_old) * m) / jnp.maximum(jnp.sum(m), 1.0)
    return traj.replace(old_logprobs=new), {"twin/log_ratio": gap}

  return stateless(fn)


__all__ = ["importance_weights", "old_logprobs", "twin_old_logprobs"]
