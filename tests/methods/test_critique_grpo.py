"""Critique-GRPO: one loop step; verifier critiques after wrong answers, the
refinements join the GRPO group (numpy formula)."""

from __future__ import annotations

import numpy as np

from jaxsi import methods
from tests.methods import rl_fixtures as fx
from tests.methods.test_score import (COMMON, per_turn_tokens, raw_batch,
                                      run_one)


def test_critique_grpo_in_context_loss_matches_formula():
  kw = dict(COMMON, inject_length=6)
  m = methods.critique_grpo(critique_template="+{last}=", scale="group",
                            agg="seq-mean-token-mean",
                            refinements="in_context", **kw)
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


def compact(tokens, mask, keep):
  """Rows with only the ``keep`` tokens, moved to the left (numpy)."""
  out_t = np.zeros_like(tokens)
  out_m = np.zeros_like(mask)
  for b in range(len(tokens)):
    sel = np.flatnonzero(keep[b])
    out_t[b, :len(sel)] = tokens[b, sel]
    out_m[b, :len(sel)] = True
  return out_t, out_m


def test_critique_grpo_off_policy_refinements_match_formula():
  """The paper's mode: the refinement is a response to the bare question,
  trained by −A·π/(π+γ); the first attempts by the clipped surrogate; one
  token mean; A = r − group mean over attempts and refinements."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxsi.trajectory import Trajectory  # pylint: disable=g-import-not-at-top
  kw = dict(COMMON, inject_length=6)
  gamma = 0.1
  m = methods.critique_grpo(critique_template="+{last}=", gamma=gamma, **kw)
  assert m.name == "critique_grpo"
  trainer, p0, metrics, moved = run_one(m)
  traj, r, ids, lm, valid, _ = raw_batch(trainer, p0)
  b = len(r)
  tt = trainer.last_traj
  assert tt.batch_size == 2 * b
  refined = np.isfinite(r[:, 1]) & valid
  assert refined.any() and (~refined & valid).any()
  np.testing.assert_array_equal(np.asarray(tt.valid[b:]), refined)
  # Advantages: r − mean over the group's attempts and refinements.
  adv = np.zeros_like(r)
  for g in range(0, b, fx.N):
    sl = slice(g, g + fx.N)
    ok = np.isfinite(r[sl]) & valid[sl, None]
    if ok.sum() > 1:
      adv[sl] = np.where(ok, r[sl] - r[sl][ok].mean(), 0.0)
  # First attempts in their rows; refinements as prompt + refinement rows.
  tokens = np.asarray(traj.tokens)
  real = np.asarray(traj.input_mask, bool)
  first_mask = lm & (ids == 1) & valid[:, None]
  ref_tok, ref_real = compact(tokens, real, real & ((ids == 0) | (ids == 2)))
  ref_loss = compact(np.where(real & ((ids == 0) | (ids == 2)),
                              (ids == 2) & lm, False), real,
                     real & ((ids == 0) | (ids == 2)))[0].astype(bool)
  ref_loss &= refined[:, None]
  lp_first = fx.policy_logprobs(trainer.model, p0, traj)
  ref_traj = Trajectory.create(jnp.asarray(ref_tok), input_mask=ref_real)
  lp_ref = fx.policy_logprobs(trainer.model, p0, ref_traj)
  np.testing.assert_array_equal(np.asarray(tt.tokens[b:])[ref_real],
                                ref_tok[ref_real])
  # old log-probs of the new rows are scored in the bare-question context.
  np.testing.assert_allclose(np.asarray(tt.old_logprobs[b:])[ref_loss],
                             lp_ref[ref_loss], rtol=1e-4, atol=1e-5)
  old = np.asarray(tt.old_logprobs[:b], np.float64)
  ratio = np.exp(np.where(first_mask, lp_first - old, 0.0))
  a1 = adv[:, :1]
  on = np.maximum(-a1 * ratio, -a1 * np.clip(ratio, 0.8, 1.2))
  p = np.exp(lp_ref)
  off = -adv[:, 1:2] * p / (p + gamma)
  want = (on[first_mask].sum() + off[ref_loss].sum()) / (
      first_mask.sum() + ref_loss.sum())
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)
  assert [k for k in metrics if k.endswith("off_policy/token_frac")]
  assert metrics["transform/turns/as_response_rows"] == refined.sum()
  assert moved > 0


def test_critique_grpo_rejects_unknown_refinement_mode():
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="refinements"):
    methods.critique_grpo(refinements="bogus")
