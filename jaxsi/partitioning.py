"""Device mesh, the logical-axis rules table and derived shardings.

The mesh has three axes::

    data    pure data parallelism (batch only; DCN-friendly across slices/hosts)
    fsdp    fully-sharded data parallelism: batch *and* parameters/optimizer state
    tensor  Megatron-style tensor parallelism (heads, mlp, vocab) inside a host

Parameters carry **logical** axis names (``Model.logical_axes()``); the single
rules table :data:`DEFAULT_RULES` maps them to mesh axes. Shardings are always
derived, never hand-written (MaxText's recipe)::

    eval_shape(init) → logical axes → PartitionSpec → NamedSharding
      → jax.jit(init, out_shardings=...)          (nothing materialised unsharded)
      → jax.jit(step, in/out_shardings, donate)   (jaxsi.training.steps)

A leaf module: it imports no jaxsi module but :mod:`jaxsi.trajectory`, so
models, sampling and training all read the same rules. Train states are
handled by duck typing (a dataclass pytree with ``params`` and ``opt_state``
fields, e.g. ``jaxsi.training.train_state.TrainState``).

Rule of the spec derivation (:func:`logical_to_spec`), per dimension in order:

1. look the logical name up in the rules (first match wins); ``None`` or a
   name mapped to ``None`` → replicated;
2. drop mesh axes already used by an earlier dimension of the same array (a
   mesh axis shards at most one dimension);
3. if the dimension size is known, keep the longest prefix of the remaining
   mesh axes whose size product divides it; a prefix of size 1 (nothing
   fits) → replicated. E.g. ``kv_heads=1`` on ``tensor=2`` is replicated,
   ``batch=2`` on ``('data','fsdp')=(2,2)`` shards over ``data`` only.

Unknown logical names raise (a typo must not silently replicate a weight).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple, Union

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxsi.trajectory import Trajectory

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = Union[None, str, Tuple[str, ...]]
Rules = Sequence[Tuple[str, MeshAxes]]

# The one logical-axis rules table of jaxsi.
DEFAULT_RULES: Tuple[Tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("length", None),
)


def make_mesh(
    *,
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    devices: Optional[Sequence[jax.Device]] = None,
) -> Mesh:
  """Builds the ``('data', 'fsdp', 'tensor')`` mesh.

  All axes are ``AxisType.Auto``: jaxsi shards with GSPMD driven by the
  logical rules table (T5X/MaxText style). jit in/out shardings pin the
  parameters, optimizer state and batch, and the XLA partitioner propagates
  shardings through the model and inserts the collectives. With
  ``AxisType.Explicit`` (the ``jax.make_mesh`` default since jax 0.9) every
  matmul whose contracting dimension is sharded (e.g. ``embed`` over ``fsdp``)
  would need an explicit ``out_sharding=`` in the model code, so layers would
  have to know mesh axes — which the rules table exists to avoid.

  Args:
    data: size of the data axis; -1 = all devices not used by fsdp × tensor.
    fsdp: size of the fsdp axis (-1 allowed if data is given).
    tensor: size of the tensor axis.
    devices: devices to use (default ``jax.devices()``).

  Returns:
    A ``jax.sharding.Mesh``.

  Raises:
    ValueError: sizes that do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"make_mesh: at most one axis may be -1, got {sizes}")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if known <= 0 or n % known:
      raise ValueError(
          f"make_mesh: {n} devices are not divisible by the fixed axes {sizes}")
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n or min(sizes) < 1:
    raise ValueError(
        f"make_mesh: data×fsdp×tensor = {sizes} must multiply to the "
        f"{n} devices")
  return jax.make_mesh(tuple(sizes), MESH_AXES,
                       axis_types=(AxisType.Auto,) * 3, devices=devices)


def _rule_lookup(name: str, rules: Rules) -> Tuple[str, ...]:
  for logical, mesh_axes in rules:
    if logical == name:
      if mesh_axes is None:
        return ()
      return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  raise ValueError(
      f"Logical axis {name!r} has no rule; known: {[r[0] for r in rules]}. "
      "Add it to the rules table (partitioning.DEFAULT_RULES).")


def logical_to_spec(
    axes: Sequence[Optional[str]],
    rules: Rules = DEFAULT_RULES,
    *,
    shape: Optional[Sequence[int]] = None,
    mesh: Optional[Mesh] = None,
) -> P:
  """Maps logical axis names to a PartitionSpec (rule in the module doc).

  Args:
    axes: one logical name (or None) per dimension.
    rules: the rules table.
    shape: the array's shape; with ``mesh`` enables the divisibility fallback.
    mesh: the mesh (for axis sizes).

  Returns:
    A ``PartitionSpec`` with one entry per dimension.
  """
  if shape is not None and len(shape) != len(axes):
    raise ValueError(f"logical_to_spec: axes {tuple(axes)} do not match shape {tuple(shape)}")
  used: set = set()
  entries = []
  for d, name in enumerate(axes):
    if name is None:
      entries.append(None)
      continue
    cand = [a for a in _rule_lookup(name, rules) if a not in used]
    if shape is not None and mesh is not None:
      kept, prod = [], 1
      for a in cand:
        if shape[d] % (prod * mesh.shape[a]):
          break
        prod *= mesh.shape[a]
        kept.append(a)
      cand = kept if prod > 1 else []
    used.update(cand)
    if not cand:
      entries.append(None)
    elif len(cand) == 1:
      entries.append(cand[0])
    else:
      entries.append(tuple(cand))
  return P(*entries)


