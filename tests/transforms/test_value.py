"""Tests for jaxsi.transforms.value (formulas.md §3.5, §2.9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import value
from jaxsi.transforms.base import ModelOutputs

B, T = 8, 6


def _traj(v_old, ret, mask, valid=None):
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=mask, valid=valid,
                           values=jnp.asarray(v_old, jnp.float32),
                           returns=jnp.asarray(ret, jnp.float32))


def _out(v):
  return ModelOutputs(logprobs=jnp.zeros((B, T)), values=jnp.asarray(v, jnp.float32))


def np_verl_value_loss(vpreds, returns, values, mask, cliprange_value):
  """verl compute_value_loss with token-mean (formulas §3.5)."""
  clipped = np.clip(vpreds, values - cliprange_value, values + cliprange_value)
  l1 = np.square(vpreds - returns)
  l2 = np.square(clipped - returns)
  m = mask.astype(np.float64)
  return 0.5 * (np.maximum(l1, l2) * m).sum() / m.sum(), ((l2 > l1) * m).sum() / m.sum()


def test_hand_values():
  v = np.zeros((B, T), np.float32)
  v_old = np.zeros((B, T), np.float32)
  ret = np.zeros((B, T), np.float32)
  mask = np.zeros((B, T), bool)
  mask[0, :2] = True
  v[0, :2] = [1.0, 2.0]
  v_old[0, :2] = [0.5, 0.5]
  ret[0, :2] = [0.0, 3.0]
  # t0: (1−0)² = 1, clip(1, 0, 1) = 1 → 1.  t1: (2−3)² = 1, clip(2, 0, 1) = 1 → (1−3)² = 4.
  loss, m = value.value_loss(clip=0.5, agg="token-mean")(_out(v), _traj(v_old, ret, mask))
  np.testing.assert_allclose(loss, 0.5 * (1.0 + 4.0) / 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["vf_clipfrac"], 0.5)
  loss, m = value.value_loss(clip=None, agg="token-mean")(_out(v), _traj(v_old, ret, mask))
  np.testing.assert_allclose(loss, 0.5 * (1.0 + 1.0) / 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["vf_clipfrac"], 0.0)


def test_matches_verl_reference_and_gradients():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(B, T)).astype(np.float32)
  v_old = (v + rng.normal(0, 0.8, size=(B, T))).astype(np.float32)
  ret = rng.normal(size=(B, T)).astype(np.float32)
  mask = rng.random((B, T)) < 0.7
  traj = _traj(v_old, ret, mask)
  term = value.value_loss(clip=0.5, agg="token-mean")
  loss, m = term(_out(v), traj)
  ref_loss, ref_frac = np_verl_value_loss(v.astype(np.float64), ret, v_old, mask, 0.5)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(m["vf_clipfrac"], ref_frac, rtol=1e-6)
  check_grads(lambda x: term(_out(x), traj)[0], (jnp.asarray(v),), order=1, modes=["rev"],
              atol=1e-2, rtol=1e-2, eps=1e-3)
  np.testing.assert_allclose(jax.jit(term)(_out(v), traj)[0], loss, rtol=1e-6)


def test_invalid_rows_and_missing_fields():
  rng = np.random.default_rng(1)
  v, v_old, ret = (rng.normal(size=(B, T)).astype(np.float32) for _ in range(3))
  mask = np.ones((B, T), bool)
  valid = np.arange(B) < 3
  term = value.value_loss(clip=0.2, agg="seq-mean-token-mean")
  full, _ = term(_out(v), _traj(v_old, ret, mask, valid=valid))
  garbage = np.where(valid[:, None], v, 1e3).astype(np.float32)
  same, _ = term(_out(garbage), _traj(v_old, ret, mask, valid=valid))
  np.testing.assert_allclose(same, full, rtol=1e-6)
  expected, _ = np_verl_value_loss(v[:3].astype(np.float64), ret[:3], v_old[:3], mask[:3], 0.2)
  np.testing.assert_allclose(full, expected, rtol=1e-5)  # equal lengths: seq-mean = token-mean
  with pytest.raises(ValueError, match="values"):
    term(ModelOutputs(logprobs=jnp.zeros((B, T))), _traj(v_old, ret, mask))


def test_score_regression_reads_the_last_loss_token():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(B, T)).astype(np.float32)
  mask = np.zeros((B, T), bool)
  ends = rng.integers(1, T, size=B)
  for b, e in enumerate(ends):
    mask[b, max(0, e - 2):e + 1] = True
  mask[3] = False                       # no loss token: left out
  valid = np.ones(B, bool)
  valid[5] = False                      # filtered out
  y = rng.normal(size=(B,)).astype(np.float32)
  w = rng.uniform(0.5, 2.0, size=(B,)).astype(np.float32)
  traj = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=mask, valid=valid,
                           weights=w, rewards=jnp.asarray(y[:, None]))
  loss, m = value.score_regression()(_out(v), traj)
  keep = valid & mask.any(axis=1)
  pred = v[np.arange(B), ends]
  expected = 0.5 * np.sum((w * (pred - y) ** 2)[keep]) / keep.sum()
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(m["score_mse"]) == pytest.approx(np.mean(((pred - y) ** 2)[keep]), rel=1e-5)
  g = jax.grad(lambda vv: value.score_regression()(_out(vv), traj)[0])(jnp.asarray(v))
  g = np.asarray(g)
  assert np.count_nonzero(g) == keep.sum()   # only the read positions get gradient
