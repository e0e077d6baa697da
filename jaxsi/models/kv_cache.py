"""Functional key/value cache for incremental decoding.

The cache is a plain pytree returned by every cached forward pass (nothing is
mutated). All layers share one array per k/v so the whole cache is four leaves.
Slots are shared by the batch: prompts are left-padded to a common length, so
``index`` (the next write slot) is one scalar, and ``mask`` says which slots
hold real tokens.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxsi.models.config import ModelConfig

Array = jax.Array

# Logical axis names of the cache leaves (for activation sharding rules).
CACHE_KV_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")
CACHE_MASK_AXES = ("batch", "length")


@flax.struct.dataclass
class KVCache:
  """Keys/values of every layer for S slots.

  Attributes:
    k: [L, B, S, Hkv, Dh] keys (already rotated by RoPE).
    v: [L, B, S, Hkv, Dh] values.
    mask: bool[B, S] slot holds a real token.
    index: int32[] next slot to write (shared by the batch).
  """

  k: Array
  v: Array
  mask: Array
  index: Array

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  @property
  def batch_size(self) -> int:
    return self.k.shape[1]


def init_cache(config: ModelConfig, batch_size: int, max_len: int,
               dtype: Optional[Any] = None) -> KVCache:
  """An empty cache (all slots invalid, index 0).

  Args:
    config: the model config (layers, kv heads, head dim).
    batch_size: B.
    max_len: number of slots S (prompt + generation budget).
    dtype: k/v dtype; defaults to ``config.dtype``.

  Returns:
    A KVCache of zeros.
  """
  if batch_size <= 0 or max_len <= 0:
    raise ValueError(
        f"init_cache: batch_size and max_len must be positive, got "
        f"batch_size={batch_size}, max_len={max_len}")
  dtype = jnp.dtype(config.dtype if dtype is None else dtype)
  shape = (config.n_layers, batch_size, max_len, config.n_kv_heads,
           config.head_dim)
  return KVCache(
      k=jnp.zeros(shape, dtype),
      v=jnp.zeros(shape, dtype),
      mask=jnp.zeros((batch_size, max_len), bool),
      index=jnp.zeros((), jnp.int32),
  )


def cache_logical_axes() -> KVCache:
  """A KVCache whose leaves are logical axis-name tuples (for sharding)."""
  return KVCache(k=CACHE_KV_AXES, v=CACHE_KV_AXES, mask=CACHE_MASK_AXES,
                 index=())
