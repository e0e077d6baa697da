"""A console progress bar with key metrics (tqdm on a terminal, lines in CI)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, IO, Mapping, Optional, Sequence

import jax

from jaxsi.training.metrics import (_is_chief, format_metrics, is_ci,
                                    to_python_scalar)

# ``min_line_seconds`` of the bars of inner phases (rollout chunks of a round,
# evaluation, test-time generation): silent in logs unless they take a while.
PHASE_LINE_SECONDS = 30.0


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
  """A console progress bar showing key metrics, quiet in CI logs.

  On an interactive terminal (stream is a TTY and ``CI`` is not set) this is a
  tqdm bar whose postfix shows ``keys``. Otherwise it prints one compact line
  every ``log_every`` steps (and at the last step), e.g.::

    train 50/500 (10%) 2.1 steps/s eta 03:34 | loss=0.6931 reward/mean=0.25

  A short phase can stay silent in logs: with ``min_line_seconds > 0`` a line
  is printed only once that many seconds have passed since the bar started
  and since its previous line (the last step: since the start), so an
  evaluation of a few seconds prints nothing in CI while a long rollout
  still reports rate and ETA every ``min_line_seconds`` or more, and its end.

  Metric values may be device arrays: they are read (``jax.device_get``) only
  when they are displayed — at most every ``refresh_seconds`` on a terminal,
  every ``log_every`` steps otherwise — so updating every step does not force a
  host/device sync every step. Only process 0 displays anything.

  Args:
    total: Total number of steps (``None`` if unknown).
    desc: Short label.
    keys: Metric names to show, in order; missing names are skipped.
    log_every: Steps between lines in non-interactive mode (default: a tenth of
      ``total``, or 100 if ``total`` is unknown).
    stream: Output stream (default ``sys.stderr``).
    interactive: Force (``True``) or disable (``False``) the tqdm bar; ``None``
      decides from ``stream.isatty()`` and ``CI``.
    refresh_seconds: Minimum seconds between postfix updates on a terminal.
    initial: Step the bar starts from (e.g. when resuming).
    enabled: Override the process-0 check.
    min_line_seconds: Non-interactive mode: minimum seconds since the start
      and since the previous line before a line is printed; the last step's
      line needs them since the start only (0: every ``log_every`` steps and
      at the last step).
    leave: Terminal mode: keep the finished bar on screen (``False`` for
      inner phases, e.g. the chunks of one evaluation).
  """

  def __init__(self, total: Optional[int], desc: str = "", *,
               keys: Sequence[str] = ("loss", "reward/mean"),
               log_every: Optional[int] = None,
               stream: Optional[IO[str]] = None,
               interactive: Optional[bool] = None,
               refresh_seconds: float = 0.5, initial: int = 0,
               enabled: Optional[bool] = None,
               min_line_seconds: float = 0.0, leave: bool = True,
               clock: Callable[[], float] = time.monotonic):
    self.total = None if total is None else int(total)
    self.desc = desc
    self.keys = tuple(keys)
    self.enabled = _is_chief() if enabled is None else bool(enabled)
    self._stream = stream or sys.stderr
    if interactive is None:
      isatty = getattr(self._stream, "isatty", lambda: False)
      interactive = bool(isatty()) and not is_ci()
    self.interactive = interactive
    if log_every is None:
      log_every = max(1, self.total // 10) if self.total else 100
    if log_every < 1:
      raise ValueError(f"log_every must be >= 1, got {log_every}.")
    self.log_every = int(log_every)
    if not min_line_seconds >= 0:
      raise ValueError(f"min_line_seconds must be >= 0, got {min_line_seconds}.")
    self.min_line_seconds = float(min_line_seconds)
    self._refresh = refresh_seconds
    self._clock = clock
    self._start_time = clock()
    self._start_step = int(initial)
    self._step = int(initial)
    self._last_line_step = int(initial)
    self._last_line_time = self._start_time
    self._last_postfix = -math.inf
    self._bar = None
    if self.enabled and self.interactive:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=self.total, desc=desc or None, initial=initial,
                       file=self._stream, dynamic_ncols=True, leave=leave)

  def update(self, step: int, metrics: Optional[Mapping[str, Any]] = None) -> None:
    """Moves the bar to ``step`` (steps completed so far) and shows metrics.

    Args:
      step: Number of completed steps (absolute, not an increment).
      metrics: Optional metric dict; only ``keys`` are read, and only when
        displayed.
    """
    step = int(step)
    if not self.enabled:
      self._step = step
      return
    if self._bar is not None:
      self._bar.update(step - self._step)
      self._step = step
      now = self._clock()
      if metrics and now - self._last_postfix >= self._refresh:
        shown = self._host(metrics)
        if shown:
          self._bar.set_postfix_str(format_metrics(shown), refresh=True)
        self._last_postfix = now
      return
    self._step = step
    due = step - self._last_line_step >= self.log_every
    last = self.total is not None and step >= self.total
    if (due or last) and step != self._last_line_step:
      now = self._clock()
      since = self._start_time if last else self._last_line_time
      if now - since < self.min_line_seconds:
        return  # Too soon (a short phase stays silent); due again next step.
      self._print_line(metrics)
      self._last_line_step = step
      self._last_line_time = now

  def _host(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
    picked = {k: metrics[k] for k in self.keys if k in metrics}
    host = jax.device_get(picked)
    out = {}
    for k, v in host.items():
      try:
        out[k] = to_python_scalar(v, name=k)
      except ValueError:
        continue  # Non-scalar: not shown.
    return out

  def _print_line(self, metrics: Optional[Mapping[str, Any]]) -> None:
    elapsed = self._clock() - self._start_time
    done = self._step - self._start_step
    rate = done / elapsed if elapsed > 0 else math.nan
    parts = [self.desc] if self.desc else []
    if self.total:
      pct = 100.0 * self._step / self.total
      parts.append(f"{self._step}/{self.total} ({pct:.0f}%)")
    else:
      parts.append(f"step {self._step}")
    parts.append(f"{rate:.3g} steps/s")
    if self.total and rate > 0:
      parts.append(f"eta {_format_duration((self.total - self._step) / rate)}")
    line = " ".join(parts)
    if metrics:
      shown = self._host(metrics)
      if shown:
        line += " | " + format_metrics(shown)
    self._stream.write(line + "\n")
    self._stream.flush()

  def close(self) -> None:
    """Closes the bar (terminal mode) — safe to call twice."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> "ProgressBar":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
