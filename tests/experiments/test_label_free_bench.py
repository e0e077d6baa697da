"""experiments/label_free_bench.py: the collapse criterion against hand numbers,
the method set-up (Co-Reward at equal samples) and a tiny end-to-end run
(subprocesses: the script defines absl flags)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CHECK = r"""
import math, sys
sys.path.insert(0, "experiments")
from absl import flags
import label_free_bench as b
import _warm_start
flags.FLAGS(["bench"])

# Running max 0.40 at iteration 10 (agreement 0.6); SE = sqrt(.4*.6/100) =
# 0.04899, threshold 0.40 - 0.09798 = 0.30202.
curve = [dict(iteration=0, greedy=0.30, agreement=0.5),
         dict(iteration=10, greedy=0.40, agreement=0.6),
         dict(iteration=20, greedy=0.35, agreement=0.7),   # within 2 SE
         dict(iteration=30, greedy=0.30, agreement=0.8)]   # 0.30 < 0.30202, rising
assert b.collapse_step(curve, 100) == 30, b.collapse_step(curve, 100)
# Accuracy falls but agreement does not rise above its value at the max.
falling = [dict(c) for c in curve]
falling[3]["agreement"] = 0.6
assert b.collapse_step(falling, 100) is None
# 0.31 is within 2 SE (0.31 > 0.30202).
within = [dict(c) for c in curve]
within[3]["greedy"] = 0.31
assert b.collapse_step(within, 100) is None
# The larger the test set the smaller the SE: 0.35 at n_test = 10000
# (SE 0.0049) is a collapse at 20.
assert b.collapse_step(curve, 10000) == 20
# No agreement (GRPO logs none): never a collapse.
assert b.collapse_step([dict(iteration=0, greedy=0.5, agreement=None),
                        dict(iteration=10, greedy=0.1, agreement=None)], 100) is None
try:
  b.collapse_step(curve, 0)
  raise AssertionError("n_test=0 accepted")
except ValueError as e:
  assert "n_test" in str(e)

# Co-Reward at equal samples: n/2 per phrasing; TTRL-KL carries its β.
assert b.make_method("co_reward", n=8).n == 4
assert b.make_method("co_reward", n=8, equal_samples=False).n == 8
assert b.make_method("ttrl", n=8).n == 8
assert b.make_method("ttrl_kl", n=8, guard_kl_coef=0.1).name == "ttrl_kl"
for bad, kw in (("ttrl_kl", dict(guard_kl_coef=0.0)), ("co_reward", dict(n=7)),
                ("nope", {})):
  try:
    b.make_method(bad, **{"n": 8, **kw})
    raise AssertionError(f"{bad} {kw} accepted")
  except ValueError as e:
    assert "label_free_bench" in str(e), e

# mean ± std with ddof 1: [1, 2, 3] -> 2 ± 1.
assert _warm_start.mean_std([1, 2, 3]) == (2.0, 1.0)
assert _warm_start.mean_std([0.5]) == (0.5, 0.0)
assert _warm_start.fmt_ms([1, 2, 3], "{:.1f}") == "2.0 ± 1.0"
print("checked")
"""


def test_collapse_criterion_and_methods():
  out = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT, capture_output=True,
                       text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checked" in out.stdout


def test_label_free_bench_smoke(tmp_path):
  out = tmp_path / "lf.md"
  cmd = [sys.executable, "experiments/label_free_bench.py", "--seeds=0",
         "--methods=ttrl,co_reward", "--steps=2", "--eval_every=1", "--prompts=2",
         "--n=2", "--n_train=40", "--n_test=4", "--sft_steps=2", "--d_model=16",
         "--layers=1", "--eval_samples=1", f"--out={out}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads((tmp_path / "lf.md.json").read_text())
  rows = data[0]["rows"]
  assert [r["method"] for r in rows] == ["ttrl", "co_reward"]
  # Warm start + one evaluation per iteration.
  assert [p["iteration"] for p in rows[0]["curve"]] == [0, 1, 2]
  assert "mean ± std over seeds" in out.read_text()
