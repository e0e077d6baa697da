"""EVOLVE / RLRF: pair construction by hand (judge and rule selection, direct
and refinement pairs), aspect scores and feedback, refinement stats, warm
start, refusals, one tiny round end to end of each."""

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import evolve as ev
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import judging
from jaxsi.training import rounds


def rec(tid, chain, stage, completion, score, correct, feedback=""):
  return dict(task_id=tid, prompt="q" + tid, chain=chain, stage=stage, sample=chain,
              completion=completion, judge_score=score, correct=correct,
              feedback=feedback, answer=completion, difficulty=1,
              judge_status="ok" if score is not None else "unparsed",
              aspect_scores=[score], aspect_statuses=["ok" if score is not None
                                                      else "unparsed"])


RECORDS = [
    # a: chain 0: "11" (4, wrong) → "12" (5, right); chain 1: "2" (2, right) → "2" (unparsed)
    rec("a", 0, 0, "11", 4.0, False, "4"), rec("a", 0, 1, "12", 5.0, True, "5"),
    rec("a", 1, 0, "2", 2.0, True, "2"), rec("a", 1, 1, "2", None, True, "?"),
    # b: chain 0: "7" (3, right) → "8" (3, wrong): equal scores, no judge pair
    rec("b", 0, 0, "7", 3.0, True, "3"), rec("b", 0, 1, "8", 3.0, False, "3"),
]


def test_judge_pairs_hand_case():
  pairs, m = ev.refinement_pairs(RECORDS, selection="judge")
  # a: best "12" (5) vs worst "2" (2) over originals + refinements; b: a tie.
  assert [(p["kind"], p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
      ("direct", "qa", "12", "2"),
      ("refine", "qa2|fix:", "12", "2")]     # refine the rejected answer
  assert m["pairs/count"] == 1.0 and m["pairs/direct"] == 1.0 and m["pairs/refine"] == 1.0
  assert m["pairs/self_preferred_wrong"] == 0.0       # "12" is right
  assert m["pairs/correct_over_wrong"] == 0.0         # ... but so is "2"
  assert m["pairs/chosen_refined"] == 1.0             # "12" is a refinement
  # The feedback template conditions the refinement pair on the rejected
  # answer's own feedback ("2": score 2).
  pairs, _ = ev.refinement_pairs(RECORDS, template=ev.FEEDBACK_TEMPLATE, direct=False)
  assert [p["prompt"] for p in pairs] == ["qa2|2|fix:"]
  # margin 3: a's gap 5 − 2 = 3 is not > 3
  pairs, m = ev.refinement_pairs(RECORDS, margin=3.0)
  assert pairs == [] and m["pairs/count"] == 0.0


def test_rule_pairs_hand_case():
  pairs, m = ev.refinement_pairs(RECORDS, selection="rule", refine=False)
  # per chain, last refinement ≻ original if the texts differ:
  # (a, 0) "12" ≻ "11"; (a, 1) "2" = "2" → none; (b, 0) "8" ≻ "7"
  assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
      ("qa", "12", "11"), ("qb", "8", "7")]
  assert m["pairs/count"] == 2.0 and m["pairs/refine"] == 0.0
  assert m["pairs/self_preferred_wrong"] == pytest.approx(0.5)   # "8" is wrong
  assert m["pairs/correct_over_wrong"] == pytest.approx(0.5)     # "12" over "11"
  pairs, _ = ev.refinement_pairs(RECORDS, selection="rule", direct=False)
  assert [p["prompt"] for p in pairs] == ["qa11|fix:", "qb7|fix:"]


def test_selection_never_reads_the_gold_labels():
  flipped = [dict(r, correct=not r["correct"]) for r in RECORDS]
  for sel in ev.SELECTIONS:
    assert (ev.refinement_pairs(RECORDS, selection=sel)[0]
            == ev.refinement_pairs(flipped, selection=sel)[0])


def test_pair_errors():
  with pytest.raises(ValueError, match="selection"):
    ev.refinement_pairs(RECORDS, selection="best")
  with pytest.raises(ValueError, match="both off"):
    ev.refinement_pairs(RECORDS, direct=False, refine=False)


def test_aspect_score_and_feedback():
  fmts = (judging.SCORE_1_5, judging.VERDICT)
  assert ev.aspect_score(fmts, [4.0, 1.0]) == pytest.approx((4 - 1) / (5 - 1) + 1)  # 1.75
  assert ev.aspect_score(fmts, [5.0, 0.0]) == pytest.approx(1.0)
  assert ev.aspect_score(fmts, [5.0, None]) is None
  assert ev.aspect_score(fmts[:1], [4.0]) == 4.0                 # one aspect: raw
  assert ev.feedback_text(fmts, [4.0, 1.0]) == "4,y"
  assert ev.feedback_text(fmts, [float("nan"), 0.0]) == "?,n"
  with pytest.raises(ValueError, match="2 formats for 1"):
    ev.aspect_score(fmts, [4.0])


def test_refine_stats_hand_case():
  recs = [rec("a", 0, 0, "1", 1, False), rec("a", 0, 1, "2", 1, True),   # wrong → right
          rec("a", 1, 0, "3", 1, True), rec("a", 1, 1, "3", 1, True),    # right → right
          rec("b", 0, 0, "4", 1, True), rec("b", 0, 1, "5", 1, False),   # right → wrong
          rec("b", 1, 0, "6", 1, False), rec("b", 1, 1, "6", 1, False)]  # wrong → wrong
  s = ev.refine_stats(recs)
  assert s == {"refine/acc_t0": 0.5, "refine/acc_final": 0.5,
               "refine/wrong_to_right": 0.25, "refine/right_to_wrong": 0.25,
               "refine/changed": 0.5, "refine/chains": 4}


