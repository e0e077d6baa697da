"""Self-Refine / IoRT / ProgCo episodes: decisions, checks and tokens by hand."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.data import synthetic
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import buckets
from jaxsi.sampling import multiturn
from jaxsi.sampling import refine
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt


I = 8  # every model test shares one inject length and strategy: one
SAMPLING = strategies.Sampling(temperature=1.0)  # compilation per turn


@pytest.fixture(scope="module")
def setup():
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=")
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32,
                        n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                        d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = synthetic.addition(6, difficulty=2, seed=3, reverse=True)
  return tok, model, params, tasks


def _add(a, b):
  """A reversed-answer addition task a+b."""
  return dataclasses.replace(synthetic.addition(1, difficulty=2, seed=0, reverse=True)[0],
                             prompt=f"{a}+{b}=", answer=a + b,
                             target=str(a + b)[::-1],
                             meta={"operands": [a, b], "reverse": True,
                                   "format": "plain", "pad": False,
                                   "marker": False, "reverse_operands": False})


# ------------------------------------------------------------- decisions
def test_iort_instructions_by_hand():
  assert refine.iort_instruction(["5", "5"]) == "stop"
  assert refine.iort_instruction(["5", "6"]) == "refresh"
  assert refine.iort_instruction(["5", "6", "5"]) == "select"     # drifted back
  assert refine.iort_instruction(["5", "6", "6"]) == "stop"
  assert refine.iort_instruction(["5", "6", "7"]) == "refresh"
  assert refine.iort_instruction([None, None]) == "refresh"       # no answer
  assert refine.iort_instruction(["5", None]) == "refresh"
  with pytest.raises(ValueError, match=">= 2 answers"):
    refine.iort_instruction(["5"])
  # final answer: latest on stop, else the selection (ties → earliest).
  assert refine.iort_final(["5"]) == 0
  assert refine.iort_final(["4", "6", "6"]) == 2
  assert refine.iort_final(["5", "6", "5"]) == 0
  assert refine.iort_final(["5", "6", "7"]) == 0                  # limit: select
  assert refine.iort_final([None, "6", "7"]) == 1
  assert refine.iort_final(["3", "6", "7", "6", "8"]) == 1        # '6' twice
  assert refine.vote([None, None]) == -1


def test_self_refine_stop_indicator():
  assert refine.self_refine_done("5", "5")
  assert not refine.self_refine_done("5", "6")
  assert not refine.self_refine_done(None, None)


def test_progco_check_runs_the_program_in_the_evaluator():
  t = _add(27, 64)                                     # 91
  assert refine.progco_program(t, "91") == "91-64=27"  # reverse check
  assert refine.progco_check(t, "91")
  assert not refine.progco_check(t, "90")
  assert not refine.progco_check(t, None)
  # the model executed the program b+a: compared in the evaluator.
  assert refine.progco_program(t, "91", "19") == "91=19"
  assert refine.progco_check(t, "91", "91", executor="model")
  assert not refine.progco_check(t, "91", "19", executor="model")
  assert not refine.progco_check(t, "91", None, executor="model")
  with pytest.raises(ValueError, match="executor"):
    refine.progco_check(t, "91", executor="python")
  bare = dataclasses.replace(t, meta={"reverse": True})
  with pytest.raises(ValueError, match="operands"):
    refine.progco_check(bare, "91")


def test_roles():
  assert refine.roles("self_refine", 3) == (
      "answer", "feedback", "answer", "feedback", "answer")
  assert refine.roles("iort", 3) == ("answer",) * 3
  assert refine.roles("progco", 2) == ("answer", "answer")
  assert refine.roles("progco", 2, "model") == ("answer", "execute", "answer")
  assert refine.roles("self_refine", 1) == ("answer",)


# ------------------------------------------------------- tokens by hand
def _played(method, rl, texts, rewards, model_tokens, injected, num_turns,
            tasks):
  return refine.Played(tasks=tasks, roles=rl, texts=texts,
                       rewards=np.asarray(rewards, np.float32),
                       model_tokens=np.asarray(model_tokens),
                       injected_tokens=np.asarray(injected),
                       num_turns=np.asarray(num_turns), method=method)


def test_self_refine_rows_by_hand():
  tasks = [_add(27, 64), _add(12, 71)]      # 91 ('19'), 83 ('38')
  nan = np.nan
  # row 0: wrong '09', feedback '18' (disagrees), refined '19' (right).
  # row 1: right '38', feedback '38' agrees → stops after turn 2.
  p = _played("self_refine", ("answer", "feedback", "answer"),
              [["09", "18", "19"], ["38", "38", ""]],
              [[0, nan, 1], [1, nan, nan]], [[3, 3, 3], [3, 3, 0]],
              [[7, 6], [7, 0]], [3, 2], tasks)
  r1, r2 = refine.summarize(p)
  assert (r1["turns"], r1["model_turns"]) == (1, 1)
  assert r1["accuracy"] == 0.5 and r1["tokens_per_problem"] == 3.0
  assert r1["injected_tokens_per_problem"] == 0.0 and r1["stopped"] == 0.0
  assert (r2["turns"], r2["model_turns"]) == (2, 3)
  assert r2["accuracy"] == 1.0
  assert r2["tokens_per_problem"] == (9 + 6) / 2
  assert r2["injected_tokens_per_problem"] == (13 + 7) / 2
  assert r2["total_tokens_per_problem"] == (22 + 13) / 2
  assert r2["mean_model_turns"] == 2.5 and r2["stopped"] == 0.5
  assert r2["turn_accuracy"] == [0.5, 1.0]
  assert r2["wrong_to_right"] == 0.5 and r2["wrong_to_right_count"] == 1
  assert r2["right_to_wrong"] == 0.0


def test_iort_rows_by_hand_select_keeps_the_first_answer():
  tasks = [_add(27, 64), _add(12, 71)]
  # row 0: right '19', then wrong '29', '39' (all distinct: refresh, then
  #   the limit's selection → tie → the earliest, right).
  # row 1: wrong '48', '48' → stop after turn 2 (latest, wrong).
  p = _played("iort", ("answer",) * 3, [["19", "29", "39"], ["48", "48", ""]],
              [[1, 0, 0], [0, 0, np.nan]], [[3, 3, 3], [3, 3, 0]],
              [[6, 7], [6, 0]], [3, 2], tasks)
  r1, r2, r3 = refine.summarize(p)
  assert r1["accuracy"] == 0.5
  assert r2["accuracy"] == 0.5 and r3["accuracy"] == 0.5
  assert r3["turn_accuracy"] == [0.5, 0.0, 0.0]        # the last turn is wrong
  assert r3["right_to_wrong"] == 0.0                   # selection saved it
  assert (r2["stop_rate"], r2["select_rate"]) == (0.5, 0.5)
  assert r3["tokens_per_problem"] == 7.5 and r3["injected_tokens_per_problem"] == 9.5
  assert r3["stopped"] == 0.5 and r2["stopped"] == 0.0
  # ProgCo with the tool: the check ran after turns 1, 2 of row 0 (failed)
  # and after turn 1 of row 1 (passed → stopped); a budget-t run never
  # checks its last turn.
  q = _played("progco", ("answer",) * 3, [["09", "29", "19"], ["38", "", ""]],
              [[0, 0, 1], [1, np.nan, np.nan]], [[3, 3, 3], [3, 0, 0]],
              [[6, 6], [0, 0]], [3, 1], tasks)
  s = refine.summarize(q)
  assert [x["checks_per_problem"] for x in s] == [0.0, 1.0, 1.5]
  assert [x["accuracy"] for x in s] == [0.5, 0.5, 1.0]
  assert s[2]["method"] == "progco(tool)"


# ---------------------------------------------------------- with a model
def test_one_turn_equals_plain_generation(setup):
  tok, model, params, tasks = setup
  cands = tt.generate(model, params, tok, tasks, n=1, max_new_tokens=4,
                      strategy=strategies.Greedy(), rng=jax.random.key(1),
                      scores=(), batch_size=len(tasks))
  for method in ("self_refine", "iort"):
    p = refine.play(model, params, tok, tasks, method=method, max_turns=1,
                    rng=jax.random.key(2), inject_length=I)
    assert [x[0] for x in p.texts] == [x[0] for x in cands.texts]
    (row,) = refine.summarize(p)
    assert row["accuracy"] == tt.accuracy(cands, tt.first(cands, 1))
    assert row["tokens_per_problem"] == pytest.approx(cands.lengths.mean())
    assert row["injected_tokens_per_problem"] == 0.0


@pytest.mark.parametrize("method,executor", [("self_refine", "tool"),
                                             ("iort", "tool"),
                                             ("progco", "tool"),
                                             ("progco", "model")])
def test_truncation_equals_a_shorter_run_and_decisions_ignore_the_verifier(
    setup, method, executor):
  tok, model, params, tasks = setup
  kw = dict(method=method, executor=executor, rng=jax.random.key(4),
            strategy=SAMPLING, inject_length=I)
  # 3 model turns each (one compilation per turn for all four cases).
  k = 2 if len(refine.roles(method, 2, executor)) == 3 else 3
  long = refine.play(model, params, tok, tasks, max_turns=k, **kw)
  short = refine.play(model, params, tok, tasks, max_turns=k - 1, **kw)
  strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  assert strip(refine.summarize(long))[:k - 1] == strip(refine.summarize(short))
  # a verifier that lies changes no text and no stop.
  liar = refine.play(model, params, tok, tasks, max_turns=k,
                     reward_fn=lambda ts, xs: np.ones(len(xs), np.float32), **kw)
  assert liar.texts == long.texts
  np.testing.assert_array_equal(liar.num_turns, long.num_turns)
  # model tokens = the turns' own lengths (each turn ≤ G = 4 tokens).
  assert long.model_tokens.max() <= 4
  assert (long.model_tokens[:, 0] > 0).all()


def test_injected_token_count_by_hand(setup):
  tok, model, params, tasks = setup
  p = refine.play(model, params, tok, tasks, method="iort", max_turns=3,
                  rng=jax.random.key(5), inject_length=I, strategy=SAMPLING)
  # turn 2 follows the reflect prompt '{q}', turn 3 the refresh '+{q}'.
  for i, t in enumerate(tasks):
    want = [len(t.prompt) if p.num_turns[i] >= 2 else 0,
            len(t.prompt) + 1 if p.num_turns[i] >= 3 else 0]
    assert p.injected_tokens[i].tolist() == want


def test_bad_inputs(setup):
  tok, model, params, tasks = setup
  run = lambda **kw: refine.run(model, params, tok, tasks,
                                **{**dict(method="iort", max_turns=2,
                                          rng=jax.random.key(0)), **kw})
  with pytest.raises(ValueError, match="method must be one of"):
    run(method="reflexion")
  with pytest.raises(ValueError, match="max_turns"):
    run(max_turns=0)
  with pytest.raises(ValueError, match="executor"):
    run(method="progco", executor="python")
  with pytest.raises(ValueError, match="unknown prompts"):
    run(prompts={"critique": "x"})
  with pytest.raises(ValueError, match="batch_size"):
    run(batch_size=0)
  with pytest.raises(ValueError, match="tasks is empty"):
    refine.run(model, params, tok, [], method="iort", max_turns=2,
               rng=jax.random.key(0))
  with pytest.raises(ValueError, match="lacks"):
    run(prompts={"refresh_prompt": "{c}"})
  bare = [dataclasses.replace(t, meta={"reverse": True}) for t in tasks]
  with pytest.raises(ValueError, match="operands"):
    refine.run(model, params, tok, bare, method="progco", max_turns=2,
               rng=jax.random.key(0))


# -------------------------------------------------- the multiturn hook
def test_multiturn_stop_fn_hook(setup):
  tok, model, params, tasks = setup
  prompts = [[tok.bos_id] + tok.encode(t.prompt) for t in tasks]
  pt, pm = buckets.left_pad(prompts, length=max(map(len, prompts)), pad_id=0)
  seen = []

  def stop_fn(h):
    seen.append(h.turn)
    return [h.turn == 1, False, h.turn == 2, False, False, False]

  kw = dict(prompt_tokens=pt, prompt_mask=pm, tasks=tasks, tokenizer=tok,
            reward_fn=lambda ts, xs: np.zeros(len(xs), np.float32),
            rng=jax.random.key(0), strategy=SAMPLING, n=1, max_new_tokens=4,
            stop_ids=(tok.eos_id,), pad_id=0, valid=np.ones(len(tasks), bool))
  spec = multiturn.EpisodeSpec(max_turns=3, feedback=multiturn.FixedFeedback("="),
                               inject_length=I, stop_fn=stop_fn)
  ep = multiturn.run_episodes(model, params, spec=spec, **kw)
  assert ep.num_turns.tolist() == [1, 3, 2, 3, 3, 3]
  assert seen == [1, 2]                     # never after the last turn
  bad = dataclasses.replace(spec, stop_fn=lambda h: [True])
  with pytest.raises(ValueError, match="stop_fn returned 1 flags for 6 rows"):
    multiturn.run_episodes(model, params, spec=bad, **kw)
