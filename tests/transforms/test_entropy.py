"""EM-FT token-entropy term (arXiv:2505.15134 §2) against hand numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import entropy, regularizers
from jaxsi.transforms.base import ModelOutputs

B, T = 3, 4
MASK = np.zeros((B, T), bool)
MASK[0, 1:3] = True   # H = 0.1, 0.2
MASK[1, 1:4] = True   # H = 0.5, 0.6, 0.7
ENT = (np.arange(B * T, dtype=np.float32).reshape(B, T) / 10.0)


def _traj(valid=None):
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, valid=valid)


def test_token_entropy_value_gradient_and_negation_of_the_bonus():
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), entropy=jnp.asarray(ENT))
  loss, m = entropy.token_entropy(agg="token-mean")(out, _traj())
  np.testing.assert_allclose(loss, (0.1 + 0.2 + 0.5 + 0.6 + 0.7) / 5, rtol=1e-6)
  assert float(m["entropy"]) == pytest.approx(float(loss))
  seq, _ = entropy.token_entropy(agg="seq-mean-token-mean")(out, _traj())
  np.testing.assert_allclose(seq, (0.15 + 0.6 + 0.0) / 3, rtol=1e-6)
  bonus, _ = regularizers.entropy_bonus(agg="token-mean")(out, _traj())
  np.testing.assert_allclose(loss, -bonus, rtol=1e-6)
  g = jax.grad(lambda e: entropy.token_entropy(agg="token-sum")(
      ModelOutputs(logprobs=jnp.zeros((B, T)), entropy=e), _traj())[0])(jnp.asarray(ENT))
  np.testing.assert_allclose(g, MASK.astype(np.float32))  # descent lowers H
  # filtered rows do not count
  valid = np.asarray([False, True, True])
  loss, _ = entropy.token_entropy(agg="token-mean")(out, _traj(valid))
  np.testing.assert_allclose(loss, 0.6, rtol=1e-6)


def test_token_entropy_needs_entropy():
  with pytest.raises(ValueError, match="outputs.entropy"):
    entropy.token_entropy()(ModelOutputs(logprobs=jnp.zeros((B, T))), _traj())
