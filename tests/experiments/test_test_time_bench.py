"""experiments/test_time_bench.py: CandidatesDraw and the paired SE against hand
numbers, and a tiny end-to-end run (subprocesses: the script defines absl
flags)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CHECK = r"""
import sys
sys.path.insert(0, "experiments")
import numpy as np
from absl import flags
import test_time_bench as b
from jaxsi.sampling import adaptive
from jaxsi.sampling import test_time as tt
flags.FLAGS(["bench"])

answers = [["1", "1", "2", "2"], ["3", "4", "3", "3"]]
correct = np.asarray([[1, 1, 0, 0], [1, 0, 1, 1]], np.float32)
lengths = np.asarray([[2, 2, 2, 2], [3, 3, 3, 3]], np.int32)
c = tt.Candidates(tasks=[None, None], texts=[[""] * 4] * 2, answers=answers,
                  correct=correct, lengths=lengths, scores={})

# ESC, w = 2: problem 0 stops after [1, 1]; problem 1 sees [3, 4] then [3, 3].
draw = b.CandidatesDraw(c)
res = adaptive.run(draw, 2, policy=adaptive.esc, window=2, max_samples=4)
assert res.samples.tolist() == [2, 4], res.samples
assert res.tokens.tolist() == [4, 12], res.tokens
assert draw.calls == 2 and draw.rows == 2 * 2 + 1 * 2, (draw.calls, draw.rows)
assert b.result_grades(res).tolist() == [1.0, 1.0]
# fixed draws all 4: problem 0 ties 1:2 -> the first seen ("1", correct).
res = adaptive.run(b.CandidatesDraw(c), 2, policy=adaptive.fixed, window=2,
                   max_samples=4)
assert res.samples.tolist() == [4, 4] and res.chosen.tolist() == [0, 0]
# Asking beyond the drawn candidates is a clear error.
try:
  adaptive.run(b.CandidatesDraw(c), 2, policy=adaptive.fixed, window=2, max_samples=6)
  raise AssertionError("accepted max_samples > n")
except ValueError as e:
  assert "CandidatesDraw" in str(e) and "max_samples" in str(e), e

# grades: chosen -1 counts 0.
assert b.grades(c, np.asarray([2, -1])).tolist() == [0.0, 0.0]
assert b.grades(c, np.asarray([0, 2])).tolist() == [1.0, 1.0]
# paired: d = [1, 0, 0, 1]: mean 0.5, std (ddof 1) sqrt(1/3), SE sqrt(1/3)/2.
m, se = b.paired(np.asarray([1, 0, 1, 1]), np.asarray([0, 0, 1, 0]))
assert m == 0.5 and abs(se - (1 / 3) ** 0.5 / 2) < 1e-12, (m, se)
try:
  b.paired(np.asarray([1.0]), np.asarray([0.0]))
  raise AssertionError("one problem accepted")
except ValueError as e:
  assert "paired" in str(e)
print("checked")
"""


def test_candidates_draw_and_paired_se():
  out = subprocess.run([sys.executable, "-c", _CHECK], cwd=ROOT, capture_output=True,
                       text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checked" in out.stdout


def test_test_time_bench_smoke(tmp_path):
  out = tmp_path / "tt.md"
  cmd = [sys.executable, "experiments/test_time_bench.py", "--seeds=0,1",
         "--digits=1,2", "--n=4", "--ks=1,4", "--windows=2", "--n_train=40",
         "--n_test=8", "--sft_steps=2", "--d_model=16", "--layers=1", f"--out={out}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
  assert res.returncode == 0, res.stderr[-3000:]
  data = json.loads((tmp_path / "tt.md.json").read_text())
  assert [r["seed"] for r in data] == [0, 1]
  win = data[0]["windowed"]
  assert win["fixed/w2"]["samples"] == [4] * 8
  assert all(2 <= s <= 4 for s in win["esc/w2"]["samples"])
  text = out.read_text()
  assert "Windowed policies" in text and "samples d=1" in text
  assert (tmp_path / "tt.md.png").exists()
