"""The test-time launcher's deepening rows: same axes, trigger tokens, bad bindings."""

from __future__ import annotations

import json
import os

import pytest

from jaxsi.training import arguments
from jaxsi.training import test_time_run

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
        "head_dim": 16, "d_ff": 64}


@pytest.mark.parametrize("kw, match", [
    (dict(deepening=(1, -1)), r"deepening = \(1, -1\)"),
    (dict(deepening=(1,), trigger="\u00e9"), r"trigger: .*cannot be encoded"),
    (dict(deepening=(1,), trigger=""), r"trigger: .*non-empty"),
])
def test_bad_deepening_bindings(tmp_path, kw, match):
  with pytest.raises(arguments.ArgumentError, match=match):
    test_time_run.run(workdir=str(tmp_path), model_overrides=TINY, n_tasks=1, **kw)


def test_deepening_rows_in_every_report(tmp_path):
  out = test_time_run.run(workdir=str(tmp_path), model_overrides=TINY, n_tasks=3,
                          ns=(1, 2), window=1, max_new_tokens=3, batch_size=8,
                          selectors=("first",), policies=(),
                          deepening=(0, 1), trigger=" wait ")
  rows = {(r["depth"], r["k"], r["selector"]): r for r in out["deepening"]}
  assert sorted(rows) == sorted(
      (d, k, f"deepen d={d} {s}") for d in (0, 1) for k in (1, 2)
      for s in ("first", "majority"))
  for k in (1, 2):
    plain, deep = rows[(0, k, "deepen d=0 first")], rows[(1, k, "deepen d=1 first")]
    assert plain["trigger_tokens_per_problem"] == 0.0
    # " wait " is 6 characters, injected once per sample.
    assert deep["trigger_tokens_per_problem"] == 6 * k
    # Every sample generates >= 1 and <= 3 tokens per turn.
    assert k <= plain["tokens_per_problem"] <= 3 * k
    assert plain["tokens_per_problem"] + k <= deep["tokens_per_problem"]
    assert deep["tokens_per_problem"] <= plain["tokens_per_problem"] + 3 * k
    assert plain["changed"] == 0.0
  with open(os.path.join(tmp_path, "test_time.json"), encoding="utf-8") as f:
    assert len(json.load(f)["deepening"]) == 8
  md = (tmp_path / "test_time.md").read_text()
  assert "Iterative deepening (trigger ' wait '" in md
  assert "| deepen d=1 majority |" in md
  assert os.path.exists(tmp_path / "test_time.png")
