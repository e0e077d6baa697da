"""Logit parity with Hugging Face transformers (torch, CPU) and checkpoint I/O.

Every test builds a tiny random transformers model from a config object (no
hub access: HF_HUB_OFFLINE=1), saves it with ``save_pretrained`` into
``tmp_path`` and loads it with ``jaxsi.models.hf``.

Tolerance: float32 logits agree to ``atol = rtol = 1e-4`` (observed ~2e-7;
logits are O(1..10) because the test initialises with std 0.2 and perturbs
every norm weight and bias away from its default).
"""

import json
import os

import jax
import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
from jaxsi.models import loading  # pylint: disable=g-import-not-at-top
from jaxsi import partitioning  # pylint: disable=g-import-not-at-top
from tests.models import _util  # pylint: disable=g-import-not-at-top

ATOL = RTOL = 1e-4
VOCAB = 101
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
               num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128,
               initializer_range=0.2)


def _hf_config(arch):
  t = transformers
  if arch == "llama":  # Llama 3.x: llama3 RoPE scaling, untied head
    return t.LlamaConfig(
        **_COMMON, head_dim=8, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8},
        tie_word_embeddings=False)
  if arch == "qwen2":  # Qwen2/2.5: qkv bias, tied
    return t.Qwen2Config(**_COMMON, rope_theta=1e6, tie_word_embeddings=True)
  if arch == "qwen3":  # Qwen3: QK-norm, head_dim != hidden / heads
    return t.Qwen3Config(**_COMMON, head_dim=16, rope_theta=1e6,
                         tie_word_embeddings=True)
  if arch == "gemma2":  # softcaps, sandwich norms, local/global alternation
    return t.Gemma2Config(**_COMMON, head_dim=16, query_pre_attn_scalar=12,
                          sliding_window=4, attn_logit_softcapping=5.0,
                          final_logit_softcapping=3.0)
  if arch == "gemma3":  # QK-norm, local RoPE base, local/global pattern
    return t.Gemma3TextConfig(
        **_COMMON, head_dim=16, query_pre_attn_scalar=16, sliding_window=3,
        layer_types=["sliding_attention", "full_attention"],
        rope_local_base_freq=100.0, rope_theta=1e6)
  raise ValueError(arch)


ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")


def _hf_model(arch, seed=0):
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(_hf_config(arch))
  model.eval()
  with torch.no_grad():  # norm weights / biases away from their 1 / 0 init
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.add_(0.3 * torch.randn_like(p))
  return model


def _batch():
  """Two left-padded rows (lengths 11 and 7): tokens, mask, positions."""
  rng = np.random.default_rng(0)
  rows = [list(rng.integers(1, VOCAB, 11)), list(rng.integers(1, VOCAB, 7))]
  return _util.left_padded(rows)


def _hf_logits(model, tokens, mask, pos):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(pos, dtype=torch.long))
  return out.logits.float().numpy()


def _jaxsi_logits(model, params, tokens, mask, pos):
  logits, _ = _util.jitted_apply(model)(params, tokens, pos, mask)
  return np.asarray(logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, tmp_path):
  ref_model = _hf_model(arch)
  ref_model.save_pretrained(tmp_path)
  model, params = hf.load_pretrained(str(tmp_path))
  assert model.config.dtype == "float32"
  tokens, mask, pos = _batch()
  want = _hf_logits(ref_model, tokens, mask, pos)
  got = _jaxsi_logits(model, params, tokens, mask, pos)
  assert np.abs(want[mask]).max() > 1.0  # the comparison is not trivially 0
  np.testing.assert_allclose(got[mask], want[mask], atol=ATOL, rtol=RTOL)


def test_gemma3_config_really_has_local_and_global_layers(tmp_path):
  _hf_model("gemma3").save_pretrained(tmp_path)
  c = hf.config_from_hf(hf.read_hf_config(str(tmp_path)))
  assert [c.is_local_layer(i) for i in range(2)] == [True, False]
  assert (c.sliding_window, c.rope_local_theta, c.rope_theta) == (3, 100.0, 1e6)


