"""Meta-Rewarding LM: length-controlled actor pairs, position-swapped battles,
judge pairs and meta-judge accuracy by hand; the meta-judge's prompts and
position swap through a fake context; warm start, refusals, label-blind
selection; one tiny round end to end."""

import math

import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import meta_rewarding as mr
from jaxsi.rewards import judging

from tests.methods import judge_fakes
from tests.methods import judging_fixtures

NAN = float("nan")


def rec(tid, s, completion, score, correct, **kw):
  r = dict(task_id=tid, prompt="q" + tid, sample=s, completion=completion,
           judge_score=score, judge_status="ok" if score is not None else "unparsed",
           correct=correct, answer=completion, difficulty=1)
  r.update(kw)
  return r


GROUP = [rec("a", 0, "1234", 4.0, False), rec("a", 1, "12345", 5.0, True),
         rec("a", 2, "12", 4.5, True), rec("a", 3, "9", 1.0, False),
         rec("a", 4, "0", None, False)]


def test_length_controlled_pair_hand_case():
  # S_max = 5, S_min = 1 (the unscored "0" never takes part)
  pair = lambda **kw: tuple(r["completion"] for r in mr.length_controlled_pair(GROUP, **kw))
  # ρ = 0: top tier s ≥ 5 = {"12345"}; rejected the lowest, "9"
  assert pair(rho=0.0) == ("12345", "9")
  # ρ = 0.2: s ≥ 0.8·5 + 0.2·1 = 4.2 → {"12345", "12"}: the shortest, "12"
  assert pair(rho=0.2) == ("12", "9")
  # ρ = 0.25: s ≥ 4.0 → {"1234", "12345", "12"}: still "12"
  assert pair(rho=0.25) == ("12", "9")
  # no length control: the first best-scored (Self-Rewarding's pair)
  assert pair(rho=None) == ("12345", "9")
  # the gap 5 − 1 = 4 is not > 4
  assert mr.length_controlled_pair(GROUP, margin=4.0) is None
  assert mr.length_controlled_pair(GROUP[3:], rho=0.0) is None    # one scored record
  tie = [rec("b", 0, "7", 3.0, True), rec("b", 1, "8", 3.0, False)]
  assert mr.length_controlled_pair(tie) is None


def test_actor_pairs_metrics():
  recs = GROUP + [rec("c", 0, "55", 2.0, True), rec("c", 1, "6", 5.0, False)]
  pairs, m = mr.actor_pairs(recs, rho=0.2)
  assert [(p["task_id"], p["chosen"], p["rejected"], p["kind"]) for p in pairs] == [
      ("a", "12", "9", "actor"), ("c", "6", "55", "actor")]
  assert pairs[0]["prompt"] == "qa"
  assert m["pairs/count"] == 2.0
  assert m["pairs/chosen_len"] == pytest.approx((2 + 1) / 2)
  assert m["pairs/rejected_len"] == pytest.approx((1 + 2) / 2)
  assert m["pairs/self_preferred_wrong"] == pytest.approx(0.5)    # c's "6" is wrong
  assert m["pairs/correct_over_wrong"] == pytest.approx(0.5)      # a: "12" ≻ "9"


# Three judgments of one response. Battles (i, j, s_ij, s_ji):
#   (0, 1): A=0 wins (1), swapped A=1 loses (0): votes [1, 1 − 0] → 0 wins 1
#   (0, 2): A=0 wins (1), swapped A=2 wins (1): position bias, votes [1, 0] → ½ each
#   (1, 2): first order unparsed, swapped a tie (½): votes [1 − ½] → ½ each
#   (0, 1) again, both unparsed: no battle
OUTCOMES = [(0, 1, 1.0, 0.0), (0, 2, 1.0, 1.0), (1, 2, NAN, 0.5), (0, 1, NAN, NAN)]


def test_battle_scores_hand_case():
  wins, battles = mr.battle_scores(3, OUTCOMES)
  assert wins == pytest.approx([1.0 + 0.5, 0.0 + 0.5, 0.5 + 0.5])
  assert battles == [2, 2, 2]
  assert mr.battle_pairs(["5", "1", "5", "4"]) == [(0, 1), (0, 3), (1, 2), (1, 3),
                                                   (2, 3)]   # (0, 2) equal texts


