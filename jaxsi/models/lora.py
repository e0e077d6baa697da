"""LoRA adapters on chosen projections of the decoder, the base frozen.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language
Models", Eq. 3): a frozen projection ``y = x·W`` becomes

    y = x·W + (alpha / r) · (x·A)·B,     A: [in, r] ~ N(0, 1/in),  B: [r, out] = 0

so the adapted model starts equal to the base. jaxsi kernels have several
input/output axes (``q_proj: [D, H, Dh]``, ``o_proj: [H, Dh, D]``); A is
``[*in_axes, r]`` and B ``[r, *out_axes]``.

Params stay one nested dict: the adapted projections gain ``lora_a`` and
``lora_b`` leaves next to their ``kernel`` (``layers.3.attn.q_proj.lora_a``).
Hence:

* ``base_params(params)`` drops those leaves — a new dict over the *same*
  arrays, no copy — and ``model.base_model.apply(base_params(params), ...)``
  is the reference policy (the base without adapters);
* ``LoraModel.apply`` stops gradients at every base leaf, so ``jax.grad`` of a
  loss does no backward work for frozen weights, and ``freeze_base(optimizer)``
  makes their updates exactly zero without optimizer state;
* ``merge(model, params)`` folds the adapters into the kernels, giving base
  ``(Model, params)`` for export with ``jaxsi.models.hf.save_pretrained``;
  ``save_peft_adapters`` writes the adapters alone in the PEFT layout.

Example::

  base_model, base = hf.load_pretrained(path)
  model = lora.build(base_model.config, lora.LoraConfig(rank=16, alpha=32))
  params = lora.add_adapters(base, model.init_adapters(rng))
  optimizer = lora.freeze_base(make_optimizer(...))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsi.models import layers as L
from jaxsi.models import model as mmodel
from jaxsi.models.config import ModelConfig
from jaxsi.models.decoder import Decoder

Params = Any
LORA_LEAVES = ("lora_a", "lora_b")
ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
TARGETS = ATTN_TARGETS + MLP_TARGETS


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Which projections get adapters, and their rank and scale.

  Attributes:
    rank: r, the adapter rank.
    alpha: scale numerator; the update is multiplied by ``alpha / rank``.
    targets: projection names among ``TARGETS``.
    layers: indices of the adapted layers (None: all).
  """

  rank: int = 8
  alpha: float = 16.0
  targets: Tuple[str, ...] = ATTN_TARGETS
  layers: Optional[Tuple[int, ...]] = None

  def __post_init__(self):
    if not isinstance(self.rank, int) or self.rank <= 0:
      raise ValueError(f"LoraConfig.rank must be a positive int, got {self.rank!r}")
    targets = tuple(self.targets)
    bad = sorted(set(targets) - set(TARGETS))
    if bad or not targets:
      raise ValueError(f"LoraConfig.targets: unknown {bad} (or empty); valid: "
                       f"{list(TARGETS)}")
    object.__setattr__(self, "targets", targets)
    if self.layers is not None:
      object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

  @property
  def scale(self) -> float:
    return float(self.alpha) / self.rank


def _n_in(spec: str) -> int:
  """Number of leading kernel axes contracted with the input (from the spec)."""
  inputs, _ = spec.split("->")
  x, kernel = inputs.split(",")
  return sum(1 for a in kernel if a in x)


class LoraDense(L.Dense):
  """A Dense with a low-rank update; ``kernel``/``bias`` are the base's."""

  def __init__(self, dense: L.Dense, *, rank: int, scale: float,
               rngs: nnx.Rngs):
    # Same Variables as the base Dense: same param paths and logical axes.
    self.spec = dense.spec
    self.dtype = dense.dtype
    self.kernel = dense.kernel
    self.bias = dense.bias
    self.scale = float(scale)
    n_in = _n_in(dense.spec)
    self.n_in = n_in
    shape = dense.kernel.get_value().shape
    meta = dense.kernel.get_metadata()
    axes = tuple(meta.get("out_sharding", meta.get("sharding", ())) or ())
    pdt = dense.kernel.get_value().dtype
    fan_in = math.prod(shape[:n_in])
    self.lora_a = L.param(rngs, shape[:n_in] + (rank,), axes[:n_in] + (None,),
                          init="normal", std=fan_in ** -0.5, dtype=pdt)
    self.lora_b = L.param(None, (rank,) + shape[n_in:], (None,) + axes[n_in:],
                          init="zeros", dtype=pdt)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = super().__call__(x)
    a = self.lora_a[...].astype(self.dtype)
    b = self.lora_b[...].astype(self.dtype)
    in_shape, r = a.shape[:-1], a.shape[-1]
    lead = x.shape[:x.ndim - len(in_shape)]
    xa = x.astype(self.dtype).reshape(lead + (-1,)) @ a.reshape(-1, r)
    delta = (xa @ b.reshape(r, -1)).reshape(lead + b.shape[1:])
    return y + (self.scale * delta).astype(y.dtype)


