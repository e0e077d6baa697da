"""Flax NNX building blocks of the decoder: dense, RMSNorm, RoPE, attention, MLP.

Every ``nnx.Param`` carries logical axis names as ``sharding`` metadata (names
``vocab, embed, heads, kv_heads, head_dim, mlp, norm``; ``None`` for a size-1
axis). Parameters live in ``config.param_dtype`` and are cast to
``config.dtype`` for compute; norms, RoPE, attention softmax and logits run in
float32.

Kernel layouts (so Hugging Face weights map by reshape/transpose only):
``q_proj: [D, H, Dh]``, ``k_proj/v_proj: [D, Hkv, Dh]``, ``o_proj: [H, Dh, D]``,
``gate_proj/up_proj: [D, F]``, ``down_proj: [F, D]``, ``embedding: [V, D]``,
``lm_head: [D, V]``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsi.models.config import ModelConfig

Array = jax.Array
Axes = tuple  # tuple of logical axis names (str or None)

# Large finite negative for masked attention logits: keeps fully masked rows
# (padding queries) finite instead of NaN.
MASK_VALUE = -1e30


_SHAPE_ONLY = contextvars.ContextVar("jaxsi_models_shape_only", default=False)


@contextlib.contextmanager
def shape_only():
  """Within this context ``param`` skips random draws (zeros instead).

  Used with ``nnx.eval_shape`` to get the structure, shapes and metadata of a
  module quickly (drawing through ``nnx.Rngs`` costs ~50 ms per parameter
  even when only traced).
  """
  token = _SHAPE_ONLY.set(True)
  try:
    yield
  finally:
    _SHAPE_ONLY.reset(token)


def param(rngs: Optional[nnx.Rngs], shape: Sequence[int], axes: Axes, *,
          init: str, std: float = 1.0, dtype=jnp.float32) -> nnx.Param:
  """Creates an nnx.Param with logical-axis metadata.

  Args:
    rngs: random streams (only needed for ``init='normal'``).
    shape: parameter shape.
    axes: one logical axis name (or None) per dimension.
    init: 'normal' (N(0, std²)), 'zeros' or 'ones'.
    std: standard deviation for 'normal'.
    dtype: parameter dtype.

  Returns:
    The Param; ``out_sharding`` (alias ``sharding``) metadata = ``axes`` (no eager sharding: the
    training code places parameters from these names); ``init``/``init_std``
    metadata let ``Model.init_params`` re-draw it without the module.
  """
  shape = tuple(int(s) for s in shape)
  axes = tuple(axes)
  if len(axes) != len(shape):
    raise ValueError(f"param: axes {axes} do not match shape {shape}")
  if init == "normal" and _SHAPE_ONLY.get():
    value = jnp.zeros(shape, dtype)
  elif init == "normal":
    value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
  elif init == "zeros":
    value = jnp.zeros(shape, dtype)
  elif init == "ones":
    value = jnp.ones(shape, dtype)
  else:
    raise ValueError(f"param: unknown init {init!r} (normal|zeros|ones)")
  return nnx.Param(value, out_sharding=axes, eager_sharding=False, init=init,
                   init_std=float(std))


def matmul_last(x: Array, kernel: Array, n_in: int,
                preferred_element_type=None) -> Array:
  """Contracts the last ``n_in`` axes of x with the first ``n_in`` of kernel.

  Equal to ``einsum('...i,io->...o')`` over the flattened axes, but computed
  as one 2-D matmul ``[N, I] @ [I, O]`` (N = all leading axes of x). On XLA's
  CPU backend this matters for the backward pass: the weight gradient of the
  einsum form contracts over two axes (batch and time), which XLA lowers as a
  transposing copy of the output gradient plus a non-XNNPACK dot; the 2-D
  form contracts one axis and runs as a plain GEMM (BUILD_NOTES.md,
  "Performance findings (XLA CPU)").

  Args:
    x: [..., *in_axes].
    kernel: [*in_axes, *out_axes].
    n_in: number of contracted axes.
    preferred_element_type: accumulation/output dtype (None: x's).

  Returns:
    [..., *out_axes].
  """
  in_shape, out_shape = kernel.shape[:n_in], kernel.shape[n_in:]
  if tuple(x.shape[x.ndim - n_in:]) != tuple(in_shape):
    raise ValueError(f"matmul_last: x {x.shape} does not end in kernel input "
                     f"axes {in_shape} (kernel {kernel.shape})")
  lead = x.shape[:x.ndim - n_in]
  k_in, k_out = math.prod(in_shape), math.prod(out_shape)
  y = jnp.matmul(x.reshape(-1, k_in), kernel.reshape(k_in, k_out),
                 preferred_element_type=preferred_element_type)
  return y.reshape(lead + tuple(out_shape))


def _spec_n_in(spec: str) -> Optional[int]:
  """n_in if ``spec`` contracts the kernel's leading axes with x's trailing
  ones in order (``'btd,dhk->bthk'``), else None."""
  inputs, out = spec.replace("...", "").split("->")
  xs, ks = inputs.split(",")
  n_in = sum(1 for a in ks if a in xs)
  if (n_in == 0 or ks[:n_in] != xs[len(xs) - n_in:]
      or out != xs[:len(xs) - n_in] + ks[n_in:]):
    return None
  return n_in


class Dense(nnx.Module):
  """y = einsum(spec, x, kernel) (+ bias), kernel of any rank.

  Specs that contract the kernel's leading axes with x's trailing axes (all
  the decoder's projections) run as one 2-D matmul (``matmul_last``).

  Attributes:
    kernel: Param of ``kernel_shape`` with ``kernel_axes``.
    bias: Param of ``kernel_shape[n_in:]`` (if ``use_bias``).
  """

  def __init__(self, kernel_shape: Sequence[int], kernel_axes: Axes, spec: str,
               *, n_in: int = 1, use_bias: bool = False, std: float = 1.0,
               init: str = "normal", dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.spec = spec
    self.dtype = dtype
    self.kernel = param(rngs, kernel_shape, kernel_axes, init=init, std=std,
                        dtype=param_dtype)
    if use_bias:
      self.bias = param(None, kernel_shape[n_in:], kernel_axes[n_in:],
                        init="zeros", dtype=param_dtype)
    else:
      self.bias = None

  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    kernel = self.kernel[...].astype(self.dtype)
    n_in = _spec_n_in(self.spec)
    if n_in is not None:
      y = matmul_last(x, kernel, n_in)
    else:
      y = jnp.einsum(self.spec, x, kernel)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · scale.

  With ``offset`` (Gemma) the scale is ``1 + w`` and ``w`` starts at 0;
  otherwise the scale is ``w`` starting at 1. Computed in float32, returned in
  the input dtype.
  """

  def __init__(self, dim: int, *, eps: float, offset: bool = False,
               param_dtype=jnp.float32):
    self.eps = eps
    self.offset = offset
    self.scale = param(None, (dim,), ("norm",),
                       init="zeros" if offset else "ones", dtype=param_dtype)

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(jnp.float32)
    if self.offset:
      scale = 1.0 + scale
    return (y * scale).astype(x.dtype)


def rope_frequencies(head_dim: int, theta: float,
                     scaling: Optional[tuple] = None) -> np.ndarray:
  """f32[Dh/2]: inverse frequencies theta^(-2i/Dh), optionally rescaled.

  Computed on the host (a constant of the config).

  Args:
    head_dim: Dh.
    theta: RoPE base.
    scaling: None, ('linear', factor) or ('llama3', factor, low_freq_factor,
      high_freq_factor, original_max_position_embeddings); the latter is
      Hugging Face's ``_compute_llama3_parameters``: long wavelengths are
      divided by ``factor``, short ones kept, the band between interpolated.
  """
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if scaling is not None:
    kind, factor = scaling[0], float(scaling[1])
    if kind == "linear":
      inv = inv / factor
    elif kind == "llama3":
      low, high, old_len = (float(v) for v in scaling[2:])
      wavelen = 2 * np.pi / inv
      low_wavelen, high_wavelen = old_len / low, old_len / high
      scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
      smooth = (old_len / wavelen - low) / (high - low)
      smoothed = (1 - smooth) * scaled / factor + smooth * scaled
      medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
      inv = np.where(medium, smoothed, scaled)
    else:
      raise ValueError(f"rope_frequencies: unknown scaling {kind!r}")
  return inv.astype(np.float32)


def apply_rope(x: Array, positions: Array, *, theta: float,
               scaling: Optional[tuple] = None) -> Array:
  """Rotary position embedding, "rotate half" layout (Llama/Qwen/Gemma HF).

  out[..., :Dh/2] = x1·cos − x2·sin,  out[..., Dh/2:] = x2·cos + x1·sin, with
  angle = position · theta^(-2i/Dh).

  Args:
    x: [B, T, N, Dh] queries or keys.
    positions: int[B, T] explicit positions.
    theta: RoPE base.
    scaling: optional frequency scaling (see ``rope_frequencies``).

  Returns:
    Rotated x, same shape and dtype.
  """
  dh = x.shape[-1]
  inv = jnp.asarray(rope_frequencies(dh, theta, scaling))
  angles = positions.astype(jnp.float32)[..., None] * inv
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., : dh // 2], x32[..., dh // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array, *,
                          softcap: Optional[float] = None,
                          heads_first: bool = False) -> Array:
  """Grouped-query attention with a boolean mask, softmax in float32.

  softmax_s(q·kᵀ + bias), bias = 0 where allowed and ``MASK_VALUE`` elsewhere
  (Vaswani et al. 2017, Eq. 1; GQA: Ainslie et al. 2023, each group of
  H / Hkv query heads shares one key/value head).

  Two layouts of the same math. ``heads_first=False`` contracts the
  [B, T, H, Dh] arrays in place (the cached decode path: no copy of the
  cache). ``heads_first=True`` first moves the head axes in front of time
  ([B, Hkv, G, T, Dh]) so both batched dots and the softmax run over
  contiguous [T, S] tiles, adds the mask as a bias (its backward is the
  identity, where a select costs another pass) and zeroes fully masked query
  rows at the [B, T, H, Dh] output instead of over the [B, H, T, S] scores.
  On XLA's CPU backend the second is the faster one for full-sequence passes
  (BUILD_NOTES.md, "Performance findings (XLA CPU)").

  Args:
    q: [B, T, H, Dh] queries, already scaled.
    k: [B, S, Hkv, Dh] keys.
    v: [B, S, Hkv, Dh] values.
    mask: bool[B, T, S] True where query t may attend key s.
    softcap: if set, logits c·tanh(s/c) before masking.
    heads_first: the layout (above).

  Returns:
    [B, T, H, Dh] in q's dtype. Rows with no allowed key give zeros (no NaN).
  """
  b, t, h, dh = q.shape
  hkv = k.shape[2]
  g = h // hkv
  qg = q.reshape(b, t, hkv, g, dh)
  if heads_first:
    qh = qg.transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, T, Dh]
    kh = k.transpose(0, 2, 1, 3)  # [B, Hkv, S, Dh]
    vh = v.transpose(0, 2, 1, 3)
    scores = jnp.einsum("bkgtd,bksd->bkgts", qh, kh,
                        preferred_element_type=jnp.float32)
    if softcap is not None:
      scores = softcap * jnp.tanh(scores / softcap)
    bias = jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)
    probs = jax.nn.softmax(scores + bias[:, None, None], axis=-1)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs.astype(v.dtype), vh)
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, dh)
    rows = jnp.any(mask, axis=-1)  # fully masked rows: zeros, not uniform
    return out * rows[:, :, None, None].astype(out.dtype)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k,
                      preferred_element_type=jnp.float32)
  if softcap is not None:
    scores = softcap * jnp.tanh(scores / softcap)
  m = mask[:, None, None, :, :]
  scores = jnp.where(m, scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1)
  probs = jnp.where(m, probs, 0.0)  # fully masked rows: zeros, not uniform
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
  return out.reshape(b, t, h, dh)


