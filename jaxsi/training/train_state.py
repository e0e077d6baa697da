"""TrainState: everything a jitted update step reads and returns.

A plain pytree (``flax.struct``): no methods that mutate, no NNX objects, no
functions inside. The optimizer (a static ``optax.GradientTransformation``) is
closed over by the step, not stored here, so the state can be sharded,
donated, checkpointed and compared leaf by leaf.
"""

from __future__ import annotations

from typing import Any, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxsi import partitioning


@flax.struct.dataclass
class TrainState:
  """Parameters, optimizer state, step counter, PRNG key and method state.

  Attributes:
    params: model parameter pytree (nested dict of arrays).
    opt_state: optax state of the optimizer that updates ``params``.
    step: int32[] number of update steps taken (skipped non-finite steps count).
    rng: typed PRNG key (``jax.random.key``) owned by the training loop.
    method_state: pytree of method/transform state (e.g. a transform chain's
      state: KL controller, curriculum statistics); ``()`` if none.
  """

  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array
  method_state: Any = ()


def as_typed_key(rng: jax.Array) -> jax.Array:
  """Returns ``rng`` as a typed key array (wraps legacy uint32[2] keys)."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(jnp.asarray(rng, jnp.uint32))


def create_train_state(
    params: Any,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    method_state: Any = (),
) -> TrainState:
  """Builds the step-0 TrainState (``opt_state = optimizer.init(params)``).

  Pure and jit-able: wrap it in ``jax.jit(..., out_shardings=...)`` to build a
  sharded state without materialising it on one device (see
  :func:`init_train_state`).

  Args:
    params: parameter pytree.
    optimizer: the optax transformation the update step will use.
    rng: PRNG key (typed, or a legacy uint32[2] key which is wrapped).
    method_state: initial method state pytree.

  Returns:
    A TrainState with ``step = 0``.
  """
  return TrainState(
      params=params,
      opt_state=optimizer.init(params),
      step=jnp.zeros((), jnp.int32),
      rng=as_typed_key(rng),
      method_state=method_state,
  )


def init_train_state(
    *,
    init_params: Any,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    logical_axes: Any,
    mesh: Mesh,
    rules: partitioning.Rules = partitioning.DEFAULT_RULES,
    method_state: Any = (),
) -> Tuple[TrainState, TrainState]:
  """Builds a sharded step-0 TrainState without materialising it unsharded.

  ``jax.eval_shape`` gives the abstract state, the rules give its shardings
  (``partitioning.state_shardings``), and ``jax.jit(init, out_shardings=...)``
  creates every leaf already sharded.

  Args:
    init_params: ``fn(rng) -> params`` (pure, jit-able), e.g.
      ``lambda r: model_lib.init(cfg, r)[1]``.
    optimizer: the optimizer.
    rng: typed PRNG key; split into (params init, state rng).
    logical_axes: logical axes of the params.
    mesh: the mesh.
    rules: the rules table.
    method_state: initial method state (replicated).

  Returns:
    ``(state, shardings)``: the sharded TrainState and its sharding tree.
  """
  rng = as_typed_key(rng)

  def init(key):
    k_params, k_state = jax.random.split(key)
    return create_train_state(init_params(k_params), optimizer, k_state,
                              method_state)

  abstract = jax.eval_shape(init, rng)
  shardings = partitioning.state_shardings(
      abstract, optimizer=optimizer, logical_axes=logical_axes, mesh=mesh,
      rules=rules)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings
