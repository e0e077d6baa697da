"""The loop with the episodes rollout stage: fixed shapes, metrics, one
compilation, held-out evaluation, and the gin files of the multi-turn methods."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi import spec
from jaxsi.sampling import multiturn
from jaxsi.sampling import rollouts
from jaxsi.sampling import sampler
from jaxsi.sampling import strategies as st
from jaxsi.training import loop
from jaxsi.training import loop_steps
from tests.methods import rl_fixtures as fx

COMMON = dict(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
              reward_fns=(fx.first_is_digit,), inject_length=4)


def make_trainer(method, seed=0):
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(
      model=model, params=params, method=method, tokenizer=tok, tasks=tasks,
      optimizer=opt, prompts_per_step=fx.PROMPTS, seed=seed,
      compiler_options=loop.FAST_COMPILE)


def test_two_steps_fixed_shapes_metrics_and_single_compile():
  m = methods.ufo(max_turns=3, feedback_text="+=", **COMMON)
  trainer = make_trainer(m)
  first = trainer.step()
  shape = trainer.last_traj.tokens.shape
  b = fx.PROMPTS * fx.N
  p = trainer.prompt_len
  assert shape == (b, m.rollout.episode.length(p, fx.MAX_NEW))
  assert trainer.reward_names == ("turn1", "turn2", "turn3")
  assert trainer.last_batch.rewards.shape == (b, 3)
  counts = sampler.trace_counts()
  prep = loop_steps.prepare_jit(trainer.compiler_options)  # pylint: disable=protected-access
  size = prep._cache_size()  # pylint: disable=protected-access
  second = trainer.step()
  assert trainer.last_traj.tokens.shape == shape
  assert sampler.trace_counts() == counts          # no new sampler compile
  assert prep._cache_size() == size                # no new prepare compile  # pylint: disable=protected-access
  for metrics in (first, second):
    for k in ("sc/acc_t1", "sc/acc_t2", "sc/gap", "sc/wrong_to_right",
              "sc/right_to_wrong", "sc/turns_mean", "sc/repeat_frac",
              "reward/turn1/mean", "loss_first"):
      assert np.isfinite(metrics[k]), k
    assert metrics["sc/gap"] == pytest.approx(
        metrics["sc/acc_t2"] - metrics["sc/acc_t1"])
  # The batch's self-correction metrics agree with its per-turn rewards.
  st_ = multiturn.self_correction_stats(trainer.last_batch.rewards)
  assert second["sc/acc_t1"] == pytest.approx(st_["acc_t1"])
  assert second["sc/acc_t2"] == pytest.approx(st_["acc_t2"])
  # Episodes stop on a correct answer: turn 1 correct ⇒ no turn 2.
  r = trainer.last_batch.rewards
  assert np.isnan(r[r[:, 0] == 1, 1]).all()


def test_episodes_stage_needs_an_episode_spec():
  with pytest.raises(ValueError, match="EpisodeSpec"):
    rollouts.Episodes(spec.RolloutSpec(n=2, max_new_tokens=2))
  # A single-turn method samples plain completions under the same loop.
  assert not methods.is_multi_turn(methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW)))


def test_registry_and_gin_files_build_every_multi_turn_method():
  gin = pytest.importorskip("gin")
  for name in ("score", "ufo", "reflect_retry", "critique_grpo",
               "two_turn_grpo", "multi_turn_ppo"):
    m = methods.get_method(name, rollout=RolloutSpec(n=2, max_new_tokens=4))
    assert methods.is_multi_turn(m) and m.n == 2
  root = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "methods"
  for stem in ("score", "ufo", "reflect_retry", "critique_grpo",
               "multi_turn_ppo"):
    gin.clear_config()
    gin.parse_config_file(str(root / f"{stem}.gin"))
    m = gin.query_parameter("%METHOD").scoped_configurable_fn()
    assert methods.is_multi_turn(m) and m.name == stem
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(root / "score.gin")],
                                      ["score.score.stage = 1"])
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  assert m.needs("reference") and m.rollout.episode.max_turns == 2
  gin.clear_config()