def _target_parent(block, target: str):
  return block.attn if target in ATTN_TARGETS else block.mlp


def _build_module(config: ModelConfig, lora: LoraConfig) -> Decoder:
  decoder = Decoder(config, rngs=nnx.Rngs(0))
  rngs = nnx.Rngs(1)
  # Scanned: one template block stands for all L (its params come stacked).
  blocks = [decoder.layers] if config.scan_layers else decoder.layers
  for i, block in enumerate(blocks):
    if lora.layers is not None and i not in lora.layers:
      continue
    for target in lora.targets:
      parent = _target_parent(block, target)
      setattr(parent, target, LoraDense(getattr(parent, target),
                                        rank=lora.rank, scale=lora.scale,
                                        rngs=rngs))
  return decoder


@functools.lru_cache(maxsize=32)
def _abstract(config: ModelConfig, lora: LoraConfig):
  if lora.layers is not None:
    bad = [i for i in lora.layers if not 0 <= i < config.n_layers]
    if bad:
      raise ValueError(f"LoraConfig.layers {bad} outside [0, {config.n_layers})")
    if config.scan_layers and sorted(set(lora.layers)) != list(range(config.n_layers)):
      raise ValueError(
          f"LoraConfig.layers={lora.layers}: a scan_layers=True model adapts "
          "every layer (the layers share one scanned block); use layers=None "
          "or ModelConfig.scan_layers=False")
  if config.scan_layers:
    with L.shape_only():
      module = nnx.eval_shape(lambda: _build_module(config, lora))
    graphdef, _ = mmodel._param_state(module)  # pylint: disable=protected-access
    _, flat = _abstract(config.replace(scan_layers=False), lora)
    return graphdef, mmodel._stack_flat(flat, config.n_layers)  # pylint: disable=protected-access
  with L.shape_only():
    module = nnx.eval_shape(lambda: _build_module(config, lora))
  graphdef, state = mmodel._param_state(module)  # pylint: disable=protected-access
  flat = []
  for path, var in nnx.to_flat_state(state):
    meta = var.get_metadata()
    axes = tuple(meta.get("out_sharding", meta.get("sharding", ())) or ())
    value = var.get_value()
    flat.append((tuple(path), jax.ShapeDtypeStruct(value.shape, value.dtype),
                 axes, meta.get("init", "normal"), meta.get("init_std", 1.0)))
  return graphdef, tuple(flat)


def is_lora_path(path: Sequence[Any]) -> bool:
  """True for the path of an adapter leaf (last key ``lora_a``/``lora_b``)."""
  last = path[-1]
  last = getattr(last, "key", last)
  return last in LORA_LEAVES


def _map_with_path(fn, tree):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: fn(tuple(getattr(k, "key", getattr(k, "idx", k))
                            for k in p), x), tree)


def _filter(tree: Params, keep) -> Params:
  """Nested dict with only the leaves whose path satisfies ``keep``."""
  if not isinstance(tree, dict):
    raise TypeError(f"expected a nested dict of params, got {type(tree).__name__}")
  return _filter_path(tree, keep, ())


def _filter_path(tree, keep, prefix):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      sub = _filter_path(v, keep, prefix + (k,))
      if sub:
        out[k] = sub
    elif keep(prefix + (k,)):
      out[k] = v
  return out


def base_params(params: Params) -> Params:
  """The params without adapter leaves (same arrays, no copy)."""
  return _filter(params, lambda p: not is_lora_path(p))


def adapter_params(params: Params) -> Params:
  """Only the adapter leaves (same arrays, no copy)."""
  return _filter(params, is_lora_path)


def add_adapters(base: Params, adapters: Params) -> Params:
  """Base params with adapter leaves added (a new dict; arrays shared)."""
  def merge(a, b, path):
    out = dict(a)
    for k, v in b.items():
      if isinstance(v, dict):
        if not isinstance(a.get(k), dict):
          raise ValueError(f"add_adapters: {path + (k,)} is not in the base params")
        out[k] = merge(a[k], v, path + (k,))
      else:
        if k not in LORA_LEAVES:
          raise ValueError(f"add_adapters: {path + (k,)} is not an adapter leaf")
        out[k] = v
    return out
  return merge(base, adapters, ())


def reference_params(params: Params) -> Params:
  """The reference policy in the *adapted* structure: base arrays shared (no
  copy) and zero adapters (``B = 0``), so ``LoraModel.apply`` on it equals
  the base model. Use where a scorer expects the policy's params structure
  (``ctx.score('policy', 'reference', …)``); only the small ``lora_b``
  zeros are new arrays."""
  return _map_with_path(
      lambda p, x: jnp.zeros_like(x) if p[-1] == "lora_b" else x, params)


