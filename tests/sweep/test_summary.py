"""Sweep summaries and plots over hand-written trial directories (no processes)."""

import json
import math
import os

import pytest

from jaxsi.sweep import executor
from jaxsi.sweep import plots
from jaxsi.sweep import summary as S


def _trial(sweep_dir, tid, assignment, seed, status, results=None, curve=None, error=None):
  wd = os.path.join(sweep_dir, "trials", tid)
  os.makedirs(wd)
  with open(os.path.join(wd, executor.TRIAL_FILE), "w") as f:
    json.dump(dict(id=tid, status=status, returncode=0 if status == "done" else 2,
                   error=error), f)
  if results is not None:
    with open(os.path.join(wd, "results.json"), "w") as f:
      json.dump(results, f)
  if curve is not None:
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
      for step, v in curve:
        f.write(json.dumps({"step": step, "time": 1.0, "reward/mean": v}) + "\n")
  config = ",".join(f"{k}={v}" for k, v in assignment.items())
  return dict(id=tid, assignment=assignment, values={}, seed=seed, gin_files=[],
              bindings=[], config=config)


@pytest.fixture
def sweep_dir(tmp_path):
  d = str(tmp_path / "sw")
  trials = [
      _trial(d, "a0", {"m": "a", "n": "4"}, 0, "done", {"acc": 0.5, "s": {"x": 1}},
             [(1, 0.0), (2, 1.0), (3, 2.0)]),
      _trial(d, "a1", {"m": "a", "n": "4"}, 1, "done", {"acc": 0.7, "s": {"x": 1}},
             [(1, 2.0), (2, 3.0)]),
      _trial(d, "b0", {"m": "b", "n": "4"}, 0, "done", {"acc": "nan", "s": {"x": 1}}),
      _trial(d, "b1", {"m": "b", "n": "4"}, 1, "failed", error="Traceback\nValueError: bad\n  In call"),
      _trial(d, "a0n8", {"m": "a", "n": "8"}, 0, "done", {"acc": 0.9, "s": {"x": 1}}),
  ]
  with open(os.path.join(d, executor.TRIALS_FILE), "w") as f:
    json.dump(dict(name="hand", axes=["m", "n"], seed_binding="x.seed", summary={},
                   trials=trials + [dict(trials[-1], id="a1n8", seed=1)]), f)
  return d


def test_mean_std_hand_computed():
  assert S.mean_std([1.0, 2.0, 4.0]) == dict(
      mean=7 / 3, std=pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                              + (4 - 7 / 3) ** 2) / 2)),
      n=3, values=[1.0, 2.0, 4.0])
  assert S.mean_std([3.0]) == dict(mean=3.0, std=None, n=1, values=[3.0])
  assert S.mean_std([])["mean"] is None


def test_summary_per_config_and_axis(sweep_dir):
  s = S.write_summary(sweep_dir, plot=False)
  assert s["metrics"] == ["acc"]  # s/x is the same everywhere: not shown
  rows = {c["config"]: c for c in s["configs"]}
  assert list(rows) == ["m=a,n=4", "m=b,n=4", "m=a,n=8"]
  assert rows["m=a,n=4"]["metrics"]["acc"]["mean"] == pytest.approx(0.6)
  assert rows["m=a,n=4"]["metrics"]["acc"]["std"] == pytest.approx(math.sqrt(0.02))
  b = rows["m=b,n=4"]
  assert b["n_done"] == 1 and b["n_failed"] == 1
  assert math.isnan(b["metrics"]["acc"]["mean"])  # a diverged seed is not hidden
  assert rows["m=a,n=8"]["n_done"] == 1 and rows["m=a,n=8"]["trials"] == ["a0n8", "a1n8"]
  by_m = {g["label"]: g for g in s["by_axis"]["m"]}
  assert by_m["a"]["n"] == 3
  assert by_m["a"]["metrics"]["acc"]["mean"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
  statuses = {t["id"]: t["status"] for t in s["trials"]}
  assert statuses["a1n8"] == "pending" and statuses["b1"] == "failed"
  md = open(os.path.join(sweep_dir, S.SUMMARY_MD)).read()
  assert "| a | 4 | 2/2 | 0.600 ± 0.141 (2) |" in md
  assert "| b | 4 | 1/2 | nan (1) |" in md
  assert "## By m (pooled over seeds and the other axes)" in md
  assert "| b1 | failed | 2 | ValueError: bad |" in md
  assert "| a1n8 | pending | - | - |" in md
  data = json.load(open(os.path.join(sweep_dir, S.SUMMARY_JSON)))
  assert data["configs"][1]["metrics"]["acc"]["mean"] == "nan"


def test_curve_band_keeps_common_steps_only():
  steps, mean, std = plots.curve_band([[(1, 0.0), (2, 1.0), (3, 2.0)], [(1, 2.0), (2, 3.0)]])
  assert steps == [1, 2] and mean == [1.0, 2.0]
  assert std == pytest.approx([math.sqrt(2.0), math.sqrt(2.0)])
  assert plots.curve_band([[(1, 5.0)]]) == ([1], [5.0], [0.0])


def test_plots_are_written(sweep_dir):
  s = S.write_summary(sweep_dir, plot=True)
  names = sorted(os.path.basename(p) for p in s["plots"])
  assert names == ["curve_reward_mean.png", "final_acc_by_m.png", "final_acc_by_n.png"]
  assert all(os.path.getsize(p) > 1000 for p in s["plots"])


def test_not_a_sweep_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a sweep directory"):
    S.summarize(str(tmp_path))