def test_warm_start_and_settings():
  labeled = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)
  m = ev.evolve(beta=0.2)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.2}
  ws = m.warm_start(labeled)
  # 4 targets + 4 × (target, corruption) judging + 4 × (target, corruption) refinement
  assert len(ws) == 4 + 8 + 8
  refine = ws[12:]
  assert all(e["prompt"].endswith("|fix:") and e["completion"] == t.target
             for e, t in zip(refine, [t for t in labeled for _ in range(2)]))
  assert refine[0]["prompt"] == labeled[0].prompt + labeled[0].target + "|fix:"
  # rule selection does not judge: no judging examples
  assert len(ev.evolve(selection="rule").warm_start(labeled)) == 4 + 8
  # RLRF: two aspects' judging examples; refinements conditioned on the label
  # feedback of the candidate (5,y for the target, 1,n for a corruption)
  ws = ev.rlrf().warm_start(labeled)
  assert len(ws) == 4 + 2 * 8 + 8
  t = labeled[0]
  assert ws[-8]["prompt"] == f"{t.prompt}{t.target}|5,y|fix:"
  assert ws[-7]["prompt"].endswith("|1,n|fix:")


def test_refusals():
  with pytest.raises(ValueError, match="selection"):
    ev.evolve(selection="best")
  with pytest.raises(ValueError, match="refine_steps"):
    ev.evolve(refine_steps=0)
  with pytest.raises(ValueError, match="both False"):
    ev.evolve(direct_pairs=False, refine_pairs=False)
  with pytest.raises(ValueError, match="refine_top"):
    ev.evolve(refine_top=3)                      # n = 2
  with pytest.raises(ValueError, match="refine_top"):
    ev.evolve(selection="rule", refine_top=1)    # nothing ranks the answers
  with pytest.raises(ValueError, match="pairwise"):
    ev.evolve(judge_format="pairwise")
  with pytest.raises(ValueError, match="share a judging template"):
    ev.evolve(judge_format=("score_1_5", "score_1_5"))
  with pytest.raises(ValueError, match="feedback"):
    ev.evolve(feedback=True, template="{prompt}{completion}|fix:")
  with pytest.raises(ValueError, match="lacks"):
    ev.evolve(template="{prompt}|fix:")
  with pytest.raises(ValueError, match="beta"):
    ev.evolve(beta=0.0)
  with pytest.raises(TypeError, match="RolloutSpec"):
    ev.evolve(rollout={"n": 2})


def _round(tmp_path, m):
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  pool, test = tasks_lib.make_train_test("addition", n_train=16, n_test=4,
                                         difficulty=[1], seed=0, reverse=True)
  config = rounds.RoundsConfig(rounds=1, warm_start_steps=2, steps_per_round=1,
                               batch_size=8, max_len=32, max_new_tokens=3,
                               rollout_batch=16, chunk_size=8, eval_n=1, warmup_steps=0)
  return rounds.run_rounds(method=m, model=model, init_params=params, tokenizer=tok,
                           labeled=pool[:8], unlabeled=pool[8:], test=test,
                           workdir=str(tmp_path), config=config, verbose=False)


def test_evolve_one_round_end_to_end(tmp_path):
  recs = _round(tmp_path, ev.evolve(rollout=spec.RolloutSpec(n=2, temperature=1.0)))
  assert [r["round"] for r in recs] == [0, 1]
  assert recs[0]["train_size"] == 8 + 16 + 16    # targets + judging + refinement
  sel = recs[1]["select"]
  # 8 problems × 2 answers, each refined once: 32 judged candidates
  assert sum(sel[f"judge/{s}"] for s in judging.STATUSES) == 32
  assert sel["refine/chains"] == 16
  assert sel["pairs/direct"] == sel["pairs/refine"] == sel["pairs/count"]
  assert recs[1]["pairs"] == sel["pairs"] == 2 * sel["pairs/count"]
  for r in recs:   # greedy answer → greedy refinement of the 4 test problems
    assert r["eval"]["eval_refine/chains"] == 4
  from jaxsi.training import round_store
  chunk = round_store.RoundStore(str(tmp_path)).read_chunks(1, 1)
  assert sorted({c["stage"] for c in chunk}) == [0, 1] and len(chunk) == 32
  assert all(c["parent"] is not None for c in chunk if c["stage"] == 1)


def test_rlrf_one_round_end_to_end(tmp_path):
  recs = _round(tmp_path, ev.rlrf(rollout=spec.RolloutSpec(n=2, temperature=1.0),
                                  refine_top=1))
  sel = recs[1]["select"]
  # 8 problems × 2 answers + the best one of each refined = 24 candidates,
  # each judged on both aspects
  assert sum(sel[f"judge/{s}"] for s in judging.STATUSES) == 24
  assert sum(sel[f"judge/verdict/{s}"] for s in judging.STATUSES) == 24
  assert sel["refine/chains"] == 8 and sel["pairs/refine"] == 0.0
  from jaxsi.training import round_store
  chunk = round_store.RoundStore(str(tmp_path)).read_chunks(1, 1)
  assert all("," in c["feedback"] for c in chunk)    # two aspects' feedback
