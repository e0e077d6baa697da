"""Iterative deepening: cache continuation == re-encoding, tokens, answer changes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi.sampling import deepening
from jaxsi.sampling import multiturn
from jaxsi.sampling import sampler
from jaxsi.sampling import strategies as st
from jaxsi.sampling import test_time as tt
from tests.methods import rl_fixtures as fx

G = 3
TRIGGER = "+="      # two tokens of the fixture's 0-9 + = alphabet


def _run(rounds, strategy, *, num=3, n=2, seed=0, batch_size=8):
  tok, model, params, tasks, _ = fx.setup()
  return deepening.deepen(model, params, tok, tasks[:num], rounds=rounds,
                          max_new_tokens=G, strategy=strategy,
                          rng=jax.random.key(seed), n=n, trigger=TRIGGER,
                          batch_size=batch_size)


def test_greedy_continuation_equals_reencoding_the_conversation():
  tok, model, params, tasks, _ = fx.setup()
  # One round here (the sampled test below checks a second continuation).
  d = _run(1, st.Greedy())
  trig = tok.encode(TRIGGER)
  checked = 0
  for p in range(d.num_problems):
    for s in range(d.n):
      conv = [tok.bos_id] + tok.encode(tasks[p].prompt)
      for j in range(2):
        if j:
          # Re-encode prompt + earlier turns + triggers from scratch.
          scratch = sampler.sample(model, params, [conv], rng=jax.random.key(9),
                                   strategy=st.Greedy(), max_new_tokens=G,
                                   stop_ids=(tok.eos_id,), pad_id=tok.pad_id,
                                   prompt_buckets=(32,))
          lm = np.asarray(scratch.loss_mask[0])
          assert d.token_ids[p][s][j] == np.asarray(scratch.tokens[0])[lm].tolist()
          np.testing.assert_allclose(
              d.logprobs[p, s, j],
              np.asarray(scratch.behaviour_logprobs[0])[lm].sum(), atol=1e-4)
          checked += 1
        conv = conv + d.token_ids[p][s][j] + trig
  assert checked == 3 * 2


def test_sampled_turns_score_as_one_uncached_forward_pass():
  tok, model, params, tasks, _ = fx.setup()
  d = _run(2, st.Sampling(temperature=1.0), seed=3)
  trig = tok.encode(TRIGGER)
  for p in range(d.num_problems):
    for s in range(d.n):
      conv = [tok.bos_id] + tok.encode(tasks[p].prompt)
      spans = []
      for j in range(3):
        spans.append((len(conv), len(conv) + len(d.token_ids[p][s][j])))
        conv = conv + d.token_ids[p][s][j] + (trig if j < 2 else [])
      # (G new tokens: the greedy test's compiled sampler; they are ignored.)
      traj = sampler.sample(model, params, [conv], rng=jax.random.key(0),
                            strategy=st.Greedy(), max_new_tokens=G,
                            stop_ids=(tok.eos_id,), pad_id=tok.pad_id,
                            prompt_buckets=(32,))
      ref = fx.policy_logprobs(model, params, traj)[0]
      offset = traj.tokens.shape[1] - G - len(conv)   # left padding
      for j, (a, b) in enumerate(spans):
        np.testing.assert_allclose(d.logprobs[p, s, j],
                                   ref[offset + a:offset + b].sum(), atol=1e-4)


def test_token_counts_of_a_real_run():
  tok, *_ = fx.setup()
  d = _run(2, st.Sampling(temperature=1.0), seed=1)
  assert d.gen_tokens.shape == (3, 2, 3) and d.trigger_tokens.shape == (3, 2, 2)
  np.testing.assert_array_equal(d.trigger_tokens, 2)            # "+=" each round
  for p in range(3):
    for s in range(2):
      for j in range(3):
        ids = d.token_ids[p][s][j]
        assert d.gen_tokens[p, s, j] == len(ids) and 1 <= len(ids) <= G
        # A turn shorter than the budget ended on the stop token.
        assert (len(ids) < G) <= (ids[-1] == tok.eos_id)
        assert d.texts[p][s][j] == tok.decode(ids)
  s = d.summary()
  assert s["gen_tokens_per_problem"] == pytest.approx(d.gen_tokens.sum() / 3)
  assert s["trigger_tokens_per_problem"] == pytest.approx(2 * 2 * 2)
  assert s["calls"] == 3                           # one chunk: 1 + d calls


def _hand():
  # 2 problems × 2 samples × 3 turns (d = 2).
  answers = [[["5", "5", None], ["4", "5", "6"]],
             [[None, None, None], ["7", None, "8"]]]
  correct = np.asarray([[[1, 1, 0], [0, 1, 0]],
                        [[0, 0, 0], [0, 0, 1]]], np.float32)
  gen = np.asarray([[[2, 3, 1], [1, 1, 1]], [[3, 3, 3], [2, 2, 2]]])
  return deepening.Deepened(
      tasks=[None, None], rounds=2, trigger="+=",
      texts=[[["a", "b", "c"], ["d", "e", "f"]], [["g", "h", "i"], ["j", "k", "l"]]],
      answers=answers, correct=correct, gen_tokens=gen,
      trigger_tokens=np.full((2, 2, 2), 2), token_ids=[[[[]] * 3] * 2] * 2,
      logprobs=np.zeros((2, 2, 3), np.float32))


def test_final_answer_rule_and_answer_changes_by_hand():
  d = _hand()
  # (0,0): last turn unparseable → turn 2's "5"; (0,1): turn 3 "6";
  # (1,0): none parseable → last turn; (1,1): turn 3 "8".
  np.testing.assert_array_equal(d.final_turn(), [[1, 2], [2, 2]])
  assert d.final_answers() == [["5", "6"], [None, "8"]]
  np.testing.assert_array_equal(d.final_correct(), [[1, 0], [0, 1]])
  c = d.changes()
  # first answers 5,4,None,7 → final 5,6,None,8: two changed of four;
  # first correct: (0,0) only; final: (0,0), (1,1).
  # Fallback: (0,0) (answer of turn 2) only; (1,0) has no parseable turn.
  assert c == pytest.approx(dict(changed=0.5, right_to_wrong=0.0,
                                 wrong_to_right=0.25, fallback=0.25,
                                 acc_first=0.25, acc_final=0.5))
  one = d.truncate(1)           # stop after one deepening round
  np.testing.assert_array_equal(one.final_turn(), [[1, 1], [1, 0]])
  assert one.final_answers() == [["5", "5"], [None, "7"]]
  # Fallback: (1,1)'s turn 2 is unparseable, turn 1's "7" counts.
  assert one.changes() == pytest.approx(dict(
      changed=0.25, right_to_wrong=0.0, wrong_to_right=0.25, fallback=0.25,
      acc_first=0.25, acc_final=0.5))
  zero = d.truncate(0)
  assert zero.changes()["changed"] == zero.changes()["fallback"] == 0.0
  np.testing.assert_array_equal(zero.final_correct(), d.correct[:, :, 0])


def test_sweep_tokens_and_majority_by_hand():
  d = _hand()
  rows = deepening.sweep(d, depths=(0, 2), ks=(1, 2))
  by = {(r["depth"], r["k"], r["selector"]): r for r in rows}
  # depth 0, k=1: sample 0's first turn: (2 + 3) / 2; no trigger tokens.
  r = by[(0, 1, "deepen d=0 first")]
  assert r["tokens_per_problem"] == pytest.approx(2.5)
  assert r["trigger_tokens_per_problem"] == 0.0
  assert r["accuracy"] == pytest.approx(0.5)
  # depth 2, k=2: all turns of both samples: (6 + 3 + 9 + 6) / 2 = 12,
  # triggers 2 rounds × 2 tokens × 2 samples = 8.
  r = by[(2, 2, "deepen d=2 majority")]
  assert r["tokens_per_problem"] == pytest.approx(12.0)
  assert r["trigger_tokens_per_problem"] == pytest.approx(8.0)
  # majority of finals: problem 0 "5","6" tie → "5" (right); problem 1
  # None,"8" → "8" (right).
  assert r["accuracy"] == 1.0 and r["wrong_to_right"] == pytest.approx(0.25)
  c = d.candidates()
  np.testing.assert_array_equal(c.lengths, [[6, 3], [9, 6]])
  np.testing.assert_array_equal(tt.majority(c, 2), [0, 1])
  assert "| 2 | 2 | 12.0 | 8.0 | deepen d=2 majority | 1.000 |" in deepening.markdown(rows)


def test_zero_rounds_is_plain_sampling_and_depths_nest(monkeypatch):
  tok, model, params, tasks, _ = fx.setup()
  calls = []
  for name in ("generate", "continue_generate"):
    real = getattr(multiturn.sampler_lib, name)

    def counting(*a, _real=real, _name=name, **kw):
      calls.append((_name, int(np.shape(a[2] if _name == "generate" else a[4])[0])))
      return _real(*a, **kw)

    monkeypatch.setattr(multiturn.sampler_lib, name, counting)
  samp = st.Sampling(temperature=1.0)
  zero = _run(0, samp, num=5, seed=2)
  assert [c[0] for c in calls] == ["generate"] * 2    # 5 problems, 4 per chunk
  calls.clear()
  two = _run(2, samp, num=5, seed=2)
  # One batched call per turn per chunk, 4 prompts each (padded).
  assert calls == [("generate", 4), ("continue_generate", 8),
                   ("continue_generate", 8)] * 2
  one = _run(1, samp, num=5, seed=2)
  for a, b in ((zero, two.truncate(0)), (one, two.truncate(1))):
    assert a.token_ids == b.token_ids and a.texts == b.texts
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    np.testing.assert_array_equal(a.gen_tokens, b.gen_tokens)
  # Greedy d = 0 equals the plain fixed-N driver's completions.
  g0 = _run(0, st.Greedy(), num=5)
  plain = tt.generate(model, params, tok, tasks[:5], n=2, max_new_tokens=G,
                      strategy=st.Greedy(), rng=jax.random.key(0), scores=(),
                      batch_size=8)
  assert [[x[0] for x in p] for p in g0.texts] == plain.texts
  np.testing.assert_array_equal(g0.gen_tokens[:, :, 0], plain.lengths)
  np.testing.assert_array_equal(g0.final_correct(), plain.correct)


@pytest.mark.parametrize("kw, match", [
    (dict(rounds=-1), "rounds must be"),
    (dict(rounds=1.5), "rounds must be"),
    (dict(n=0), "n must be"),
    (dict(max_new_tokens=0), "max_new_tokens must be"),
    (dict(n=4, batch_size=2), "batch_size = 2 must be >= n"),
    (dict(trigger=""), "trigger must be a non-empty"),
    (dict(trigger=" wait "), "trigger ' wait ' cannot be encoded"),
])
def test_bad_arguments_name_the_argument(kw, match):
  tok, model, params, tasks, _ = fx.setup()
  args = dict(rounds=1, max_new_tokens=G, n=1, trigger=TRIGGER, batch_size=4)
  args.update(kw)
  with pytest.raises(ValueError, match=match):
    deepening.deepen(model, params, tok, tasks[:2], strategy=st.Greedy(),
                     rng=jax.random.key(0), **args)
  with pytest.raises(ValueError, match="rounds must be an integer in"):
    _hand().truncate(3)
