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
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import rounds


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
    sr.self_rewarding(judge_samples=3)
  with pytest.raises(ValueError, match="rollout.n"):
    sr.self_rewarding(rollout=spec.RolloutSpec(n=1))
  with pytest.raises(ValueError, match="beta"):
    sr.self_rewarding(beta=0.0)
  with pytest.raises(ValueError, match="judge format"):
    sr.self_rewarding(judge_format="stars")
  with pytest.raises(ValueError, match="labeled set"):
    rounds.labeled_only(m)   # a pairwise method has no labeled-only control


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
