"""B-STaR: balance score and monitors on hand cases; (T, τ) chosen by the score."""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import bstar
from jaxsi.methods import self_training_common as common
from jaxsi.training import round_context


def rec(tid, s, completion, correct, score, answer=None):
  return dict(task_id=tid, prompt="q", sample=s, completion=completion, correct=correct,
              answer=answer or completion, score=score, difficulty=1)


RECORDS = [
    # Problem a: 3 correct (2 distinct) with high score, 1 wrong with low score.
    rec("a", 0, "x", True, 0.9), rec("a", 1, "x", True, 0.9), rec("a", 2, "y", True, 0.6),
    rec("a", 3, "z", False, 0.1),
    # Problem b: all wrong; one wrong has a high score.
    rec("b", 0, "u", False, 0.8), rec("b", 1, "v", False, 0.2),
]


def test_balance_score_hand_computed():
  # τ = 0.5, answer check on: a: selected 3 (x, x, y), distinct correct 2,
  # n* = 4 → min(2/4, 1)·2/3 = 1/3; b: nothing selected → 0. Mean 1/6.
  assert bstar.balance_score(RECORDS, threshold=0.5, n_star=4) == pytest.approx(1 / 6)
  # n* = 2 → a: 1·2/3.
  assert bstar.balance_score(RECORDS, threshold=0.5, n_star=2) == pytest.approx(1 / 3)
  # Without the answer check b's 0.8 sample is selected: b: 0 distinct correct → 0;
  # a unchanged.
  assert bstar.balance_score(RECORDS, threshold=0.5, n_star=2,
                             require_correct=False) == pytest.approx(1 / 3)
  # τ = 0.7: a: x, x → distinct 1 of 2 → min(1/2,1)·1/2 = 1/4 → mean 1/8.
  assert bstar.balance_score(RECORDS, threshold=0.7, n_star=2) == pytest.approx(1 / 8)


def test_exploration_exploitation_monitors():
  m = bstar.exploration_exploitation(RECORDS, threshold=0.5)
  assert m["pass_at_k"] == pytest.approx(0.5)
  assert m["distinct_correct"] == pytest.approx(1.0)       # (2 + 0) / 2
  assert m["reward_precision"] == pytest.approx(3 / 4)     # x, x, y correct; u wrong
  assert m["reward_recall"] == pytest.approx(1.0)


def test_answer_agreement():
  recs = [rec("a", 0, "1", True, 0), rec("a", 1, "1", True, 0),
          rec("a", 2, "2", False, 0), dict(rec("a", 3, "?", False, 0), answer=None)]
  assert common.answer_agreement(recs) == [0.5, 0.5, 0.25, 0.0]


class TempModel:
  """Fake context: at T ≤ 0.6 all samples are the same correct answer; at higher
  T two distinct correct completions alternate (more exploration)."""

  rng = None

  def sample(self, tasks, *, strategy, n, temperature=None, params=None, rng=None):
    temp = getattr(strategy, "temperature", 0.0)
    texts = []
    for t in tasks:
      for j in range(n):
        texts.append(t.target if (temp <= 0.6 or j % 2 == 0) else "0" + t.target)
    correct = np.asarray([tasks[i // n].verify(x) >= 1 for i, x in enumerate(texts)])
    return round_context.Samples(
        traj=None, rewards=correct[:, None].astype(np.float32), reward_names=("correct",),
        texts=texts, correct=correct,
        answers=[tasks[i // n].answer for i in range(len(texts))], tasks=list(tasks), n=n)


def test_plan_picks_the_balanced_config_and_select_applies_it():
  import jax
  tasks = tasks_lib.make_tasks("addition", 3, difficulty=2, seed=1)
  m = bstar.bstar(rollout=spec.RolloutSpec(n=4), temperatures=(0.5, 1.0), thresholds=(0.0, 0.9),
                  n_star=2, probe_size=2)
  ctx = TempModel()
  ctx.rng = jax.random.key(0)
  plan = m.plan(ctx, tasks)
  # T = 1.0 gives 2 distinct correct of 4 → min(2/2,1)·2/4 = 0.5 > T = 0.5: 1/2·1/4.
  assert plan["temperature"] == 1.0 and plan["probe_balance"] == pytest.approx(0.5)
  assert len(plan["grid"]) == 4
  recs = m.sample_chunk(ctx, tasks, plan)
  examples, _, metrics = m.select(recs, plan, ctx)
  assert len(examples) == 6 and metrics["balance"] == pytest.approx(0.5)
  assert metrics["reward_precision"] == 1.0


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/bstar.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "bstar" and m.plan is not None
