"""TTRL's vote-over-N, train-on-M random group subset."""

import collections

import jax
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import subsample
from jaxsi.transforms.base import Context


def _traj(groups, valid=None):
  b = len(groups)
  return Trajectory.create(np.zeros((b, 2), np.int32), group_ids=groups, valid=valid)


def _kept(t, keep, seed=0):
  tr = subsample.random_group_subset(keep=keep)
  out, _, m = tr.update(t, tr.init(), Context(rng=jax.random.key(seed)))
  return np.asarray(out.valid), m


def test_counts_per_group_int_and_ratio_and_singletons():
  groups = [0] * 4 + [4] * 4 + [8]
  valid = np.asarray([1, 1, 1, 1, 1, 0, 1, 1, 1], bool)   # group 4: 3 valid
  kept, m = _kept(_traj(groups, valid), 2)
  g = np.asarray(groups)
  assert [kept[g == k].sum() for k in (0, 4, 8)] == [2, 2, 1]
  assert not kept[5]                       # an invalid row is never kept
  np.testing.assert_allclose(m["subsample/frac_kept"], 5 / 8)
  kept, _ = _kept(_traj(groups, valid), 0.5)   # round(0.5·n) clipped to ≥ 1
  assert [kept[g == k].sum() for k in (0, 4, 8)] == [2, 2, 1]
  kept, _ = _kept(_traj(groups, valid), 10)    # more than the group: all
  np.testing.assert_array_equal(kept, valid)


def test_subset_is_uniform():
  counts = collections.Counter()
  t = _traj([0] * 4)
  for seed in range(600):
    kept, _ = _kept(t, 2, seed=seed)
    counts[tuple(np.flatnonzero(kept))] += 1
  assert len(counts) == 6                    # every 2-subset of 4 occurs
  assert min(counts.values()) > 600 / 6 * 0.6


def test_bad_keep_and_missing_rng():
  for bad in (0, 1.5, 0.0, True, "2"):
    with pytest.raises(ValueError, match="keep"):
      subsample.random_group_subset(keep=bad)
  tr = subsample.random_group_subset(keep=1)
  with pytest.raises(ValueError, match="rng"):
    tr.update(_traj([0, 0]), tr.init(), Context())