def test_judge_pairs_hand_case():
  fmt = judging.SCORE_1_5
  recs = [
      # win rates 1.5/2, 0.5/2, 1/2 → "5" ≻ "1"; the verifier: "5" agrees
      rec("a", 0, "7", 3.7, True, judgments=["5", "1", "4"], meta_wins=[1.5, 0.5, 1.0],
          meta_battles=[2, 2, 2], judgment_agrees=[True, False, True]),
      # equal win rates → no pair
      rec("a", 1, "8", 3.0, False, judgments=["5", "1"], meta_wins=[0.5, 0.5],
          meta_battles=[1, 1], judgment_agrees=[False, True]),
      # no battle (all judgments equal) → no pair
      rec("b", 0, "9", 5.0, False, judgments=["5", "5"], meta_wins=[0.0, 0.0],
          meta_battles=[0, 0], judgment_agrees=[False, False]),
      # "1" wins 1/1 over "5" but the verifier says "5" was right
      rec("b", 1, "6", 3.0, True, judgments=["1", "5"], meta_wins=[1.0, 0.0],
          meta_battles=[1, 1], judgment_agrees=[False, True]),
  ]
  pairs, m = mr.judge_pairs(recs, fmt)
  assert [(p["prompt"], p["chosen"], p["rejected"], p["kind"]) for p in pairs] == [
      ("qa7|score:", "5", "1", "judge"), ("qb6|score:", "1", "5", "judge")]
  assert m["judge_pairs/count"] == 2.0
  assert m["judge_pairs/chosen_agrees"] == pytest.approx(0.5)
  assert m["judge_pairs/correct_over_wrong"] == pytest.approx(0.5)
  assert m["judge_pairs/wrong_over_correct"] == pytest.approx(0.5)
  # a gap of 0.5 (0.75 − 0.25) passes meta_margin 0.4 but not 0.5; b's gap is 1
  assert len(mr.judge_pairs(recs, fmt, meta_margin=0.5)[0]) == 1


def test_meta_accuracy_hand_case():
  # judgments 0 agrees, 1 and 2 do not. Battles where exactly one agrees:
  # (0, 1): judgment 0 gets 1; (0, 2): ½ (the position-biased one). (1, 2) is
  # skipped (neither agrees), the last (0, 1) has no parsed order.
  m = mr.meta_accuracy([dict(judgment_agrees=[True, False, False], meta_outcomes=OUTCOMES)])
  assert m["meta/accuracy"] == pytest.approx((1.0 + 0.5) / 2)
  assert m["meta/battles"] == 2
  # both orders parsed in (0, 1) (1 + 0 = 1: consistent) and (0, 2) (1 + 1: not)
  assert m["meta/position_consistency"] == pytest.approx(0.5)
  assert math.isnan(mr.meta_accuracy([])["meta/accuracy"])


def test_meta_judge_prompts_and_position_swap():
  ts = tasks_lib.make_tasks("addition", 1, difficulty=1, seed=0, reverse=True)
  seen = []

  def answer(prompt, m):   # the fake meta-judge prefers whichever judgment is "5"
    seen.append(prompt)
    return "A" if "A:5;" in prompt else "B"

  ctx = judge_fakes.FakeCtx(answer=answer)
  out = mr.meta_judge(ctx, ts, [ts[0].target], [["5", "1", "5"]], judging.SCORE_1_5,
                      judging.META_PAIRWISE)
  x = ts[0].prompt + ts[0].target + "|score:"
  # pairs of distinct texts (0, 1), (1, 2), each in both orders, one greedy batch
  assert seen == [x + "A:5;B:1|meta:", x + "A:1;B:5|meta:",
                  x + "A:1;B:5|meta:", x + "A:5;B:1|meta:"]
  assert ctx.sample_calls == [(4, 1, 0.0, "Greedy")] and ctx.generated == []
  assert out == [[(0, 1, 1.0, 0.0), (1, 2, 0.0, 1.0)]]
  assert mr.battle_scores(3, out[0]) == ([1.0, 0.0, 1.0], [1, 2, 1])
  # prompts of several lengths are sampled one sampler batch per call (here
  # rollout_batch = 2 → 2 calls of 2), with the same outcomes
  ctx = judge_fakes.FakeCtx(answer=answer, rollout_batch=2)
  assert mr.meta_judge(ctx, ts, [ts[0].target], [["5", "1", "5"]], judging.SCORE_1_5,
                       judging.META_PAIRWISE) == out
  assert ctx.sample_calls == [(2, 1, 0.0, "Greedy")] * 2 and ctx.generated == []


