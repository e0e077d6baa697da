"""Easy-to-hard self-improvement: majority vote + length filter, level schedule."""

import pytest

from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import easy_to_hard
from jaxsi.methods import self_training_common as common


def rec(tid, s, completion, answer, correct, d=3):
  return dict(task_id=tid, prompt="q" + tid, sample=s, completion=completion,
              answer=answer, correct=correct, difficulty=d)


RECORDS = [
    # a: 3/4 agree on 1234 (correct), label = first completion giving it.
    rec("a", 0, "4321", "1234", True), rec("a", 1, "5321", "1235", False),
    rec("a", 2, "4321", "1234", True), rec("a", 3, "4321", "1234", True),
    # b: 2/4 agree on a wrong, short answer (truncated: length 3).
    rec("b", 0, "999", "999", False), rec("b", 1, "999", "999", False),
    rec("b", 2, "1000", "0001", True), rec("b", 3, "2000", "0002", False),
    # c: no agreement (all different).
    rec("c", 0, "1111", "1111", True), rec("c", 1, "2222", "2222", False),
    rec("c", 2, "3333", "3333", False), rec("c", 3, None or "", None, False),
    # d: 4/4 agree, length 4.
    rec("d", 0, "8765", "5678", True), rec("d", 1, "8765", "5678", True),
    rec("d", 2, "8765", "5678", True), rec("d", 3, "8765", "5678", True),
]


def test_majority_vote_only():
  kept, m = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=False)
  assert [(r["task_id"], r["completion"]) for r in kept] == [
      ("a", "4321"), ("b", "999"), ("d", "8765")]
  assert m["voted"] == 4 and m["kept"] == 3 and m["problems"] == 4
  assert m["label_accuracy"] == pytest.approx(2 / 3)
  # Unfiltered majority labels: a ✓, b ✗, c (tie → first, "1111") ✓, d ✓.
  assert m["unfiltered_label_accuracy"] == pytest.approx(3 / 4)
  kept, _ = common.majority_filter(RECORDS, min_agreement=0.75, length_filter=False)
  assert [r["task_id"] for r in kept] == ["a", "d"]


def test_length_filter_drops_the_truncated_label():
  kept, m = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=True)
  assert [r["task_id"] for r in kept] == ["a", "d"]        # modal length 4; b has 3
  assert m["label_accuracy"] == 1.0
  kept, _ = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=True,
                                   length_tolerance=1)
  assert [r["task_id"] for r in kept] == ["a", "b", "d"]


def test_levels_and_unfiltered_select():
  pool = tasks_lib.make_tasks("addition", 12, difficulty=[1, 2, 3, 4], seed=0)
  m = easy_to_hard.easy_to_hard(start_difficulty=2)
  assert {t.difficulty for t in m.problems(1, pool)} == {3}
  assert {t.difficulty for t in m.problems(2, pool)} == {4}
  with pytest.raises(ValueError, match="difficulty 5"):
    m.problems(3, pool)
  assert m.accumulate and m.train_from == "current" and m.include_labeled
  raw = easy_to_hard.easy_to_hard(start_difficulty=2, filtering=False)
  examples, _, metrics = raw.select(RECORDS, {}, None)
  assert [e["completion"] for e in examples] == ["4321", "999", "1111", "8765"]
  assert metrics["label_accuracy"] == pytest.approx(3 / 4)
  examples, _, metrics = m.select(RECORDS, {}, None)
  assert [e["task_id"] for e in examples] == ["a", "d"]


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/easy_to_hard.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  assert gin.query_parameter("%METHOD").scoped_configurable_fn().name == "easy_to_hard"
  gin.clear_config()
