"""Tests for jaxsi.training.evaluation."""

import itertools
import json
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from jaxsi.training import evaluation as E


def _brute_pass_at_k(n, c, k):
  """Fraction of size-k subsets of n samples (first c correct) with a hit."""
  subsets = list(itertools.combinations(range(n), k))
  hits = sum(any(i < c for i in s) for s in subsets)
  return Fraction(hits, len(subsets))


def test_pass_at_k_matches_enumeration():
  for n in range(1, 7):
    for c in range(n + 1):
      for k in range(1, n + 1):
        assert E.pass_at_k(n, c, k) == pytest.approx(
            float(_brute_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases_and_large_n():
  assert E.pass_at_k(10, 3, 1) == pytest.approx(0.3)
  assert E.pass_at_k(5, 0, 5) == 0.0
  assert E.pass_at_k(5, 5, 1) == 1.0
  # Large n: the product form stays finite and matches the exact ratio.
  exact = 1 - Fraction(comb(1000 - 7, 100), comb(1000, 100))
  assert E.pass_at_k(1000, 7, 100) == pytest.approx(float(exact), rel=1e-12)
  for bad in [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)]:
    with pytest.raises(ValueError):
      E.pass_at_k(*bad)


def test_maj_at_k_hand_cases():
  answers = ["7", None, None, "8", "8", "7"]
  correct = [True, False, False, False, False, True]
  assert E.maj_at_k(answers, correct, 1) == 1.0
  assert E.maj_at_k(answers, correct, 3) == 1.0   # "7" alone beats Nones.
  assert E.maj_at_k(answers, correct, 5) == 0.0   # "8" x2 beats "7" x1.
  assert E.maj_at_k(answers, correct, 6) == 1.0   # Tie 2-2: "7" came first.
  assert E.maj_at_k([None, None], [False, True], 2) == 0.0
  with pytest.raises(ValueError):
    E.maj_at_k(["a"], [True, False], 1)
  with pytest.raises(ValueError):
    E.maj_at_k(["a"], [True], 2)


def _records():
  return [
      {"task_id": "a1", "category": "arith", "difficulty": 1,
       "answers": ["1", "1", "2", None], "correct": [True, True, False, False]},
      {"task_id": "a2", "category": "arith", "difficulty": 2,
       "answers": ["5", "6", "6", "5"], "correct": [False, True, True, False]},
      {"task_id": "s1", "category": "string", "difficulty": 1,
       "answers": np.array([None, None, None, None], dtype=object),
       "correct": np.zeros(4, bool)},
      {"task_id": "s2", "category": "string", "difficulty": 2.0,
       "answers": ["x", "y", "z", "x"], "correct": [False, False, False, True]},
  ]


def test_evaluate_groups_and_values():
  res = E.evaluate(_records(), ks=(1, 2), maj_ks=(4,), per_task=True)
  assert res["ks"] == [1, 2] and res["maj_ks"] == [4]
  o = res["overall"]
  assert o["num_tasks"] == 4 and o["num_samples"] == 16
  # pass@1 per task: 0.5, 0.5, 0, 0.25.
  assert o["pass@1"] == pytest.approx((0.5 + 0.5 + 0 + 0.25) / 4)
  # pass@2 per task: 1-C(2,2)/C(4,2)=5/6, 5/6, 0, 1-C(3,2)/C(4,2)=1/2.
  assert o["pass@2"] == pytest.approx((5 / 6 + 5 / 6 + 0 + 0.5) / 4)
  # maj@4 per task: "1" wins (correct); tie "5"/"6" -> "5" (wrong); all None;
  # "x" wins, first "x" is sample 0 (graded False).
  assert res["tasks"]["a1"]["maj@4"] == 1.0
  assert res["tasks"]["a2"]["maj@4"] == 0.0
  assert res["tasks"]["s2"]["maj@4"] == 0.0
  assert o["maj@4"] == pytest.approx(0.25)
  assert list(res["by_category"]) == ["arith", "string"]
  assert list(res["by_difficulty"]) == ["1", "2"]  # 2.0 -> "2".
  assert res["by_category"]["arith"]["pass@1"] == pytest.approx(0.5)
  assert res["by_difficulty"]["2"]["pass@1"] == pytest.approx(0.375)
  cell = res["by_category_difficulty"]["string"]["2"]
  assert cell["num_tasks"] == 1 and cell["pass@1"] == pytest.approx(0.25)


def test_evaluate_defaults_and_errors():
  res = E.evaluate(_records())
  assert res["ks"] == [1, 2, 4] and res["maj_ks"] == [4]
  with pytest.raises(ValueError, match="k=8"):
    E.evaluate(_records(), ks=(8,))
  with pytest.raises(ValueError, match="Duplicated"):
    E.evaluate(_records() + _records()[:1])
  with pytest.raises(ValueError, match="answers"):
    E.evaluate([{"task_id": "t", "answers": ["a"], "correct": [True, False]}])
  with pytest.raises(ValueError):
    E.evaluate([])


def test_table_json_and_plots(tmp_path):
  res = E.evaluate(_records(), ks=(1, 2), maj_ks=(4,))
  table = E.results_table(res)
  lines = table.splitlines()
  assert lines[0] == "| group | tasks | samples | pass@1 | pass@2 | maj@4 |"
  assert "| overall | 4 | 16 | 0.312 | 0.542 | 0.250 |" in lines
  assert any(l.startswith("| arith / 2 |") for l in lines)
  path = tmp_path / "sub" / "results.json"
  E.save_results(res, str(path))
  assert E.load_results(str(path)) == res
  assert json.loads(path.read_text())["overall"]["num_tasks"] == 4
  for kind in ("bars", "lines"):
    png = tmp_path / f"{kind}.png"
    E.plot_results(res, str(png), metric="maj@4", kind=kind)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000
  with pytest.raises(ValueError, match="pass@8"):
    E.plot_results(res, str(tmp_path / "x.png"), metric="pass@8")
  curve = tmp_path / "curve.png"
  E.plot_curves({"round": [0, 1, 2], "acc": [0.1, None, 0.4],
                 "pass@4": [0.2, 0.3, 0.5]}, str(curve), title="rounds")
  assert curve.stat().st_size > 1000
  with pytest.raises(ValueError, match="acc"):
    E.plot_curves({"round": [0, 1], "acc": [0.1]}, str(curve))


def test_print_results_uses_rich():
  from rich.console import Console
  console = Console(record=True, width=120)
  E.print_results(E.evaluate(_records(), ks=(1,), maj_ks=()), console=console)
  text = console.export_text()
  assert "overall" in text and "0.312" in text
