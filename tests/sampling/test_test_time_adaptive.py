"""Windowed early-stopping self-consistency (ESC, Adaptive-Consistency), by hand."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi.sampling import adaptive
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.sampling import strategies
from tests.methods import rl_fixtures as fx


class StreamDraw:
  """A deterministic draw: problem p's samples are STREAMS[p] in order."""

  def __init__(self, streams, right):
    self.streams, self.right = streams, right
    self.pos = [0] * len(streams)
    self.calls = self.rows = 0
    self.asked = []

  def __call__(self, ids, w):
    self.calls += 1
    self.rows += len(ids) * w
    self.asked.append(list(ids))
    out = []
    for p in ids:
      out.append(self.streams[p][self.pos[p]:self.pos[p] + w])
      self.pos[p] += w
    return (out, [[float(a == self.right[p]) for a in x] for p, x in zip(ids, out)],
            [[len(str(a))] * w for a in out])


def test_esc_stops_exactly_at_the_first_unanimous_window():
  streams = [["1", "1", "2", "2", "2", "2", "9", "9"],   # window 2 unanimous
             ["5", "5", "7", "7", "7", "7", "7", "7"],   # window 1 unanimous
             ["3", "4", "3", "4", "3", "4", "3", "4"],   # never: cap 8
             [None, None, "1", "1", "1", "1", "1", "1"]]  # None window stops
  draw = StreamDraw(streams, right=["2", "5", "3", "1"])
  r = adaptive.run(draw, 4, policy=adaptive.esc, window=2, max_samples=8)
  # Windows of 2: problem 0's first window (1, 1) is unanimous → stops at 2.
  np.testing.assert_array_equal(r.samples, [2, 2, 8, 2])
  assert draw.asked == [[0, 1, 2, 3], [2], [2], [2]]   # only active problems
  assert (r.calls, r.rows) == (4, 8 + 2 + 2 + 2)
  assert r.answers[0] == ["1", "1"]
  np.testing.assert_array_equal(r.chosen, [0, 0, 0, -1])  # 3/4 tie → '3' first
  assert r.accuracy() == pytest.approx(2 / 4)
  s = r.summary()
  assert s["samples_per_problem"] == pytest.approx(14 / 4)


def test_esc_window_three_needs_all_three_equal():
  streams = [["1", "1", "2", "2", "2", "2"]]
  r = adaptive.run(StreamDraw(streams, ["2"]), 1, policy=adaptive.esc,
                   window=3, max_samples=6)
  np.testing.assert_array_equal(r.samples, [6])       # (1,1,2) then (2,2,2)
  assert r.chosen[0] == 2                              # '2' ×4 beats '1' ×2


def test_beta_stop_probability_hand_numbers():
  # m = v1 + v2 + 1; P = Σ_{j<=v1} C(m, j) / 2^m.
  assert adaptive.beta_stop_probability(0, 0) == pytest.approx(0.5)
  assert adaptive.beta_stop_probability(3, 0) == pytest.approx(15 / 16)
  assert adaptive.beta_stop_probability(4, 0) == pytest.approx(31 / 32)
  assert adaptive.beta_stop_probability(4, 1) == pytest.approx(57 / 64)
  assert adaptive.beta_stop_probability(1, 1) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="counts"):
    adaptive.beta_stop_probability(-1, 0)


def test_adaptive_consistency_stops_past_the_threshold():
  # Unanimous stream: 3 agreeing → 15/16 < 0.95 continues; 4 → 31/32 stops.
  # Alternating: (v1, v2) = (5, 5) at 10 → 0.5, never stops before the cap.
  ac = adaptive.adaptive_consistency(0.95)
  streams = [["7"] * 10, ["7", "8"] * 5]
  r = adaptive.run(StreamDraw(streams, ["7", "7"]), 2, policy=ac, window=1,
                   max_samples=10)
  np.testing.assert_array_equal(r.samples, [4, 10])
  with pytest.raises(ValueError, match="threshold"):
    adaptive.adaptive_consistency(1.0)


