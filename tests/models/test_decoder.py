"""Decoder forward pass: reference numerics, padding, packing, KV cache."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import decoder
from jaxsi.models import model as mmodel
from tests.models import _util

ATOL = 2e-4


def _full_logits(model, params, tokens, mask, pos, segment_ids=None):
  out, cache = _util.jitted_apply(model)(params, tokens, pos, mask, segment_ids)
  assert cache is None
  return np.asarray(out)


def test_attention_mask_hand_computed():
  input_mask = jnp.array([[False, True, True, True]])
  seg = jnp.array([[0, 1, 1, 2]])
  got = np.asarray(decoder.attention_mask(input_mask, seg))[0]
  want = np.array([[0, 0, 0, 0],
                   [0, 1, 0, 0],
                   [0, 1, 1, 0],
                   [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(got, want)
  got = np.asarray(decoder.attention_mask(input_mask))[0]
  want[3] = [0, 1, 1, 1]
  np.testing.assert_array_equal(got, want)


def test_sliding_window_masks_hand_computed():
  input_mask = jnp.array([[False, True, True, True, True]])
  got = np.asarray(decoder.attention_mask(input_mask, window=2))[0]
  want = np.array([[0, 0, 0, 0, 0],
                   [0, 1, 0, 0, 0],
                   [0, 1, 1, 0, 0],
                   [0, 0, 1, 1, 0],
                   [0, 0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(got, want)
  slot_mask = jnp.array([[True, True, True, True, False]])
  got = np.asarray(decoder.cached_attention_mask(slot_mask, jnp.int32(2), 2,
                                                 window=3))[0]
  np.testing.assert_array_equal(got, [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0]])


def test_cached_attention_mask_hand_computed():
  slot_mask = jnp.array([[False, True, True, True, False]])
  got = np.asarray(decoder.cached_attention_mask(slot_mask, jnp.int32(2), 2))[0]
  want = np.array([[0, 1, 1, 0, 0],
                   [0, 1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(got, want)


# Two left-padded prompts of different lengths + 4 teacher-forced new tokens.
PROMPTS = [[3, 1, 4, 1, 5], [2, 7, 1]]
CONT = np.array([[9, 2, 6, 5], [3, 5, 8, 9]], np.int32)


def _sequence():
  p_tokens, p_mask, p_pos = _util.left_padded(PROMPTS)
  tokens = np.concatenate([p_tokens, CONT], 1)
  mask = np.concatenate([p_mask, np.ones(CONT.shape, bool)], 1)
  lengths = np.array([len(r) for r in PROMPTS])
  pos = np.concatenate(
      [p_pos, (lengths[:, None] + np.arange(CONT.shape[1])).astype(np.int32)], 1)
  return tokens, mask, pos, p_tokens.shape[1]


@pytest.mark.parametrize("variant", sorted(_util.VARIANTS))
def test_full_and_cached_forward_match_reference(variant):
  """Full pass == NumPy reference; prefill + 1-token decode == full pass."""
  model, params = _util.micro_model(variant)
  apply = _util.jitted_apply(model)
  tokens, mask, pos, p = _sequence()
  m = np.asarray(mask)
  full = _full_logits(model, params, tokens, mask, pos)
  want = _util.reference_forward(model.config, params, tokens, pos,
                                 _util.causal_mask(mask))
  np.testing.assert_allclose(full[m], want[m], atol=ATOL, rtol=1e-4)
  assert np.all(np.isfinite(full))  # padding queries: finite, not NaN

  cache = model.init_cache(2, 12)
  out, cache = apply(params, tokens[:, :p], pos[:, :p], mask[:, :p], None, cache)
  assert int(cache.index) == p
  steps = [np.asarray(out)]
  for t in range(p, tokens.shape[1]):
    out, cache = apply(params, tokens[:, t:t + 1], pos[:, t:t + 1],
                       mask[:, t:t + 1], None, cache)
    steps.append(np.asarray(out))
  cached = np.concatenate(steps, axis=1)
  np.testing.assert_allclose(cached[m], full[m], atol=ATOL, rtol=1e-4)
  assert int(cache.index) == tokens.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.mask)[:, :tokens.shape[1]], m)
  assert not np.asarray(cache.mask)[:, tokens.shape[1]:].any()


def test_chunked_prefill_equals_full_forward():
  model, params = _util.micro_model("qwen2")
  apply = _util.jitted_apply(model)
  tokens, mask, pos, p = _sequence()
  full = _full_logits(model, params, tokens, mask, pos)
  cache = model.init_cache(2, 12)
  outs = []
  for sl in (slice(0, 4), slice(4, 8)):  # 4 + 4 + the decode-shaped last one
    out, cache = apply(params, tokens[:, sl], pos[:, sl], mask[:, sl], None,
                       cache)
    outs.append(np.asarray(out))
  out, cache = apply(params, tokens[:, 8:], pos[:, 8:], mask[:, 8:], None, cache)
  outs.append(np.asarray(out))
  m = np.asarray(mask)
  np.testing.assert_allclose(np.concatenate(outs, 1)[m], full[m], atol=ATOL,
                             rtol=1e-4)


def test_jit_equals_no_jit():
  model, params = _util.micro_model("qwen2")
  tokens, mask, pos, _ = _sequence()
  jitted = _full_logits(model, params, tokens, mask, pos)
  eager, _ = model.apply(params, tokens, pos, mask)
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(eager)[m], jitted[m], atol=1e-5,
                             rtol=1e-5)


def test_hidden_then_logits_equals_logits():
  model, params = _util.micro_model("qwen2")
  tokens, mask, pos, _ = _sequence()
  apply = _util.jitted_apply(model)
  hidden, _ = apply(params, tokens, pos, mask, return_hidden=True)
  assert hidden.shape == (2, 9, model.config.d_model)
  logits = jax.jit(model.logits)(params, hidden)
  np.testing.assert_allclose(
      np.asarray(logits), _full_logits(model, params, tokens, mask, pos),
      atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_real_logits():
  """The same sequence left-padded (row 0) and right-padded (row 1)."""
  model, params = _util.micro_model("qwen2")
  seq = [3, 4, 5, 6, 7, 8]
  tokens = np.asarray([[0, 0, 0] + seq, seq + [0, 0, 0]], np.int32)
  mask = tokens > 0
  pos = np.asarray([[0, 0, 0, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 0, 0, 0]],
                   np.int32)
  out = _full_logits(model, params, tokens, mask, pos)
  np.testing.assert_allclose(out[0, 3:], out[1, :6], atol=1e-5, rtol=1e-5)


def test_segment_packing_equals_separate_sequences():
  """a|b packed in row 0, b|a in row 1: each segment equals its lone pass."""
  model, params = _util.micro_model("qwen2")
  a, b = [5, 6, 7, 8], [9, 10, 11]
  tokens = np.asarray([a + b + [0, 0], b + a + [0, 0]], np.int32)
  seg = np.asarray([[1] * 4 + [2] * 3 + [0, 0], [1] * 3 + [2] * 4 + [0, 0]],
                   np.int32)
  pos = np.asarray([[0, 1, 2, 3, 0, 1, 2, 0, 0], [0, 1, 2, 0, 1, 2, 3, 0, 0]],
                   np.int32)
  mask = seg > 0
  packed = _full_logits(model, params, tokens, mask, pos, seg)
  np.testing.assert_allclose(packed[0, :4], packed[1, 3:7], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(packed[0, 4:7], packed[1, :3], atol=1e-5, rtol=1e-5)
  for seq, got in ((a, packed[0, :4]), (b, packed[0, 4:7])):
    n = len(seq)
    want = _util.reference_forward(
        model.config, params, np.array([seq]), np.arange(n)[None],
        _util.causal_mask(np.ones((1, n), bool)))[0]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


def test_cache_contents_are_rotated_keys_at_their_slots():
  model, params = _util.micro_model("qwen2")
  tokens, mask, pos = _util.left_padded([[4, 5, 6], [7, 8]])
  cache = model.init_cache(2, 6)
  cache = cache.replace(index=np.int32(1))  # write at slots 1..3
  _, new = _util.jitted_apply(model)(params, tokens, pos, mask, None, cache)
  assert int(new.index) == 4
  assert new.k.shape == (2, 2, 6, 2, 8)
  k = np.asarray(new.k)
  assert np.all(k[:, :, 0] == 0) and np.all(k[:, :, 4:] == 0)
  assert np.any(k[:, :, 1:4] != 0)
  np.testing.assert_array_equal(
      np.asarray(new.mask),
      [[False, True, True, True, False, False],
       [False, False, True, True, False, False]])


def test_bad_inputs_name_the_field():
  model, params = _util.micro_model("qwen2")
  tokens = jnp.zeros((2, 4), jnp.int32)
  with pytest.raises(ValueError, match="positions"):
    model.apply(params, tokens, jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="input_mask"):
    model.apply(params, tokens, jnp.zeros((2, 4), jnp.int32),
                input_mask=jnp.ones((2, 5), bool))
  with pytest.raises(ValueError, match="segment_ids"):
    model.apply(params, tokens, jnp.zeros((2, 4), jnp.int32),
                segment_ids=jnp.ones((2, 4), jnp.int32),
                cache=model.init_cache(2, 8))
  with pytest.raises(ValueError, match="cache"):
    model.apply(params, tokens, jnp.zeros((2, 4), jnp.int32),
                cache=model.init_cache(3, 8))


def test_remat_same_values_and_gradients_less_saved_memory():
  """ModelConfig.remat: identical loss and gradients; the backward pass
  keeps only block inputs, so the jitted gradient needs less temp memory."""
  base = mcfg.get_config("tiny", vocab_size=32, d_model=32, n_layers=3,
                         n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  cfg_r = dataclasses.replace(base, remat=True)
  model, params = mmodel.init(base, jax.random.key(0))
  model_r = mmodel.build(cfg_r)
  tokens = jax.random.randint(jax.random.key(1), (4, 64), 0, 32)
  positions = jnp.broadcast_to(jnp.arange(64), (4, 64))

  def loss(m):
    def f(p):
      return jnp.mean(m.apply(p, tokens, positions)[0] ** 2)
    return jax.jit(jax.value_and_grad(f))

  (v, g), (v_r, g_r) = loss(model)(params), loss(model_r)(params)
  np.testing.assert_allclose(float(v), float(v_r), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_r)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-7)
  temp = [loss(m).lower(params).compile().memory_analysis().temp_size_in_bytes
          for m in (model, model_r)]
  assert temp[1] < temp[0], temp
