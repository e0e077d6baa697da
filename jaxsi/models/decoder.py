"""The decoder-only transformer (Flax NNX): blocks, masks and the cached pass.

Block (pre-norm; Gemma adds the optional post norms)::

    x = x + post_attn_norm(attn(input_norm(x)))
    x = x + post_ffw_norm(mlp(pre_ffw_norm(x)))

Layers are a Python list of blocks (``layers.0``, ``layers.1``, … in the
parameter dict, one-to-one with Hugging Face ``model.layers.{i}``), or with
``config.scan_layers`` one block whose parameters are stacked on a leading
``layers`` axis and run by ``jax.lax.scan`` (one compiled block for all L).
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsi.models import layers as L
from jaxsi.models.config import ModelConfig
from jaxsi.models.kv_cache import KVCache

Array = jax.Array


def attention_mask(input_mask: Array, segment_ids: Optional[Array] = None,
                   window: Optional[int] = None) -> Array:
  """bool[B, T, T] for an uncached pass: causal ∧ key is real ∧ same segment.

  Args:
    input_mask: bool[B, T] real tokens.
    segment_ids: int[B, T] packing segments, or None (one segment per row).
    window: if set, also query − key < window (sliding-window layers; real
      tokens of a row/segment are contiguous, so index distance = position
      distance).
  """
  t = input_mask.shape[1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  if window is not None:
    causal = causal & ~jnp.tril(jnp.ones((t, t), bool), -window)
  mask = causal[None] & input_mask[:, None, :]
  if segment_ids is not None:
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
  return mask


def cached_attention_mask(slot_mask: Array, index: Array, length: int,
                          window: Optional[int] = None) -> Array:
  """bool[B, T, S] for T queries at slots index..index+T-1 over S cache slots.

  Query at slot i may attend slot j iff j <= i and slot j holds a real token
  (and i − j < window for sliding-window layers).
  """
  s = slot_mask.shape[1]
  query_slots = index + jnp.arange(length, dtype=jnp.int32)
  key_slots = jnp.arange(s, dtype=jnp.int32)[None, :]
  causal = key_slots <= query_slots[:, None]
  if window is not None:
    causal = causal & (query_slots[:, None] - key_slots < window)
  return causal[None] & slot_mask[:, None, :]


class Block(nnx.Module):
  """One transformer block (``local``: sliding-window layer)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               local: bool = False):
    c = config
    self.local = local
    norm = lambda: L.RMSNorm(c.d_model, eps=c.norm_eps, offset=c.norm_offset,
                             param_dtype=c.params_dtype)
    self.input_norm = norm()
    self.attn = L.Attention(c, rngs=rngs, local=local)
    self.post_attn_norm = norm() if c.post_attn_norm else None
    self.pre_ffw_norm = norm()
    self.mlp = L.MLP(c, rngs=rngs)
    self.post_ffw_norm = norm() if c.post_ffw_norm else None

  def __call__(self, x: Array, positions: Array, mask: Array,
               cache_kv: Optional[Tuple[Array, Array]] = None,
               layer: int = 0, index: Optional[Array] = None):
    """Applies the block.

    Args:
      x: [B, T, D] residual stream.
      positions: int[B, T].
      mask: bool[B, T, S] (S = T without cache, cache slots with cache).
      cache_kv: (k, v) arrays [L, B, S, Hkv, Dh] of all layers, or None.
      layer: this block's index into the cache arrays.
      index: int32[] first cache slot written by these T tokens.

    Returns:
      (x, cache_kv) with this layer's slots updated (None without cache).
    """
    h = self.input_norm(x)
    q, k, v = self.attn.project(h, positions)
    if cache_kv is not None:
      ck, cv = cache_kv
      zero = jnp.zeros((), jnp.int32)
      start = (jnp.asarray(layer, jnp.int32), zero, index, zero, zero)
      ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), start)
      cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), start)
      k, v = ck[layer], cv[layer]
      cache_kv = (ck, cv)
    a = self.attn.attend(q, k, v, mask, heads_first=cache_kv is None)
    if self.post_attn_norm is not None:
      a = self.post_attn_norm(a)
    x = x + a.astype(x.dtype)
    m = self.mlp(self.pre_ffw_norm(x))
    if self.post_ffw_norm is not None:
      m = self.post_ffw_norm(m)
    x = x + m.astype(x.dtype)
    return x, cache_kv


