"""benchmarks/gpu_bench.py's CPU path (``--smoke``) runs without gin-config
and tensorboardX, as on the GPU machines it is written for."""

import json
import pathlib
import subprocess
import sys

from tests.benchmarks import test_peers

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Runs the script with gin and tensorboardX made unimportable.
_RUNNER = """
import importlib.abc, runpy, sys
class _Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] in ('gin', 'tensorboardX'):
      raise ImportError('blocked for this test: ' + name)
    return None
sys.meta_path.insert(0, _Block())
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__('pathlib').Path(script).parent))
runpy.run_path(script, run_name='__main__')
"""


def test_gpu_bench_smoke_without_gin(tmp_path):
  out = tmp_path / "gpu.json"
  proc = subprocess.run(
      [sys.executable, "-c", _RUNNER, str(ROOT / "benchmarks" / "gpu_bench.py"),
       "--smoke", f"--out={out}"],
      capture_output=True, text=True, env=test_peers._env(), timeout=600,  # pylint: disable=protected-access
      cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["settings"]["model"] == "tiny"
  assert result["sft"]["step_s"] > 0 and 0 < result["sft"]["mfu"]
  assert result["sft"]["xla_flops"] > 0 and result["sft"]["xla_bytes"] > 0
  for kind in ("greedy", "sampled"):
    assert result["decode"][kind]["tokens_per_s"] > 0
    # No HBM figure on a CPU: no decode bound is claimed.
    assert result["decode"][kind]["floor_tokens_per_s"] is None
  assert "MFU" in proc.stdout and "tok/s" in proc.stdout
