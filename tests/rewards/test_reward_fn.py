"""Tests for jaxsi.rewards.reward_fn."""

import threading
import time

import numpy as np
import pytest

from jaxsi.data import make_tasks
from jaxsi.rewards import reward_fn as R


@pytest.fixture(name="tasks")
def _tasks():
  return make_tasks("addition", 4, difficulty=2, seed=0, scratchpad=True)


def test_correctness_and_format_rewards(tasks):
  comps = [tasks[0].target, "#### 0", "no marker 5", tasks[3].target + "x"]
  np.testing.assert_array_equal(R.correctness_reward(tasks, comps),
                                [1, 0, 0, 0])
  np.testing.assert_array_equal(R.format_reward(tasks, comps), [1, 1, 0, 1])
  assert R.correctness_reward(tasks, comps).dtype == np.float32
  plain = make_tasks("addition", 3, difficulty=2, seed=0, reverse=True)
  np.testing.assert_array_equal(
      R.format_reward(plain, ["12<|end|>", " 5 ", "1.5"]), [1, 1, 0])
  cd = make_tasks("countdown", 2, difficulty=3, seed=0)
  np.testing.assert_array_equal(R.format_reward(cd, ["1+2", "1+"]), [1, 0])
  with pytest.raises(ValueError, match="2 tasks but 1 completions"):
    R.correctness_reward(cd, ["x"])


def test_combine_names_weights_total(tasks):
  two = R.with_names(lambda t, c: np.stack(
      [np.full(len(t), 2.0), np.arange(len(t))], axis=1), "two", "index")
  comb = R.combine(R.correctness_reward, two, R.correctness_reward,
                   weights=[1.0, 0.5, 2.0])
  assert comb.names == ("correct", "two", "index", "correct#2")
  np.testing.assert_array_equal(comb.weights, [1.0, 0.5, 0.5, 2.0])
  comps = [t.target for t in tasks[:2]] + ["x", "y"]
  out = comb(tasks, comps)
  assert out.shape == (4, 4) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:, 0], [1, 1, 0, 0])
  np.testing.assert_array_equal(out[:, 2], [0, 1, 2, 3])
  # total = 1*c + 0.5*2 + 0.5*idx + 2*c
  np.testing.assert_allclose(comb.total(out), [4.0, 4.5, 2.0, 2.5])
  with pytest.raises(ValueError, match="2 weights for 1 fns"):
    R.combine(R.format_reward, weights=[1, 2])
  with pytest.raises(ValueError, match="1 names for 2 columns"):
    R.combine(two, names=["a"])
  undeclared = R.combine(lambda t, c: np.zeros((len(t), 3)))
  with pytest.raises(ValueError, match="returned 3 components, expected 1"):
    undeclared(tasks, comps)


def test_as_components_errors():
  assert R.as_components([1, 2], 2).shape == (2, 1)
  with pytest.raises(ValueError, match=r"'f' returned shape \(3,\)"):
    R.as_components([1, 2, 3], 2, name="f")
  with pytest.raises(ValueError, match="non-numeric"):
    R.as_components(["a", "b"], 2)


def test_safe_rewards_success(tasks):
  comps = [t.target for t in tasks]
  r, failed, info = R.safe_rewards(R.correctness_reward, tasks, comps,
                                   timeout_s=5.0)
  np.testing.assert_array_equal(r, np.ones((4, 1)))
  assert not failed.any() and info["num_failed"] == 0 and not info["retried"]
  r, failed, info = R.safe_rewards(R.correctness_reward, [], [], timeout_s=1.0)
  assert r.shape == (0, 1) and failed.shape == (0,)


