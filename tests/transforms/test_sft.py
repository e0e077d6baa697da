"""Tests for jaxsi.transforms.sft (formulas.md §2.8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import sft
from jaxsi.transforms.base import ModelOutputs

B, T = 8, 6

MASK = np.zeros((B, T), bool)
MASK[0, 3:6] = True
MASK[1, 2:4] = True
LP = -np.arange(1, B * T + 1, dtype=np.float32).reshape(B, T) / 20.0


def _traj(**kw):
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, **kw)


def _out(lp=LP):
  return ModelOutputs(logprobs=jnp.asarray(lp))


def test_nll_hand_values():
  tokens = -LP[MASK]  # 0.2, 0.25, 0.3, 0.45, 0.5
  loss, m = sft.nll(agg="token-mean")(_out(), _traj())
  np.testing.assert_allclose(loss, tokens.mean(), rtol=1e-6)
  np.testing.assert_allclose(m["ppl"], np.exp(tokens.mean()), rtol=1e-6)
  # TRL num_items_in_batch normalisation = token-mean with a global count.
  loss, _ = sft.nll(agg="token-mean", num_tokens=20)(_out(), _traj())
  np.testing.assert_allclose(loss, tokens.sum() / 20, rtol=1e-6)
  loss, _ = sft.nll(agg="token-sum")(_out(), _traj())
  np.testing.assert_allclose(loss, tokens.sum(), rtol=1e-6)


def test_nll_weights_valid_and_input_mask():
  w = np.ones(B, np.float32)
  w[1] = 3.0
  valid = np.ones(B, bool)
  valid[0] = False
  loss, _ = sft.nll(agg="token-sum")(_out(), _traj(weights=w, valid=valid))
  np.testing.assert_allclose(loss, 3.0 * (0.45 + 0.5), rtol=1e-6)
  # mask='input': every real token but the first of each row (positions > 0).
  input_mask = np.ones((B, T), bool)
  input_mask[2, :2] = False  # left padding on row 2
  traj = Trajectory.create(np.zeros((B, T), np.int32), input_mask=input_mask, loss_mask=MASK)
  target = input_mask & (np.asarray(traj.positions) > 0)
  assert not target[2, 2] and target[2, 3] and not target[0, 0]
  loss, _ = sft.nll(agg="token-mean", mask="input")(_out(), traj)
  np.testing.assert_allclose(loss, -LP[target].mean(), rtol=1e-6)
  with pytest.raises(ValueError):
    sft.nll(mask="all")(_out(), traj)


def test_dft_uniform_two_token_vocab_is_half_ce():
  # TRL tests/test_sft_trainer.py::TestDFTLoss: uniform logits, V = 2 → dft = CE / 2.
  lp = np.full((B, T), np.log(0.5), np.float32)
  dft_loss, _ = sft.dft(agg="token-mean")(_out(lp), _traj())
  nll_loss, _ = sft.nll(agg="token-mean")(_out(lp), _traj())
  np.testing.assert_allclose(dft_loss, nll_loss / 2.0, rtol=1e-6)


def test_dft_matches_reference_and_gradient_is_p_weighted():
  p = np.exp(LP.astype(np.float64))
  ref = (-p * LP * MASK).sum() / MASK.sum()  # TRL dft_loss, num_items = local tokens
  f = lambda x: sft.dft(agg="token-mean")(_out(x), _traj())[0]
  np.testing.assert_allclose(f(jnp.asarray(LP)), ref, rtol=1e-6)
  g = jax.grad(f)(jnp.asarray(LP))
  np.testing.assert_allclose(g, -p * MASK / MASK.sum(), rtol=1e-5)
  g_nll = jax.grad(lambda x: sft.nll(agg="token-mean")(_out(x), _traj())[0])(jnp.asarray(LP))
  np.testing.assert_allclose(g_nll, -MASK.astype(np.float32) / MASK.sum(), rtol=1e-6)


def test_jit_matches_eager():
  for term in (sft.nll(agg="seq-mean-token-mean"), sft.dft(agg="token-mean")):
    np.testing.assert_allclose(jax.jit(term)(_out(), _traj())[0], term(_out(), _traj())[0],
                               rtol=1e-6)
