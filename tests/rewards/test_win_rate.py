"""SPO's win-rate reward (jaxsi.rewards.win_rate) against hand numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxsi.rewards import stages
from jaxsi.rewards import win_rate as wr

NAN = float("nan")


def test_win_rates_hand_numbers():
  # P[i, j] = P(y_i > y_j): y2 beats both, y0 beats y1.
  p = np.array([[0.5, 1.0, 0.0],
                [0.0, 0.5, 0.0],
                [1.0, 1.0, 0.5]])
  # r0 = (1 + 0)/2, r1 = (0 + 0)/2, r2 = (1 + 1)/2; the diagonal is ignored.
  np.testing.assert_allclose(wr.win_rates(p), [0.5, 0.0, 1.0])
  # Ties count ½: a 2-way tie and a loss -> (0.5 + 0)/2 = 0.25.
  p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 1.0, 0.5]])
  np.testing.assert_allclose(wr.win_rates(p), [0.25, 0.25, 1.0])


def test_win_rates_unparsed_modes():
  p = np.array([[0.5, 1.0, NAN],
                [0.0, 0.5, NAN],
                [NAN, NAN, 0.5]])
  # tie: r0 = (1 + ½)/2 = 0.75, r1 = (0 + ½)/2 = 0.25, r2 = (½ + ½)/2 = 0.5.
  np.testing.assert_allclose(wr.win_rates(p, unparsed="tie"), [0.75, 0.25, 0.5])
  # skip: r0 = 1/1, r1 = 0/1, r2 has no parsed opponent -> ½.
  np.testing.assert_allclose(wr.win_rates(p, unparsed="skip"), [1.0, 0.0, 0.5])


def test_win_rates_group_of_one_and_two():
  np.testing.assert_allclose(wr.win_rates(np.array([[0.5]])), [0.5])
  # N = 2: the win rate is P itself (1/(N-1) = 1).
  np.testing.assert_allclose(wr.win_rates(np.array([[0.5, 0.3], [0.7, 0.5]])),
                             [0.3, 0.7])


def test_win_rates_errors():
  with pytest.raises(ValueError, match="unparsed"):
    wr.win_rates(np.eye(2), unparsed="drop")
  with pytest.raises(ValueError, match="square"):
    wr.win_rates(np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    wr.win_rates(np.array([[0.5, 2.0], [0.0, 0.5]]))


def test_oracle_win_rate_is_affine_in_correctness():
  # N = 4, k = 1 correct: correct (3·1 + 0)/3 = 1, wrong (1·0 + 2·½)/3 = 1/3.
  np.testing.assert_allclose(wr.win_rates(wr.oracle_preferences([0, 1, 0, 0])),
                             [1 / 3, 1.0, 1 / 3, 1 / 3], rtol=1e-6)
  # k = 2: correct (2·1 + ½)/3 = 5/6, wrong (0 + 0 + ½)/3 = 1/6.
  np.testing.assert_allclose(wr.win_rates(wr.oracle_preferences([1, 0, 1, 0])),
                             [5 / 6, 1 / 6, 5 / 6, 1 / 6], rtol=1e-6)
  # Slope N/(2(N-1)) = 4/6 in both: 1 - 1/3 = 5/6 - 1/6 = 2/3. All equal -> all ½.
  np.testing.assert_allclose(wr.win_rates(wr.oracle_preferences([1, 1, 1])), [0.5] * 3)
  # A NaN grade (failed verifier) is a NaN column: with 'tie' it counts ½.
  p = wr.oracle_preferences([1.0, NAN, 0.0])
  assert np.isnan(p[0, 1]) and np.isnan(p[1, 0]) and p[0, 2] == 1.0
  np.testing.assert_allclose(wr.win_rates(p), [0.75, 0.5, 0.25])


def test_judged_pairs_and_preference_matrix():
  np.testing.assert_array_equal(wr.judged_pairs(3, position_swap=False),
                                [[0, 1], [0, 2], [1, 2]])
  np.testing.assert_array_equal(wr.judged_pairs(2, position_swap=True),
                                [[0, 1], [1, 0]])
  assert wr.judged_pairs(1, position_swap=True).shape == (0, 2)
  # No swap: one vote per pair, P_ji = 1 - P_ij.
  p = wr.preference_matrix(3, [[0, 1], [0, 2], [1, 2]], [1.0, 0.5, NAN])
  np.testing.assert_allclose(p, [[0.5, 1.0, 0.5], [0.0, 0.5, NAN], [0.5, NAN, 0.5]])
  # Swap with a position-biased judge (always "A"): s(0,1) = 1, s(1,0) = 1 ->
  # P01 = (1 + (1 - 1))/2 = ½. One order unparsed: the other decides.
  p = wr.preference_matrix(3, wr.judged_pairs(3, position_swap=True),
                           [1.0, 1.0, 1.0, NAN, 0.0, 1.0])
  np.testing.assert_allclose(p, [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.5]])
  # Consistency: (0,1) disagree, (0,2) has one parse, (1,2) 0 vs 1-1 = 0 agree.
  assert wr.position_consistency(wr.judged_pairs(3, position_swap=True),
                                 [1.0, 1.0, 1.0, NAN, 0.0, 1.0]) == 0.5
  with pytest.raises(ValueError, match="two different samples"):
    wr.preference_matrix(2, [[0, 0]], [1.0])
  with pytest.raises(ValueError, match="1 pairs, 2 scores"):
    wr.preference_matrix(2, [[0, 1]], [1.0, 0.0])


class _Task:
  def __init__(self, answer):
    self.prompt, self.answer = "q=", answer

  def verify(self, completion):
    return float(completion == self.answer)


def _inputs(completions, groups, answer="22"):
  n = len(completions)
  return stages.RewardInputs(tasks=[_Task(answer)] * n, completions=list(completions),
                             group_ids=np.asarray(groups), prompt_ids=np.asarray(groups),
                             rows=np.arange(n))


def test_verifier_win_rate_stage():
  fn = wr.verifier_win_rate(group_size=3)
  assert fn.names == ("win_rate",) and fn.takes_inputs
  # group 0: one correct of 3 -> 1, ¼, ¼ ((0 + ½)/2); group 1: none -> ½ each.
  out = fn(_inputs(["1", "22", "3", "4", "5", "6"], [0, 0, 0, 1, 1, 1]))
  np.testing.assert_allclose(out, [0.25, 1.0, 0.25, 0.5, 0.5, 0.5])
  with pytest.raises(ValueError, match="group 1 has 2 of 3"):
    fn(_inputs(["1", "22", "3", "4", "5"], [0, 0, 0, 1, 1]))
  with pytest.raises(ValueError, match="unparsed"):
    wr.verifier_win_rate(unparsed="nan")


_PAIR = re.compile(r"A:(.*);B:(.*)\|better:$")


class _Ctx:
  """generate_text of a fake judge: ``rule(a, b) -> text``; records prompts."""

  def __init__(self, rule):
    self.rule, self.prompts, self.tokenizer = rule, [], None

  def generate_text(self, role, prompts, *, max_new_tokens, strategy=None):
    del strategy
    assert role == "policy" and max_new_tokens == 2
    self.prompts += list(prompts)
    return [self.rule(*_PAIR.search(p).groups()) for p in prompts]


def _longer(a, b):
  return "A" if len(a) > len(b) else ("B" if len(a) < len(b) else "=")


def test_judge_win_rate_consistent_judge():
  ctx = _Ctx(_longer)
  stage = wr.PairwiseJudgeWinRate(group_size=3)
  out, info = stage(ctx, _inputs(["1", "22", "333"], [0, 0, 0]))
  # "333" beats both, "22" beats "1": P = [[., 0, 0], [1, ., 0], [1, 1, .]].
  np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.0])
  assert len(ctx.prompts) == 6                      # 3 pairs × 2 orders
  assert ctx.prompts[0] == "q=A:1;B:22|better:"
  assert ctx.prompts[1] == "q=A:22;B:1|better:"
  assert info["spo/position_consistency"] == 1.0
  # Perfect rater ("22" is the only correct one): pairs (1,22) want B, (1,333)
  # tie, (22,333) want A. The length judge gets (1,22)/(22,1) right only: 2 of 6.
  assert info["spo/judge_agreement"] == pytest.approx(2 / 6)
  assert info["judge/ok"] == 6 and info["judge/unparsed"] == 0


def test_judge_win_rate_position_bias_and_unparsed():
  biased = _Ctx(lambda a, b: "A")
  out, info = wr.PairwiseJudgeWinRate()(biased, _inputs(["1", "22", "333"], [0] * 3))
  np.testing.assert_allclose(out[:, 0], [0.5, 0.5, 0.5])   # swap cancels the bias
  assert info["spo/position_consistency"] == 0.0
  # Without the swap the bias decides: the first index wins every pair ->
  # r0 = 1, r1 = (0 + 1)/2, r2 = 0.
  out, _ = wr.PairwiseJudgeWinRate(position_swap=False)(
      _Ctx(lambda a, b: "A"), _inputs(["1", "22", "333"], [0] * 3))
  np.testing.assert_allclose(out[:, 0], [1.0, 0.5, 0.0])
  # Garbage judgments: every pair unparsed -> ½ under both modes.
  for mode in ("tie", "skip"):
    out, info = wr.PairwiseJudgeWinRate(unparsed=mode)(
        _Ctx(lambda a, b: "??"), _inputs(["1", "22"], [0, 0]))
    np.testing.assert_allclose(out[:, 0], [0.5, 0.5])
    assert info["judge/unparsed"] == 2 and np.isnan(info["spo/judge_agreement"])
  # Groups are judged separately; a group of 1 gets ½ and no judgment.
  ctx = _Ctx(_longer)
  out, _ = wr.PairwiseJudgeWinRate(position_swap=False)(
      ctx, _inputs(["1", "22", "7"], [0, 0, 1]))
  np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 0.5])
  assert len(ctx.prompts) == 1


def test_judge_win_rate_errors():
  with pytest.raises(ValueError, match="pairwise format"):
    wr.PairwiseJudgeWinRate(format="score_1_5")
  with pytest.raises(ValueError, match="unparsed"):
    wr.PairwiseJudgeWinRate(unparsed="zero")
  with pytest.raises(ValueError, match="max_new_tokens"):
    wr.PairwiseJudgeWinRate(max_new_tokens=0)
  with pytest.raises(ValueError, match="group 0 has 2 of 3"):
    wr.PairwiseJudgeWinRate(group_size=3)(_Ctx(_longer), _inputs(["1", "2"], [0, 0]))
  stage = wr.PairwiseJudgeWinRate(role="judge", name="w")
  assert stage.roles == ("judge",) and stage.names == ("w",)
