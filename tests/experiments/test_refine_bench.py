"""experiments/refine_bench.py and reward_model_bench.py share test_time_bench's
flags: both import cleanly (no flag defined twice), and the refine bench runs a
tiny seed end to end."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}


@pytest.mark.parametrize("script", ["refine_bench", "reward_model_bench"])
def test_flags_import(script):
  code = ("import sys; sys.path.insert(0, 'experiments'); "
          f"import {script}; from absl import flags; "
          "print(flags.FLAGS['seeds'].default, flags.FLAGS['n_train'].default)")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=ENV)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["['0',", "'1',", "'2']", "2000"]


def test_refine_bench_tiny_run(tmp_path):
  table = tmp_path / "refine.md"
  out = subprocess.run(
      [sys.executable, "experiments/refine_bench.py", "--seeds=0", "--max_turns=1",
       "--n=2", "--ks=1,2", "--n_train=16", "--n_test=4", "--sft_steps=1",
       "--d_model=16", "--layers=1", f"--table={table}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  text = table.read_text()
  # One answer turn keeps it cheap (the loops' turns are tests/sampling/test_refine.py's).
  for row in ("| first sample | 1 |", "| majority@2 | 2 |", "| iort | 1 |",
              "| progco(tool) | 1 |", "| progco(model) | 1 |", "| self_refine | 1 |"):
    assert row in text, (row, text)
