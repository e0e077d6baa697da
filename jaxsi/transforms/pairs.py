r"""Pair builders: chosen/rejected links between samples of one group.

A pair builder reads the rewards of a batch and writes the pairing
convention of ``jaxsi.transforms.preference`` — ``traj.pair_ids[i]`` = the
rejected partner of chosen row ``i`` and ``traj.extras['is_chosen']`` — so
any DPO-family term trains on pairs the model built from its own samples in
the same batch (online) or in a stored round. Groups are the rows sharing a
``group_id`` (any layout; no fixed group size).

* :func:`best_vs_worst`: per group, the highest-scored sample is chosen and
  the lowest-scored rejected, when their scores differ by more than
  ``margin`` — the pair of Self-Rewarding LMs (Yuan et al. 2024,
  arXiv:2401.10020, §2.3: "the highest and lowest scoring responses … if
  their scores are not equal") and of online iterative DPO set-ups. With
  ``margin`` > 0 it is the margin-filtered pair of DNO (Rosset et al. 2024,
  arXiv:2404.03715, Alg. 2: keep a pair only if the score gap is large).
* :func:`all_pairs`: every (higher ≻ lower) combination in a group whose gap
  exceeds ``margin``, capped per group and in total. A row can be chosen in
  several pairs, so the builder returns a new batch of 2·``max_pairs`` rows
  (chosen copies then rejected copies, ``halves_pairing`` layout) with
  ``extras['source_rows']`` pointing back at the input rows.
* :func:`most_vs_least_voted`: per group, a sample of the most-voted answer ≻
  one of the least-voted answer, weighted by the vote margin
  (V(y⁺) − V(y⁻))/k — the pair and weight of ScPO (Prasad et al. 2024,
  arXiv:2411.04109; GK, unchecked against the paper's equation). The votes
  are a reward column (``jaxsi.methods.scpo.vote_count_reward``).

Every builder is jit-able with fixed shapes and never reads a gold label
unless the score column it is given is one.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi import trajectory as trajectory_lib
from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless
from jaxsi.transforms.preference import IS_CHOSEN_KEY, halves_pairing

SOURCE_ROWS_KEY = "source_rows"

Array = jax.Array


def _scores(traj: Trajectory, reward_weights: Optional[Sequence[float]]) -> Array:
  """f32[B] weighted reward total; NaN where any used column is NaN."""
  if traj.rewards is None:
    raise ValueError("pair builder: traj.rewards is None (run the reward stages first)")
  r = jnp.asarray(traj.rewards, jnp.float32)
  w = (jnp.ones((r.shape[1],), jnp.float32) if reward_weights is None
       else jnp.asarray(reward_weights, jnp.float32))
  if w.shape != (r.shape[1],):
    raise ValueError(f"pair builder: {w.shape[0]} reward weights for"
                     f" {r.shape[1]} reward columns")
  return jnp.sum(r * w[None, :], axis=1)


def best_vs_worst(*, margin: float = 0.0,
                  reward_weights: Optional[Sequence[float]] = None
                  ) -> TrajectoryTransform:
  r"""Per group: best-scored row ≻ worst-scored row, if they differ by > margin.

  Score s_i = Σ_k w_k r_{i,k} over usable rows (valid, finite score). In
  each group g, c = argmax s (first on ties), r = argmin s (first on ties);
  the pair (c, r) is formed iff s_c − s_r > ``margin``. Writes
  ``pair_ids[c] = r`` (−1 elsewhere) and ``extras['is_chosen']``; rows are
  not dropped (pairwise terms read only the pairs). Jit-able, fixed shapes.

  Metrics: ``pairs/count`` (pairs formed), ``pairs/frac_groups`` (groups
  with a pair), ``pairs/margin_mean`` (mean s_c − s_r over formed pairs).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.group_ids is None:
      raise ValueError("best_vs_worst: traj.group_ids is None")
    b = traj.batch_size
    s = _scores(traj, reward_weights)
    usable = traj.valid & jnp.isfinite(s)
    gid = jnp.asarray(traj.group_ids, jnp.int32)
    idx = jnp.arange(b, dtype=jnp.int32)
    hi, lo, best, worst = _group_extremes(s, usable, gid, b)
    gap = hi - lo
    formed = jnp.isfinite(gap) & (gap > margin) & (best < b) & (worst < b)
    is_chosen = formed[gid] & (idx == best[gid])
    pair_ids = jnp.where(is_chosen, worst[gid], -1).astype(jnp.int32)
    groups = jax.ops.segment_max(jnp.ones((b,), jnp.int32), gid, num_segments=b) > 0
    count = jnp.sum(formed & groups)
    metrics = {
        "pairs/count": count.astype(jnp.float32),
        "pairs/frac_groups": (count / jnp.maximum(jnp.sum(groups), 1)
                              ).astype(jnp.float32),
        "pairs/margin_mean": (jnp.sum(jnp.where(formed & groups, gap, 0.0))
                              / jnp.maximum(count, 1)).astype(jnp.float32),
    }
    extras = dict(traj.extras)
    extras[IS_CHOSEN_KEY] = is_chosen
    return traj.replace(pair_ids=pair_ids, extras=extras), metrics

  return stateless(fn)


