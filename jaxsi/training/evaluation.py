"""Evaluation metrics over sampled completions: pass@k, maj@k, tables and plots.

(Sampling and grading a policy on tasks is ``jaxsi.training.evaluate``.)

Input: one record per problem, with ``n`` sampled completions already graded::

  {"task_id": "add-17", "category": "arithmetic", "difficulty": 2,
   "answers": ["42", None, "41", "42"],       # extracted answers, None = none
   "correct": [True, False, False, True]}     # per-completion correctness

Records may be mappings or objects with these attributes; ``answers`` and
``correct`` may be lists or numpy arrays. ``evaluate`` returns a nested,
JSON-ready dict::

  {"ks": [1, 4], "maj_ks": [4],
   "overall": {"num_tasks": 10, "num_samples": 40, "pass@1": 0.45, ...},
   "by_category": {"arithmetic": {...}, ...},
   "by_difficulty": {"1": {...}, "2": {...}},
   "by_category_difficulty": {"arithmetic": {"1": {...}, ...}, ...},
   "tasks": {"add-17": {...}}}                # only with per_task=True

Every leaf group holds ``num_tasks``, ``num_samples`` and one entry per metric:
the mean over the group's problems of the per-problem estimate. Difficulty keys
are strings (JSON object keys), ordered numerically when they are numbers.

Metrics:

* ``pass@k`` — the unbiased estimator of Chen et al. 2021 ("Evaluating Large
  Language Models Trained on Code", eq. 1): with ``n`` samples of which ``c``
  are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)``, the probability that a
  random size-``k`` subset of the samples contains a correct one. Computed in
  the numerically stable product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``.
  ``pass@1`` is the fraction of correct samples (computed as ``c / n``).
* ``maj@k`` — majority vote (self-consistency, Wang et al. 2022) over the
  first ``k`` extracted answers: the most frequent answer wins; ties go to the
  answer whose first occurrence comes earliest among the first ``k`` samples.
  ``None`` and blank strings (unparseable) never win; if all ``k`` are
  unparseable the problem scores 0. Answers are compared as exact strings (the
  answer extractor normalises them). The vote scores the ``correct`` flag of
  the first sample that produced the winning answer (equal answers are assumed
  to be graded equally).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from jaxsi.rewards.voting import majority_vote

__all__ = [
    "pass_at_k",
    "majority_vote",
    "maj_at_k",
    "evaluate",
    "results_table",
    "print_results",
    "save_results",
    "load_results",
    "plot_results",
    "plot_curves",
]

_UNKNOWN = "unknown"


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k estimate of Chen et al. 2021 (eq. 1).

  ``1 - C(n-c, k) / C(n, k)`` evaluated as ``1 - prod_{i=n-c+1}^{n}(1 - k/i)``,
  which never forms the (huge) binomial coefficients.

  Args:
    n: Number of samples.
    c: Number of correct samples, ``0 <= c <= n``.
    k: Subset size, ``1 <= k <= n``.

  Returns:
    The probability that ``k`` samples drawn without replacement contain at
    least one correct sample.

  Raises:
    ValueError: If the arguments are out of range.
  """
  n, c, k = int(n), int(c), int(k)
  if not 0 <= c <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}.")
  if not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}.")
  if n - c < k:
    return 1.0
  if k == 1:
    return c / n   # the product telescopes to (n - c) / n; exact here
  i = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / i))


def maj_at_k(answers: Sequence[Any], correct: Sequence[bool], k: int) -> float:
  """maj@k of one problem: 1.0 if the majority of the first ``k`` is correct.

  Args:
    answers: Extracted answers of the samples (``None`` = unparseable).
    correct: Per-sample correctness, aligned with ``answers``.
    k: Number of leading samples that vote, ``1 <= k <= len(answers)``.

  Returns:
    1.0 or 0.0 (0.0 if none of the first ``k`` answers is parseable).

  Raises:
    ValueError: If ``k`` is out of range or the lengths differ.
  """
  if len(answers) != len(correct):
    raise ValueError(
        f"answers and correct differ in length: {len(answers)} vs {len(correct)}.")
  if not 1 <= k <= len(answers):
    raise ValueError(f"maj@k needs 1 <= k <= n, got n={len(answers)}, k={k}.")
  _, index = majority_vote(list(answers[:k]))
  return 0.0 if index is None else float(bool(correct[index]))


