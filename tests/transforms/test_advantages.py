"""Tests for jaxsi.transforms.advantages against hand numbers and numpy ports."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import advantages as adv_lib
from jaxsi.transforms import gae as gae_lib
from jaxsi.transforms.base import Context

CTX = Context()


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)


def make_traj(rewards, group_ids, *, t=6, loss_mask=None, valid=None, **kw):
  rewards = np.asarray(rewards, np.float32)
  if rewards.ndim == 1:
    rewards = rewards[:, None]
  b = rewards.shape[0]
  if loss_mask is None:
    loss_mask = np.zeros((b, t), bool)
    loss_mask[:, 2:] = True
  return Trajectory.create(np.ones((b, loss_mask.shape[1]), np.int32),
                           loss_mask=loss_mask, group_ids=group_ids,
                           valid=valid, rewards=jnp.asarray(rewards), **kw)


def run(transform, traj):
  """Runs the transform under jit (one compile; eager is checked separately)."""
  out, _, metrics = jax.jit(transform.update)(traj, transform.init(), CTX)
  return out, metrics


def run_many(transforms, traj):
  """Runs several transforms on one trajectory inside ONE jit (one compile)."""
  def f(tr):
    return [t.update(tr, t.init(), CTX)[::2] for t in transforms]
  return jax.jit(f)(traj)


def seq_adv(traj_out):
  """Per-sample advantage read at the last loss token."""
  a = np.asarray(traj_out.advantages)
  m = np.asarray(traj_out.loss_mask)
  last = np.where(m.any(1), m.shape[1] - 1 - np.argmax(m[:, ::-1], 1), 0)
  return a[np.arange(a.shape[0]), last]


# ------------------------------------------------ numpy references
def np_trl_grpo(rewards, gids, w, scale, eps=1e-4):
  """TRL _generate_and_score_completions, sum_then_normalize (loop form)."""
  rewards = np.asarray(rewards, np.float64)
  allnan = np.all(np.isnan(rewards), 1)
  r = np.nansum(rewards * w, 1)
  r[allnan] = np.nan
  adv = np.zeros_like(r)
  all_std = np.nanstd(r, ddof=1)
  for g in np.unique(gids):
    idx = np.where(gids == g)[0]
    vals = r[idx]
    mu = np.nanmean(vals)
    cnt = np.sum(~np.isnan(vals))
    sd = np.nanstd(vals, ddof=1) if cnt > 1 else np.nan
    a = vals - mu
    if scale == "group":
      a = a / (sd + eps)
    elif scale == "batch":
      a = a / (all_std + eps)
    adv[idx] = a
  return np.nan_to_num(adv, nan=0.0)


def np_verl_grpo(scores, gids, eps=1e-6, norm=True):
  """verl compute_grpo_outcome_advantage (loop form)."""
  out = np.zeros_like(scores, dtype=np.float64)
  for g in np.unique(gids):
    idx = np.where(gids == g)[0]
    s = scores[idx].astype(np.float64)
    if len(idx) == 1:
      mu, sd = 0.0, 1.0
    else:
      mu, sd = s.mean(), s.std(ddof=1)
    out[idx] = (s - mu) / (sd + eps) if norm else s - mu
  return out


def np_masked_whiten(x, m):
  x = x.astype(np.float64)
  m = m.astype(np.float64)
  mean = (x * m).sum() / (m.sum() + 1e-8)
  var = (((x - mean) ** 2) * m).sum() / (m.sum() + 1e-8)
  var = var * m.sum() / (m.sum() - 1)
  return (x - mean) / np.sqrt(var + 1e-8)


def np_verl_gae(r, v, m, gamma, lam):
  b, t = r.shape
  nextv = np.zeros(b)
  last = np.zeros(b)
  out = []
  for i in reversed(range(t)):
    delta = r[:, i] + gamma * nextv - v[:, i]
    g = delta + gamma * lam * last
    nextv = v[:, i] * m[:, i] + (1 - m[:, i]) * nextv
    last = g * m[:, i] + (1 - m[:, i]) * last
    out.append(last)
  a = np.stack(out[::-1], 1)
  return a, a + v


RNG = np.random.RandomState(0)
GIDS = np.array([3, 3, 3, 3, 0, 0, 0, 5, 5, 7, 9, 9])  # unequal, one singleton
R2 = RNG.randint(0, 3, size=(12, 2)).astype(np.float32) + RNG.rand(12, 2).astype(
    np.float32) * (RNG.rand(12, 2) < 0.5)
R2[8] = np.nan             # unscorable row (both components failed)
R2[2, 1] = np.nan          # one failed component: nansum of the rest
R2[10] = R2[11]            # a zero-std pair


# ------------------------------------------------ group advantages
def test_group_advantages_hand_computed():
  traj = make_traj([1, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 4, 4, 4, 4])
  out, metrics = run(adv_lib.group_advantages(), traj)
  # μ = 0.25, unbiased σ = sqrt((0.75² + 3·0.25²)/3) = 0.5
  want = [0.75 / 0.5001] + [-0.25 / 0.5001] * 3 + [0.0] * 4
  np.testing.assert_allclose(seq_adv(out), want, rtol=1e-6)
  # broadcast over loss tokens only
  np.testing.assert_allclose(out.advantages[0], [0, 0] + [0.75 / 0.5001] * 4,
                             rtol=1e-6)
  np.testing.assert_allclose(metrics["frac_zero_std_groups"], 0.5)
  np.testing.assert_allclose(metrics["reward/mean"], 5 / 8)


def test_group_advantages_match_trl():
  w = np.array([1.0, 0.5], np.float32)
  scales = ["group", "batch", "none"]
  outs = run_many([adv_lib.group_advantages(scale=s, reward_weights=w)
                   for s in scales], make_traj(R2, GIDS))
  for scale, (out, metrics) in zip(scales, outs):
    want = np_trl_grpo(R2, GIDS, w, scale)
    np.testing.assert_allclose(seq_adv(out), want, rtol=1e-5, atol=1e-6)
    assert seq_adv(out)[8] == 0.0  # unscorable → 0
    np.testing.assert_allclose(metrics["reward/frac_unscorable"], 1 / 12)


def test_group_advantages_match_verl_presets():
  scores = RNG.rand(12).astype(np.float32)
  traj = make_traj(scores, GIDS)
  (out, _), (out2, _), (out_trl, _) = run_many(
      [adv_lib.verl_group_advantages(),
       adv_lib.verl_group_advantages(norm_adv_by_std_in_grpo=False),
       adv_lib.trl_group_advantages()], traj)
  np.testing.assert_allclose(seq_adv(out), np_verl_grpo(scores, GIDS),
                             rtol=1e-5, atol=1e-6)
  out = out2
  np.testing.assert_allclose(seq_adv(out),
                             np_verl_grpo(scores, GIDS, norm=False), atol=1e-6)
  # singleton: verl gives the raw score / (1 + eps), TRL gives 0.
  assert seq_adv(out)[9] == pytest.approx(scores[9])
  assert seq_adv(out_trl)[9] == 0.0


def test_biased_std_and_eps():
  traj = make_traj([2.0, 0.0], [0, 0])
  (out, _), (out2, _) = run_many(
      [adv_lib.group_advantages(std="biased", eps=0.0),
       adv_lib.group_advantages(eps=0.0)], traj)
  np.testing.assert_allclose(seq_adv(out), [1.0, -1.0], rtol=1e-6)
  out = out2  # unbiased σ = √2
  np.testing.assert_allclose(seq_adv(out), [1 / np.sqrt(2), -1 / np.sqrt(2)],
                             rtol=1e-6)


def test_dr_grpo_is_grpo_without_std():
  traj = make_traj(R2, GIDS)
  (o1, _), (o2, _) = run_many([adv_lib.group_advantages(scale="none"),
                               adv_lib.group_advantages(eps=0.0)], traj)
  a_none, a_grp = seq_adv(o1), seq_adv(o2)
  scores = np.nansum(R2, 1)
  scores[np.all(np.isnan(R2), 1)] = np.nan
  ok = np.isfinite(scores)
  sd = np.zeros(12)
  for g in np.unique(GIDS):
    idx = (GIDS == g) & ok
    sd[idx] = np.std(scores[idx], ddof=1) if idx.sum() > 1 else 0.0
  sel = ok & (sd > 0)
  np.testing.assert_allclose(a_grp[sel] * sd[sel], a_none[sel], rtol=1e-5)


def test_invalid_samples_are_dropped_from_statistics():
  scores = RNG.rand(8).astype(np.float32)
  gids = np.array([0, 0, 0, 0, 4, 4, 4, 4])
  valid = np.array([1, 1, 0, 1, 1, 1, 1, 0], bool)
  out, _ = run(adv_lib.group_advantages(), make_traj(scores, gids, valid=valid))
  keep = np.where(valid)[0]
  ref, _ = run(adv_lib.group_advantages(), make_traj(scores[keep], gids[keep]))
  np.testing.assert_allclose(seq_adv(out)[keep], seq_adv(ref), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.advantages)[~valid], 0.0)


def test_normalize_then_sum_matches_trl_gdpo():
  w = np.array([2.0, 1.0], np.float32)
  eps = 1e-4
  r = RNG.rand(12, 2).astype(np.float32)
  gids = np.repeat(np.arange(3), 4)
  (out, _), (plain, _) = run_many(
      [adv_lib.group_advantages(aggregation="normalize_then_sum",
                                reward_weights=w),
       adv_lib.group_advantages(reward_weights=w)], make_traj(r, gids))
  comp = np.zeros_like(r, np.float64)
  for g in range(3):
    blk = r[gids == g].astype(np.float64)
    comp[gids == g] = (blk - blk.mean(0)) / (blk.std(0, ddof=1) + eps)
  summed = (comp * w).sum(1)
  want = (summed - summed.mean()) / (summed.std(ddof=1) + eps)
  np.testing.assert_allclose(seq_adv(out), want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(seq_adv(out), seq_adv(plain))


def test_group_advantages_jit_matches_eager():
  t = adv_lib.group_advantages(scale="batch", reward_weights=[1.0, 0.5])
  traj = make_traj(R2, GIDS)
  eager, _, m1 = t.update(traj, t.init(), CTX)
  jitted, _, m2 = jax.jit(t.update)(traj, t.init(), CTX)
  np.testing.assert_allclose(eager.advantages, jitted.advantages, rtol=1e-6)
  np.testing.assert_allclose(m1["reward/std"], m2["reward/std"], rtol=1e-6)


def test_bad_choice_raises():
  with pytest.raises(ValueError):
    adv_lib.group_advantages(scale="groups")
  with pytest.raises(ValueError):
    adv_lib.group_advantages(singleton="none")


# ------------------------------------------------ RLOO
def test_rloo_hand_and_loop():
  out, _ = run(adv_lib.rloo_advantages(), make_traj([1, 0, 0, 2], [0, 0, 0, 0]))
  # baselines: (0+0+2)/3, (1+0+2)/3, (1+0+2)/3, (1+0+0)/3
  np.testing.assert_allclose(seq_adv(out), [1 / 3, -1, -1, 5 / 3], rtol=1e-6)
  scores = RNG.rand(12).astype(np.float32)
  scores[4] = np.nan
  traj = make_traj(scores, GIDS)
  (o1, _), (o2, _), (o3, _) = run_many(
      [adv_lib.rloo_advantages(), adv_lib.rloo_advantages(singleton="raw"),
       adv_lib.rloo_advantages(normalize=True)], traj)
  got = seq_adv(o1)
  want = np.zeros(12)
  for i in range(12):
    if np.isnan(scores[i]):
      continue
    others = [j for j in range(12) if GIDS[j] == GIDS[i] and j != i
              and not np.isnan(scores[j])]
    want[i] = scores[i] - np.mean(scores[others]) if others else 0.0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # singleton 'raw' (verl loop version): A = R
  got_raw = seq_adv(o2)
  assert got_raw[9] == pytest.approx(scores[9])
  # normalize: TRL batch normalisation over scorable samples
  got_n = seq_adv(o3)
  ok = ~np.isnan(scores)
  want_n = (want[ok] - want[ok].mean()) / (want[ok].std(ddof=1) + 1e-4)
  np.testing.assert_allclose(got_n[ok], want_n, rtol=1e-5, atol=1e-6)
  assert got_n[4] == 0.0


def test_rloo_equals_scaled_dr_grpo():
  scores = RNG.rand(8).astype(np.float32)
  traj = make_traj(scores, np.repeat([0, 4], 4))
  (o1, _), (o2, _) = run_many([adv_lib.rloo_advantages(),
                               adv_lib.group_advantages(scale="none")], traj)
  a, b = seq_adv(o1), seq_adv(o2)
  np.testing.assert_allclose(a, b * 4 / 3, rtol=1e-5)


# ------------------------------------------------ pass@k
def test_verl_passk():
  traj = make_traj([0.2, 0.9, 0.5, 0.9, 0.1, 0.7], [0, 0, 0, 0, 4, 4])
  (out, _), (out2, _) = run_many(
      [adv_lib.grpo_passk_advantages(),
       adv_lib.grpo_passk_advantages(norm_adv_by_std=False)], traj)
  a = seq_adv(out)
  # group 0: tie at the top (0.9, 0.9) → all 0; group 4: (0.7 − 0.1)/(σ + eps)
  sd = np.std([0.1, 0.7], ddof=1)
  np.testing.assert_allclose(a, [0, 0, 0, 0, 0, 0.6 / (sd + 1e-6)], rtol=1e-5)
  np.testing.assert_allclose(seq_adv(out2), [0, 0, 0, 0, 0, 0.6], rtol=1e-5)


def test_passk_analytic_matches_subset_enumeration():
  r = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0], np.float32)
  gids = np.repeat([0, 6], 6)
  ks = (1, 2, 3)
  outs = run_many([adv_lib.passk_analytic_advantages(k=k, eps=0.0) for k in ks]
                  + [adv_lib.group_advantages(std="biased", eps=0.0)],
                  make_traj(r, gids))
  for k, (out, _) in zip(ks, outs):
    got = seq_adv(out)
    for g in (0, 6):
      idx = np.where(gids == g)[0]
      subsets = list(itertools.combinations(idx, k))
      grp = np.array([max(r[list(s)]) for s in subsets])
      mu, sd = grp.mean(), grp.std()
      for i in idx:
        vals = [(grp[j] - mu) / sd for j, s in enumerate(subsets) if i in s]
        np.testing.assert_allclose(got[i], np.mean(vals), rtol=1e-4, atol=1e-5)
  # pass@1 = GRPO with the biased std
  np.testing.assert_allclose(seq_adv(outs[0][0]), seq_adv(outs[-1][0]),
                             rtol=1e-4, atol=1e-5)


# ------------------------------------------------ token-level estimators
def _token_case(seed=1, b=4, t=7):
  rng = np.random.RandomState(seed)
  m = np.zeros((b, t), bool)
  m[0, 2:] = True
  m[1, 2:5] = True
  m[2, [2, 3, 5, 6]] = True   # multi-turn: token 4 is an observation token
  m[3, 1:6] = True
  r = (rng.randn(b, t) * m).astype(np.float32)
  v = rng.randn(b, t).astype(np.float32)
  return m, r, v


def test_gae_matches_verl_loop():
  m, r, v = _token_case()
  traj = Trajectory.create(np.ones(m.shape, np.int32), loss_mask=m,
                           token_rewards=jnp.asarray(r), values=jnp.asarray(v))
  params = [(1.0, 1.0), (0.9, 0.7)]
  outs = run_many([gae_lib.gae_advantages(gamma=g, lam=l) for g, l in params],
                  traj)
  for (gamma, lam), (out, _) in zip(params, outs):
    _check_gae(out, m, r, v, gamma, lam)


def _check_gae(out, m, r, v, gamma, lam):
  a_raw, ret = np_verl_gae(r.astype(np.float64), v.astype(np.float64),
                           m.astype(np.float64), gamma, lam)
  a = np_masked_whiten(a_raw, m)
  np.testing.assert_allclose(np.asarray(out.advantages)[m], a[m], rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.returns)[m], ret[m], rtol=1e-5,
                             atol=1e-5)
  assert np.all(np.asarray(out.advantages)[~m] == 0)


def test_gae_skips_observation_tokens_and_special_cases():
  m, r, v = _token_case()
  gae = jax.jit(gae_lib.gae, static_argnames=("gamma", "lam"))
  a1, r1 = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m),
               gamma=0.95, lam=0.9)
  v2, r_obs = v.copy(), r.copy()
  v2[~m] += 100.0    # values at observation / padding tokens
  r_obs[~m] += 7.0   # rewards at observation tokens are ignored too
  a2, ret2 = gae(jnp.asarray(r_obs), jnp.asarray(v2), jnp.asarray(m),
                         gamma=0.95, lam=0.9)
  np.testing.assert_array_equal(np.asarray(a1)[m], np.asarray(a2)[m])
  np.testing.assert_array_equal(np.asarray(r1)[m], np.asarray(ret2)[m])
  # γ = λ = 1, V = 0: A = reverse cumulative sum of rewards over loss tokens.
  a3, _ = gae(jnp.asarray(r), jnp.zeros_like(r), jnp.asarray(m),
                      gamma=1.0, lam=1.0)
  want = np.flip(np.cumsum(np.flip(r * m, 1), 1), 1)
  np.testing.assert_allclose(np.asarray(a3)[m], want[m], rtol=1e-5, atol=1e-6)
  # λ = 0: one-step TD error on a single-turn row.
  a4, _ = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m),
                      gamma=0.5, lam=0.0)
  td = r[0, 2:] + 0.5 * np.append(v[0, 3:], 0.0) - v[0, 2:]
  np.testing.assert_allclose(np.asarray(a4)[0, 2:], td, rtol=1e-5, atol=1e-6)


def test_gae_jit_and_score_at_eos():
  m = np.zeros((2, 5), bool)
  m[:, 1:4] = True
  traj = Trajectory.create(np.ones((2, 5), np.int32), loss_mask=m,
                           rewards=jnp.asarray([[1.0], [0.0]]),
                           values=jnp.zeros((2, 5)))
  t = gae_lib.gae_advantages(whiten=False)
  out, _, _ = jax.jit(t.update)(traj, t.init(), CTX)
  np.testing.assert_allclose(out.advantages, [[0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
  np.testing.assert_allclose(out.returns, out.advantages)


def test_masked_whiten_matches_verl():
  x = RNG.randn(3, 5).astype(np.float32)
  m = RNG.rand(3, 5) < 0.6
  whiten = jax.jit(adv_lib.masked_whiten, static_argnames="shift_mean")
  got = whiten(jnp.asarray(x), jnp.asarray(m))
  np.testing.assert_allclose(np.asarray(got)[m], np_masked_whiten(x, m)[m],
                             rtol=1e-5)
  got = whiten(jnp.asarray(x), jnp.asarray(m), shift_mean=False)
  mean = x[m].mean()
  np.testing.assert_allclose(np.asarray(got)[m],
                             np_masked_whiten(x, m)[m] + mean, rtol=1e-5)


def test_reinforce_pp_matches_verl():
  m, r, _ = _token_case(seed=3)
  traj = Trajectory.create(np.ones(m.shape, np.int32), loss_mask=m,
                           token_rewards=jnp.asarray(r))
  out, _ = run(adv_lib.reinforce_pp_advantages(gamma=0.9), traj)
  g = np.zeros(m.shape[0])
  ret = np.zeros(m.shape)
  for t in reversed(range(m.shape[1])):  # carry through masked tokens
    g = np.where(m[:, t], r[:, t] + 0.9 * g, g)
    ret[:, t] = g
  np.testing.assert_allclose(np.asarray(out.returns)[m], ret[m], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.advantages)[m],
                             np_masked_whiten(ret, m)[m], rtol=1e-4, atol=1e-5)
  # single-turn rows agree with verl's Jan-2026 reset-after-EOS recursion
  g = np.zeros(m.shape[0])
  jan = np.zeros(m.shape)
  for t in reversed(range(m.shape[1])):
    g = r[:, t] + 0.9 * g
    jan[:, t] = g
    g = g * m[:, t]
  rows = [0, 1, 3]
  np.testing.assert_allclose(np.asarray(out.returns)[rows][m[rows]],
                             jan[rows][m[rows]], rtol=1e-5)


def test_reinforce_pp_baseline_matches_verl():
  scores = RNG.rand(12).astype(np.float32)
  traj = make_traj(scores, GIDS)
  out, _ = run(adv_lib.reinforce_pp_baseline_advantages(), traj)
  m = np.asarray(traj.loss_mask)
  centred = np.zeros(12)
  for g in np.unique(GIDS):
    idx = GIDS == g
    centred[idx] = scores[idx] - (scores[idx].mean() if idx.sum() > 1 else 0.0)
  want = np_masked_whiten(centred[:, None] * m, m) * m
  np.testing.assert_allclose(out.advantages, want, rtol=1e-4, atol=1e-5)


def test_remax():
  m, r, _ = _token_case(seed=5)
  base = np.array([0.5, -1.0, np.nan, 2.0], np.float32)
  traj = Trajectory.create(np.ones(m.shape, np.int32), loss_mask=m,
                           token_rewards=jnp.asarray(r),
                           extras={"baseline_reward": jnp.asarray(base)})
  out, _ = run(adv_lib.remax_advantages(), traj)
  ret = np.flip(np.cumsum(np.flip(r * m, 1), 1), 1) * m
  want = ret - np.nan_to_num(base)[:, None] * m
  want[2] = 0.0
  np.testing.assert_allclose(out.advantages, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.returns, ret, rtol=1e-5, atol=1e-6)
  with pytest.raises(KeyError):
    run(adv_lib.remax_advantages(baseline_key="missing"), traj)
