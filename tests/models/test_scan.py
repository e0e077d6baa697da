"""ModelConfig.scan_layers: stacked blocks under lax.scan equal the layer list."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import partitioning
from jaxsi.models import hf
from jaxsi.models import lora
from jaxsi.models import model as mmodel
from tests.models import _util


def _pair(**overrides):
  c0 = _util.micro_config(n_layers=3, **overrides)
  return c0, c0.replace(scan_layers=True)


def _inputs():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 37, (2, 7)), jnp.int32)
  mask = jnp.asarray([[False, False] + [True] * 5, [True] * 7])
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  return tokens, positions, mask


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("variant", ["qwen2", "qwen3"])
def test_scanned_init_logits_grads_and_cache_equal_the_layer_list(variant):
  c0, c1 = _pair(**_util.VARIANTS[variant], remat=True)
  m0, p0 = mmodel.init(c0, jax.random.key(3))
  m1, p1 = mmodel.init(c1, jax.random.key(3))
  # Same init values, bit for bit: each layer drawn as unscanned, then stacked.
  stacked = mmodel.stack_layers(p0)
  assert jax.tree.structure(stacked) == jax.tree.structure(p1)
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(stacked), jax.tree.leaves(p1)))
  assert p1["layers"]["attn"]["q_proj"]["kernel"].shape == (3, 32, 4, 8)
  tokens, positions, mask = _inputs()

  def loss(model, p):
    logits, _ = model.apply(p, tokens, positions, input_mask=mask)
    return jnp.sum(jnp.where(mask[..., None], jnp.tanh(logits), 0.0))

  def run(model, p):
    val, grads = jax.value_and_grad(lambda p: loss(model, p))(p)
    cache = model.init_cache(2, 9)
    logits, cache = model.apply(p, tokens, positions, input_mask=mask, cache=cache)
    step, cache = model.apply(p, tokens[:, -1:], positions[:, -1:] + 1, cache=cache)
    return val, grads, logits, step, cache.k

  out0 = jax.jit(lambda p: run(m0, p))(p0)
  out1 = jax.jit(lambda p: run(m1, p))(p1)
  assert abs(float(out0[0]) - float(out1[0])) <= 1e-6 * abs(float(out0[0]))
  assert _max_diff(mmodel.stack_layers(out0[1]), out1[1]) <= 1e-6
  for a, b in zip(out0[2:], out1[2:]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_logical_axes_gain_a_leading_layers_axis_and_layouts_convert():
  c0, c1 = _pair()
  m0, m1 = mmodel.build(c0), mmodel.build(c1)
  axes0, axes1 = m0.logical_axes(), m1.logical_axes()
  assert axes1["layers"]["mlp"]["down_proj"]["kernel"] == ("layers", "mlp", "embed")
  assert axes1["embedder"] == axes0["embedder"]
  shapes = m1.abstract_params()
  assert shapes["layers"]["input_norm"]["scale"].shape == (3, 32)
  p0 = _util.random_params(m0)
  back = mmodel.unstack_layers(mmodel.stack_layers(p0))
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(back), jax.tree.leaves(p0)))
  # String layer keys (an Orbax restore without a target) stack too.
  as_str = dict(p0, layers={str(k): v for k, v in p0["layers"].items()})
  assert mmodel.is_stacked(mmodel.stack_layers(as_str))
  tokens, positions, _ = _inputs()
  with pytest.raises(ValueError, match=r"scan_layers=True.*stack_layers"):
    m1.apply(p0, tokens, positions)
  with pytest.raises(ValueError, match=r"scan_layers=False.*unstack_layers"):
    m0.apply(mmodel.stack_layers(p0), tokens, positions)


def test_scan_layers_refuses_sliding_window_layers():
  with pytest.raises(ValueError, match="scan_layers needs identical layers"):
    _util.micro_config(**_util.VARIANTS["gemma2"], scan_layers=True)


def test_scanned_lora_matches_unscanned_and_exports():
  c0, c1 = _pair(qkv_bias=True)
  cfg = lora.LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "up_proj"))
  l0, l1 = lora.build(c0, cfg), lora.build(c1, cfg)
  a0 = l0.init_adapters(jax.random.key(1))
  a1 = l1.init_adapters(jax.random.key(1))
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(mmodel.stack_layers(a0)), jax.tree.leaves(a1)))
  assert l1.logical_axes()["layers"]["attn"]["q_proj"]["lora_b"] == (
      "layers", None, "heads", "head_dim")
  base = _util.random_params(mmodel.build(c0))
  p0 = lora.add_adapters(base, jax.tree.map(lambda x: x + 0.05, a0))
  p1 = mmodel.stack_layers(p0)
  tokens, positions, _ = _inputs()
  y0, _ = jax.jit(l0.apply)(p0, tokens, positions)
  y1, _ = jax.jit(l1.apply)(p1, tokens, positions)
  np.testing.assert_allclose(np.asarray(y0), np.asarray(y1), atol=1e-5, rtol=0)
  _, merged0 = lora.merge(l0, p0)
  _, merged1 = lora.merge(l1, p1)
  assert _max_diff(mmodel.stack_layers(merged0), merged1) <= 1e-6
  with pytest.raises(ValueError, match="adapts every layer"):
    lora.build(c1, lora.LoraConfig(rank=2, layers=(0, 2)))


def test_scanned_hf_save_and_sharded_load_roundtrip(tmp_path):
  _, c1 = _pair(**_util.VARIANTS["qwen2"])
  m1 = mmodel.build(c1)
  p1 = mmodel.stack_layers(_util.random_params(mmodel.build(c1.replace(scan_layers=False))))
  hf.save_pretrained(str(tmp_path), c1, p1)
  tensors = hf.params_to_hf(c1, p1)
  assert tensors["model.layers.2.self_attn.q_proj.weight"].shape == (32, 32)
  mesh = partitioning.make_mesh(data=1, fsdp=4, tensor=2)
  model, loaded = hf.load_pretrained(str(tmp_path), mesh=mesh, scan_layers=True,
                                     tie_embeddings=False)
  assert model.config.scan_layers
  kernel = loaded["layers"]["mlp"]["up_proj"]["kernel"]
  assert kernel.shape == (3, 32, 48)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert _max_diff(loaded, p1) == 0.0
  assert _max_diff(hf.params_from_hf(c1, tensors), p1) == 0.0
