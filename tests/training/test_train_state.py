"""Tests of jaxsi.training.train_state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsi.training import optimizer as opt_lib
from jaxsi.training import train_state as ts_lib


def _params():
  return {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}


def test_create_train_state_fields():
  tx = opt_lib.make_optimizer(learning_rate=1e-2, schedule="constant")
  state = ts_lib.create_train_state(_params(), tx, jax.random.key(3),
                                    method_state={"beta": jnp.float32(0.1)})
  assert state.step.dtype == jnp.int32 and int(state.step) == 0
  assert jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
  ref = tx.init(_params())
  chex_equal = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.opt_state, ref)
  assert all(jax.tree.leaves(chex_equal))
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(ref)
  np.testing.assert_array_equal(state.method_state["beta"], np.float32(0.1))


def test_legacy_raw_key_is_wrapped():
  raw = jax.random.PRNGKey(5)
  state = ts_lib.create_train_state(_params(), optax.sgd(0.1), raw)
  np.testing.assert_array_equal(jax.random.key_data(state.rng), raw)


def test_is_a_plain_pytree_and_jittable():
  tx = optax.adam(1e-3)
  state = jax.jit(lambda p, k: ts_lib.create_train_state(p, tx, k))(_params(), jax.random.key(0))
  leaves, treedef = jax.tree.flatten(state)
  # params (2) + adam (count, mu×2, nu×2) + step + rng; method_state () has no leaves.
  assert len(leaves) == 2 + 5 + 2
  again = jax.tree.unflatten(treedef, leaves)
  assert isinstance(again, ts_lib.TrainState)
  bumped = jax.jit(lambda s: s.replace(step=s.step + 1))(again)
  assert int(bumped.step) == 1
