"""Runs side by side: results.json / rounds.json / metrics.jsonl read back, table, plot."""

import json
import os

import pytest

from jaxsi.sweep import compare
from jaxsi.sweep import results


def _run(d, res=None, rows=(), rounds=None):
  os.makedirs(d)
  if res is not None:
    json.dump(res, open(os.path.join(d, "results.json"), "w"))
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    f.write('{"step": 9, "lo')  # a torn last line (a killed run)
  if rounds is not None:
    json.dump(rounds, open(os.path.join(d, "rounds.json"), "w"))
  return d


def test_read_run(tmp_path):
  d = _run(str(tmp_path / "r"), {"after": {"greedy": {"all": 0.25}}, "multi_turn": False,
                                 "method": "grpo", "x": "inf"},
           [{"step": 1, "time": 5.0, "loss": 2.0}, {"step": 2, "time": 6.0, "loss": "nan"}],
           [{"round": 0, "test_pass1": 0.1}, {"round": 1, "test_pass1": 0.3}])
  r = results.read_run(d)
  assert r.final["after/greedy/all"] == 0.25 and r.final["x"] == float("inf")
  assert "multi_turn" not in r.final and "method" not in r.final
  assert r.curves["loss"][0] == (1.0, 2.0) and len(r.curves["loss"]) == 2
  assert r.final["last/loss"] != r.final["last/loss"]  # nan
  assert r.final["round/test_pass1"] == 0.3
  assert r.curves["round/test_pass1"] == [(0.0, 0.1), (1.0, 0.3)]


def test_compare_table_and_plot(tmp_path):
  a = _run(str(tmp_path / "grpo" / "seed0"), {"acc": 0.5, "same": 1},
           [{"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.4}])
  b = _run(str(tmp_path / "rloo" / "seed0"), {"acc": 0.75, "same": 1},
           [{"step": 1, "reward/mean": 0.2}])
  res = compare.compare([a, b])
  assert [r["label"] for r in res["runs"]] == ["grpo/seed0", "rloo/seed0"]
  assert res["metrics"] == ["acc"] and res["table"]["acc"] == [0.5, 0.75]
  assert compare.to_markdown(res) == ("| metric | grpo/seed0 | rloo/seed0 |\n|---|---|---|\n"
                                      "| acc | 0.5 | 0.75 |\n")
  path = compare.write_plot(res, str(tmp_path / "out" / "c.png"))
  assert os.path.getsize(path) > 1000
  with pytest.raises(FileNotFoundError, match="no such run directory"):
    compare.compare([a, str(tmp_path / "nope")])
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no results.json"):
    compare.compare([str(tmp_path / "empty")])
