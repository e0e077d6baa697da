"""DNO: the margin filter on hand scores; the composition and gin."""

import pathlib

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.methods import dno
from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import Context
from jaxsi.transforms.preference import IS_CHOSEN_KEY


def _traj(rewards, group_ids):
  b = len(group_ids)
  return Trajectory.create(tokens=np.zeros((b, 2), np.int32),
                           loss_mask=np.ones((b, 2), bool),
                           group_ids=np.asarray(group_ids, np.int32)).replace(
                               rewards=np.asarray(rewards, np.float32))


def test_margin_filter_by_hand():
  # Score s = correct + 0.5·format. Group 0: s = 1.5, 0.5, 0 → gap 1.5 > 0.5:
  # pair (0 ≻ 2). Group 3: s = 0.5, 0 → gap 0.5, not > 0.5: filtered out
  # (a format-only difference), but paired when margin = 0 (unfiltered).
  r = [[1, 1], [0, 1], [0, 0], [0, 1], [0, 0]]
  g = [0, 0, 0, 3, 3]
  filtered = dno.dno().select
  out, _, m = filtered.update(_traj(r, g), filtered.init(), Context())
  np.testing.assert_array_equal(np.asarray(out.extras[IS_CHOSEN_KEY]), [1, 0, 0, 0, 0])
  assert int(np.asarray(out.pair_ids)[0]) == 2 and float(m["pairs/count"]) == 1
  np.testing.assert_allclose(float(m["pairs/margin_mean"]), 1.5)
  unfiltered = dno.dno(margin=0.0).select
  out, _, m = unfiltered.update(_traj(r, g), unfiltered.init(), Context())
  np.testing.assert_array_equal(np.asarray(out.extras[IS_CHOSEN_KEY]), [1, 0, 0, 1, 0])
  np.testing.assert_allclose(float(m["pairs/margin_mean"]), (1.5 + 0.5) / 2)


def test_composition_refusals_and_gin():
  m = dno.dno(rollout=spec.RolloutSpec(n=4), beta=0.2)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.2}
  assert [f.names for f in m.rewards] == [("correct",), ("format",)]
  with pytest.raises(ValueError, match="margin"):
    dno.dno(margin=-1.0)
  with pytest.raises(ValueError, match="reward_weights"):
    dno.dno(reward_weights=(1.0,))
  with pytest.raises(ValueError, match="rollout.n"):
    dno.dno(rollout=spec.RolloutSpec(n=1))
  gin = pytest.importorskip("gin")
  gin.clear_config()
  gin.parse_config_file(str(pathlib.Path(__file__).resolve().parents[2]
                            / "gin_configs/methods/dno.gin"))
  built = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert built.name == "dno" and built.rollout.spec.n == 8
