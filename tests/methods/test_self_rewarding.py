"""Self-Rewarding LM: pairs from self-judged scores (hand case), factory checks,
one tiny round end to end."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import self_rewarding as sr
from jaxsi.rewards import judging
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import rounds

from tests.methods import judge_fakes


def rec(tid, s, completion, score, correct):
  return dict(task_id=tid, prompt="q" + tid, sample=s, completion=completion,
              judge_score=score, judge_status="ok" if score is not None else "unparsed",
              correct=correct, answer=completion, difficulty=1)


RECORDS = [
    # a: scores 4, 2, unparsed, 5 → chosen #3 ("4444", wrong), rejected #1 ("2")
    rec("a", 0, "11", 4.0, False), rec("a", 1, "2", 2.0, True),
    rec("a", 2, "333", None, True), rec("a", 3, "4444", 5.0, False),
    # b: a tie (3 = 3) → no pair (§2.3: "if their scores are not equal")
    rec("b", 0, "7", 3.0, True), rec("b", 1, "8", 3.0, False),
    # c: 1 vs 5 → chosen "88" (correct), rejected "9" (wrong)
    rec("c", 0, "9", 1.0, False), rec("c", 1, "88", 5.0, True),
]


def test_pairs_from_scores_hand_case():
  pairs, m = sr.pairs_from_scores(RECORDS)
  assert [(p["task_id"], p["chosen"], p["rejected"]) for p in pairs] == [
      ("a", "4444", "2"), ("c", "88", "9")]
  assert pairs[0]["prompt"] == "qa"
  assert m["pairs/count"] == 2.0
  assert m["pairs/frac_groups"] == pytest.approx(2 / 3)
  assert m["pairs/margin_mean"] == pytest.approx((3.0 + 4.0) / 2)   # a: 5−2, c: 5−1
  assert m["pairs/chosen_len"] == pytest.approx((4 + 2) / 2)
  assert m["pairs/rejected_len"] == pytest.approx((1 + 1) / 2)
  assert m["pairs/self_preferred_wrong"] == pytest.approx(0.5)      # a's chosen is wrong
  assert m["pairs/correct_over_wrong"] == pytest.approx(0.5)        # c
  # margin 3.5: a's gap 3 is dropped, c's 4 stays
  pairs, m = sr.pairs_from_scores(RECORDS, margin=3.5)
  assert [p["task_id"] for p in pairs] == ["c"] and m["pairs/count"] == 1.0


def test_selection_never_reads_the_gold_labels():
  m = sr.self_rewarding()
  _, pairs, metrics = m.select(RECORDS, {}, None)
  flipped = [dict(r, correct=not r["correct"]) for r in RECORDS]
  _, pairs2, metrics2 = m.select(flipped, {}, None)
  assert pairs == pairs2
  # ... but the reward-hacking metrics do: judge accuracy against the verifier.
  # Agreement (1–5, midpoint 3): a: 4/F no, 2/T no, None no, 5/F no; b: 3 no, 3 no;
  # c: 1/F yes, 5/T yes → 2/8.
  assert metrics["judge/accuracy"] == pytest.approx(2 / 8)
  # Flipped labels: a: 4/T yes, 2/F yes, None no, 5/T yes; b: no, no;
  # c: 1/T no, 5/F no → 3/8.
  assert metrics2["judge/accuracy"] == pytest.approx(3 / 8)
  assert metrics["sample_accuracy"] == pytest.approx(4 / 8)
  assert metrics["judge/unparsed"] == 1 and metrics["pairs"] == 2


def test_factory_settings_and_refusals():
  m = sr.self_rewarding(beta=0.2)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.2} and not m.accumulate
  labeled = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)
  ws = m.warm_start(labeled)
  # 4 targets + 4 × (target, one corruption) judging examples
  assert len(ws) == 12 and ws[4]["completion"] == "5" and ws[5]["completion"] == "1"
  with pytest.raises(ValueError, match="pairwise"):
    sr.self_rewarding(judge_format="pairwise")
  with pytest.raises(ValueError, match="judge_samples"):
    sr.self_rewarding(judge_samples=0)
  with pytest.raises(ValueError, match="judge_samples"):
    sr.self_rewarding(judge_samples=2.5)
  with pytest.raises(ValueError, match="verdict"):      # a mean verdict is no verdict
    sr.self_rewarding(judge_format="verdict", judge_samples=3)
  with pytest.raises(ValueError, match="judge_temperature"):
    sr.self_rewarding(judge_samples=3, judge_temperature=0.0)
  assert sr.self_rewarding(judge_samples=3).name == "self_rewarding"
  with pytest.raises(ValueError, match="rollout.n"):
    sr.self_rewarding(rollout=spec.RolloutSpec(n=1))
  with pytest.raises(ValueError, match="beta"):
    sr.self_rewarding(beta=0.0)
  with pytest.raises(ValueError, match="judge format"):
    sr.self_rewarding(judge_format="stars")
  with pytest.raises(ValueError, match="labeled set"):
    rounds.labeled_only(m)   # a pairwise method has no labeled-only control


def test_average_judgments_hand_cases():
  fmt = judging.SCORE_1_5
  # "5", garbage, "2": the garbage is skipped, mean (5 + 2) / 2 = 3.5
  assert sr.average_judgments(fmt, ["5", "x", "2"], [True] * 3) == (3.5, "ok",
                                                                    [5.0, None, 2.0])
  # "Score: 4" parses (prefix accepted), "9" is out of range → mean 4
  assert sr.average_judgments(fmt, ["Score: 4", "9"], [True, True])[:2] == (4.0, "ok")
  # none parsed: unscored; over_budget if any judgment ran out of budget
  assert sr.average_judgments(fmt, ["x", "y"], [True, False]) == (
      None, "over_budget", [None, None])
  assert sr.average_judgments(fmt, ["x"], [True]) == (None, "unparsed", [None])
  with pytest.raises(ValueError, match="2 judgments, 1 flags"):
    sr.average_judgments(fmt, ["5", "4"], [True])


def _tasks():
  return tasks_lib.make_tasks("addition", 2, difficulty=1, seed=0, reverse=True)


def test_k_judgments_from_the_kv_cache():
  ts = _tasks()
  # call j, sample i: even samples get "5", "4", "3" (j = 0, 1, 2), odd ones garbage
  ctx = judge_fakes.FakeCtx(cont=lambda j, i: str(5 - j) if i % 2 == 0 else "x")
  ro = judge_fakes.FakeSamples([t.target for t in ts] * 2)
  per = ts + ts
  scores, statuses, texts, verdicts = sr.self_judge(
      ctx, per, ro.texts, judging.SCORE_1_5, samples=ro, judge_samples=3,
      judge_temperature=0.7)
  assert [c[0] for c in ctx.cont_calls] == ["|score:"] * 3      # one call per judgment
  assert all(c[1] == "Sampling" for c in ctx.cont_calls) and not ctx.sample_calls
  assert texts == [["5", "4", "3"], ["x", "x", "x"]] * 2
  assert scores == [4.0, None, 4.0, None]                       # (5 + 4 + 3) / 3
  assert statuses == ["ok", "unparsed", "ok", "unparsed"]
  assert verdicts == [True] * 4                                 # the targets
  assert ro.caches is None and ro.cache_params is None          # released
  # k = 1 stays one greedy continuation with plain texts
  ctx = judge_fakes.FakeCtx(cont=lambda j, i: "2")
  ro = judge_fakes.FakeSamples(["1", "2"])
  scores, _, texts, _ = sr.self_judge(ctx, ts, ro.texts, judging.SCORE_1_5, samples=ro)
  assert texts == ["2", "2"] and scores == [2.0, 2.0]
  assert ctx.cont_calls == [("|score:", "Greedy")]


def test_k_judgments_re_encoded():
  ts = _tasks()
  # no cache: one ctx.sample of the judging prompts with n = k; the m-th
  # judgment of every candidate is str(m + 1) → "1", "2", "3", mean 2
  ctx = judge_fakes.FakeCtx()
  scores, statuses, texts, _ = sr.self_judge(ctx, ts, ["7", "8"], judging.SCORE_1_5,
                                             judge_samples=3, judge_temperature=0.5)
  assert ctx.sample_calls == [(2, 3, 0.5, "Sampling")]
  assert texts == [["1", "2", "3"]] * 2 and scores == [2.0, 2.0]
  assert ctx.generated == []          # the judging rollout is not stored
  # a template that is not a continuation (it reads {answer}) re-encodes
  # even when the samples carry a cache
  ref = judging.JudgeFormat(name="ref", kind="pointwise",
                            template="{prompt}{completion}|{answer}|score:")
  ctx = judge_fakes.FakeCtx()
  ro = judge_fakes.FakeSamples(["7", "8"])
  sr.self_judge(ctx, ts, ro.texts, ref, samples=ro, judge_samples=2)
  assert ctx.cont_calls == [] and ctx.sample_calls == [(2, 2, 1.0, "Sampling")]
  assert ro.caches is None


def test_one_round_end_to_end(tmp_path):
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  pool, test = tasks_lib.make_train_test("addition", n_train=24, n_test=4,
                                         difficulty=[1], seed=0, reverse=True)
  m = sr.self_rewarding(rollout=spec.RolloutSpec(n=2, temperature=1.0), eval_judge_n=2)
  config = rounds.RoundsConfig(rounds=1, warm_start_steps=2, steps_per_round=1,
                               batch_size=8, max_len=24, max_new_tokens=4,
                               rollout_batch=16, chunk_size=16, eval_n=2, warmup_steps=0)
  recs = rounds.run_rounds(method=m, model=model, init_params=params, tokenizer=tok,
                           labeled=pool[:8], unlabeled=pool[8:], test=test,
                           workdir=str(tmp_path), config=config, verbose=False)
  assert [r["round"] for r in recs] == [0, 1]
  assert recs[0]["train_size"] == 8 * 3          # targets + judging examples
  sel = recs[1]["select"]
  n = 16 * 2
  assert sum(sel[f"judge/{s}"] for s in ("ok", "unparsed", "tie", "over_budget")) == n
  assert recs[1]["pairs"] == sel["pairs"] == sel["pairs/count"]
  assert 0.0 <= sel["judge/accuracy"] <= 1.0
  for r in recs:
    ev = r["eval"]
    assert sum(ev[f"judge/{s}"] for s in ("ok", "unparsed", "tie", "over_budget")) == 4 * 2
    assert 0.0 <= ev["judge/random_choice"] <= 1.0
  # the judgments are stored with the samples
  from jaxsi.training import round_store
  chunk = round_store.RoundStore(str(tmp_path)).read_chunks(1, 1)
  assert len(chunk) == n and all("judgment" in c and "judge_score" in c for c in chunk)