def test_selection_never_reads_the_gold_labels():
  m = mr.meta_rewarding()
  recs = [dict(r, judgments=["5", "1"], meta_wins=[1.0, 0.0], meta_battles=[1, 1],
               meta_outcomes=[(0, 1, 1.0, 0.0)], judgment_agrees=[True, False])
          for r in GROUP]
  flipped = [dict(r, correct=not r["correct"],
                  judgment_agrees=[not a for a in r["judgment_agrees"]]) for r in recs]
  _, pairs, metrics = m.select(recs, {}, None)
  _, pairs2, metrics2 = m.select(flipped, {}, None)
  assert pairs == pairs2
  # 1 actor pair (group a) + a judge pair for each of the 5 responses
  assert metrics["pairs"] == 6 and metrics["judge_pairs/count"] == 5
  assert metrics["meta/accuracy"] == 1.0 and metrics2["meta/accuracy"] == 0.0


def test_warm_start_settings_and_refusals():
  labeled = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)
  m = mr.meta_rewarding(beta=0.2)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.2}
  ws = m.warm_start(labeled)
  # 4 targets + 4 × (target, corruption) judging + 4 × (target, corruption) meta
  assert len(ws) == 4 + 8 + 8
  assert all(e["prompt"].endswith("|meta:") and e["completion"] in ("A", "B")
             for e in ws[12:])
  with pytest.raises(ValueError, match="pointwise"):
    mr.meta_rewarding(judge_format="verdict")
  with pytest.raises(ValueError, match="meta_format"):
    mr.meta_rewarding(meta_format="score_1_5")
  with pytest.raises(ValueError, match="judge_samples >= 2"):
    mr.meta_rewarding(judge_samples=1)
  assert mr.meta_rewarding(judge_samples=1, train_judge=False).name == "meta_rewarding"
  with pytest.raises(ValueError, match="both False"):
    mr.meta_rewarding(train_actor=False, train_judge=False)
  with pytest.raises(ValueError, match="length_rho"):
    mr.meta_rewarding(length_rho=1.5)
  with pytest.raises(ValueError, match="meta_margin"):
    mr.meta_rewarding(meta_margin=-1.0)
  with pytest.raises(ValueError, match="beta"):
    mr.meta_rewarding(beta=0.0)
  with pytest.raises(ValueError, match="rollout.n"):
    mr.meta_rewarding(rollout=spec.RolloutSpec(n=1))
  with pytest.raises(ValueError, match="judge_temperature"):
    mr.meta_rewarding(judge_temperature=0.0)


def test_one_round_end_to_end(tmp_path):
  m = mr.meta_rewarding(rollout=spec.RolloutSpec(n=2, temperature=1.0), judge_samples=2,
                        eval_judge_n=0)
  recs, chunk = judging_fixtures.one_round(m, tmp_path)
  assert [r["round"] for r in recs] == [0, 1]
  assert recs[0]["train_size"] == 8 * 5          # targets + judging + meta examples
  sel = recs[1]["select"]
  assert sum(sel[f"judge/{s}"] for s in judging.STATUSES) == 8 * 2
  assert sel["pairs"] == sel["pairs/count"] + sel["judge_pairs/count"] == recs[1]["pairs"]
  assert len(chunk) == 16
  for c in chunk:      # k = 2 judgments per response, their battles stored
    assert len(c["judgments"]) == 2 and len(c["meta_wins"]) == 2
    assert len(c["meta_outcomes"]) == (c["judgments"][0] != c["judgments"][1])