def _get(record: Any, name: str, default: Any = None) -> Any:
  if isinstance(record, Mapping):
    return record.get(name, default)
  return getattr(record, name, default)


def _key(value: Any) -> str:
  if value is None:
    return _UNKNOWN
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    return str(int(value))
  if isinstance(value, np.generic):
    value = value.item()
  return str(value)


def _sort_keys(keys: Iterable[str]) -> list[str]:
  def order(key):
    try:
      return (0, float(key), key)
    except ValueError:
      return (1, 0.0, key)
  return sorted(set(keys), key=order)


def _default_ks(n_min: int) -> tuple[int, ...]:
  ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k <= n_min]
  if n_min not in ks:
    ks.append(n_min)
  return tuple(ks)


def evaluate(records: Sequence[Any], *, ks: Optional[Sequence[int]] = None,
             maj_ks: Optional[Sequence[int]] = None,
             per_task: bool = False) -> dict[str, Any]:
  """Computes pass@k and maj@k overall, per category, difficulty and both.

  Args:
    records: Per-problem records with ``task_id``, ``category``,
      ``difficulty``, ``answers`` (list of str or None) and ``correct`` (list
      of bool); see the module docstring. ``answers`` may be omitted when
      ``maj_ks`` is empty.
    ks: The ``k`` of ``pass@k`` (default: 1, 2, 4, ... up to the smallest
      ``n``, plus that ``n``).
    maj_ks: The ``k`` of ``maj@k`` (default: the smallest ``n``).
    per_task: Also return per-problem metrics under ``"tasks"``.

  Returns:
    The nested results dict described in the module docstring.

  Raises:
    ValueError: On an empty record list, a problem with no samples, mismatched
      ``answers``/``correct`` lengths, a ``k`` larger than some problem's
      ``n``, or duplicated task ids.
  """
  if not records:
    raise ValueError("evaluate needs at least one record.")
  rows = []
  seen = set()
  for r in records:
    task_id = _get(r, "task_id")
    correct = np.asarray(_get(r, "correct"), dtype=bool).reshape(-1)
    if correct.size == 0:
      raise ValueError(f"Task {task_id!r} has no samples.")
    answers = _get(r, "answers")
    if answers is not None:
      answers = list(answers)
      if len(answers) != correct.size:
        raise ValueError(
            f"Task {task_id!r}: {len(answers)} answers but {correct.size} "
            "correctness flags.")
    if task_id is not None:
      if task_id in seen:
        raise ValueError(f"Duplicated task_id {task_id!r}.")
      seen.add(task_id)
    rows.append(dict(task_id=task_id, category=_key(_get(r, "category")),
                     difficulty=_key(_get(r, "difficulty")),
                     answers=answers, correct=correct))
  n_min = min(row["correct"].size for row in rows)
  ks = tuple(int(k) for k in (_default_ks(n_min) if ks is None else ks))
  maj_ks = tuple(int(k) for k in ((n_min,) if maj_ks is None else maj_ks))
  for k in ks + maj_ks:
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}.")
    if k > n_min:
      bad = next(row["task_id"] for row in rows if row["correct"].size < k)
      raise ValueError(
          f"k={k} is larger than the {n_min} samples of task {bad!r}.")

  for row in rows:
    n, c = row["correct"].size, int(row["correct"].sum())
    m = {f"pass@{k}": pass_at_k(n, c, k) for k in ks}
    for k in maj_ks:
      if row["answers"] is None:
        raise ValueError(f"Task {row['task_id']!r} has no answers for maj@{k}.")
      m[f"maj@{k}"] = maj_at_k(row["answers"], row["correct"], k)
    row["metrics"] = m

  names = [f"pass@{k}" for k in ks] + [f"maj@{k}" for k in maj_ks]

  def summarise(group):
    out = {"num_tasks": len(group),
           "num_samples": int(sum(r["correct"].size for r in group))}
    for name in names:
      out[name] = float(np.mean([r["metrics"][name] for r in group]))
    return out

  cats = _sort_keys(r["category"] for r in rows)
  diffs = _sort_keys(r["difficulty"] for r in rows)
  results: dict[str, Any] = {
      "ks": list(ks), "maj_ks": list(maj_ks),
      "overall": summarise(rows),
      "by_category": {c: summarise([r for r in rows if r["category"] == c])
                      for c in cats},
      "by_difficulty": {d: summarise([r for r in rows if r["difficulty"] == d])
                        for d in diffs},
      "by_category_difficulty": {},
  }
  for c in cats:
    inner = {}
    for d in diffs:
      group = [r for r in rows if r["category"] == c and r["difficulty"] == d]
      if group:
        inner[d] = summarise(group)
    results["by_category_difficulty"][c] = inner
  if per_task:
    results["tasks"] = {
        str(r["task_id"] if r["task_id"] is not None else i): {
            "category": r["category"], "difficulty": r["difficulty"],
            "num_samples": int(r["correct"].size),
            "num_correct": int(r["correct"].sum()), **r["metrics"]}
        for i, r in enumerate(rows)}
  return results


