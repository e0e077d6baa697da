"""Plots of runs and sweeps (matplotlib, written as PNG files, no display).

* :func:`curve_band` — the mean and sample standard deviation over seeds of
  a learning curve, on the steps every seed logged;
* :func:`sweep_plots` — for a sweep summary (``jaxsi.sweep.summary``): one
  learning-curve figure per curve (a line per configuration, a ±1 std band
  over seeds) and one figure per (final metric, axis): the metric against the
  axis value, one series per setting of the other axes, error bars = std
  over seeds, every seed's value as a small dot beside its mean;
* :func:`compare_plot` — learning curves of several runs side by side
  (``jaxsi compare``).
"""

from __future__ import annotations

import math
import os
import re
from typing import Mapping, Optional, Sequence

from jaxsi.sweep import results as results_lib


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _file_name(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "metric"


def curve_band(curves: Sequence[Sequence[tuple]]) -> tuple[list, list, list]:
  """``(steps, mean, std)`` over the given runs' ``[(step, value), ...]``.

  Only steps that every run logged are kept (a run that stopped early
  shortens the band, it never pulls the mean towards fewer seeds); ``std``
  is the sample standard deviation (ddof = 1), 0 with a single run.
  """
  if not curves:
    return [], [], []
  maps = [dict(c) for c in curves]
  steps = sorted(set.intersection(*[set(m) for m in maps]))
  means, stds = [], []
  for s in steps:
    vals = [m[s] for m in maps]
    mu = sum(vals) / len(vals)
    means.append(mu)
    stds.append(math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
                if len(vals) > 1 else 0.0)
  return steps, means, stds


def _curves_figure(path: str, name: str, series: Mapping[str, Sequence[Sequence[tuple]]],
                   xlabel: str = "step") -> Optional[str]:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  drawn = False
  for label, runs in series.items():
    steps, mean, std = curve_band([r for r in runs if r])
    if not steps:
      continue
    drawn = True
    (line,) = ax.plot(steps, mean, label=f"{label} (n={len(runs)})")
    if len(runs) > 1:
      ax.fill_between(steps, [m - s for m, s in zip(mean, std)],
                      [m + s for m, s in zip(mean, std)],
                      color=line.get_color(), alpha=0.2, linewidth=0)
  if not drawn:
    plt.close(fig)
    return None
  ax.set_xlabel(xlabel)
  ax.set_ylabel(name)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def sweep_plots(summary: dict, out_dir: str) -> list[str]:
  """Writes the sweep's figures under ``out_dir``; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  done = [t for t in summary["trials"] if t["status"] == "done"]
  runs = {t["id"]: results_lib.read_run(t["workdir"]) for t in done}
  for curve in summary["curves"]:
    series = {}
    for t in done:
      points = runs[t["id"]].curves.get(curve)
      if points:
        series.setdefault(t["config"], []).append(points)
    xlabel = "round" if curve.startswith("round/") else "step"
    p = _curves_figure(os.path.join(out_dir, f"curve_{_file_name(curve)}.png"),
                       curve, series, xlabel=xlabel)
    if p:
      written.append(p)
  axes = summary["axes"]
  plt = None
  for metric in summary["metrics"]:
    for axis in axes:
      labels = [g["label"] for g in summary["by_axis"][axis]]
      others = [a for a in axes if a != axis]
      series = {}
      for c in summary["configs"]:
        stat = c["metrics"].get(metric)
        if not stat or not stat["n"]:
          continue
        key = ",".join(f"{a}={c['assignment'][a]}" for a in others) or metric
        series.setdefault(key, []).append(
            (labels.index(c["assignment"][axis]), stat["mean"], stat["std"] or 0.0,
             stat["values"]))
      if not series:
        continue
      plt = plt or _pyplot()
      fig, ax = plt.subplots(figsize=(6.4, 4.0))
      width = 0.3 / max(1, len(series))
      for i, (key, pts) in enumerate(series.items()):
        off = (i - (len(series) - 1) / 2) * width
        bars = ax.errorbar([x + off for x, _, _, _ in pts], [m for _, m, _, _ in pts],
                           yerr=[s for _, _, s, _ in pts], fmt="o", capsize=3, label=key)
        # Every seed's value beside its mean.
        ax.scatter([x + off + width / 3 for x, _, _, vals in pts for _ in vals],
                   [v for _, _, _, vals in pts for v in vals], s=9, alpha=0.5,
                   color=bars[0].get_color(), linewidths=0)
      ax.set_xticks(range(len(labels)), labels)
      ax.set_xlabel(axis)
      ax.set_ylabel(metric)
      ax.grid(alpha=0.3)
      if others:
        ax.legend(fontsize="small")
      ax.set_title(f"{metric} (mean ± std over seeds)", fontsize="medium")
      fig.tight_layout()
      p = os.path.join(out_dir, f"final_{_file_name(metric)}_by_{_file_name(axis)}.png")
      fig.savefig(p, dpi=100)
      plt.close(fig)
      written.append(p)
  return written


def compare_plot(runs: Mapping[str, results_lib.RunResult], curves: Sequence[str],
                 path: str) -> Optional[str]:
  """One panel per curve, a line per run; ``None`` if no run has any of them."""
  curves = [c for c in curves if any(c in r.curves for r in runs.values())]
  if not curves:
    return None
  plt = _pyplot()
  fig, axs = plt.subplots(len(curves), 1, figsize=(6.4, 3.2 * len(curves)),
                          squeeze=False)
  for ax, curve in zip(axs[:, 0], curves):
    for label, r in runs.items():
      pts = r.curves.get(curve)
      if pts:
        ax.plot([x for x, _ in pts], [y for _, y in pts], label=label)
    ax.set_ylabel(curve)
    ax.set_xlabel("round" if curve.startswith("round/") else "step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
