"""The loop stops loudly on sustained failure (jaxsi.training.guards)."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.training import guards
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from tests.methods import rl_fixtures as fx


def _loop(method, optimizer=None, **kw):
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=optimizer or opt,
                   prompts_per_step=fx.PROMPTS,
                   compiler_options=loop.FAST_COMPILE, **kw)


def _grpo(reward):
  return methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW), reward_fns=(reward,),
                      kl_coef=0.0, drop_zero_variance=False)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1e-3, "3e-4", None])
def test_make_optimizer_refuses_bad_numbers(lr):
  with pytest.raises(ValueError, match="learning_rate"):
    opt_lib.make_optimizer(learning_rate=lr)


def test_nan_learning_rate_stops_the_run_before_a_checkpoint(tmp_path):
  # An optimizer built outside make_optimizer (no validation) with a NaN step
  # size: the first update makes the parameters NaN; the run stops in that
  # iteration, before its checkpoint is written.
  run = _loop(_grpo(fx.first_is_digit), optimizer=optax.sgd(float("nan")),
              workdir=str(tmp_path), checkpoint_every=1)
  with pytest.raises(guards.RunFailure, match="parameters became non-finite in"
                     " iteration 1.*learning"):
    run.step()
  assert run.history[-1]["params_finite"] == 0.0
  assert run.ckpt.all_steps() == []


def _raises(tasks, completions):
  raise KeyError("answer field missing in task 7")


def _nan(tasks, completions):
  return np.full((len(completions),), np.nan, np.float32)


def _wrong_shape(tasks, completions):
  return np.zeros((len(completions) + 1,), np.float32)


@pytest.mark.parametrize("reward, text", [
    (_raises, "KeyError: 'answer field missing in task 7'"),
    (_nan, "_nan returned [nan]"),
    (_wrong_shape, "_wrong_shape"),
])
def test_failing_reward_stops_the_run_with_its_error(reward, text):
  run = _loop(_grpo(reward), reward_failure_patience=2)
  m = run.step()
  assert m["reward_failed_frac"] == 1.0
  with pytest.raises(guards.RunFailure) as e:
    run.step()
  assert "100% of the samples failed their reward" in str(e.value)
  assert text in str(e.value), str(e.value)


def test_occasional_failures_do_not_stop_the_run():
  calls = []

  def flaky(tasks, completions):
    calls.append(1)
    if len(calls) == 1:        # the first batch call fails; retries succeed
      raise RuntimeError("transient")
    return fx.first_is_digit(tasks, completions)

  run = _loop(_grpo(flaky))
  for _ in range(3):
    m = run.step()
  assert m["reward_failed_frac"] == 0.0


def test_guard_arguments_are_validated():
  with pytest.raises(ValueError, match="max_reward_failure_rate"):
    guards.FailureGuard(max_skipped_iterations=1, max_reward_failure_rate=1.5,
                        reward_failure_patience=1)
  with pytest.raises(ValueError, match="max_skipped_iterations"):
    guards.FailureGuard(max_skipped_iterations=0, max_reward_failure_rate=0.5,
                        reward_failure_patience=1)
  g = guards.FailureGuard(max_skipped_iterations=2, max_reward_failure_rate=0.5,
                          reward_failure_patience=2)
  g.check(1, "m", {"skipped_nonfinite": 1.0, "reward_failed_frac": 0.6}, [])
  g.check(2, "m", {"skipped_nonfinite": 0.5, "reward_failed_frac": 0.4}, [])
  g.check(3, "m", {"skipped_nonfinite": 1.0, "reward_failed_frac": 0.6}, [])
  with pytest.raises(guards.RunFailure, match="no error text"):
    g.check(4, "m", {"skipped_nonfinite": 0.0, "reward_failed_frac": math.inf}, [])


def test_disk_full_at_a_checkpoint_loses_nothing_written(tmp_path, monkeypatch):
  # The disk fills while checkpoint 2 is written: the run stops with the OS
  # error; checkpoint 1 and the metrics rows up to it are intact, and a rerun
  # (space freed) resumes from 1 and ends with every row once.
  import errno  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from jaxsi.training import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  m = _grpo(fx.first_is_digit)
  save = ckpt_lib.Checkpointer.save

  def full(self, step, *a, **k):
    if step == 2:
      raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ckpt"))
    return save(self, step, *a, **k)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", full)
  run = _loop(m, workdir=str(tmp_path), checkpoint_every=1)
  with pytest.raises(OSError, match="No space left"):
    run.run(3)
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
  resumed = _loop(m, workdir=str(tmp_path), checkpoint_every=1)
  assert resumed.iteration == 1
  resumed.run(3)
  resumed.close()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]
