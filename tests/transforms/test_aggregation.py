"""Tests for jaxsi.transforms.aggregation (formulas.md §1.4, §3.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation as agg_lib

MODES = agg_lib.MODES

# Rows of lengths 3, 2, 1 (padding holds 9s that must be ignored).
LOSS = np.array([[1., 2., 3., 9.], [4., 5., 9., 9.], [6., 9., 9., 9.]], np.float32)
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)


@pytest.mark.parametrize("mode,kwargs,expected", [
    ("token-mean", {}, 21.0 / 6.0),
    ("token-mean", {"num_tokens": 12}, 21.0 / 12.0),
    ("token-sum", {}, 21.0),
    ("seq-mean-token-mean", {}, (2.0 + 4.5 + 6.0) / 3.0),
    ("seq-mean-token-mean", {"num_sequences": 6}, (2.0 + 4.5 + 6.0) / 6.0),
    ("seq-mean-token-sum", {}, 21.0 / 3.0),
    ("seq-mean-token-sum-norm", {}, 21.0 / (3 * 4)),
    ("seq-mean-token-sum-norm", {"max_len": 7}, 21.0 / (3 * 7)),
    ("length-weighted", {}, 21.0 / 3.0),
    ("dr_grpo", {}, 21.0 / 12.0),
    ("grpo", {}, 12.5 / 3.0),
])
def test_hand_values(mode, kwargs, expected):
  out = agg_lib.aggregate(jnp.asarray(LOSS), jnp.asarray(MASK), mode=mode, **kwargs)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_unknown_mode_raises():
  with pytest.raises(ValueError, match="Unknown aggregation mode"):
    agg_lib.aggregate(jnp.asarray(LOSS), jnp.asarray(MASK), mode="mean")


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="same shape"):
    agg_lib.aggregate(jnp.asarray(LOSS), jnp.asarray(MASK[:, :3]), mode="token-sum")


# --------------------------------------------- independent numpy references
def verl_agg_loss(loss, mask, mode, batch_num_tokens=None, global_batch_size=None,
                  loss_scale_factor=None):
  """verl-project@1dda039 core_algos.agg_loss with dp_size = 1 (formulas §3.3)."""
  m = mask.astype(np.float64)
  lm = loss * m
  lengths = m.sum(-1)
  gbs = loss.shape[0] if global_batch_size is None else global_batch_size
  if mode == "token-mean":
    n = m.sum() if batch_num_tokens is None else batch_num_tokens
    return lm.sum() / n
  if mode == "token-sum":
    return lm.sum()
  if mode == "seq-mean-token-sum":
    return (lm.sum(-1) * (lengths > 0)).sum() / gbs
  if mode == "seq-mean-token-mean":
    return (lm.sum(-1) / (lengths + 1e-8) * (lengths > 0)).sum() / gbs
  if mode == "seq-mean-token-sum-norm":
    factor = loss.shape[1] if loss_scale_factor is None else loss_scale_factor
    return (lm.sum(-1) * (lengths > 0)).sum() / gbs / factor
  raise ValueError(mode)


def trl_loss(loss, mask, loss_type, max_completion_length=None):
  """TRL 1.10 GRPOTrainer._compute_loss aggregation (formulas §1.4), 1 process."""
  m = mask.astype(np.float64)
  if loss_type == "grpo":
    return ((loss * m).sum(-1) / np.maximum(m.sum(-1), 1.0)).mean()
  if loss_type == "bnpo":
    return (loss * m).sum() / max(m.sum(), 1.0)
  if loss_type == "dr_grpo":
    return (loss * m).sum() / (loss.shape[0] * max_completion_length)
  if loss_type == "luspo":  # sequence-level per_token_loss (B, 1)
    return (loss[:, :1] * m.sum(1, keepdims=True)).mean()
  raise ValueError(loss_type)


def _random(seed, b=8, t=6):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(b, t)).astype(np.float32)
  lengths = rng.integers(1, t + 1, size=b)
  mask = np.arange(t)[None, :] < lengths[:, None]
  return loss, mask


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum",
                                  "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_matches_verl_reference(mode):
  loss, mask = _random(0)
  ours = agg_lib.aggregate(jnp.asarray(loss), jnp.asarray(mask), mode=mode)
  np.testing.assert_allclose(ours, verl_agg_loss(loss.astype(np.float64), mask, mode),
                             rtol=1e-5)
  ours = agg_lib.aggregate(jnp.asarray(loss), jnp.asarray(mask), mode=mode,
                           num_tokens=40, num_sequences=11, max_len=9)
  ref = verl_agg_loss(loss.astype(np.float64), mask, mode, batch_num_tokens=40,
                      global_batch_size=11, loss_scale_factor=9)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_matches_trl_reference():
  loss, mask = _random(1)
  lj, mj = jnp.asarray(loss), jnp.asarray(mask)
  np.testing.assert_allclose(agg_lib.aggregate(lj, mj, mode="seq-mean-token-mean"),
                             trl_loss(loss, mask, "grpo"), rtol=1e-5)
  np.testing.assert_allclose(agg_lib.aggregate(lj, mj, mode="token-mean"),
                             trl_loss(loss, mask, "bnpo"), rtol=1e-5)
  np.testing.assert_allclose(
      agg_lib.aggregate(lj, mj, mode="seq-mean-token-sum-norm", max_len=8),
      trl_loss(loss, mask, "dr_grpo", max_completion_length=8), rtol=1e-5)
  # LUSPO: sequence-constant loss (sequence-level IS).
  seq = np.repeat(loss[:, :1], loss.shape[1], axis=1)
  np.testing.assert_allclose(
      agg_lib.aggregate(jnp.asarray(seq), mj, mode="length-weighted"),
      trl_loss(seq, mask, "luspo"), rtol=1e-5)


def test_empty_row_contributes_zero_and_nan_padding_does_not_leak():
  loss = jnp.array([[1., 3.], [jnp.nan, jnp.inf]])
  mask = jnp.array([[True, True], [False, False]])
  for mode in MODES:
    out = agg_lib.aggregate(loss, mask, mode=mode)
    assert np.isfinite(out), mode
  np.testing.assert_allclose(
      agg_lib.aggregate(loss, mask, mode="seq-mean-token-mean"), 2.0 / 2.0)
  g = jax.grad(lambda x: agg_lib.aggregate(x, mask, mode="token-mean"))(loss)
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g, [[0.5, 0.5], [0.0, 0.0]])


# ------------------------------------------------------ micro-batch invariance
@pytest.mark.parametrize("splits", [2, 4])
def test_microbatch_invariance_with_global_counts(splits):
  loss, mask = _random(2, b=8, t=6)
  lj, mj = jnp.asarray(loss), jnp.asarray(mask)
  n_tok, n_seq = int(mask.sum()), 8
  for mode, kw in [("token-mean", {"num_tokens": n_tok}),
                   ("token-sum", {}),
                   ("seq-mean-token-mean", {"num_sequences": n_seq}),
                   ("seq-mean-token-sum", {"num_sequences": n_seq}),
                   ("seq-mean-token-sum-norm", {"num_sequences": n_seq}),
                   ("length-weighted", {"num_sequences": n_seq})]:
    full = agg_lib.aggregate(lj, mj, mode=mode)
    parts = sum(agg_lib.aggregate(l, m, mode=mode, **kw)
                for l, m in zip(jnp.split(lj, splits), jnp.split(mj, splits)))
    np.testing.assert_allclose(parts, full, rtol=1e-5, err_msg=mode)


def test_dr_grpo_constant_normaliser_local_mean_invariant():
  # Dr.GRPO divides by a data-independent constant: the MEAN of local losses
  # over equal micro-batches (gradient accumulation) equals the full loss...
  loss, mask = _random(3, b=8, t=6)
  lj, mj = jnp.asarray(loss), jnp.asarray(mask)
  full = agg_lib.aggregate(lj, mj, mode="seq-mean-token-sum-norm")
  parts = [agg_lib.aggregate(l, m, mode="seq-mean-token-sum-norm")
           for l, m in zip(jnp.split(lj, 4), jnp.split(mj, 4))]
  np.testing.assert_allclose(np.mean(parts), full, rtol=1e-5)
  # ...which local token-mean (TRL bnpo) does not promise.
  parts = [agg_lib.aggregate(l, m, mode="token-mean")
           for l, m in zip(jnp.split(lj, 4), jnp.split(mj, 4))]
  assert abs(np.mean(parts) - agg_lib.aggregate(lj, mj, mode="token-mean")) > 1e-3


# ------------------------------------------------------- aggregate_trajectory
def _traj(valid=None, weights=None, extras=None):
  return Trajectory.create(np.zeros((3, 4), np.int32), loss_mask=MASK, valid=valid,
                           weights=weights, extras=extras)


def test_trajectory_valid_and_weights():
  lj = jnp.asarray(LOSS)
  traj = _traj(valid=np.array([True, False, True]), weights=np.array([2., 5., 1.], np.float32))
  # token-mean over rows 0 and 2: (2·(1+2+3) + 6) / 4.
  np.testing.assert_allclose(
      agg_lib.aggregate_trajectory(lj, traj, mode="token-mean"), 18.0 / 4.0)
  # seq-mean over the 2 valid rows: (2·2 + 6) / 2.
  np.testing.assert_allclose(
      agg_lib.aggregate_trajectory(lj, traj, mode="seq-mean-token-mean"), 5.0)
  np.testing.assert_allclose(
      agg_lib.aggregate_trajectory(lj, traj, mode="seq-mean-token-mean", use_weights=False),
      (2.0 + 6.0) / 2.0)


def test_trajectory_global_counts_from_extras():
  extras = {agg_lib.NUM_TOKENS_KEY: np.full((3,), 12., np.float32),
            agg_lib.NUM_SEQUENCES_KEY: np.full((3,), 6., np.float32)}
  traj = _traj(extras=extras)
  lj = jnp.asarray(LOSS)
  np.testing.assert_allclose(agg_lib.aggregate_trajectory(lj, traj, mode="token-mean"),
                             21.0 / 12.0)
  np.testing.assert_allclose(
      agg_lib.aggregate_trajectory(lj, traj, mode="seq-mean-token-sum"), 21.0 / 6.0)
  # Explicit arguments win over extras.
  np.testing.assert_allclose(
      agg_lib.aggregate_trajectory(lj, traj, mode="token-mean", num_tokens=3), 7.0)


def test_jit_matches_eager():
  loss, mask = _random(4)
  for mode in MODES:
    f = lambda l, m, mode=mode: agg_lib.aggregate(l, m, mode=mode, num_tokens=jnp.sum(m))
    np.testing.assert_allclose(jax.jit(f)(loss, mask), f(loss, mask), rtol=1e-6)
