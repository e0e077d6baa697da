"""Several runs side by side: a table of final metrics and their learning curves.

``compare(workdirs)`` reads each run (``jaxsi.sweep.results``) and returns a
dict (``jaxsi compare`` prints its markdown and writes ``compare.json`` /
``compare.png`` when asked)::

  {"runs": [{"label": str, "workdir": str}, ...],
   "metrics": [str, ...],                     # rows of the table
   "table": {metric: [float | null, ...]},    # one value per run, in order
   "curves": [str, ...]}                      # what the plot shows

Labels are the shortest distinct path tails of the workdirs (``grpo/seed0``
rather than the full paths). ``metrics`` defaults to every final metric
that some run reports, ``last/…`` and ``…seconds`` aside, and that differs
between the runs (all of them if none differs).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from jaxsi.sweep import plots
from jaxsi.sweep import results as results_lib


def labels_for(workdirs: Sequence[str]) -> list[str]:
  """The shortest distinct trailing path components of each workdir."""
  parts = [os.path.normpath(os.path.abspath(w)).split(os.sep) for w in workdirs]
  for k in range(1, max(len(p) for p in parts) + 1):
    labels = ["/".join(p[-k:]) for p in parts]
    if len(set(labels)) == len(labels):
      return labels
  return [os.path.abspath(w) for w in workdirs]


def compare(workdirs: Sequence[str], *, metrics: Optional[Sequence[str]] = None,
            curves: Optional[Sequence[str]] = None) -> dict:
  """The comparison dict (schema in the module docstring).

  Raises:
    FileNotFoundError: a workdir does not exist or holds no run output.
  """
  runs = {}
  for label, wd in zip(labels_for(workdirs), workdirs):
    if not os.path.isdir(wd):
      raise FileNotFoundError(f"{wd}: no such run directory")
    r = results_lib.read_run(wd)
    if not r.final and not r.curves:
      raise FileNotFoundError(f"{wd}: no results.json, rounds.json or metrics.jsonl"
                              " (not a finished or started run)")
    runs[label] = r
  names = sorted({k for r in runs.values() for k in r.final})
  if metrics is None:
    shown = [k for k in names if not k.startswith("last/") and not k.endswith("seconds")]
    varying = [k for k in shown if len({r.final.get(k) for r in runs.values()}) > 1]
    metrics = varying or shown
  if curves is None:
    curves = [c for c in ("reward/mean", "loss", "round/test_pass1")
              if any(c in r.curves for r in runs.values())]
  return dict(runs=[dict(label=l, workdir=r.workdir) for l, r in runs.items()],
              metrics=list(metrics),
              table={m: [r.final.get(m) for r in runs.values()] for m in metrics},
              curves=list(curves), _runs=runs)


def to_markdown(result: dict, precision: int = 4) -> str:
  labels = [r["label"] for r in result["runs"]]
  lines = ["| metric | " + " | ".join(labels) + " |",
           "|" + "---|" * (len(labels) + 1)]
  for m in result["metrics"]:
    cells = ["-" if v is None else f"{v:.{precision}g}" for v in result["table"][m]]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_plot(result: dict, path: str) -> Optional[str]:
  """The learning curves of the compared runs (``None`` if they have none)."""
  return plots.compare_plot(result["_runs"], result["curves"], path)
