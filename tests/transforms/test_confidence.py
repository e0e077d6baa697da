"""RLSC's self-confidence term against hand numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import confidence
from jaxsi.transforms.base import ModelOutputs

B, T = 2, 4
MASK = np.zeros((B, T), bool)
MASK[0, 2:4] = True
MASK[1, 1:4] = True
# sampler log-probs: row 0: log .5 + log .5 → p_old = 1/4; row 1: p_old = 1/8.
OLD = np.zeros((B, T), np.float32)
OLD[0, 2:4] = math.log(0.5)
OLD[1, 1:4] = math.log(0.5)
NEW = np.asarray([[0.0, 0.0, -0.1, -0.2], [0.0, -0.3, -0.4, -0.5]], np.float32)


def _traj(valid=None, old=True):
  t = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, valid=valid)
  return t.replace(old_logprobs=jnp.asarray(OLD)) if old else t.replace(
      behaviour_logprobs=jnp.asarray(OLD))


def test_rlsc_hand_numbers_and_gradient():
  alpha = 0.1
  out = ModelOutputs(logprobs=jnp.asarray(NEW))
  loss, m = confidence.rlsc(alpha=alpha)(out, _traj())
  w0, w1 = 0.25 + alpha, 0.125 + alpha
  want = -(w0 * (-0.3) + w1 * (-1.2)) / 2   # Σ over tokens, mean over samples
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(m["p_old_mean"], (0.25 + 0.125) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["logp_mean"], (-0.3 - 1.2) / 2, rtol=1e-6)
  g = jax.grad(lambda lp: confidence.rlsc(alpha=alpha)(
      ModelOutputs(logprobs=lp), _traj())[0])(jnp.asarray(NEW))
  np.testing.assert_allclose(g, -np.asarray([[w0], [w1]]) * MASK / 2, rtol=1e-6)
  # α = 0 is the unsmoothed loss; behaviour log-probs stand in for old ones.
  l0, _ = confidence.rlsc(alpha=0.0)(out, _traj(old=False))
  np.testing.assert_allclose(l0, -(0.25 * -0.3 + 0.125 * -1.2) / 2, rtol=1e-6)
  # a filtered sample is removed
  l1, _ = confidence.rlsc(alpha=alpha)(out, _traj(valid=np.asarray([False, True])))
  np.testing.assert_allclose(l1, w1 * 1.2, rtol=1e-6)


def test_rlsc_bad_input():
  with pytest.raises(ValueError, match="alpha"):
    confidence.rlsc(alpha=-1.0)
  t = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK)
  with pytest.raises(ValueError, match="old_logprobs"):
    confidence.rlsc()(ModelOutputs(logprobs=jnp.asarray(NEW)), t)


def test_rlsc_jit_equals_eager():
  term = confidence.rlsc(alpha=0.1)
  out = ModelOutputs(logprobs=jnp.asarray(NEW))
  np.testing.assert_allclose(jax.jit(term)(out, _traj())[0], term(out, _traj())[0],
                             rtol=1e-6)
