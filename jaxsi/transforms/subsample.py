r"""Vote over N, train on M: a uniform random subset of every group.

TTRL (Zuo et al. 2025, arXiv:2504.16084, §3 "Experimental setup"): N
samples per prompt estimate the majority-vote label, and only M < N of them
(64 → 32 in the paper) are used for the policy update. The reward stage sees
all N (the vote needs the whole group); this transform then keeps M of each
group's valid samples uniformly at random (``valid ← valid ∧ kept``), before
the advantage transform so advantages are normalised over the M trained
samples. Fixed shapes: the dropped rows stay in the batch with
``valid = False``.
"""

from __future__ import annotations

from typing import Union

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, group_count
from jaxsi.transforms.advantages import _mean, _rank_in_group
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless


def random_group_subset(*, keep: Union[int, float]) -> TrajectoryTransform:
  r"""Keeps ``m_g`` uniformly random valid samples of every group.

  ``keep`` int → m_g = min(keep, n_g); float ρ ∈ (0, 1] → m_g =
  clip(round(ρ·n_g), 1, n_g), with n_g the group's valid samples. The subset
  is drawn from ``ctx.rng`` (every subset of size m_g equally likely).

  Metric: ``subsample/frac_kept`` (of the valid samples).
  """
  if isinstance(keep, bool) or not isinstance(keep, (int, float)):
    raise ValueError(f"random_group_subset: keep must be an int or a float, got"
                     f" {keep!r}")
  if isinstance(keep, int) and keep < 1:
    raise ValueError(f"random_group_subset: keep must be >= 1, got {keep}")
  if isinstance(keep, float) and not 0.0 < keep <= 1.0:
    raise ValueError(f"random_group_subset: a keep ratio must be in (0, 1],"
                     f" got {keep}")

  def fn(traj: Trajectory, ctx: Context):
    if ctx.rng is None:
      raise ValueError("random_group_subset needs ctx.rng")
    ok = traj.valid
    n = group_count(traj.group_ids, ok)
    if isinstance(keep, int):
      m = jnp.minimum(keep, n)
    else:
      m = jnp.clip(jnp.round(keep * n), 1, jnp.maximum(n, 1))
    u = jax.random.uniform(jax.random.fold_in(ctx.rng, 0x5AB), ok.shape)
    rank = _rank_in_group(u, traj.group_ids, ok)
    kept = ok & (rank < m.astype(jnp.int32))
    return (traj.replace(valid=kept),
            {"subsample/frac_kept": _mean(kept.astype(jnp.float32), ok)})

  return stateless(fn)


__all__ = ["random_group_subset"]
