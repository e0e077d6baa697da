"""Shared helpers for the model tests: micro configs, a NumPy reference decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.models import config as mcfg
from jaxsi.models import layers
from jaxsi.models import model as mmodel

# A micro decoder: compiles fast, still exercises GQA (4 query / 2 kv heads).
MICRO = dict(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
             head_dim=8, d_ff=48)

GEMMA_OPTS = dict(embed_scale=True, norm_offset=True, post_attn_norm=True,
                  post_ffw_norm=True, attn_logit_softcap=2.0,
                  final_logit_softcap=1.5, hidden_act="gelu_tanh",
                  query_pre_attn_scalar=12.0)

# Each variant combines several options so few models (and compiles) cover all.
VARIANTS = {
    "qwen2": dict(qkv_bias=True, tie_embeddings=False),  # GQA 4/2, bias, untied
    "qwen3": dict(n_kv_heads=1, qk_norm=True,  # MQA, QK-norm, Llama-3 RoPE
                  rope_scaling=("llama3", 8.0, 1.0, 4.0, 64)),
    # MHA, every Gemma 2 option, layer 0 has a 3-token sliding window.
    "gemma2": dict(GEMMA_OPTS, n_kv_heads=4, sliding_window=3, global_every=2),
    # Gemma 3: QK-norm, no softcaps, local layer 0 with its own RoPE base.
    "gemma3": dict(GEMMA_OPTS, qk_norm=True, attn_logit_softcap=None,
                   final_logit_softcap=None, head_dim=6, sliding_window=2,
                   global_every=2, rope_local_theta=50.0),
}

# Tests compile many small programs on a shared CPU: skip XLA's backend
# optimisations (numerics are unchanged, compile time ~3x smaller).
FAST = {"xla_backend_optimization_level": 0}


def micro_config(**overrides):
  return mcfg.get_config("tiny", **{**MICRO, **overrides})


def random_params(model, seed=0, scale=0.3):
  """NumPy-drawn params of the model's shapes (no XLA compile).

  Kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 1), biases ~ N(0, scale²), norm
  scales = 1 + N(0, scale²) (N(0, scale²) with Gemma's 1 + w offset), so every
  parameter matters.
  """
  rng = np.random.default_rng(seed)
  offset = model.config.norm_offset

  def draw(path, sds):
    name = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    shape = sds.shape
    z = rng.standard_normal(shape)
    if name[-1] == "scale":
      z = (0.0 if offset else 1.0) + scale * z
    elif name[-1] == "bias":
      z = scale * z
    elif name[-1] == "embedding":
      pass
    else:
      n_in = 2 if "o_proj" in name else 1
      z = z / np.sqrt(np.prod(shape[:n_in]))
    return jnp.asarray(np.asarray(z, sds.dtype))

  return jax.tree_util.tree_map_with_path(draw, model.abstract_params())


@functools.lru_cache(maxsize=None)
def micro_model(variant="qwen2", value_head=False, seed=0, **overrides):
  cfg = micro_config(**{**VARIANTS[variant], **overrides}, value_head=value_head)
  model = mmodel.build(cfg)
  return model, random_params(model, seed)


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  return jax.jit(model.apply, static_argnames=("return_hidden",),
                 compiler_options=FAST)


def left_padded(rows, pad_id=0):
  """NumPy (tokens, input_mask, positions) int/bool[B, T], left-padded rows."""
  t = max(len(r) for r in rows)
  tokens = np.full((len(rows), t), pad_id, np.int32)
  mask = np.zeros((len(rows), t), bool)
  pos = np.zeros((len(rows), t), np.int32)
  for b, r in enumerate(rows):
    tokens[b, t - len(r):] = r
    mask[b, t - len(r):] = True
    pos[b, t - len(r):] = np.arange(len(r))
  return tokens, mask, pos


# ---------------------------------------------------------- NumPy reference
def _rms(x, w, cfg):
  x = x.astype(np.float64)
  y = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.norm_eps)
  return y * ((1.0 + w) if cfg.norm_offset else w)


def _rope(x, pos, theta, scaling=None):
  dh = x.shape[-1]
  half = dh // 2
  if scaling is None:
    inv = theta ** (-np.arange(half, dtype=np.float64) * 2 / dh)
  else:  # validated separately in test_layers
    inv = np.asarray(layers.rope_frequencies(dh, theta, scaling), np.float64)
  ang = pos[:, :, None, None].astype(np.float64) * inv  # [B,T,1,half]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def reference_forward(cfg, params, tokens, positions, mask):
  """float64 NumPy decoder: logits [B, T, V] with an explicit bool[B,T,T] mask.

  Sliding-window layers additionally require pos[query] − pos[key] < window.
  """
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  tokens, positions, mask = map(np.asarray, (tokens, positions, mask))
  emb = p["embedder"]["embedding"]
  x = emb[tokens]
  if cfg.embed_scale:
    x = x * np.sqrt(cfg.d_model)
  g = cfg.n_heads // cfg.n_kv_heads
  for i in range(cfg.n_layers):
    lp = p["layers"][i]
    h = _rms(x, lp["input_norm"]["scale"], cfg)
    a = lp["attn"]
    q = np.einsum("btd,dhk->bthk", h, a["q_proj"]["kernel"])
    k = np.einsum("btd,dhk->bthk", h, a["k_proj"]["kernel"])
    v = np.einsum("btd,dhk->bthk", h, a["v_proj"]["kernel"])
    if cfg.qkv_bias:
      q, k, v = (q + a["q_proj"]["bias"], k + a["k_proj"]["bias"],
                 v + a["v_proj"]["bias"])
    if cfg.qk_norm:
      q = _rms(q, a["q_norm"]["scale"], cfg)
      k = _rms(k, a["k_norm"]["scale"], cfg)
    local = cfg.sliding_window is not None and (i + 1) % cfg.global_every != 0
    theta, scaling = cfg.rope_theta, cfg.rope_scaling
    if local and cfg.rope_local_theta is not None:
      theta, scaling = cfg.rope_local_theta, None
    q = _rope(q, positions, theta, scaling)
    k = _rope(k, positions, theta, scaling)
    k = np.repeat(k, g, axis=2)  # GQA: query head j uses kv head j // g
    v = np.repeat(v, g, axis=2)
    s = np.einsum("bthk,bshk->bhts", q, k) * cfg.query_scale
    if cfg.attn_logit_softcap:
      s = cfg.attn_logit_softcap * np.tanh(s / cfg.attn_logit_softcap)
    m = mask[:, None]
    if local:
      dist = positions[:, :, None] - positions[:, None, :]
      m = m & (dist < cfg.sliding_window)[:, None]
    s = np.where(m, s, -np.inf)
    smax = np.max(np.where(m, s, -1e300), -1, keepdims=True)
    e = np.where(m, np.exp(s - smax), 0.0)
    probs = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    o = np.einsum("bhts,bshk->bthk", probs, v)
    o = np.einsum("bthk,hkd->btd", o, a["o_proj"]["kernel"])
    if cfg.post_attn_norm:
      o = _rms(o, lp["post_attn_norm"]["scale"], cfg)
    x = x + o
    h = _rms(x, lp["pre_ffw_norm"]["scale"], cfg)
    mp = lp["mlp"]
    gt = h @ mp["gate_proj"]["kernel"]
    if cfg.hidden_act == "silu":
      gt = gt / (1 + np.exp(-gt))
    else:
      gt = 0.5 * gt * (1 + np.tanh(np.sqrt(2 / np.pi) * (gt + 0.044715 * gt ** 3)))
    f = (gt * (h @ mp["up_proj"]["kernel"])) @ mp["down_proj"]["kernel"]
    if cfg.post_ffw_norm:
      f = _rms(f, lp["post_ffw_norm"]["scale"], cfg)
    x = x + f
  x = _rms(x, p["final_norm"]["scale"], cfg)
  if cfg.tie_embeddings:
    z = x @ emb.T
  else:
    z = x @ p["lm_head"]["kernel"]
  if cfg.final_logit_softcap:
    z = cfg.final_logit_softcap * np.tanh(z / cfg.final_logit_softcap)
  return z


def causal_mask(input_mask, segment_ids=None):
  input_mask = np.asarray(input_mask)
  b, t = input_mask.shape
  m = np.tril(np.ones((t, t), bool))[None] & input_mask[:, None, :]
  if segment_ids is not None:
    s = np.asarray(segment_ids)
    m = m & (s[:, :, None] == s[:, None, :])
  return m
