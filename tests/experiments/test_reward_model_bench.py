"""experiments/reward_model_bench.py: its AUC against hand numbers.

A subprocess (the script and the test_time_bench it reuses define absl flags).
The end-to-end run is the documented command (docs/self_rewarding.md).
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

CODE = """
import json, sys
sys.path.insert(0, 'experiments')
import reward_model_bench as b
cases = [
    ([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]),      # perfect: 1
    ([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]),      # reversed: 0
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]),      # all tied: 1/2
    ([0.9, 0.4, 0.4, 0.1], [1, 1, 0, 0]),      # one tied pair: (1+1+0.5+1)/4
    ([0.3, 0.6, 0.2], [1, 0, 0]),              # 0.3 beats 0.2, loses to 0.6: 1/2
    ([0.3, 0.6], [1, 1]),                      # one class: NaN
]
print(json.dumps([b.auc(s, y) for s, y in cases]))
"""


def test_auc_hand_numbers():
  env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  res = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(res.stdout.strip().splitlines()[-1].replace("NaN", "null"))
  assert got[:5] == [1.0, 0.0, 0.5, 0.875, 0.5]
  assert got[5] is None


def test_bench_end_to_end_tiny(tmp_path):
  """The bench runs (tiny: 1 seed, N = 4, 2 RM steps) and its table compares the
  RMs' best-of-N with the first sample (random choice) and the verifier (oracle)."""
  out = tmp_path / "rm.md"
  env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "experiments/reward_model_bench.py", "--seeds=0", "--n=4",
         "--ks=1,4", "--n_train=200", "--n_test=8", "--sft_steps=60", "--d_model=32",
         "--layers=1", "--n_rm_train=16", "--rm_steps=2", "--rm_batch=8",
         f"--out={out}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  text = out.read_text()
  for row in ("| first |", "| rm_pointwise |", "| rm_bradley_terry |", "| oracle |",
              "| rm_pointwise − first |", "| rm_bradley_terry − first |"):
    assert row in text, row
  seeds = json.loads((tmp_path / "rm.md.json").read_text())
  assert [r["seed"] for r in seeds] == [0]
  sweep = seeds[0]["sweep"]
  for k in (1, 4):
    acc = {x["selector"]: x["accuracy"] for x in sweep if x["k"] == k}
    assert set(acc) == {"first", "majority", "self_certainty", "rm_pointwise",
                        "rm_bradley_terry", "oracle"}
    # The verifier's pick (pass@k) bounds every selector; at k = 1 all are the first.
    assert all(0.0 <= a <= acc["oracle"] for a in acc.values()), acc
    if k == 1:
      assert len(set(acc.values())) == 1, acc
  assert seeds[0]["rm_bradley_terry/train_items"] >= 1
  assert seeds[0]["train_samples"] == 16 * 4
