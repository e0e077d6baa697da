"""Pair builders against hand-built groups."""

import jax
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import pairs
from jaxsi.transforms.base import Context
from jaxsi.transforms.preference import IS_CHOSEN_KEY


def _traj(rewards, group_ids, valid=None):
  b = len(group_ids)
  t = Trajectory.create(tokens=np.zeros((b, 3), np.int32),
                        loss_mask=np.ones((b, 3), bool),
                        group_ids=np.asarray(group_ids, np.int32))
  t = t.replace(rewards=np.asarray(rewards, np.float32).reshape(b, -1))
  if valid is not None:
    t = t.replace(valid=np.asarray(valid, bool))
  return t


def _run(tr, traj):
  out, _, metrics = tr.update(traj, tr.init(), Context())
  return out, metrics


def test_best_vs_worst_by_hand():
  # Groups (uneven, not contiguous in id value): {0,1,2}, {3,4}, {5,6,7}.
  r = [0.0, 1.0, 1.0,   2.0, 2.0,   0.5, np.nan, -1.0]
  g = [0, 0, 0, 3, 3, 5, 5, 5]
  out, m = _run(pairs.best_vs_worst(), _traj(r, g))
  chosen = np.asarray(out.extras[IS_CHOSEN_KEY])
  pid = np.asarray(out.pair_ids)
  # group 0: best = row 1 (first max), worst = row 0; group 3: tie → no pair;
  # group 5: NaN row unusable, best 5, worst 7.
  np.testing.assert_array_equal(chosen, [0, 1, 0, 0, 0, 1, 0, 0])
  assert pid[1] == 0 and pid[5] == 7
  assert (pid[~chosen] == -1).all()
  assert float(m["pairs/count"]) == 2.0
  np.testing.assert_allclose(float(m["pairs/frac_groups"]), 2 / 3)
  np.testing.assert_allclose(float(m["pairs/margin_mean"]), (1.0 + 1.5) / 2)


def test_margin_validity_weights_and_jit():
  r = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.0], [0.0, 0.0]]
  g = [0, 0, 2, 2]
  # Column weights (1, 0): group 0 gap 1.0, group 2 gap 0.2.
  tr = pairs.best_vs_worst(margin=0.5, reward_weights=(1.0, 0.0))
  out, m = _run(tr, _traj(r, g))
  np.testing.assert_array_equal(np.asarray(out.extras[IS_CHOSEN_KEY]), [0, 1, 0, 0])
  assert int(np.asarray(out.pair_ids)[1]) == 0 and float(m["pairs/count"]) == 1
  # An invalid row never pairs.
  out, _ = _run(pairs.best_vs_worst(), _traj(r, g, valid=[1, 0, 1, 1]))
  np.testing.assert_array_equal(np.asarray(out.extras[IS_CHOSEN_KEY])[:2], [0, 0])
  jitted = jax.jit(lambda t: pairs.best_vs_worst().update(t, (), Context())[0])
  np.testing.assert_array_equal(np.asarray(jitted(_traj(r, g)).pair_ids),
                                np.asarray(_run(pairs.best_vs_worst(), _traj(r, g))[0].pair_ids))
  with pytest.raises(ValueError, match="reward weights"):
    _run(pairs.best_vs_worst(reward_weights=(1.0,)), _traj(r, g))