def trainable_mask(params: Params) -> Params:
  """Pytree like params: True on adapter leaves, False on frozen ones."""
  return _map_with_path(lambda p, _: is_lora_path(p), params)


def freeze_base(optimizer: optax.GradientTransformation
                ) -> optax.GradientTransformation:
  """``optimizer`` on the adapters, exactly-zero updates (and no state) for
  every base leaf."""
  return optax.multi_transform(
      {"lora": optimizer, "frozen": optax.set_to_zero()},
      lambda params: _map_with_path(
          lambda p, _: "lora" if is_lora_path(p) else "frozen", params))


def is_base_frozen(optimizer: optax.GradientTransformation,
                   params: Params) -> bool:
  """True when ``optimizer`` is ``freeze_base(...)`` for these params.

  Checked on the abstract optimizer state (``jax.eval_shape``, nothing is
  allocated): its outermost transform must be the ``multi_transform`` that
  ``freeze_base`` builds, labelling every adapter leaf ``'lora'`` and every
  other leaf ``'frozen'`` (``set_to_zero``: updates exactly 0).
  """
  try:
    state = jax.eval_shape(optimizer.init, params)
  except Exception:  # pylint: disable=broad-except
    return False
  if not isinstance(state, optax.MultiTransformState):
    return False
  inner = state.inner_states
  if set(inner) != {"lora", "frozen"}:
    return False
  frozen = inner["frozen"]
  # set_to_zero keeps no state; the base leaves are masked out of 'lora'.
  return not jax.tree.leaves(getattr(frozen, "inner_state", frozen))


@dataclasses.dataclass(frozen=True)
class LoraModel(mmodel.Model):
  """A Model whose chosen projections carry LoRA adapters.

  Same functional API as ``Model`` (``apply``, ``logits``, ``init_cache``,
  ``logical_axes``…) over params that include the adapter leaves; gradients
  flow to the adapters only.

  Attributes:
    lora: the LoraConfig.
  """

  lora: LoraConfig = LoraConfig()

  @property
  def base_model(self) -> mmodel.Model:
    """The base Model (apply it to ``base_params(params)``: the reference)."""
    return mmodel.build(self.config)

  def module(self, params: Params) -> Decoder:
    params = mmodel.canonicalize_params(params)
    frozen = _map_with_path(
        lambda p, x: x if is_lora_path(p) else jax.lax.stop_gradient(x), params)
    return nnx.merge(self.graphdef, frozen)

  def logical_axes(self) -> Params:
    _, flat = _abstract(self.config, self.lora)
    return mmodel._unflatten((f[0], f[2]) for f in flat)  # pylint: disable=protected-access

  def logical_specs(self) -> Params:
    _, flat = _abstract(self.config, self.lora)
    return mmodel._unflatten(  # pylint: disable=protected-access
        (f[0], jax.sharding.PartitionSpec(*f[2])) for f in flat)

  def abstract_params(self) -> Params:
    _, flat = _abstract(self.config, self.lora)
    return mmodel._unflatten((f[0], f[1]) for f in flat)  # pylint: disable=protected-access

  def init_adapters(self, rng: jax.Array) -> Params:
    """Fresh adapters: A ~ N(0, 1/fan_in), B = 0 (the model equals the base).

    Scanned models draw the unscanned adapters and stack them (same values).
    """
    if self.config.scan_layers:
      unscanned = build(self.config.replace(scan_layers=False), self.lora)
      return mmodel.stack_layers(unscanned.init_adapters(rng))
    _, flat = _abstract(self.config, self.lora)
    items = []
    for k, (path, sds, _, init, std) in enumerate(
        f for f in flat if is_lora_path(f[0])):
      if init == "zeros":
        value = jnp.zeros(sds.shape, sds.dtype)
      else:
        value = (std * jax.random.normal(jax.random.fold_in(rng, k), sds.shape,
                                         jnp.float32)).astype(sds.dtype)
      items.append((path, value))
    return mmodel._unflatten(items)  # pylint: disable=protected-access

  def init_params(self, rng: jax.Array) -> Params:
    """Fresh base params plus fresh adapters."""
    k_base, k_lora = jax.random.split(rng)
    return add_adapters(self.base_model.init_params(k_base),
                        self.init_adapters(k_lora))

  @property
  def num_params(self) -> int:
    return int(sum(math.prod(x.shape)
                   for x in jax.tree.leaves(self.abstract_params())))

  @property
  def num_adapter_params(self) -> int:
    _, flat = _abstract(self.config, self.lora)
    return int(sum(math.prod(f[1].shape) for f in flat if is_lora_path(f[0])))


