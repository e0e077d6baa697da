"""Tests for jaxsi.transforms.downsampling (D³S)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import downsampling as ds
from jaxsi.transforms.base import Context


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)

CTX = Context()


def make_traj(rewards, group_ids, *, t=5, **kw):
  r = np.asarray(rewards, np.float32)
  b = r.shape[0]
  lm = np.zeros((b, t), bool)
  lm[:, 1:] = True
  return Trajectory.create(np.ones((b, t), np.int32), loss_mask=lm,
                           group_ids=group_ids, rewards=jnp.asarray(r[:, None]),
                           **kw)


def run(transform, traj, ctx=CTX):
  out, _, metrics = jax.jit(transform.update)(traj, transform.init(), ctx)
  return out, metrics


def test_sample_selection_hand_computed():
  # group 0: {0, 1, 1, 1, 0.5, 0.9}, m = 2 → one lowest + one highest.
  # group 6: {1, 1, 1} zero variance; the balanced candidate j = 1 keeps the
  #          lowest-index one and the highest-index one.
  r = [0.0, 1.0, 1.0, 1.0, 0.5, 0.9, 1.0, 1.0, 1.0]
  g = [0] * 6 + [6] * 3
  out, m = run(ds.d3s_sample_selection(keep=2, source="rewards"),
               make_traj(r, g))
  np.testing.assert_array_equal(out.valid,
                                [1, 0, 0, 1, 0, 0, 1, 0, 1])
  np.testing.assert_allclose(m["d3s/frac_samples_kept"], 4 / 9)
  # m = 3 in {0, 0.1, 0.2, 10}: var({0, 0.1, 10}) is the max (j = 2).
  out, _ = run(ds.d3s_sample_selection(keep=3, source="rewards"),
               make_traj([0.0, 0.1, 0.2, 10.0], [0, 0, 0, 0]))
  np.testing.assert_array_equal(out.valid, [1, 1, 0, 1])


def test_sample_selection_matches_brute_force():
  rng = np.random.RandomState(0)
  sizes = [6, 5, 7, 3, 1, 6]
  g = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
  g = g[rng.permutation(len(g))]  # non-contiguous group layout
  r = np.round(rng.rand(len(g)) * 4) / 4  # coarse values: many ties
  cont = rng.rand(len(g)) < 0.4
  r[cont] = rng.randn(cont.sum())
  keeps = (2, 3, 4)
  ts = [ds.d3s_sample_selection(keep=k, source="rewards") for k in keeps]
  outs = jax.jit(lambda tr: [t.update(tr, (), CTX)[0] for t in ts])(
      make_traj(r, g))
  for keep, out in zip(keeps, outs):
    sel = np.asarray(out.valid)
    for gid in np.unique(g):
      idx = np.where(g == gid)[0]
      mg = min(keep, len(idx))
      assert sel[idx].sum() == mg
      best = max(np.var(r[list(s)]) for s in itertools.combinations(idx, mg))
      np.testing.assert_allclose(np.var(r[idx[sel[idx]]]), best, atol=1e-6)


def test_sample_selection_fraction_schedule_and_advantage_source():
  r = np.array([0.0, 1.0, 0.2, 0.8, 0.5, 0.4, 0.6, 0.3], np.float32)
  g = np.zeros(8, np.int32)
  lm = np.ones((8, 5), bool)
  lm[:, 0] = False
  adv = ((r - r.mean()) / r.std(ddof=1))[:, None] * lm
  traj = make_traj(r, g, advantages=jnp.asarray(adv, jnp.float32))
  sched = ds.linear_keep_schedule(start=0.25, end=1.0, transition_steps=10)
  t = ds.d3s_sample_selection(keep=sched)
  out0, m0 = run(t, traj, Context(step=jnp.int32(0)))
  np.testing.assert_array_equal(out0.valid, [1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(m0["d3s/keep_ratio"], 0.25)
  out10, _ = run(t, traj, Context(step=jnp.int32(10)))
  np.testing.assert_array_equal(out10.valid, [True] * 8)
  # advantages and rewards give the same subset (A is affine in R per group)
  out_r, _ = run(ds.d3s_sample_selection(keep=0.5, source="rewards"), traj)
  out_a, _ = run(ds.d3s_sample_selection(keep=0.5), traj)
  np.testing.assert_array_equal(out_r.valid, out_a.valid)
  np.testing.assert_array_equal(out_r.valid, [1, 1, 1, 1, 0, 0, 0, 0])
  # invalid samples are never selected
  out_v, _ = run(ds.d3s_sample_selection(keep=2, source="rewards"),
                 traj.replace(valid=jnp.asarray([False] + [True] * 7)))
  np.testing.assert_array_equal(out_v.valid, [0, 1, 1, 0, 0, 0, 0, 0])
  with pytest.raises(ValueError):
    ds.d3s_sample_selection(keep=0)


def test_token_selection_and_chain():
  adv = np.array([[0, 2, 2, 2, 2], [0, -1, -1, -1, -1]], np.float32)
  ent = np.array([[9, 0.1, 0.5, 1.0, 0.2], [9, 3.0, 0.1, 0.2, 0.3]], np.float32)
  traj = make_traj([1.0, 0.0], [0, 0], advantages=jnp.asarray(adv),
                   extras={"entropy": jnp.asarray(ent)})
  # scores on loss tokens: [0.2, 1.0, 2.0, 0.4] and [3.0, 0.1, 0.2, 0.3]
  out, m = run(ds.d3s_token_selection(keep=0.25), traj)
  s = (np.abs(adv) * ent)[:, 1:]
  thr = np.quantile(s, 0.75)
  want = np.zeros((2, 5), bool)
  want[:, 1:] = s >= thr
  np.testing.assert_array_equal(out.loss_mask, want)
  np.testing.assert_array_equal(want[:, 1:], [[0, 0, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(m["d3s/frac_tokens_kept"], 0.25)
  out, _ = run(ds.d3s_token_selection(keep=1.0), traj)
  np.testing.assert_array_equal(out.loss_mask, traj.loss_mask)
  out, _ = run(ds.d3s_token_selection(keep=0.25, extras_key="d3s_mask"), traj)
  np.testing.assert_array_equal(out.extras["d3s_mask"], want)
  # both levels: sample 1 dropped at sample level (keep=1, balanced j=1 of m=1
  # is impossible → j=0 keeps the highest), tokens chosen among sample 0 only
  t = ds.d3s(sample_keep=1, token_keep=0.5)
  out, state_metrics = run(t, traj)
  np.testing.assert_array_equal(out.valid, [True, False])
  np.testing.assert_array_equal(np.asarray(out.loss_mask)[0],
                                [0, 0, 1, 1, 0])


def test_d3s_jit_matches_eager():
  rng = np.random.RandomState(4)
  r = rng.rand(8).astype(np.float32)
  lm = np.ones((8, 5), bool)
  lm[:, 0] = False
  adv = (r - 0.5)[:, None] * lm
  traj = make_traj(r, np.repeat([0, 4], 4), advantages=jnp.asarray(adv),
                   extras={"entropy": jnp.asarray(rng.rand(8, 5), jnp.float32)})
  t = ds.d3s_sample_selection(keep=0.5)
  ctx = Context(step=jnp.int32(3))
  e_out, _, _ = t.update(traj, t.init(), ctx)
  j_out, _, _ = jax.jit(t.update)(traj, t.init(), ctx)
  np.testing.assert_array_equal(e_out.valid, j_out.valid)
  assert int(np.sum(np.asarray(j_out.valid))) == 4
