"""Tests for jaxsi.transforms.policy_losses (formulas.md §1.2–1.3, §1.7, §3.2, §4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import policy_losses as pl
from jaxsi.transforms.base import ModelOutputs


# Every test runs at one canonical shape [B, T] = [8, 6] (smaller inputs are
# padded with invalid rows / masked columns): eager JAX compiles each primitive
# once per shape, so a shared shape keeps the whole file fast on CPU.
B, T = 8, 6


def pad(x, fill=0):
  widths = ((0, B - np.shape(x)[0]), (0, T - np.shape(x)[1]))
  if isinstance(x, jax.Array):  # also tracers, so jax.grad sees the unpadded input
    return jnp.pad(x, widths, constant_values=fill)
  return np.pad(np.asarray(x), widths, constant_values=fill)


def make_traj(old, adv, mask, *, valid=None, weights=None, extras=None):
  b = np.shape(mask)[0]
  valid = np.ones(b, bool) if valid is None else np.asarray(valid, bool)
  weights = np.ones(b, np.float32) if weights is None else np.asarray(weights, np.float32)
  extras = {k: (pad(v) if np.ndim(v) == 2 else np.pad(v, (0, B - b)))
            for k, v in (extras or {}).items()}
  return Trajectory.create(
      np.zeros((B, T), np.int32), loss_mask=pad(mask).astype(bool),
      old_logprobs=None if old is None else jnp.asarray(pad(old), jnp.float32),
      advantages=jnp.asarray(pad(adv), jnp.float32),
      valid=np.pad(valid, (0, B - b)), weights=np.pad(weights, (0, B - b)),
      extras=extras)


def loss_of(term, lp, traj):
  return term(ModelOutputs(logprobs=jnp.asarray(pad(lp), jnp.float32)), traj)


def random_case(seed, b=4, t=6, scale=0.4, seq_const_adv=False):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.5, 0.5, size=(b, t)).astype(np.float32)
  lp = (old + rng.normal(0.0, scale, size=(b, t))).astype(np.float32)
  if seq_const_adv:
    adv = np.repeat(rng.normal(size=(b, 1)), t, axis=1).astype(np.float32)
  else:
    adv = rng.normal(size=(b, t)).astype(np.float32)
  lengths = rng.integers(1, t, size=b)
  mask = (np.arange(t)[None] >= 1) & (np.arange(t)[None] <= lengths[:, None])
  return lp, old, adv, mask


# ---------------------------------------------- independent numpy references
def np_trl_grpo(lp, old, adv, mask, *, eps_low, eps_high, delta=None, level="token",
                loss_type="grpo"):
  """TRL 1.10 GRPOTrainer._compute_loss (formulas §1.2–1.4) in numpy, beta = 0."""
  lp, old, adv = (np.asarray(x, np.float64) for x in (lp, old, adv))
  m = mask.astype(np.float64)
  log_ratio = lp - old
  if level == "token":
    logw = log_ratio
  else:
    logw = (log_ratio * m).sum(-1, keepdims=True) / np.maximum(m.sum(-1, keepdims=True), 1)
  coef_1 = np.exp(logw)
  coef_2 = np.clip(coef_1, 1 - eps_low, 1 + eps_high)
  if delta is not None:
    coef_1 = np.minimum(coef_1, delta)
  per_token = -np.minimum(coef_1 * adv, coef_2 * adv)
  if loss_type == "grpo":
    return ((per_token * m).sum(-1) / np.maximum(m.sum(-1), 1)).mean()
  if loss_type in ("bnpo", "dapo"):
    return (per_token * m).sum() / max(m.sum(), 1)
  raise ValueError(loss_type)


def np_verl_vanilla(lp, old, adv, mask, *, eps_low, eps_high, clip_ratio_c=None):
  """verl vanilla policy loss with token-mean (formulas §3.2), log-ratio clamp ±20."""
  lp, old, adv = (np.asarray(x, np.float64) for x in (lp, old, adv))
  r = np.exp(np.clip(lp - old, -20, 20))
  l1 = -adv * r
  l2 = -adv * np.clip(r, 1 - eps_low, 1 + eps_high)
  lc = np.maximum(l1, l2)
  if clip_ratio_c is not None:
    l3 = -adv * clip_ratio_c
    lc = np.where(adv < 0, np.minimum(l3, lc), lc)
  m = mask.astype(np.float64)
  return (lc * m).sum() / m.sum()


# ------------------------------------------------------------------ PPO clip
def test_pg_clip_hand_numbers():
  # Row 0: ratios 1.5, 0.5, 1.1 with A = 1, −1, 2; row 1: ratios 4.0, 0.9, A = −1.
  r = np.array([[1., 1.5, 0.5, 1.1], [1., 1., 4.0, 0.9]], np.float32)
  adv = np.array([[0., 1., -1., 2.], [0., 0., -1., -1.]], np.float32)
  mask = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], bool)
  old = np.zeros_like(r)
  traj = make_traj(old, adv, mask)
  # row 0: max(−1.5, −1.2) = −1.2; max(0.5, 0.8) = 0.8; −2.2.  row 1: 4.0, 0.9.
  loss, m = loss_of(pl.pg_clip(agg="seq-mean-token-mean"), np.log(r), traj)
  np.testing.assert_allclose(loss, ((-1.2 + 0.8 - 2.2) / 3 + (4.0 + 0.9) / 2) / 2, rtol=1e-5)
  np.testing.assert_allclose(m["clipfrac_low"], 1 / 5)
  np.testing.assert_allclose(m["clipfrac_high"], 1 / 5)
  np.testing.assert_allclose(m["ratio_max"], 4.0, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_min"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["approx_kl"], -np.log([1.5, 0.5, 1.1, 4.0, 0.9]).mean(), rtol=1e-5)
  # Dual clip c = 3 caps the A < 0, r = 4 token at 3.
  for form in ("verl", "trl"):
    loss, m = loss_of(pl.pg_clip(agg="token-sum", dual_clip=3.0, dual_clip_form=form),
                      np.log(r), traj)
    np.testing.assert_allclose(loss, -1.2 + 0.8 - 2.2 + 3.0 + 0.9, rtol=1e-5)
    np.testing.assert_allclose(m["clipfrac_dual"], 1 / 5)
  # eps_high (clip-higher) = 0.6 lets r = 1.5 through.
  loss, _ = loss_of(pl.pg_clip(agg="token-sum", eps_high=0.6), np.log(r), traj)
  np.testing.assert_allclose(loss, -1.5 + 0.8 - 2.2 + 4.0 + 0.9, rtol=1e-5)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type,agg", [("grpo", "seq-mean-token-mean"),
                                           ("dapo", "token-mean")])
@pytest.mark.parametrize("delta", [None, 1.5])
def test_pg_clip_matches_trl(level, loss_type, agg, delta):
  lp, old, adv, mask = random_case(0)
  term = pl.pg_clip(eps_low=0.2, eps_high=0.28, dual_clip=delta, dual_clip_form="trl",
                    ratio=level, agg=agg)
  loss, _ = loss_of(term, lp, make_traj(old, adv, mask))
  ref = np_trl_grpo(lp, old, adv, mask, eps_low=0.2, eps_high=0.28, delta=delta,
                    level=level, loss_type=loss_type)
  np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c", [None, 3.0])
def test_pg_clip_matches_verl_vanilla(c):
  lp, old, adv, mask = random_case(1, scale=1.0)
  term = pl.pg_clip(eps_low=0.2, eps_high=0.2, dual_clip=c, agg="token-mean",
                    log_ratio_clamp=20.0)
  loss, _ = loss_of(term, lp, make_traj(old, adv, mask))
  ref = np_verl_vanilla(lp, old, adv, mask, eps_low=0.2, eps_high=0.2, clip_ratio_c=c)
  np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-6)


def test_dual_clip_trl_delta_equals_verl_c():
  rng = np.random.default_rng(0)
  r = jnp.asarray(np.exp(rng.normal(0, 1.5, size=20000)), jnp.float32)
  a = jnp.asarray(rng.normal(size=20000), jnp.float32)
  kw = dict(eps_low=0.2, eps_high=0.28, dual_clip=3.0)
  verl = pl.clipped_surrogate(r, a, dual_clip_form="verl", **kw)
  trl = pl.clipped_surrogate(r, a, dual_clip_form="trl", **kw)
  np.testing.assert_allclose(verl, trl, rtol=1e-6, atol=1e-6)
  # The dual clip is a no-op for A > 0 and active for some A < 0.
  plain = pl.clipped_surrogate(r, a, eps_low=0.2, eps_high=0.28)
  np.testing.assert_array_equal(np.asarray(verl)[a > 0], np.asarray(plain)[a > 0])
  assert np.any(np.asarray(verl) < np.asarray(plain))
  g = lambda form: jax.grad(lambda x: jnp.sum(pl.clipped_surrogate(
      x, a, dual_clip_form=form, **kw)))(r)
  np.testing.assert_allclose(g("verl"), g("trl"), atol=1e-6)


def test_dual_clip_must_exceed_clip_range():
  with pytest.raises(ValueError, match="dual_clip"):
    pl.pg_clip(dual_clip=1.1)


def test_log_ratio_clamp():
  mask = np.array([[True, True]])
  traj = make_traj(np.zeros((1, 2)), np.array([[-1.0, -1.0]]), mask)
  lp = np.array([[30.0, 0.0]], np.float32)
  _, m = loss_of(pl.pg_clip(agg="token-sum", log_ratio_clamp=20.0), lp, traj)
  np.testing.assert_allclose(m["ratio_max"], np.exp(20.0), rtol=1e-5)
  _, m = loss_of(pl.pg_clip(agg="token-sum"), lp, traj)
  np.testing.assert_allclose(m["ratio_max"], np.exp(30.0), rtol=1e-5)


# ----------------------------------------------------------------------- GSPO
def test_gspo_one_token_equals_token_ppo():
  lp, old, adv, _ = random_case(2, b=5, t=4, scale=0.5)
  mask = np.zeros((5, 4), bool)
  mask[np.arange(5), np.array([1, 2, 3, 1, 2])] = True
  traj = make_traj(old, adv, mask)
  ref_term = pl.pg_clip(ratio="token", agg="token-mean")
  ref_f = lambda x: loss_of(ref_term, x, traj)[0]
  for level in ("sequence", "sequence_token"):
    f = lambda x, level=level: loss_of(pl.pg_clip(ratio=level, agg="token-mean"), x, traj)[0]
    np.testing.assert_allclose(f(lp), ref_f(lp), rtol=1e-6)
  # Gradients (sequence_token's gradient is checked against verl gspo below).
  f_seq = lambda x: loss_of(pl.pg_clip(ratio="sequence", agg="token-mean"), x, traj)[0]
  np.testing.assert_allclose(jax.grad(f_seq)(lp), jax.grad(ref_f)(lp), rtol=1e-5, atol=1e-7)


def test_sequence_ratio_equals_token_ratio_when_tokens_equal():
  rng = np.random.default_rng(3)
  old = rng.normal(-1, 0.3, size=(3, 5)).astype(np.float32)
  per_row = rng.normal(0, 0.3, size=(3, 1)).astype(np.float32)
  lp = old + per_row  # identical log-ratio on every token of a row
  adv = np.repeat(rng.normal(size=(3, 1)), 5, axis=1).astype(np.float32)
  mask = np.array([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], bool)
  traj = make_traj(old, adv, mask)
  f = lambda x, level: loss_of(pl.pg_clip(ratio=level, agg="seq-mean-token-mean"), x, traj)
  lt, mt = f(lp, "token")
  ls, ms = f(lp, "sequence")
  np.testing.assert_allclose(ls, lt, rtol=1e-5)
  np.testing.assert_allclose(ms["ratio_mean"], mt["ratio_mean"], rtol=1e-5)
  gt = jax.grad(lambda x: f(x, "token")[0])(lp)
  gs = jax.grad(lambda x: f(x, "sequence")[0])(lp)
  np.testing.assert_allclose(gs, gt, rtol=1e-4, atol=1e-6)


def test_gspo_token_equals_gspo_when_advantage_sequence_constant():
  lp, old, adv, mask = random_case(4, seq_const_adv=True, scale=0.2)
  traj = make_traj(old, adv, mask)
  f = lambda x, level: loss_of(pl.pg_clip(ratio=level, agg="seq-mean-token-mean"), x, traj)[0]
  np.testing.assert_allclose(f(lp, "sequence_token"), f(lp, "sequence"), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda x: f(x, "sequence_token"))(lp),
                             jax.grad(lambda x: f(x, "sequence"))(lp), rtol=1e-4, atol=1e-6)


def np_verl_gspo(lp, old, adv, mask, eps_low, eps_high):
  """verl gspo policy loss (formulas §3.2): value and d loss / d ℓp, seq-mean-token-mean."""
  m = mask.astype(np.float64)
  lengths = np.maximum(m.sum(-1, keepdims=True), 1)
  log_s = np.minimum(((lp - old) * m).sum(-1, keepdims=True) / lengths, 10.0)
  s = np.exp(log_s) * np.ones_like(lp, dtype=np.float64)
  l1 = -adv * s
  l2 = -adv * np.clip(s, 1 - eps_low, 1 + eps_high)
  per = np.maximum(l1, l2)
  n = lp.shape[0]
  loss = ((per * m).sum(-1) / lengths[:, 0]).sum() / n
  # ∂ log s_t / ∂ ℓp_t = 1 (token form); the max takes the unclipped branch when
  # s is inside the clip range or L1 > L2.
  active = ((s >= 1 - eps_low) & (s <= 1 + eps_high)) | (l1 > l2)
  grad = np.where(active, -adv * s, 0.0) * m / lengths / n
  return loss, grad


def test_gspo_token_matches_verl_gspo():
  lp, old, adv, mask = random_case(12, scale=0.3)
  term = pl.pg_clip(eps_low=0.1, eps_high=0.1, ratio="sequence_token",
                    agg="seq-mean-token-mean")
  traj = make_traj(old, adv, mask)
  loss, _ = loss_of(term, lp, traj)
  ref_loss, ref_grad = np_verl_gspo(lp.astype(np.float64), old, adv, mask, 0.1, 0.1)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  g = jax.grad(lambda x: loss_of(term, x, traj)[0])(lp)
  np.testing.assert_allclose(g, ref_grad, rtol=1e-4, atol=1e-7)


def test_log_importance_weights_levels():
  lp = jnp.array([[0.0, -1.0, -2.0, 5.0]])
  old = jnp.array([[0.0, -1.5, -1.0, 0.0]])
  mask = jnp.array([[False, True, True, False]])
  tok, delta = pl.log_importance_weights(lp, old, mask, level="token")
  np.testing.assert_allclose(tok, [[0.0, 0.5, -1.0, 0.0]])
  np.testing.assert_allclose(delta, tok)
  seq, _ = pl.log_importance_weights(lp, old, mask, level="sequence")
  np.testing.assert_allclose(seq, [[0.0, -0.25, -0.25, 0.0]])
  st, _ = pl.log_importance_weights(lp, old, mask, level="sequence_token")
  np.testing.assert_allclose(st, seq)
  with pytest.raises(ValueError):
    pl.log_importance_weights(lp, old, mask, level="tokens")


# --------------------------------------------------------------------- CISPO
def test_cispo_trl_and_verl_forms():
  r = np.array([[0.5, 3.0, 7.0, 1.1]], np.float32)
  old = np.array([[-1.0, -2.0, -3.0, -0.5]], np.float32)
  lp = old + np.log(r)
  adv = np.array([[1.0, -2.0, 0.5, 1.0]], np.float32)
  traj = make_traj(old, adv, np.ones((1, 4), bool))
  for form, coef in [("trl", np.minimum(r, 5.0)), ("verl", np.clip(r, 0.8, 1.2))]:
    f = lambda x, form=form: loss_of(pl.cispo(form=form, agg="token-sum"), x, traj)[0]
    np.testing.assert_allclose(f(lp), np.sum(-coef * adv * lp), rtol=1e-5)
    # Gradient: −sg[coef]·A (the weight is detached).
    np.testing.assert_allclose(jax.grad(f)(lp), -coef * adv, rtol=1e-5)
  # TRL's silent fallback cap of 0.2 is reproducible explicitly.
  f = lambda x: loss_of(pl.cispo(form="trl", eps_high=0.2, agg="token-sum"), x, traj)[0]
  np.testing.assert_allclose(jax.grad(f)(lp), -np.minimum(r, 0.2) * adv, rtol=1e-5)
  _, m = loss_of(pl.cispo(form="trl", agg="token-sum"), lp, traj)
  np.testing.assert_allclose(m["cispo_clipfrac"], 0.25)


# ---------------------------------------------------------------------- SAPO
def np_sapo(lp, old, adv, mask, tau_pos=1.0, tau_neg=1.05):
  r = np.exp(np.asarray(lp, np.float64) - old)
  tau = np.where(adv > 0, tau_pos, tau_neg)
  per = -(4 / tau) / (1 + np.exp(-tau * (r - 1))) * adv
  m = mask.astype(np.float64)
  return ((per * m).sum(-1) / np.maximum(m.sum(-1), 1)).mean()


def test_sapo_matches_reference_and_ppo_gradient_at_ratio_one():
  lp, old, adv, mask = random_case(5)
  traj = make_traj(old, adv, mask)
  loss, _ = loss_of(pl.sapo(), lp, traj)
  np.testing.assert_allclose(loss, np_sapo(lp, old, adv, mask), rtol=1e-5)
  # Hand value at r = 1: −(4/τ)·½·A.
  one = make_traj(np.zeros((1, 2)), np.array([[2.0, -1.0]]), np.ones((1, 2), bool))
  loss, _ = loss_of(pl.sapo(agg="token-sum"), np.zeros((1, 2)), one)
  np.testing.assert_allclose(loss, -2.0 * 2.0 / 1.0 + 2.0 * 1.0 / 1.05, rtol=1e-6)
  # On-policy (r = 1) the SAPO gradient equals the PPO / REINFORCE gradient.
  on = make_traj(None, adv, mask)
  g_sapo = jax.grad(lambda x: loss_of(pl.sapo(), x, on)[0])(lp)
  g_ppo = jax.grad(lambda x: loss_of(pl.pg_clip(), x, on)[0])(lp)
  np.testing.assert_allclose(g_sapo, g_ppo, rtol=1e-5, atol=1e-7)


def test_sapo_and_pg_clip_gradients_vs_finite_differences():
  lp, old, adv, mask = random_case(6, b=2, t=4, scale=0.05)
  traj = make_traj(old, adv, mask)
  for term in (pl.sapo(), pl.pg_clip(eps_low=0.5, eps_high=0.5, ratio="sequence")):
    f = lambda x, term=term: loss_of(term, x, traj)[0]
    check_grads(f, (jnp.asarray(lp, jnp.float32),), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2, eps=1e-2)


# ---------------------------------------------------------------------- GMPO
def np_trl_gmpo(lp, old, adv_seq, mask, eps_low, eps_high):
  """TRL experimental GMPOTrainer (formulas §1.7), beta = 0, A per sequence."""
  m = mask.astype(np.float64)
  lr = np.asarray(lp, np.float64) - old
  c = np.clip(lr, -eps_low, eps_high)
  a = adv_seq[:, None]
  clipped = np.where(a > 0, np.minimum(lr, c), np.maximum(lr, c))
  w = np.exp((clipped * m).sum(-1) / np.maximum(m.sum(-1), 1))
  return np.mean(-w * adv_seq)


def test_gmpo_hand_numbers():
  # δ = (0.5, −0.1), ε = 0.4: A > 0 → min(δ, clip δ) = (0.4, −0.1), w = e^{0.15}, ℓ = −w;
  # A < 0 → max(δ, clip δ) = (0.5, −0.1), w = e^{0.2}, ℓ = +w. Mean over the 2 rows.
  old = np.zeros((2, 2), np.float32)
  lp = np.array([[0.5, -0.1], [0.5, -0.1]], np.float32)
  adv = np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32)
  loss, _ = loss_of(pl.gmpo(eps_low=0.4, eps_high=0.4), lp,
                    make_traj(old, adv, np.ones((2, 2), bool)))
  np.testing.assert_allclose(loss, (-np.exp(0.15) + np.exp(0.2)) / 2, rtol=1e-6)


def test_gmpo_matches_trl():
  lp, old, adv, mask = random_case(7, scale=0.6, seq_const_adv=True)
  loss, m = loss_of(pl.gmpo(eps_low=0.4, eps_high=0.4), lp, make_traj(old, adv, mask))
  np.testing.assert_allclose(loss, np_trl_gmpo(lp, old, adv[:, 0], mask, 0.4, 0.4), rtol=1e-5)
  assert 0.0 < float(m["clipfrac"]) < 1.0


# ----------------------------------------------------------------- REINFORCE
def test_reinforce_gradient_is_minus_a_grad_logp():
  lp, _, adv, mask = random_case(8)
  w = np.random.default_rng(0).uniform(0.5, 2.0, size=lp.shape).astype(np.float32)
  traj = make_traj(None, adv, mask, extras={"is_weights": w})
  f = lambda x: loss_of(pl.reinforce(agg="token-sum"), x, traj)[0]
  np.testing.assert_allclose(f(lp), np.sum(-adv * lp * w * mask), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(f)(lp), -adv * w * mask, rtol=1e-6)
  # [B] sequence weights broadcast over tokens; ignoring them is an option.
  traj = make_traj(None, adv, mask, extras={"is_weights": w[:, 0]})
  g = jax.grad(lambda x: loss_of(pl.reinforce(agg="token-sum"), x, traj)[0])(lp)
  np.testing.assert_allclose(g, -adv * w[:, :1] * mask, rtol=1e-6)
  g = jax.grad(lambda x: loss_of(pl.reinforce(agg="token-sum", is_weights_key=None), x,
                                 traj)[0])(lp)
  np.testing.assert_allclose(g, -adv * mask, rtol=1e-6)


def test_on_policy_pg_clip_gradient_equals_reinforce():
  lp, _, adv, mask = random_case(9)
  traj = make_traj(None, adv, mask)  # old_logprobs None → sg[lp]
  g1 = jax.grad(lambda x: loss_of(pl.pg_clip(agg="token-mean"), x, traj)[0])(lp)
  g2 = jax.grad(lambda x: loss_of(pl.reinforce(agg="token-mean"), x, traj)[0])(lp)
  np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------- general
def test_invalid_rows_contribute_nothing():
  lp, old, adv, mask = random_case(10)
  valid = np.array([True, False, True, True])
  for term in (pl.pg_clip(), pl.cispo(), pl.sapo(), pl.gmpo(), pl.reinforce(),
               pl.pg_clip(agg="token-mean")):
    full, _ = loss_of(term, lp, make_traj(old, adv, mask, valid=valid))
    keep = valid
    sub, _ = loss_of(term, lp[keep], make_traj(old[keep], adv[keep], mask[keep]))
    np.testing.assert_allclose(full, sub, rtol=1e-5)


def test_missing_advantages_raises():
  traj = Trajectory.create(np.zeros((1, 2), np.int32), loss_mask=np.ones((1, 2), bool))
  with pytest.raises(ValueError, match="advantages"):
    pl.pg_clip()(ModelOutputs(logprobs=jnp.zeros((1, 2))), traj)


def test_jit_matches_eager_and_entropy_metric():
  lp, old, adv, mask = random_case(11)
  traj = make_traj(old, adv, mask)
  ent = np.full(lp.shape, 0.7, np.float32)
  for term in (pl.pg_clip(dual_clip=3.0, ratio="sequence_token"), pl.cispo(form="verl"),
               pl.gmpo()):
    out = ModelOutputs(logprobs=jnp.asarray(pad(lp)), entropy=jnp.asarray(pad(ent)))
    eager = term(out, traj)
    jitted = jax.jit(term)(out, traj)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6)
    for k in eager[1]:
      np.testing.assert_allclose(jitted[1][k], eager[1][k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(eager[1]["entropy"], 0.7, rtol=1e-6)
