"""Aligned token log-probs / entropies, chunked unembedding, score_fn."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import logprobs as mlp
from jaxsi.trajectory import Trajectory
from tests.models import _util

# Row 0 left-padded by 2, row 1 fully real; T = 9, chunk 3 -> 3 chunks (1 pad).
TOKENS = np.array([[0, 0, 5, 6, 7, 8, 9, 10, 11],
                   [1, 2, 3, 4, 5, 6, 7, 8, 9]], np.int32)
MASK = TOKENS > 0
MASK[1] = True
POS = np.array([[0, 0, 0, 1, 2, 3, 4, 5, 6], list(range(9))], np.int32)
TEMP = 0.7


def _model(**kw):
  return _util.micro_model("qwen2", n_layers=1, **kw)


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_prediction_mask_hand_computed():
  input_mask = np.array([[False, True, True, True, True, False]])
  seg = np.array([[0, 1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(
      np.asarray(mlp.prediction_mask(input_mask)),
      [[False, False, True, True, True, False]])
  np.testing.assert_array_equal(
      np.asarray(mlp.prediction_mask(input_mask, seg)),
      [[False, False, True, False, True, False]])


def test_logprobs_from_logits_hand_computed():
  ln3 = math.log(3.0)
  logits = jnp.array([[[0.0, ln3], [ln3, 0.0], [5.0, -5.0]]])
  tokens = jnp.array([[0, 1, 0]])
  fn = jax.jit(mlp.logprobs_from_logits,
               static_argnames=("temperature", "with_entropy"),
               compiler_options=_util.FAST)
  lp, ent = fn(logits, tokens, with_entropy=True)
  h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
  np.testing.assert_allclose(np.asarray(lp), [[0.0, math.log(0.75),
                                              math.log(0.75)]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ent), [[0.0, h, h]], rtol=1e-6)
  # Temperature 2: p(1 | row 0) = √3 / (1 + √3).
  lp, _ = fn(logits, tokens, temperature=2.0,
             input_mask=jnp.array([[True, True, False]]))
  s3 = math.sqrt(3.0)
  np.testing.assert_allclose(np.asarray(lp), [[0.0, math.log(s3 / (1 + s3)), 0.0]],
                             rtol=1e-6)


def _reference(model, params, with_temp=TEMP):
  """NumPy log_softmax of the full forward pass, gathered and masked."""
  logits, _ = _util.jitted_apply(model)(params, TOKENS, POS, MASK)
  logp = _np_log_softmax(np.asarray(logits, np.float64) / with_temp)
  lp = np.zeros(TOKENS.shape)
  ent = np.zeros(TOKENS.shape)
  for b in range(2):
    for t in range(1, 9):
      if MASK[b, t] and MASK[b, t - 1]:
        lp[b, t] = logp[b, t - 1, TOKENS[b, t]]
        ent[b, t] = -np.sum(np.exp(logp[b, t - 1]) * logp[b, t - 1])
  return lp, ent


@functools.lru_cache(maxsize=None)
def _jitted_token_logprobs(model, chunk_size):
  return jax.jit(functools.partial(
      mlp.token_logprobs, model, temperature=TEMP, with_entropy=True,
      chunk_size=chunk_size), compiler_options=_util.FAST)


def test_token_logprobs_equals_gathered_log_softmax():
  model, params = _model()
  lp, ent = _jitted_token_logprobs(model, 3)(params, TOKENS, POS,
                                             input_mask=MASK)
  want_lp, want_ent = _reference(model, params)
  np.testing.assert_allclose(np.asarray(lp), want_lp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ent), want_ent, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(lp)[~MASK] == 0) and np.all(np.asarray(lp)[:, 0] == 0)
  assert np.asarray(lp)[0, 2] == 0  # first real token of a left-padded row


def _loss(params, model, chunk_size):
  w = jnp.linspace(0.5, 1.5, TOKENS.size).reshape(TOKENS.shape)
  if chunk_size is None:  # unchunked: full [B, T, V] logits
    logits, _ = model.apply(params, TOKENS, POS, MASK)
    lp, ent = mlp.logprobs_from_logits(logits, TOKENS, input_mask=MASK,
                                       temperature=TEMP, with_entropy=True)
  else:
    lp, ent = mlp.token_logprobs(model, params, TOKENS, POS, input_mask=MASK,
                                 temperature=TEMP, with_entropy=True,
                                 chunk_size=chunk_size)
  return jnp.sum(lp * w) + 0.3 * jnp.sum(ent * w)


def test_chunked_equals_unchunked_including_gradients():
  model, params = _model()
  grad = lambda c: jax.jit(jax.value_and_grad(_loss), static_argnums=(1, 2),
                           compiler_options=_util.FAST)(params, model, c)
  (v_c, g_c), (v_u, g_u) = grad(3), grad(None)
  np.testing.assert_allclose(float(v_c), float(v_u), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4), g_c, g_u)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_c)) > 0


def _max_logits_block(jaxpr, vocab):
  """Largest size of a >=3-D intermediate whose last axis is the vocabulary."""
  best = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      shape = getattr(var.aval, "shape", ())
      if len(shape) >= 3 and shape[-1] == vocab:
        best = max(best, math.prod(shape))
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          best = max(best, _max_logits_block(inner, vocab))
  return best


@pytest.mark.parametrize("chunk_size,expect_full", [(3, False), (None, True)])
def test_full_logits_never_materialised_when_chunked(chunk_size, expect_full):
  model, params = _model()
  v = model.config.vocab_size
  jaxpr = jax.make_jaxpr(jax.grad(_loss), static_argnums=(1, 2))(
      params, model, chunk_size).jaxpr
  biggest = _max_logits_block(jaxpr, v)
  b, t = TOKENS.shape
  if expect_full:  # the check can fail: the unchunked path has [B, T-1, V]
    assert biggest >= b * (t - 1) * v
  else:
    assert 0 < biggest <= b * 3 * v


def test_single_token_sequences_give_zeros():
  model, params = _model()
  hidden = jnp.zeros((2, 1, model.config.d_model))
  lp, ent = mlp.logprobs_from_hidden(model, params, hidden,
                                     jnp.zeros((2, 1), jnp.int32),
                                     with_entropy=True)
  assert lp.shape == ent.shape == (2, 1)
  assert not np.any(np.asarray(lp)) and not np.any(np.asarray(ent))


def test_bad_arguments_raise():
  model, params = _model()
  with pytest.raises(ValueError, match="temperature"):
    mlp.score_fn(model, temperature=0.0)
  with pytest.raises(ValueError, match="value head"):
    mlp.score_fn(model, with_values=True)
  with pytest.raises(ValueError, match="chunk_size"):
    mlp.logprobs_from_hidden(model, params, jnp.zeros((1, 2, 32)),
                             jnp.zeros((1, 2), jnp.int32), chunk_size=0)


def test_score_fn_outputs_are_aligned():
  model, params = _model(value_head=True)
  traj = Trajectory.create(TOKENS, input_mask=MASK, positions=POS)
  fn = jax.jit(mlp.score_fn(model, temperature=TEMP, with_entropy=True,
                            with_values=True, with_logits=True, chunk_size=4),
               compiler_options=_util.FAST)
  out = fn(params, traj)
  want_lp, want_ent = _reference(model, params)
  np.testing.assert_allclose(np.asarray(out.logprobs), want_lp, atol=1e-5,
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.entropy), want_ent, atol=1e-5,
                             rtol=1e-5)
  hidden, _ = _util.jitted_apply(model)(params, TOKENS, POS, MASK,
                                        return_hidden=True)
  v = np.asarray(model.values(params, hidden))  # [B, T] value of each state
  logits = np.asarray(model.logits(params, hidden)) / TEMP
  valid = np.asarray(mlp.prediction_mask(MASK))
  for b in range(2):
    for t in range(9):
      if valid[b, t]:
        np.testing.assert_allclose(out.values[b, t], v[b, t - 1], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(out.logits[b, t], logits[b, t - 1],
                                   rtol=1e-5, atol=1e-5)
      else:
        assert out.values[b, t] == 0 and not np.any(out.logits[b, t])


def test_logits_byte_budget_shortens_chunks(monkeypatch):
  """A chunk never holds more than LOGITS_CHUNK_BYTES of logits: with a
  budget of two time steps the scan has ceil((T-1)/2) chunks, same values."""
  model, params = _model()
  b, t = TOKENS.shape
  want_lp, want_ent = _reference(model, params)
  monkeypatch.setattr(mlp, "LOGITS_CHUNK_BYTES",
                      2 * 4 * b * model.config.vocab_size)
  fn = functools.partial(mlp.token_logprobs, model, temperature=TEMP,
                         with_entropy=True, chunk_size=128)
  jaxpr = str(jax.make_jaxpr(fn)(params, TOKENS, POS, input_mask=MASK))
  assert f"length={-(-(t - 1) // 2)}" in jaxpr
  lp, ent = jax.jit(fn)(params, TOKENS, POS, input_mask=MASK)
  np.testing.assert_allclose(np.asarray(lp), want_lp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ent), want_ent, atol=1e-5, rtol=1e-5)
