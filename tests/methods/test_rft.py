"""RFT: distinct-correct rejection filter (hand cases) and the method's wiring."""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.methods import rft
from jaxsi.methods import self_training_common as common


def rec(tid, sample, completion, correct, prompt="p"):
  return dict(task_id=tid, prompt=prompt + tid, sample=sample, completion=completion,
              correct=correct, answer=completion, difficulty=1)


RECORDS = [rec("a", 0, "12", True), rec("a", 1, "12", True), rec("a", 2, "13", False),
           rec("a", 3, "012", True), rec("b", 0, "7", False), rec("c", 0, "5", True)]


def test_keep_correct_distinct_and_capped():
  got = common.keep_correct(RECORDS, max_per_prompt=None)
  assert [(e["task_id"], e["completion"]) for e in got] == [
      ("a", "12"), ("a", "012"), ("c", "5")]
  assert got[0] == dict(prompt="pa", completion="12", task_id="a")
  got = common.keep_correct(RECORDS, max_per_prompt=1)
  assert [(e["task_id"], e["completion"]) for e in got] == [("a", "12"), ("c", "5")]
  got = common.keep_correct(RECORDS, max_per_prompt=None, distinct=False)
  assert [e["completion"] for e in got] == ["12", "12", "012", "5"]


def test_sample_stats():
  s = common.sample_stats(RECORDS)
  assert s["sample_accuracy"] == pytest.approx(4 / 6)
  assert s["pass_at_n"] == pytest.approx(2 / 3)
  assert s["distinct_correct"] == pytest.approx((2 + 0 + 1) / 3)


def test_rft_method():
  m = rft.rft(rollout=spec.RolloutSpec(n=4, temperature=0.7))
  assert m.train_from == "base" and not m.accumulate and m.include_labeled
  examples, pairs, metrics = m.select(RECORDS, {}, None)
  assert len(examples) == 3 and pairs == [] and metrics["kept"] == 3
  with pytest.raises(TypeError):      # the sampling settings are a RolloutSpec
    rft.rft(rollout=dict(n=4, temperature=0.7))
  with pytest.raises(TypeError):      # no loose sampling arguments
    rft.rft(samples_per_prompt=4)     # pylint: disable=unexpected-keyword-arg


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/rft.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "rft" and m.train_from == "base"


def test_verified_filter_on_a_trajectory():
  """Hand example: groups {0,1,2}, {3,4}, {5}; rewards 0,1,1 | 0,0 | 1 → keep
  rows 1, 5 (first verified of each group), all verified without a cap."""
  import jax.numpy as jnp
  from jaxsi.trajectory import Trajectory
  from jaxsi.transforms import base
  traj = Trajectory.create(jnp.ones((6, 4), jnp.int32)).replace(
      rewards=jnp.asarray([[0.], [1.], [1.], [0.], [0.], [1.]]),
      group_ids=jnp.asarray([0, 0, 0, 3, 3, 5], jnp.int32))
  f = rft.verified_filter(max_per_prompt=1)
  out, _, _ = f.update(traj, f.init(), base.Context())
  assert np.flatnonzero(np.asarray(out.valid)).tolist() == [1, 5]
  f = rft.verified_filter(max_per_prompt=None)
  out, _, _ = f.update(traj, f.init(), base.Context())
  assert np.flatnonzero(np.asarray(out.valid)).tolist() == [1, 2, 5]
  assert rft.rft(max_per_prompt=1).select_is_transform
  assert not rft.rft(max_per_prompt=2).select_is_transform   # text dedupe: records