def is_logical_axes(x: Any) -> bool:
  """True for a leaf of a logical-axes tree (a tuple of names / None)."""
  return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, P())


def param_shardings(
    params_or_model: Any,
    logical_axes: Any = None,
    mesh: Optional[Mesh] = None,
    rules: Rules = DEFAULT_RULES,
) -> Any:
  """NamedShardings for every parameter, from logical axes and the rules.

  Args:
    params_or_model: a params pytree (arrays or ShapeDtypeStructs; only
      shapes are read, through ``jax.eval_shape``) or a model with
      ``abstract_params()`` and ``logical_axes()``.
    logical_axes: pytree like params with tuple-of-names leaves (default:
      ``params_or_model.logical_axes()``).
    mesh: the mesh.
    rules: the rules table.

  Returns:
    A pytree like params of ``NamedSharding``.
  """
  if mesh is None:
    raise ValueError("param_shardings: mesh is required")
  if hasattr(params_or_model, "abstract_params"):
    abstract = params_or_model.abstract_params()
    if logical_axes is None:
      logical_axes = params_or_model.logical_axes()
  else:
    abstract = jax.eval_shape(lambda: params_or_model)
  if logical_axes is None:
    raise ValueError("param_shardings: logical_axes is required for a params pytree")

  def one(leaf, axes):
    if not is_logical_axes(axes):
      raise ValueError(f"param_shardings: bad logical axes {axes!r} for shape {leaf.shape}")
    spec = logical_to_spec(axes, rules, shape=leaf.shape, mesh=mesh)
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, abstract, logical_axes)


def opt_state_shardings(
    optimizer: optax.GradientTransformation,
    abstract_params: Any,
    shardings: Any,
    mesh: Mesh,
) -> Any:
  """Shardings of ``optimizer.init(params)``: moments mirror their params.

  The state structure comes from ``jax.eval_shape(optimizer.init, params)``;
  ``optax.tree_map_params`` finds the leaves that mirror a parameter (Adam
  moments, MultiSteps accumulators) and gives them that parameter's sharding;
  every other leaf (counts, injected hyperparameters) is replicated.

  Args:
    optimizer: the optax transformation.
    abstract_params: params pytree of arrays or ShapeDtypeStructs.
    shardings: pytree like params of NamedSharding.
    mesh: the mesh (for the replicated sharding).

  Returns:
    A pytree like the optimizer state of NamedSharding.
  """
  abstract_state = jax.eval_shape(optimizer.init, abstract_params)
  rep = replicated(mesh)
  return optax.tree_map_params(
      optimizer, lambda _, sh: sh, abstract_state, shardings,
      transform_non_params=lambda _: rep,
      is_leaf=lambda x: isinstance(x, NamedSharding))


def state_shardings(
    abstract_state: Any,
    *,
    optimizer: optax.GradientTransformation,
    logical_axes: Any,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
) -> Any:
  """Shardings of a whole train state: params by the rules, the rest derived.

  ``params`` get :func:`param_shardings`, ``opt_state`` mirrors them
  (:func:`opt_state_shardings`) and every other field (step, rng,
  method_state) is replicated.

  Args:
    abstract_state: a dataclass pytree with ``params`` and ``opt_state``
      fields (e.g. a ``TrainState``) of arrays or ShapeDtypeStructs.
    optimizer: the optimizer that produced ``opt_state``.
    logical_axes: logical axes of the params.
    mesh: the mesh.
    rules: the rules table.

  Returns:
    The same dataclass whose leaves are NamedSharding.
  """
  psh = param_shardings(abstract_state.params, logical_axes, mesh, rules)
  osh = opt_state_shardings(optimizer, abstract_state.params, psh, mesh)
  rep = replicated(mesh)
  every = jax.tree.map(lambda _: rep, abstract_state)
  return dataclasses.replace(every, params=psh, opt_state=osh)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying ``shardings`` (e.g. for checkpoint restore)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)


def data_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  """Sharding of ``[B, ...]`` batch arrays: B over the 'batch' rule's mesh axes."""
  spec = logical_to_spec(("batch",), rules)
  return NamedSharding(mesh, spec)


def batch_divisor(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
  """Number of batch shards: B must be a multiple of it."""
  return math.prod(mesh.shape[a] for a in _rule_lookup("batch", rules))


def shard_trajectory(
    traj: Trajectory,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
) -> Trajectory:
  """Places every ``[B, ...]`` leaf of ``traj`` with the batch sharding.

  Single process: ``jax.device_put``. Multi-process: every process passes its
  own slice of the global batch (host-local numpy arrays) and the global
  arrays are built with ``jax.make_array_from_process_local_data``.

  Raises:
    ValueError: B is not a multiple of the number of batch shards.
  """
  sharding = data_sharding(mesh, rules)
  div = batch_divisor(mesh, rules)
  if jax.process_count() == 1:
    if traj.batch_size % div:
      raise ValueError(
          f"shard_trajectory: batch size {traj.batch_size} is not a multiple of"
          f" the {div} batch shards of mesh {dict(mesh.shape)}")
    return jax.device_put(traj, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      traj)
