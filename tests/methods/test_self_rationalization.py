"""Self-Rationalization: gold-matching judgments (exact / agree), pair curation
by hand, the rationale judgments through a fake context, warm start, refusals,
one tiny round end to end."""

import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import self_rationalization as srat
from jaxsi.rewards import judging

from tests.methods import judge_fakes
from tests.methods import judging_fixtures

FMT = judging.RATIONALE_1_5


def rec(tid, completion, correct, judgments):
  scores = [FMT.parse(j)[0] for j in judgments]
  return dict(task_id=tid, prompt="q" + tid, completion=completion, correct=correct,
              judgments=judgments,
              judgment_scores=[s if s == s else None for s in scores])


RECORDS = [
    # a: correct answer (gold score 5): "7>5" matches, "7>4" (exact: no, agree: yes),
    # "8>1" no, "x" unparsed → rejected
    rec("a", "7", True, ["7>5", "7>4", "8>1", "x"]),
    # b: wrong answer (gold 1): every judgment says 1 → all match, no pair
    rec("b", "9", False, ["8>1", "8>1"]),
    # c: wrong answer: none says 1 → no pair
    rec("c", "6", False, ["6>5", "6>4"]),
]


def test_matches_gold():
  assert srat.matches_gold(FMT, 5.0, True) and srat.matches_gold(FMT, 1.0, False)
  assert not srat.matches_gold(FMT, 4.0, True)
  assert srat.matches_gold(FMT, 4.0, True, match="agree")          # 4 > midpoint 3
  assert not srat.matches_gold(FMT, 3.0, True, match="agree")      # the midpoint
  assert not srat.matches_gold(FMT, None, True)
  with pytest.raises(ValueError, match="match"):
    srat.matches_gold(FMT, 5.0, True, match="close")


def test_curate_pairs_hand_case():
  pairs, m = srat.curate_pairs(RECORDS, FMT)
  # exact: a's chosen {"7>5"}, rejected {"7>4", "8>1", "x"}; one pair per input
  assert pairs == [dict(prompt="qa7|why:", task_id="a", chosen="7>5", rejected="7>4")]
  assert m["pairs/count"] == 1.0
  assert m["pairs/inputs_paired"] == pytest.approx(1 / 3)
  assert m["pairs/all_match"] == pytest.approx(1 / 3)     # b
  assert m["pairs/none_match"] == pytest.approx(1 / 3)    # c
  # up to 3 per input: "7>5" cycles against each rejected judgment
  pairs, _ = srat.curate_pairs(RECORDS, FMT, max_pairs_per_input=3)
  assert [(p["chosen"], p["rejected"]) for p in pairs] == [
      ("7>5", "7>4"), ("7>5", "8>1"), ("7>5", "x")]
  # agree: "7>4" now matches: chosen {"7>5", "7>4"}, rejected {"8>1", "x"}
  pairs, _ = srat.curate_pairs(RECORDS, FMT, match="agree", max_pairs_per_input=4)
  assert [(p["chosen"], p["rejected"]) for p in pairs] == [("7>5", "8>1"), ("7>4", "x")]
  with pytest.raises(ValueError, match="max_pairs_per_input"):
    srat.curate_pairs(RECORDS, FMT, max_pairs_per_input=0)


def test_select_and_sampled_rationales():
  m = srat.self_rationalization()
  _, pairs, metrics = m.select([dict(r, judge_score=None, judge_status="ok", answer="",
                                     sample=0, difficulty=1) for r in RECORDS], {}, None)
  assert len(pairs) == 1 and metrics["pairs"] == 1
  # 8 judgments; exact matches: a "7>5", b "8>1" × 2 → 3/8
  assert metrics["judge/judgment_match_rate"] == pytest.approx(3 / 8)
  ts = tasks_lib.make_tasks("addition", 1, difficulty=1, seed=0, reverse=True)
  # the k = 3 judgments come from the KV cache, one call per judgment
  ctx = judge_fakes.FakeCtx(cont=lambda j, i: ["7>5", "7>1", "zz"][j], max_new_tokens=4)
  ro = judge_fakes.FakeSamples(["7"])
  from jaxsi.methods import self_rewarding as sr
  judged, _ = sr.sample_judgments(ctx, ts, ro.texts, FMT, k=3, temperature=1.0, samples=ro)
  assert judged == [["7>5", "7>1", "zz"]]
  assert [c[0] for c in ctx.cont_calls] == ["|why:"] * 3


def test_warm_start_and_refusals():
  labeled = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)
  m = srat.self_rationalization(beta=0.3)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.3}
  ws = m.warm_start(labeled)
  assert len(ws) == 4 + 8                # targets + (target, corruption) judging
  t = labeled[0]
  # the rationale of a judgment is the task's target, then the gold score
  assert ws[4] == dict(prompt=f"{t.prompt}{t.target}|why:", completion=f"{t.target}>5",
                       task_id=f"{t.id}/judge")
  assert ws[5]["completion"] == f"{t.target}>1"
  with pytest.raises(ValueError, match="pointwise"):
    srat.self_rationalization(judge_format="verdict")
  with pytest.raises(ValueError, match="judge_samples must be >= 2"):
    srat.self_rationalization(judge_samples=1)
  with pytest.raises(ValueError, match="judge_temperature"):
    srat.self_rationalization(judge_temperature=0.0)
  with pytest.raises(ValueError, match="match"):
    srat.self_rationalization(match="close")
  with pytest.raises(ValueError, match="max_pairs_per_input"):
    srat.self_rationalization(max_pairs_per_input=0)
  with pytest.raises(ValueError, match="beta"):
    srat.self_rationalization(beta=-1.0)
  with pytest.raises(TypeError, match="RolloutSpec"):
    srat.self_rationalization(rollout={"n": 2})


def test_one_round_end_to_end(tmp_path):
  m = srat.self_rationalization(rollout=spec.RolloutSpec(n=2, temperature=1.0),
                                judge_format="score_1_5", judge_samples=2,
                                eval_judge_n=0)
  recs, chunk = judging_fixtures.one_round(m, tmp_path)
  assert recs[0]["train_size"] == 8 * 3           # targets + judging examples
  sel = recs[1]["select"]
  assert sum(sel[f"judge/{s}"] for s in judging.STATUSES) == 16
  assert recs[1]["pairs"] == sel["pairs"] == sel["pairs/count"]
  assert len(chunk) == 16 and all(len(c["judgments"]) == 2 for c in chunk)
