"""Tests of the absl + gin launcher (jaxsi/launch.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxsi import launch

_MODULE = textwrap.dedent('''
    CALLS = []

    def train(*, workdir, lr=0.1, steps=1, dry_run=False):
      CALLS.append(dict(workdir=workdir, lr=lr, steps=steps))
      with open(workdir + "/ran.txt", "w") as f:
        f.write(f"{lr} {steps} {dry_run}")
      return lr * steps
''')

_GIN = textwrap.dedent('''
    from __gin__ import dynamic_registration
    import launch_fixture_mod as fx

    MAIN = @fx.train
    fx.train:
      lr = 0.5
      steps = 3
''')


@pytest.fixture
def setup(tmp_path, monkeypatch):
  (tmp_path / "launch_fixture_mod.py").write_text(_MODULE)
  (tmp_path / "exp.gin").write_text(_GIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  return tmp_path


def _run(tmp_path, *args):
  env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "jaxsi.launch", *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)


def test_rewrite_gin_args():
  assert launch.rewrite_gin_args(["prog", "--gin.a.b=3", "--workdir=x"]) == [
      "prog", "--gin_bindings=a.b = 3", "--workdir=x"]
  with pytest.raises(launch.LaunchError, match="--gin.NAME=VALUE"):
    launch.rewrite_gin_args(["--gin.novalue"])


def test_launch_runs_bound_function_and_saves_configs(setup):
  out = _run(setup, "--gin_file=exp.gin", "--gin.fx.train.steps=4", f"--workdir={setup}/w")
  assert out.returncode == 0, out.stderr
  assert (setup / "w" / "ran.txt").read_text() == "0.5 4 False"
  config = (setup / "w" / "config.gin").read_text()
  assert "steps = 4" in config
  operative = (setup / "w" / "operative_config.gin").read_text()
  assert "lr = 0.5" in operative


def test_rerun_with_changed_bindings_is_refused_unless_allowed(setup):
  w = f"--workdir={setup}/w"
  assert _run(setup, "--gin_file=exp.gin", "--gin.fx.train.steps=4", w).returncode == 0
  out = _run(setup, "--gin_file=exp.gin", "--gin.fx.train.steps=5",
             "--gin.fx.train.lr=0.25", w)
  assert out.returncode == 2
  assert "fx.train.steps: 4 -> 5" in out.stderr and "fx.train.lr" in out.stderr
  assert "--allow_config_change=" in out.stderr
  assert (setup / "w" / "ran.txt").read_text() == "0.5 4 False"   # not rerun
  out = _run(setup, "--gin_file=exp.gin", "--gin.fx.train.steps=5",
             "--allow_config_change=steps", w)
  assert out.returncode == 0, out.stderr
  assert (setup / "w" / "ran.txt").read_text() == "0.5 5 False"
  assert "steps = 4" in (setup / "w" / "config.gin").read_text()   # the run's record
  assert (setup / "w" / "config_changes.jsonl").exists()


def test_cpu_devices_flag_takes_effect(setup):
  (setup / "dev_mod.py").write_text(
      "import jax\n"
      "def main(*, workdir):\n"
      "  open(workdir + '/n.txt', 'w').write(str(jax.device_count()))\n")
  (setup / "dev.gin").write_text("from __gin__ import dynamic_registration\n"
                                 "import dev_mod\nMAIN = @dev_mod.main\n")
  out = _run(setup, "--gin_file=dev.gin", "--cpu_devices=3", f"--workdir={setup}/d")
  assert out.returncode == 0, out.stderr
  assert (setup / "d" / "n.txt").read_text() == "3"


@pytest.mark.parametrize("body, status, text", [
    ("raise OSError(errno.ENOSPC, 'No space left on device', workdir + '/ckpt/7')",
     3, "cannot write "),
    ("raise OSError(errno.EFBIG, 'File too large', workdir + '/metrics.jsonl')",
     3, "File too large"),
    ("raise guards.RunFailure('every update was skipped')", 3,
     "the run failed: every update was skipped"),
    ("raise arguments.ArgumentError('x.steps = 0: expected >= 1')", 2,
     "x.steps = 0"),
])
def test_failures_exit_nonzero_with_one_line(setup, body, status, text):
  (setup / "fail_mod.py").write_text(
      "import errno\nfrom jaxsi.training import arguments, guards\n"
      f"def main(*, workdir):\n  {body}\n")
  (setup / "fail.gin").write_text("from __gin__ import dynamic_registration\n"
                                  "import fail_mod\nMAIN = @fail_mod.main\n")
  out = _run(setup, "--gin_file=fail.gin", f"--workdir={setup}/f")
  assert out.returncode == status, out.stderr
  assert text in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_dry_run_flag_is_passed(setup):
  out = _run(setup, "--gin_file=exp.gin", "--dry_run", f"--workdir={setup}/w")
  assert out.returncode == 0, out.stderr
  assert (setup / "w" / "ran.txt").read_text() == "0.5 3 True"


@pytest.mark.parametrize("binding, expected", [
    ("--gin.fx.train.stpes=4", "stpes"),            # misspelled parameter
    ("--gin.fx.trian.steps=4", "fx.trian"),         # unknown configurable
    ("--gin.fx.train.steps=four", "four"),          # malformed value
])
def test_bad_binding_fails_before_running(setup, binding, expected):
  out = _run(setup, "--gin_file=exp.gin", binding, f"--workdir={setup}/w")
  assert out.returncode == 2
  assert expected in out.stderr
  assert not (setup / "w" / "ran.txt").exists()


def test_missing_gin_file_and_missing_main(setup):
  out = _run(setup, "--gin_file=nope.gin", f"--workdir={setup}/w")
  assert out.returncode == 2 and "nope.gin" in out.stderr
  (setup / "nomain.gin").write_text("from __gin__ import dynamic_registration\n"
                                    "import launch_fixture_mod as fx\nfx.train.lr = 1.0\n")
  out = _run(setup, "--gin_file=nomain.gin", f"--workdir={setup}/w")
  assert out.returncode == 2 and "MAIN" in out.stderr


def test_quickstart_config_parses():
  """The shipped quickstart config names only real parameters."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    launch.parse_config(["quickstart.gin"], ["rounds_run.run.control = True"])
    fn = launch.main_function()
    assert fn.__name__ == "run" and fn.__module__ == "jaxsi.training.rounds_run"
  finally:
    gin.clear_config()
