"""Each method's factory builds, runs one RL step, and its loss matches a reference.

For every method one ``RLTrainer.step`` runs on the tiny set-up of
``rl_fixtures`` (rollout → rewards → jitted transforms → jitted update). The
loss the update reports for its first optimizer step (``loss_first``, at the
rollout params) is recomputed independently: in numpy from the paper formula
(GRPO, Dr.GRPO, DAPO, RLOO, GSPO, CISPO, NFT, KDRL) or, for the methods with
sequential/structural pieces (REINFORCE++, PPO, D³S, Guide), with the
library's transforms and terms applied by hand to the rollout batch.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.methods import base as base_lib
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.training import loop
from jaxsi.trajectory import select
from tests.methods import rl_fixtures as fx

COMMON = dict(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
              reward_fns=(fx.first_is_digit,))


def run_one(method, *, reference_params=None, teacher=None, seed=0):
  tok, model, params, tasks, opt = fx.setup()
  roles = {}
  if reference_params is not None:
    roles["reference"] = reference_params
  if teacher is not None:
    roles["teacher"] = teacher
  trainer = loop.Loop(model=model, params=params, method=method,
                      tokenizer=tok, tasks=tasks, optimizer=opt,
                      prompts_per_step=fx.PROMPTS, seed=seed, roles=roles,
                      compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(trainer.state.params)
  perm = trainer._permutations(fx.PROMPTS * method.n)
  metrics = trainer.step()
  assert trainer.iteration == 1
  # The update changed the params (a step really happened).
  moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree.leaves(trainer.state.params), jax.tree.leaves(p0)))
  for k in ("reward/mean", "loss", "loss_first", "rollout_tokens_per_s",
            "update_tokens_per_s", "completion_length/mean",
            "frac_zero_variance_groups"):
    assert np.isfinite(metrics[k]), k
  return trainer, p0, perm, metrics, moved


def host_batch(trainer, p0):
  """(prepared traj, raw rewards [B], loop valid [B], mask, lp, old) in numpy."""
  traj = trainer.last_traj
  model = trainer.model
  lp = fx.policy_logprobs(model, p0, traj)
  raw = np.asarray(trainer.last_batch.rewards, np.float64).sum(axis=1)
  valid0 = np.asarray(trainer.last_batch.traj.valid, bool)
  lm = np.asarray(traj.loss_mask, bool)
  old = np.asarray(traj.old_logprobs, np.float64)
  return traj, raw, valid0, lm, lp, old


def check(metrics, expected, moved):
  assert moved > 0.0
  np.testing.assert_allclose(metrics["loss_first"], expected, rtol=2e-4,
                             atol=2e-5)


def test_grpo_loss_matches_formula():
  tok, model, params, tasks, opt = fx.setup()
  ref = fx.perturbed(params)
  m = methods.grpo(**COMMON, kl_coef=0.04)
  trainer, p0, _, metrics, moved = run_one(m, reference_params=ref)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  adv = fx.group_std_adv(raw, fx.N, scale=True)
  valid = valid0 & ~fx.zero_variance_rows(raw, fx.N)
  assert valid.any(), "fixture should give groups with reward variance"
  mask = lm & valid[:, None]
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  pg = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), mask,
              "seq-mean-token-mean")
  ref_lp = fx.policy_logprobs(model, ref, traj)
  x = ref_lp - lp
  kl = fx.agg(np.exp(x) - x - 1.0, mask, "seq-mean-token-mean")
  check(metrics, pg + 0.04 * kl, moved)
  assert metrics["kl"] > 0
  np.testing.assert_allclose(metrics["kl/kl"], (
      ((np.exp(x) - x - 1.0) * mask).sum() / mask.sum()), rtol=1e-4)
  assert metrics["frac_zero_variance_groups"] == pytest.approx(
      fx.zero_variance_rows(raw, fx.N).reshape(-1, fx.N)[:, 0].mean())
  for k in ("pg/clipfrac", "pg/entropy", "reward/first_is_digit/mean",
            "reward/first_is_digit/std", "completion_length/max"):
    assert k in metrics


def test_dr_grpo_loss_matches_formula():
  m = methods.dr_grpo(**COMMON)
  trainer, p0, _, metrics, moved = run_one(m)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  adv = fx.group_std_adv(raw, fx.N, scale=False)
  valid = valid0 & ~fx.zero_variance_rows(raw, fx.N)
  mask = lm & valid[:, None]
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  expected = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), mask,
                    "seq-mean-token-sum-norm", max_len=traj.length)
  check(metrics, expected, moved)
  assert not m.needs("reference")


def test_dapo_loss_matches_formula_and_batch_is_full():
  m = methods.dapo(**COMMON, overlong_buffer=2)
  trainer, p0, _, metrics, moved = run_one(m)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  lengths = lm.sum(axis=1)
  shaped = raw + np.minimum(-(lengths - (fx.MAX_NEW - 2)) / 2.0, 0.0)
  adv = fx.group_std_adv(shaped, fx.N, scale=True)
  valid = valid0 & ~fx.zero_variance_rows(shaped, fx.N)
  mask = lm & valid[:, None]
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  expected = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.28), mask,
                    "token-mean")
  check(metrics, expected, moved)
  # Loop-level dynamic sampling: kept groups have reward variance.
  kept = valid0.reshape(-1, fx.N)[:, 0]
  assert metrics["effective_batch_frac"] == pytest.approx(kept.mean())
  assert not fx.zero_variance_rows(raw, fx.N).reshape(-1, fx.N)[kept, 0].any()


def test_rloo_loss_matches_formula():
  tok, model, params, tasks, opt = fx.setup()
  ref = fx.perturbed(params)
  m = methods.rloo(**COMMON, kl_coef=0.05)
  trainer, p0, _, metrics, moved = run_one(m, reference_params=ref)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  ref_lp = fx.policy_logprobs(model, ref, traj)
  r = raw - 0.05 * np.where(lm, old - ref_lp, 0.0).sum(axis=1)
  g = r.reshape(-1, fx.N)
  adv = (g - (g.sum(1, keepdims=True) - g) / (fx.N - 1)).reshape(-1)
  seq = np.where(lm, lp - old, 0.0).sum(1) / lm.sum(1)
  ratio = np.exp(seq)[:, None] * np.ones_like(lp)
  expected = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), lm,
                    "seq-mean-token-mean")
  check(metrics, expected, moved)


def test_gspo_loss_matches_formula():
  m = methods.gspo(**COMMON)
  trainer, p0, _, metrics, moved = run_one(m)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  adv = fx.group_std_adv(raw, fx.N, scale=True)
  valid = valid0 & ~fx.zero_variance_rows(raw, fx.N)
  mask = lm & valid[:, None]
  seq = np.where(lm, lp - old, 0.0).sum(1) / lm.sum(1)
  ratio = np.exp(seq)[:, None] * np.ones_like(lp)
  expected = fx.agg(fx.ppo_clip(ratio, adv[:, None], 3e-4, 4e-4), mask,
                    "seq-mean-token-mean")
  check(metrics, expected, moved)


def test_cispo_loss_matches_formula():
  m = methods.cispo(**COMMON)
  trainer, p0, _, metrics, moved = run_one(m)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  adv = fx.group_std_adv(raw, fx.N, scale=True)
  valid = valid0 & ~fx.zero_variance_rows(raw, fx.N)
  mask = lm & valid[:, None]
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  expected = fx.agg(-np.minimum(ratio, 5.0) * adv[:, None] * lp, mask,
                    "token-mean")
  check(metrics, expected, moved)


def test_nft_loss_matches_formula():
  m = methods.nft(**COMMON)
  trainer, p0, _, metrics, moved = run_one(m)
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  correct = (raw > 0.5).astype(np.float64)
  acc = np.repeat(correct.reshape(-1, fx.N).mean(1), fx.N)
  acc_c = np.minimum(acc, 0.99)[:, None]
  logr = np.where(lm, lp - old, 0.0)
  neg = np.log(np.maximum((1 - acc_c * np.exp(logr)) / (1 - acc_c), 1e-2))
  ll = correct[:, None] * logr + (1 - correct[:, None]) * neg
  expected = fx.agg(-ll, lm, "token-mean")
  check(metrics, expected, moved)


def test_kdrl_loss_matches_formula():
  tok, model, params, tasks, opt = fx.setup()
  teacher = fx.perturbed(params, scale=0.2, seed=3)
  m = methods.kdrl(**COMMON, kd_coef=0.1)
  trainer, p0, _, metrics, moved = run_one(m, teacher=(model, teacher))
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  adv = fx.group_std_adv(raw, fx.N, scale=True)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  pg = fx.agg(fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2), lm,
              "seq-mean-token-mean")
  t_lp = fx.policy_logprobs(model, teacher, traj)
  kd = fx.agg(0.5 * (lp - t_lp) ** 2, lm, "seq-mean-token-mean")
  check(metrics, pg + 0.1 * kd, moved)
  assert metrics["kd/reverse_kl"] != 0.0


def _library_loss(trainer, p0, perm, *, with_values=False):
  """The method's objective applied by hand to the first minibatch."""
  traj = select(trainer.last_traj, np.asarray(perm[0]))
  fn = logprobs_lib.score_fn(trainer.model, with_values=with_values,
                             with_entropy=True)
  outputs = fn(jax.tree.map(np.asarray, p0), traj)
  loss, _ = trainer.method.objective(outputs, traj)
  return float(loss)


