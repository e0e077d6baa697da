"""SPCT: the judging task set, the GRM rule reward by hand, the factory, and
k-judgment voting → best-of-N by hand."""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import spct
from jaxsi.rewards import judging
from jaxsi.sampling import test_time


def _judging(fmt="score_1_5"):
  t = tasks_lib.make_tasks("addition", 1, difficulty=1, seed=0, reverse=True)[0]
  wrong = data_judging.corrupt(t.target, np.random.default_rng(0))
  return data_judging.judging_tasks([t, t], [t.target, wrong], fmt)   # correct, wrong


def test_judge_task_set():
  a = tasks_lib.make_tasks("judge", 8, difficulty=1, seed=3, reverse=True)
  b = tasks_lib.make_tasks("judge", 8, difficulty=1, seed=3, reverse=True)
  assert [t.prompt for t in a] == [t.prompt for t in b]          # deterministic
  assert all(t.category == data_judging.CATEGORY and t.verify(t.target) == 1.0 for t in a)
  ok = tasks_lib.make_tasks("judge", 8, difficulty=1, seed=3, reverse=True,
                            correct_fraction=1.0)
  assert all(t.meta["correct"] and t.target == "5" for t in ok)
  bad = tasks_lib.make_tasks("judge", 8, difficulty=1, seed=3, reverse=True,
                             correct_fraction=0.0)
  # a one-digit change of an addition's answer is always wrong
  assert not any(t.meta["correct"] for t in bad) and all(t.target == "1" for t in bad)
  with pytest.raises(ValueError, match="correct_fraction"):
    tasks_lib.make_tasks("judge", 2, difficulty=1, correct_fraction=1.5)
  with pytest.raises(ValueError, match="pairwise"):
    tasks_lib.make_tasks("judge", 2, difficulty=1, judge_format="pairwise")


def test_grm_reward_hand_case():
  good, bad = _judging()
  r = spct.grm_reward(unparsed_reward=-0.5)
  tasks = [good, good, good, good, bad, bad, good]
  texts = ["5", "4", "3", "1", "1", "5", "x"]
  # score 1-5, midpoint 3: a correct candidate agrees iff > 3, a wrong one iff < 3
  # 5→+1, 4→+1, 3 (midpoint)→−1, 1→−1 | wrong: 1→+1, 5→−1 | unparsed → −0.5
  np.testing.assert_allclose(r(tasks, texts), [1, 1, -1, -1, 1, -1, -0.5])
  # exact: the score must be the label's rating (5 correct, 1 wrong): 4 → −1
  np.testing.assert_allclose(spct.grm_reward(exact=True)(tasks, texts),
                             [1, -1, -1, -1, 1, -1, -1])
  # the brief's 1 / 0 variant
  np.testing.assert_allclose(
      spct.grm_reward(disagree_reward=0.0, unparsed_reward=-0.1)(tasks[:2] + tasks[-1:],
                                                                 ["5", "1", "?"]),
      [1.0, 0.0, -0.1])
  vgood, vbad = _judging("verdict")
  np.testing.assert_allclose(r([vgood, vgood, vbad, vbad], ["y", "n", "n", "z"]),
                             [1, -1, 1, -0.5])
  assert r.names == ("grm",)


def test_grm_reward_errors():
  plain = tasks_lib.make_tasks("addition", 1, difficulty=1, seed=0)
  with pytest.raises(ValueError, match="not a judging task"):
    spct.grm_reward()(plain, ["1"])
  with pytest.raises(ValueError, match="2 tasks for 1"):
    spct.grm_reward()(_judging(), ["1"])
  with pytest.raises(ValueError, match="must exceed"):
    spct.grm_reward(agree_reward=0.0, disagree_reward=0.0)
  with pytest.raises(ValueError, match="finite"):
    spct.grm_reward(unparsed_reward=float("nan"))


def test_factory():
  m = spct.spct(rollout=spec.RolloutSpec(n=4, max_new_tokens=2))
  assert isinstance(m, spec.Method) and m.name == "spct" and m.n == 4
  assert m.needs(spec.REFERENCE)               # the k3 KL to the cold start
  assert not spct.spct(kl_coef=0.0).needs(spec.REFERENCE)
  good, bad = _judging()
  np.testing.assert_allclose(m.rewards[0]([good, bad], ["5", "5"]), [1, -1])


