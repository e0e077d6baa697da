"""Tests for jaxsi.transforms.kl (formulas.md §1.3 per_token_kl, §3.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import kl
from jaxsi.transforms.base import ModelOutputs

B, T = 8, 6  # canonical shape shared by the transform tests (eager-compile cache)


def pad(x):
  widths = ((0, B - np.shape(x)[0]), (0, T - np.shape(x)[1]))
  if isinstance(x, jax.Array):
    return jnp.pad(x, widths)
  return np.pad(np.asarray(x), widths)


def make_traj(ref, mask, *, old=None, valid=None):
  b = np.shape(mask)[0]
  valid = np.ones(b, bool) if valid is None else np.asarray(valid)
  return Trajectory.create(
      np.zeros((B, T), np.int32), loss_mask=pad(mask).astype(bool),
      ref_logprobs=jnp.asarray(pad(ref), jnp.float32),
      old_logprobs=None if old is None else jnp.asarray(pad(old), jnp.float32),
      valid=np.pad(valid, (0, B - b)))


def loss_of(term, lp, traj):
  return term(ModelOutputs(logprobs=jnp.asarray(pad(lp), jnp.float32)), traj)


# ------------------------------------------------ independent references
def np_verl_kl_penalty(logprob, ref_logprob, name):
  """verl-project@1dda039 core_algos.kl_penalty forward values (formulas §3.4)."""
  if name in ("kl", "k1"):
    return logprob - ref_logprob
  if name == "abs":
    return np.abs(logprob - ref_logprob)
  if name in ("mse", "k2"):
    return 0.5 * np.square(logprob - ref_logprob)
  if name in ("low_var_kl", "k3"):
    kl_ = np.clip(ref_logprob - logprob, -20, 20)
    return np.clip(np.exp(kl_) - kl_ - 1, -10, 10)
  raise ValueError(name)


def np_trl_per_token_kl(lp, ref):
  """TRL 1.10 GRPO per_token_kl (no clamps)."""
  return np.exp(ref - lp) - (ref - lp) - 1


def test_hand_values():
  lp = jnp.array([-1.0, -2.0, -31.0])
  ref = jnp.array([-1.5, -1.0, -1.0])  # d = ℓp − ref = 0.5, −1, −30
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="k1"), [0.5, -1.0, -30.0])
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="abs"), [0.5, 1.0, 30.0])
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="k2"), [0.125, 0.5, 450.0])
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="k3"),
                             [np.exp(-0.5) - 0.5, np.e - 2.0, np.exp(30.0) - 31.0], rtol=1e-5)
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="low_var_kl"),
                             [np.exp(-0.5) - 0.5, np.e - 2.0, 10.0], rtol=1e-5)
  for alias, name in (("kl", "k1"), ("mse", "k2"), ("k3_clamped", "low_var_kl")):
    np.testing.assert_array_equal(kl.kl_estimate(lp, ref, estimator=alias),
                                  kl.kl_estimate(lp, ref, estimator=name))
  with pytest.raises(ValueError, match="Unknown KL estimator"):
    kl.kl_estimate(lp, ref, estimator="full")
  with pytest.raises(ValueError, match="Unknown KL estimator"):
    kl.kl_penalty(estimator="full+")  # factories validate eagerly, without JAX ops
  assert kl.validate_estimator("k3_clamped+") == "low_var_kl"


def test_matches_verl_and_trl_on_random_inputs():
  rng = np.random.default_rng(0)
  lp = rng.normal(-2, 2, size=64).astype(np.float32)
  ref = rng.normal(-2, 2, size=64).astype(np.float32)
  for ours, theirs in (("k1", "kl"), ("abs", "abs"), ("k2", "mse"), ("low_var_kl", "low_var_kl")):
    np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator=ours),
                               np_verl_kl_penalty(lp.astype(np.float64), ref, theirs),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator="k3"),
                             np_trl_per_token_kl(lp.astype(np.float64), ref), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("base", ["k1", "abs", "k3", "low_var_kl"])
def test_straight_through_value_of_base_gradient_of_k2(base):
  # As verl's test_core_algos_on_cpu for the "k*+" estimators.
  rng = np.random.default_rng(1)
  lp = jnp.asarray(rng.normal(-2, 1, size=16), jnp.float32)
  ref = jnp.asarray(rng.normal(-2, 1, size=16), jnp.float32)
  np.testing.assert_allclose(kl.kl_estimate(lp, ref, estimator=base + "+"),
                             kl.kl_estimate(lp, ref, estimator=base), rtol=1e-6)
  g = lambda est: jax.grad(lambda x: jnp.sum(kl.kl_estimate(x, ref, estimator=est)))(lp)
  np.testing.assert_allclose(g(base + "+"), g("k2"), rtol=1e-6)
  np.testing.assert_allclose(g("k2"), lp - ref, rtol=1e-6)


def test_k3_gradients_vs_finite_differences():
  rng = np.random.default_rng(2)
  lp = jnp.asarray(rng.normal(-2, 0.5, size=8), jnp.float32)
  ref = jnp.asarray(rng.normal(-2, 0.5, size=8), jnp.float32)
  for est in ("k3", "low_var_kl"):
    check_grads(lambda x, est=est: jnp.sum(kl.kl_estimate(x, ref, estimator=est)), (lp,),
                order=1, modes=["rev"], atol=1e-2, rtol=1e-2, eps=1e-2)
  # Analytic: d k3 / d ℓp = 1 − exp(ref − ℓp).
  g = jax.grad(lambda x: jnp.sum(kl.kl_estimate(x, ref, estimator="k3")))(lp)
  np.testing.assert_allclose(g, 1.0 - np.exp(ref - lp), rtol=1e-5)


def test_kl_penalty_term_aggregation_and_masks():
  rng = np.random.default_rng(3)
  lp = rng.normal(-2, 0.5, size=(3, 5)).astype(np.float32)
  ref = rng.normal(-2, 0.5, size=(3, 5)).astype(np.float32)
  mask = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
  valid = np.array([True, True, False])
  traj = make_traj(ref, mask, valid=valid)
  per = np_trl_per_token_kl(lp.astype(np.float64), ref)
  m = mask & valid[:, None]
  loss, metrics = loss_of(kl.kl_penalty(estimator="k3", agg="token-mean"), lp, traj)
  np.testing.assert_allclose(loss, (per * m).sum() / m.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], (per * m).sum() / m.sum(), rtol=1e-5)
  loss, _ = loss_of(kl.kl_penalty(estimator="k3", agg="seq-mean-token-mean"), lp, traj)
  np.testing.assert_allclose(loss, np.mean([(per[i] * m[i]).sum() / m[i].sum() for i in (0, 1)]),
                             rtol=1e-5)
  # Padding / filtered rows with garbage ref values contribute nothing.
  ref_bad = np.where(m, ref, 1e4).astype(np.float32)
  loss_bad, _ = loss_of(kl.kl_penalty(estimator="low_var_kl", agg="token-mean"), lp,
                        make_traj(ref_bad, mask, valid=valid))
  loss_ok, _ = loss_of(kl.kl_penalty(estimator="low_var_kl", agg="token-mean"), lp, traj)
  np.testing.assert_allclose(loss_bad, loss_ok, rtol=1e-6)


def test_bias_corrected_kl():
  # DeepSeek-V3.2 / TRL use_bias_correction_kl: k3 · exp(ℓp − old), ratio not detached.
  rng = np.random.default_rng(4)
  lp = rng.normal(-2, 0.3, size=(2, 4)).astype(np.float32)
  ref = rng.normal(-2, 0.3, size=(2, 4)).astype(np.float32)
  old = (lp + rng.normal(0, 0.2, size=(2, 4))).astype(np.float32)
  mask = np.ones((2, 4), bool)
  traj = make_traj(ref, mask, old=old)
  term = kl.kl_penalty(estimator="k3", agg="token-sum", bias_correction=True)
  loss, _ = loss_of(term, lp, traj)
  expected = np.sum(np_trl_per_token_kl(lp.astype(np.float64), ref) * np.exp(lp - old))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  check_grads(lambda x: loss_of(term, x, traj)[0], (jnp.asarray(lp),), order=1,
              modes=["rev"], atol=1e-2, rtol=1e-2, eps=1e-2)
  # On-policy (old None) the ratio is 1 in value but still carries gradient.
  on = make_traj(ref, mask)
  l_bc, _ = loss_of(term, lp, on)
  l_plain, _ = loss_of(kl.kl_penalty(estimator="k3", agg="token-sum"), lp, on)
  np.testing.assert_allclose(l_bc, l_plain, rtol=1e-6)
  g_bc = jax.grad(lambda x: loss_of(term, x, on)[0])(lp)
  k3 = np_trl_per_token_kl(lp.astype(np.float64), ref)
  np.testing.assert_allclose(g_bc, (1 - np.exp(ref - lp)) + k3, rtol=1e-4, atol=1e-6)


def test_missing_ref_raises_and_jit():
  traj = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=np.ones((B, T), bool))
  with pytest.raises(ValueError, match="ref_logprobs"):
    kl.kl_penalty()(ModelOutputs(logprobs=jnp.zeros((B, T))), traj)
  rng = np.random.default_rng(5)
  lp = rng.normal(-2, 0.5, size=(B, T)).astype(np.float32)
  traj = make_traj(rng.normal(-2, 0.5, size=(B, T)), np.ones((B, T), bool))
  term = kl.kl_penalty(estimator="low_var_kl+", agg="seq-mean-token-sum-norm")
  out = ModelOutputs(logprobs=jnp.asarray(lp))
  np.testing.assert_allclose(jax.jit(term)(out, traj)[0], term(out, traj)[0], rtol=1e-6)
