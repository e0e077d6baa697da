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


def test_all_pairs_by_hand():
  # Groups {0,1,2} scores (1, 0, 2) and {3,4} scores (5, 5): row-major
  # candidates of group 0 with gap > 0: (0,1) 1, (2,0) 1, (2,1) 2; group 3 tie.
  r = [1.0, 0.0, 2.0, 5.0, 5.0]
  g = [0, 0, 0, 3, 3]
  out, m = _run(pairs.all_pairs(max_pairs=4), _traj(r, g))
  src = np.asarray(out.extras[pairs.SOURCE_ROWS_KEY])
  # P = 4 slots: chosen copies (0, 2, 2, pad) then rejected (1, 0, 1, pad).
  np.testing.assert_array_equal(src[:3], [0, 2, 2])
  np.testing.assert_array_equal(src[4:7], [1, 0, 1])
  np.testing.assert_array_equal(np.asarray(out.valid), [1, 1, 1, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(np.asarray(out.pair_ids), [4, 5, 6, 7, 0, 1, 2, 3])
  np.testing.assert_array_equal(np.asarray(out.extras[IS_CHOSEN_KEY]), [1] * 4 + [0] * 4)
  np.testing.assert_array_equal(np.asarray(out.rewards)[:3, 0], [1.0, 2.0, 2.0])
  assert float(m["pairs/count"]) == 3 and float(m["pairs/candidates"]) == 3
  np.testing.assert_allclose(float(m["pairs/margin_mean"]), (1 + 1 + 2) / 3)
  # margin 1.5 keeps only (2,1); a cap of 1 per group keeps the first, (0,1).
  out, m = _run(pairs.all_pairs(max_pairs=2, margin=1.5), _traj(r, g))
  np.testing.assert_array_equal(np.asarray(out.extras[pairs.SOURCE_ROWS_KEY])[[0, 2]], [2, 1])
  assert float(m["pairs/count"]) == 1
  out, m = _run(pairs.all_pairs(max_pairs=4, max_pairs_per_group=1), _traj(r, g))
  np.testing.assert_array_equal(np.asarray(out.extras[pairs.SOURCE_ROWS_KEY])[[0, 4]], [0, 1])
  assert float(m["pairs/count"]) == 1 and float(m["pairs/dropped_by_cap"]) == 2
  # the total cap: 3 candidates into 2 slots
  out, m = _run(pairs.all_pairs(max_pairs=2), _traj(r, g))
  assert float(m["pairs/count"]) == 2 and float(m["pairs/dropped_by_cap"]) == 1
  assert out.batch_size == 4


def test_all_pairs_per_group_cap_counts_across_rows_and_jit():
  # Two interleaved groups: rows 0,2,4 in group 0 (scores 3, 2, 1) and rows
  # 1,3 in group 1 (scores 1, 0). Group 0's candidates, row-major:
  # (0,2) (0,4) (2,4); group 1: (1,3). Cap 2 per group keeps (0,2) (0,4) (1,3).
  r = [3.0, 1.0, 2.0, 0.0, 1.0]
  g = [0, 1, 0, 1, 0]
  tr = pairs.all_pairs(max_pairs=4, max_pairs_per_group=2)
  out, m = _run(tr, _traj(r, g))
  src = np.asarray(out.extras[pairs.SOURCE_ROWS_KEY])
  np.testing.assert_array_equal(src[:3], [0, 0, 1])
  np.testing.assert_array_equal(src[4:7], [2, 4, 3])
  assert float(m["pairs/dropped_by_cap"]) == 1
  jitted = jax.jit(lambda t: tr.update(t, (), Context())[0])
  np.testing.assert_array_equal(np.asarray(jitted(_traj(r, g)).extras[pairs.SOURCE_ROWS_KEY]), src)
  with pytest.raises(ValueError, match="max_pairs"):
    pairs.all_pairs(max_pairs=0)
  with pytest.raises(ValueError, match="max_pairs_per_group"):
    pairs.all_pairs(max_pairs=2, max_pairs_per_group=0)


def test_most_vs_least_voted_by_hand():
  # Group 0 (k=5): answers a a a b ∅ → votes 3 3 3 1 0: chosen row 0, rejected
  # row 3 (the unparseable row 4 takes no side), w = (3 − 1)/5 = 0.4.
  # Group 5 (k=3): a a a → one answer, no pair. Group 8 (k=4): votes 2 1 2 1
  # → chosen 8, rejected 9, w = (2 − 1)/4 = 0.25.
  v = [3, 3, 3, 1, 0,   3, 3, 3,   2, 1, 2, 1]
  g = [0] * 5 + [5] * 3 + [8] * 4
  out, m = _run(pairs.most_vs_least_voted(), _traj(v, g))
  chosen = np.asarray(out.extras[IS_CHOSEN_KEY])
  pid = np.asarray(out.pair_ids)
  np.testing.assert_array_equal(np.flatnonzero(chosen), [0, 8])
  assert pid[0] == 3 and pid[8] == 9 and (pid[~chosen] == -1).all()
  w = np.asarray(out.weights)
  np.testing.assert_allclose(w[[0, 8]], [0.4, 0.25], rtol=1e-6)
  np.testing.assert_allclose(np.delete(w, [0, 8]), 1.0)
  assert float(m["pairs/count"]) == 2
  np.testing.assert_allclose(float(m["pairs/frac_groups"]), 2 / 3)
  np.testing.assert_allclose(float(m["pairs/vote_margin_mean"]), (2 + 1) / 2)
  np.testing.assert_allclose(float(m["pairs/weight_mean"]), (0.4 + 0.25) / 2, rtol=1e-6)
  # The consistency filter V(y+) >= 3 drops group 8; weighted=False keeps weights.
  out, m = _run(pairs.most_vs_least_voted(min_top_votes=3, weighted=False), _traj(v, g))
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(out.extras[IS_CHOSEN_KEY])), [0])
  np.testing.assert_allclose(np.asarray(out.weights), 1.0)
  # min_margin 1 drops group 8's margin of 1 too.
  out, _ = _run(pairs.most_vs_least_voted(min_margin=1.0), _traj(v, g))
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(out.extras[IS_CHOSEN_KEY])), [0])


def test_most_vs_least_voted_reads_only_its_column_and_jits():
  # Column 0 = a gold label that must not matter; column 1 = the votes.
  votes = [2.0, 2.0, 1.0, 1.0]
  g = [0, 0, 0, 0]
  a = _traj(np.stack([[1, 0, 0, 1], votes], 1), g)
  b = _traj(np.stack([[0, 1, 1, 0], votes], 1), g)
  tr = pairs.most_vs_least_voted(vote_column=1)
  oa, _ = _run(tr, a)
  ob, _ = _run(tr, b)
  np.testing.assert_array_equal(np.asarray(oa.pair_ids), np.asarray(ob.pair_ids))
  np.testing.assert_array_equal(np.asarray(oa.pair_ids), [2, -1, -1, -1])
  np.testing.assert_allclose(np.asarray(oa.weights)[0], 0.25)
  jitted = jax.jit(lambda t: tr.update(t, (), Context())[0])
  np.testing.assert_array_equal(np.asarray(jitted(a).pair_ids), [2, -1, -1, -1])
  with pytest.raises(ValueError, match="vote_column"):
    _run(pairs.most_vs_least_voted(vote_column=2), a)
