"""Policy shaping (LUFFY / Critique-GRPO): f(π) = π/(π+γ) on off-policy rows,
the clipped surrogate elsewhere, one token mean over both."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import policy_losses
from jaxsi.transforms import policy_shaping as ps
from jaxsi.transforms.base import ModelOutputs


def case(seed=0, b=4, t=5):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.2, 0.5, (b, t)).astype(np.float32)
  lp = (old + rng.normal(0, 0.4, (b, t))).astype(np.float32)
  adv = rng.normal(size=(b, t)).astype(np.float32)
  mask = np.ones((b, t), bool)
  mask[:, 0] = False
  mask[1, 3:] = False
  return lp, old, adv, mask


def traj_of(old, adv, mask, off=None, valid=None):
  b = mask.shape[0]
  extras = {} if off is None else {"off_policy": jnp.asarray(off, bool)}
  return Trajectory.create(
      np.zeros(mask.shape, np.int32), loss_mask=mask,
      old_logprobs=jnp.asarray(old), advantages=jnp.asarray(adv),
      valid=np.ones(b, bool) if valid is None else valid, extras=extras)


def test_shaped_probability_numbers():
  lp = np.log(np.array([0.1, 0.5, 1.0], np.float32))
  np.testing.assert_allclose(ps.shaped_probability(jnp.asarray(lp), 0.1),
                             [0.5, 0.5 / 0.6, 1 / 1.1], rtol=1e-6)


def test_without_flags_equals_pg_clip():
  lp, old, adv, mask = case()
  traj = traj_of(old, adv, mask)
  out = ModelOutputs(logprobs=jnp.asarray(lp))
  got, _ = ps.mixed_policy_pg(agg="token-mean")(out, traj)
  want, _ = policy_losses.pg_clip(agg="token-mean")(out, traj)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_is_weights_scale_on_policy_tokens_only():
  lp, old, adv, mask = case(2)
  off = np.array([False, True, False, False])
  w = np.full(mask.shape, 2.0, np.float32)
  base = traj_of(old, adv, mask, off)
  weighted = base.replace(extras={**base.extras, "is_weights": jnp.asarray(w)})
  term = ps.mixed_policy_pg(agg="token-sum")
  out = ModelOutputs(logprobs=jnp.asarray(lp))
  l0, _ = term(out, base)
  l1, _ = term(out, weighted)
  # token-sum: the on-policy part doubles, the off-policy part stays.
  p = np.exp(lp.astype(np.float64))
  off_part = (-adv * p / (p + 0.1))[mask & off[:, None]].sum()
  np.testing.assert_allclose(float(l1) - off_part, 2 * (float(l0) - off_part),
                             rtol=1e-4)


def test_mixed_rows_match_hand_formula_and_gradient():
  lp, old, adv, mask = case(1)
  off = np.array([False, True, False, True])
  valid = np.array([True, True, True, False])
  traj = traj_of(old, adv, mask, off, valid)
  gamma = 0.1
  term = ps.mixed_policy_pg(gamma=gamma, agg="token-mean")
  loss, m = term(ModelOutputs(logprobs=jnp.asarray(lp)), traj)
  # numpy: on rows the PPO clip, off rows −A·p/(p+γ); mean over valid tokens.
  r = np.exp(lp - old)
  on = np.maximum(-adv * r, -adv * np.clip(r, 0.8, 1.2))
  p = np.exp(lp.astype(np.float64))
  offl = -adv * p / (p + gamma)
  tok = mask & valid[:, None]
  per = np.where(off[:, None], offl, on)
  np.testing.assert_allclose(float(loss), per[tok].mean(), rtol=1e-5)
  off_tok = tok & off[:, None]
  np.testing.assert_allclose(float(m["off_policy/token_frac"]),
                             off_tok.sum() / tok.sum(), rtol=1e-6)
  np.testing.assert_allclose(float(m["off_policy/prob_mean"]),
                             p[off_tok].mean(), rtol=1e-5)
  # d loss / d logp on an off-policy token = −A γ p / (p + γ)² / N.
  g = jax.grad(lambda x: term(ModelOutputs(logprobs=x), traj)[0])(
      jnp.asarray(lp))
  g = np.asarray(g, np.float64)
  want = -adv * gamma * p / (p + gamma) ** 2 / tok.sum()
  np.testing.assert_allclose(g[off_tok], want[off_tok], rtol=1e-4)
  assert (g[~tok] == 0).all()


def test_shaping_favours_rare_tokens():
  # Per unit advantage, ∇_logp f is largest at p = γ and small at p → 1.
  gamma = 0.1
  lps = jnp.log(jnp.asarray([0.01, 0.1, 0.9], jnp.float32))
  grad = jax.vmap(jax.grad(lambda x: ps.shaped_probability(x, gamma)))(lps)
  grad = np.asarray(grad)
  assert grad[1] > grad[0] and grad[1] > grad[2]
  np.testing.assert_allclose(grad[1], 0.25, rtol=1e-5)  # γ·γ/(2γ)² = 1/4


def test_errors():
  with pytest.raises(ValueError, match="gamma"):
    ps.mixed_policy_pg(gamma=0.0)
  lp, old, adv, mask = case()
  bad = traj_of(old, adv, mask).replace(
      extras={"off_policy": jnp.zeros((3,), bool)})
  with pytest.raises(ValueError, match="bool\\[B\\]"):
    ps.mixed_policy_pg()(ModelOutputs(logprobs=jnp.asarray(lp)), bad)
