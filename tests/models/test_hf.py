"""Hugging Face layout conversion: configs, name map, HF-layout forward."""

import json

import jax
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import hf
from jaxsi.models import layers
from tests.models import _util

QWEN25_05B = {  # Qwen/Qwen2.5-0.5B config.json (abridged)
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "vocab_size": 151936, "hidden_act": "silu",
    "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}
QWEN3_06B = {
    "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
    "num_attention_heads": 16, "num_hidden_layers": 28, "head_dim": 128,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
    "tie_word_embeddings": True, "vocab_size": 151936, "hidden_act": "silu",
    "attention_bias": False, "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16"}
LLAMA32_1B = {
    "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_attention_heads": 32, "num_hidden_layers": 16, "head_dim": 64,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
                     "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "tie_word_embeddings": True, "vocab_size": 128256, "hidden_act": "silu",
    "attention_bias": False, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16"}
GEMMA2_2B = {
    "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
    "num_attention_heads": 8, "num_hidden_layers": 26, "head_dim": 256,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "vocab_size": 256000, "hidden_activation": "gelu_pytorch_tanh",
    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    "query_pre_attn_scalar": 256, "max_position_embeddings": 8192,
    "sliding_window": 4096, "torch_dtype": "bfloat16"}
GEMMA3_1B = {
    "model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
    "num_attention_heads": 4, "num_hidden_layers": 26, "head_dim": 256,
    "num_key_value_heads": 1, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
    "rope_local_base_freq": 10000, "vocab_size": 262144,
    "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
    "sliding_window": 512, "sliding_window_pattern": 6,
    "attn_logit_softcapping": None, "final_logit_softcapping": None,
    "rope_scaling": None, "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("hf_config,preset", [
    (QWEN25_05B, "qwen2.5-0.5b"), (QWEN3_06B, "qwen3-0.6b"),
    (LLAMA32_1B, "llama-3.2-1b"), (GEMMA2_2B, "gemma-2-2b"),
    (GEMMA3_1B, "gemma-3-1b")])
def test_config_from_hf_matches_presets(hf_config, preset):
  assert hf.config_from_hf(hf_config) == mcfg.get_config(preset)


def test_config_from_hf_reads_layer_types():
  layer_types = ["sliding_attention"] * 5 + ["full_attention"]
  cfg = dict(GEMMA3_1B, num_hidden_layers=12, layer_types=layer_types * 2)
  del cfg["sliding_window_pattern"]
  assert hf.config_from_hf(cfg).global_every == 6
  cfg["layer_types"] = ["full_attention"] * 12
  assert not any(hf.config_from_hf(cfg).is_local_layer(i) for i in range(12))
  cfg["layer_types"] = ["sliding_attention", "full_attention"] * 5 + [
      "full_attention"] * 2
  with pytest.raises(ValueError, match="layer_types"):
    hf.config_from_hf(cfg)


def test_config_from_hf_rejects_unknown_model_type():
  with pytest.raises(ValueError, match="supported: .*'llama'"):
    hf.config_from_hf({"model_type": "mamba"})


def _hf_rope(x, pos, theta, scaling=None):  # x [B, H, T, Dh], rotate_half
  dh = x.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, dh, 2) / dh)
  if scaling is not None:
    inv = np.asarray(layers.rope_frequencies(dh, theta, scaling), np.float64)
  freqs = pos[:, None, :, None] * inv  # [B,1,T,Dh/2]
  emb = np.concatenate([freqs, freqs], -1)
  rot = np.concatenate([-x[..., dh // 2:], x[..., :dh // 2]], -1)
  return x * np.cos(emb) + rot * np.sin(emb)


def _hf_forward(c, w, tokens, pos):
  """NumPy transcription of HF Llama/Qwen2/Qwen3/Gemma2 eager forward."""
  b, t = tokens.shape

  def norm(x, weight):
    y = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + c.norm_eps)
    return y * ((1 + weight) if c.norm_offset else weight)

  def lin(x, name):
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y

  x = w["model.embed_tokens.weight"][tokens]
  if c.embed_scale:
    x = x * np.sqrt(c.d_model)
  mask = np.tril(np.ones((t, t), bool))
  for i in range(c.n_layers):
    p = f"model.layers.{i}."
    h = norm(x, w[p + "input_layernorm.weight"])
    q = lin(h, p + "self_attn.q_proj").reshape(b, t, -1, c.head_dim).transpose(0, 2, 1, 3)
    k = lin(h, p + "self_attn.k_proj").reshape(b, t, -1, c.head_dim).transpose(0, 2, 1, 3)
    v = lin(h, p + "self_attn.v_proj").reshape(b, t, -1, c.head_dim).transpose(0, 2, 1, 3)
    if c.qk_norm:
      q = norm(q, w[p + "self_attn.q_norm.weight"])
      k = norm(k, w[p + "self_attn.k_norm.weight"])
    sliding = c.sliding_window is not None and (i + 1) % c.global_every != 0
    theta, scaling = c.rope_theta, c.rope_scaling
    if sliding and c.rope_local_theta:
      theta, scaling = c.rope_local_theta, None
    q, k = _hf_rope(q, pos, theta, scaling), _hf_rope(k, pos, theta, scaling)
    rep = c.n_heads // c.n_kv_heads
    k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
    s = q @ k.transpose(0, 1, 3, 2) * c.query_scale
    if c.attn_logit_softcap:
      s = np.tanh(s / c.attn_logit_softcap) * c.attn_logit_softcap
    m = mask
    if sliding:  # HF: kv_idx > q_idx - sliding_window
      m = m & (np.arange(t)[None, :] > np.arange(t)[:, None] - c.sliding_window)
    s = np.where(m, s, -np.inf)
    pr = np.exp(s - s.max(-1, keepdims=True))
    pr = pr / pr.sum(-1, keepdims=True)
    o = (pr @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
    o = lin(o, p + "self_attn.o_proj")
    if c.post_attn_norm:
      o = norm(o, w[p + "post_attention_layernorm.weight"])
      x = x + o
      h = norm(x, w[p + "pre_feedforward_layernorm.weight"])
    else:
      x = x + o
      h = norm(x, w[p + "post_attention_layernorm.weight"])
    g = lin(h, p + "mlp.gate_proj")
    if c.hidden_act == "silu":
      g = g / (1 + np.exp(-g))
    else:
      g = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
    f = lin(g * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    if c.post_ffw_norm:
      f = norm(f, w[p + "post_feedforward_layernorm.weight"])
    x = x + f
  x = norm(x, w["model.norm.weight"])
  head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
  z = x @ head.T
  if c.final_logit_softcap:
    z = np.tanh(z / c.final_logit_softcap) * c.final_logit_softcap
  return z


@pytest.mark.parametrize("variant", sorted(_util.VARIANTS))
def test_hf_layout_forward_equals_jaxsi_forward(variant):
  model, params = _util.micro_model(variant)
  c = model.config
  tensors = {k: v.astype(np.float64) for k, v in hf.params_to_hf(c, params).items()}
  assert ("lm_head.weight" in tensors) == (not c.tie_embeddings)
  assert ("model.layers.1.self_attn.q_proj.bias" in tensors) == c.qkv_bias
  assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (
      c.n_heads * c.head_dim, c.d_model)
  tokens = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
  pos = np.broadcast_to(np.arange(6), (2, 6))
  want = _hf_forward(c, tensors, tokens, pos)
  got = _util.reference_forward(c, params, tokens, pos,
                                _util.causal_mask(np.ones((2, 6), bool)))
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
  back = hf.params_from_hf(c, tensors)
  for a, b in zip(_leaves(back), _leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def _leaves(tree):
  return jax.tree.leaves(tree)


def test_params_from_hf_errors_name_the_tensor():
  model, params = _util.micro_model("qwen3")
  tensors = hf.params_to_hf(model.config, params)
  del tensors["model.layers.1.self_attn.k_norm.weight"]
  with pytest.raises(KeyError, match="model.layers.1.self_attn.k_norm.weight"):
    hf.params_from_hf(model.config, tensors)
  tensors = hf.params_to_hf(model.config, params)
  tensors["model.norm.weight"] = np.zeros(5, np.float32)
  with pytest.raises(ValueError, match="model.norm.weight"):
    hf.params_from_hf(model.config, tensors)


def test_save_and_load_pretrained_round_trip(tmp_path):
  model, params = _util.micro_model("qwen2")
  c = model.config
  hf_config = {"model_type": "qwen2", "hidden_size": c.d_model,
               "intermediate_size": c.d_ff, "num_attention_heads": c.n_heads,
               "num_hidden_layers": c.n_layers, "num_key_value_heads": c.n_kv_heads,
               "head_dim": c.head_dim, "vocab_size": c.vocab_size,
               "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
               "tie_word_embeddings": False, "torch_dtype": "float32",
               "max_position_embeddings": c.max_seq_len}
  hf.save_pretrained(str(tmp_path), c, params, hf_config)
  assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2"
  loaded_model, loaded = hf.load_pretrained(str(tmp_path))
  assert loaded_model == model
  for a, b in zip(_leaves(loaded), _leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
