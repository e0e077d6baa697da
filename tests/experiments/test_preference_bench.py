"""Smoke test of experiments/preference_bench.py (minimal settings)."""

import json

import numpy as np
import pytest

from experiments import preference_bench as bench


def test_preference_bench_smoke(tmp_path):
  out = tmp_path / "r.json"
  summary = bench.main([
      "--seeds", "0", "--arms", "scpo", "--rounds", "1",
      "--warm_steps", "2", "--round_steps", "1", "--batch_size", "4", "--k", "2",
      "--n_labeled", "4", "--n_unlabeled", "4", "--n_test", "2", "--d_model", "32",
      "--n_layers", "1", "--max_new_tokens", "3",
      "--workdir", str(tmp_path / "w"), "--out", str(out)])
  data = json.loads(out.read_text())
  assert set(data["results"]["0"]) == {"scpo"}
  assert len(data["results"]["0"]["scpo"]["test_pass1"]) == 2     # warm start + 1 round
  assert summary["warm_start"]["final"][0] == data["results"]["0"]["scpo"]["test_pass1"][0]
  assert "| scpo |" in data["table"]
  with pytest.raises(ValueError, match="unknown arm"):
    bench.main(["--arms", "nope"])


def test_pair_monitor_summary_by_hand():
  res = {0: {"a": dict(test_pass1=[0.1, 0.3], monitors=[dict(pairs=2, chosen_wrong=0.5,
                                                              rejected_correct=0.0,
                                                              chosen_len=3.0, rejected_len=5.0)]),
             "scpo": dict(test_pass1=[0.1, 0.2], monitors=[dict(pairs=0)]),
             "iterative_dpo": dict(test_pass1=[0.1, 0.5], monitors=[{}])}}
  s = bench.summarise(res, ["a", "scpo", "iterative_dpo"], 1)
  assert s["a"]["final"] == pytest.approx((0.3, 0.0)) and s["a"]["gain"] == pytest.approx(0.2)
  assert s["a"]["chosen_wrong"] == 0.5 and np.isnan(s["scpo"]["chosen_wrong"])
  # ScPO gain 0.1 over iterative DPO's 0.4
  assert s["scpo_gain_ratio"] == pytest.approx(0.25)


def test_gain_ratio_is_undefined_without_a_baseline_gain():
  res = {0: {"scpo": dict(test_pass1=[0.1, 0.05], monitors=[{}]),
             "iterative_dpo": dict(test_pass1=[0.1, 0.02], monitors=[{}])}}
  assert np.isnan(bench.summarise(res, ["scpo", "iterative_dpo"], 1)["scpo_gain_ratio"])