class Attention(nnx.Module):
  """Multi-head attention with GQA, optional qkv bias and per-head QK-norm."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               local: bool = False):
    c = config
    self.config = c
    if local and c.rope_local_theta is not None:
      self.rope_theta, self.rope_scaling = c.rope_local_theta, None
    else:
      self.rope_theta, self.rope_scaling = c.rope_theta, c.rope_scaling
    dt, pdt = c.compute_dtype, c.params_dtype
    d, h, kv, dh = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    in_std = d ** -0.5
    out_std = (h * dh) ** -0.5 / math.sqrt(2 * c.n_layers)
    self.q_proj = Dense((d, h, dh), ("embed", "heads", "head_dim"),
                        "btd,dhk->bthk", use_bias=c.qkv_bias, std=in_std,
                        dtype=dt, param_dtype=pdt, rngs=rngs)
    self.k_proj = Dense((d, kv, dh), ("embed", "kv_heads", "head_dim"),
                        "btd,dhk->bthk", use_bias=c.qkv_bias, std=in_std,
                        dtype=dt, param_dtype=pdt, rngs=rngs)
    self.v_proj = Dense((d, kv, dh), ("embed", "kv_heads", "head_dim"),
                        "btd,dhk->bthk", use_bias=c.qkv_bias, std=in_std,
                        dtype=dt, param_dtype=pdt, rngs=rngs)
    self.o_proj = Dense((h, dh, d), ("heads", "head_dim", "embed"),
                        "bthk,hkd->btd", n_in=2, std=out_std,
                        dtype=dt, param_dtype=pdt, rngs=rngs)
    if c.qk_norm:
      self.q_norm = RMSNorm(dh, eps=c.norm_eps, offset=c.norm_offset,
                            param_dtype=pdt)
      self.k_norm = RMSNorm(dh, eps=c.norm_eps, offset=c.norm_offset,
                            param_dtype=pdt)
    else:
      self.q_norm = None
      self.k_norm = None

  def project(self, x: Array, positions: Array):
    """Returns (q, k, v): q [B,T,H,Dh] scaled and rotated, k rotated, v."""
    c = self.config
    q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q = apply_rope(q, positions, theta=self.rope_theta, scaling=self.rope_scaling)
    k = apply_rope(k, positions, theta=self.rope_theta, scaling=self.rope_scaling)
    q = q * jnp.asarray(c.query_scale, q.dtype)
    return q, k, v

  def attend(self, q: Array, k: Array, v: Array, mask: Array, *,
             heads_first: bool = False) -> Array:
    """Attention over keys/values [B,S,Hkv,Dh] and the output projection.

    ``heads_first``: the layout of ``dot_product_attention`` (True for
    uncached full-sequence passes, False over a KV cache).
    """
    out = dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                                softcap=self.config.attn_logit_softcap,
                                heads_first=heads_first)
    return self.o_proj(out)


class MLP(nnx.Module):
  """Gated MLP: down(act(gate(x)) · up(x)); act = SiLU (SwiGLU) or tanh-GELU."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    dt, pdt = c.compute_dtype, c.params_dtype
    self.hidden_act = c.hidden_act
    in_std = c.d_model ** -0.5
    out_std = c.d_ff ** -0.5 / math.sqrt(2 * c.n_layers)
    self.gate_proj = Dense((c.d_model, c.d_ff), ("embed", "mlp"), "btd,df->btf",
                           std=in_std, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.up_proj = Dense((c.d_model, c.d_ff), ("embed", "mlp"), "btd,df->btf",
                         std=in_std, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.down_proj = Dense((c.d_ff, c.d_model), ("mlp", "embed"), "btf,fd->btd",
                           std=out_std, dtype=dt, param_dtype=pdt, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    gate = self.gate_proj(x)
    if self.hidden_act == "silu":
      gate = jax.nn.silu(gate)
    else:
      gate = jax.nn.gelu(gate, approximate=True)
    return self.down_proj(gate * self.up_proj(x))


class Embedder(nnx.Module):
  """Token embedding [V, D] (Gemma: × sqrt(D)) and its tied unembedding."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    self.embedding = param(rngs, (c.vocab_size, c.d_model), ("vocab", "embed"),
                           init="normal", std=c.d_model ** -0.5,
                           dtype=c.params_dtype)

  def encode(self, tokens: Array) -> Array:
    c = self.config
    x = jnp.take(self.embedding[...], tokens, axis=0).astype(c.compute_dtype)
    if c.embed_scale:
      x = x * jnp.asarray(math.sqrt(c.d_model), c.compute_dtype)
    return x

  def decode(self, hidden: Array) -> Array:
    """f32[..., V] = hidden · embeddingᵀ."""
    dt = self.config.compute_dtype
    return matmul_last(hidden.astype(dt), self.embedding[...].astype(dt).T, 1,
                       preferred_element_type=jnp.float32)
