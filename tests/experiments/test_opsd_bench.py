"""experiments/opsd_bench.py: every arm builds; one tiny OPSD iteration runs.

Run in a subprocess: the script defines absl flags that other scripts loaded
in this process may share.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CHECK = r"""
import sys
sys.path.insert(0, "experiments")
from absl import flags
import opsd_bench
flags.FLAGS(["opsd_bench"])
for name in opsd_bench._ARMS.default:
  m = opsd_bench.make_method(name, n=4)
  assert m.name == name and m.n == 4, (name, m.name, m.n)
print("built", ",".join(opsd_bench._ARMS.default))
"""


def test_every_bench_arm_builds():
  out = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "built grpo,opsd,opsd_rl,opsd_topk,opsd_topk_nostop,pi_distill,pi_distill_student" in out.stdout


def test_bench_smoke(tmp_path):
  out_path = tmp_path / "opsd.json"
  out = subprocess.run(
      [sys.executable, "experiments/opsd_bench.py", "--arms=opsd,opsd_topk", "--steps=1",
       "--eval_every=1", "--n_train=32", "--n_test=4", "--sft_steps=1",
       "--prompts=2", "--n=2", "--d_model=16", "--layers=1",
       f"--out={out_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
           "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.loads(out_path.read_text())["results"][0]
  curve = res["arms"]["opsd"]["curve"]
  assert [c["iteration"] for c in curve] == [0, 1]
  assert curve[1]["gen_tokens"] > 0
  assert res["arms"]["opsd"]["reverse_kl"] is not None
  assert res["arms"]["opsd_topk"]["reverse_kl"][0] >= 0.0   # an exact KL
  assert "| opsd | 1 |" in (tmp_path / "opsd.json.md").read_text()
