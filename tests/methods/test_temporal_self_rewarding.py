"""Temporal Self-Rewarding (arXiv:2508.06026): anchored-rejection pairs and
future-guided chosen on hand cases, the metrics, refusals, and one tiny round
end to end (past model from the pool, a future model trained, pooled, sampled)."""

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import self_rewarding as sr_mod
from jaxsi.methods import temporal_self_rewarding as tsr
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool
from jaxsi.training import rounds


def rec(tid, source, completion, score, correct):
  return dict(task_id=tid, prompt="q" + tid, completion=completion, judge_score=score,
              correct=correct, source=source)


RECORDS = [
    # a: current 3, 5 (wrong), 5 → best is the first 5 ("bb"); past 2, 1, unparsed →
    # worst "p1" (1). Gap 4.
    rec("a", "current", "a3", 3.0, True), rec("a", "current", "bb", 5.0, False),
    rec("a", "current", "cc", 5.0, True), rec("a", "past", "p2", 2.0, False),
    rec("a", "past", "p1", 1.0, True), rec("a", "past", "pn", None, False),
    # b: current 2, past 2 → no gap, no pair.
    rec("b", "current", "x", 2.0, True), rec("b", "past", "y", 2.0, False),
    # c: current 4; past only unparsed → no pair.
    rec("c", "current", "z", 4.0, True), rec("c", "past", "w", None, False),
    # d: current 3 vs past 1 → gap 2 (dropped with margin 2.5).
    rec("d", "current", "d3", 3.0, True), rec("d", "past", "d1", 1.0, False),
]


def test_anchored_pairs_hand_case():
  pairs = tsr.anchored_pairs(RECORDS)
  assert [(p["task_id"], p["chosen"], p["rejected"]) for p in pairs] == [
      ("a", "bb", "p1"), ("d", "d3", "d1")]
  assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == (5.0, 1.0)
  assert pairs[0]["chosen_correct"] is False and pairs[0]["rejected_correct"] is True
  assert [p["task_id"] for p in tsr.anchored_pairs(RECORDS, margin=2.5)] == ["a"]


def test_future_guided_replaces_only_when_at_least_as_good():
  pairs = tsr.anchored_pairs(RECORDS)
  future = [rec("a", "future", "f4", 4.0, True),      # 4 < 5: a keeps "bb"
            rec("d", "future", "f2", 2.0, False),
            rec("d", "future", "f3", 3.0, True),      # 3 ≥ 3: d takes "f3"
            rec("d", "future", "fn", None, True)]     # unparsed: never
  out = tsr.future_guided(pairs, future)
  assert [(p["chosen"], p["chosen_source"]) for p in out] == [("bb", "current"),
                                                              ("f3", "future")]
  assert out[1]["rejected"] == "d1" and out[1]["chosen_correct"] is True
  m = tsr.pair_metrics(out)
  # gaps: a 5 − 1 = 4, d 3 − 1 = 2 → 3; lengths (2 + 2)/2 = 2, (2 + 2)/2 = 2;
  # chosen wrong: a → 1/2; correct ≻ wrong: d (f3 correct, d1 wrong) → 1/2.
  assert m == {"pairs/count": 2.0, "pairs/margin_mean": 3.0, "pairs/chosen_len": 2.0,
               "pairs/rejected_len": 2.0, "pairs/self_preferred_wrong": 0.5,
               "pairs/correct_over_wrong": 0.5, "pairs/future_chosen": 0.5}
  assert tsr.pair_metrics([]) == {"pairs/count": 0.0}


def test_factory_reuses_self_rewarding_and_refuses_bad_options():
  m = tsr.temporal_self_rewarding(beta=0.2)
  assert (m.objective, m.reference, m.train_from) == ("dpo", "previous", "current")
  assert m.objective_settings == {"beta": 0.2}
  labeled = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)
  assert len(m.warm_start(labeled)) == 12          # as Self-Rewarding: 4 + 4 × 2
  with pytest.raises(ValueError, match="past_n"):
    tsr.temporal_self_rewarding(past_n=0)
  with pytest.raises(ValueError, match="future_n"):
    tsr.temporal_self_rewarding(future_n=-1)
  with pytest.raises(ValueError, match="future_steps"):
    tsr.temporal_self_rewarding(future_steps=0)
  with pytest.raises(ValueError, match="beta"):
    tsr.temporal_self_rewarding(beta=0.0)
  with pytest.raises(ValueError, match="rollout.n"):
    tsr.temporal_self_rewarding(rollout=spec.RolloutSpec(n=1))


def test_one_round_end_to_end(tmp_path, monkeypatch):
  # A deterministic judge (score = 1 + len(text) mod 5) so that pairs form with a
  # random tiny model; everything else is the real schedule.
  calls = []

  def judge(ctx, tasks, texts, fmt, *, params=None, samples=None):
    if samples is not None:
      samples.caches = samples.cache_params = None
    calls.append(len(texts))
    return ([1.0 + len(t) % 5 for t in texts], ["ok"] * len(texts), ["j"] * len(texts),
            [True] * len(texts))

  monkeypatch.setattr(sr_mod, "self_judge", judge)
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  pool, test = tasks_lib.make_train_test("addition", n_train=16, n_test=2,
                                         difficulty=[1], seed=0, reverse=True)
  m = tsr.temporal_self_rewarding(rollout=spec.RolloutSpec(n=2, temperature=1.0),
                                  past_n=2, future_n=2, future_steps=1, eval_judge_n=0)
  config = rounds.RoundsConfig(rounds=1, warm_start_steps=1, steps_per_round=1,
                               batch_size=4, max_len=24, max_new_tokens=4,
                               rollout_batch=16, chunk_size=8, eval_n=2, warmup_steps=0)
  recs = rounds.run_rounds(method=m, model=model, init_params=params, tokenizer=tok,
                           labeled=pool[:8], unlabeled=pool[8:], test=test,
                           workdir=str(tmp_path), config=config, verbose=False)
  sel = recs[1]["select"]
  # 8 problems × (2 current + 2 past) judged in the chunk, then 2 future per pair.
  assert calls[:2] == [16, 16]
  assert sel["pairs/anchored"] >= 1 and calls[2] == 2 * sel["pairs/anchored"]
  assert sel["pairs/count"] == sel["pairs/anchored"] == recs[1]["pairs"]
  assert 0.0 <= sel["pairs/future_chosen"] <= 1.0 and "future/sample_accuracy" in sel
  assert "past/sample_accuracy" in sel and "current/judge/accuracy" in sel
  # The temporary future model is pooled under <workdir>/temporal_future, round 1.
  fp = checkpoint_pool.CheckpointPool(str(tmp_path / tsr.FUTURE_POOL))
  assert fp.rounds() == [1]
  fp.close()
  from jaxsi.training import round_store
  chunk = round_store.RoundStore(str(tmp_path)).read_chunks(1, 1)
  assert sorted({c["source"] for c in chunk}) == ["current", "past"] and len(chunk) == 32
