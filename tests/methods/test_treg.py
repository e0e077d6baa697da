"""T-REG methods (arXiv:2412.02685): contrastive warm start, pair contexts scored
by the reference (aligned to the rows), alpha = 0 = DPO on the same pairs, the
select's pairs, refusals, and the online Method's pieces."""

import types

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import treg as treg_m
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import fit as fit_lib
from jaxsi.training import fit_data
from jaxsi.training import round_fit
from jaxsi.training import rounds

TOK = char_tokenizer.CharTokenizer()
CFG = mcfg.get_config("tiny", vocab_size=TOK.vocab_size, d_model=32, n_layers=1,
                      n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
MODEL, PARAMS = mmodel.init(CFG, jax.random.key(0))
TASKS = tasks_lib.make_tasks("addition", 4, difficulty=1, seed=0, reverse=True)


def test_contrastive_examples_and_prompts():
  ex = treg_m.contrastive_examples(TASKS[:2])
  t0, t1 = TASKS[0], TASKS[1]
  # Per task: ('good|' + prompt → target), ('bad|' + prompt → one digit changed).
  assert [e["prompt"] for e in ex] == ["good|" + t0.prompt, "bad|" + t0.prompt,
                                       "good|" + t1.prompt, "bad|" + t1.prompt]
  assert ex[0]["completion"] == t0.target and ex[2]["completion"] == t1.target
  for bad, t in ((ex[1], t0), (ex[3], t1)):
    assert len(bad["completion"]) == len(t.target) and bad["completion"] != t.target
    assert t.verify(bad["completion"]) < 1.0
  m = treg_m.treg()
  assert len(m.warm_start(TASKS)) == 4 + 8           # targets + 2 per task


def test_context_logprobs_equal_the_reference_under_the_same_prompt():
  # Special case: a "context" equal to the plain prompt re-scores the same rows,
  # so its aligned log-probs are exactly the reference log-probs.
  prompts = [t.prompt for t in TASKS[:3]]
  chosen, rejected = ["12", "3", "456"], ["7", "89", "0"]
  data = fit_data.preference_data(TOK, prompts, chosen, rejected, max_len=24,
                                  reference=(MODEL, PARAMS), reference_batch=4,
                                  contexts={"same": prompts})
  a = data.arrays
  for side in ("chosen", "rejected"):
    ref = a[f"{side}/ref_logprobs"] * a[f"{side}/loss_mask"]
    np.testing.assert_allclose(a[f"{side}/context_logprobs/same"], ref, atol=1e-5)
  batch = data.batch(np.arange(3))
  assert batch.extras["same_logprobs"].shape == (6, 24)


def test_context_logprobs_are_aligned_by_completion_token():
  # A longer context prompt shifts the completion right; the k-th completion
  # token's log-prob there is written to the k-th loss position of the plain row.
  prompts, ctx_prompts = ["1+2="], ["good|1+2="]
  plain = fit_data.batching.sft_arrays(TOK, prompts, ["34"], max_len=16)
  got = fit_data.context_logprobs(TOK, MODEL, PARAMS, plain, ctx_prompts, ["34"],
                                  max_len=16, batch=2)
  other = fit_data.batching.sft_arrays(TOK, ctx_prompts, ["34"], max_len=16)
  lp = fit_data.reference_logprobs(MODEL, PARAMS, other, batch=2)
  src, dst = np.flatnonzero(other["loss_mask"][0]), np.flatnonzero(plain["loss_mask"][0])
  assert len(src) == len(dst) == 3                   # '3', '4', EOS
  assert src[0] - dst[0] == len("good|")
  np.testing.assert_allclose(got[0, dst], lp[0, src], atol=1e-6)
  assert np.all(got[0, ~plain["loss_mask"][0]] == 0.0)
  with pytest.raises(ValueError, match="reference"):
    fit_data.preference_data(TOK, prompts, ["3"], ["4"], max_len=16,
                             contexts={"c": ctx_prompts})
  with pytest.raises(ValueError, match="contexts"):
    fit_data.preference_data(TOK, prompts, ["3"], ["4"], max_len=16,
                             reference=(MODEL, PARAMS), contexts={"c": []})


def test_pair_contexts_must_agree():
  pairs = [dict(prompt="a", chosen="1", rejected="2", contexts={"better": "x", "worse": "y"}),
           dict(prompt="b", chosen="1", rejected="2", contexts={"better": "z", "worse": "w"})]
  assert round_fit.pair_contexts(pairs) == {"better": ["x", "z"], "worse": ["y", "w"]}
  assert round_fit.pair_contexts([dict(prompt="a")]) is None
  with pytest.raises(ValueError, match="pair 1"):
    round_fit.pair_contexts([pairs[0], dict(prompt="b", chosen="1", rejected="2")])


def test_alpha_zero_fit_equals_dpo_fit():
  # The T-REG M-step with α = 0 is the DPO M-step on the same pairs: same params.
  pairs = [dict(prompt=t.prompt, task_id=t.id, chosen=t.target, rejected="9",
                contexts={"better": treg_m.better_context(t), "worse": treg_m.worse_context(t)})
           for t in TASKS[:2]]
  config = rounds.RoundsConfig(batch_size=4, max_len=24, warmup_steps=0)
  kw = dict(model=MODEL, params=PARAMS, reference=PARAMS, tokenizer=TOK, pairs=pairs,
            steps=2, config=config, seed=0)
  p_treg, m_treg = round_fit.fit_pairs(objective="treg", beta=0.1, alpha=0.0,
                                       normalize="sigmoid", sequence_weighting=True, **kw)
  p_dpo, _ = round_fit.fit_pairs(objective="dpo", beta=0.1, **kw)
  for a, b in zip(jax.tree.leaves(p_treg), jax.tree.leaves(p_dpo)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert "treg/reg" in m_treg and np.isfinite(m_treg["treg/reg"])
  # α > 0 changes the update (the regulariser has a gradient).
  p_reg, _ = round_fit.fit_pairs(objective="treg", beta=0.1, alpha=1.0, **kw)
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(p_reg), jax.tree.leaves(p_dpo)))
  assert diff > 1e-6
  assert fit_lib.preference("treg", beta=0.1).key[1] == "treg"


