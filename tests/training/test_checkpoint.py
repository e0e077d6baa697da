"""Tests of jaxsi.training.checkpoint: exact resume, keep-last-k, keys, preemption."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.training import checkpoint as ckpt_lib
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib

B, T, V = 4, 8, 32
# Orbax leaves the read coroutines of damaged arrays to the GC (noise only).
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


def batch_at(position):
  """The data stream: batch ``position`` is a pure function of the position."""
  rng = np.random.default_rng(1000 + position)
  loss_mask = np.zeros((B, T), bool)
  loss_mask[:, 2:] = True
  return Trajectory.create(rng.integers(1, V, size=(B, T)), loss_mask=loss_mask)


@pytest.fixture(scope="module")
def sft():
  cfg = mcfg.get_config("tiny", vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                        n_kv_heads=2, head_dim=8, d_ff=64)
  model = mmodel.build(cfg)
  tx = opt_lib.make_optimizer(learning_rate=3e-3, schedule="cosine", warmup_steps=2,
                              total_steps=8, weight_decay=0.1)
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=steps_lib.sft_objective(),
                                      compiler_options=steps_lib.FAST_COMPILE)

  def init(key):
    k_params, k_state = jax.random.split(key)
    return ts_lib.create_train_state(model.init_params(k_params), tx, k_state,
                                     method_state={"seen": jnp.zeros((), jnp.int32)})

  init = jax.jit(init)
  return init, update


def _train(state, update, position, n, ckpt=None):
  """The training loop: n steps from data ``position``, periodic saves."""
  for _ in range(n):
    state, _ = update(state, batch_at(position))
    position += 1
    state = state.replace(method_state={"seen": state.method_state["seen"] + 1})
    if ckpt is not None:
      ckpt.save(int(state.step), state, extra={"data_position": position,
                                               "method": {"note": "sft"}})
  return state, position


def _host(state):
  state, _ = ckpt_lib.keys_to_data(state)
  return jax.tree.map(np.array, state)


def _assert_bitwise_equal(a, b):
  la, lb = jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b))
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def _abstract(init):
  # A fresh process knows only the code: shapes come from eval_shape of init.
  return jax.eval_shape(init, jax.random.key(0))


def test_resume_is_bitwise_equal_to_uninterrupted(sft, tmp_path):
  init, update = sft
  n = 2
  ref, _ = _train(init(jax.random.key(0)), update, 0, 2 * n)
  ref = _host(ref)

  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=100)
  state, position = _train(init(jax.random.key(0)), update, 0, n, ckpt)
  assert ckpt.all_steps() == []  # no periodic save due yet
  assert ckpt.save(int(state.step), state, extra={"data_position": position}, force=True)
  ckpt.close()
  del state  # the process ends

  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=100)
  assert ckpt.latest_step() == n
  state, extra = ckpt.restore(_abstract(init))
  assert extra["data_position"] == n and int(state.step) == n
  assert jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
  state, _ = _train(state, update, extra["data_position"], n)
  _assert_bitwise_equal(state, ref)
  ckpt.close()


def test_kill_between_saves_then_replay_is_bitwise_equal(sft, tmp_path):
  init, update = sft
  total, kill_after, every = 6, 5, 2
  ref, _ = _train(init(jax.random.key(0)), update, 0, total)

  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=2, save_every=every)
  state, position = _train(init(jax.random.key(0)), update, 0, kill_after, ckpt)
  assert position == kill_after and ckpt.all_steps() == [2, 4]
  ckpt.wait()
  del state, position  # killed at step 5: the in-memory state of step 5 is lost

  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=2, save_every=every)
  state, extra = ckpt.restore(_abstract(init))
  assert int(state.step) == 4 and extra["data_position"] == 4
  assert extra["method"] == {"note": "sft"}
  assert int(state.method_state["seen"]) == 4
  state, _ = _train(state, update, extra["data_position"], total - 4, ckpt)
  _assert_bitwise_equal(state, ref)
  ckpt.wait()
  assert ckpt.all_steps() == [4, 6]  # keep-last-2
  ckpt.close()


def test_save_policy_keys_and_extras(tmp_path):
  state = ts_lib.TrainState(params={"w": jnp.arange(3.0)}, opt_state=(),
                            step=jnp.int32(0), rng=jax.random.key(7),
                            method_state={"k": jax.random.key(9, impl="rbg")})
  ckpt = ckpt_lib.Checkpointer(tmp_path / "c", keep=None, save_every=3, async_save=False)
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError):
    ckpt.restore(jax.eval_shape(lambda: state))
  saved = [s for s in range(1, 8) if ckpt.save(s, state.replace(step=jnp.int32(s)),
                                                  extra={"data_position": 10 * s})]
  assert saved == [3, 6]
  assert ckpt.save(7, state.replace(step=jnp.int32(7)), extra={"data_position": 70},
                   force=True)
  assert ckpt.all_steps() == [3, 6, 7] and ckpt.latest_step() == 7
  with pytest.raises(ValueError, match="reserved"):
    ckpt.save(9, state, extra={"_jaxsi_key_impls": 1}, force=True)
  restored, extra = ckpt.restore(jax.eval_shape(lambda: state), step=6)
  assert extra == {"data_position": 60} and int(restored.step) == 6
  np.testing.assert_array_equal(restored.params["w"], [0.0, 1.0, 2.0])
  assert str(jax.random.key_impl(restored.method_state["k"])) == "rbg"
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))
  np.testing.assert_array_equal(jax.random.key_data(restored.method_state["k"]),
                                jax.random.key_data(state.method_state["k"]))
  ckpt.close()


def test_preemption_guard_sigterm():
  previous = signal.getsignal(signal.SIGTERM)
  with ckpt_lib.PreemptionGuard() as guard:
    assert not guard.should_stop(0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.requested and guard.should_stop(1)
    assert guard.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is previous


def _damage(step_dir, how):
  """Damages one saved checkpoint the ways a crash or a full disk leaves it."""
  files = sorted((p for p in step_dir.rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
  if how == "truncate":          # the largest array file cut short
    with open(files[-1], "r+b") as f:
      f.truncate(7)
  elif how == "metadata":        # the tree metadata overwritten
    (step_dir / "state" / "_METADATA").write_text("{not json")
  elif how == "extra":           # the JSON item gone
    for p in (step_dir / "extra").iterdir():
      p.unlink()


@pytest.mark.parametrize("how", ["truncate", "metadata", "extra"])
def test_damaged_newest_checkpoint_falls_back_to_previous(sft, tmp_path, how, capfd):
  init, update = sft
  ref, _ = _train(init(jax.random.key(0)), update, 0, 4)
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=2,
                               async_save=False)
  _train(init(jax.random.key(0)), update, 0, 4, ckpt)
  ckpt.close()
  assert ckpt.all_steps() == [2, 4]
  _damage(tmp_path / "ckpt" / "4", how)

  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=2,
                               async_save=False)
  state, extra = ckpt.restore(_abstract(init))
  err = capfd.readouterr().err
  assert "checkpoint 4" in err and "damaged" in err and "resumed from checkpoint 2" in err
  assert extra["data_position"] == 2 and int(state.step) == 2
  # The damaged step is kept for inspection, out of the step listing.
  assert ckpt.all_steps() == [2]
  assert [p.name.split(".")[0] for p in (tmp_path / "ckpt" / "damaged").iterdir()] == ["4"]
  # The run continues from 2 and writes step 4 again: same result as never damaged.
  state, _ = _train(state, update, extra["data_position"], 2, ckpt)
  assert ckpt.all_steps() == [2, 4]
  _assert_bitwise_equal(state, ref)
  ckpt.close()


def test_checkpoint_of_another_model_is_refused_and_nothing_moved(sft, tmp_path):
  init, update = sft
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=1,
                               async_save=False)
  _train(init(jax.random.key(0)), update, 0, 2, ckpt)
  ckpt.close()
  other = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt", keep=3, save_every=1)
  with pytest.raises(ckpt_lib.CheckpointError, match="nothing was moved"):
    ckpt.restore(other)
  assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / "ckpt" / "damaged").exists()
  with pytest.raises(ckpt_lib.CheckpointError, match="checkpoint 2 .* cannot be restored"):
    ckpt.restore(other, step=2)
  ckpt.close()
