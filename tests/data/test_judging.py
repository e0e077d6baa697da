"""Judging data from verifiers: corruptions, SFT examples, judging tasks, metrics."""

import math

import numpy as np
import pytest

from jaxsi.data import judging as dj
from jaxsi.data import tasks as tasks_lib
from jaxsi.data.registry import Task
from jaxsi.rewards import judging


def test_corrupt_changes_one_answer_digit():
  rng = np.random.default_rng(0)
  for _ in range(20):
    out = dj.corrupt("12", rng)
    assert len(out) == 2 and out != "12"
    assert sum(a != b for a, b in zip(out, "12")) == 1
  # After a '#### ' marker only the final answer changes.
  for _ in range(20):
    out = dj.corrupt("<s>1+2=3</s>#### 30", rng)
    assert out.startswith("<s>1+2=3</s>#### ") and out[-2:] != "30"
  assert dj.corrupt("abc", rng) is None
  a = dj.corrupt("4567", np.random.default_rng(3))
  assert a == dj.corrupt("4567", np.random.default_rng(3))   # deterministic


def test_judging_examples_are_labeled_by_the_verifier():
  t = Task(id="t", prompt="2+3=", answer="5", category="addition", target="5")
  ex = dj.judging_examples([t], "score_1_5", wrong_per_task=2, seed=1)
  assert len(ex) == 3
  assert ex[0] == dict(prompt="2+3=5|score:", completion="5", task_id="t/judge")
  for e in ex[1:]:
    cand = e["prompt"][len("2+3="):-len("|score:")]
    assert cand != "5" and t.verify(cand) == 0.0 and e["completion"] == "1"
  # A "corruption" the verifier accepts is labeled correct (labels = verifier).
  lenient = Task(id="u", prompt="q", answer="5", category="addition", target="5",
                 meta={"verifier": "auto"})
  assert dj.examples_from([(lenient, "5.0")], "verdict")[0]["completion"] == "y"
  ts = tasks_lib.make_tasks("addition", 8, difficulty=2, seed=0, reverse=True)
  ex = dj.judging_examples(ts, "verdict")
  assert len(ex) == 16 and [e["completion"] for e in ex] == ["y", "n"] * 8
  with pytest.raises(ValueError, match="no target"):
    dj.judging_examples([Task(id="x", prompt="q", answer="1", category="addition")],
                        "verdict")


def test_pairwise_examples():
  ts = tasks_lib.make_tasks("addition", 6, difficulty=2, seed=0, reverse=True)
  ex = dj.pairwise_examples(ts, "pairwise", seed=0)
  assert len(ex) == 6
  for t, e in zip(ts, ex):
    a = e["prompt"].split("A:")[1].split(";B:")[0]
    b = e["prompt"].split(";B:")[1].split("|better:")[0]
    want = "A" if t.verify(a) else "B"
    assert e["completion"] == want and t.verify(a) != t.verify(b)
  with pytest.raises(ValueError, match="pairwise"):
    dj.examples_from([(ts[0], "1")], "pairwise")


def test_judging_tasks_verify_agreement():
  t = Task(id="t", prompt="2+3=", answer="5", category="addition", target="5")
  jt = dj.judging_tasks([t, t], ["5", "6"], "score_1_5")
  assert jt[0].prompt == "2+3=5|score:" and jt[0].answer == "5"
  assert jt[1].prompt == "2+3=6|score:" and jt[1].answer == "1"
  assert jt[0].meta["correct"] and not jt[1].meta["correct"]
  # correct candidate: 5, 4 agree; 3 (midpoint), 1 and garbage do not
  assert [jt[0].verify(j) for j in ("5", "4", "3", "1", "x")] == [1, 1, 0, 0, 0]
  # wrong candidate: 1, 2 agree
  assert [jt[1].verify(j) for j in ("1", "2", "3", "5")] == [1, 1, 0, 0]
  with pytest.raises(ValueError, match="completions"):
    dj.judging_tasks([t], ["5", "6"], "verdict")


