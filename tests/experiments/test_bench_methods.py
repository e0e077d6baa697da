"""experiments/bench.py builds every method it benchmarks (no training).

The bench itself takes minutes, so the suite only checks its method set-up:
``make_method`` once passed ``n=`` to the PPO factory, which raised
``TypeError`` only when the bench ran. Run in a subprocess: the script
defines absl flags that other scripts loaded in this process may share.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CHECK = r"""
import sys
sys.path.insert(0, "experiments")
from absl import flags
import bench
flags.FLAGS(["bench"])
names = set(bench._METHODS.default) | set(bench._HARD_METHODS.default)
assert "ppo" in names, names
for name in sorted(names):
  m = bench.make_method(name, n=8)
  assert m.name == name, (name, m.name)
  # PPO keeps the sample budget with half the group size.
  assert m.n == (4 if name == "ppo" else 8), (name, m.n)
print("built", ",".join(sorted(names)))
"""


def test_every_bench_method_builds():
  out = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "built" in out.stdout and "ppo" in out.stdout
