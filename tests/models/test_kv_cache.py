"""KVCache construction and logical axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import kv_cache
from tests.models import _util


def test_init_cache_shapes_dtypes_and_zeros():
  cfg = _util.micro_config()
  cache = kv_cache.init_cache(cfg, 3, 11)
  assert cache.k.shape == cache.v.shape == (2, 3, 11, 2, 8)
  assert cache.k.dtype == jnp.float32
  assert cache.mask.shape == (3, 11) and cache.mask.dtype == jnp.bool_
  assert cache.index.shape == () and cache.index.dtype == jnp.int32
  assert int(cache.index) == 0 and not np.asarray(cache.mask).any()
  assert not np.asarray(cache.k).any()
  assert (cache.max_len, cache.batch_size) == (11, 3)
  assert kv_cache.init_cache(cfg, 1, 4, jnp.bfloat16).v.dtype == jnp.bfloat16
  assert kv_cache.init_cache(cfg.replace(dtype="bfloat16"), 1, 4).k.dtype == jnp.bfloat16


def test_cache_is_a_pytree_of_four_leaves():
  cache = kv_cache.init_cache(_util.micro_config(), 1, 4)
  assert len(jax.tree.leaves(cache)) == 4
  doubled = jax.tree.map(lambda x: x, cache)
  assert isinstance(doubled, kv_cache.KVCache)


def test_cache_logical_axes_match_ranks():
  cache = kv_cache.init_cache(_util.micro_config(), 1, 4)
  axes = kv_cache.cache_logical_axes()
  for name in ("k", "v", "mask", "index"):
    assert len(getattr(axes, name)) == getattr(cache, name).ndim


def test_bad_sizes_raise():
  with pytest.raises(ValueError, match="max_len"):
    kv_cache.init_cache(_util.micro_config(), 2, 0)