def test_safe_rewards_raising_fn_isolates_samples(tasks):
  def boom(ts, cs):
    if any("bad" in c for c in cs):
      raise RuntimeError("cannot score 'bad'")
    return R.correctness_reward(ts, cs)

  comps = [tasks[0].target, "bad", "#### 0", "bad too"]
  r, failed, info = R.safe_rewards(boom, tasks, comps, timeout_s=5.0)
  np.testing.assert_array_equal(failed, [False, True, False, True])
  assert r[0, 0] == 1.0 and r[2, 0] == 0.0
  assert np.isnan(r[1]).all() and np.isnan(r[3]).all()
  assert info["num_failed"] == 2 and info["retried"]
  assert info["num_exceptions"] == 3  # batch + two samples
  assert "RuntimeError: cannot score 'bad'" in info["errors"][0]
  r, failed, info = R.safe_rewards(boom, tasks, comps, timeout_s=5.0,
                                   retry_individually=False)
  assert failed.all() and np.isnan(r).all()


def test_safe_rewards_hanging_fn_returns_fast(tasks):
  def hang(ts, cs):
    if any("slow" in c for c in cs):
      time.sleep(30)
    return np.ones(len(ts))

  comps = ["a", "slow", "b", "c"]
  t0 = time.monotonic()
  r, failed, info = R.safe_rewards(hang, tasks, comps, timeout_s=0.5)
  elapsed = time.monotonic() - t0
  assert elapsed < 3.0  # batch 0.5 s + one sample 0.5 s (+ fast ones)
  np.testing.assert_array_equal(failed, [False, True, False, False])
  np.testing.assert_array_equal(r[[0, 2, 3], 0], [1, 1, 1])
  assert info["num_timeouts"] == 2 and info["live_workers"] >= 1

  def hang_all(ts, cs):
    time.sleep(30)

  t0 = time.monotonic()
  r, failed, info = R.safe_rewards(hang_all, tasks, comps, timeout_s=0.5,
                                   retry_budget_s=0.6)
  assert time.monotonic() - t0 < 2.5
  assert failed.all() and info["num_skipped"] >= 2
  assert info["num_failed"] == 4


def test_safe_rewards_bad_output_and_nonfinite(tasks):
  comps = ["a", "b", "c", "d"]
  def nonfinite(ts, cs):
    return np.array([1.0, np.nan, np.inf, 0.0])

  r, failed, info = R.safe_rewards(nonfinite, tasks, comps, timeout_s=2.0)
  np.testing.assert_array_equal(failed, [False, True, True, False])
  assert info["num_nonfinite"] == 2 and not info["retried"]
  assert r[0, 0] == 1.0 and r[3, 0] == 0.0
  r, failed, info = R.safe_rewards(lambda t, c: [1.0], tasks, comps,
                                   timeout_s=2.0, num_components=1)
  # batch: wrong shape; per sample: [1.0] is fine.
  assert not failed.any() and info["num_bad_output"] == 1


def test_safe_rewards_caps_abandoned_workers(tasks):
  event = threading.Event()

  def block(ts, cs):
    event.wait(30)

  try:
    R.safe_rewards(block, tasks[:1], ["a"], timeout_s=0.05,
                   retry_individually=False)
    t0 = time.monotonic()
    r, failed, info = R.safe_rewards(block, tasks, ["a"] * 4, timeout_s=5.0,
                                     max_live_workers=1)
    assert time.monotonic() - t0 < 1.0
    assert failed.all() and info["num_skipped"] == 4
    assert "hung reward workers" in info["errors"][0]
  finally:
    event.set()


def test_fill_failed_and_weighted_sum():
  r = np.array([[1.0, 2.0], [np.nan, np.nan]], np.float32)
  out = R.fill_failed(r, np.array([False, True]), value=-1.0)
  np.testing.assert_array_equal(out, [[1, 2], [-1, -1]])
  np.testing.assert_allclose(R.weighted_sum(out, [0.5, 1.0]), [2.5, -1.5])
  with pytest.raises(ValueError, match="weighted_sum"):
    R.weighted_sum(out, [1.0])
  assert R.reward_names(R.format_reward) == ("format",)
  assert R.reward_names(R.with_names(R.format_reward, "f")) == ("f",)