def test_reinforce_pp_one_step():
  tok, model, params, tasks, opt = fx.setup()
  m = methods.reinforce_pp(**COMMON, kl_coef=0.01)
  trainer, p0, perm, metrics, moved = run_one(
      m, reference_params=fx.perturbed(params))
  traj, raw, valid0, lm, lp, old = host_batch(trainer, p0)
  # Whitened returns: zero mean, unit (unbiased) std over loss tokens.
  adv = np.asarray(traj.advantages)[lm]
  assert abs(adv.mean()) < 1e-4 and abs(adv.std(ddof=1) - 1) < 1e-3
  check(metrics, _library_loss(trainer, p0, perm), moved)


def test_ppo_one_step_with_value_head():
  m = methods.ppo(**COMMON)
  assert m.value_head and m.updates_per_batch == 4
  trainer, p0, perm, metrics, moved = run_one(m)
  check(metrics, _library_loss(trainer, p0, perm, with_values=True), moved)
  for k in ("vf/loss", "vf/vf_mse", "pg/clipfrac", "transform/value/old_mean"):
    assert k in metrics
  # Four optimizer steps (2 epochs × 2 minibatches) ran.
  assert int(trainer.state.step) == 4


def test_d3s_one_step_downsamples():
  m = methods.d3s(**COMMON, sample_keep_start=0.5, token_keep_start=0.5)
  trainer, p0, perm, metrics, moved = run_one(m)
  traj = trainer.last_traj
  valid = np.asarray(traj.valid).reshape(-1, fx.N)
  assert (valid.sum(axis=1) <= fx.N // 2).all()
  assert metrics["transform/d3s/frac_tokens_kept"] < 1.0
  check(metrics, _library_loss(trainer, p0, perm), moved)


def test_guide_places_hinted_samples_under_plain_prompt():
  tok, model, params, tasks, opt = fx.setup()
  m = methods.guide(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    reward_fns=(fx.starts_with_one,), hint_fn=lambda t: "1",
                    fraction=0.5)
  trainer, p0, perm, metrics, moved = run_one(m)
  traj = trainer.last_traj
  guided = np.asarray(traj.extras[base_lib.GUIDED_KEY])
  assert metrics["guide/groups"] > 0 and guided.any()
  p = trainer.prompt_len
  tokens = np.asarray(traj.tokens)
  prompt_ids = np.asarray(traj.prompt_ids)
  for b in np.flatnonzero(guided):
    want = np.asarray(trainer.prompts[prompt_ids[b]])
    got = tokens[b, :p][np.asarray(traj.input_mask)[b, :p]]
    np.testing.assert_array_equal(got, want)       # the plain prompt
  # π_old of guided rows = behaviour log-probs under the hinted prompt.
  lm = np.asarray(traj.loss_mask)
  np.testing.assert_allclose(
      np.asarray(traj.old_logprobs)[guided][lm[guided]],
      np.asarray(traj.behaviour_logprobs)[guided][lm[guided]], rtol=1e-6)
  check(metrics, _library_loss(trainer, p0, perm), moved)


def test_every_factory_builds():
  assert set(methods.METHODS) == {
      "grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "gspo", "cispo",
      "ppo", "nft", "d3s", "guide", "kdrl", "spoc",
      "ttrl", "srt", "co_reward", "intuitor", "em_rl", "em_ft", "rlsc",
      "sharpening_rl", "opsd", "skill_sd", "gkd", "pi_distill", "minillm", "spo"}
  for name in methods.METHODS:
    m = methods.get_method(name, rollout=RolloutSpec(n=2, max_new_tokens=4))
    assert isinstance(m, base_lib.Method) and m.n == 2
    assert m.transform.init() is not None
  with pytest.raises(ValueError, match="Unknown method"):
    methods.get_method("nope")


def test_gin_files_build_every_method():
  gin = pytest.importorskip("gin")
  import pathlib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "methods"
  files = [root / f"{name}.gin" for name in sorted(methods.METHODS)]
  assert all(f.exists() for f in files)
  for f in files:
    gin.clear_config()
    gin.parse_config_file(str(f))
    m = gin.query_parameter("%METHOD").scoped_configurable_fn()
    assert isinstance(m, base_lib.Method) and m.name == f.stem
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [str(root / "grpo.gin")], ["spec.RolloutSpec.n = 3", "grpo.grpo.kl_coef = 0.0"])
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  assert m.n == 3 and not m.needs("reference")
  gin.clear_config()


