"""Online DPO (Loop) and iterative DPO (rounds) on verifier pairs."""

import math
import pathlib

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.methods import iterative_dpo
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.training import loop
from jaxsi.transforms import preference
from tests.methods import rl_fixtures as fx

ROOT = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods"


def _gin(name):
  gin = pytest.importorskip("gin")
  gin.clear_config()
  gin.parse_config_file(str(ROOT / f"{name}.gin"))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  return m


def test_online_dpo_one_loop_step_hand_numbers():
  """Pairs: best ≻ worst of each group of the current batch (margin 0.5 on
  a 0/1 reward keeps every group with a correct and a wrong sample). At the
  first step policy = reference, so every pair's loss is log 2."""
  m = iterative_dpo.online_dpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                               beta=0.1, margin=0.5, reward_fns=(fx.first_is_digit,))
  tok, model, params, tasks, opt = fx.setup()
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok, tasks=tasks,
                 optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  metrics = lp.step()
  raw = np.asarray(lp.last_batch.rewards, np.float64)[:, 0].reshape(-1, fx.N)
  chosen = np.asarray(lp.last_traj.extras[preference.IS_CHOSEN_KEY])
  want = int(np.sum(raw.max(1) - raw.min(1) > 0.5))
  assert int(chosen.sum()) == want == metrics["transform/pairs/count"]
  assert want > 0
  np.testing.assert_allclose(metrics["loss_first"], math.log(2.0), rtol=1e-5)
  assert lp.method.needs("reference")


def _all_pairs_trainer(max_pairs, **kw):
  m = iterative_dpo.online_dpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                               beta=0.1, margin=0.5, max_pairs=max_pairs,
                               reward_fns=(fx.first_is_digit,))
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=m, tokenizer=tok, tasks=tasks,
                   optimizer=opt, prompts_per_step=fx.PROMPTS,
                   compiler_options=loop.FAST_COMPILE, **kw)


def test_online_dpo_all_pairs_changes_the_batch_under_the_loop():
  """pairs.all_pairs under the Loop: the update runs on a new batch of 2P rows.

  On a 0/1 reward with margin 0.5, a group with c correct and w wrong samples
  has c·w candidate pairs; P = 5 keeps the first 5 of the batch. At the first
  step policy = reference: every kept pair's loss is log 2.
  """
  lp = _all_pairs_trainer(5, seed=3)
  metrics = lp.step()
  raw = np.asarray(lp.last_batch.rewards, np.float64)[:, 0].reshape(-1, fx.N)
  c = raw.sum(1)
  candidates = int(np.sum(c * (fx.N - c)))
  assert candidates > 0
  assert metrics["transform/pairs/candidates"] == candidates
  assert metrics["transform/pairs/count"] == min(candidates, 5)
  traj = lp.last_traj
  assert traj.batch_size == 10
  chosen = np.asarray(traj.extras[preference.IS_CHOSEN_KEY])
  np.testing.assert_array_equal(chosen, [True] * 5 + [False] * 5)
  valid = np.asarray(traj.valid)
  assert int(valid[:5].sum()) == min(candidates, 5)
  # Every kept pair: a correct chosen row over a wrong rejected row.
  r = np.asarray(traj.rewards)[:, 0]
  np.testing.assert_array_equal(r[:5][valid[:5]], 1.0)
  np.testing.assert_array_equal(r[5:][valid[5:]], 0.0)
  np.testing.assert_allclose(metrics["loss_first"], math.log(2.0), rtol=1e-5)
  assert np.isfinite(lp.step()["loss"])
  with pytest.raises(ValueError, match="max_pairs"):
    iterative_dpo.online_dpo(max_pairs=0)


@pytest.mark.skipif(__import__("jax").device_count() < 8, reason="needs 8 (fake) devices")
def test_online_dpo_all_pairs_sharded_equals_single_device():
  """2P = 10 rows do not divide the ('data', 'fsdp') = 4 batch shards: the
  builder's output is resharded, and the run equals the single-device one."""
  from jaxsi import partitioning  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  single, sharded = _all_pairs_trainer(5, seed=3), _all_pairs_trainer(5, seed=3, mesh=mesh)
  for _ in range(2):
    m1, m2 = single.step(), sharded.step()
    for k in ("loss", "transform/pairs/count"):
      np.testing.assert_allclose(m1[k], m2[k], rtol=1e-5, err_msg=k)


def test_online_dpo_refusals_and_gin():
  with pytest.raises(ValueError, match="minibatches"):
    iterative_dpo.online_dpo(optim=OptimSpec(minibatches=2))
  with pytest.raises(ValueError, match="rollout.n"):
    iterative_dpo.online_dpo(rollout=RolloutSpec(n=1, max_new_tokens=4))
  with pytest.raises(ValueError, match="label_smoothing|Unknown DPO"):
    iterative_dpo.online_dpo(loss_type="nope")
  m = _gin("online_dpo")
  assert m.name == "online_dpo" and m.n == 4


def test_iterative_dpo_composition_and_gin():
  m = iterative_dpo.iterative_dpo(rollout=spec.RolloutSpec(n=4), beta=0.3)
  assert (m.objective, m.reference, m.train_from, m.accumulate) == (
      "dpo", "previous", "current", False)
  assert m.objective_settings == {"beta": 0.3} and not m.include_labeled
  assert [getattr(f, "names", None) for f in m.rewards] == [("correct",)]
  assert iterative_dpo.iterative_dpo(reference="base").reference == "base"
  with pytest.raises(ValueError, match="reference"):
    iterative_dpo.iterative_dpo(reference="teacher")
  with pytest.raises(ValueError, match="rollout.n"):
    iterative_dpo.iterative_dpo(rollout=spec.RolloutSpec(n=1))
  assert _gin("iterative_dpo").name == "iterative_dpo"
