"""SCoRe (stages I and II) and plain two-turn GRPO: one loop step each, and the
loss of the first optimizer step equals a numpy computation of the formula.

Also holds the helpers the other multi-turn method tests import.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

COMMON = dict(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
              reward_fns=(fx.first_is_digit,), inject_length=4)


def run_one(method, *, reference_params=None, seed=0):
  """One Loop step (episodes rollout) on the shared tiny set-up."""
  tok, model, params, tasks, opt = fx.setup()
  trainer = loop.Loop(
      model=model, params=params, method=method, tokenizer=tok, tasks=tasks,
      optimizer=opt, prompts_per_step=fx.PROMPTS, seed=seed,
      roles=({"reference": reference_params} if reference_params is not None
             else None), compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(trainer.state.params)
  metrics = trainer.step()
  moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree.leaves(trainer.state.params), jax.tree.leaves(p0)))
  for k in ("loss_first", "reward/turn1/mean", "sc/acc_t1", "sc/gap"):
    assert np.isfinite(metrics[k]), k
  return trainer, p0, metrics, moved


def raw_batch(trainer, p0):
  """(rollout traj before transforms, rewards [B, K], turn ids, loss mask,
  valid, policy log-probs at the rollout params) in numpy."""
  traj = trainer.last_batch.traj
  lp = fx.policy_logprobs(trainer.model, p0, trainer.last_traj)
  return (traj, np.asarray(trainer.last_batch.rewards, np.float64),
          np.asarray(traj.turn_ids), np.asarray(traj.loss_mask, bool),
          np.asarray(traj.valid, bool), lp)


def per_turn_tokens(values, ids, mask):
  """[B, K] → [B, T] by turn id on ``mask``."""
  k = values.shape[1]
  idx = np.clip(ids - 1, 0, k - 1)
  out = np.take_along_axis(values, idx, axis=1)
  return np.where(mask & (ids >= 1), out, 0.0)


def group_baseline(x, taken, n):
  """x − mean of the taken members of its contiguous group (0 if < 2)."""
  out = np.zeros_like(x)
  for g0 in range(0, len(x), n):
    sl = slice(g0, g0 + n)
    t = taken[sl]
    if t.sum() > 1:
      out[sl] = np.where(t, x[sl] - x[sl][t].mean(), 0.0)
  return out


def k3(lp, ref):
  x = ref - lp
  return np.exp(x) - x - 1.0


def score_reference(trainer, p0, ref_params, *, stage, alpha, weights):
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  old = np.asarray(trainer.last_traj.old_logprobs, np.float64)
  r = np.nan_to_num(r)
  if stage == 1:
    shaped = np.stack([np.zeros_like(r[:, 0]), r[:, 1]], 1)
  else:
    shaped = np.stack([r[:, 0], r[:, 1] + alpha * (r[:, 1] - r[:, 0])], 1)
  returns = np.stack([shaped[:, 0] + shaped[:, 1], shaped[:, 1]], 1)
  taken = np.stack([np.ones(len(r), bool), (ids == 2).any(axis=1)], 1) & valid[:, None]
  adv = np.stack([group_baseline(returns[:, k], taken[:, k], fx.N)
                  for k in range(2)], 1)
  mask = lm & valid[:, None]
  a_bt = per_turn_tokens(adv, ids, mask)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  pg = fx.agg(fx.ppo_clip(ratio, a_bt, 0.2, 0.2), mask, "token-mean")
  ref = fx.policy_logprobs(trainer.model, ref_params, trainer.last_traj)
  beta = np.asarray(weights)[np.clip(ids - 1, 0, 1)]
  kl = fx.agg(beta * k3(np.where(lm, lp, 0), np.where(lm, ref, 0)), mask,
              "token-mean")
  return pg + kl, r


@pytest.mark.parametrize("anchor", [0.0, 0.4])
def test_score_stage2_loss_matches_formula(anchor):
  _, _, params, _, _ = fx.setup()
  ref = fx.perturbed(params)
  m = methods.score(stage=2, alpha=3.0, kl_base=0.05, feedback_text="+=",
                    anchor_first=anchor, **COMMON)
  assert methods.is_multi_turn(m) and m.needs("reference")
  trainer, p0, metrics, moved = run_one(m, reference_params=ref)
  # anchor_first adds its weight to the attempt-1 tokens' KL only.
  want, r = score_reference(trainer, p0, ref, stage=2, alpha=3.0,
                            weights=(0.05 + anchor, 0.05))
  assert moved > 0
  # Both attempts are always played (no stop on correct).
  assert np.isfinite(trainer.last_batch.rewards).all()
  assert (r[:, 0] != r[:, 1]).any(), "fixture should change answers"
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)


def test_score_stage1_loss_matches_formula():
  _, _, params, _, _ = fx.setup()
  ref = fx.perturbed(params)
  m = methods.score(stage=1, kl_base=0.05, kl_first=0.5, feedback_text="+=",
                    **COMMON)
  trainer, p0, metrics, moved = run_one(m, reference_params=ref, seed=1)
  want, _ = score_reference(trainer, p0, ref, stage=1, alpha=0.0,
                            weights=(0.55, 0.05))
  assert moved > 0
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)
  assert metrics["transform/turns/return_mean_t1"] == metrics[
      "transform/turns/return_mean_t2"]


def test_two_turn_grpo_loss_matches_formula():
  m = methods.two_turn_grpo(reward="sum", feedback_text="+=", **COMMON)
  trainer, p0, metrics, moved = run_one(m)
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  total = r.sum(axis=1)
  adv = fx.group_std_adv(total, fx.N, scale=True)
  mask = lm & valid[:, None]
  old = np.asarray(trainer.last_traj.old_logprobs, np.float64)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  want = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), mask, "token-mean")
  assert moved > 0
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=2e-5)


def test_score_rejects_negative_anchor():
  with pytest.raises(ValueError, match="anchor_first must be >= 0"):
    methods.score(stage=2, anchor_first=-0.1)
  with pytest.raises(ValueError, match="anchor_first is a stage-II option"):
    methods.score(stage=1, anchor_first=0.5)


def np_gae(r, v, m, gamma, lam):
  """Mask-skipping GAE, written as a loop over the loss tokens only."""
  adv = np.zeros_like(r)
  for b in range(len(r)):
    idx = np.flatnonzero(m[b])
    g, next_v = 0.0, 0.0
    for t in idx[::-1]:
      delta = r[b, t] + gamma * next_v - v[b, t]
      g = delta + gamma * lam * g
      adv[b, t] = g
      next_v = v[b, t]
  return adv


def test_multi_turn_ppo_rejects_bonus_with_discount():
  with pytest.raises(ValueError, match="gamma=1"):
    methods.multi_turn_ppo(alpha=1.0, gamma=0.9)
  with pytest.raises(ValueError, match="max_turns=2"):
    methods.multi_turn_ppo(alpha=1.0, max_turns=3)


def test_multi_turn_ppo_gae_over_turns():
  m = methods.multi_turn_ppo(**COMMON, feedback_text="+=", alpha=3.0,
                             lam=0.9, optim=OptimSpec(epochs=1, minibatches=1))
  assert m.value_head and methods.is_multi_turn(m)
  trainer, p0, metrics, moved = run_one(m)
  traj, r, ids, lm, valid, lp = raw_batch(trainer, p0)
  tt = trainer.last_traj
  # Attempt rewards (bonus on attempt 2 only) on each attempt's last token.
  r = np.nan_to_num(r)
  shaped = np.stack([r[:, 0] - 3.0 * (r[:, 1] - r[:, 0]),
                     r[:, 1] + 3.0 * (r[:, 1] - r[:, 0])], 1)
  want_tr = np.zeros(lm.shape)
  for b in range(len(r)):
    for k in (1, 2):
      cols = np.flatnonzero(lm[b] & (ids[b] == k))
      if cols.size:
        want_tr[b, cols[-1]] = shaped[b, k - 1]
  np.testing.assert_allclose(np.asarray(tt.token_rewards), want_tr, atol=1e-6)
  # GAE skips the injected turn; whitened over the loss tokens of valid rows.
  v = np.asarray(tt.values, np.float64)
  raw = np_gae(want_tr, v, lm, 1.0, 0.9)
  mask = lm & valid[:, None]
  x = raw[mask]
  whit = (raw - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-8)
  np.testing.assert_allclose(np.asarray(tt.advantages)[mask], whit[mask],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(tt.returns)[mask], (raw + v)[mask],
                             rtol=1e-5, atol=1e-5)
  # V of turn 2's first token bootstraps turn 1's last token:
  # A(t1_last) = r + V(t2_first) − V(t1_last) + λ·A(t2_first).
  b = int(np.flatnonzero(np.any(lm & (ids == 2), axis=1) & valid)[0])
  t1_last = np.flatnonzero(lm[b] & (ids[b] == 1))[-1]
  t2_first = np.flatnonzero(lm[b] & (ids[b] == 2))[0]
  np.testing.assert_allclose(
      raw[b, t1_last],
      want_tr[b, t1_last] + v[b, t2_first] - v[b, t1_last]
      + 0.9 * (raw[b, t2_first]), rtol=1e-6)
  # First step: ratio 1 and V = V_old, so the loss is −mean(A) (= 0 after
  # whitening) + c_v · ½ · mean((V − R)²) = 0.5 · ½ · mean(A_raw²).
  np.testing.assert_allclose(metrics["loss_first"], 0.25 * np.mean(x ** 2),
                             rtol=2e-4, atol=2e-5)
  assert moved > 0
