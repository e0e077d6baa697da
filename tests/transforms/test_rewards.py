"""Tests for jaxsi.transforms.rewards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import rewards as rw
from jaxsi.transforms.base import Context, chain

CTX = Context()


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)


def make_traj(rewards=None, *, lengths=(3, 4, 6), t=8, **kw):
  b = len(lengths)
  m = np.zeros((b, t), bool)
  for i, n in enumerate(lengths):
    m[i, 2:2 + n] = True
  if rewards is not None:
    kw["rewards"] = jnp.asarray(np.asarray(rewards, np.float32).reshape(b, -1))
  return Trajectory.create(np.ones((b, t), np.int32), loss_mask=m, **kw)


def run(transform, traj, state=None):
  state = transform.init() if state is None else state
  return jax.jit(transform.update)(traj, state, CTX)


def test_compose_rewards():
  r = [[1.0, 2.0], [np.nan, 1.0], [np.nan, np.nan]]
  out, _, m = run(rw.compose_rewards(weights=[0.5, 2.0]), make_traj(r))
  got = np.asarray(out.rewards)
  assert got.shape == (3, 1)
  np.testing.assert_allclose(got[:2, 0], [4.5, 2.0])
  assert np.isnan(got[2, 0])  # unscorable stays NaN
  np.testing.assert_allclose(m["reward/mean"], 3.25)
  np.testing.assert_allclose(m["reward/component_1/mean"], 1.5)
  out, _, _ = run(rw.compose_rewards(weights=[0.5, 2.0], keep_components=True),
                  make_traj(r))
  np.testing.assert_allclose(np.asarray(out.rewards)[0], [0.5, 4.0])
  with pytest.raises(ValueError):
    rw.compose_rewards(weights=[1.0]).update(make_traj(r), (), CTX)


def test_shape_turn_rewards_and_progress_bonus():
  r = np.array([[0, 1], [1, 1], [1, 0]], np.float32)
  out, _, _ = run(rw.progress_bonus(alpha=2.0), make_traj(r))
  # r1 + r2 + α(r2 − r1)
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], [3.0, 2.0, -1.0])
  t = rw.shape_turn_rewards(lambda a, b: (a * b, a - b))
  out, _, _ = run(t, make_traj(r))
  np.testing.assert_allclose(out.rewards, [[0, -1], [1, 0], [0, 1]])
  out, _, _ = run(rw.shape_turn_rewards(lambda b: 10 * b, columns=[1]),
                  make_traj(r))
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], [10, 10, 0])


def test_overlong_penalty_in_tokens():
  # L_max = 6, L_buf = 2: no penalty up to 4 tokens, −factor at 6 tokens.
  t = rw.overlong_penalty(max_length=6, buffer_length=2, penalty_factor=0.5)
  traj = make_traj([1.0, 1.0, 1.0], lengths=(4, 5, 6))
  out, _, m = run(t, traj)
  want = [1.0, 1.0 - 0.5 * 0.5, 1.0 - 0.5 * 1.0]
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], want, rtol=1e-6)
  np.testing.assert_allclose(m["overlong/frac_penalized"], 2 / 3)
  # verl DAPORewardManager formula, computed independently
  for i, n in enumerate((4, 5, 6)):
    expected_len = 6 - 2
    exceed = n - expected_len
    pen = min(-exceed / 2 * 0.5, 0)
    assert np.asarray(out.rewards)[i, 0] == pytest.approx(1.0 + pen)
  with pytest.raises(ValueError):  # K = 2 needs column=
    t.update(make_traj(np.ones((3, 2))), (), CTX)
  out, _, _ = run(rw.overlong_penalty(max_length=6, buffer_length=2, column=1),
                  make_traj(np.ones((3, 2)), lengths=(4, 5, 6)))
  np.testing.assert_allclose(out.rewards, [[1, 1], [1, 0.5], [1, 0]])
  with pytest.raises(ValueError):
    rw.overlong_penalty(max_length=6, buffer_length=0)


def test_score_at_eos():
  traj = make_traj([[1.0, 1.0], [np.nan, np.nan], [-2.0, 0.0]], lengths=(3, 1, 6))
  out, _, _ = run(rw.score_at_eos(reward_weights=[1.0, 0.5]), traj)
  want = np.zeros((3, 8), np.float32)
  want[0, 4] = 1.5
  want[2, 7] = -2.0
  np.testing.assert_allclose(out.token_rewards, want)
  # accumulate onto existing dense rewards
  traj2 = traj.replace(token_rewards=jnp.ones((3, 8)))
  out2, _, _ = run(rw.score_at_eos(reward_weights=[1.0, 0.5]), traj2)
  np.testing.assert_allclose(out2.token_rewards, want + 1.0)
  out3, _, _ = run(rw.score_at_eos(reward_weights=[1.0, 0.5],
                                   accumulate=False), traj2)
  np.testing.assert_allclose(out3.token_rewards, want)


def np_verl_kl(lp, ref, name):
  """verl core_algos.kl_penalty, transcribed."""
  if name == "k1":
    return lp - ref
  if name == "abs":
    return np.abs(lp - ref)
  if name == "k2":
    return 0.5 * (lp - ref) ** 2
  kl = np.clip(ref - lp, -20, 20)
  return np.clip(np.exp(kl) - kl - 1, -10, 10)


@pytest.mark.parametrize("name", ["k1", "abs", "k2", "k3"])
def test_kl_estimates_match_verl(name):
  rng = np.random.RandomState(0)
  lp = rng.randn(50).astype(np.float32)
  ref = rng.randn(50).astype(np.float32)
  lp[0], ref[0] = -30.0, 0.0  # exercises the k3 clamps
  got = rw.kl_estimate(jnp.asarray(lp), jnp.asarray(ref), name)
  np.testing.assert_allclose(got, np_verl_kl(lp, ref, name), rtol=1e-5,
                             atol=1e-6)
  if name == "k3":
    raw = rw.kl_estimate(jnp.asarray(lp), jnp.asarray(ref), name, clamp=False)
    x = ref[1:] - lp[1:]
    np.testing.assert_allclose(np.asarray(raw)[1:], np.exp(x) - x - 1,
                               rtol=1e-5, atol=1e-6)


def _kl_traj(rewards=None):
  rng = np.random.RandomState(1)
  old = rng.randn(3, 8).astype(np.float32)
  ref = rng.randn(3, 8).astype(np.float32)
  return make_traj(rewards, old_logprobs=jnp.asarray(old),
                   ref_logprobs=jnp.asarray(ref)), old, ref


def test_kl_in_reward_token_mode_matches_verl_apply_kl_penalty():
  traj, old, ref = _kl_traj([1.0, 0.0, 2.0])
  m = np.asarray(traj.loss_mask, np.float32)
  t = chain(rw.score_at_eos(), rw.kl_in_reward(beta=0.1, estimator="k3"))
  out, state, metrics = run(t, traj)
  scores = np.asarray(run(rw.score_at_eos(), traj)[0].token_rewards)
  kld = np_verl_kl(old, ref, "k3") * m
  np.testing.assert_allclose(out.token_rewards, scores - 0.1 * kld, rtol=1e-5,
                             atol=1e-6)
  cur = np.mean((kld * m).sum(1) / m.sum(1))
  np.testing.assert_allclose(metrics["kl/mean"], cur, rtol=1e-5)
  np.testing.assert_allclose(state[1].beta, 0.1)  # fixed controller


def test_kl_in_reward_sequence_mode_matches_trl_rloo():
  traj, old, ref = _kl_traj([1.0, 0.0, 2.0])
  m = np.asarray(traj.loss_mask, np.float32)
  out, _, _ = run(rw.kl_in_reward(beta=0.05, mode="sequence"), traj)
  want = np.array([1.0, 0.0, 2.0]) - 0.05 * ((old - ref) * m).sum(1)
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], want, rtol=1e-5)
  assert out.token_rewards is None


def test_adaptive_kl_controller():
  traj, old, ref = _kl_traj([1.0, 0.0, 2.0])
  m = np.asarray(traj.loss_mask, np.float32)
  t = rw.kl_in_reward(beta=0.2, adaptive=True, target_kl=0.05, horizon=100.0)
  out, state, metrics = run(t, traj)
  kl = np.mean(((old - ref) * m).sum(1) / m.sum(1))
  err = np.clip(kl / 0.05 - 1, -0.2, 0.2)
  beta1 = 0.2 * (1 + err * 3 / 100.0)
  np.testing.assert_allclose(metrics["kl/beta"], 0.2)  # β used this step
  np.testing.assert_allclose(state.beta, beta1, rtol=1e-6)
  out2, state2, metrics2 = run(t, traj, state)
  np.testing.assert_allclose(metrics2["kl/beta"], beta1, rtol=1e-6)
  # the penalty of the second call uses the updated β
  np.testing.assert_allclose(
      out2.token_rewards, -beta1 * (old - ref) * m, rtol=1e-5, atol=1e-7)
  # hand check of the update rule: KL = 2·target is clipped to +0.2
  got = rw.adaptive_kl_update(jnp.float32(1.0), jnp.float32(0.2), target=0.1,
                              horizon=10.0, n_steps=5)
  np.testing.assert_allclose(got, 1.1, rtol=1e-6)
  with pytest.raises(ValueError):
    rw.kl_in_reward(estimator="k4")


def test_kl_in_reward_jit_matches_eager():
  traj, _, _ = _kl_traj([1.0, 0.0, 2.0])
  t = chain(rw.overlong_penalty(max_length=5, buffer_length=2),
            rw.kl_in_reward(beta=0.3, adaptive=True, estimator="k2"))
  e_out, e_state, e_m = t.update(traj, t.init(), CTX)
  j_out, j_state, j_m = jax.jit(t.update)(traj, t.init(), CTX)
  np.testing.assert_allclose(e_out.token_rewards, j_out.token_rewards,
                             rtol=1e-6)
  np.testing.assert_allclose(e_out.rewards, j_out.rewards, rtol=1e-6)
  np.testing.assert_allclose(e_state[1].beta, j_state[1].beta, rtol=1e-6)
  np.testing.assert_allclose(e_m["kl/mean"], j_m["kl/mean"], rtol=1e-6)
