"""Tests for jaxsi.transforms.regularizers (formulas.md §3.5 entropy term)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import regularizers
from jaxsi.transforms.base import ModelOutputs, objective

B, T = 8, 6

MASK = np.zeros((B, T), bool)
MASK[0, 1:4] = True   # 3 tokens
MASK[1, 2:4] = True   # 2 tokens
ENT = np.arange(B * T, dtype=np.float32).reshape(B, T) / 10.0


def _traj(valid=None):
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, valid=valid)


def test_entropy_bonus_value_and_sign():
  traj = _traj()
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), entropy=jnp.asarray(ENT))
  h_tok = (0.1 + 0.2 + 0.3 + 0.8 + 0.9) / 5
  loss, m = regularizers.entropy_bonus(agg="token-mean")(out, traj)
  np.testing.assert_allclose(loss, -h_tok, rtol=1e-6)
  np.testing.assert_allclose(m["entropy"], h_tok, rtol=1e-6)
  # seq-mean: rows 2..7 are valid but empty; they count in N (as in TRL 1/B).
  loss, _ = regularizers.entropy_bonus(agg="seq-mean-token-mean")(out, traj)
  np.testing.assert_allclose(loss, -(0.2 + 0.85) / B, rtol=1e-6)
  # With filtered rows only the valid ones count.
  valid = np.zeros(B, bool)
  valid[:2] = True
  loss, _ = regularizers.entropy_bonus(agg="seq-mean-token-mean")(out, _traj(valid))
  np.testing.assert_allclose(loss, -(0.2 + 0.85) / 2, rtol=1e-6)


def test_objective_weight_subtracts_entropy_and_gradient_increases_it():
  traj = _traj()
  zero_term = lambda outputs, traj: (jnp.zeros(()), {})
  total = objective((1.0, zero_term, "pg"), (0.01, regularizers.entropy_bonus(agg="token-sum"),
                                              "ent"))
  f = lambda e: total(ModelOutputs(logprobs=jnp.zeros((B, T)), entropy=e), traj)
  loss, metrics = f(jnp.asarray(ENT))
  np.testing.assert_allclose(loss, -0.01 * np.sum(ENT * MASK), rtol=1e-6)
  np.testing.assert_allclose(metrics["ent/entropy"], np.sum(ENT * MASK), rtol=1e-6)
  g = jax.grad(lambda e: f(e)[0])(jnp.asarray(ENT))
  np.testing.assert_allclose(g, -0.01 * MASK, rtol=1e-6)  # descent raises H


def test_missing_entropy_raises_and_jit():
  traj = _traj()
  with pytest.raises(ValueError, match="entropy"):
    regularizers.entropy_bonus()(ModelOutputs(logprobs=jnp.zeros((B, T))), traj)
  term = regularizers.entropy_bonus(agg="token-mean")
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), entropy=jnp.asarray(ENT))
  np.testing.assert_allclose(jax.jit(term)(out, traj)[0], term(out, traj)[0], rtol=1e-6)
