"""Advantage estimators as trajectory transforms.

Every factory returns a :class:`~jaxsi.transforms.base.TrajectoryTransform` that
writes ``traj.advantages`` f32[B, T] (and ``traj.returns`` where the estimator
defines returns). Sequence-level estimators broadcast the per-sample advantage
over the sample's loss tokens; every advantage is 0 outside ``loss_mask`` and on
samples with ``valid == False``.

Conventions shared by all estimators here:

* The sequence score is ``R_i = Σ_k w_k r_{i,k}`` over the K columns of
  ``traj.rewards`` (``reward_weights`` default 1), NaN-aware as in TRL: NaN
  components are skipped (``nansum``); a row whose components are all NaN is
  *unscorable* (e.g. a reward function failed). Unscorable and invalid samples
  are left out of every statistic and get ``A = 0`` (TRL
  ``_generate_and_score_completions``).
* Group statistics use segment reductions over ``traj.group_ids`` (any layout,
  unequal sizes allowed, fixed shapes, jit-safe).
* Token-level estimators (GAE, REINFORCE++, ReMax) read
  ``traj.token_rewards[b, t]`` = reward received on emitting token t; if the
  trajectory has no ``token_rewards`` the sequence score is placed on the last
  loss token (score-at-EOS, as verl's reward managers and TRL PPO do).
* ``traj.values[b, t]`` = V(tokens[b, :t]), the value of the state in which
  token t is chosen (verl's alignment of ``values`` with ``responses``).

References are ``reference/formulas.md`` §1.1 (TRL GRPO), §2.1 (TRL RLOO) and
§3.1 (verl ``core_algos``).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, group_count, group_sum
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array

TRL_EPS = 1e-4   # TRL: A = (R − μ) / (σ + 1e-4)
VERL_EPS = 1e-6  # verl: A = (s − μ) / (σ + 1e-6)
WHITEN_EPS = 1e-8  # verl masked_whiten: rsqrt(var + 1e-8)

Scale = Literal["group", "batch", "none"]
StdKind = Literal["unbiased", "biased"]
Singleton = Literal["zero", "raw"]
Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]


# --------------------------------------------------------------- helpers
def sequence_rewards(traj: Trajectory,
                     reward_weights: Optional[Sequence[float]] = None) -> Array:
  """f32[B]: R_i = nansum_k w_k r_{i,k}; NaN where every component is NaN.

  Args:
    traj: a trajectory with ``rewards`` f32[B, K].
    reward_weights: K weights (default all 1).

  Returns:
    The weighted sequence score; NaN marks an unscorable sample (TRL).
  """
  if traj.rewards is None:
    raise ValueError("this transform needs traj.rewards (f32[B, K])")
  r = jnp.asarray(traj.rewards, jnp.float32)
  w = _weights(reward_weights, r.shape[1])
  finite = ~jnp.isnan(r)
  total = jnp.sum(jnp.where(finite, r * w, 0.0), axis=1)
  return jnp.where(jnp.any(finite, axis=1), total, jnp.nan)


def _weights(reward_weights, k: int) -> Array:
  if reward_weights is None:
    return jnp.ones((k,), jnp.float32)
  w = jnp.asarray(reward_weights, jnp.float32)
  if w.shape != (k,):
    raise ValueError(f"reward_weights has shape {w.shape}; rewards have K={k}")
  return w


def scorable(traj: Trajectory, scores: Array) -> Array:
  """bool[B]: valid samples with a finite score (the ones statistics use)."""
  return traj.valid & jnp.isfinite(scores)


def group_moments(x: Array, group_ids: Array, mask: Array, *,
                  ddof: int = 1) -> tuple[Array, Array, Array]:
  """Per-sample (mean, std, count) of its group over ``mask``.

  std = sqrt(Σ (x − μ)² / max(n − ddof, 1)); ``ddof=1`` is the unbiased
  (Bessel) estimate used by TRL ``nanstd`` and ``torch.std``. Entries of ``x``
  outside ``mask`` may be NaN; they are ignored.
  """
  n = group_count(group_ids, mask)
  xz = jnp.where(mask, x, 0.0)
  mean = group_sum(xz, group_ids, mask) / jnp.maximum(n, 1.0)
  dev = jnp.where(mask, x - mean, 0.0)
  var = group_sum(dev * dev, group_ids, mask) / jnp.maximum(n - ddof, 1.0)
  return mean, jnp.sqrt(var), n


def batch_moments(x: Array, mask: Array, *, ddof: int = 1
                  ) -> tuple[Array, Array, Array]:
  """Scalar (mean, std, count) of ``x`` over ``mask`` (any shape)."""
  m = mask.astype(jnp.float32)
  n = jnp.sum(m)
  xz = jnp.where(mask, x, 0.0)
  mean = jnp.sum(xz) / jnp.maximum(n, 1.0)
  dev = jnp.where(mask, x - mean, 0.0)
  var = jnp.sum(dev * dev) / jnp.maximum(n - ddof, 1.0)
  return mean, jnp.sqrt(var), n


def group_range(x: Array, group_ids: Array, mask: Array) -> tuple[Array, Array]:
  """Per-sample (min, max) of its group over ``mask`` (±inf for empty)."""
  b = x.shape[0]
  hi = jax.ops.segment_max(jnp.where(mask, x, -jnp.inf), group_ids,
                           num_segments=b)
  lo = jax.ops.segment_min(jnp.where(mask, x, jnp.inf), group_ids,
                           num_segments=b)
  return lo[group_ids], hi[group_ids]


def frac_zero_std_groups(x: Array, group_ids: Array, mask: Array) -> Array:
  """Fraction of groups (with ≥ 1 masked-in member) whose values are all equal.

  Singleton groups count as zero-std (a single value has no spread). Each
  sample contributes 1/n_g so the result is a fraction of groups, not samples.
  """
  lo, hi = group_range(x, group_ids, mask)
  n = group_count(group_ids, mask)
  per = jnp.where(mask, 1.0 / jnp.maximum(n, 1.0), 0.0)
  zero = (hi - lo) == 0
  return jnp.sum(jnp.where(zero, per, 0.0)) / jnp.maximum(jnp.sum(per), 1e-12)


def masked_whiten(x: Array, mask: Array, *, shift_mean: bool = True,
                  eps: float = WHITEN_EPS) -> Array:
  """verl ``masked_whiten``: (x − μ)·rsqrt(var + eps) over ``mask``.

  μ = Σ m x / (Σ m + 1e-8); var = Σ m (x − μ)² / (Σ m + 1e-8) · Σm/(Σm − 1)
  (unbiased ``masked_var``). Where verl raises for Σ m ≤ 1 this uses the
  biased variance instead. With ``shift_mean=False`` the mean is added back.

  Args:
    x: values, any shape.
    mask: same shape; bool or 0/1.
    shift_mean: subtract the mean (True) or only rescale (False).
    eps: added to the variance (verl 1e-8).

  Returns:
    The whitened values (same shape; entries outside the mask are whitened
    with the same statistics and are meaningless).
  """
  m = mask.astype(jnp.float32)
  msum = jnp.sum(m)
  xz = jnp.where(mask, x, 0.0)
  mean = jnp.sum(xz) / (msum + 1e-8)
  dev = jnp.where(mask, x - mean, 0.0)
  var = jnp.sum(dev * dev) / (msum + 1e-8)
  var = var * jnp.where(msum > 1, msum / jnp.maximum(msum - 1.0, 1.0), 1.0)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  return out if shift_mean else out + mean


def last_token_index(loss_mask: Array) -> Array:
  """int32[B]: index of the last True of each row of ``loss_mask`` (0 if none)."""
  t = loss_mask.shape[1]
  idx = jnp.arange(t, dtype=jnp.int32)
  return jnp.max(jnp.where(loss_mask, idx, 0), axis=1)


def place_at_last_token(values: Array, loss_mask: Array) -> Array:
  """f32[B, T]: ``values[b]`` at the last loss token of row b, 0 elsewhere.

  NaN values (unscorable samples) and rows without loss tokens give 0.
  """
  t = loss_mask.shape[1]
  last = last_token_index(loss_mask)
  onehot = (jnp.arange(t)[None, :] == last[:, None]) & loss_mask
  v = jnp.where(jnp.isfinite(values), values, 0.0)
  return jnp.where(onehot, v[:, None], 0.0).astype(jnp.float32)


def token_rewards(traj: Trajectory, reward_weights) -> Array:
  """traj.token_rewards, or the sequence score placed at the last loss token."""
  if traj.token_rewards is not None:
    return jnp.asarray(traj.token_rewards, jnp.float32)
  return place_at_last_token(sequence_rewards(traj, reward_weights),
                             traj.loss_mask)


def _broadcast(adv: Array, traj: Trajectory) -> Array:
  """f32[B] → f32[B, T] over loss tokens of valid samples."""
  return (adv[:, None] * traj.sample_mask).astype(jnp.float32)


def _mean(x: Array, mask: Array) -> Array:
  m = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


def _sequence_metrics(scores: Array, ok: Array, adv: Array, traj: Trajectory,
                      extra: Optional[dict] = None) -> dict:
  _, std, _ = batch_moments(scores, ok)
  metrics = {
      "reward/mean": _mean(scores, ok),
      "reward/std": std,
      "reward/frac_unscorable": _mean(jnp.isnan(scores).astype(jnp.float32),
                                      traj.valid),
      "advantage/mean": _mean(adv, ok),
      "advantage/abs_mean": _mean(jnp.abs(adv), ok),
      "frac_zero_std_groups": frac_zero_std_groups(scores, traj.group_ids, ok),
  }
  metrics.update(extra or {})
  return metrics


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name}={value!r}; expected one of {choices}")


# ------------------------------------------------- group-normalised (GRPO)
def group_normalize(scores: Array, group_ids: Array, ok: Array, *,
                    scale: Scale = "group", eps: float = TRL_EPS,
                    std: StdKind = "unbiased",
                    singleton: Singleton = "zero") -> Array:
  """f32[B]: A_i = (R_i − μ_g) / (σ + eps) over the ``ok`` samples; 0 elsewhere.

  ``scale``: 'group' σ = group std, 'batch' σ = std of all ok samples (group
  mean kept; PPO-Lite / TRL ``scale_rewards="batch"``), 'none' no division
  (Dr. GRPO). ``singleton``: 'zero' gives A = 0 for a group of one (TRL);
  'raw' uses μ = 0, σ = 1 for it (verl), so A = R / (1 + eps) ('none': A = R).
  """
  _check_choice("scale", scale, ("group", "batch", "none"))
  _check_choice("std", std, ("unbiased", "biased"))
  _check_choice("singleton", singleton, ("zero", "raw"))
  ddof = 1 if std == "unbiased" else 0
  mean, gstd, n = group_moments(scores, group_ids, ok, ddof=ddof)
  single = n <= 1
  if singleton == "raw":
    mean = jnp.where(single, 0.0, mean)
    gstd = jnp.where(single, 1.0, gstd)
  centred = jnp.where(ok, scores - mean, 0.0)
  if scale == "group":
    adv = centred / (gstd + eps)
  elif scale == "batch":
    _, bstd, _ = batch_moments(scores, ok, ddof=ddof)
    adv = centred / (bstd + eps)
  else:
    adv = centred
  return jnp.where(ok, adv, 0.0)


def group_advantages(*, scale: Scale = "group", eps: float = TRL_EPS,
                     std: StdKind = "unbiased", singleton: Singleton = "zero",
                     reward_weights: Optional[Sequence[float]] = None,
                     aggregation: Aggregation = "sum_then_normalize"
                     ) -> TrajectoryTransform:
  r"""Group-normalised outcome advantages (GRPO, Dr. GRPO, GDPO).

  ``sum_then_normalize`` (GRPO, Shao et al. 2024, arXiv:2402.03300)::

      R_i = nansum_k w_k r_{i,k};   A_i = (R_i − μ_g(i)) / (σ + eps)

  with σ the group std (``scale='group'``), the batch std ('batch') or no
  division ('none' = Dr. GRPO, Liu et al. 2025, arXiv:2503.20783).

  ``normalize_then_sum`` (GDPO; TRL ``multi_objective_aggregation``)::

      Â_{i,k} = (r_{i,k} − μ_{g,k}) / (σ_{g,k} + eps);   R_i = nansum_k w_k Â_{i,k}
      A_i = (R_i − mean_batch R) / (std_batch R + eps)

  Matches TRL ``GRPOTrainer`` (formulas.md §1.1) with the defaults
  (eps=1e-4, unbiased std, singleton → A=0); with ``eps=1e-6,
  singleton='raw'`` it matches verl ``compute_grpo_outcome_advantage``
  (§3.1), see :func:`verl_group_advantages`. verl's ``gdpo`` ends with
  ``masked_whiten`` (rsqrt(var + 1e-8)) instead of the TRL batch step used
  here. NaN (unscorable) and invalid samples are excluded from all statistics
  and get A = 0.

  Args:
    scale: 'group' | 'batch' | 'none'.
    eps: added to σ (TRL 1e-4, verl 1e-6).
    std: 'unbiased' (Bessel, TRL/verl) or 'biased'.
    singleton: 'zero' (TRL) or 'raw' (verl: μ=0, σ=1).
    reward_weights: K weights for the reward columns (default 1).
    aggregation: 'sum_then_normalize' or 'normalize_then_sum' (GDPO).

  Returns:
    A stateless transform writing ``advantages`` f32[B, T]. Metrics:
    'reward/mean', 'reward/std', 'reward/frac_unscorable', 'advantage/mean',
    'advantage/abs_mean', 'frac_zero_std_groups'.
  """
  _check_choice("aggregation", aggregation,
                ("sum_then_normalize", "normalize_then_sum"))
  _check_choice("scale", scale, ("group", "batch", "none"))
  _check_choice("std", std, ("unbiased", "biased"))
  _check_choice("singleton", singleton, ("zero", "raw"))
  kw = dict(scale=scale, eps=eps, std=std, singleton=singleton)

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    if aggregation == "sum_then_normalize":
      adv = group_normalize(scores, traj.group_ids, ok, **kw)
    else:
      r = jnp.asarray(traj.rewards, jnp.float32)
      w = _weights(reward_weights, r.shape[1])
      ok_k = traj.valid[:, None] & jnp.isfinite(r)
      per = jax.vmap(lambda col, okc: group_normalize(col, traj.group_ids, okc,
                                                      **kw),
                     in_axes=(1, 1), out_axes=1)(r, ok_k)
      summed = jnp.sum(jnp.where(ok_k, per * w, 0.0), axis=1)
      mean, bstd, _ = batch_moments(summed, ok,
                                    ddof=1 if std == "unbiased" else 0)
      adv = jnp.where(ok, (summed - mean) / (bstd + eps), 0.0)
    return (traj.replace(advantages=_broadcast(adv, traj)),
            _sequence_metrics(scores, ok, adv, traj))

  return stateless(fn)


def trl_group_advantages(*, scale: Scale = "group",
                         reward_weights: Optional[Sequence[float]] = None,
                         aggregation: Aggregation = "sum_then_normalize"
                         ) -> TrajectoryTransform:
  """TRL GRPO defaults: eps=1e-4, unbiased NaN-aware std, singleton → A=0."""
  return group_advantages(scale=scale, eps=TRL_EPS, std="unbiased",
                          singleton="zero", reward_weights=reward_weights,
                          aggregation=aggregation)


def verl_group_advantages(*, norm_adv_by_std_in_grpo: bool = True,
                          reward_weights: Optional[Sequence[float]] = None
                          ) -> TrajectoryTransform:
  """verl ``grpo`` defaults: eps=1e-6, unbiased std, singleton μ=0, σ=1."""
  return group_advantages(scale="group" if norm_adv_by_std_in_grpo else "none",
                          eps=VERL_EPS, std="unbiased", singleton="raw",
                          reward_weights=reward_weights)


# ---------------------------------------------------------------- RLOO
def rloo_advantages(*, reward_weights: Optional[Sequence[float]] = None,
                    normalize: bool = False, eps: float = TRL_EPS,
                    singleton: Singleton = "zero") -> TrajectoryTransform:
  r"""REINFORCE leave-one-out advantages (Ahmadian et al. 2024, arXiv:2402.14740).

  ``A_i = R_i − (Σ_{j∈g} R_j − R_i) / (n_g − 1) = n_g/(n_g − 1)·(R_i − μ_g)``,
  n_g the number of scorable valid samples of the group; with
  ``normalize=True`` then ``A = (A − mean A) / (std A + eps)`` over the batch
  (unbiased std). Matches TRL ``RLOOTrainer`` (formulas.md §2.1; eps 1e-4) and
  verl ``rloo`` (§3.1). A group of one gets A = 0 (``singleton='zero'``, verl
  ``rloo_vectorized``) or A = R (``'raw'``, verl's loop version). The KL that
  TRL folds into the reward is :func:`jaxsi.transforms.rewards.kl_in_reward`
  with ``mode='sequence'`` placed before this transform.

  Returns:
    A stateless transform writing ``advantages``; metrics as
    :func:`group_advantages`.
  """
  _check_choice("singleton", singleton, ("zero", "raw"))

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    n = group_count(traj.group_ids, ok)
    total = group_sum(jnp.where(ok, scores, 0.0), traj.group_ids, ok)
    baseline = (total - jnp.where(ok, scores, 0.0)) / jnp.maximum(n - 1.0, 1.0)
    single_value = scores if singleton == "raw" else jnp.zeros_like(scores)
    adv = jnp.where(n > 1, scores - baseline, single_value)
    adv = jnp.where(ok, adv, 0.0)
    if normalize:
      mean, bstd, _ = batch_moments(adv, ok)
      adv = jnp.where(ok, (adv - mean) / (bstd + eps), 0.0)
    return (traj.replace(advantages=_broadcast(adv, traj)),
            _sequence_metrics(scores, ok, adv, traj))

  return stateless(fn)


# ------------------------------------------------- pass@k advantages
def grpo_passk_advantages(*, norm_adv_by_std: bool = True, eps: float = VERL_EPS,
                          reward_weights: Optional[Sequence[float]] = None
                          ) -> TrajectoryTransform:
  r"""verl ``grpo_passk``: only the best sample of each group is credited.

  ``A_{i*} = (R_max − R_2nd) / (σ_g + eps)`` for i* = argmax of its group
  (first index among ties, which then gives A = 0 anyway), σ_g the unbiased
  group std (omitted with ``norm_adv_by_std=False``); every other sample
  gets 0 (formulas.md §3.1, verl ``compute_grpo_passk_outcome_advantage``).
  verl raises for groups of one; here they get A = 0.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    rank = _rank_in_group(-scores, traj.group_ids, ok)  # 0 = best
    _, gstd, n = group_moments(scores, traj.group_ids, ok)
    best = jnp.where(ok & (rank == 0), scores, -jnp.inf)
    second = jnp.where(ok & (rank == 1), scores, -jnp.inf)
    b = scores.shape[0]
    r_max = jax.ops.segment_max(best, traj.group_ids, num_segments=b)
    r_2nd = jax.ops.segment_max(second, traj.group_ids, num_segments=b)
    gap = (r_max - r_2nd)[traj.group_ids]
    gap = gap / (gstd + eps) if norm_adv_by_std else gap
    adv = jnp.where(ok & (rank == 0) & (n >= 2), gap, 0.0)
    return (traj.replace(advantages=_broadcast(adv, traj)),
            _sequence_metrics(scores, ok, adv, traj))

  return stateless(fn)


def _log_comb(n: Array, k: Array) -> Array:
  """log C(n, k) for real n ≥ k ≥ 0 (−inf when k > n or k < 0)."""
  bad = (k > n) | (k < 0)
  n_ = jnp.where(bad, 1.0, n)
  k_ = jnp.where(bad, 0.0, k)
  val = (jax.lax.lgamma(n_ + 1.0) - jax.lax.lgamma(k_ + 1.0)
         - jax.lax.lgamma(n_ - k_ + 1.0))
  return jnp.where(bad, -jnp.inf, val)


def passk_analytic_advantages(*, k: int, eps: float = VERL_EPS,
                              threshold: float = 0.5,
                              reward_weights: Optional[Sequence[float]] = None
                              ) -> TrajectoryTransform:
  r"""Analytic pass@k advantages for binary rewards (Chen et al. 2025, GK).

  "Pass@k Training for Adaptively Balancing Exploration and Exploitation of
  Large Reasoning Models" (arXiv:2508.10751): the group reward of a k-subset
  is its max (pass@k); averaging the normalised subset advantage over all
  C(N, k) subsets that contain a response gives, with N scorable samples of
  which N_neg are incorrect::

      R̄ = 1 − C(N_neg, k)/C(N, k);   σ = sqrt(R̄(1 − R̄))
      A_pos = (1 − R̄) / σ;   A_neg = (1 − R̄ − C(N_neg−1, k−1)/C(N−1, k−1)) / σ

  (the formula is from general knowledge of the paper; the tests check it
  against brute-force enumeration of the subsets). A sample is correct when
  its score is > ``threshold``. Groups with σ = 0 or N < k get A = 0;
  ``eps`` guards the division (σ + eps).
  """
  if k < 1:
    raise ValueError(f"k must be ≥ 1, got {k}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    correct = ok & (scores > threshold)
    n = group_count(traj.group_ids, ok)
    n_neg = n - group_count(traj.group_ids, correct)
    kf = jnp.float32(k)
    r_bar = 1.0 - jnp.exp(_log_comb(n_neg, kf) - _log_comb(n, kf))
    sigma = jnp.sqrt(jnp.maximum(r_bar * (1.0 - r_bar), 0.0))
    frac_all_neg = jnp.exp(_log_comb(n_neg - 1.0, kf - 1.0)
                           - _log_comb(n - 1.0, kf - 1.0))
    a_pos = (1.0 - r_bar) / (sigma + eps)
    a_neg = (1.0 - r_bar - frac_all_neg) / (sigma + eps)
    usable = ok & (n >= kf) & (sigma > 0)
    adv = jnp.where(usable, jnp.where(correct, a_pos, a_neg), 0.0)
    return (traj.replace(advantages=_broadcast(adv, traj)),
            _sequence_metrics(scores, ok, adv, traj))

  return stateless(fn)


def _rank_in_group(x: Array, group_ids: Array, mask: Array) -> Array:
  """int32[B]: ascending rank of x within its group over ``mask``.

  Ties are broken by sample index (lower index first); samples outside
  ``mask`` get rank B. O(B²) memory: one pairwise comparison matrix.
  """
  b = x.shape[0]
  idx = jnp.arange(b)
  same = (group_ids[:, None] == group_ids[None, :]) & mask[None, :]
  xi, xj = x[:, None], x[None, :]
  before = (xj < xi) | ((xj == xi) & (idx[None, :] < idx[:, None]))
  rank = jnp.sum(same & before, axis=1).astype(jnp.int32)
  return jnp.where(mask, rank, b)


# ------------------------------------------------- REINFORCE++ / ReMax
def reinforce_pp_advantages(*, gamma: float = 1.0,
                            reward_weights: Optional[Sequence[float]] = None
                            ) -> TrajectoryTransform:
  r"""REINFORCE++ (Hu 2025, arXiv:2501.03262): whitened discounted returns.

  ``G_t = r_t + γ G_{t+1}`` over loss tokens; ``A = masked_whiten(G, m)·m``,
  ``returns = G·m`` (verl ``compute_reinforce_plus_plus_outcome_advantage``,
  formulas.md §3.1). Tokens outside ``loss_mask`` (observation/feedback
  tokens, padding) neither add reward nor discount: G is carried through
  them unchanged, as the new verl snapshot does (the Jan-2026 one reset G
  after EOS; identical for single-turn right-padded completions). The
  whitening statistics are over loss tokens of valid samples.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = token_rewards(traj, reward_weights)
    m = traj.loss_mask.astype(jnp.float32)

    def step(g, x):
      rt, mt = x
      g = mt * (rt + gamma * g) + (1.0 - mt) * g
      return g, g

    _, ret = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32),
                          (r.T, m.T), reverse=True)
    ret = ret.T
    smask = traj.sample_mask
    adv = masked_whiten(ret, smask > 0) * smask
    return (traj.replace(advantages=adv, returns=ret * smask),
            {"return/mean": _mean(ret, smask > 0),
             "advantage/abs_mean": _mean(jnp.abs(adv), smask > 0)})

  return stateless(fn)


def reinforce_pp_baseline_advantages(
    *, reward_weights: Optional[Sequence[float]] = None,
    singleton: Singleton = "raw") -> TrajectoryTransform:
  r"""REINFORCE++-baseline: group mean subtracted, then batch-whitened.

  ``A = masked_whiten((R_i − μ_g)·m, m)·m`` (verl
  ``reinforce_plus_plus_baseline``, formulas.md §3.1); the whitening is over
  tokens (each loss token of each valid sample counts once). verl uses μ = 0
  for a group of one (``singleton='raw'``, the default here); 'zero' gives
  R − R = 0 before whitening. ``returns`` = the broadcast advantage, as verl.
  """
  _check_choice("singleton", singleton, ("zero", "raw"))

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    mean, _, n = group_moments(scores, traj.group_ids, ok)
    if singleton == "raw":
      mean = jnp.where(n <= 1, 0.0, mean)
    centred = jnp.where(ok, scores - mean, 0.0)
    tmask = traj.sample_mask * ok[:, None]
    adv = masked_whiten(centred[:, None] * tmask, tmask > 0) * tmask
    return (traj.replace(advantages=adv, returns=adv),
            _sequence_metrics(scores, ok, centred, traj))

  return stateless(fn)


def remax_advantages(*, baseline_key: str = "baseline_reward",
                     reward_weights: Optional[Sequence[float]] = None
                     ) -> TrajectoryTransform:
  r"""ReMax (Li et al. 2023, arXiv:2310.10505): greedy-rollout baseline.

  ``returns_t = Σ_{s ≥ t} r_s m_s`` (reverse cumulative sum);
  ``A = returns − b_i·m`` (verl ``compute_remax_outcome_advantage``,
  formulas.md §3.1). The baseline b_i — the reward of a greedy sample for the
  same prompt — is read from ``traj.extras[baseline_key]``: f32[B], or
  f32[B, K] combined with ``reward_weights`` like ``rewards``. NaN baselines
  and invalid samples give A = 0.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if baseline_key not in traj.extras:
      raise KeyError(f"remax_advantages needs traj.extras[{baseline_key!r}]")
    base = jnp.asarray(traj.extras[baseline_key], jnp.float32)
    if base.ndim == 2:
      base = sequence_rewards(traj.replace(rewards=base), reward_weights)
    r = token_rewards(traj, reward_weights)
    m = traj.sample_mask
    ret = jnp.flip(jnp.cumsum(jnp.flip(r * m, 1), axis=1), 1) * m
    ok = traj.valid & jnp.isfinite(base)
    adv = jnp.where(ok[:, None], ret - jnp.where(ok, base, 0.0)[:, None] * m,
                    0.0)
    return (traj.replace(advantages=adv, returns=ret),
            {"return/mean": _mean(ret, m > 0),
             "baseline/mean": _mean(base, ok),
             "advantage/abs_mean": _mean(jnp.abs(adv), m > 0)})

  return stateless(fn)


__all__ = [
    "TRL_EPS", "VERL_EPS", "WHITEN_EPS", "sequence_rewards", "scorable",
    "group_moments", "batch_moments", "group_range", "frac_zero_std_groups",
    "masked_whiten", "last_token_index", "place_at_last_token",
    "group_normalize", "group_advantages", "trl_group_advantages",
    "verl_group_advantages", "rloo_advantages", "grpo_passk_advantages",
    "passk_analytic_advantages", "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages", "remax_advantages",
    "token_rewards",
]
