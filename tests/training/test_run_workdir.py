"""run_workdir: a run's latest params (params only) and its held-out tasks."""

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import checkpoint_pool
from jaxsi.training import rl_run
from jaxsi.training import run_workdir as rw
from jaxsi.training import train_state

# Orbax leaves the read coroutines of damaged arrays to the GC (noise only).
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

def _cfg(d_model=16):
  return mcfg.get_config("tiny", vocab_size=16, d_model=d_model, n_layers=1, n_heads=2,
                         n_kv_heads=1, head_dim=8, d_ff=32, max_seq_len=32)


def _save_loop_layout(directory, step, params):
  """What Loop saves: {role: TrainState} with an Adam state next to the params."""
  state = train_state.create_train_state(params, optax.adam(1e-3), jax.random.key(1))
  with checkpoint_lib.Checkpointer(directory, keep=None, async_save=False) as ckpt:
    ckpt.save(step, {"policy": state}, extra={"position": step}, force=True)


def test_rl_checkpoint_gives_the_newest_policy_params_only(tmp_path):
  _, like = mmodel.init(_cfg(), jax.random.key(0))
  older = jax.tree.map(lambda x: x + 1.0, like)
  newer = jax.tree.map(lambda x: x * 3.0 - 0.5, like)
  _save_loop_layout(str(tmp_path / "ckpt"), 2, older)
  _save_loop_layout(str(tmp_path / "ckpt"), 4, newer)
  # The warm start is there too, but the RL checkpoints come first.
  with checkpoint_lib.Checkpointer(str(tmp_path / "warm_start"), async_save=False) as c:
    c.save(0, like, force=True)
  source = rw.find_params(str(tmp_path))
  assert source.directory == str(tmp_path / "ckpt") and source.steps == (2, 4)
  assert source.path == ("policy", "params")
  params, step = rw.restore_params(source, like)
  assert step == 4
  jax.tree.map(np.testing.assert_array_equal, params, newer)
  params, step = rw.restore_params(source, like, step=2)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, params, older)
  # Same as the whole tree read back without a template (so opt_state exists
  # in the checkpoint, and only its params were taken).
  full = ocp.PyTreeCheckpointer().restore(str(tmp_path / "ckpt" / "4" / "state"))
  assert set(full["policy"]) >= {"params", "opt_state", "step", "rng"}
  jax.tree.map(np.testing.assert_array_equal,
               jax.tree.leaves(newer), jax.tree.leaves(full["policy"]["params"]))
  with pytest.raises(rw.NoCheckpointError, match=r"no checkpoint 3 \(saved: \[2, 4\]\)"):
    rw.restore_params(source, like, step=3)


def test_pool_and_warm_start_layouts(tmp_path):
  _, like = mmodel.init(_cfg(), jax.random.key(0))
  rounds = {r: jax.tree.map(lambda x, r=r: x + float(r), like) for r in range(3)}
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "run" / "pool"))
  for r, p in rounds.items():
    pool.save(r, p)
  pool.close()
  source = rw.find_params(str(tmp_path / "run"))
  assert source.path == ("params",) and source.steps == (0, 1, 2)
  params, step = rw.restore_params(source, like)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, params, rounds[2])
  with checkpoint_lib.Checkpointer(str(tmp_path / "rl" / "warm_start"),
                                   async_save=False) as c:
    c.save(0, rounds[1], force=True)
  source = rw.find_params(str(tmp_path / "rl"))
  assert source.path == () and source.steps == (0,)
  jax.tree.map(np.testing.assert_array_equal, rw.restore_params(source, like)[0],
               rounds[1])


def test_clear_errors(tmp_path):
  with pytest.raises(rw.NoCheckpointError, match="no such directory"):
    rw.find_params(str(tmp_path / "missing"))
  (tmp_path / "ckpt").mkdir()   # an empty checkpoint directory is no checkpoint
  with pytest.raises(rw.NoCheckpointError, match=r"holds no parameter checkpoint"
                     r" \(looked for ckpt/ .*pool/ .*warm_start/"):
    rw.find_params(str(tmp_path))
  _, like = mmodel.init(_cfg(), jax.random.key(0))
  _save_loop_layout(str(tmp_path / "ckpt"), 1, like)
  _, wider = mmodel.init(_cfg(d_model=32), jax.random.key(0))
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"embedder/embedding has shape \(16, 16\) in the checkpoint,"
                     r" the model expects \(16, 32\)"):
    rw.restore_params(rw.find_params(str(tmp_path)), wider)


def test_newest_damaged_checkpoint_falls_back(tmp_path, capsys):
  _, like = mmodel.init(_cfg(), jax.random.key(0))
  _save_loop_layout(str(tmp_path / "ckpt"), 1, like)
  _save_loop_layout(str(tmp_path / "ckpt"), 2, jax.tree.map(lambda x: x + 1.0, like))
  files = sorted((p for p in (tmp_path / "ckpt" / "2").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
  with open(files[-1], "r+b") as f:   # the largest array file cut short
    f.truncate(7)
  params, step = rw.restore_params(rw.find_params(str(tmp_path)), like)
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, params, like)
  assert "skipped damaged step 2" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", ["rl_run.run", "rounds_run.run"])
def test_heldout_tasks_are_the_launchers_split(launcher):
  common = dict(task="addition", task_format=None, difficulty=[1, 2],
                test_difficulty=None, seed=3, n_test=5)
  if launcher == "rl_run.run":
    args = dict(common, n_train=12)
    _, _, want = rl_run.split_tasks(task="addition", difficulty=[1, 2], n_train=12,
                                    n_test=5, labeled_fraction=0.5, seed=3,
                                    task_format={"reverse": True})
  else:
    args = dict(common, n_labeled=4, n_unlabeled=8)
    _, want = tasks_lib.make_train_test("addition", n_train=12, n_test=5,
                                        difficulty=[1, 2], seed=3, reverse=True)
  got = rw.heldout_tasks(launcher, args)
  assert [t.prompt for t in got] == [t.prompt for t in want] and len(got) == 5
  assert [t.answer for t in got] == [t.answer for t in want]
  with pytest.raises(ValueError, match="argument 'n_test' missing"):
    rw.heldout_tasks(launcher, {k: v for k, v in args.items() if k != "n_test"})
  with pytest.raises(ValueError, match="is not one of"):
    rw.heldout_tasks("test_time_run.run", args)


def test_params_source_finds_the_params_in_any_directory(tmp_path):
  _, like = mmodel.init(_cfg(), jax.random.key(0))
  moved = jax.tree.map(lambda x: x - 2.0, like)
  _save_loop_layout(str(tmp_path / "saved_loop"), 3, moved)   # not named ckpt/
  source = rw.params_source(str(tmp_path / "saved_loop"))
  assert source.path == ("policy", "params") and source.steps == (3,)
  jax.tree.map(np.testing.assert_array_equal, rw.restore_params(source, like)[0], moved)
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "rounds"))
  pool.save(0, moved)
  pool.close()
  assert rw.params_source(str(tmp_path / "rounds")).path == ("params",)
  with checkpoint_lib.Checkpointer(str(tmp_path / "plain"), async_save=False) as c:
    c.save(0, moved, force=True)
  assert rw.params_source(str(tmp_path / "plain")).path == ()
  with pytest.raises(rw.NoCheckpointError, match="no checkpoint there"):
    rw.params_source(str(tmp_path / "nothing"))
