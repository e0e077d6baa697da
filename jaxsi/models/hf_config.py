"""Hugging Face ``config.json`` <-> jaxsi ``ModelConfig`` (Llama, Qwen2/2.5/3, Gemma 1/2/3).

``config_from_hf`` reads transformers v4 keys (``rope_theta``,
``rope_scaling``, ``rope_local_base_freq``) and v5 ``rope_parameters`` (flat,
or per layer type for Gemma 3); ``hf_config_from_config`` is its inverse
(transformers v4 key names, which v5 also reads) and refuses a config the
model type cannot express (a round trip is checked on every call). The
weights' layout conversion is ``jaxsi.models.hf``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from jaxsi.models.config import ModelConfig

_SUPPORTED = ("llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
              "gemma3")


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
  """ModelConfig from a Hugging Face ``config.json`` dict.

  Args:
    hf: the parsed config.json (a Gemma 3 multimodal config's
      ``text_config`` is used automatically).
    **overrides: ModelConfig fields to set (e.g. ``dtype='float32'``).

  Raises:
    ValueError: unsupported ``model_type`` (lists the supported ones).
  """
  model_type = hf.get("model_type")
  if model_type == "gemma3" and "text_config" in hf:
    hf = {"model_type": "gemma3_text", **hf["text_config"]}
    model_type = "gemma3_text"
  if model_type not in _SUPPORTED:
    raise ValueError(
        f"config_from_hf: unsupported model_type {model_type!r}; supported: "
        f"{list(_SUPPORTED)}")
  gemma = model_type.startswith("gemma")
  d = hf["hidden_size"]
  h = hf["num_attention_heads"]
  theta, scaling, local_theta = _rope_from_hf(hf)
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=d,
      n_layers=hf["num_hidden_layers"], n_heads=h,
      n_kv_heads=hf.get("num_key_value_heads") or h,
      head_dim=hf.get("head_dim") or d // h,
      d_ff=hf["intermediate_size"],
      rope_theta=theta, rope_scaling=scaling,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
      max_seq_len=int(hf.get("max_position_embeddings", 2048)),
      qkv_bias=(True if model_type == "qwen2"
                else bool(hf.get("attention_bias", False))),
      qk_norm=model_type in ("qwen3", "gemma3_text"),
  )
  if hf.get("mlp_bias"):
    raise ValueError("config_from_hf: mlp_bias=True is not supported")
  dtype = hf.get("torch_dtype") or hf.get("dtype")
  if dtype in ("float32", "bfloat16", "float16"):
    fields.update(dtype=dtype, param_dtype=dtype)
  if gemma:
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu"):
      raise ValueError(f"config_from_hf: unsupported Gemma activation {act!r}")
    fields.update(embed_scale=True, norm_offset=True, hidden_act="gelu_tanh")
    if model_type != "gemma":
      fields.update(
          post_attn_norm=True, post_ffw_norm=True,
          attn_logit_softcap=hf.get("attn_logit_softcapping"),
          final_logit_softcap=hf.get("final_logit_softcapping"),
          query_pre_attn_scalar=hf.get("query_pre_attn_scalar"))
    if model_type != "gemma" and hf.get("sliding_window"):
      fields.update(sliding_window=int(hf["sliding_window"]),
                    global_every=_global_every(hf, model_type))
      if model_type == "gemma3_text" and local_theta is not None:
        fields["rope_local_theta"] = local_theta
    if hf.get("use_bidirectional_attention"):
      raise ValueError(
          "config_from_hf: use_bidirectional_attention=True is not supported")
  else:
    if hf.get("use_sliding_window") or "sliding_attention" in (
        hf.get("layer_types") or ()):
      raise ValueError("config_from_hf: use_sliding_window=True is not supported")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"config_from_hf: unsupported activation {act!r}")
  fields.update(overrides)
  return ModelConfig(**fields)


def _rope_scaling(rs: Mapping[str, Any]) -> Optional[tuple]:
  """ModelConfig.rope_scaling from an HF rope dict (v4 or v5 keys)."""
  kind = rs.get("rope_type", rs.get("type", "default"))
  if kind == "default":
    return None
  if kind == "llama3":
    return ("llama3", float(rs["factor"]), float(rs["low_freq_factor"]),
            float(rs["high_freq_factor"]),
            int(rs["original_max_position_embeddings"]))
  if kind == "linear":
    return ("linear", float(rs["factor"]))
  raise ValueError(f"config_from_hf: unsupported rope scaling {dict(rs)!r} "
                   "(supported rope_type: default, linear, llama3)")


def _rope_from_hf(hf: Mapping[str, Any]) -> tuple:
  """(rope_theta, rope_scaling, local theta or None) from an HF config.

  Reads transformers v4 keys (``rope_theta``, ``rope_scaling``,
  ``rope_local_base_freq``) and v5 ``rope_parameters`` (flat, or one dict per
  layer type ``full_attention``/``sliding_attention``, Gemma 3).
  """
  rp = hf.get("rope_parameters")
  local_theta = None
  if rp and ("full_attention" in rp or "sliding_attention" in rp):
    glob = dict(rp.get("full_attention") or {})
    loc = rp.get("sliding_attention")
    if loc:
      if _rope_scaling(loc) is not None:
        raise ValueError("config_from_hf: scaled RoPE on sliding-window layers "
                         f"is not supported: {dict(loc)!r}")
      local_theta = float(loc["rope_theta"])
  elif rp:
    glob = dict(rp)
  else:
    glob = dict(hf.get("rope_scaling") or {})
    if hf.get("rope_local_base_freq"):
      local_theta = float(hf["rope_local_base_freq"])
  theta = glob.get("rope_theta", hf.get("rope_theta", 10_000.0))
  return float(theta), _rope_scaling(glob), local_theta


def _global_every(hf: Mapping[str, Any], model_type: str) -> int:
  """Period P of the local/global pattern (layer i global iff (i+1) % P == 0).

  Only local layers (fewer layers than one period) give ``P = n_layers + 1``.
  """
  n = hf["num_hidden_layers"]
  if hf.get("layer_types"):
    is_global = [t == "full_attention" for t in hf["layer_types"]]
    period = next((i + 1 for i, g in enumerate(is_global) if g), None)
    if period is None and len(is_global) == n:
      return n + 1
    if period is None or is_global != [(i + 1) % period == 0 for i in range(n)]:
      raise ValueError(
          f"config_from_hf: layer_types {hf['layer_types']} is not a periodic "
          "local…local/global pattern")
    return period
  if model_type == "gemma2":
    return 2
  return int(hf.get("sliding_window_pattern", 6))


def infer_model_type(config: ModelConfig) -> str:
  """The HF ``model_type`` whose architecture ``config`` describes."""
  gemma = config.norm_offset or config.embed_scale
  if gemma:
    if config.post_attn_norm or config.post_ffw_norm:
      return "gemma3_text" if config.qk_norm else "gemma2"
    return "gemma"
  if config.qkv_bias and not config.qk_norm:
    return "qwen2"
  if config.qk_norm:
    return "qwen3"
  return "llama"


def hf_config_from_config(config: ModelConfig, *,
                          model_type: Optional[str] = None,
                          **extra) -> dict:
  """A Hugging Face ``config.json`` dict for ``config`` (inverse of
  ``config_from_hf``; transformers v4 key names, which v5 also reads).

  Args:
    config: the ModelConfig.
    model_type: HF model type (default: ``infer_model_type(config)``).
    **extra: more keys (e.g. ``bos_token_id``, ``eos_token_id``).

  Raises:
    ValueError: a config the model type cannot express.
  """
  c = config
  model_type = model_type or infer_model_type(c)
  if model_type not in _SUPPORTED:
    raise ValueError(f"hf_config_from_config: unsupported model_type "
                     f"{model_type!r}; supported: {list(_SUPPORTED)}")
  archs = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM",
           "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
           "gemma3": "Gemma3ForCausalLM"}
  out = {
      "architectures": [archs[model_type]], "model_type": model_type,
      "vocab_size": c.vocab_size, "hidden_size": c.d_model,
      "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layers,
      "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
      "head_dim": c.head_dim, "rms_norm_eps": c.norm_eps,
      "rope_theta": c.rope_theta, "max_position_embeddings": c.max_seq_len,
      "tie_word_embeddings": c.tie_embeddings, "torch_dtype": c.param_dtype,
  }
  if c.rope_scaling is not None:
    if c.rope_scaling[0] == "linear":
      out["rope_scaling"] = {"rope_type": "linear",
                             "factor": c.rope_scaling[1]}
    else:
      _, factor, low, high, old = c.rope_scaling
      out["rope_scaling"] = {
          "rope_type": "llama3", "factor": factor, "low_freq_factor": low,
          "high_freq_factor": high, "original_max_position_embeddings": old}
  if model_type.startswith("gemma"):
    out["hidden_activation"] = "gelu_pytorch_tanh"
    if model_type != "gemma":
      out.update(attn_logit_softcapping=c.attn_logit_softcap,
                 final_logit_softcapping=c.final_logit_softcap,
                 query_pre_attn_scalar=(c.query_pre_attn_scalar
                                        or c.head_dim))
    if c.sliding_window is not None:
      out["sliding_window"] = c.sliding_window
      out["layer_types"] = ["sliding_attention" if c.is_local_layer(i)
                            else "full_attention" for i in range(c.n_layers)]
      if model_type.startswith("gemma3"):
        out["sliding_window_pattern"] = c.global_every
        out["rope_local_base_freq"] = (c.rope_local_theta or c.rope_theta)
    elif model_type != "gemma":
      raise ValueError(f"hf_config_from_config: {model_type} needs "
                       "sliding_window (set one >= max_seq_len for none)")
  else:
    out["hidden_act"] = "silu"
    out["attention_bias"] = c.qkv_bias
    if c.sliding_window is not None:
      raise ValueError("hf_config_from_config: sliding_window is only "
                       "supported for Gemma 2/3")
  expected = _comparable(c.replace(value_head=False))
  got = _comparable(config_from_hf(out, dtype=c.dtype,
                                   param_dtype=c.param_dtype, remat=c.remat,
                                   scan_layers=c.scan_layers))
  if got != expected:
    diff = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
    raise ValueError(f"hf_config_from_config: model_type {model_type!r} cannot "
                     f"express this config; (wanted, got): {diff}")
  out.update(extra)
  return out


def _comparable(c: ModelConfig) -> dict:
  """Config fields with equivalent spellings unified (for round-trip checks)."""
  out = dict(c.__dict__)
  out["query_pre_attn_scalar"] = c.query_scale
  if c.rope_local_theta is None and c.rope_scaling is None:
    out["rope_local_theta"] = c.rope_theta
  if c.sliding_window is None:
    out["global_every"] = 1
  return out
