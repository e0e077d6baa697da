"""Sampling + grading: rollout chunks, evaluate_policy, evaluate_multi_turn."""

import collections

import jax
import numpy as np
import pytest

from jaxsi.data import tasks as tasks_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import strategies as st
from jaxsi.training import evaluate
from tests.methods import rl_fixtures as fx


@pytest.fixture(scope="module")
def tiny():
  tok, model, params, _, _ = fx.setup()
  tasks = tasks_lib.make_tasks("addition", 10, difficulty=[1, 2], seed=3)
  return tok, model, params, tasks


def test_rollout_chunks_do_not_change_greedy_samples(tiny):
  tok, model, params, tasks = tiny
  kw = dict(model=model, params=params, tokenizer=tok, tasks=tasks,
            rng=jax.random.key(0), strategy=st.Greedy(), n=1,
            max_new_tokens=fx.MAX_NEW)
  a = evaluate.rollout(batch_size=16, **kw)
  b = evaluate.rollout(batch_size=4, **kw)     # three chunks, the last padded
  assert a.texts == b.texts and len(a.texts) == len(tasks)
  np.testing.assert_array_equal(a.correct, b.correct)
  assert a.traj.batch_size == len(tasks) == b.traj.batch_size
  assert a.correct.tolist() == [t.verify(x) >= 1.0 for t, x in zip(tasks, a.texts)]


def test_evaluate_policy_counts_difficulties_and_maj(tiny):
  tok, model, params, tasks = tiny
  n = 4
  res = evaluate.evaluate_policy(model, params, tok, tasks,
                                 strategy=st.Sampling(temperature=1.0), n=n,
                                 max_new_tokens=fx.MAX_NEW, seed=5, batch_size=8,
                                 ks=(1, n), maj_ks=(n,))
  diffs = sorted({str(t.difficulty) for t in tasks})
  assert diffs == ["1", "2"] and list(res["by_difficulty"]) == diffs
  assert res["overall"]["num_tasks"] == len(tasks)
  assert res["overall"]["num_samples"] == n * len(tasks)
  assert sum(v["num_tasks"] for v in res["by_difficulty"].values()) == len(tasks)
  # The same key gives the same samples: recompute every metric by hand.
  ro = evaluate.rollout(model=model, params=params, tokenizer=tok, tasks=tasks,
                        rng=jax.random.key(5), strategy=st.Sampling(temperature=1.0),
                        n=n, max_new_tokens=fx.MAX_NEW, batch_size=8)
  c = ro.correct.reshape(len(tasks), n)
  d = np.asarray([str(t.difficulty) for t in tasks])
  for k in diffs:
    assert res["by_difficulty"][k]["pass@1"] == pytest.approx(c[d == k].mean())
    assert res["by_difficulty"][k][f"pass@{n}"] == pytest.approx(
        c[d == k].any(axis=1).mean())
  maj = []
  for i in range(len(tasks)):
    answers = ro.answers[i * n:(i + 1) * n]
    votes = collections.Counter(a for a in answers if a is not None and str(a).strip())
    if not votes:
      maj.append(0.0)
      continue
    top = max(votes.values())
    winner = next(a for a in answers if votes.get(a, 0) == top)
    maj.append(float(c[i, answers.index(winner)]))
  assert res["overall"][f"maj@{n}"] == pytest.approx(np.mean(maj))


def test_evaluate_multi_turn_counts_every_task_once():
  tok, model, params, tasks, _ = fx.setup()
  spec = multiturn.EpisodeSpec(max_turns=2, inject_length=4,
                               feedback=multiturn.FixedFeedback("+="))
  out = evaluate.evaluate_multi_turn(
      model=model, params=params, tokenizer=tok, tasks=tasks[:5], spec=spec,
      reward_fns=(fx.first_is_digit,), strategy=st.Greedy(),
      max_new_tokens=fx.MAX_NEW, batch_size=4)
  assert out["count"] == 5 and len(out["episodes"]) == 5
  r = np.asarray([e["rewards"] for e in out["episodes"]], np.float64)
  c1, c2 = r[:, 0] == 1, r[:, 1] == 1
  assert out["acc_t1"] == pytest.approx(c1.mean())
  assert out["wrong_to_right"] == pytest.approx((~c1 & c2).mean())
  assert all(e["injected"] == ["+="] for e in out["episodes"])