def build(config: ModelConfig, lora: LoraConfig) -> LoraModel:
  """The LoraModel for ``config`` with adapters described by ``lora``."""
  if not isinstance(lora, LoraConfig):
    raise TypeError(f"build: lora must be a LoraConfig, got {type(lora).__name__}")
  graphdef, _ = _abstract(config, lora)
  return LoraModel(config=config, graphdef=graphdef, lora=lora)


def _adapted(params: Params):
  """Yields (path, node) for every dict holding lora_a/lora_b."""
  def walk(node, path):
    if isinstance(node, dict):
      if "lora_a" in node:
        yield path, node
      for k, v in node.items():
        if isinstance(v, dict):
          yield from walk(v, path + (k,))
  yield from walk(mmodel.canonicalize_params(params), ())


def delta_kernel(node: Params, scale: float) -> jax.Array:
  """f32 kernel update ``scale · A·B`` in the kernel's shape."""
  a = jnp.asarray(node["lora_a"], jnp.float32)
  b = jnp.asarray(node["lora_b"], jnp.float32)
  r = a.shape[-1]
  return scale * (a.reshape(-1, r) @ b.reshape(r, -1)).reshape(
      a.shape[:-1] + b.shape[1:])


def merge(model: LoraModel, params: Params) -> Tuple[mmodel.Model, Params]:
  """Folds the adapters into the kernels: ``W ← W + (alpha/r)·A·B``.

  Returns:
    ``(base Model, params)`` with the base structure (export them with
    ``jaxsi.models.hf.save_pretrained``); kernels keep their dtype.
  """
  stacked = model.config.scan_layers
  merged = base_params(mmodel.canonicalize_params(params))
  for path, node in _adapted(params):
    target = merged
    for k in path[:-1]:
      target[k] = dict(target[k])
      target = target[k]
    leaf = dict(target[path[-1]])
    kernel = leaf["kernel"]
    if stacked and path[0] == "layers":  # [L, ...] adapters: one delta per layer
      delta = jax.vmap(lambda n: delta_kernel(n, model.lora.scale))(
          {"lora_a": node["lora_a"], "lora_b": node["lora_b"]})
    else:
      delta = delta_kernel(node, model.lora.scale)
    leaf["kernel"] = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    target[path[-1]] = leaf
  return model.base_model, merged


_HF_PARENT = {t: "self_attn" for t in ATTN_TARGETS}
_HF_PARENT.update({t: "mlp" for t in MLP_TARGETS})


def save_peft_adapters(directory: str, model: LoraModel, params: Params, *,
                       base_model_name_or_path: str = "") -> None:
  """Writes ``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT).

  PEFT names ``base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.
  lora_A.weight`` = Aᵀ as ``[r, in]`` and ``lora_B.weight`` = Bᵀ as
  ``[out, r]`` (flattened like the HF weights), ``lora_alpha`` = alpha.
  """
  from jaxsi.models import loading  # pylint: disable=g-import-not-at-top
  if model.config.scan_layers:
    params = mmodel.unstack_layers(params)
  items = []
  for path, node in _adapted(params):
    if len(path) != 4 or path[0] != "layers":
      raise ValueError(f"save_peft_adapters: unexpected adapter at {path}")
    _, layer, _, proj = path
    prefix = (f"base_model.model.model.layers.{layer}.{_HF_PARENT[proj]}."
              f"{proj}")
    a = np.asarray(node["lora_a"])
    b = np.asarray(node["lora_b"])
    r = a.shape[-1]
    a_hf = np.ascontiguousarray(a.reshape(-1, r).T)
    b_hf = np.ascontiguousarray(b.reshape(r, -1).T)
    items.append((prefix + ".lora_A.weight", a_hf.shape, a_hf.dtype,
                  lambda v=a_hf: v))
    items.append((prefix + ".lora_B.weight", b_hf.shape, b_hf.dtype,
                  lambda v=b_hf: v))
  os.makedirs(directory, exist_ok=True)
  names = loading.write_checkpoint(directory, items, max_shard_bytes=2**62)
  os.replace(os.path.join(directory, names[0]),
             os.path.join(directory, "adapter_model.safetensors"))
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": model.lora.rank,
      "lora_alpha": model.lora.alpha, "lora_dropout": 0.0, "bias": "none",
      "fan_in_fan_out": False, "use_rslora": False,
      "target_modules": sorted(model.lora.targets),
      "layers_to_transform": (list(model.lora.layers)
                              if model.lora.layers is not None else None),
      "base_model_name_or_path": base_model_name_or_path,
  }
  with open(os.path.join(directory, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
