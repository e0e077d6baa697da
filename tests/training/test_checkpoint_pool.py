"""CheckpointPool: every round's parameters come back, as params and as functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool


def _tiny():
  cfg = mcfg.get_config("tiny", vocab_size=16, d_model=16, n_layers=1, n_heads=2,
                        n_kv_heads=1, head_dim=8, d_ff=32, max_seq_len=32)
  return mmodel, cfg


def test_pool_returns_each_rounds_params(tmp_path):
  _, cfg = _tiny()
  model, like = mmodel.init(cfg, jax.random.key(0))
  per_round = {r: mmodel.init(cfg, jax.random.key(10 + r))[1] for r in range(3)}
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  for r in (0, 2, 1):
    pool.save(r, per_round[r])
  assert pool.rounds() == [0, 1, 2] and pool.latest() == 2 and 1 in pool
  with pytest.raises(ValueError, match="already stored"):
    pool.save(1, per_round[1])
  pool.close()

  reopened = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"), cache_size=1)
  tokens = jnp.asarray([[1, 5, 7, 3, 2]], jnp.int32)
  positions = jnp.arange(5, dtype=jnp.int32)[None]
  for r in (2, 0, 1, 2):
    got = reopened.params(r, like=like)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 got, per_round[r])
    want = jax.jit(lambda p: model.apply(p, tokens, positions)[0])(per_round[r])
    fn = reopened.apply_fn(r, model=model, like=like)
    np.testing.assert_allclose(np.asarray(fn(tokens, positions)), np.asarray(want),
                               rtol=1e-5, atol=1e-5)
  # Different rounds really are different models.
  l0 = reopened.apply_fn(0, model=model, like=like)(tokens, positions)
  l1 = reopened.apply_fn(1, model=model, like=like)(tokens, positions)
  assert not np.allclose(np.asarray(l0), np.asarray(l1))
  with pytest.raises(KeyError, match="no round 5"):
    reopened.params(5, like=like)
  reopened.close()


def test_pool_score_fn_matches_token_logprobs(tmp_path):
  from jaxsi.models import logprobs
  from jaxsi.trajectory import Trajectory
  _, cfg = _tiny()
  model, params = mmodel.init(cfg, jax.random.key(3))
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  pool.save(4, params)
  traj = Trajectory.create(jnp.asarray([[1, 4, 6, 2], [1, 3, 3, 2]], jnp.int32),
                           loss_mask=jnp.asarray([[0, 1, 1, 1]] * 2, bool))
  out = pool.score_fn(4, model=model, like=params)(traj)
  want, _ = jax.jit(lambda p, t: logprobs.token_logprobs(
      model, p, t.tokens, t.positions, input_mask=t.input_mask))(params, traj)
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(want), rtol=1e-5,
                             atol=1e-6)
  pool.close()


def test_restored_params_reuse_the_compiled_step(tmp_path):
  """Params restored into uncommitted ``like`` are uncommitted too, so a jitted
  step that ran on ``like`` does not compile again for a committed placement."""
  _, cfg = _tiny()
  model, like = mmodel.init(cfg, jax.random.key(0))
  assert not jax.tree.leaves(like)[0].committed
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  pool.save(0, mmodel.init(cfg, jax.random.key(1))[1])
  step = jax.jit(lambda p: jax.tree.map(lambda x: x * 2.0, p))
  step(like)
  got = pool.params(0, like=like)
  assert not any(x.committed for x in jax.tree.leaves(got))
  step(got)
  assert step._cache_size() == 1
  # A committed ``like`` (placed on a device) restores committed.
  placed = jax.device_put(like, jax.devices()[0])
  pool2 = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  assert all(x.committed for x in jax.tree.leaves(pool2.params(0, like=placed)))
  pool.close()
  pool2.close()
