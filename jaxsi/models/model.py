"""The functional boundary of the decoder: a static Model and a params dict.

``init(config, rng) -> (model, params)``: ``model`` is a frozen, hashable
dataclass (config + NNX graphdef) that can be closed over or passed as a static
argument; ``params`` is a plain nested dict of arrays (``nnx.State.to_pure_dict``)
that is the only traced argument of jitted functions. ``Model.apply`` merges the
graphdef with the params inside the traced function (no ``nnx.jit``, no
in-place state), following the "functional training loop" of the NNX docs.

Example::

  cfg = config.get_config("tiny", vocab_size=64)
  model, params = init(cfg, jax.random.key(0))
  logits, _ = jax.jit(model.apply)(params, tokens, positions)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsi.models import config as mcfg
from jaxsi.models import layers
from jaxsi.models.config import ModelConfig
from jaxsi.models.decoder import Decoder
from jaxsi.models.kv_cache import KVCache, init_cache

Array = jax.Array
Params = Any  # nested dict of arrays


def _param_state(module: nnx.Module):
  graphdef, state, *rest = nnx.split(module, nnx.Param, ...)
  leftover = [s for s in rest if jax.tree.leaves(s)]
  if leftover:
    raise RuntimeError(f"Decoder holds non-Param state: {leftover}")
  return graphdef, state


def _unscanned(config: ModelConfig) -> ModelConfig:
  return config.replace(scan_layers=False)


def _stack_flat(flat, n_layers: int):
  """Flat entries of the unscanned layout -> the scanned one: the entries of
  ``layers.i.*`` become one ``layers.*`` entry of shape ``(L, ...)`` with
  logical axes ``('layers', ...)`` (order: first occurrence)."""
  out, seen = [], set()
  for path, sds, axes, init, std in flat:
    if path[0] != "layers":
      out.append((path, sds, axes, init, std))
      continue
    rest = ("layers",) + tuple(path[2:])
    if rest in seen:
      continue
    seen.add(rest)
    out.append((rest, jax.ShapeDtypeStruct((n_layers,) + tuple(sds.shape), sds.dtype),
                ("layers",) + tuple(axes), init, std))
  return tuple(out)


@functools.lru_cache(maxsize=64)
def _abstract(config: ModelConfig):
  """(graphdef, flat params) of an abstract Decoder.

  Each flat entry is ``(path, ShapeDtypeStruct, axes, init, init_std)``.
  With ``scan_layers`` the entries are the unscanned ones stacked (see
  ``_stack_flat``) and the graphdef is the scanned Decoder's.
  """
  if config.scan_layers:
    with layers.shape_only():
      module = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    graphdef, _ = _param_state(module)
    return graphdef, _stack_flat(_abstract(_unscanned(config))[1],
                                 config.n_layers)
  with layers.shape_only():
    module = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  graphdef, state = _param_state(module)
  flat = []
  for path, var in nnx.to_flat_state(state):
    meta = var.get_metadata()
    axes = tuple(meta.get("out_sharding", meta.get("sharding", ())) or ())
    value = var.get_value()
    if len(axes) != len(value.shape):
      raise RuntimeError(f"param {path}: axes {axes} vs shape {value.shape}")
    flat.append((tuple(path), jax.ShapeDtypeStruct(value.shape, value.dtype),
                 axes, meta.get("init", "normal"), meta.get("init_std", 1.0)))
  return graphdef, tuple(flat)


def _init_flat(config: ModelConfig, rng: Array) -> Params:
  """Draws all parameters: one N(0,1) vector sliced and scaled per param.

  Same distributions as constructing the Decoder, but a single random op, so
  it compiles (or runs eagerly) much faster than one draw per parameter.
  With ``scan_layers`` the unscanned params are drawn and stacked: the same
  values in both layouts.
  """
  if config.scan_layers:
    return stack_layers(_init_flat(_unscanned(config), rng))
  _, flat = _abstract(config)
  sizes = [math.prod(sds.shape) for _, sds, _, init, _ in flat
           if init == "normal"]
  z = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  items, offset = [], 0
  for path, sds, _, init, std in flat:
    if init == "normal":
      n = math.prod(sds.shape)
      value = (std * z[offset:offset + n]).reshape(sds.shape).astype(sds.dtype)
      offset += n
    elif init == "zeros":
      value = jnp.zeros(sds.shape, sds.dtype)
    elif init == "ones":
      value = jnp.ones(sds.shape, sds.dtype)
    else:
      raise RuntimeError(f"param {path}: unknown init {init!r}")
    items.append((path, value))
  return _unflatten(items)


_init_flat_jit = jax.jit(_init_flat, static_argnums=0)


def canonicalize_params(params: Params) -> Params:
  """Accepts layer keys as strings ('0', '1', …, e.g. an Orbax restore without
  a target) and returns the params with integer layer keys."""
  layers_ = params.get("layers") if isinstance(params, dict) else None
  if isinstance(layers_, dict) and any(isinstance(k, str) and k.isdigit()
                                       for k in layers_):
    params = dict(params)
    params["layers"] = {int(k): v for k, v in layers_.items()}
  return params


def is_stacked(params: Params) -> bool:
  """True if ``params['layers']`` is in the scanned layout (one block's dict
  of ``[L, ...]`` arrays), False for per-layer dicts ``{0: …, 1: …}``."""
  layers_ = params.get("layers") if isinstance(params, dict) else None
  if not isinstance(layers_, dict) or not layers_:
    return False
  return not all(isinstance(k, int) or (isinstance(k, str) and k.isdigit())
                 for k in layers_)


def stack_layers(params: Params) -> Params:
  """Per-layer params ``layers.{i}.*`` -> the scanned layout ``layers.*`` of
  ``[L, ...]`` arrays (``ModelConfig.scan_layers``); other entries shared.

  Use it to load a checkpoint or params of the unscanned layout into a
  ``scan_layers=True`` model (``unstack_layers`` is the inverse).
  """
  params = canonicalize_params(params)
  if is_stacked(params):
    return params
  per_layer = params["layers"]
  order = sorted(per_layer)
  if order != list(range(len(order))):
    raise ValueError(f"stack_layers: layer keys {order} are not 0..L-1")
  out = dict(params)
  out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                               *[per_layer[i] for i in order])
  return out


def unstack_layers(params: Params) -> Params:
  """The scanned layout ``layers.*`` of ``[L, ...]`` arrays -> per-layer
  params ``layers.{i}.*`` (the Hugging Face / unscanned layout)."""
  if not is_stacked(params):
    return canonicalize_params(params)
  stacked = params["layers"]
  n = {x.shape[0] for x in jax.tree.leaves(stacked)}
  if len(n) != 1:
    raise ValueError(f"unstack_layers: stacked leaves disagree on L: {sorted(n)}")
  out = dict(params)
  out["layers"] = {i: jax.tree.map(lambda x, i=i: x[i], stacked)
                   for i in range(n.pop())}
  return out


def _check_layout(config: ModelConfig, params: Params) -> None:
  if not isinstance(params, dict) or "layers" not in params:
    return
  stacked = is_stacked(params)
  if stacked != config.scan_layers:
    have = "scanned ([L, ...] arrays)" if stacked else "per-layer (layers.0, layers.1, ...)"
    fix = "model.stack_layers(params)" if config.scan_layers else "model.unstack_layers(params)"
    raise ValueError(
        f"Model: params['layers'] are in the {have} layout but the model has "
        f"ModelConfig.scan_layers={config.scan_layers}; convert them with "
        f"jaxsi.models.{fix} (e.g. a checkpoint written before the switch)")


def _unflatten(items):
  out: dict = {}
  for path, leaf in items:
    d = out
    for key in path[:-1]:
      d = d.setdefault(key, {})
    d[path[-1]] = leaf
  return out


@dataclasses.dataclass(frozen=True)
class Model:
  """Static half of a decoder: config + NNX graph definition (hashable).

  Attributes:
    config: the ModelConfig.
    graphdef: the nnx GraphDef of the Decoder (structure, no arrays).
  """

  config: ModelConfig
  graphdef: Any

  # ------------------------------------------------------------------ core
  def module(self, params: Params) -> Decoder:
    """The NNX Decoder with ``params`` merged in (call inside traced code)."""
    params = canonicalize_params(params)
    _check_layout(self.config, params)
    return nnx.merge(self.graphdef, params)

  def apply(self, params: Params, tokens: Array, positions: Array,
            input_mask: Optional[Array] = None,
            segment_ids: Optional[Array] = None,
            cache: Optional[KVCache] = None,
            return_hidden: bool = False) -> Tuple[Array, Optional[KVCache]]:
    """Forward pass.

    Args:
      params: the params dict from ``init``.
      tokens: int[B, T].
      positions: int[B, T] RoPE positions (explicit; 0 at the first real token
        of a left-padded row).
      input_mask: bool[B, T] real tokens (default: all real).
      segment_ids: int[B, T] packing segments; tokens attend only within their
        segment (not allowed together with ``cache``).
      cache: a KVCache: the T new keys/values are written at slots
        ``cache.index .. cache.index + T - 1`` (the caller guarantees they fit:
        ``index + T <= S``), each query attends the real slots up to its own.
      return_hidden: return final-normed hidden states instead of logits.

    Returns:
      (f32[B, T, V] logits, or [B, T, D] hidden states in ``config.dtype``;
      the updated cache with ``index += T``, or None without a cache).
    """
    decoder = self.module(params)
    hidden, cache = decoder(tokens, positions, input_mask=input_mask,
                            segment_ids=segment_ids, cache=cache)
    if return_hidden:
      return hidden, cache
    return decoder.logits(hidden), cache

  def logits(self, params: Params, hidden: Array) -> Array:
    """f32[..., V] unembedding of final hidden states (+ final softcap)."""
    return self.module(params).logits(hidden)

  def values(self, params: Params, hidden: Array) -> Array:
    """f32[...] value-head outputs (requires ``config.value_head``)."""
    return self.module(params).values(hidden)

  def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
    """An empty KVCache with ``max_len`` slots (dtype default: config.dtype)."""
    return init_cache(self.config, batch_size, max_len, dtype)

  # --------------------------------------------------------------- shapes
  def logical_axes(self) -> Params:
    """Pytree like params whose leaves are tuples of logical axis names.

    Tuples are pytree nodes: map over it with
    ``jax.tree.map(f, axes, params, is_leaf=lambda x: isinstance(x, tuple))``
    or use ``logical_specs()``.
    """
    _, flat = _abstract(self.config)
    return _unflatten((f[0], f[2]) for f in flat)

  def logical_specs(self) -> Params:
    """Pytree like params of ``PartitionSpec(*logical_names)`` leaves."""
    _, flat = _abstract(self.config)
    return _unflatten((f[0], jax.sharding.PartitionSpec(*f[2])) for f in flat)

  def abstract_params(self) -> Params:
    """Pytree like params of jax.ShapeDtypeStruct (no allocation)."""
    _, flat = _abstract(self.config)
    return _unflatten((f[0], f[1]) for f in flat)

  def init_params(self, rng: Array) -> Params:
    """Freshly initialised params (jitted; callable under an outer jit with
    ``out_shardings`` derived from ``logical_specs()``)."""
    return _init_flat_jit(self.config, rng)

  @property
  def num_params(self) -> int:
    return mcfg.num_params(self.config)


def build(config: ModelConfig) -> Model:
  """The static Model for ``config`` without allocating parameters."""
  if not isinstance(config, ModelConfig):
    raise TypeError(f"build: config must be a ModelConfig, got {type(config).__name__}")
  graphdef, _ = _abstract(config)
  return Model(config=config, graphdef=graphdef)


def init(config: ModelConfig, rng: Array) -> Tuple[Model, Params]:
  """Builds the decoder for ``config`` and initialises its parameters.

  Args:
    config: a ModelConfig (e.g. ``get_config('tiny')``).
    rng: a PRNG key.

  Returns:
    (model, params): the static Model and a nested dict of arrays.
  """
  model = build(config)
  return model, model.init_params(rng)


def count_params(params: Params) -> int:
  """Number of scalars in a params pytree."""
  return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))
