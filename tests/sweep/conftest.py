"""Fixtures of the sweep tests: a gin file whose MAIN is the fast fake trial."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_gin(tmp_path):
  path = tmp_path / "fake.gin"
  path.write_text(
      "from __gin__ import dynamic_registration\n"
      "from tests.sweep import fake_trial\n"
      "MAIN = @fake_trial.run\n"
      "fake_trial.run.steps = 3\n")
  return str(path)


@pytest.fixture
def trial_env():
  """The trials' environment: the repository importable, quiet output."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  env["CI"] = "true"
  env["JAX_PLATFORMS"] = "cpu"
  return env
