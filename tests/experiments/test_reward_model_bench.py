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
