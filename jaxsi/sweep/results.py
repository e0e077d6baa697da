"""What one run left in its workdir: final metrics and learning curves.

Both launchers write the same kinds of files (``jaxsi.training.metrics``):

* ``results.json`` (``rl_run.run``: a nested dict, e.g.
  ``{"after": {"greedy": {"all": 0.5}}, "train_reward_last10": 0.4}``) — its
  numeric leaves are the *final metrics*, named by their path joined with
  ``/`` (``after/greedy/all``); booleans are not metrics;
* ``rounds.json`` (``rounds_run.run``: one record per finished round) — the
  last record's numeric fields are final metrics too, prefixed ``round/``
  (``round/test_pass1``), and every round is a curve point (x = round);
* ``metrics.jsonl`` (both: one row per logged step, ``{"step": k, ...}``) —
  the *curves*: for every column, ``[(step, value), ...]``; the last row's
  values are also final metrics, prefixed ``last/`` (``last/reward/mean``).

Non-finite values (written as ``"nan"``/``"inf"`` strings) come back as
floats.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Optional

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclasses.dataclass(frozen=True)
class RunResult:
  """A run's final metrics and curves (``{name: [(x, y), ...]}``)."""
  workdir: str
  final: Mapping[str, float]
  curves: Mapping[str, list]


def _number(v: Any) -> Optional[float]:
  if isinstance(v, bool):
    return None
  if isinstance(v, (int, float)):
    return float(v)
  if isinstance(v, str) and v in _NONFINITE:
    return _NONFINITE[v]
  return None


def flatten(tree: Any, prefix: str = "") -> dict[str, float]:
  """Numeric leaves of a JSON tree as ``{"a/b/c": value}``."""
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}/"))
    return out
  x = _number(tree)
  if x is not None and prefix:
    out[prefix[:-1]] = x
  return out


def _read_json(path: str) -> Any:
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_curves(path: str) -> dict[str, list]:
  """``{column: [(step, value), ...]}`` of a ``metrics.jsonl`` (torn lines skipped)."""
  curves: dict[str, list] = {}
  if not os.path.exists(path):
    return curves
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # a kill during a write; the run rewinds it on resume
      step = _number(row.get("step"))
      if step is None:
        continue
      for k, v in row.items():
        x = _number(v)
        if k in ("step", "time") or x is None:
          continue
        curves.setdefault(k, []).append((step, x))
  return curves


def read_run(workdir: str) -> RunResult:
  """Reads ``results.json``, ``rounds.json`` and ``metrics.jsonl`` of a run."""
  final: dict[str, float] = {}
  results = _read_json(os.path.join(workdir, "results.json"))
  if isinstance(results, dict):
    final.update(flatten(results))
  curves = read_curves(os.path.join(workdir, "metrics.jsonl"))
  for name, points in curves.items():
    final[f"last/{name}"] = points[-1][1]
  rounds = _read_json(os.path.join(workdir, "rounds.json"))
  if isinstance(rounds, list) and rounds and isinstance(rounds[-1], dict):
    for k, v in flatten(rounds[-1]).items():
      final[f"round/{k}"] = v
    for i, rec in enumerate(rounds):
      x = _number(rec.get("round", i)) if isinstance(rec, dict) else None
      if x is None:
        continue
      for k, v in flatten(rec).items():
        if k != "round":
          curves.setdefault(f"round/{k}", []).append((x, v))
  return RunResult(workdir=workdir, final=final, curves=curves)
