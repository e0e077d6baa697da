"""experiments/deepening_bench.py: equal-token pairing by hand, and a tiny run."""

import json

import pytest

from experiments import deepening_bench as bench


def _deep(depth, k, sel, acc, tokens=1.0):
  return dict(trigger="=", depth=depth, k=k, selector=f"deepen d={depth} {sel}",
              tokens_per_problem=tokens, trigger_tokens_per_problem=float(depth * k),
              accuracy=acc, changed=0.5, right_to_wrong=0.25, wrong_to_right=0.0,
              fallback=0.125)


def test_pairs_and_aggregate_by_hand():
  plain = [dict(k=k, tokens_per_problem=3.0 * k, accuracy=0.1 * k) for k in range(1, 5)]
  res = dict(plain=plain, deep=[
      _deep(1, 1, "first", 0.5), _deep(1, 1, "majority", 0.5),   # k=1: first only
      _deep(1, 2, "first", 0.9), _deep(1, 2, "majority", 0.6),   # k=2: majority only
      _deep(3, 1, "first", 0.2), _deep(3, 2, "majority", 0.9)])  # 3·... > 4 left out
  got = bench.pairs(res, n_plain=4)
  assert [(r["depth"], r["k"], r["selector"], r["plain_k"]) for r in got] == [
      (1, 1, "first", 2), (1, 2, "majority", 4), (3, 1, "first", 4)]
  assert got[1]["plain_tokens"] == 12.0 and got[1]["plain_accuracy"] == pytest.approx(0.4)
  other = [dict(r, accuracy=r["accuracy"] + 0.1) for r in got]
  agg = bench.aggregate([got, other])
  assert agg[0]["delta"] == pytest.approx([0.5 - 0.2, 0.6 - 0.2])
  line = bench.markdown(agg).splitlines()[2]
  assert line.startswith("| '=' | 1 | 1 | first |") and "0.550 ± 0.050" in line
  assert "+0.350 ± 0.050 |" in line


def test_tiny_run(tmp_path):
  out = tmp_path / "b.md"
  summary = bench.main(["--seeds=0", "--n_train=16", "--n_test=3", "--sft_steps=0",
                        "--d_model=32", "--layers=1", "--n_plain=4", "--n_deep=2",
                        "--rounds=1", "--triggers= wait ", "--batch_size=8",
                        f"--out={out}"])
  assert [(r["trigger"], r["k"], r["plain_k"]) for r in summary["rows"]] == [
      (" wait ", 1, 2), (" wait ", 2, 4)]
  assert summary["rows"][0]["trigger_tokens"] == [6.0]
  data = json.loads((tmp_path / "b.md.json").read_text())
  assert "| ' wait ' | 1 | 2 | majority |" in data["table"]
  with pytest.raises(ValueError, match="--seeds and --triggers"):
    bench.main(["--seeds="])