def _remat_block(block: "Block", x: Array, positions: Array, mask: Array):
  """``block(x, positions, mask)`` under ``jax.checkpoint``: the backward pass
  recomputes the block's activations from its inputs (nothing else saved)."""
  graphdef, state = nnx.split(block)

  def apply(state, x, positions, mask):
    return nnx.merge(graphdef, state)(x, positions, mask)[0]

  return jax.checkpoint(
      apply, policy=jax.checkpoint_policies.nothing_saveable)(
          state, x, positions, mask)


def _scan_blocks(block: "Block", x: Array, positions: Array, mask: Array, *,
                 remat: bool) -> Array:
  """The blocks of a scanned decoder over ``x`` (no cache).

  ``block`` holds ``[L, ...]`` parameters; ``jax.lax.scan`` slices one
  layer's parameters per step (with ``remat`` the step is under
  ``jax.checkpoint``: the backward pass recomputes it from its input).
  """
  graphdef, state = nnx.split(block)

  def body(x, layer_state):
    return nnx.merge(graphdef, layer_state)(x, positions, mask)[0], None

  if remat:
    body = jax.checkpoint(body, prevent_cse=False,
                          policy=jax.checkpoint_policies.nothing_saveable)
  x, _ = jax.lax.scan(body, x, state)
  return x


def _scan_blocks_cached(block: "Block", x: Array, positions: Array,
                        mask: Array, kv: Tuple[Array, Array], index: Array):
  """The cached pass of a scanned decoder: the [L, B, S, Hkv, Dh] cache is in
  the scan carry and each step updates its own layer's slots in place."""
  graphdef, state = nnx.split(block)

  def body(carry, layer_state):
    x, kv, layer = carry
    x, kv = nnx.merge(graphdef, layer_state)(x, positions, mask, cache_kv=kv,
                                             layer=layer, index=index)
    return (x, kv, layer + 1), None

  (x, kv, _), _ = jax.lax.scan(body, (x, kv, jnp.zeros((), jnp.int32)), state)
  return x, kv


