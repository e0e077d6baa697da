"""Host-side metric plumbing: writers, a progress bar, throughput/MFU, averaging.

Everything here runs on the host, outside jitted code, and is careful about when
it reads device values: a ``jax.device_get`` forces the host to wait for the
device, so the helpers read device arrays only at log/display boundaries, never
once per training step.

* ``MetricWriter`` writes scalars to TensorBoard event files (tensorboardX) and
  appends JSON lines to ``<workdir>/metrics.jsonl``. Only process 0 writes.
* ``jaxsi.training.progress.ProgressBar`` is a tqdm bar with key metrics in its postfix on a terminal,
  and a compact line every N steps when stdout is not a TTY or ``CI`` is set.
* ``Throughput`` measures step time, tokens/s and model FLOPs utilisation (MFU)
  over windows of steps, synchronising with ``jax.block_until_ready`` only at
  the window boundaries.
* ``MetricAccumulator`` averages metric dicts over the steps between two log
  steps with one ``device_get`` per log step.

JSON lines format (one object per ``write_scalars`` call)::

  {"step": 10, "time": 1732233600.5, "loss": 0.25, "reward/mean": "nan"}

``time`` is Unix wall-clock seconds. Values are Python ``int``/``float``/``bool``
(converted from jax/numpy scalars). JSON has no NaN or infinity, so non-finite
floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (they
round-trip through ``float(...)``; ``read_jsonl`` converts them back).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, IO, Mapping, Optional, Sequence

import jax
import numpy as np

__all__ = [
    "MetricWriter",
    "Throughput",
    "MetricAccumulator",
    "mfu",
    "format_metrics",
    "to_python_scalar",
    "read_jsonl",
    "is_ci",
]

_NONFINITE_STR = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _is_chief() -> bool:
  return jax.process_index() == 0


def is_ci() -> bool:
  """Whether the ``CI`` environment variable asks for CI-friendly output."""
  return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def to_python_scalar(value: Any, *, name: str = "value") -> int | float | bool:
  """Converts a jax/numpy/Python scalar (or size-1 array) to a Python scalar.

  Args:
    value: A Python number, numpy scalar, or numpy/jax array with one element.
    name: Metric name used in the error message.

  Returns:
    A Python ``bool``, ``int`` or ``float``.

  Raises:
    ValueError: If ``value`` has more than one element or is not numeric.
  """
  if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
    return value
  arr = np.asarray(jax.device_get(value))
  if arr.size != 1:
    raise ValueError(
        f"Metric {name!r} must be a scalar, got an array of shape {arr.shape}.")
  item = arr.reshape(()).item()
  if isinstance(item, (bool, int, float)):
    return item
  raise ValueError(f"Metric {name!r} is not numeric: {item!r}.")


def _json_value(value: int | float | bool) -> int | float | bool | str:
  if isinstance(value, float) and not math.isfinite(value):
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
  return value


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads a ``metrics.jsonl`` file written by ``MetricWriter``.

  Args:
    path: Path of the JSON-lines file.

  Returns:
    One dict per line; the strings ``"nan"``, ``"inf"``, ``"-inf"`` are turned
    back into floats.
  """
  rows = []
  with open(path, "r", encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      row = json.loads(line)
      rows.append({k: _NONFINITE_STR.get(v, v) if isinstance(v, str) else v
                   for k, v in row.items()})
  return rows


def rewind_jsonl(path: str, step: int, *, key: str = "step") -> tuple[int, int]:
  """Keeps the rows of a JSON-lines log with ``row[key] <= step`` (atomically).

  One row per ``key`` value survives (the last written: a replayed step
  replaces the first attempt's row); a torn (unparseable) line, which only a
  kill during a write leaves, is dropped. Missing file: nothing to do.

  Returns:
    ``(rows kept, rows dropped)``.
  """
  if not os.path.exists(path):
    return 0, 0
  rows, dropped = {}, 0
  with open(path, "r", encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        dropped += 1
        continue
      if int(row.get(key, -1)) > step:
        dropped += 1
        continue
      if row.get(key) in rows:
        dropped += 1
        del rows[row.get(key)]
      rows[row.get(key)] = line if line.endswith("\n") else line + "\n"
  if dropped:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(rows.values())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  return len(rows), dropped


class MetricWriter:
  """Writes scalar metrics to TensorBoard, a JSON-lines file and the console.

  Only process 0 (``jax.process_index() == 0``) writes; on other processes every
  method is a no-op, so callers need no ``if`` around logging.

  Usage::

    with MetricWriter(workdir) as writer:
      writer.write_scalars(step, {"loss": loss, "lr": lr})

  Args:
    workdir: Directory for ``metrics.jsonl`` and the ``tensorboard/`` event
      files (created if missing).
    tensorboard: Write TensorBoard event files with tensorboardX.
    jsonl: Append JSON lines to ``<workdir>/metrics.jsonl``.
    console: Print one compact line per ``write_scalars`` call.
    stream: Stream for console lines (default ``sys.stdout``).
    tensorboard_subdir: Subdirectory of ``workdir`` for the event files.
    enabled: Override the process-0 check (``None``: write only on process 0).
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               jsonl: bool = True, console: bool = True,
               stream: Optional[IO[str]] = None,
               tensorboard_subdir: str = "tensorboard",
               enabled: Optional[bool] = None):
    self.workdir = workdir
    self.enabled = _is_chief() if enabled is None else bool(enabled)
    self._console = console
    self._stream = stream
    self._tb = None
    self._jsonl = None
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.tensorboard_dir = os.path.join(workdir, tensorboard_subdir)
    self._closed = False
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if jsonl:
      self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # Heavy import: only when used.
      self._tb = SummaryWriter(logdir=self.tensorboard_dir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one step's scalar metrics.

    Device values are fetched with a single ``jax.device_get`` for the whole
    dict.

    Args:
      step: Global step the metrics belong to.
      scalars: Mapping from metric name to a scalar (Python, numpy or jax).

    Raises:
      ValueError: If a value is not a scalar, or a name is ``step``/``time``.
      RuntimeError: If the writer was closed.
    """
    if not self.enabled:
      return
    if self._closed:
      raise RuntimeError("MetricWriter.write_scalars called after close().")
    for reserved in ("step", "time"):
      if reserved in scalars:
        raise ValueError(f"Metric name {reserved!r} is reserved.")
    host = jax.device_get(dict(scalars))
    values = {name: to_python_scalar(v, name=name) for name, v in host.items()}
    step = int(step)
    now = time.time()
    if self._tb is not None:
      for name, v in values.items():
        self._tb.add_scalar(name, float(v), global_step=step, walltime=now)
    if self._jsonl is not None:
      row = {"step": step, "time": now}
      row.update({k: _json_value(v) for k, v in values.items()})
      self._jsonl.write(json.dumps(row) + "\n")
    if self._console:
      stream = self._stream or sys.stdout
      stream.write(f"step {step}: {format_metrics(values)}\n")
      stream.flush()

  def write_text(self, step: int, name: str, text: str) -> None:
    """Writes a text summary to TensorBoard (e.g. a sampled completion)."""
    if not self.enabled or self._tb is None:
      return
    self._tb.add_text(name, text, global_step=int(step))

  def flush(self) -> None:
    """Flushes all open outputs to disk (the JSON lines fsync'ed: a checkpoint
    written after this never exists without the metrics before it)."""
    if self._jsonl is not None and not self._jsonl.closed:
      self._jsonl.flush()
      os.fsync(self._jsonl.fileno())
    if self._tb is not None:
      self._tb.flush()

  def rewind(self, step: Optional[int] = None) -> int:
    """Drops JSON lines after ``step`` (a resumed run replays them).

    Keeps the rows with ``step <= step`` (every row when ``step`` is None),
    one per step (the last written), drops a torn last line, rewrites the
    file atomically and reopens it for appending. Call it when resuming from
    the checkpoint of ``step``, so the file is exactly-once after any kill.

    Returns:
      The number of rows dropped.
    """
    if not self.enabled or self._jsonl is None:
      return 0
    self._jsonl.close()
    kept, dropped = rewind_jsonl(self.jsonl_path, 2 ** 62 if step is None else step)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    del kept
    if self._tb is not None and (dropped or self._tb_has_extra_events()):
      self._rebuild_tensorboard()
    return dropped

  def _tb_has_extra_events(self) -> bool:
    # More than one events file: an earlier (killed) writer left its own.
    return len([f for f in os.listdir(self.tensorboard_dir)
                if f.startswith("events.out.tfevents")]) > 1

  def _rebuild_tensorboard(self) -> None:
    """Event files are derived data: rewritten from the exactly-once JSON
    lines, so TensorBoard shows each step once after any kill."""
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb.close()
    for f in os.listdir(self.tensorboard_dir):
      if f.startswith("events.out.tfevents"):
        os.remove(os.path.join(self.tensorboard_dir, f))
    self._tb = SummaryWriter(logdir=self.tensorboard_dir)
    for row in read_jsonl(self.jsonl_path):
      step, now = int(row.get("step", 0)), float(row.get("time", time.time()))
      for name, v in row.items():
        if name not in ("step", "time") and isinstance(v, (int, float)):
          self._tb.add_scalar(name, float(v), global_step=step, walltime=now)
    self._tb.flush()

  def close(self) -> None:
    """Flushes and closes all outputs; further writes raise."""
    if self._closed:
      return
    self.flush()
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    self._closed = True

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def format_metrics(values: Mapping[str, Any], *, keys: Optional[Sequence[str]] = None,
                   precision: int = 4) -> str:
  """Formats host scalars compactly: ``loss=0.1234 reward/mean=0.5``.

  Args:
    values: Mapping of metric names to host scalars.
    keys: Names to show, in order (missing ones skipped); ``None``: all.
    precision: Significant digits for floats.

  Returns:
    The formatted string.
  """
  names = list(values) if keys is None else [k for k in keys if k in values]
  parts = []
  for k in names:
    v = values[k]
    if isinstance(v, float):
      parts.append(f"{k}={v:.{precision}g}")
    else:
      parts.append(f"{k}={v}")
  return " ".join(parts)


def mfu(*, flops_per_step: float, step_time: float, peak_flops: float) -> float:
  """Model FLOPs utilisation: achieved FLOP/s over peak FLOP/s.

  ``mfu = flops_per_step / step_time / peak_flops``. Both FLOP numbers must
  cover the same devices: e.g. the FLOPs of one global step and the summed
  peak of all devices running it.

  Args:
    flops_per_step: Model FLOPs of one step (e.g. from ``jaxsi.training.flops``).
    step_time: Seconds per step.
    peak_flops: Peak FLOP/s of the hardware running the step.

  Returns:
    The utilisation as a fraction (1.0 = peak).

  Raises:
    ValueError: If ``step_time`` or ``peak_flops`` is not positive.
  """
  if step_time <= 0 or peak_flops <= 0:
    raise ValueError(
        f"step_time and peak_flops must be > 0, got {step_time}, {peak_flops}.")
  return float(flops_per_step) / float(step_time) / float(peak_flops)


class Throughput:
  """Measures step time, tokens/s and MFU over windows of steps.

  JAX dispatches asynchronously, so wall-clock time between two Python lines
  says little; an honest measurement blocks on the step outputs at the window
  boundaries (``jax.block_until_ready(sync)``), never inside the inner loop::

    meter = Throughput(flops_per_step=f, peak_flops=p, tokens_per_step=t)
    state = train_step(state, batch)           # compile outside the window
    meter.start(sync=state)
    for i in range(n):
      state, metrics = train_step(state, batch)
      if (i + 1) % log_every == 0:
        writer.write_scalars(i, meter.measure(steps=log_every, sync=state))

  ``measure`` closes the current window and starts the next one at the same
  instant, so windows tile the run without gaps.

  Args:
    flops_per_step: Model FLOPs of one step (``None``: no MFU reported).
    peak_flops: Peak FLOP/s of the devices running a step (``None``: no MFU).
    tokens_per_step: Tokens processed per step (``None``: no tokens/s unless
      ``tokens=`` is passed to ``measure``).
    prefix: Prefix of the returned metric names.
    clock: Time source (seconds); injectable for tests.
  """

  def __init__(self, *, flops_per_step: Optional[float] = None,
               peak_flops: Optional[float] = None,
               tokens_per_step: Optional[float] = None, prefix: str = "perf/",
               clock: Callable[[], float] = time.perf_counter):
    self.flops_per_step = flops_per_step
    self.peak_flops = peak_flops
    self.tokens_per_step = tokens_per_step
    self.prefix = prefix
    self._clock = clock
    self._t0: Optional[float] = None

  def start(self, *, sync: Any = None) -> None:
    """Starts a window, after waiting for ``sync`` (a pytree of arrays)."""
    if sync is not None:
      jax.block_until_ready(sync)
    self._t0 = self._clock()

  def measure(self, *, steps: int, sync: Any = None,
              tokens: Optional[float] = None,
              flops: Optional[float] = None) -> dict[str, float]:
    """Ends the window (after waiting for ``sync``) and starts the next one.

    Args:
      steps: Number of steps run in the window.
      sync: Pytree of step outputs to block on before reading the clock.
      tokens: Tokens processed in the whole window (overrides
        ``tokens_per_step * steps``).
      flops: FLOPs of the whole window (overrides ``flops_per_step * steps``).

    Returns:
      ``{prefix+'step_time', prefix+'steps_per_sec'}`` plus
      ``prefix+'tokens_per_sec'`` when tokens are known and ``prefix+'mfu'``
      (and ``prefix+'tflops_per_sec'``) when FLOPs and the peak are known.

    Raises:
      RuntimeError: If ``start`` was not called.
      ValueError: If ``steps < 1``.
    """
    if self._t0 is None:
      raise RuntimeError("Throughput.measure called before start().")
    if steps < 1:
      raise ValueError(f"steps must be >= 1, got {steps}.")
    if sync is not None:
      jax.block_until_ready(sync)
    now = self._clock()
    elapsed = max(now - self._t0, 1e-12)
    self._t0 = now
    p = self.prefix
    step_time = elapsed / steps
    out = {p + "step_time": step_time, p + "steps_per_sec": steps / elapsed}
    if tokens is None and self.tokens_per_step is not None:
      tokens = self.tokens_per_step * steps
    if tokens is not None:
      out[p + "tokens_per_sec"] = float(tokens) / elapsed
    if flops is None and self.flops_per_step is not None:
      flops = self.flops_per_step * steps
    if flops is not None:
      out[p + "tflops_per_sec"] = float(flops) / elapsed / 1e12
      if self.peak_flops:
        out[p + "mfu"] = mfu(flops_per_step=float(flops) / steps,
                             step_time=step_time, peak_flops=self.peak_flops)
    return out


_REDUCTIONS = ("mean", "sum", "min", "max", "last")


class MetricAccumulator:
  """Reduces metric dicts over the steps between two log steps, on the host.

  ``add`` only stores references to the (device) arrays; ``result`` moves all
  of them to the host with one ``jax.device_get`` and reduces per name over the
  steps in which the name appeared. The default reduction is the mean;
  ``reductions`` picks ``'sum'``, ``'min'``, ``'max'`` or ``'last'`` per name.
  NaN values propagate (a NaN step makes the mean NaN), which is intended:
  they signal a problem rather than being silently skipped.

  Args:
    reductions: Optional mapping from metric name to reduction.
  """

  def __init__(self, *, reductions: Optional[Mapping[str, str]] = None):
    reductions = dict(reductions or {})
    for name, red in reductions.items():
      if red not in _REDUCTIONS:
        raise ValueError(
            f"Unknown reduction {red!r} for {name!r}; expected one of "
            f"{_REDUCTIONS}.")
    self._reductions = reductions
    self._pending: list[Mapping[str, Any]] = []

  def __len__(self) -> int:
    return len(self._pending)

  def add(self, metrics: Mapping[str, Any]) -> None:
    """Stores one step's metrics (no device transfer)."""
    self._pending.append(dict(metrics))

  def result(self, *, reset: bool = True) -> dict[str, float]:
    """Reduces the stored steps.

    Args:
      reset: Clear the stored steps afterwards.

    Returns:
      Mapping from name to a Python float (empty if nothing was added).

    Raises:
      ValueError: If a stored value is not a scalar.
    """
    host: list[Mapping[str, Any]] = jax.device_get(self._pending)
    if reset:
      self._pending = []
    columns: dict[str, list[float]] = {}
    for row in host:
      for name, v in row.items():
        columns.setdefault(name, []).append(float(to_python_scalar(v, name=name)))
    out = {}
    for name, vals in columns.items():
      red = self._reductions.get(name, "mean")
      arr = np.asarray(vals, np.float64)
      if red == "mean":
        out[name] = float(arr.mean())
      elif red == "sum":
        out[name] = float(arr.sum())
      elif red == "min":
        out[name] = float(arr.min())
      elif red == "max":
        out[name] = float(arr.max())
      else:
        out[name] = float(arr[-1])
    return out

  def reset(self) -> None:
    """Drops all stored steps."""
    self._pending = []