def test_sharded_index_loads_onto_mesh_and_saves_back(tmp_path):
  """HF sharded index -> jaxsi params placed on a 2x2x2 mesh -> HF shards
  written by jaxsi -> transformers.from_pretrained gives the same logits."""
  ref_model = _hf_model("qwen2", seed=1)
  src = tmp_path / "src"
  ref_model.save_pretrained(src, max_shard_size="20KB")
  assert (src / loading.INDEX_FILE).exists()
  assert len(loading.SafetensorsCheckpoint(str(src)).files) > 1

  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  model, params = hf.load_pretrained(str(src), mesh=mesh)
  want_sh = partitioning.param_shardings(model, mesh=mesh)
  emb = params["embedder"]["embedding"]
  assert emb.sharding == want_sh["embedder"]["embedding"]
  assert emb.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
  assert len(emb.addressable_shards) == 8
  q = params["layers"][0]["attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)

  tokens, mask, pos = _batch()
  want = _hf_logits(ref_model, tokens, mask, pos)
  host_params = jax.device_get(params)
  got = _jaxsi_logits(model, host_params, tokens, mask, pos)
  np.testing.assert_allclose(got[mask], want[mask], atol=ATOL, rtol=RTOL)

  dst = tmp_path / "dst"
  files = hf.save_pretrained(str(dst), model.config, params,
                             max_shard_bytes=30_000)
  assert len(files) > 1 and (dst / loading.INDEX_FILE).exists()
  index = json.loads((dst / loading.INDEX_FILE).read_text())
  assert set(index["weight_map"].values()) == set(files)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(dst)
  ref_state = ref_model.state_dict()
  for name, tensor in reloaded.state_dict().items():
    np.testing.assert_array_equal(tensor.numpy(), ref_state[name].numpy(),
                                  err_msg=name)
  np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask, pos), want,
                             atol=1e-6, rtol=1e-6)
  # Saving again as one file removes the stale shards and the index.
  assert hf.save_pretrained(str(dst), model.config, host_params) == [
      loading.SINGLE_FILE]
  assert sorted(os.listdir(dst)) == ["config.json", loading.SINGLE_FILE]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_generated_hf_config_round_trips_through_transformers(arch, tmp_path):
  """hf_config_from_config writes a config.json transformers builds the same
  architecture from: saving jaxsi params without a given hf_config and
  loading them in transformers reproduces the jaxsi logits."""
  ref_model = _hf_model(arch, seed=2)
  ref_model.save_pretrained(tmp_path / "a")
  model, params = hf.load_pretrained(str(tmp_path / "a"))
  hf.save_pretrained(str(tmp_path / "b"), model.config, params)
  written = json.loads((tmp_path / "b" / "config.json").read_text())
  assert hf.config_from_hf(written) == model.config
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b")
  tokens, mask, pos = _batch()
  np.testing.assert_allclose(
      _hf_logits(reloaded, tokens, mask, pos)[mask],
      _hf_logits(ref_model, tokens, mask, pos)[mask], atol=1e-5, rtol=1e-5)


def test_bfloat16_checkpoint_loads_bit_exact(tmp_path):
  ref_model = _hf_model("qwen3", seed=3).to(torch.bfloat16)
  ref_model.save_pretrained(tmp_path)
  ckpt = loading.SafetensorsCheckpoint(str(tmp_path))
  name = "model.layers.1.mlp.down_proj.weight"
  assert ckpt.dtype(name).name == "bfloat16"
  model, params = hf.load_pretrained(str(tmp_path))
  assert model.config.param_dtype == "bfloat16"
  got = np.asarray(params["layers"][1]["mlp"]["down_proj"]["kernel"],
                   np.float32)
  want = ref_model.state_dict()[name].float().numpy().T
  np.testing.assert_array_equal(got, want)
  # Loading with float32 params upcasts exactly.
  _, p32 = hf.load_pretrained(str(tmp_path), param_dtype="float32",
                              dtype="float32")
  np.testing.assert_array_equal(
      np.asarray(p32["layers"][1]["mlp"]["down_proj"]["kernel"]), want)


def test_missing_checkpoint_says_what_to_put_where(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.load_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(
      json.dumps(_hf_config("qwen2").to_dict()))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf.load_pretrained(str(tmp_path))


def test_missing_shard_is_named(tmp_path):
  _hf_model("qwen2").save_pretrained(tmp_path, max_shard_size="20KB")
  index = json.loads((tmp_path / loading.INDEX_FILE).read_text())
  victim = sorted(set(index["weight_map"].values()))[-1]
  os.remove(tmp_path / victim)
  with pytest.raises(FileNotFoundError, match=victim):
    hf.load_pretrained(str(tmp_path))


def test_multimodal_gemma3_prefix_loads_the_text_decoder(tmp_path):
  """Gemma 3 4B+ checkpoints keep the decoder under language_model.model.*
  (transformers v4) or model.language_model.* (v5), with a text_config."""
  ref_model = _hf_model("gemma3")
  ref_model.save_pretrained(tmp_path / "text")
  src = loading.SafetensorsCheckpoint(str(tmp_path / "text"))
  text_config = json.loads((tmp_path / "text" / "config.json").read_text())
  for prefix in ("language_model.model.", "model.language_model."):
    dst = tmp_path / prefix.replace(".", "_")
    loading.write_checkpoint(str(dst), [
        (prefix + n[len("model."):], src.shape(n), src.dtype(n),
         lambda n=n: src.get(n)) for n in src.names],
        max_shard_bytes=40_000)
    (dst / "config.json").write_text(json.dumps(
        {"model_type": "gemma3", "text_config": text_config}))
    model, params = hf.load_pretrained(str(dst))
    assert model.config == hf.config_from_hf(text_config)
    tokens, mask, pos = _batch()
    np.testing.assert_allclose(
        _jaxsi_logits(model, params, tokens, mask, pos)[mask],
        _hf_logits(ref_model, tokens, mask, pos)[mask], atol=ATOL, rtol=RTOL)
