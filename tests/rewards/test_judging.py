"""Judging formats: parsers (score, status) on hand cases; the Judge stage."""

import math

import numpy as np
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.data.registry import Task
from jaxsi.rewards import judging
from jaxsi.rewards import stages


def test_pointwise_parse_hand_cases():
  f = judging.SCORE_1_5
  assert f.parse("4") == (4.0, "ok")
  assert f.parse(" Score: 3 because") == (3.0, "ok")
  assert f.parse("5xyz", finished=False) == (5.0, "ok")   # parsed: ok even over budget
  for text in ("7", "0", "x", "", "-2"):
    s, status = f.parse(text)
    assert math.isnan(s) and status == "unparsed", text
  s, status = f.parse("zz", finished=False)
  assert math.isnan(s) and status == "over_budget"
  assert judging.SCORE_0_10.parse("10") == (10.0, "ok")
  assert judging.SCORE_0_10.parse("0") == (0.0, "ok")
  assert math.isnan(judging.SCORE_0_10.parse("11")[0])


def test_verdict_and_pairwise_parse():
  v = judging.VERDICT
  assert v.parse("y") == (1.0, "ok") and v.parse(" n ") == (0.0, "ok")
  assert v.parse("q")[1] == "unparsed"
  p = judging.PAIRWISE
  assert p.parse("A") == (1.0, "ok")
  assert p.parse("B") == (0.0, "ok")
  assert p.parse("=") == (0.5, "tie")
  assert p.parse("C")[1] == "unparsed"
  assert p.parse("C", finished=False)[1] == "over_budget"
  # "yes" beats "y" when both are words of a format (longest first).
  yes = judging.JudgeFormat(name="yn", kind="verdict", template="{completion}?",
                            yes="yes", no="y")
  assert yes.parse("yes") == (1.0, "ok") and yes.parse("y") == (0.0, "ok")


def test_labels_prompts_and_agreement():
  f = judging.SCORE_1_5
  assert f.label(True) == "5" and f.label(False) == "1"
  assert judging.SCORE_0_10.label(True) == "10"
  assert judging.VERDICT.label(False) == "n"
  p = judging.PAIRWISE
  assert [p.label(a, b) for a, b in ((True, False), (False, True), (True, True),
                                      (False, False))] == ["A", "B", "=", "="]
  assert f.prompt("2+3=", "5") == "2+3=5|score:"
  assert p.prompt("2+3=", "5", completion_b="6") == "2+3=A:5;B:6|better:"
  with pytest.raises(ValueError, match="completion_b"):
    p.prompt("2+3=", "5")
  with pytest.raises(ValueError, match="only for pairwise"):
    f.prompt("2+3=", "5", completion_b="6")
  # midpoint (1+5)/2 = 3 agrees with neither verdict
  assert f.agrees(4.0, True) and not f.agrees(3.0, True) and not f.agrees(3.0, False)
  assert f.agrees(2.0, False) and not f.agrees(2.0, True)
  assert not f.agrees(float("nan"), True) and not f.agrees(float("nan"), False)
  assert judging.VERDICT.agrees(0.0, False) and not judging.VERDICT.agrees(1.0, False)
  assert p.agrees(0.5, True, True) and p.agrees(0.0, False, True)
  assert not p.agrees(1.0, False, True)


def test_bad_formats_are_refused():
  with pytest.raises(ValueError, match="kind"):
    judging.JudgeFormat(name="x", kind="ranking", template="{completion}")
  with pytest.raises(ValueError, match="template lacks"):
    judging.JudgeFormat(name="x", kind="pointwise", template="{prompt}")
  with pytest.raises(ValueError, match="completion_b"):
    judging.JudgeFormat(name="x", kind="pairwise", template="{completion_a}")
  with pytest.raises(ValueError, match="low < high"):
    judging.JudgeFormat(name="x", kind="pointwise", template="{completion}", low=5, high=5)
  with pytest.raises(ValueError, match="distinct"):
    judging.JudgeFormat(name="x", kind="verdict", template="{completion}", yes="y", no="y")
  with pytest.raises(ValueError, match="one of"):
    judging.get_format("score_1_10")
  assert judging.get_format("verdict") is judging.VERDICT


