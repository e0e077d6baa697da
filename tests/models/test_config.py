"""ModelConfig presets, validation and parameter counts."""

import jax
import jax.numpy as jnp
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from tests.models import _util

# Published totals (Hugging Face model cards / safetensors metadata).
PUBLISHED = {
    "qwen2.5-0.5b": 494_032_768,
    "qwen3-0.6b": 596_049_920,
    "llama-3.2-1b": 1_235_814_400,
    "gemma-2-2b": 2_614_341_888,
    "gemma-3-1b": 999_885_952,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_presets_have_published_parameter_counts(name):
  cfg = mcfg.get_config(name)
  assert mcfg.num_params(cfg) == PUBLISHED[name]
  # The module built from the preset has exactly these shapes (no allocation).
  model = mmodel.build(cfg)
  assert mmodel.count_params(model.abstract_params()) == PUBLISHED[name]


def test_preset_features():
  assert mcfg.get_config("qwen2.5-0.5b").qkv_bias
  assert not mcfg.get_config("qwen2.5-0.5b").qk_norm
  assert mcfg.get_config("qwen3-0.6b").qk_norm
  assert mcfg.get_config("qwen3-0.6b").head_dim == 128
  assert mcfg.get_config("llama-3.2-1b").rope_theta == 500_000.0
  g2 = mcfg.get_config("gemma-2-2b")
  assert (g2.attn_logit_softcap, g2.final_logit_softcap) == (50.0, 30.0)
  assert g2.embed_scale and g2.norm_offset and g2.post_ffw_norm
  assert g2.hidden_act == "gelu_tanh" and g2.query_scale == 256 ** -0.5
  g3 = mcfg.get_config("gemma-3-1b")
  assert g3.qk_norm and g3.final_logit_softcap is None and g3.n_kv_heads == 1
  assert all(mcfg.get_config(n).tie_embeddings for n in PUBLISHED)


def test_tiny_and_small_sizes():
  tiny, small = mcfg.get_config("tiny"), mcfg.get_config("small")
  assert 0.5e6 <= mcfg.num_params(tiny) <= 2e6
  assert 5e6 <= mcfg.num_params(small) <= 15e6
  assert (tiny.d_model, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads,
          tiny.d_ff, tiny.vocab_size) == (128, 4, 4, 2, 384, 64)
  assert mcfg.describe(tiny).startswith("795.8K params")


@pytest.mark.parametrize("variant", sorted(_util.VARIANTS))
@pytest.mark.parametrize("value_head", [False, True])
def test_num_params_counts_the_built_module(variant, value_head):
  cfg = _util.micro_config(**_util.VARIANTS[variant], value_head=value_head)
  model = mmodel.build(cfg)
  assert mmodel.count_params(model.abstract_params()) == mcfg.num_params(cfg)


def test_num_params_hand_computed():
  cfg = mcfg.ModelConfig(vocab_size=10, d_model=4, n_layers=1, n_heads=2,
                         n_kv_heads=1, head_dim=2, d_ff=3, qkv_bias=True,
                         qk_norm=True, tie_embeddings=False, value_head=True)
  # attn: q 4*2*2 + k,v 2*4*1*2 + o 2*2*4 = 16+16+16 = 48; bias 4+2+2 = 8;
  # qk-norm 2+2; mlp 3*4*3 = 36; norms 2*4; embed 40; final norm 4;
  # lm_head 40; value head 4+1.
  assert mcfg.num_params(cfg) == 48 + 8 + 4 + 36 + 8 + 40 + 4 + 40 + 5


def test_overrides_and_hashing():
  a = mcfg.get_config("tiny", vocab_size=1000)
  b = mcfg.get_config("tiny", vocab_size=1000, dtype=jnp.float32)
  assert a.vocab_size == 1000 and a == b and hash(a) == hash(b)
  assert a.replace(n_layers=2).n_layers == 2
  assert mcfg.get_config("TINY") == mcfg.get_config("tiny")
  assert mcfg.get_config("tiny", dtype="bfloat16").compute_dtype == jnp.bfloat16


def test_typos_list_valid_names():
  with pytest.raises(ValueError, match="valid presets: .*'tiny'.*'gemma-3-1b'"):
    mcfg.get_config("tinyy")
  with pytest.raises(ValueError, match="n_layer.*valid fields: .*'n_layers'"):
    mcfg.get_config("tiny", n_layer=3)
  with pytest.raises(ValueError, match="valid fields"):
    mcfg.get_config("tiny").replace(qk_norms=True)


@pytest.mark.parametrize("overrides,field", [
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(head_dim=7), "head_dim"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(dtype="int32"), "dtype"),
    (dict(param_dtype="float99"), "param_dtype"),
    (dict(d_model=0), "d_model"),
    (dict(attn_logit_softcap=-1.0), "attn_logit_softcap"),
    (dict(rope_theta=0.0), "rope_theta"),
])
def test_invalid_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
    mcfg.get_config("tiny", **overrides)


def test_config_is_usable_as_static_jit_argument():
  cfg = mcfg.get_config("tiny")
  f = jax.jit(lambda c, x: x * c.d_model, static_argnums=0)
  assert int(f(cfg, jnp.int32(2))) == 256
