"""Moving host values onto devices and back, single- or multi-process.

The loop's host stages (rewards, rollout bookkeeping) see numpy; its jitted
steps see global arrays on a mesh. These helpers are the only place that
crosses that line, so a multi-process run (``jax.distributed``) and a
single-process run take the same code path.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np


def to_host(tree):
  """numpy copy of ``tree``; with several processes, the whole global value
  on every process (``process_allgather``)."""
  if jax.process_count() > 1:
    return jax.tree.map(np.asarray,
                        multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, jax.device_get(tree))


def host_key(key) -> np.ndarray:
  """The raw uint32 data of a PRNG key, on the host.

  Keys are derived eagerly from (seed, iteration); passing their data as
  numpy makes them a jit argument that every process agrees on (a key
  computed eagerly lives on one local device). The jitted functions use it
  as a raw key: the same random bits as the typed key.
  """
  return np.asarray(jax.random.key_data(key))


def to_global(tree, sharding):
  """Global arrays on ``sharding`` from host values every process holds in
  full (single process: like ``device_put``)."""
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(one, tree)


def as_global(tree, shardings):
  """``tree`` as global arrays on ``shardings`` (multi-process only: leaves
  that are not yet global are built from their host values; a model loaded
  with ``hf.load_pretrained(mesh=...)`` is already global)."""
  if jax.process_count() == 1:
    return tree
  def one(x, sh):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sh, lambda idx: host[idx])
  return jax.tree.map(one, tree, shardings)


def to_device(tree):
  return jax.tree.map(jnp.asarray, tree)


def copy(tree, shardings=None):
  """A copy of ``tree`` on ``shardings`` (fresh, donatable buffers)."""
  return jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                 out_shardings=shardings)(tree)