# --------------------------------------------------- the shared specs
_ALL = dict(methods.METHODS, **methods.MULTI_TURN_METHODS)


@pytest.mark.parametrize("name", sorted(_ALL))
def test_factories_take_only_their_own_math(name):
  """The shared settings are RolloutSpec / OptimSpec values, not kwargs."""
  import inspect  # pylint: disable=g-import-not-at-top
  params = inspect.signature(_ALL[name]).parameters
  assert {"rollout", "optim", "extra_transforms"} <= set(params)
  assert isinstance(params["rollout"].default, RolloutSpec)
  assert isinstance(params["optim"].default, OptimSpec)
  loose = {"n", "max_new_tokens", "temperature", "strategy", "epochs",
           "minibatches"} & set(params)
  assert not loose, loose
  m = _ALL[name](rollout=RolloutSpec(n=2, max_new_tokens=3),
                 optim=OptimSpec(epochs=2, minibatches=2))
  assert (m.n, m.max_new_tokens, m.epochs, m.minibatches) == (2, 3, 2, 2)


def test_rollout_spec_strategy_and_extra_transforms():
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  from jaxsi.transforms.base import TrajectoryTransform  # pylint: disable=g-import-not-at-top
  greedy = methods.grpo(rollout=RolloutSpec(n=2, temperature=0.0))
  assert isinstance(greedy.spec.strategy, strategies.Greedy)
  assert greedy.temperature == 1.0  # greedy scores at temperature 1
  hot = methods.grpo(rollout=RolloutSpec(n=2, temperature=0.7))
  assert hot.spec.strategy == strategies.Sampling(temperature=0.7)
  assert hot.temperature == 0.7
  top_k = strategies.Sampling(temperature=0.5, top_k=3)
  given = methods.grpo(rollout=RolloutSpec(n=2, temperature=0.0, strategy=top_k))
  assert given.spec.strategy is top_k and given.temperature == 0.5
  extra = TrajectoryTransform(lambda: "extra-state",
                              lambda traj, s, ctx: (traj, s, {}))
  plain = methods.grpo(rollout=RolloutSpec(n=2))
  varied = methods.grpo(rollout=RolloutSpec(n=2), extra_transforms=(extra,))
  assert varied.transform.init()[0] == plain.transform.init()
  assert varied.transform.init()[-1] == "extra-state"
  with pytest.raises(TypeError, match="RolloutSpec"):
    methods.grpo(rollout=8)
