"""Building blocks: RMSNorm, RoPE, grouped-query attention, param metadata."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsi.models import layers
from tests.models import _util


def test_rmsnorm_hand_computed():
  norm = layers.RMSNorm(2, eps=0.0)
  norm.scale[...] = jnp.array([1.0, 2.0])
  x = jnp.array([[3.0, 4.0]])
  r = math.sqrt((9 + 16) / 2)
  np.testing.assert_allclose(np.asarray(norm(x)), [[3 / r, 8 / r]], rtol=1e-6)
  gemma = layers.RMSNorm(2, eps=0.0, offset=True)  # scale 1 + w, w = 0
  np.testing.assert_allclose(np.asarray(gemma(x)), [[3 / r, 4 / r]], rtol=1e-6)
  assert np.asarray(gemma.scale[...]).tolist() == [0.0, 0.0]


def test_rope_hand_computed():
  # Dh = 4, theta = 100: inverse frequencies [1, 0.1]; position 2: angles [2, .2].
  x = jnp.array([1.0, 0.0, 0.0, 0.0])[None, None, None]
  got = np.asarray(layers.apply_rope(x, jnp.array([[2]]), theta=100.0))[0, 0, 0]
  np.testing.assert_allclose(got, [math.cos(2), 0, math.sin(2), 0], atol=1e-6)
  x = jnp.array([0.0, 1.0, 0.0, 1.0])[None, None, None]
  got = np.asarray(layers.apply_rope(x, jnp.array([[2]]), theta=100.0))[0, 0, 0]
  c, s = math.cos(0.2), math.sin(0.2)
  np.testing.assert_allclose(got, [0, c - s, 0, c + s], atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 1, 1, 8)), jnp.float32)
  rot = lambda x, p: layers.apply_rope(x, jnp.array([[p]]), theta=10_000.0)
  dot = lambda a, b: float(jnp.sum(rot(q, a) * rot(k, b)))
  assert dot(7, 3) == pytest.approx(dot(104, 100), abs=1e-4)
  assert dot(0, 0) == pytest.approx(float(jnp.sum(q * k)), abs=1e-5)
  assert abs(dot(7, 3) - dot(7, 5)) > 1e-3


def test_rope_linear_scaling_divides_positions():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 1, 2, 8)),
                  jnp.float32)
  scaled = layers.apply_rope(x, jnp.array([[6]]), theta=1e4,
                             scaling=("linear", 3.0))
  plain = layers.apply_rope(x, jnp.array([[2]]), theta=1e4)
  np.testing.assert_allclose(np.asarray(scaled), np.asarray(plain), atol=1e-5)


def test_llama3_rope_scaling_matches_meta_reference():
  """Meta's `apply_scaling` loop (llama/model.py), transcribed."""
  dh, theta, factor, low, high, old_len = 64, 500_000.0, 32.0, 1.0, 4.0, 8192
  freqs = 1.0 / (theta ** (np.arange(0, dh, 2)[: dh // 2] / dh))
  want = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < old_len / high:
      want.append(freq)
    elif wavelen > old_len / low:
      want.append(freq / factor)
    else:
      smooth = (old_len / wavelen - low) / (high - low)
      want.append((1 - smooth) * freq / factor + smooth * freq)
  got = layers.rope_frequencies(dh, theta, ("llama3", factor, low, high, old_len))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  kinds = (np.isclose(got, freqs), np.isclose(got, freqs / factor))
  assert kinds[0].any() and kinds[1].any() and (~kinds[0] & ~kinds[1]).any()


def _np_attention(q, k, v, mask, softcap=None):
  g = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, g, 2), np.repeat(v, g, 2)
  s = np.einsum("bthd,bshd->bhts", q, k)
  if softcap:
    s = softcap * np.tanh(s / softcap)
  s = np.where(mask[:, None], s, -np.inf)
  m = np.max(np.where(mask[:, None], s, -1e30), -1, keepdims=True)
  e = np.where(mask[:, None], np.exp(s - m), 0)
  p = e / np.maximum(e.sum(-1, keepdims=True), 1e-30)
  return np.einsum("bhts,bshd->bthd", p, v)


@pytest.mark.parametrize("heads_first", [False, True])
@pytest.mark.parametrize("softcap", [None, 1.5])
def test_gqa_attention_matches_reference(softcap, heads_first):
  rng = np.random.default_rng(1)
  q = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
  k = rng.standard_normal((2, 6, 2, 5)).astype(np.float32)
  v = rng.standard_normal((2, 6, 2, 5)).astype(np.float32)
  mask = rng.random((2, 3, 6)) < 0.6
  mask[0, 1] = False  # a fully masked query row
  mask[1, :, 0] = True
  got = jax.jit(layers.dot_product_attention,
                static_argnames=("softcap", "heads_first"))(
      q, k, v, mask, softcap=softcap, heads_first=heads_first)
  got = np.asarray(got)
  np.testing.assert_allclose(got, _np_attention(q, k, v, mask, softcap),
                             atol=1e-5, rtol=1e-5)
  assert np.all(got[0, 1] == 0)  # no NaN, zero output


def test_every_param_has_logical_axes_and_init_metadata():
  names = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm", None}
  cfg = _util.micro_config(**_util.VARIANTS["qwen2"], qk_norm=True,
                           value_head=True)
  from jaxsi.models import decoder
  with layers.shape_only():
    module = nnx.eval_shape(lambda: decoder.Decoder(cfg, rngs=nnx.Rngs(0)))
  count = 0
  for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
    meta = var.get_metadata()
    axes = meta["out_sharding"]
    assert len(axes) == len(var.get_value().shape), path
    assert set(axes) <= names, path
    assert meta["init"] in ("normal", "zeros", "ones"), path
    count += 1
  assert count == len(jax.tree.leaves(_util.micro_model("qwen2")[1])) + 2 + 2 * 2


def test_param_rejects_bad_axes():
  with pytest.raises(ValueError, match="axes"):
    layers.param(None, (2, 3), ("embed",), init="zeros")
  with pytest.raises(ValueError, match="init"):
    layers.param(None, (2,), ("embed",), init="uniform")


def test_matmul_last_equals_the_einsum_of_the_spec():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)  # [B, T, H, Dh]
  w = rng.standard_normal((4, 5, 6)).astype(np.float32)  # o_proj [H, Dh, D]
  got = np.asarray(layers.matmul_last(jnp.asarray(x), jnp.asarray(w), 2))
  np.testing.assert_allclose(got, np.einsum("bthk,hkd->btd", x, w), rtol=1e-5, atol=1e-5)
  # Hand-computed: [[1, 2]] @ [[1, 0, 2], [3, 1, 0]] = [[7, 2, 2]].
  one = layers.matmul_last(jnp.asarray([[1.0, 2.0]]),
                           jnp.asarray([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]]), 1)
  np.testing.assert_array_equal(np.asarray(one), [[7.0, 2.0, 2.0]])
  assert layers._spec_n_in("btd,dhk->bthk") == 1
  assert layers._spec_n_in("bthk,hkd->btd") == 2
  assert layers._spec_n_in("...d,dv->...v") == 1
  assert layers._spec_n_in("btd,vd->btv") is None  # falls back to einsum
  with pytest.raises(ValueError, match="does not end in kernel input axes"):
    layers.matmul_last(jnp.zeros((2, 3)), jnp.zeros((4, 5)), 1)