SCORES = np.asarray([[[5, np.nan], [3, 4], [np.nan, np.nan]],    # problem 0
                     [[2, 2], [1, 5], [4, np.nan]]], np.float32)  # problem 1


def test_vote_hand_case():
  # k = 1: first judgments only; k = 2: sums of the parsed ones
  np.testing.assert_allclose(spct.vote(SCORES, 1), [[5, 3, np.nan], [2, 1, 4]])
  np.testing.assert_allclose(spct.vote(SCORES), [[5, 7, np.nan], [4, 6, 4]])
  with pytest.raises(ValueError, match="k must be"):
    spct.vote(SCORES, 3)
  with pytest.raises(ValueError, match="P, N, K"):
    spct.vote(SCORES[0])


def test_votes_as_best_of_n_selectors():
  c = test_time.Candidates(
      tasks=[None, None], texts=[["a", "b", "c"]] * 2, answers=[["a", "b", "c"]] * 2,
      correct=np.asarray([[1, 0, 0], [0, 1, 0]], np.float32),
      lengths=np.ones((2, 3), int), scores={})
  sel = spct.add_votes(c, SCORES, ks=(1, 2))
  # k=1: p0 → cand 0 (5), p1 → cand 2 (4); k=2: p0 → cand 1 (7), p1 → cand 1 (6)
  np.testing.assert_array_equal(sel["genrm_vote@1"](c, 3), [0, 2])
  np.testing.assert_array_equal(sel["genrm_vote@2"](c, 3), [1, 1])
  assert test_time.accuracy(c, sel["genrm_vote@1"](c, 3)) == 0.5   # p0 right, p1 wrong
  assert test_time.accuracy(c, sel["genrm_vote@2"](c, 3)) == 0.5   # p0 wrong, p1 right
  with pytest.raises(ValueError, match="add_votes"):
    spct.add_votes(c, SCORES[:, :2], ks=(1,))


def test_grm_scores_parses_each_judgment(monkeypatch):
  t = tasks_lib.make_tasks("addition", 2, difficulty=1, seed=0, reverse=True)
  seen = {}

  def fake_generate(model, params, tokenizer, tasks, *, n, max_new_tokens, strategy,
                    rng, batch_size, scores):
    seen["prompts"] = [x.prompt for x in tasks]
    texts = [["5", "x"], ["2", "3"], ["1", "1"], ["4444", "5"]][:len(tasks)]
    lengths = np.asarray([[1, 1], [1, 1], [1, 1], [4, 1]])
    return test_time.Candidates(tasks=tasks, texts=texts, answers=texts,
                                correct=np.zeros((len(tasks), n)), lengths=lengths,
                                scores={})

  monkeypatch.setattr(test_time, "generate", fake_generate)
  s = spct.grm_scores(None, None, None, t, [["1", "2"], ["3", "4"]], k=2,
                      judge_format="score_1_5", max_new_tokens=4, strategy=None, rng=None)
  assert seen["prompts"] == [t[0].prompt + "1|score:", t[0].prompt + "2|score:",
                             t[1].prompt + "3|score:", t[1].prompt + "4|score:"]
  # "x" unparsed; "4444" out of range (unparsed)
  np.testing.assert_allclose(s, [[[5, np.nan], [2, 3]], [[1, 1], [np.nan, 5]]])
  with pytest.raises(ValueError, match="same number"):
    spct.grm_scores(None, None, None, t, [["1"], ["3", "4"]], k=1,
                    judge_format="score_1_5", max_new_tokens=4, strategy=None, rng=None)
  with pytest.raises(ValueError, match="pairwise"):
    spct.grm_scores(None, None, None, t, [["1"], ["3"]], k=1, judge_format="pairwise",
                    max_new_tokens=4, strategy=None, rng=None)
  with pytest.raises(ValueError, match="k must be"):
    spct.grm_scores(None, None, None, t, [["1"], ["3"]], k=0, judge_format="score_1_5",
                    max_new_tokens=4, strategy=None, rng=None)
