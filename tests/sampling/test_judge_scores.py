"""Tests for jaxsi.sampling.judge_scores (the model judging its own candidates)."""

import jax
import numpy as np
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import judging
from jaxsi.sampling import judge_scores
from jaxsi.sampling import test_time as tt


def test_parse_judgments_hand_numbers():
  fmt = judging.get_format("score_1_5")
  scores, statuses = judge_scores.parse_judgments(
      fmt, ["4", "score: 2", "9", "x", "1"], [True, True, True, True, False])
  # 9 is out of [1, 5]; "x" never parses; an unfinished "x" would be over budget.
  U = judge_scores.UNPARSED_SCORE
  np.testing.assert_array_equal(scores, np.float32([4, 2, U, U, 1]))
  assert statuses == ["ok", "ok", "unparsed", "unparsed", "ok"]
  v, st = judge_scores.parse_judgments(judging.get_format("verdict"), ["y", "n", "?"],
                                       [True, True, False])
  np.testing.assert_array_equal(v, np.float32([1.0, 0.0, U]))
  assert st == ["ok", "ok", "over_budget"]


def test_best_of_n_by_judge_scores_picks_the_highest_parsed():
  tasks = tasks_lib.make_tasks("addition", 2, difficulty=1, seed=0)
  c = tt.Candidates(tasks=tasks, texts=[["a", "b", "c"], ["d", "e", "f"]],
                    answers=[["1", "2", "3"], ["4", "5", "6"]],
                    correct=np.array([[0, 1, 0], [1, 0, 0]], np.float32),
                    lengths=np.ones((2, 3), int), scores={})
  u = judge_scores.UNPARSED_SCORE
  c.scores["judge"] = np.array([[2, 5, u], [u, u, u]], np.float32)
  # Problem 0 → candidate 1 (score 5); problem 1: nothing parsed → the first.
  np.testing.assert_array_equal(tt.best_of_n("judge")(c, 3), [1, 0])


def test_fill_scores_on_a_tiny_model_counts_calls_and_statuses():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 3, difficulty=1, seed=0)
  c = tt.Candidates(tasks=tasks, texts=[["1", "2"], ["3", "4"], ["5", "6"]],
                    answers=[["1", "2"], ["3", "4"], ["5", "6"]],
                    correct=np.zeros((3, 2), np.float32),
                    lengths=np.ones((3, 2), int), scores={})
  info = judge_scores.fill_scores(c, model, params, tok, max_new_tokens=3,
                                  batch_size=4)
  assert c.scores["judge"].shape == (3, 2)
  assert info["judge_calls"] == 2                     # 6 judgments, 4 per call
  assert sum(info[f"judge/{s}"] for s in ("ok", "unparsed", "over_budget")) == 6
  assert 0 < info["judge_tokens_per_problem"] <= 2 * 3
  with pytest.raises(ValueError, match="pairwise"):
    judge_scores.fill_scores(c, model, params, tok, format="pairwise")
  ref = judging.JudgeFormat(name="ref", kind="verdict", template="{prompt}{completion}{answer}?",
                            yes="y", no="n")
  with pytest.raises(ValueError, match="reference"):
    judge_scores.fill_scores(c, model, params, tok, format=ref)
