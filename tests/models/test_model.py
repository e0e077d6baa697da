"""The functional boundary: init, Model (static, hashable), logical axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from tests.models import _util

AXIS_NAMES = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm",
              "layers", None}


@pytest.fixture(scope="module")
def tiny():
  return mmodel.init(mcfg.get_config("tiny"), jax.random.key(0))


def test_init_returns_static_model_and_plain_params(tiny):
  model, params = tiny
  assert isinstance(params, dict) and set(params) == {"embedder", "layers",
                                                      "final_norm"}
  assert sorted(params["layers"]) == [0, 1, 2, 3]
  assert mmodel.count_params(params) == mcfg.num_params(model.config) == 795_776
  assert model == mmodel.build(mcfg.get_config("tiny"))
  assert hash(model) == hash(mmodel.build(mcfg.get_config("tiny")))
  assert model != mmodel.build(mcfg.get_config("tiny", qk_norm=True))
  assert model.num_params == 795_776


def test_init_distributions(tiny):
  model, params = tiny
  layer = params["layers"][1]
  np.testing.assert_array_equal(np.asarray(layer["input_norm"]["scale"]), 1.0)
  q = np.asarray(layer["attn"]["q_proj"]["kernel"])
  assert q.std() == pytest.approx(128 ** -0.5, rel=0.05)
  down = np.asarray(layer["mlp"]["down_proj"]["kernel"])
  assert down.std() == pytest.approx(384 ** -0.5 / np.sqrt(8), rel=0.05)
  emb = np.asarray(params["embedder"]["embedding"])
  assert emb.std() == pytest.approx(128 ** -0.5, rel=0.05)
  assert abs(np.corrcoef(q.ravel()[:1000],
                         np.asarray(params["layers"][0]["attn"]["q_proj"]
                                    ["kernel"]).ravel()[:1000])[0, 1]) < 0.2


def test_init_is_deterministic_per_key():
  model = mmodel.build(_util.micro_config(norm_offset=True, qkv_bias=True))
  a = model.init_params(jax.random.key(3))
  b = model.init_params(jax.random.key(3))
  c = model.init_params(jax.random.key(4))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(np.asarray(a["embedder"]["embedding"]),
                            np.asarray(c["embedder"]["embedding"]))
  # Gemma-style norms start at w = 0 (scale 1 + w); biases start at 0.
  np.testing.assert_array_equal(np.asarray(a["final_norm"]["scale"]), 0.0)
  np.testing.assert_array_equal(
      np.asarray(a["layers"][0]["attn"]["k_proj"]["bias"]), 0.0)


def test_abstract_params_match_params(tiny):
  model, params = tiny
  abstract = model.abstract_params()
  assert jax.tree.structure(abstract) == jax.tree.structure(params)
  for a, p in zip(jax.tree.leaves(abstract), jax.tree.leaves(params)):
    assert (a.shape, a.dtype) == (p.shape, p.dtype)


@pytest.mark.parametrize("variant", sorted(_util.VARIANTS))
def test_logical_axes_cover_every_param_with_matching_rank(variant):
  model, params = _util.micro_model(variant, value_head=True)
  axes = model.logical_axes()
  is_axes = lambda x: isinstance(x, tuple)
  assert (jax.tree.structure(axes, is_leaf=is_axes)
          == jax.tree.structure(params))
  flat_axes = jax.tree.leaves(axes, is_leaf=is_axes)
  for ax, p in zip(flat_axes, jax.tree.leaves(params)):
    assert len(ax) == p.ndim and set(ax) <= AXIS_NAMES
  specs = model.logical_specs()
  assert all(isinstance(s, jax.sharding.PartitionSpec)
             for s in jax.tree.leaves(specs))
  attn = axes["layers"][0]["attn"]
  assert axes["embedder"]["embedding"] == ("vocab", "embed")
  assert attn["q_proj"]["kernel"] == ("embed", "heads", "head_dim")
  assert attn["k_proj"]["kernel"] == ("embed", "kv_heads", "head_dim")
  assert attn["o_proj"]["kernel"] == ("heads", "head_dim", "embed")
  assert axes["layers"][1]["mlp"]["down_proj"]["kernel"] == ("mlp", "embed")
  assert axes["final_norm"]["scale"] == ("norm",)


def test_params_shard_from_logical_axes():
  """Logical names → mesh axes → NamedSharding → jitted init (8 devices)."""
  if jax.device_count() < 4:
    pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
  model = mmodel.build(_util.micro_config(vocab_size=64))
  mesh = jax.make_mesh((2, 2), ("fsdp", "tensor"))
  rules = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor",
           "kv_heads": "tensor", "vocab": "tensor"}
  shardings = jax.tree.map(
      lambda axes: jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(*[rules.get(a) for a in axes])),
      model.logical_axes(), is_leaf=lambda x: isinstance(x, tuple))
  params = jax.jit(model.init_params, out_shardings=shardings)(
      jax.random.key(0))
  q = params["layers"][0]["attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  assert len(q.addressable_shards) == 4


def test_bfloat16_model_runs_with_f32_logits():
  model32, params32 = _util.micro_model("qwen3")
  model16 = mmodel.build(model32.config.replace(dtype="bfloat16",
                                                param_dtype="bfloat16"))
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params32)
  assert all(x.dtype == jnp.bfloat16
             for x in jax.tree.leaves(model16.abstract_params()))
  tokens = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9]] * 2, np.int32)
  pos = np.broadcast_to(np.arange(9, dtype=np.int32), (2, 9))
  out16, _ = _util.jitted_apply(model16)(params16, tokens, pos)
  out32, _ = _util.jitted_apply(model32)(params32, tokens, pos)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out16), np.asarray(out32), atol=0.15)


def test_values_require_value_head():
  model, params = _util.micro_model("qwen2")
  with pytest.raises(ValueError, match="value_head"):
    model.values(params, jnp.zeros((1, 2, 32)))
  with pytest.raises(TypeError, match="ModelConfig"):
    mmodel.build({"vocab_size": 3})
