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
  their scores are not equal") and of online iterative DPO set-ups.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless
from jaxsi.transforms.preference import IS_CHOSEN_KEY

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
    hi = jax.ops.segment_max(jnp.where(usable, s, -jnp.inf), gid, num_segments=b)
    lo = jax.ops.segment_min(jnp.where(usable, s, jnp.inf), gid, num_segments=b)
    best = jax.ops.segment_min(jnp.where(usable & (s == hi[gid]), idx, b), gid,
                               num_segments=b)
    worst = jax.ops.segment_min(jnp.where(usable & (s == lo[gid]), idx, b), gid,
                                num_segments=b)
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


__all__ = ["best_vs_worst"]
