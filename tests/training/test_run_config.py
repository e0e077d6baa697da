"""A workdir belongs to one configuration (jaxsi.training.run_config)."""

from __future__ import annotations

import json

import pytest

from jaxsi.training import run_config as rc

CONFIG = """from __gin__ import dynamic_registration
from jaxsi.training import rl_run

# Macros:
# ==============================================================================
MAIN = @rl_run.run

# Parameters for rl_run.run:
# ==============================================================================
rl_run.run.learning_rate = 0.0003
rl_run.run.model_overrides = \\
    {'d_ff': 256,
     'd_model': 64}
rl_run.run.seed = 0
rl_run.run.steps = 100
"""


def test_bindings_parse_gin_text():
  b = rc.bindings(CONFIG)
  assert b == {"MAIN": "@rl_run.run", "rl_run.run.learning_rate": "0.0003",
               "rl_run.run.model_overrides": "{'d_ff': 256, 'd_model': 64}",
               "rl_run.run.seed": "0", "rl_run.run.steps": "100"}
  # Reformatting a value is not a change.
  assert rc.diff(b, rc.bindings(CONFIG.replace("{'d_ff': 256,\n     'd_model'",
                                               "{'d_ff': 256, 'd_model'"))) == []


def test_new_run_is_recorded_and_same_rerun_passes(tmp_path):
  assert rc.check_resume(str(tmp_path), CONFIG) == []
  assert (tmp_path / "config.gin").read_text() == CONFIG
  assert rc.check_resume(str(tmp_path), CONFIG) == []
  assert not (tmp_path / "config_changes.jsonl").exists()


def test_changed_bindings_are_refused_naming_each(tmp_path):
  rc.check_resume(str(tmp_path), CONFIG)
  new = (CONFIG.replace("seed = 0", "seed = 1").replace("steps = 100", "steps = 40")
         + "rl_run.run.warmup_steps = 5\n")
  with pytest.raises(rc.ConfigChangeError) as e:
    rc.check_resume(str(tmp_path), new)
  msg = str(e.value)
  assert "rl_run.run.seed: 0 -> 1" in msg
  assert "rl_run.run.steps: 100 -> 40" in msg
  assert "rl_run.run.warmup_steps: (unset) -> 5" in msg
  assert "--allow_config_change=" in msg and "--workdir" in msg
  # Nothing written by the refused run.
  assert (tmp_path / "config.gin").read_text() == CONFIG
  assert not (tmp_path / "config_changes.jsonl").exists()
  # Allowing only some of them still refuses the rest.
  with pytest.raises(rc.ConfigChangeError, match="seed") as e:
    rc.check_resume(str(tmp_path), new, allow=("steps", "warmup_steps"))
  assert "steps: 100" not in str(e.value)


def test_allowed_change_is_recorded(tmp_path):
  rc.check_resume(str(tmp_path), CONFIG)
  new = CONFIG.replace("steps = 100", "steps = 300")
  changes = rc.check_resume(str(tmp_path), new, allow=("rl_run.run.steps",))
  assert changes == [("rl_run.run.steps", "100", "300")]
  rows = [json.loads(l) for l in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
  assert [(r["binding"], r["old"], r["new"]) for r in rows] == [
      ("rl_run.run.steps", "100", "300")]
  assert (tmp_path / "config.gin").read_text() == CONFIG   # the run's record
  # A dry run checks without writing.
  assert rc.check_resume(str(tmp_path), new, allow=("steps",), record=False)
  assert len((tmp_path / "config_changes.jsonl").read_text().splitlines()) == 1


def test_console_bindings_pass_unnamed(tmp_path):
  rc.check_resume(str(tmp_path), CONFIG)
  assert rc.check_resume(str(tmp_path), CONFIG + "rl_run.run.console = True\n") == [
      ("rl_run.run.console", None, "True")]


def test_launcher_arguments_are_checked_up_front(tmp_path):
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  from jaxsi.methods import rft  # pylint: disable=g-import-not-at-top
  from jaxsi.training import arguments, rl_run, rounds_run  # pylint: disable=g-import-not-at-top
  m = methods.grpo()
  with pytest.raises(arguments.ArgumentError) as e:
    rl_run.run(workdir=str(tmp_path / "a"), method=m, prompts_per_step=8.5,
               steps="10", learning_rate=float("nan"), labeled_fraction=1.5,
               difficulty=[2, "3"], console=1)
  msg = str(e.value)
  for part in ("rl_run.run.prompts_per_step = 8.5: expected an integer",
               "rl_run.run.steps = '10': expected an integer",
               "rl_run.run.learning_rate = nan: expected a finite number",
               "rl_run.run.labeled_fraction = 1.5: expected <= 1",
               "rl_run.run.difficulty = [2, '3']: expected a list of integers",
               "rl_run.run.console = 1: expected True or False"):
    assert part in msg, msg
  with pytest.raises(arguments.ArgumentError, match="prompts_per_step = 0: expected >= 1"):
    rl_run.run(workdir=str(tmp_path / "a"), method=m, prompts_per_step=0)
  with pytest.raises(arguments.ArgumentError, match="not divisible by method 'ppo'"):
    from jaxsi import spec  # pylint: disable=g-import-not-at-top
    rl_run.run(workdir=str(tmp_path / "a"), prompts_per_step=3,
               method=methods.ppo(optim=spec.OptimSpec(epochs=1, minibatches=5)))
  assert not (tmp_path / "a").exists()     # refused before any work
  with pytest.raises(arguments.ArgumentError, match=r"rounds_config.rounds = -1"):
    rounds_run.run(workdir=str(tmp_path / "b"), method=rft.rft(),
                   rounds_config={"rounds": -1})
  with pytest.raises(arguments.ArgumentError, match=r"unknown field\(s\) \['round'\]"):
    rounds_run.run(workdir=str(tmp_path / "b"), method=rft.rft(),
                   rounds_config={"round": 2})
  assert not (tmp_path / "b").exists()