def test_judge_metrics_hand_case():
  # scores 5, 1, NaN, 4 on correct, correct, wrong, wrong candidates:
  # agreement T, F, F (unparsed), F → accuracy 1/4; on correct 1/2, on wrong
  # 0 → balanced 1/4; score_correct = (5+1)/2 = 3, score_wrong = 4 (the NaN
  # is left out); parsed 3/4.
  m = dj.judge_metrics(judging.SCORE_1_5, [5.0, 1.0, float("nan"), 4.0],
                       ["ok", "ok", "unparsed", "ok"], [True, True, False, False])
  assert m["judge/accuracy"] == pytest.approx(0.25)
  assert m["judge/balanced_accuracy"] == pytest.approx(0.25)
  assert m["judge/score_correct"] == pytest.approx(3.0)
  assert m["judge/score_wrong"] == pytest.approx(4.0)
  assert m["judge/parsed_rate"] == pytest.approx(0.75)
  assert m["judge/ok"] == 3 and m["judge/unparsed"] == 1
  only = dj.judge_metrics("verdict", [1.0], ["ok"], [True])
  assert only["judge/balanced_accuracy"] == 1.0 and math.isnan(only["judge/score_wrong"])
  with pytest.raises(ValueError, match="labels"):
    dj.judge_metrics("verdict", [1.0], ["ok"], [True, False])


def test_meta_judging_examples_label_the_agreeing_judgment():
  t = Task(id="t", prompt="2+3=", answer="5", category="addition", target="5")
  ex = dj.meta_judging_examples([t], "score_1_5", wrong_per_task=2, seed=0)
  assert len(ex) == 3            # the target + 2 corruptions, one example each
  for e in ex:
    head, a, b = e["prompt"].split("|score:")[0], None, None
    a = e["prompt"].split("A:")[1].split(";B:")[0]
    b = e["prompt"].split(";B:")[1].split("|meta:")[0]
    cand = head[len("2+3="):]
    # one judgment is the label ("5" for the correct target, "1" for a
    # corruption), the other its opposite; the meta label points at the label
    right = "5" if cand == "5" else "1"
    assert {a, b} == {"5", "1"} and e["completion"] == ("A" if a == right else "B")
    assert e["task_id"] == "t/meta"
  assert ex[0]["prompt"].startswith("2+3=5|score:A:")
  ts = tasks_lib.make_tasks("addition", 40, difficulty=2, seed=0, reverse=True)
  labels = [e["completion"] for e in dj.meta_judging_examples(ts, "score_1_5", seed=3)]
  assert 25 < labels.count("A") < 55          # both orders appear (80 examples)
  with pytest.raises(ValueError, match="must be pairwise"):
    dj.meta_judging_examples([t], "score_1_5", "verdict")
  with pytest.raises(ValueError, match="score one candidate"):
    dj.meta_judging_examples([t], "pairwise")


def test_meta_judging_tasks_verify_against_the_verifier():
  t = Task(id="t", prompt="2+3=", answer="5", category="addition", target="5")
  # candidate "5" (right): judgment "4" agrees, "2" does not → label A;
  # candidate "6" (wrong): "5" and "4" both disagree → tie "=";
  # candidate "6": "x" unparsed (disagrees), "1" agrees → B.
  mt = dj.meta_judging_tasks([t, t, t], ["5", "6", "6"], ["4", "5", "x"],
                             ["2", "4", "1"], "score_1_5")
  assert mt[0].prompt == "2+3=5|score:A:4;B:2|meta:"
  assert [m.answer for m in mt] == ["A", "=", "B"]
  assert [(m.meta["correct"], m.meta["correct_b"]) for m in mt] == [
      (True, False), (False, False), (False, True)]
  assert [mt[0].verify(j) for j in ("A", "B", "=", "?")] == [1, 0, 0, 0]
  assert [mt[1].verify(j) for j in ("A", "B", "=")] == [0, 0, 1]
  assert mt[2].verify("B") == 1
  assert dj.judgment_agrees("score_1_5", "4", True)
  assert not dj.judgment_agrees("score_1_5", "3", True)
  with pytest.raises(ValueError, match="judgments"):
    dj.meta_judging_tasks([t], ["5"], ["4"], [], "score_1_5")