def test_count_statuses():
  c = judging.count_statuses(["ok", "ok", "tie", "over_budget"])
  assert c == {"judge/ok": 2, "judge/unparsed": 0, "judge/tie": 1, "judge/over_budget": 1}
  with pytest.raises(ValueError, match="unknown status"):
    judging.count_statuses(["fine"])


class _Ctx:
  """A stage context whose judge role writes fixed judgments."""

  def __init__(self, texts):
    self.texts, self.calls = texts, []
    self.tokenizer = char_tokenizer.CharTokenizer()

  def generate_text(self, role, prompts, *, max_new_tokens, strategy=None):
    self.calls.append((role, list(prompts), max_new_tokens))
    return list(self.texts)


def _inputs(n):
  tasks = [Task(id=str(i), prompt=f"{i}+1=", answer=str(i + 1), category="addition")
           for i in range(n)]
  idx = np.arange(n)
  return stages.RewardInputs(tasks=tasks, completions=[str(i + 1) for i in range(n)],
                             group_ids=idx, prompt_ids=idx, rows=idx)


def test_judge_stage_with_a_format_counts_statuses():
  # Budget 2 tokens: "4" parses; "x" stopped early → unparsed; "zz" used the
  # whole budget unparsed → over_budget; "2" parses.
  ctx = _Ctx(["4", "x", "zz", "2"])
  judge = stages.Judge(role="policy", format=judging.SCORE_1_5, max_new_tokens=2,
                       default=-1.0)
  scores, info = judge(ctx, _inputs(4))
  np.testing.assert_array_equal(scores[:, 0], [4.0, -1.0, -1.0, 2.0])
  assert info["judge_statuses"] == ["ok", "unparsed", "over_budget", "ok"]
  assert info["judge/ok"] == 2 and info["judge/unparsed"] == 1
  assert info["judge/over_budget"] == 1 and info["judge_unparsed"] == 2
  role, prompts, budget = ctx.calls[0]
  assert role == "policy" and budget == 2
  assert prompts == ["0+1=1|score:", "1+1=2|score:", "2+1=3|score:", "3+1=4|score:"]
  assert judge.names == ("judge",) and judge.roles == ("policy",)


def test_judge_stage_refuses_mixed_or_pairwise_settings():
  with pytest.raises(ValueError, match="not both"):
    stages.Judge(format="score_1_5", parse=float)(_Ctx(["1"]), _inputs(1))
  with pytest.raises(ValueError, match="pairwise"):
    stages.Judge(format="pairwise")(_Ctx(["A"]), _inputs(1))
  # The old behaviour (template + parse) is unchanged.
  scores, info = stages.Judge(template="{completion}?", parse=float, max_new_tokens=3)(
      _Ctx(["2", "q"]), _inputs(2))
  np.testing.assert_array_equal(scores[:, 0], [2.0, 0.0])
  assert info["judge_unparsed"] == 1


def test_rationale_format():
  assert judging.RATIONALE_1_5.parse("133>5") == (5.0, "ok")
  assert judging.RATIONALE_1_5.parse("1>3>2") == (2.0, "ok")         # the score follows the last ">"
  assert judging.RATIONALE_1_5.parse("133")[1] == "unparsed"         # no rationale separator
  assert judging.RATIONALE_1_5.parse("133>")[1] == "unparsed"
  assert judging.RATIONALE_1_5.parse("133>9")[1] == "unparsed"       # out of range
  assert judging.RATIONALE_1_5.judgment(True, "133") == "133>5" and judging.RATIONALE_1_5.judgment(False, "1") == "1>1"
  assert judging.SCORE_1_5.judgment(True, "133") == "5"   # no rationale: the label
  assert judging.get_format("rationale_1_5") is judging.RATIONALE_1_5
  # the meta-judge: a pairwise format over two judgments of one candidate
  meta = judging.get_format("meta_pairwise")
  assert meta.prompt("2+3=5|score:", "5", completion_b="1") == "2+3=5|score:A:5;B:1|meta:"
  assert meta.parse("B") == (0.0, "ok") and meta.parse("=") == (0.5, "tie")
