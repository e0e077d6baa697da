"""Sharding tests on a 2×2×2 ('data','fsdp','tensor') mesh of 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxsi import partitioning as part
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.training import checkpoint as ckpt_lib
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib

B, T, V = 8, 8, 32

# Expected specs under DEFAULT_RULES, written by hand (param name → spec).
EXPECTED = {
    "embedding": P("tensor", "fsdp"),                 # (vocab, embed)
    "q_proj": P("fsdp", "tensor", None),              # (embed, heads, head_dim)
    "k_proj": P("fsdp", "tensor", None),              # (embed, kv_heads, head_dim)
    "v_proj": P("fsdp", "tensor", None),
    "o_proj": P("tensor", None, "fsdp"),              # (heads, head_dim, embed)
    "gate_proj": P("fsdp", "tensor"),                 # (embed, mlp)
    "up_proj": P("fsdp", "tensor"),
    "down_proj": P("tensor", "fsdp"),                 # (mlp, embed)
    "input_norm": P(None), "pre_ffw_norm": P(None), "final_norm": P(None),
}


def _expected_spec(path):
  names = [getattr(k, "key", None) for k in path]
  for name in reversed(names):
    if name in EXPECTED:
      return EXPECTED[name]
  raise KeyError(f"no expectation for {jax.tree_util.keystr(path)}")


def _batch(seed):
  rng = np.random.default_rng(seed)
  loss_mask = np.zeros((B, T), bool)
  loss_mask[:, 3:] = True
  return Trajectory.create(rng.integers(1, V, size=(B, T)), loss_mask=loss_mask)


def _host_copy(tree):
  def copy(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(np.array(jax.random.key_data(x)))
    return np.array(x)
  return jax.tree.map(copy, tree)


@pytest.fixture(scope="module")
def env():
  assert jax.device_count() == 8, "tests/conftest.py must give 8 CPU devices"
  mesh = part.make_mesh(data=2, fsdp=2, tensor=2)
  cfg = mcfg.get_config("tiny", vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                        n_kv_heads=2, head_dim=8, d_ff=64)
  model = mmodel.build(cfg)
  tx = opt_lib.make_optimizer(learning_rate=1e-2, schedule="cosine", warmup_steps=1,
                              total_steps=10, weight_decay=0.1, eps=1.0)
  state, shardings = ts_lib.init_train_state(
      init_params=model.init_params, optimizer=tx, rng=jax.random.key(0),
      logical_axes=model.logical_axes(), mesh=mesh)
  return mesh, model, tx, state, shardings


def test_make_mesh():
  mesh = part.make_mesh()
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  assert mesh.axis_types == (AxisType.Auto,) * 3
  mesh = part.make_mesh(data=2, fsdp=-1, tensor=2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match="multiply"):
    part.make_mesh(data=2, fsdp=2, tensor=1)
  with pytest.raises(ValueError, match="divisible"):
    part.make_mesh(tensor=3)


def test_logical_to_spec_rules():
  mesh = part.make_mesh(data=2, fsdp=2, tensor=2)
  rules = part.DEFAULT_RULES
  assert part.logical_to_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")
  assert part.logical_to_spec(("batch", "length"), rules) == P(("data", "fsdp"), None)
  assert part.logical_to_spec(("layers", "embed", None), rules) == P(None, "fsdp", None)
  # A mesh axis shards at most one dimension: the second 'tensor' user replicates.
  assert part.logical_to_spec(("heads", "mlp"), rules) == P("tensor", None)
  assert part.logical_to_spec(("embed", "batch"), rules) == P("fsdp", "data")
  # Divisibility fallback: kv_heads=1 cannot be split over tensor=2.
  assert part.logical_to_spec(("embed", "kv_heads", "head_dim"), rules,
                              shape=(32, 1, 8), mesh=mesh) == P("fsdp", None, None)
  # batch=2 over ('data','fsdp')=(2,2): the longest dividing prefix is 'data'.
  assert part.logical_to_spec(("batch",), rules, shape=(2,), mesh=mesh) == P("data")
  assert part.logical_to_spec(("batch",), rules, shape=(3,), mesh=mesh) == P(None)
  with pytest.raises(ValueError, match="no rule"):
    part.logical_to_spec(("embd",), rules)
  custom = (("embed", ("fsdp", "tensor")), ("mlp", "tensor"))
  assert part.logical_to_spec(("embed", "mlp"), custom) == P(("fsdp", "tensor"), None)


def test_param_and_optimizer_state_shardings(env):
  mesh, _, _, state, shardings = env
  n = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    want = NamedSharding(mesh, _expected_spec(path))
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), jax.tree_util.keystr(path)
    n += 1
  assert n == len(jax.tree.leaves(shardings.params)) == 11
  # Adam moments mirror their params; counts and injected hyperparams replicate.
  moments = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state):
    names = [getattr(k, "name", None) for k in path]
    if "mu" in names or "nu" in names:
      want = NamedSharding(mesh, _expected_spec(path))
      moments += 1
    else:
      want = NamedSharding(mesh, P())
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), jax.tree_util.keystr(path)
  assert moments == 2 * n
  assert state.step.sharding.is_equivalent_to(NamedSharding(mesh, P()), 0)
  # The derived tree is the same as what param_shardings gives for the model.
  from_model = part.param_shardings(env[1], None, mesh)
  assert jax.tree.all(jax.tree.map(lambda a, b: a == b, from_model, shardings.params))


def test_shard_trajectory(env):
  mesh = env[0]
  traj = part.shard_trajectory(_batch(0), mesh)
  want = NamedSharding(mesh, P(("data", "fsdp")))
  for leaf in jax.tree.leaves(traj):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
  with pytest.raises(ValueError, match="multiple"):
    part.shard_trajectory(Trajectory.create(np.ones((6, T), int)), mesh)


def test_sharded_step_equals_single_device_and_compiles_once(env):
  mesh, model, tx, state, shardings = env
  objective = steps_lib.sft_objective()
  dev0 = jax.devices()[0]
  # Independent host copies: donation must not delete the fixture's buffers.
  single = jax.device_put(_host_copy(state), dev0)
  sharded = jax.device_put(_host_copy(state), shardings)
  fast = steps_lib.FAST_COMPILE
  up_mesh = steps_lib.make_update_step(model=model, optimizer=tx, objective=objective,
                                       mesh=mesh, compiler_options=fast)
  up_one = steps_lib.make_update_step(model=model, optimizer=tx, objective=objective,
                                      compiler_options=fast)
  for i in range(3):
    traj = _batch(i)
    sharded, m_sh = up_mesh(sharded, part.shard_trajectory(traj, mesh))
    single, m_one = up_one(single, jax.device_put(traj, dev0))
    np.testing.assert_allclose(m_sh["loss"], m_one["loss"], rtol=1e-5)
  assert up_mesh.trace_count() == 1
  assert int(sharded.step) == 3
  for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(sharded.opt_state), jax.tree.leaves(single.opt_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # The step keeps every leaf on its derived sharding.
  for leaf, sh in zip(jax.tree.leaves(sharded), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)


def test_checkpoint_round_trip_restores_shardings(env, tmp_path):
  mesh, _, _, state, shardings = env
  with ckpt_lib.Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
    assert ckpt.save(0, state, extra={"data_position": 0})
    ckpt.wait()
    abstract = part.with_shardings(jax.eval_shape(lambda: state), shardings)
    restored, extra = ckpt.restore(abstract)
  assert extra == {"data_position": 0}
  for a, b, sh in zip(jax.tree.leaves(restored), jax.tree.leaves(state),
                      jax.tree.leaves(shardings)):
    assert a.sharding.is_equivalent_to(sh, a.ndim)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(a, b)