def _metric_names(results: Mapping[str, Any]) -> list[str]:
  return ([f"pass@{k}" for k in results["ks"]]
          + [f"maj@{k}" for k in results["maj_ks"]])


def _table_rows(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  rows = [("overall", results["overall"])]
  rows += [(f"category={c}", v) for c, v in results["by_category"].items()]
  rows += [(f"difficulty={d}", v) for d, v in results["by_difficulty"].items()]
  if len(results["by_category"]) > 1 and len(results["by_difficulty"]) > 1:
    for c, inner in results["by_category_difficulty"].items():
      rows += [(f"{c} / {d}", v) for d, v in inner.items()]
  return rows


def results_table(results: Mapping[str, Any], *,
                  metrics: Optional[Sequence[str]] = None,
                  precision: int = 3) -> str:
  """Formats results as a Markdown table (one row per group).

  Rows: overall, each category, each difficulty, and each (category,
  difficulty) cell when both have more than one value.

  Args:
    results: Output of ``evaluate`` (or ``load_results``).
    metrics: Metric columns (default: all pass@k then maj@k).
    precision: Decimals of the metric values.

  Returns:
    The table as a string.
  """
  metrics = list(metrics or _metric_names(results))
  header = ["group", "tasks", "samples"] + metrics
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
  for name, v in _table_rows(results):
    cells = [name, str(v["num_tasks"]), str(v["num_samples"])]
    cells += [f"{v[m]:.{precision}f}" if v.get(m) is not None else "-"
              for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def print_results(results: Mapping[str, Any], *,
                  metrics: Optional[Sequence[str]] = None,
                  title: str = "evaluation", console: Any = None) -> None:
  """Prints results as a rich table (plain text when not a terminal).

  Args:
    results: Output of ``evaluate``.
    metrics: Metric columns (default: all).
    title: Table title.
    console: A ``rich.console.Console`` (default: a new one on stdout).
  """
  from rich.console import Console
  from rich.table import Table
  metrics = list(metrics or _metric_names(results))
  table = Table(title=title)
  table.add_column("group")
  for col in ["tasks", "samples"] + metrics:
    table.add_column(col, justify="right")
  for name, v in _table_rows(results):
    table.add_row(name, str(v["num_tasks"]), str(v["num_samples"]),
                  *[f"{v[m]:.3f}" if v.get(m) is not None else "-"
                    for m in metrics])
  (console or Console()).print(table)


def save_results(results: Mapping[str, Any], path_json: str) -> None:
  """Writes results as indented JSON (parent directories are created)."""
  parent = os.path.dirname(os.path.abspath(path_json))
  os.makedirs(parent, exist_ok=True)
  tmp = path_json + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path_json)


def load_results(path_json: str) -> dict[str, Any]:
  """Reads results written by ``save_results``."""
  with open(path_json, "r", encoding="utf-8") as f:
    return json.load(f)


def _new_figure(figsize):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state.
  return fig


def _save_figure(fig, path: str) -> None:
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def plot_results(results: Mapping[str, Any], path_png: str, *,
                 metric: str = "pass@1", kind: str = "bars") -> None:
  """Plots one metric per category and difficulty to a PNG file.

  Args:
    results: Output of ``evaluate``.
    path_png: Output path.
    metric: Metric to plot, e.g. ``'pass@1'`` or ``'maj@8'``.
    kind: ``'bars'``: one group of bars per category (one bar per difficulty,
      plus the category's overall value); ``'lines'``: one line across
      difficulties per category, plus a dashed overall line.

  Raises:
    ValueError: If ``metric`` is not in the results or ``kind`` is unknown.
  """
  names = _metric_names(results)
  if metric not in names:
    raise ValueError(f"Unknown metric {metric!r}; available: {names}.")
  cats = list(results["by_category"])
  diffs = list(results["by_difficulty"])
  cell = results["by_category_difficulty"]

  def value(c, d):
    v = cell.get(c, {}).get(d)
    return math.nan if v is None else v[metric]

  fig = _new_figure((max(5.0, 1.2 * len(cats) * (len(diffs) + 1) / 2), 4.0))
  ax = fig.add_subplot(1, 1, 1)
  if kind == "bars":
    series = [(f"difficulty {d}", [value(c, d) for c in cats]) for d in diffs]
    series.append(("all", [results["by_category"][c][metric] for c in cats]))
    width = 0.8 / len(series)
    x = np.arange(len(cats))
    for j, (label, ys) in enumerate(series):
      ax.bar(x + (j - (len(series) - 1) / 2) * width, ys, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(cats)
    ax.set_xlabel("category")
  elif kind == "lines":
    x = np.arange(len(diffs))
    for c in cats:
      ax.plot(x, [value(c, d) for d in diffs], marker="o", label=c)
    ax.plot(x, [results["by_difficulty"][d][metric] for d in diffs], "k--",
            marker="s", label="all")
    ax.set_xticks(x)
    ax.set_xticklabels(diffs)
    ax.set_xlabel("difficulty")
  else:
    raise ValueError(f"kind must be 'bars' or 'lines', got {kind!r}.")
  ax.set_ylabel(metric)
  ax.set_ylim(0.0, 1.05)
  ax.set_title(f"{metric} (overall {results['overall'][metric]:.3f})")
  ax.legend(fontsize="small")
  ax.grid(axis="y", alpha=0.3)
  _save_figure(fig, path_png)


def plot_curves(curves: Mapping[str, Sequence[Any]], path_png: str, *,
                x: Optional[str] = None, title: Optional[str] = None,
                ylabel: Optional[str] = None) -> None:
  """Plots metrics across rounds or steps, e.g. ``{'round': [...], 'acc': [...]}``.

  Args:
    curves: Mapping from name to a sequence; one of them is the x axis, every
      other one is drawn as a line. ``None`` entries are gaps.
    path_png: Output path.
    x: Name of the x-axis entry (default: the first key).
    title: Optional title.
    ylabel: Optional y-axis label (default: the curve name when only one).

  Raises:
    ValueError: If there is no curve to draw, ``x`` is missing, or lengths
      differ.
  """
  if not curves:
    raise ValueError("plot_curves needs at least an x entry and one curve.")
  x = x or next(iter(curves))
  if x not in curves:
    raise ValueError(f"x entry {x!r} not in curves {list(curves)}.")
  xs = np.asarray(curves[x], dtype=np.float64)
  ys = {k: v for k, v in curves.items() if k != x}
  if not ys:
    raise ValueError("plot_curves needs at least one curve besides x.")
  fig = _new_figure((6.0, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  for name, vals in ys.items():
    if len(vals) != len(xs):
      raise ValueError(
          f"Curve {name!r} has {len(vals)} points but {x!r} has {len(xs)}.")
    arr = np.asarray([math.nan if v is None else float(v) for v in vals])
    ax.plot(xs, arr, marker="o" if len(xs) <= 30 else None, label=name)
  ax.set_xlabel(x)
  if ylabel or len(ys) == 1:
    ax.set_ylabel(ylabel or next(iter(ys)))
  if len(ys) > 1:
    ax.legend(fontsize="small")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  _save_figure(fig, path_png)
