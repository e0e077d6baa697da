"""experiments/gkd_bench.py runs end to end with minimal settings (subprocess:
the script defines absl flags)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gkd_bench_smoke(tmp_path):
  out = tmp_path / "gkd.json"
  cmd = [sys.executable, "experiments/gkd_bench.py", "--seeds=0", "--steps=1",
         "--prompts=2", "--n=1", "--n_train=12", "--n_test=2",
         "--teacher_steps=1", "--student_steps=1", "--teacher_d=16",
         "--teacher_layers=1", "--student_layers=1",  # one shape: shared compiles
         "--student_d=16", "--eval_samples=1", f"--out={out}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads(out.read_text())
  arms = data["results"][0]["arms"]
  assert [a["lmbda"] for a in arms] == [1.0, 0.0]
  # λ = 1 never samples from the teacher, λ = 0 always does.
  assert arms[0]["teacher_sampled"] == 0.0 and arms[1]["teacher_sampled"] == 1.0
  assert (tmp_path / "gkd.md").exists()
