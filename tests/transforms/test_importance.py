"""Tests for jaxsi.transforms.importance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import importance as imp
from jaxsi.transforms.base import Context, ModelOutputs


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)

RNG = np.random.RandomState(0)
LM = np.zeros((4, 7), bool)
LM[:, 2:] = True
LM[1, 5:] = False
VALID = np.array([True, True, True, False])
BEH = (RNG.randn(4, 7) * 0.5).astype(np.float32)
OLD = (BEH + RNG.randn(4, 7) * 0.4).astype(np.float32)


def make_traj():
  return Trajectory.create(np.ones((4, 7), np.int32), loss_mask=LM,
                           valid=VALID, behaviour_logprobs=jnp.asarray(BEH),
                           old_logprobs=jnp.asarray(OLD))


def run(transform, traj, ctx=Context()):
  out, _, metrics = jax.jit(transform.update)(traj, transform.init(), ctx)
  return out, metrics


def np_weights(level, mode, upper, lower, normalize, log_clamp):
  """TRL §1.5 / verl §3.6 transcribed with numpy (float64)."""
  m = (LM & VALID[:, None]).astype(np.float64)
  delta = (OLD.astype(np.float64) - BEH) * m
  if level == "token":
    logw = delta
    units = m > 0
  else:
    logw = delta.sum(1)
    units = VALID & (m.sum(1) > 0)
  if log_clamp is not None:
    logw = np.clip(logw, -log_clamp, log_clamp)
  rho = np.exp(logw)
  lo = -np.inf if lower is None else lower
  hi = np.inf if upper is None else upper
  if mode == "truncate":
    rho = np.clip(rho, lo, hi)
  elif mode == "mask":
    rho = rho * ((rho >= lo) & (rho <= hi))
  if normalize:
    rho = rho / rho[units].mean()
  return (rho if level == "token" else rho[:, None]) * m


CASES = [
    ("token", "truncate", 2.0, None, False, 20.0),      # verl TIS default
    ("token", "mask", 1.5, 0.5, False, None),           # TRL token_mask
    ("sequence", "mask", 3.0, None, False, None),       # TRL default
    ("sequence", "truncate", 2.0, 0.8, True, 20.0),     # verl + batch norm
    ("token", "none", None, None, True, 20.0),
]


def test_importance_weights_match_reference():
  ts = [imp.importance_weights(level=lv, mode=md, upper=up, lower=lo,
                               normalize=nm, log_clamp=lc)
        for lv, md, up, lo, nm, lc in CASES]
  outs = jax.jit(lambda tr: [t.update(tr, (), Context())[::2] for t in ts])(
      make_traj())
  for case, (out, metrics) in zip(CASES, outs):
    want = np_weights(*case)
    np.testing.assert_allclose(out.extras["is_weights"], want, rtol=1e-5,
                               atol=1e-6, err_msg=str(case))
    if case[4]:
      np.testing.assert_allclose(metrics["is/mean"], 1.0, rtol=1e-5)


def test_importance_weights_hand_computed_and_special_cases():
  beh = np.zeros((2, 3), np.float32)
  old = np.log(np.array([[1.0, 3.0, 0.5], [1.0, 1.5, 2.0]], np.float32))
  traj = Trajectory.create(np.ones((2, 3), np.int32),
                           loss_mask=np.ones((2, 3), bool),
                           behaviour_logprobs=jnp.asarray(beh),
                           old_logprobs=jnp.asarray(old))
  out, m = run(imp.importance_weights(upper=2.0), traj)
  np.testing.assert_allclose(out.extras["is_weights"],
                             [[1, 2, 0.5], [1, 1.5, 2]], rtol=1e-6)
  np.testing.assert_allclose(m["is/frac_clipped"], 1 / 6)
  out, _ = run(imp.importance_weights(level="sequence", upper=None), traj)
  np.testing.assert_allclose(out.extras["is_weights"],
                             [[1.5] * 3, [3.0] * 3], rtol=1e-5)
  out, m = run(imp.importance_weights(level="sequence", mode="mask",
                                      upper=2.0), traj)
  np.testing.assert_allclose(out.extras["is_weights"], [[1.5] * 3, [0.0] * 3],
                             rtol=1e-5)
  np.testing.assert_allclose(m["is/frac_clipped"], 0.5)
  # on-policy (old == behaviour): every weight is exactly 1 on loss tokens
  same = traj.replace(old_logprobs=traj.behaviour_logprobs)
  out, _ = run(imp.importance_weights(level="sequence", mode="mask",
                                      upper=3.0), same)
  np.testing.assert_array_equal(out.extras["is_weights"], np.ones((2, 3)))
  with pytest.raises(ValueError):
    imp.importance_weights(level="tokens")


def test_weights_carry_no_gradient():
  def loss(old):
    traj = make_traj().replace(old_logprobs=old)
    out, _, _ = imp.importance_weights().update(traj, (), Context())
    return jnp.sum(out.extras["is_weights"])

  g = jax.jit(jax.grad(loss))(jnp.asarray(OLD))
  np.testing.assert_array_equal(g, 0.0)


def _scorer(params, traj):
  lp = -params["scale"] * (traj.tokens.astype(jnp.float32) + 1.0)
  return ModelOutputs(logprobs=lp, entropy=-lp)


def test_old_logprobs_scoring_and_on_policy():
  traj = make_traj().replace(old_logprobs=None)
  ctx = Context(params={"policy": {"scale": jnp.float32(0.5)}},
                scorers=(("policy", _scorer),))
  out, m = run(imp.old_logprobs(entropy_key="entropy"), traj, ctx)
  np.testing.assert_allclose(out.old_logprobs, np.full((4, 7), -1.0))
  np.testing.assert_allclose(out.extras["entropy"], np.full((4, 7), 1.0))
  np.testing.assert_allclose(m["old_logprobs/mean"], -1.0)
  out, _ = run(imp.old_logprobs(on_policy=True), traj, ctx)
  np.testing.assert_array_equal(out.old_logprobs, BEH)
  with pytest.raises(ValueError):
    imp.old_logprobs(on_policy=True, entropy_key="entropy")


def test_importance_jit_matches_eager():
  t = imp.importance_weights(level="sequence", mode="truncate", upper=2.0,
                             normalize=True)
  e_out, _, e_m = t.update(make_traj(), (), Context())
  j_out, _, j_m = jax.jit(t.update)(make_traj(), (), Context())
  np.testing.assert_allclose(e_out.extras["is_weights"],
                             j_out.extras["is_weights"], rtol=1e-6)
  np.testing.assert_allclose(e_m["is/frac_clipped"], j_m["is/frac_clipped"])
