"""The machine a benchmark runs on: threads, load, compilations, timing.

Shared by ``benchmarks/peers.py`` and ``benchmarks/compare_trl.py`` (import
it as a sibling module: the scripts run as ``python benchmarks/NAME.py``).

* ``pin_threads(n)`` restricts the process to ``n`` CPUs (Linux
  ``sched_setaffinity``) *before* JAX or torch start: XLA sizes its intra-op
  thread pool from the schedulable CPUs (``tsl::port::MaxParallelism``) and
  torch is told ``torch.set_num_threads(n)``, so both sides compute with the
  same number of threads. ``thread_report()`` says what each side got.
* ``load_average()`` / ``uptime()`` record how busy the machine was;
  ``check_idle`` refuses a run on a loaded machine unless allowed.
* ``CompileCounter`` counts XLA backend compilations per named bucket from
  ``jax.monitoring``'s ``/jax/core/compile/backend_compile_duration`` event
  (one event per executable XLA builds, persistent-cache hits excluded).
* ``interleave`` times several sides call by call in alternation (A B, B A,
  A B, …) after untimed warm-up calls, so a change of load during the run
  hits every side alike.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
IDLE_LOAD = 0.5


def pin_threads(n: int) -> int:
  """Restricts this process to ``n`` CPUs; returns the CPUs it now has.

  Call before importing jax or torch. ``n <= 0`` keeps every CPU.

  Raises:
    ValueError: more CPUs than the process may use.
  """
  if not hasattr(os, "sched_getaffinity"):
    return os.cpu_count() or 1
  cpus = sorted(os.sched_getaffinity(0))
  if n <= 0:
    return len(cpus)
  if n > len(cpus):
    raise ValueError(f"--threads={n}: this process may use only {len(cpus)} "
                     f"CPU(s) {cpus}")
  os.sched_setaffinity(0, cpus[:n])
  return n


def thread_report(torch_module: Optional[Any] = None) -> dict:
  """Threads each side computes with (XLA: schedulable CPUs at start-up)."""
  xla = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
         else os.cpu_count())
  out = {"xla_intra_op_threads": xla, "cpus_visible": os.cpu_count()}
  if torch_module is not None:
    out["torch_num_threads"] = torch_module.get_num_threads()
    out["torch_interop_threads"] = torch_module.get_num_interop_threads()
  return out


def load_average() -> float:
  """The 1-minute load average."""
  return os.getloadavg()[0]


class OtherCpu:
  """CPU time the *other* processes of the machine use while a benchmark runs.

  The load average counts the benchmark's own threads (a 2-thread run on an
  otherwise idle 2-core machine ends at load ≈ 2), so it cannot say whether
  something else competed. This reads the machine's busy time from
  /proc/stat and subtracts this process's own CPU time (``os.times``,
  children included): ``cores()`` is the mean number of cores the rest of
  the machine kept busy since construction. None where /proc/stat is absent.
  """

  def __init__(self):
    self._t0, self._busy0, self._self0 = time.time(), _busy_s(), _self_s()

  def cores(self) -> Optional[float]:
    busy = _busy_s()
    if busy is None or self._busy0 is None:
      return None
    wall = max(time.time() - self._t0, 1e-9)
    other = (busy - self._busy0) - (_self_s() - self._self0)
    return max(other, 0.0) / wall


def _busy_s() -> Optional[float]:
  try:
    with open("/proc/stat") as f:
      fields = [float(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)   # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_s() -> float:
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def uptime() -> str:
  """``uptime``'s line (or /proc/loadavg where ``uptime`` is missing)."""
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    la = os.getloadavg()
    return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def check_idle(*, allow_load: bool, limit: float = IDLE_LOAD,
               flag: str = "--allow_load") -> Optional[str]:
  """Refuses (SystemExit) a run when the 1-minute load exceeds ``limit``.

  Returns a warning line when ``allow_load`` lets a loaded run go on, else
  None.
  """
  load = load_average()
  if load <= limit:
    return None
  msg = (f"the 1-minute load average is {load:.2f} > {limit} ({uptime()}): "
         "timings on a busy machine are not results")
  if not allow_load:
    sys.exit(f"refusing to benchmark: {msg}. Wait for an idle machine or pass "
             f"{flag} (the figures are then marked as measured under load).")
  line = f"WARNING: {msg}; running anyway ({flag})."
  print(line, file=sys.stderr, flush=True)
  return line


