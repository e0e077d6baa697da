"""Critique-GRPO: one loop step; verifier critiques after wrong answers, the
refinements join the GRPO group (numpy formula)."""

from __future__ import annotations

import numpy as np

from jaxsi import methods
from tests.methods import rl_fixtures as fx
from tests.methods.test_score import (COMMON, per_turn_tokens, raw_batch,
                                      run_one)


def test_critique_grpo_loss_matches_formula():
  kw = dict(COMMON, inject_length=6)
  m = methods.critique_grpo(critique_template="+{last}=", **kw)
  trainer, p0, metrics, moved = run_one(m)
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  refined = np.isfinite(r[:, 1])
  np.testing.assert_array_equal(refined, r[:, 0] == 0)
  assert refined.any()
  # The injected critique is the verifier's text for that task.
  tok = trainer.tokenizer
  for b in np.flatnonzero(refined):
    gold = trainer.tasks[trainer.last_batch.task_index[b]].answer
    assert tok.decode(np.asarray(traj.tokens[b])[ids[b] == -1].tolist()) == (
        f"+{gold[-1]}=")
  adv = np.zeros_like(r)
  for g in range(0, len(r), fx.N):
    sl = slice(g, g + fx.N)
    ok = np.isfinite(r[sl]) & valid[sl, None]
    vals = r[sl][ok]
    if ok.sum() > 1:
      adv[sl] = np.where(ok, (r[sl] - vals.mean()) / (vals.std(ddof=1) + 1e-4),
                         0.0)
  mask = lm & valid[:, None]
  a_bt = per_turn_tokens(adv, ids, mask)
  old = np.asarray(trainer.last_traj.old_logprobs, np.float64)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  want = fx.agg(fx.ppo_clip(ratio, a_bt, 0.2, 0.2), mask, "seq-mean-token-mean")
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)
  assert moved > 0