def test_dsc_allocates_by_first_window_disagreement():
  # w = 4, S = 12, d_max = 3/4; extra = ceil(8 · (d / d_max) / 4) · 4.
  streams = [["1"] * 12,                                 # d = 0: easy, stops at 4
             ["1", "1", "1", "2"] + ["1"] * 8,           # d = 1/4: 8·1/3 → 4 → 8
             ["1", "1", "2", "2"] + ["2"] * 8,           # d = 1/2: 8·2/3 → 8 → 12
             ["1", "2", "3", "4"] + ["4"] * 8]           # d = 3/4: 8 → 12
  draw = StreamDraw(streams, right=["1", "1", "2", "4"])
  r = adaptive.run(draw, 4, policy=adaptive.dsc, window=4, max_samples=12)
  np.testing.assert_array_equal(r.samples, [4, 8, 12, 12])
  assert draw.asked == [[0, 1, 2, 3], [1, 2, 3], [2, 3]]
  np.testing.assert_array_equal(r.chosen, [0, 0, 2, 3])
  assert r.accuracy() == 1.0
  # Unanimous later windows do not stop a pre-allocated problem (unlike ESC).
  assert adaptive.esc([streams[2][:8]], 4, 12)[0] == 8


def test_run_rejects_bad_windows():
  with pytest.raises(ValueError, match="max_samples % window"):
    adaptive.run(StreamDraw([["1"] * 6], ["1"]), 1, policy=adaptive.fixed,
                 window=4, max_samples=6)
  with pytest.raises(ValueError, match="unknown policy 'nope'"):
    adaptive.get_policy("nope", "test_time_run.run.policies")


def test_sampler_draw_saves_rows_and_compiles_once():
  tok, model, params, tasks, _ = fx.setup()
  tasks = tasks[:6]
  sampling = strategies.Sampling(temperature=1.0)
  mk = lambda strategy: adaptive.SamplerDraw(
      model, params, tok, tasks, strategy=strategy, max_new_tokens=3,
      rng=jax.random.key(0), rows=8, levels=3)
  # 8 // 2 = 4 prompts per call at most, padded to a bucket of (1, 2, 4).
  bucket = lambda a: 1 if a <= 1 else 2 if a <= 2 else 4
  chunks = lambda a: [4] * (a // 4) + ([a % 4] if a % 4 else [])
  before = sampler_lib.generate._cache_size()
  draw = mk(sampling)
  r = adaptive.run(draw, len(tasks), policy=adaptive.esc, window=2, max_samples=8)
  active = [int((r.samples > 2 * i).sum()) for i in range(4)]
  assert draw.calls == sum(len(chunks(a)) for a in active)
  assert draw.rows == 2 * sum(bucket(c) for a in active for c in chunks(a))
  assert all(len(a) == n for a, n in zip(r.answers, r.samples))
  assert np.all((r.tokens >= r.samples) & (r.tokens <= 3 * r.samples))
  full = mk(sampling)
  adaptive.run(full, len(tasks), policy=adaptive.fixed, window=2, max_samples=8)
  assert (full.calls, full.rows) == (8, 4 * (8 + 4))     # chunks 4 + 2, 4 rounds
  # At most one compilation per bucket (3), whatever the rounds and counts.
  assert sampler_lib.generate._cache_size() - before <= 3
  # Greedy windows are unanimous: ESC stops every problem after one window,
  # a quarter of fixed's sampler calls and rows.
  greedy = mk(strategies.Greedy())
  g = adaptive.run(greedy, len(tasks), policy=adaptive.esc, window=2, max_samples=8)
  np.testing.assert_array_equal(g.samples, [2] * 6)
  assert (greedy.calls, greedy.rows) == (2, 8 + 4)
  with pytest.raises(ValueError, match="levels must be"):
    adaptive.SamplerDraw(model, params, tok, tasks, strategy=sampling,
                         max_new_tokens=3, rng=jax.random.key(0), levels=0)
