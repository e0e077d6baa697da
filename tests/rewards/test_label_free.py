"""Majority-vote pseudo-label rewards (TTRL / SRT) and Co-Reward, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsi.data.registry import Task
from jaxsi.rewards import label_free
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.rewards import stages
from jaxsi.trajectory import Trajectory


def _task(answer: str) -> Task:
  return Task(id=f"t{answer}", prompt="?", answer=answer, category="addition",
              target=answer)


def _inputs(completions, groups, answers=None, pair_ids=None):
  b = len(completions)
  answers = answers or ["5"] * b
  traj = None
  if pair_ids is not None:
    traj = Trajectory.create(np.zeros((b, 2), np.int32), pair_ids=pair_ids)
    traj = traj.replace(**{k: np.asarray(getattr(traj, k)) for k in
                           ("tokens", "positions", "input_mask", "loss_mask",
                            "weights", "valid", "group_ids", "prompt_ids",
                            "pair_ids")})
  return stages.RewardInputs(
      tasks=[_task(a) for a in answers], completions=list(completions),
      group_ids=np.asarray(groups), prompt_ids=np.asarray(groups),
      rows=np.arange(b), traj=traj)


def test_majority_reward_hand_numbers_ties_and_unparseable():
  # group 0: '5','5','3', unparseable → label '5'; group 4: tie '7' vs '2'
  # → the answer seen first ('7'); group 8: all unparseable → no label, 0s.
  comps = ["5", "05", "3", "", "7", "2", "2", "7", "", "abc", "", ""]
  groups = [0] * 4 + [4] * 4 + [8] * 4
  fn = label_free.majority_vote_reward(group_size=4)
  r = fn(_inputs(comps, groups))
  np.testing.assert_array_equal(
      r, [1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
  assert fn.names == ("majority",) and fn.takes_inputs


def test_majority_group_of_one():
  fn = label_free.majority_vote_reward(group_size=1)
  np.testing.assert_array_equal(fn(_inputs(["4", "", "9"], [0, 1, 2])), [1, 0, 1])


def test_partial_group_is_refused():
  fn = label_free.majority_vote_reward(group_size=4)
  with pytest.raises(ValueError, match="group 0 has 3 of 4"):
    fn(_inputs(["1", "1", "2"], [0, 0, 0]))
  # Without a declared size, unequal groups are refused too.
  fn = label_free.majority_vote_reward()
  with pytest.raises(ValueError, match="group 3 has 1 of 3"):
    fn(_inputs(["1", "1", "2", "4"], [0, 0, 0, 3]))


def test_reward_stage_retries_whole_groups():
  # A batch failure (here: one row's text is not a str → the stage errors on
  # the whole batch) is retried group by group; the good group is graded
  # over all of its rows, the failing group is NaN.
  calls = []
  inner = label_free.majority_vote_reward(group_size=2)

  def fn(inputs):
    calls.append(list(inputs.group_ids))
    if any(c == "boom" for c in inputs.completions):
      raise RuntimeError("boom")
    return inner(inputs)

  stage = stages.host(stages.batch_reward(fn, "majority"))

  class Ctx:
    reward_timeout_s = 10.0

  r, _ = stage(Ctx(), _inputs(["3", "3", "boom", "1"], [0, 0, 2, 2]))
  np.testing.assert_array_equal(r[:2, 0], [1, 1])
  assert np.isnan(r[2:]).all()
  assert calls[1:] == [[0, 0], [2, 2]]


def test_co_reward_uses_the_partner_vote():
  # groups 0 (q) and 3 (q'); pair_ids = the partner's group id.
  # q votes '5' (2:1), q' votes '6' (2:1): q rows are graded against '6',
  # q' rows against '5'.
  comps = ["5", "5", "6", "6", "5", "6"]
  groups = [0, 0, 0, 3, 3, 3]
  pair = [3, 3, 3, 0, 0, 0]
  fn = label_free.cross_agreement_reward(group_size=3)
  r = fn(_inputs(comps, groups, pair_ids=pair))
  np.testing.assert_array_equal(r, [0, 0, 1, 0, 1, 0])


def test_co_reward_refuses_a_missing_partner_or_no_pairs():
  fn = label_free.cross_agreement_reward(group_size=2)
  with pytest.raises(ValueError, match="partner group 2 is not in the batch"):
    fn(_inputs(["1", "1"], [0, 0], pair_ids=[2, 2]))
  with pytest.raises(ValueError, match="no pair_ids"):
    fn(_inputs(["1", "1"], [0, 0]))


def test_pseudo_label_stats_hand_numbers():
  # gold 5 for group 0 (label '5' right), gold 9 for group 3 (label '2'
  # wrong), group 6 unparseable (no label).
  comps = ["5", "5", "4", "2", "2", "9", "", "x", "?"]
  answers = ["5"] * 3 + ["9"] * 3 + ["1"] * 3
  groups = [0] * 3 + [3] * 3 + [6] * 3
  s = label_free.pseudo_label_stats([_task(a) for a in answers], comps, groups)
  assert s["pseudo_label_acc"] == pytest.approx(1 / 3)
  assert s["agreement"] == pytest.approx(4 / 9)
  assert s["no_label_frac"] == pytest.approx(1 / 3)
  assert s["unparseable_frac"] == pytest.approx(3 / 9)
  assert s["sample_acc"] == pytest.approx(3 / 9)
  # Co-Reward monitoring: each group labelled by the other's vote.
  s = label_free.pseudo_label_stats([_task("5")] * 4, ["5", "5", "3", "3"],
                                    [0, 0, 2, 2], label_groups=[2, 2, 0, 0])
  assert s["pseudo_label_acc"] == 0.5 and s["agreement"] == 0.0


def test_canonical_answers_are_compared_canonically():
  fn = label_free.majority_vote_reward(group_size=3)
  r = fn(_inputs(["#### 1,000", "1000.0", "999"], [0, 0, 0]))
  np.testing.assert_array_equal(r, [1, 1, 0])
  # and they are plain reward stages for the loop
  (stage,) = stages.as_stages([fn])
  assert stage.names == ("majority",)
  assert reward_lib.reward_names(fn) == ("majority",)
