"""UFO: one loop step; the loss equals the numpy formula (turn-discounted,
repeat-penalised episode reward, GRPO advantages on assistant turns only)."""

from __future__ import annotations

import numpy as np

from jaxsi import methods
from tests.methods import rl_fixtures as fx
from tests.methods.test_score import COMMON, raw_batch, run_one


def test_ufo_loss_matches_formula():
  m = methods.ufo(max_turns=3, gamma=0.5, repeat_penalty=0.3,
                  feedback_text="+=", **COMMON)
  assert m.rollout.episode.stop_on_correct and m.rollout.episode.max_turns == 3
  trainer, p0, metrics, moved = run_one(m)
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  rep = np.asarray(traj.extras["turn_repeats"], np.float64)
  # Episodes stop at the first correct answer.
  for b in range(len(r)):
    k = int(np.isfinite(r[b]).sum())
    assert (r[b, :k - 1] == 0).all()
    assert k == 3 or r[b, k - 1] == 1
  assert (np.isfinite(r).sum(axis=1) > 1).any()
  disc = 0.5 ** np.arange(3)
  total = np.nansum((r - 0.3 * rep) * disc, axis=1)
  adv = fx.group_std_adv(total, fx.N, scale=True)
  mask = lm & valid[:, None]
  # The loss mask is exactly the model turns (never the injected feedback).
  np.testing.assert_array_equal(lm, ids > 0)
  old = np.asarray(trainer.last_traj.old_logprobs, np.float64)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  want = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), mask,
                "seq-mean-token-mean")
  assert moved > 0
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)
  # Turns taken per episode, counted from the turn ids of the model tokens.
  taken = np.array([len(set(row[row > 0].tolist())) for row in ids])
  np.testing.assert_allclose(metrics["sc/turns_mean"], taken[valid].mean())