class CompileCounter:
  """Counts XLA compilations per bucket.

  Usage::

    counter = CompileCounter()
    with counter.bucket('sft/tiny/warmup'):
      ...
    counter.counts()  # {'sft/tiny/warmup': 1, ...}
    counter.names('sft/tiny/warmup')  # {'jit(step)': 1}

  Only one counter should be live per process (it registers a
  ``jax.monitoring`` listener that stays registered).
  """

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
    self._current: Optional[str] = None
    self._events: dict = collections.defaultdict(collections.Counter)
    self._seconds: dict = collections.defaultdict(float)
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    if event != _BACKEND_COMPILE_EVENT or self._current is None:
      return
    self._events[self._current][str(kwargs.get("fun_name", "?"))] += 1
    self._seconds[self._current] += duration

  @contextlib.contextmanager
  def bucket(self, name: str):
    previous, self._current = self._current, name
    self._events.setdefault(name, collections.Counter())
    try:
      yield
    finally:
      self._current = previous

  def count(self, name: str) -> int:
    return int(sum(self._events.get(name, {}).values()))

  def seconds(self, name: str) -> float:
    return float(self._seconds.get(name, 0.0))

  def names(self, name: str) -> dict:
    return dict(self._events.get(name, {}))

  def counts(self) -> dict:
    return {k: self.count(k) for k in self._events}


def _timed(fn, sync):
  t0 = time.perf_counter()
  out = sync(fn())
  return time.perf_counter() - t0, out


def interleave(sides: dict, *, warmup: int, steps: int,
               counter: Optional[CompileCounter] = None,
               bucket: str = "") -> dict:
  """Times the sides' calls in alternation.

  Args:
    sides: ``{name: (fn, sync)}``: ``fn()`` does one unit of work (a step, a
      generation), ``sync(out)`` blocks until it is done and returns it
      (``jax.block_until_ready`` for JAX; identity for eager torch).
    warmup: untimed calls per side first (compilation, allocator warm-up).
    steps: timed calls per side (>= 1); step i runs the sides in order for
      even i and in reverse order for odd i.
    counter: counts XLA compilations in ``{bucket}/warmup`` and
      ``{bucket}/timed``.
    bucket: the counter's bucket prefix.

  Returns:
    ``{name: {'median_s', 'mean_s', 'min_s', 'times_s', 'first_s', 'last'}}``
    where ``first_s`` is the first warm-up call (compile included) or None.
  """
  if steps < 1:
    raise ValueError(f"interleave: steps={steps} must be >= 1")
  names = list(sides)
  ctx = ((lambda phase: counter.bucket(f"{bucket}/{phase}")) if counter
         else (lambda phase: contextlib.nullcontext()))
  first = {k: None for k in names}
  last = {k: None for k in names}
  times = {k: [] for k in names}
  with ctx("warmup"):
    for i in range(warmup):
      for k in names:
        t, last[k] = _timed(*sides[k])
        if i == 0:
          first[k] = t
  with ctx("timed"):
    for i in range(steps):
      for k in (names if i % 2 == 0 else names[::-1]):
        t, last[k] = _timed(*sides[k])
        times[k].append(t)
  return {k: dict(median_s=statistics.median(times[k]),
                  mean_s=statistics.fmean(times[k]), min_s=min(times[k]),
                  times_s=times[k], first_s=first[k], last=last[k])
          for k in names}
