"""ReST-EM: capped binary-reward filter, base restart, no accumulation."""

import pytest

from jaxsi import spec
from jaxsi.methods import rest_em


def rec(tid, sample, completion, correct):
  return dict(task_id=tid, prompt="q" + tid, sample=sample, completion=completion,
              correct=correct, answer=completion, difficulty=1)


def test_select_caps_per_problem():
  m = rest_em.rest_em(rollout=spec.RolloutSpec(n=4, temperature=1.0), max_per_prompt=2)
  records = [rec("a", i, str(i), True) for i in range(4)] + [
      rec("b", 0, "x", False), rec("b", 1, "y", True), rec("b", 2, "y", True)]
  examples, pairs, metrics = m.select(records, {}, None)
  assert [(e["task_id"], e["completion"]) for e in examples] == [
      ("a", "0"), ("a", "1"), ("b", "y")]
  assert metrics["kept"] == 3 and metrics["pass_at_n"] == 1.0
  assert metrics["sample_accuracy"] == pytest.approx(6 / 7)
  assert pairs == []


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