def test_select_builds_verifier_pairs_with_contexts():
  t = TASKS[0]
  recs = [dict(task_id=t.id, prompt=t.prompt, completion=c, correct=ok, sample=i,
               answer=c, difficulty=1)
          for i, (c, ok) in enumerate([("1", False), (t.target, True), ("2", False)])]
  ctx = types.SimpleNamespace(unlabeled=TASKS)
  _, pairs, m = treg_m.treg().select(recs, {}, ctx)
  # best_vs_worst: the correct sample ≻ the first lowest-scored (sample 0).
  assert len(pairs) == 1 and m["pairs"] == 1
  assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (t.target, "1")
  assert pairs[0]["contexts"] == {"better": "good|" + t.prompt, "worse": "bad|" + t.prompt}
  assert m["pairs/self_preferred_wrong"] == 0.0


def test_factory_settings_and_refusals():
  m = treg_m.treg(beta=0.2, alpha=0.5)
  assert (m.objective, m.reference, m.train_from) == ("treg", "previous", "current")
  assert m.objective_settings == dict(beta=0.2, alpha=0.5, normalize="sigmoid",
                                      sequence_weighting=True)
  with pytest.raises(ValueError, match="rollout.n"):
    treg_m.treg(rollout=spec.RolloutSpec(n=1))
  with pytest.raises(ValueError, match="alpha"):
    treg_m.treg(alpha=-0.1)
  with pytest.raises(ValueError, match="beta"):
    treg_m.treg(beta=0.0)
  with pytest.raises(ValueError, match="normalize"):
    treg_m.treg(normalize="softmax")
  with pytest.raises(ValueError, match="better"):
    treg_m.treg(better="good|")
  with pytest.raises(ValueError, match="minibatches"):
    treg_m.online_treg(optim=spec.OptimSpec(minibatches=2))
  with pytest.raises(ValueError, match="alpha"):
    treg_m.online_treg(alpha=-1.0)


def test_online_stage_lays_out_both_instructions():
  m = treg_m.online_treg()
  assert set(m.rollout.context_variants()) == {"better", "worse"}
  assert m.rollout.context_variants()["worse"](TASKS[0]) == "bad|" + TASKS[0].prompt
  # The Loop's warm start teaches the better instruction for every 2nd task.
  extras = m.rollout.supervised_extras(TASKS)
  assert extras == [("good|" + t.prompt, t.target) for t in TASKS[::2]]
