"""Reflect, Retry, Reward: one loop step; only failures' reflection tokens are
trained, rewarded by the retry's success (numpy formula)."""

from __future__ import annotations

import numpy as np

from jaxsi import methods
from tests.methods import rl_fixtures as fx
from tests.methods.test_score import COMMON, raw_batch, run_one


def test_reflect_retry_loss_matches_formula():
  m = methods.reflect_retry(reflect_prompt="+", retry_prompt="=", **COMMON)
  trainer, p0, metrics, moved = run_one(m, seed=2)
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  # Turn 2 (reflection) is never graded; only failures are retried.
  assert np.isnan(r[:, 1]).all()
  retried = np.isfinite(r[:, 2])
  np.testing.assert_array_equal(retried, r[:, 0] == 0)
  keep = valid & retried
  assert keep.any() and r[keep, 2].min() != r[keep, 2].max()
  score = np.where(keep, r[:, 2], np.nan)
  adv = np.zeros(len(r))
  for g in range(0, len(r), fx.N):
    sl = slice(g, g + fx.N)
    s, k = score[sl], keep[sl]
    if k.sum() > 1:
      adv[sl] = np.where(k, (s - s[k].mean()) / (s[k].std(ddof=1) + 1e-4), 0.0)
  mask = (ids == 2) & keep[:, None]
  prepared = trainer.last_traj
  np.testing.assert_array_equal(np.asarray(prepared.loss_mask), ids == 2)
  np.testing.assert_array_equal(np.asarray(prepared.valid), keep)
  old = np.asarray(prepared.old_logprobs, np.float64)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  want = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), mask,
                "seq-mean-token-mean")
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)
  assert moved > 0
