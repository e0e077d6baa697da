r"""The summary of a sweep: mean ± std over seeds per metric and configuration.

``summarize(sweep_dir)`` reads ``<sweep_dir>/trials.json`` (written by the
executor or ``--slurm``), every trial's ``trial.json`` and its workdir
(``jaxsi.sweep.results``), and returns (``write_summary`` also writes it as
``summary.json`` and ``summary.md``)::

  {
    "sweep": str,                         # the sweep's name
    "axes": [str, ...],                   # axis names, in file order
    "seed_binding": str | null,
    "metrics": [str, ...],                # final metrics shown in summary.md
    "curves": [str, ...],                 # metrics.jsonl columns plotted
    "trials": [{
      "id": str, "config": str,           # config: "method=grpo,n=4" (no seed)
      "assignment": {axis: label}, "seed": int | null,
      "status": "done" | "failed" | "interrupted" | "running" | "pending",
      "returncode": int | null, "error": str | null,   # last stderr lines
      "workdir": str, "final": {metric: float}}, ...],
    "configs": [{                         # one per configuration, file order
      "config": str, "assignment": {axis: label},
      "trials": [id, ...], "n_done": int, "n_failed": int,
      "metrics": {metric: {"mean": float, "std": float | null,
                           "n": int, "values": [float, ...]}}}, ...],
    "by_axis": {axis: [{"label": str, "n": int,   # pooled over seeds and
                        "metrics": {metric: {...}}}, ...]}  # the other axes
  }

``mean`` is over the finished trials (seeds) of a configuration that report
the metric; ``std`` is the sample standard deviation (ddof = 1), ``null``
with fewer than two values. Failed trials count in ``n_failed`` and appear
with their error; they contribute no values. Non-finite values are kept in
``values`` and make the mean non-finite (a diverged seed is not hidden).
The JSON holds every final metric; ``metrics`` (the sweep file's
``[summary] metrics``, else every final metric that differs between trials,
``last/…`` and ``…seconds`` ones aside) is what the markdown shows.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

from jaxsi.sweep import executor
from jaxsi.sweep import results as results_lib

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def mean_std(values: Sequence[float]) -> dict:
  """``{'mean', 'std' (ddof=1, None if n < 2), 'n', 'values'}``."""
  vals = [float(v) for v in values]
  n = len(vals)
  if n == 0:
    return dict(mean=None, std=None, n=0, values=[])
  mean = sum(vals) / n
  std = None
  if n >= 2:
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
  return dict(mean=mean, std=std, n=n, values=vals)


def load_trials(sweep_dir: str) -> dict:
  path = os.path.join(sweep_dir, executor.TRIALS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {sweep_dir} is not a sweep directory (run"
        " `jaxsi sweep FILE --dir DIR` or `--slurm` first)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _default_metrics(finals: Sequence[dict]) -> list:
  names = sorted({k for f in finals for k in f})
  shown = [k for k in names if not k.startswith("last/") and not k.endswith("seconds")]
  varying = [k for k in shown
             if len({json.dumps(f.get(k)) for f in finals}) > 1]
  return varying or shown


def summarize(sweep_dir: str, *, metrics: Optional[Sequence[str]] = None,
              curves: Optional[Sequence[str]] = None) -> dict:
  """The summary dict (schema in the module docstring)."""
  info = load_trials(sweep_dir)
  cfg = info.get("summary") or {}
  trials = []
  for t in info["trials"]:
    wd = os.path.join(sweep_dir, executor.TRIALS_DIR, t["id"])
    rec = None
    rec_path = os.path.join(wd, executor.TRIAL_FILE)
    if os.path.exists(rec_path):
      with open(rec_path, encoding="utf-8") as f:
        rec = json.load(f)
    status = rec["status"] if rec else "pending"
    final = results_lib.read_run(wd).final if status == "done" else {}
    trials.append(dict(id=t["id"], config=t["config"], assignment=t["assignment"],
                       seed=t["seed"], status=status,
                       returncode=rec.get("returncode") if rec else None,
                       error=rec.get("error") if rec else None,
                       workdir=wd, final=final))
  done = [t for t in trials if t["status"] == "done"]
  names = sorted({k for t in done for k in t["final"]})
  shown = list(metrics or cfg.get("metrics") or _default_metrics([t["final"] for t in done]))
  if curves is None:
    curves = cfg.get("curves")
  if not curves:
    curves = [c for c in ("reward/mean", "round/test_pass1", "loss")
              if any(f"last/{c}" in t["final"] or f"{c}" in t["final"] for t in done)][:1]

  def aggregate(members):
    ok = [t for t in members if t["status"] == "done"]
    return {m: mean_std([t["final"][m] for t in ok if m in t["final"]])
            for m in names}

  configs, order = {}, []
  for t in trials:
    if t["config"] not in configs:
      configs[t["config"]] = []
      order.append(t["config"])
    configs[t["config"]].append(t)
  config_rows = []
  for key in order:
    members = configs[key]
    config_rows.append(dict(
        config=key, assignment=members[0]["assignment"],
        trials=[t["id"] for t in members],
        n_done=sum(t["status"] == "done" for t in members),
        n_failed=sum(t["status"] == "failed" for t in members),
        metrics=aggregate(members)))
  by_axis = {}
  for axis in info.get("axes", []):
    labels = []
    for t in trials:
      if t["assignment"][axis] not in labels:
        labels.append(t["assignment"][axis])
    by_axis[axis] = [
        dict(label=lab, n=sum(1 for t in done if t["assignment"][axis] == lab),
             metrics=aggregate([t for t in trials if t["assignment"][axis] == lab]))
        for lab in labels]
  return dict(sweep=info["name"], axes=info.get("axes", []),
              seed_binding=info.get("seed_binding"), metrics=shown,
              curves=list(curves), trials=trials, configs=config_rows,
              by_axis=by_axis)


def format_stat(stat: Optional[dict], precision: int = 3) -> str:
  """``0.512 ± 0.031 (3)``; ``-`` when no trial reports the metric."""
  if not stat or not stat.get("n"):
    return "-"
  mean = f"{stat['mean']:.{precision}f}"
  if stat["std"] is None:
    return f"{mean} (1)"
  return f"{mean} ± {stat['std']:.{precision}f} ({stat['n']})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
  return out


def to_markdown(summary: dict) -> str:
  """The summary as markdown: per configuration, per axis value, failures."""
  axes, metrics = summary["axes"], summary["metrics"]
  lines = [f"# Sweep {summary['sweep']}", ""]
  n_done = sum(t["status"] == "done" for t in summary["trials"])
  lines.append(f"{n_done}/{len(summary['trials'])} trials done; mean ± std"
               " (sample std) over seeds, number of seeds in brackets.")
  lines.append("")
  header = list(axes) + ["seeds done"] + list(metrics)
  rows = []
  for c in summary["configs"]:
    rows.append([c["assignment"][a] for a in axes]
                + [f"{c['n_done']}/{len(c['trials'])}"]
                + [format_stat(c["metrics"].get(m)) for m in metrics])
  lines += _table(header, rows)
  if len(axes) > 1:
    for axis, groups in summary["by_axis"].items():
      lines += ["", f"## By {axis} (pooled over seeds and the other axes)", ""]
      lines += _table([axis, "trials"] + list(metrics),
                      [[g["label"], g["n"]] + [format_stat(g["metrics"].get(m))
                                               for m in metrics] for g in groups])
  bad = [t for t in summary["trials"] if t["status"] not in ("done",)]
  if bad:
    lines += ["", "## Not finished", ""]
    rows = []
    for t in bad:
      rows.append([t["id"], t["status"], t["returncode"] if t["returncode"] is not None
                   else "-", executor.error_line(t["error"]) or "-"])
    lines += _table(["trial", "status", "exit", "last error line"], rows)
  return "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
  if isinstance(obj, float) and not math.isfinite(obj):
    return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
  if isinstance(obj, dict):
    return {k: _json_safe(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_json_safe(v) for v in obj]
  return obj


def write_summary(sweep_dir: str, *, plot: bool = True, **kwargs) -> dict:
  """Writes ``summary.json``, ``summary.md`` (and ``plots/``); returns the summary."""
  summary = summarize(sweep_dir, **kwargs)
  with open(os.path.join(sweep_dir, SUMMARY_JSON), "w", encoding="utf-8") as f:
    json.dump(_json_safe(summary), f, indent=1)
  with open(os.path.join(sweep_dir, SUMMARY_MD), "w", encoding="utf-8") as f:
    f.write(to_markdown(summary))
  if plot:
    from jaxsi.sweep import plots  # pylint: disable=g-import-not-at-top
    summary["plots"] = plots.sweep_plots(summary, os.path.join(sweep_dir, "plots"))
  return summary
