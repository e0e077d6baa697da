"""ReST-EM: capped binary-reward filter, base restart, no accumulation."""

import pytest

from jaxsi import spec
from jaxsi.methods import rest_em


def rec(tid, sample, completion, correct):
  return dict(task_id=tid, prompt="q" + tid, sample=sample, completion=completion,
              correct=correct, answer=completion, difficulty=1)


def test_select_caps_per_problem():
  """Hand case on a trajectory: problem a's rows 0-3 verified with distinct
  completions, problem b's rows 4-6 = wrong, 'y', 'y' → cap 2 keeps rows 0, 1
  (a) and 4's successor 5 (b's second 'y' is a repeat)."""
  import jax.numpy as jnp
  import numpy as np
  from jaxsi.trajectory import Trajectory
  from jaxsi.transforms import base
  m = rest_em.rest_em(rollout=spec.RolloutSpec(n=4, temperature=1.0), max_per_prompt=2)
  assert m.select_is_transform
  comp = [10, 11, 12, 13, 20, 21, 21]
  traj = Trajectory.create(jnp.asarray([[1, c] for c in comp], jnp.int32),
                           loss_mask=jnp.asarray([[0, 1]] * 7, bool)).replace(
      rewards=jnp.asarray([[1.], [1.], [1.], [1.], [0.], [1.], [1.]]),
      group_ids=jnp.asarray([0, 0, 0, 0, 4, 4, 4], jnp.int32))
  out, _, _ = m.select.update(traj, m.select.init(), base.Context())
  assert np.flatnonzero(np.asarray(out.valid)).tolist() == [0, 1, 5]


def test_wiring_and_validation():
  m = rest_em.rest_em()
  assert m.train_from == "base" and not m.accumulate and m.steps_growth == 1.0
  with pytest.raises(ValueError):
    rest_em.rest_em(max_per_prompt=0)


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/rest_em.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "rest_em"
