"""The RL loop: reward rises, exact resume, compile once, dynamic sampling."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.training import loop
from jaxsi.sampling import rollouts
from tests.methods import rl_fixtures as fx


def _trainer(method, **kw):
  tok, model, params, tasks, opt = fx.setup()
  kw.setdefault("compiler_options", loop.FAST_COMPILE)
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                      tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                      **kw)


# One method object per process: trainers of the same method share compiles.
GRPO = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    reward_fns=(fx.first_is_digit,), kl_coef=0.0)


def test_group_zero_variance_and_left_pad():
  scores = np.array([1, 1, 0, 1, 2, 2, np.nan, 2], np.float32)
  valid = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
  np.testing.assert_array_equal(
      rollouts.group_zero_variance(scores, valid, 2), [True, False, True, True])
  np.testing.assert_array_equal(
      rollouts.group_zero_variance(scores, valid, 4), [False, True])
  tokens, mask = rollouts.left_pad([[5, 6], [7]], 3, 0)
  np.testing.assert_array_equal(tokens, [[0, 5, 6], [0, 0, 7]])
  np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 1]])
  with pytest.raises(ValueError, match="prompt bucket"):
    rollouts.left_pad([[1, 2, 3, 4]], 3, 0)


def test_reward_rises_and_compiles_once():
  trainer = _trainer(GRPO, seed=0)
  before = sampler_lib.trace_counts().get("generate", 0)
  history = [trainer.step() for _ in range(8)]
  rewards = [h["reward/mean"] for h in history]
  # An easy reward (start with a digit) rises within a few steps.
  assert np.mean(rewards[-2:]) > np.mean(rewards[:2]) + 0.2, rewards
  assert np.mean(rewards[-2:]) > 0.85, rewards
  # The sampler compiled at most once for all 8 iterations; the update and
  # the transforms too (their jit caches hold a single entry).
  assert sampler_lib.trace_counts().get("generate", 0) - before <= 1
  assert trainer._train._cache_size() == 1
  size = trainer._prepare._cache_size()
  assert size >= 1
  trainer.step()
  assert trainer._prepare._cache_size() == size
  for k in ("rollout_tokens_per_s", "update_tokens_per_s", "pg/clipfrac",
            "entropy", "completion_length/mean", "frac_zero_variance_groups",
            "reward/first_is_digit/std"):
    assert k in history[-1], k


def test_resume_is_exact(tmp_path):
  # Uninterrupted: 3 iterations.
  full = _trainer(GRPO, seed=3)
  for _ in range(3):
    full.step()
  # Interrupted after 2 (checkpointed every iteration), resumed for 1 more.
  first = _trainer(GRPO, seed=3, workdir=str(tmp_path), checkpoint_every=1)
  first.run(2)
  first.close()
  resumed = _trainer(GRPO, seed=3, workdir=str(tmp_path), checkpoint_every=1)
  assert resumed.iteration == 2 and resumed.position == 2
  resumed.step()
  resumed.close()
  assert resumed.iteration == 3
  for a, b in zip(jax.tree.leaves(full.state.params),
                  jax.tree.leaves(resumed.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6)
  assert int(full.state.step) == int(resumed.state.step) == 3
  rows = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
  assert len(rows) == 3


def test_dynamic_sampling_refills_zero_variance_groups():
  # "starts with 1" is rare at init: most groups are all-zero.
  m = methods.dapo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                   reward_fns=(fx.starts_with_one,), max_gen_batches=4)
  plain = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                       reward_fns=(fx.starts_with_one,), kl_coef=0.0)
  tok, model, params, tasks, opt = fx.setup()
  dyn = _trainer(m, seed=5)
  batch = dyn.collect(dyn.state.params, jax.random.key(11))
  base_trainer = _trainer(plain, seed=5)
  first = base_trainer.collect(base_trainer.state.params, jax.random.key(11))
  # Same first generation batch; dynamic sampling generated more batches
  # and kept more informative groups than the single batch has.
  assert batch.info["frac_zero_variance_groups"] == pytest.approx(
      first.info["frac_zero_variance_groups"])
  assert batch.info["frac_zero_variance_groups"] > 0
  assert batch.info["gen_batches"] > 1
  assert batch.info["effective_batch_frac"] >= 1 - first.info[
      "frac_zero_variance_groups"]
  valid = batch.traj.valid.reshape(-1, fx.N)
  kept = valid[:, 0]
  assert (valid == kept[:, None]).all()          # whole groups kept/dropped
  assert kept.mean() == pytest.approx(batch.info["effective_batch_frac"])
  scores = batch.rewards.sum(1).reshape(-1, fx.N)
  assert (scores[kept].max(1) > scores[kept].min(1)).all()
  np.testing.assert_array_equal(
      batch.traj.group_ids, np.repeat(np.arange(fx.PROMPTS) * fx.N, fx.N))
  assert batch.traj.tokens.shape == first.traj.tokens.shape


def test_trainer_validates_configuration():
  tok, model, params, tasks, opt = fx.setup()
  with pytest.raises(ValueError, match="teacher"):
    loop.Loop(model=model, params=params, method=methods.kdrl(rollout=RolloutSpec(n=2)),
                 tokenizer=tok, tasks=tasks, optimizer=opt, prompts_per_step=2)
  with pytest.raises(ValueError, match="divisible"):
    loop.Loop(model=model, params=params,
                 method=methods.grpo(rollout=RolloutSpec(n=3),
                                     optim=OptimSpec(minibatches=2)), tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=3)
