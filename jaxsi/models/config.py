"""Decoder configuration: one frozen dataclass and named presets.

``ModelConfig`` describes a Llama/Qwen/Gemma-family decoder-only transformer
(pre-norm RMSNorm, RoPE, grouped-query attention, gated MLP). It is static
(hashable), so it can live inside jitted closures and static arguments.

Presets: ``tiny`` and ``small`` for tests and CPU experiments, and the published
architectures of ``qwen2.5-0.5b``, ``qwen3-0.6b``, ``llama-3.2-1b`` (with its
"llama3" RoPE scaling), ``gemma-2-2b`` and ``gemma-3-1b`` (with their
sliding-window layers), shape-compatible with the Hugging Face checkpoints
(``jaxsi.models.hf`` converts them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

_ACTIVATIONS = ("silu", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static shape and feature switches of a decoder-only transformer.

  Attributes:
    vocab_size: number of token ids V.
    d_model: residual width D.
    n_layers: number of transformer blocks L.
    n_heads: query heads H.
    n_kv_heads: key/value heads (GQA); must divide ``n_heads``.
    head_dim: per-head width Dh (need not equal D / H).
    d_ff: hidden width F of the gated MLP.
    rope_theta: RoPE base frequency.
    rope_scaling: None, ``('linear', factor)`` (frequencies / factor) or
      ``('llama3', factor, low_freq_factor, high_freq_factor,
      original_max_position_embeddings)`` (Llama 3.1+ frequency scaling).
    norm_eps: RMSNorm epsilon.
    qkv_bias: biases on the q/k/v projections (Qwen2).
    qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3, Gemma 3).
    tie_embeddings: unembedding = embedding transposed.
    max_seq_len: longest sequence the model is meant for (informational; the
      caller sizes caches).
    dtype: activation/compute dtype name (norms, softmax and logits are f32).
    param_dtype: parameter dtype name.
    value_head: add a Linear(D -> 1) value head (PPO critics, PRMs).
    embed_scale: multiply embeddings by sqrt(D) (Gemma).
    norm_offset: RMSNorm scale is ``1 + w`` with ``w`` initialised to 0 (Gemma).
    post_attn_norm: RMSNorm on the attention output before the residual add
      (Gemma 2/3 "sandwich" norms).
    post_ffw_norm: RMSNorm on the MLP output before the residual add.
    attn_logit_softcap: if set, attention logits c·tanh(s / c) (Gemma 2).
    final_logit_softcap: if set, output logits c·tanh(z / c) (Gemma 2).
    hidden_act: gate activation of the MLP, 'silu' (SwiGLU) or 'gelu_tanh'
      (GeGLU, Gemma).
    query_pre_attn_scalar: if set, queries are scaled by this**-0.5 instead of
      head_dim**-0.5 (Gemma).
    sliding_window: if set, *local* layers attend only to the last
      ``sliding_window`` tokens (query − key < window; Gemma 2/3).
    global_every: with ``sliding_window``, layer i is global iff
      (i + 1) % global_every == 0 (Gemma 2: 2, Gemma 3: 6); other layers are
      local. 1 = every layer global.
    rope_local_theta: RoPE base of local layers (Gemma 3: 10k); None = use
      ``rope_theta`` (and ``rope_scaling``) everywhere.
    remat: rematerialise each block in the backward pass of a full
      (uncached) forward (``jax.checkpoint``, only block inputs are saved):
      activation memory of one block instead of all, for about one extra
      forward. Same values and gradients; no effect on cached decoding.
    scan_layers: stack the blocks' parameters on a leading ``layers`` axis
      (``params['layers']`` is one block's dict of ``[L, ...]`` arrays) and
      run them with ``jax.lax.scan``: XLA compiles one block instead of L
      (MaxText's ``scan_layers``). Same init values (each layer is drawn as
      unscanned, then stacked) and the same outputs; needs identical layers
      (no sliding-window/local layers). ``model.stack_layers`` /
      ``unstack_layers`` convert params between the two layouts.
  """

  vocab_size: int = 64
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 32
  d_ff: int = 384
  rope_theta: float = 10_000.0
  rope_scaling: Optional[tuple] = None
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  qk_norm: bool = False
  tie_embeddings: bool = True
  max_seq_len: int = 2048
  dtype: str = "float32"
  param_dtype: str = "float32"
  value_head: bool = False
  embed_scale: bool = False
  norm_offset: bool = False
  post_attn_norm: bool = False
  post_ffw_norm: bool = False
  attn_logit_softcap: Optional[float] = None
  final_logit_softcap: Optional[float] = None
  hidden_act: str = "silu"
  query_pre_attn_scalar: Optional[float] = None
  sliding_window: Optional[int] = None
  global_every: int = 1
  rope_local_theta: Optional[float] = None
  remat: bool = False
  scan_layers: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "head_dim", "d_ff", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if self.scan_layers and self.sliding_window is not None:
      raise ValueError(
          "ModelConfig.scan_layers needs identical layers; sliding_window="
          f"{self.sliding_window} makes local and global layers differ "
          "(set scan_layers=False)")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"ModelConfig.n_heads ({self.n_heads}) must be a multiple of "
          f"ModelConfig.n_kv_heads ({self.n_kv_heads})")
    if self.head_dim % 2:
      raise ValueError(
          f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(
          f"ModelConfig.hidden_act must be one of {_ACTIVATIONS}, got "
          f"{self.hidden_act!r}")
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      try:
        dt = jnp.dtype(value)
      except TypeError as e:
        raise ValueError(f"ModelConfig.{name}: unknown dtype {value!r}") from e
      if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"ModelConfig.{name} must be a float dtype, got {value!r}")
      # Store the canonical name so equal configs hash equally.
      object.__setattr__(self, name, dt.name)
    if self.rope_scaling is not None:
      rs = tuple(self.rope_scaling)
      ok = ((len(rs) == 2 and rs[0] == "linear") or
            (len(rs) == 5 and rs[0] == "llama3"))
      if not ok or any(float(v) <= 0 for v in rs[1:]):
        raise ValueError(
            "ModelConfig.rope_scaling must be None, ('linear', factor) or "
            "('llama3', factor, low_freq_factor, high_freq_factor, "
            f"original_max_position_embeddings), got {self.rope_scaling!r}")
      object.__setattr__(self, "rope_scaling", rs)
    if self.sliding_window is not None and (
        not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
      raise ValueError(
          f"ModelConfig.sliding_window must be None or a positive int, got "
          f"{self.sliding_window!r}")
    if not isinstance(self.global_every, int) or self.global_every <= 0:
      raise ValueError(
          f"ModelConfig.global_every must be a positive int, got "
          f"{self.global_every!r}")
    if self.rope_local_theta is not None and self.rope_local_theta <= 0:
      raise ValueError(
          f"ModelConfig.rope_local_theta must be None or > 0, got "
          f"{self.rope_local_theta!r}")
    for name in ("rope_theta", "norm_eps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)!r}")
    for name in ("attn_logit_softcap", "final_logit_softcap",
                 "query_pre_attn_scalar"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f"ModelConfig.{name} must be None or > 0, got {value!r}")

  # Derived ------------------------------------------------------------------
  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> Any:
    return jnp.dtype(self.param_dtype)

  @property
  def query_scale(self) -> float:
    """Multiplier applied to queries before q·k."""
    base = (self.head_dim if self.query_pre_attn_scalar is None
            else self.query_pre_attn_scalar)
    return float(base) ** -0.5

  def is_local_layer(self, layer: int) -> bool:
    """True if ``layer`` uses sliding-window attention."""
    return (self.sliding_window is not None
            and (layer + 1) % self.global_every != 0)

  def replace(self, **overrides) -> "ModelConfig":
    """Copy with fields replaced (unknown fields raise, listing valid ones)."""
    _check_fields(overrides)
    return dataclasses.replace(self, **overrides)


_PRESETS: dict[str, dict[str, Any]] = {
    # ~1M parameters (with a 64-token vocabulary).
    "tiny": dict(vocab_size=64, d_model=128, n_layers=4, n_heads=4,
                 n_kv_heads=2, head_dim=32, d_ff=384, max_seq_len=2048),
    # ~10M parameters (with a 64..1k-token vocabulary).
    "small": dict(vocab_size=64, d_model=256, n_layers=8, n_heads=8,
                  n_kv_heads=4, head_dim=32, d_ff=768, max_seq_len=4096),
    # Qwen/Qwen2.5-0.5B (config.json): 494,032,768 parameters.
    "qwen2.5-0.5b": dict(vocab_size=151_936, d_model=896, n_layers=24,
                         n_heads=14, n_kv_heads=2, head_dim=64, d_ff=4864,
                         rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True,
                         tie_embeddings=True, max_seq_len=32_768,
                         dtype="bfloat16", param_dtype="bfloat16"),
    # Qwen/Qwen3-0.6B: 596,049,920 parameters (tied).
    "qwen3-0.6b": dict(vocab_size=151_936, d_model=1024, n_layers=28,
                       n_heads=16, n_kv_heads=8, head_dim=128, d_ff=3072,
                       rope_theta=1_000_000.0, norm_eps=1e-6, qk_norm=True,
                       tie_embeddings=True, max_seq_len=40_960,
                       dtype="bfloat16", param_dtype="bfloat16"),
    # meta-llama/Llama-3.2-1B: 1,235,814,400 parameters.
    "llama-3.2-1b": dict(vocab_size=128_256, d_model=2048, n_layers=16,
                         n_heads=32, n_kv_heads=8, head_dim=64, d_ff=8192,
                         rope_theta=500_000.0, norm_eps=1e-5,
                         rope_scaling=("llama3", 32.0, 1.0, 4.0, 8192),
                         tie_embeddings=True, max_seq_len=131_072,
                         dtype="bfloat16", param_dtype="bfloat16"),
    # google/gemma-2-2b: 2,614,341,888 parameters; even layers use a
    # 4096-token sliding window.
    "gemma-2-2b": dict(vocab_size=256_000, d_model=2304, n_layers=26,
                       n_heads=8, n_kv_heads=4, head_dim=256, d_ff=9216,
                       rope_theta=10_000.0, norm_eps=1e-6,
                       tie_embeddings=True, max_seq_len=8192,
                       embed_scale=True, norm_offset=True, post_attn_norm=True,
                       post_ffw_norm=True, attn_logit_softcap=50.0,
                       final_logit_softcap=30.0, hidden_act="gelu_tanh",
                       query_pre_attn_scalar=256.0, sliding_window=4096,
                       global_every=2,
                       dtype="bfloat16", param_dtype="bfloat16"),
    # google/gemma-3-1b-pt: 999,885,952 parameters; 5 local layers (512-token
    # window, RoPE base 10k) per global layer (RoPE base 1M).
    "gemma-3-1b": dict(vocab_size=262_144, d_model=1152, n_layers=26,
                       n_heads=4, n_kv_heads=1, head_dim=256, d_ff=6912,
                       rope_theta=1_000_000.0, norm_eps=1e-6, qk_norm=True,
                       tie_embeddings=True, max_seq_len=32_768,
                       embed_scale=True, norm_offset=True, post_attn_norm=True,
                       post_ffw_norm=True, hidden_act="gelu_tanh",
                       query_pre_attn_scalar=256.0, sliding_window=512,
                       global_every=6, rope_local_theta=10_000.0,
                       dtype="bfloat16", param_dtype="bfloat16"),
}

PRESETS = tuple(_PRESETS)


def _check_fields(overrides) -> None:
  valid = [f.name for f in dataclasses.fields(ModelConfig)]
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise ValueError(
        f"Unknown ModelConfig field(s) {unknown}; valid fields: {valid}")


def get_config(name: str, **overrides) -> ModelConfig:
  """Returns the preset ``name`` with fields overridden.

  Args:
    name: one of ``PRESETS`` ('tiny', 'small', 'qwen2.5-0.5b', 'qwen3-0.6b',
      'llama-3.2-1b', 'gemma-2-2b', 'gemma-3-1b').
    **overrides: ModelConfig fields to replace (e.g. ``vocab_size=1000``).

  Returns:
    A frozen ModelConfig.

  Raises:
    ValueError: unknown preset name or field (the message lists valid ones).
  """
  key = name.lower()
  if key not in _PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; valid presets: {list(PRESETS)}")
  _check_fields(overrides)
  return ModelConfig(**{**_PRESETS[key], **overrides})


def num_params(config: ModelConfig) -> int:
  """Exact parameter count of the decoder built from ``config``."""
  c = config
  d, h, kv, dh, f = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
  attn = d * h * dh + 2 * d * kv * dh + h * dh * d
  if c.qkv_bias:
    attn += h * dh + 2 * kv * dh
  if c.qk_norm:
    attn += 2 * dh
  mlp = 3 * d * f
  norms = 2 * d + d * (int(c.post_attn_norm) + int(c.post_ffw_norm))
  total = c.n_layers * (attn + mlp + norms)
  total += c.vocab_size * d  # embedding
  total += d  # final norm
  if not c.tie_embeddings:
    total += d * c.vocab_size
  if c.value_head:
    total += d + 1
  return int(total)


def describe(config: ModelConfig) -> str:
  """One-line human summary, e.g. for logs."""
  n = num_params(config)
  scale = (f"{n / 1e9:.2f}B" if n >= 1e9 else
           f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K")
  return (f"{scale} params: L={config.n_layers} D={config.d_model} "
          f"H={config.n_heads}/{config.n_kv_heads}x{config.head_dim} "
          f"F={config.d_ff} V={config.vocab_size}")