class Decoder(nnx.Module):
  """Embedding → blocks → final RMSNorm; unembedding and value head."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    self.embedder = L.Embedder(c, rngs=rngs)
    if c.scan_layers:
      # One block; its parameters are given stacked [L, ...] (model.py).
      self.layers = Block(c, rngs=rngs)
    else:
      self.layers = nnx.List([Block(c, rngs=rngs, local=c.is_local_layer(i))
                              for i in range(c.n_layers)])
    self.final_norm = L.RMSNorm(c.d_model, eps=c.norm_eps,
                                offset=c.norm_offset, param_dtype=c.params_dtype)
    if c.tie_embeddings:
      self.lm_head = None
    else:
      self.lm_head = L.Dense((c.d_model, c.vocab_size), ("embed", "vocab"),
                             "...d,dv->...v", std=c.d_model ** -0.5,
                             dtype=c.compute_dtype, param_dtype=c.params_dtype,
                             rngs=rngs)
    if c.value_head:
      self.value_head = L.Dense((c.d_model, 1), ("embed", None),
                                "...d,do->...o", use_bias=True,
                                std=c.d_model ** -0.5, dtype=jnp.float32,
                                param_dtype=c.params_dtype, rngs=rngs)
    else:
      self.value_head = None

  def __call__(self, tokens: Array, positions: Array,
               input_mask: Optional[Array] = None,
               segment_ids: Optional[Array] = None,
               cache: Optional[KVCache] = None):
    """Final-normed hidden states [B, T, D] and the updated cache (or None)."""
    c = self.config
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(f"Decoder: tokens must be [B, T], got shape {tokens.shape}")
    b, t = tokens.shape
    positions = jnp.asarray(positions)
    if positions.shape != (b, t):
      raise ValueError(
          f"Decoder: positions has shape {positions.shape}, expected {(b, t)}")
    if input_mask is None:
      input_mask = jnp.ones((b, t), bool)
    else:
      input_mask = jnp.asarray(input_mask)
      if input_mask.shape != (b, t):
        raise ValueError(
            f"Decoder: input_mask has shape {input_mask.shape}, expected {(b, t)}")
      input_mask = input_mask.astype(bool)
    if segment_ids is not None:
      segment_ids = jnp.asarray(segment_ids)
      if segment_ids.shape != (b, t):
        raise ValueError(
            f"Decoder: segment_ids has shape {segment_ids.shape}, expected {(b, t)}")

    if cache is not None:
      if segment_ids is not None:
        raise ValueError(
            "Decoder: segment_ids (packing) cannot be combined with a KVCache; "
            "decode one sequence per row instead")
      want = (c.n_layers, b, cache.k.shape[2], c.n_kv_heads, c.head_dim)
      if cache.k.shape != want or cache.v.shape != want:
        raise ValueError(
            f"Decoder: cache.k/v have shapes {cache.k.shape}/{cache.v.shape}, "
            f"expected [L, B, S, Hkv, Dh] = {want}")
      if cache.mask.shape != (b, cache.k.shape[2]):
        raise ValueError(
            f"Decoder: cache.mask has shape {cache.mask.shape}, expected "
            f"{(b, cache.k.shape[2])}")
      if t > cache.max_len:
        raise ValueError(
            f"Decoder: {t} new tokens do not fit a cache of {cache.max_len} slots")

    x = self.embedder.encode(tokens)
    if cache is None and c.scan_layers:
      x = _scan_blocks(self.layers, x, positions,
                       attention_mask(input_mask, segment_ids), remat=c.remat)
      return self.final_norm(x), None
    if cache is None:
      masks = {False: attention_mask(input_mask, segment_ids)}
      if any(block.local for block in self.layers):
        masks[True] = attention_mask(input_mask, segment_ids, c.sliding_window)
      for block in self.layers:
        if c.remat:
          x = _remat_block(block, x, positions, masks[block.local])
        else:
          x, _ = block(x, positions, masks[block.local])
      return self.final_norm(x), None

    index = jnp.asarray(cache.index, jnp.int32)
    slot_mask = jax.lax.dynamic_update_slice(
        cache.mask, input_mask, (jnp.zeros((), jnp.int32), index))
    masks = {False: cached_attention_mask(slot_mask, index, t)}
    if not c.scan_layers and any(block.local for block in self.layers):
      masks[True] = cached_attention_mask(slot_mask, index, t, c.sliding_window)
    kv = (cache.k, cache.v)
    if c.scan_layers:
      x, kv = _scan_blocks_cached(self.layers, x, positions, masks[False], kv,
                                  index)
      new_cache = KVCache(k=kv[0], v=kv[1], mask=slot_mask, index=index + t)
      return self.final_norm(x), new_cache
    for i, block in enumerate(self.layers):
      x, kv = block(x, positions, masks[block.local], cache_kv=kv, layer=i,
                    index=index)
    new_cache = KVCache(k=kv[0], v=kv[1], mask=slot_mask, index=index + t)
    return self.final_norm(x), new_cache

  def logits(self, hidden: Array) -> Array:
    """f32[..., V] logits from final hidden states (+ final softcap)."""
    c = self.config
    if self.lm_head is None:
      z = self.embedder.decode(hidden)
    else:
      dt = c.compute_dtype
      z = L.matmul_last(hidden.astype(dt), self.lm_head.kernel[...].astype(dt),
                        1, preferred_element_type=jnp.float32)
    z = z.astype(jnp.float32)
    if c.final_logit_softcap is not None:
      cap = c.final_logit_softcap
      z = cap * jnp.tanh(z / cap)
    return z

  def values(self, hidden: Array) -> Array:
    """f32[...] value-head outputs from final hidden states."""
    if self.value_head is None:
      raise ValueError(
          "Decoder.values: the model has no value head; build it with "
          "ModelConfig.value_head=True")
    return self.value_head(hidden.astype(jnp.float32))[..., 0]

