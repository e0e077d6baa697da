"""Test-time selectors and the accuracy-versus-tokens sweep, by hand."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt
from tests.methods import rl_fixtures as fx


def _cands():
  # problem 0: answers 3,5,5,3 (tie at k=4 → '3' seen first), sample 1 right.
  # problem 1: all unparseable.
  # problem 2: 7,7,9,9 with sample 2 and 3 right.
  answers = [["3", "5", "5", "3"], [None] * 4, ["7", "7", "9", "9"]]
  correct = np.asarray([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 1]], np.float32)
  sc = np.asarray([[0.1, 0.9, 0.2, 0.3], [0.5, np.nan, 0.1, 0.2],
                   [0.4, 0.3, 0.2, 0.8]], np.float32)
  return tt.Candidates(tasks=[None] * 3, texts=[[""] * 4] * 3, answers=answers,
                       correct=correct, lengths=np.arange(12).reshape(3, 4),
                       scores={"self_certainty": sc})


def test_selectors_hand_numbers():
  c = _cands()
  np.testing.assert_array_equal(tt.first(c, 4), [0, 0, 0])
  np.testing.assert_array_equal(tt.majority(c, 4), [0, -1, 0])   # ties → first seen
  np.testing.assert_array_equal(tt.majority(c, 3), [1, -1, 0])
  np.testing.assert_array_equal(tt.best_of_n("self_certainty")(c, 4), [1, 0, 3])
  np.testing.assert_array_equal(tt.best_of_n("self_certainty")(c, 1), [0, 0, 0])
  # weighted: problem 0 '3' 0.4 vs '5' 1.1 → sample 1; problem 2 '7' 0.7 vs
  # '9' 1.0 → sample 2.
  np.testing.assert_array_equal(tt.weighted_majority("self_certainty")(c, 4),
                                [1, -1, 2])
  # Borda p=1, k=4: problem 0 ranks (4,1,3,2) → votes 1,4,2,3: '3' 4, '5' 6.
  # problem 2 ranks (2,3,4,1) → votes 3,2,1,4: '7' 5, '9' 5 → tie → '7'.
  np.testing.assert_array_equal(tt.borda("self_certainty", power=1.0)(c, 4),
                                [1, -1, 0])
  np.testing.assert_array_equal(tt.oracle(c, 4), [1, 0, 2])
  assert tt.accuracy(c, tt.oracle(c, 4)) == pytest.approx(2 / 3)
  assert tt.accuracy(c, tt.majority(c, 4)) == 0.0     # none (−1) counts 0
  with pytest.raises(ValueError, match="k must be"):
    tt.first(c, 5)
  with pytest.raises(KeyError, match="no score 'logprob_mean'"):
    tt.best_of_n("logprob_mean")(c, 2)


def test_sweep_reports_tokens_per_problem():
  c = _cands()
  rows = tt.sweep(c, ks=(1, 4), selectors={"first": tt.first, "oracle": tt.oracle})
  assert [(r["selector"], r["k"]) for r in rows] == [
      ("first", 1), ("oracle", 1), ("first", 4), ("oracle", 4)]
  assert rows[0]["tokens_per_problem"] == pytest.approx((0 + 4 + 8) / 3)
  assert rows[2]["tokens_per_problem"] == pytest.approx((6 + 22 + 38) / 3)
  assert rows[3]["accuracy"] == pytest.approx(2 / 3)
  assert "| 4 |" in tt.markdown(rows)


def test_generate_one_batched_call_per_chunk(monkeypatch):
  tok, model, params, tasks, _ = fx.setup()
  calls = []
  real = tt.sampler_lib.sample

  def counting(*a, **kw):
    calls.append(kw["n"])
    return real(*a, **kw)

  monkeypatch.setattr(tt.sampler_lib, "sample", counting)
  c = tt.generate(model, params, tok, tasks[:5], n=4, max_new_tokens=3,
                  strategy=strategies.Sampling(temperature=1.0),
                  rng=jax.random.key(0), batch_size=12)
  assert calls == [4, 4]                       # 3 + 2 problems, n = 4 each
  assert c.correct.shape == (5, 4) and c.lengths.shape == (5, 4)
  assert set(c.scores) == {"self_certainty", "logprob", "logprob_mean"}
  assert np.all((c.lengths >= 1) & (c.lengths <= 3))
  np.testing.assert_allclose(c.scores["logprob_mean"],
                             c.scores["logprob"] / c.lengths, rtol=1e-5)
  for p, t in enumerate(tasks[:5]):
    assert [t.verify(x) for x in c.texts[p]] == list(c.correct[p])
  rows = tt.sweep(c, ks=(1, 2, 4))
  oracle = [r["accuracy"] for r in rows if r["selector"] == "oracle"]
  assert oracle == sorted(oracle)               # pass@k grows with k


def test_plot_writes_a_png(tmp_path):
  rows = tt.sweep(_cands(), ks=(1, 2, 4), selectors={
      "first": tt.first, "majority": tt.majority,
      "self_certainty": tt.best_of_n("self_certainty")})
  path = tt.plot(rows, str(tmp_path / "curve.png"), title="t")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
