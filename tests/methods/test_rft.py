"""RFT: distinct-correct rejection filter (hand cases) and the method's wiring."""

import pytest

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
  m = rft.rft(samples_per_prompt=4, temperature=0.7)
  assert m.train_from == "base" and not m.accumulate and m.include_labeled
  examples, pairs, metrics = m.select(RECORDS, {}, None)
  assert len(examples) == 3 and pairs == [] and metrics["kept"] == 3
  with pytest.raises(ValueError):
    rft.rft(samples_per_prompt=0)


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/rft.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "rft" and m.train_from == "base"
