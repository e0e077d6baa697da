"""experiments/self_rewarding_bench.py runs end to end at minimal settings.

A subprocess (the script defines absl flags). One arm, one round, a 1-layer
d=16 model: checks the JSON it writes (warm start + one round, the judge and
pair metrics) — not the numbers, which need the full settings (docs).
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bench_runs_and_writes_json(tmp_path):
  out_json = tmp_path / "sr.json"
  cmd = [sys.executable, "experiments/self_rewarding_bench.py", "--seeds=0",
         "--arms=random_pairs", "--rounds=1", "--n_labeled=4", "--n_unlabeled=2",
         "--n_test=2", "--n=2", "--warm_start_steps=1", "--steps_per_round=1",
         "--eval_judge_n=2", "--d_model=16", "--layers=1",
         f"--workdir={tmp_path / 'wd'}", f"--out={tmp_path / 'sr.md'}",
         f"--json={out_json}"]
  env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads(out_json.read_text())
  recs = data["results"]["0"]["random_pairs"]["records"]
  assert [r["round"] for r in recs] == [0, 1]
  assert "judge/accuracy" in recs[0]["eval"] and "judge/best_of_n" in recs[1]["eval"]
  # random pairs: each of the 2 problems has 2 samples with distinct random
  # scores, so both form a pair
  assert recs[1]["pairs"] == 2
  assert "pairs/self_preferred_wrong" in recs[1]["select"]
  assert data["flags"]["arms"] == ["random_pairs"]
  assert "| random_pairs |" in (tmp_path / "sr.md").read_text()
