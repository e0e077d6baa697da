"""Tests for jaxsi.transforms.filters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import filters as fl
from jaxsi.transforms.base import Context

CTX = Context()


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)


def make_traj(rewards=None, group_ids=None, *, t=6, loss_mask=None, **kw):
  if rewards is not None:
    rewards = np.asarray(rewards, np.float32)
    kw["rewards"] = jnp.asarray(rewards.reshape(rewards.shape[0], -1))
    b = rewards.shape[0]
  else:
    b = loss_mask.shape[0]
  if loss_mask is None:
    loss_mask = np.zeros((b, t), bool)
    loss_mask[:, 2:] = True
  return Trajectory.create(np.ones((b, loss_mask.shape[1]), np.int32),
                           loss_mask=loss_mask, group_ids=group_ids, **kw)


def run(transform, traj):
  out, _, metrics = jax.jit(transform.update)(traj, transform.init(), CTX)
  return out, metrics


def test_drop_zero_variance_groups():
  # groups: 0 → {1,1,1} zero std; 3 → {0,1,0} kept; 6 → {1} singleton kept;
  # 7 → {0, 0, NaN}: NaN ignored, zero std → dropped; 10 → {2, 2(invalid), 5}.
  r = [1, 1, 1, 0, 1, 0, 1, 0, 0, np.nan, 2, 2, 5]
  g = [0, 0, 0, 3, 3, 3, 6, 7, 7, 7, 10, 10, 10]
  valid = np.ones(13, bool)
  valid[11] = False
  out, m = run(fl.drop_zero_variance_groups(), make_traj(r, g, valid=valid))
  want = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1], bool)
  np.testing.assert_array_equal(out.valid, want)
  # zero-std groups among {0,3,6,7,10}: 0, 6 (singleton), 7 → 3/5
  np.testing.assert_allclose(m["filter/frac_zero_std_groups"], 3 / 5)
  np.testing.assert_allclose(m["filter/frac_dropped"], 6 / 12)
  # verl filter_groups rule, computed independently with numpy
  scores = np.asarray(r, np.float64)
  for gid in set(g):
    idx = [i for i in range(13) if g[i] == gid and valid[i]
           and not np.isnan(scores[i])]
    keep = np.std(scores[idx]) > 0 or len(idx) == 1
    for i in idx:
      assert bool(out.valid[i]) == keep
  # atol treats near-equal rewards as equal
  out, _ = run(fl.drop_zero_variance_groups(atol=0.01),
               make_traj([1.0, 1.005, 0.0, 1.0], [0, 0, 2, 2]))
  np.testing.assert_array_equal(out.valid, [False, False, True, True])


def test_mask_truncated_completions():
  finished = jnp.asarray([True, False, True])
  traj = make_traj([1, 0, 1], extras={"finished": finished})
  out, m = run(fl.mask_truncated_completions(), traj)
  lm = np.asarray(traj.loss_mask).copy()
  lm[1] = False
  np.testing.assert_array_equal(out.loss_mask, lm)
  np.testing.assert_array_equal(out.valid, [True, True, True])
  np.testing.assert_allclose(m["filter/frac_truncated"], 1 / 3)
  out, _ = run(fl.mask_truncated_completions(invalidate=True), traj)
  np.testing.assert_array_equal(out.valid, [True, False, True])
  with pytest.raises(KeyError):
    fl.mask_truncated_completions().update(make_traj([1.0]), (), CTX)


def test_threshold_and_top_k():
  r = [0.5, 1.0, np.nan, 1.0, 0.2, 0.9, 0.9, 0.1]
  g = [0, 0, 0, 0, 4, 4, 4, 4]
  out, m = run(fl.threshold_filter(threshold=0.9), make_traj(r, g))
  np.testing.assert_array_equal(out.valid, [0, 1, 0, 1, 0, 1, 1, 0])
  np.testing.assert_allclose(m["filter/frac_kept"], 0.5)
  out, _ = run(fl.threshold_filter(threshold=0.9, inclusive=False),
               make_traj(r, g))
  np.testing.assert_array_equal(out.valid, [0, 1, 0, 1, 0, 0, 0, 0])
  # best-of-n: ties go to the lower index
  out, _ = run(fl.top_k_per_group(k=1), make_traj(r, g))
  np.testing.assert_array_equal(out.valid, [0, 1, 0, 0, 0, 1, 0, 0])
  out, _ = run(fl.top_k_per_group(k=2, largest=False), make_traj(r, g))
  np.testing.assert_array_equal(out.valid, [1, 1, 0, 0, 1, 0, 0, 1])
  # invalid samples are not eligible; small groups keep everything
  valid = np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)
  out, _ = run(fl.top_k_per_group(k=1), make_traj(r, g, valid=valid))
  np.testing.assert_array_equal(out.valid, [0, 0, 0, 1, 0, 1, 0, 0])
  out, _ = run(fl.top_k_per_group(k=5), make_traj(r, g))
  np.testing.assert_array_equal(out.valid, ~np.isnan(r))
  with pytest.raises(ValueError):
    fl.top_k_per_group(k=0)


def test_masked_quantile_matches_torch_quantile_rule():
  rng = np.random.RandomState(0)
  x = rng.randn(4, 9).astype(np.float32)
  m = rng.rand(4, 9) < 0.5
  q = jax.jit(fl.masked_quantile)  # q traced: one compile
  for qq in (0.0, 0.3, 0.8, 1.0):
    np.testing.assert_allclose(q(jnp.asarray(x), jnp.asarray(m), qq),
                               np.quantile(x[m], qq), rtol=1e-6)
  assert np.isinf(q(jnp.asarray(x), jnp.zeros((4, 9), bool), 0.5))
  # eager (no jit) gives the same numbers
  np.testing.assert_allclose(fl.masked_quantile(jnp.asarray(x), jnp.asarray(m),
                                                0.3), np.quantile(x[m], 0.3),
                             rtol=1e-6)


def test_high_entropy_mask_hand_computed():
  # TRL TestGetHighEntropyMask style: 2 rows, pad tokens excluded.
  ent = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                  [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]], np.float32)
  lm = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]], bool)
  traj = make_traj(loss_mask=lm, extras={"entropy": jnp.asarray(ent)})
  out, m = run(fl.high_entropy_token_mask(top_fraction=0.5), traj)
  # valid entropies {0.3,0.4,0.5,0.6,0.9,1.0}; median = 0.55
  want = np.array([[0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 0, 0]], bool)
  np.testing.assert_array_equal(out.loss_mask, want)
  np.testing.assert_allclose(m["filter/entropy_threshold"], 0.55, rtol=1e-6)
  np.testing.assert_allclose(m["filter/frac_tokens_kept"], 0.5)
  out, _ = run(fl.high_entropy_token_mask(top_fraction=1.0), traj)
  np.testing.assert_array_equal(out.loss_mask, lm)  # ρ = 1 keeps everything
  out, _ = run(fl.high_entropy_token_mask(top_fraction=0.5,
                                          extras_key="entropy_mask"), traj)
  np.testing.assert_array_equal(out.loss_mask, lm)
  np.testing.assert_array_equal(out.extras["entropy_mask"], want)
  # invalid samples do not enter the quantile
  out, m = run(fl.high_entropy_token_mask(top_fraction=0.5),
               traj.replace(valid=jnp.asarray([True, False])))
  np.testing.assert_allclose(m["filter/entropy_threshold"], 0.45, rtol=1e-6)


def test_high_entropy_mask_matches_trl_formula_random():
  rng = np.random.RandomState(1)
  ent = rng.rand(5, 7).astype(np.float32)
  lm = rng.rand(5, 7) < 0.7
  traj = make_traj(loss_mask=lm, extras={"entropy": jnp.asarray(ent)})
  out, _ = run(fl.high_entropy_token_mask(top_fraction=0.3), traj)
  thr = np.quantile(ent[lm], 0.7)          # torch.quantile, linear
  want = ((ent * lm) >= thr) & lm          # TRL get_high_entropy_mask
  np.testing.assert_array_equal(out.loss_mask, want)


def test_off_policy_sequence_mask_matches_trl():
  rng = np.random.RandomState(2)
  lm = np.zeros((4, 6), bool)
  lm[:, 2:] = True
  lm[3, 4:] = False
  samp = rng.randn(4, 6).astype(np.float32)
  lp = samp - np.array([0.5, 0.5, 0.0, 2.0])[:, None].astype(np.float32)
  adv = np.array([1.0, -1.0, -1.0, -1.0], np.float32)[:, None] * lm
  traj = make_traj(loss_mask=lm, behaviour_logprobs=jnp.asarray(samp),
                   old_logprobs=jnp.asarray(lp), advantages=jnp.asarray(adv))
  out, m = run(fl.off_policy_sequence_mask(threshold=0.4), traj)
  # TRL get_off_policy_mask transcribed
  kl = ((samp - lp) * lm).sum(1) / np.maximum(lm.sum(1), 1)
  want = (adv.sum(1) >= 0) | (kl <= 0.4)
  np.testing.assert_array_equal(out.valid, want)
  np.testing.assert_array_equal(want, [True, False, True, False])
  np.testing.assert_allclose(m["filter/frac_off_policy_masked"], 0.5)
  out, _ = run(fl.off_policy_sequence_mask(threshold=0.4, extras_key="opsm"),
               traj)
  np.testing.assert_array_equal(out.valid, [True] * 4)
  np.testing.assert_array_equal(out.extras["opsm"], want)


def test_distinct_per_group():
  """Hand case: rows 0,1,2 in group 0 with completions 56, 56, 57; rows 3,4,5
  in group 3 with 99 (invalid), 99, 56 → row 1 repeats row 0 and is dropped;
  row 4 stays (the earlier 99 is invalid), row 5 stays (other group). The
  prompt columns differ between groups and are not compared."""
  comp = [[5, 6], [5, 6], [5, 7], [9, 9], [9, 9], [5, 6]]
  tokens = jnp.asarray([[1, 3] + c for c in comp[:3]] + [[1, 4] + c for c in comp[3:]],
                       jnp.int32)
  traj = Trajectory.create(tokens, loss_mask=jnp.asarray([[0, 0, 1, 1]] * 6, bool)).replace(
      group_ids=jnp.asarray([0, 0, 0, 3, 3, 3], jnp.int32),
      valid=jnp.asarray([1, 1, 1, 0, 1, 1], bool))
  f = fl.distinct_per_group()
  out, _, m = f.update(traj, f.init(), Context())
  assert np.asarray(out.valid).tolist() == [True, False, True, False, True, True]
  assert float(m["filter/frac_kept"]) == pytest.approx(4 / 5)
  jitted, _, _ = jax.jit(lambda t: f.update(t, f.init(), Context()))(traj)
  np.testing.assert_array_equal(jitted.valid, out.valid)
  # A token outside the loss mask does not make two completions distinct.
  same = traj.replace(tokens=traj.tokens.at[1, 0].set(7))
  out2, _, _ = f.update(same, f.init(), Context())
  np.testing.assert_array_equal(out2.valid, out.valid)


def test_mask_stop_token_clears_the_last_loss_token_of_finished_rows():
  from jaxsi.transforms import filters as filters_lib
  loss = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  traj = Trajectory.create(np.ones((3, 5), np.int32), loss_mask=loss,
                           extras={"finished": np.array([True, False, True])})
  out, _, m = filters_lib.mask_stop_token().update(traj, (), None)
  # Row 0 finished: its stop token (column 3) leaves the loss; row 1 was
  # truncated (no stop token) and row 2 has no loss token: unchanged.
  np.testing.assert_array_equal(out.loss_mask, [[0, 1, 1, 0, 0], [0, 1, 1, 1, 1],
                                                [0, 0, 0, 0, 0]])
  np.testing.assert_allclose(m["filter/stop_tokens_masked"], 1 / 3, rtol=1e-6)
  with pytest.raises(KeyError, match="nope"):
    filters_lib.mask_stop_token(finished_key="nope").update(traj, (), None)