def _group_extremes(s: Array, usable: Array, gid: Array, b: int):
  """Per group id: (hi, lo, first argmax row, first argmin row); b = none."""
  idx = jnp.arange(b, dtype=jnp.int32)
  hi = jax.ops.segment_max(jnp.where(usable, s, -jnp.inf), gid, num_segments=b)
  lo = jax.ops.segment_min(jnp.where(usable, s, jnp.inf), gid, num_segments=b)
  best = jax.ops.segment_min(jnp.where(usable & (s == hi[gid]), idx, b), gid,
                             num_segments=b)
  worst = jax.ops.segment_min(jnp.where(usable & (s == lo[gid]), idx, b), gid,
                              num_segments=b)
  return hi, lo, best, worst


def all_pairs(*, max_pairs: int, margin: float = 0.0,
              max_pairs_per_group: Optional[int] = None,
              reward_weights: Optional[Sequence[float]] = None
              ) -> TrajectoryTransform:
  r"""Every higher ≻ lower pair of a group (gap > margin), capped; a new batch.

  Score s_i = Σ_k w_k r_{i,k} over usable rows (valid, finite score). The
  candidate pairs (i, j) are the rows of one group with s_i − s_j > ``margin``,
  enumerated row-major (by chosen row i, then rejected row j). The first
  ``max_pairs_per_group`` of each group are kept (None: all), then the first
  ``max_pairs`` of the batch in that order.

  Returns a Trajectory of 2P rows, P = ``max_pairs``: rows [0:P] are copies
  of the chosen rows, rows [P:2P] of their rejected partners
  (``preference.halves_pairing``: ``pair_ids``, ``extras['is_chosen']``),
  every other field gathered from the input (``trajectory.select``); unused
  pair slots are ``valid = False``. ``group_ids`` become the pair index (both
  rows of pair p: p) and ``extras['source_rows']`` (int32[2P]) the input row
  of each output row. Rows keep their sample weights (a pairwise term reads
  the chosen row's). Fixed shapes: O(B²) work.

  Metrics: ``pairs/count`` (pairs kept), ``pairs/candidates`` (pairs past the
  margin before any cap), ``pairs/dropped_by_cap`` (candidates over the caps),
  ``pairs/margin_mean`` (mean gap of the kept pairs).
  """
  if int(max_pairs) < 1:
    raise ValueError(f"all_pairs: max_pairs must be >= 1, got {max_pairs!r}")
  if max_pairs_per_group is not None and int(max_pairs_per_group) < 1:
    raise ValueError("all_pairs: max_pairs_per_group must be >= 1 or None, got"
                     f" {max_pairs_per_group!r}")
  p = int(max_pairs)

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.group_ids is None:
      raise ValueError("all_pairs: traj.group_ids is None")
    b = traj.batch_size
    s = _scores(traj, reward_weights)
    usable = traj.valid & jnp.isfinite(s)
    gid = jnp.asarray(traj.group_ids, jnp.int32)
    same = gid[:, None] == gid[None, :]
    gap = jnp.where(usable[:, None] & usable[None, :], s[:, None] - s[None, :], -jnp.inf)
    cand = same & (gap > margin)
    if max_pairs_per_group is None:
      keep = cand
    else:
      per_row = jnp.sum(cand.astype(jnp.int32), axis=1)
      earlier = same & (jnp.arange(b)[None, :] < jnp.arange(b)[:, None])
      before_row = earlier.astype(jnp.int32) @ per_row        # same-group rows i' < i
      rank = before_row[:, None] + jnp.cumsum(cand.astype(jnp.int32), axis=1) - 1
      keep = cand & (rank < int(max_pairs_per_group))
    flat = keep.reshape(-1)
    n_keep = jnp.sum(flat.astype(jnp.int32))
    (pos,) = jnp.nonzero(flat, size=p, fill_value=0)
    real = jnp.arange(p) < n_keep
    ci = (pos // b).astype(jnp.int32)
    rj = (pos % b).astype(jnp.int32)
    src = jnp.concatenate([ci, rj])
    out = trajectory_lib.select(traj, src)
    pair_ids, is_chosen = halves_pairing(p)
    extras = dict(out.extras)
    extras[IS_CHOSEN_KEY] = jnp.asarray(is_chosen)
    extras[SOURCE_ROWS_KEY] = src
    ar = jnp.arange(p, dtype=jnp.int32)
    out = out.replace(pair_ids=jnp.asarray(pair_ids), valid=jnp.concatenate([real, real]),
                      group_ids=jnp.concatenate([ar, ar]), extras=extras)
    count = jnp.minimum(n_keep, p)
    pair_gap = jnp.where(real, s[ci] - s[rj], 0.0)
    metrics = {
        "pairs/count": count.astype(jnp.float32),
        "pairs/candidates": jnp.sum(cand).astype(jnp.float32),
        "pairs/dropped_by_cap": (jnp.sum(cand) - count).astype(jnp.float32),
        "pairs/margin_mean": (jnp.sum(pair_gap) / jnp.maximum(count, 1)
                              ).astype(jnp.float32),
    }
    return out, metrics

  return stateless(fn)


def most_vs_least_voted(*, vote_column: int = 0, min_margin: float = 0.0,
                        min_top_votes: float = 0.0, weighted: bool = True
                        ) -> TrajectoryTransform:
  r"""ScPO pairs: most-voted ≻ least-voted answer per group, vote-margin weight.

  ``traj.rewards[:, vote_column]`` holds V_i, the number of rows of row i's
  group with the same (canonical) answer (0 = unparseable; such rows take
  part in neither side). In each group g with k_g valid rows: c = a row of
  the most-voted answer (first argmax V), r = a row of the least-voted one
  (first argmin V over V > 0); the pair is formed iff
  V_c − V_r > ``min_margin`` and V_c ≥ ``min_top_votes`` (ScPO's consistency
  filter; GK, unchecked). With ``weighted`` the chosen row's sample weight is
  multiplied by w = (V_c − V_r)/k_g (ScPO's instance weight, GK, unchecked),
  which every pairwise term applies (``preference`` module docstring).

  Writes ``pair_ids[c] = r`` and ``extras['is_chosen']`` like
  :func:`best_vs_worst`. Jit-able, fixed shapes.

  Metrics: ``pairs/count``, ``pairs/frac_groups``, ``pairs/vote_margin_mean``
  (V_c − V_r), ``pairs/weight_mean`` (w over formed pairs).
  """
  if int(vote_column) < 0:
    raise ValueError(f"most_vs_least_voted: vote_column must be >= 0, got {vote_column!r}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.group_ids is None:
      raise ValueError("most_vs_least_voted: traj.group_ids is None")
    if traj.rewards is None:
      raise ValueError("most_vs_least_voted: traj.rewards is None (add the vote"
                       " count reward stage)")
    if vote_column >= traj.rewards.shape[1]:
      raise ValueError(f"most_vs_least_voted: vote_column={vote_column} but the"
                       f" batch has {traj.rewards.shape[1]} reward columns")
    b = traj.batch_size
    v = jnp.asarray(traj.rewards, jnp.float32)[:, vote_column]
    gid = jnp.asarray(traj.group_ids, jnp.int32)
    usable = traj.valid & jnp.isfinite(v) & (v > 0)
    hi, lo, best, worst = _group_extremes(v, usable, gid, b)
    k = jax.ops.segment_sum(traj.valid.astype(jnp.float32), gid, num_segments=b)
    gap = hi - lo
    formed = (jnp.isfinite(gap) & (gap > min_margin) & (hi >= min_top_votes)
              & (best < b) & (worst < b))
    idx = jnp.arange(b, dtype=jnp.int32)
    is_chosen = formed[gid] & (idx == best[gid])
    pair_ids = jnp.where(is_chosen, worst[gid], -1).astype(jnp.int32)
    w_group = jnp.where(formed, gap / jnp.maximum(k, 1.0), 0.0)
    weights = traj.weights
    if weighted:
      weights = jnp.where(is_chosen, traj.weights * w_group[gid], traj.weights)
    groups = jax.ops.segment_max(jnp.ones((b,), jnp.int32), gid, num_segments=b) > 0
    fg = formed & groups
    count = jnp.sum(fg)
    n = jnp.maximum(count, 1)
    metrics = {
        "pairs/count": count.astype(jnp.float32),
        "pairs/frac_groups": (count / jnp.maximum(jnp.sum(groups), 1)).astype(jnp.float32),
        "pairs/vote_margin_mean": (jnp.sum(jnp.where(fg, gap, 0.0)) / n).astype(jnp.float32),
        "pairs/weight_mean": (jnp.sum(jnp.where(fg, w_group, 0.0)) / n).astype(jnp.float32),
    }
    extras = dict(traj.extras)
    extras[IS_CHOSEN_KEY] = is_chosen
    return traj.replace(pair_ids=pair_ids, weights=weights, extras=extras), metrics

  return stateless(fn)


__all__ = ["SOURCE_ROWS_KEY", "all_pairs", "best_vs_worst", "most_vs_least_voted"]
