r"""The local sweep executor: trials as launcher processes, N at a time.

Every trial is an ordinary launcher run (``python -m jaxsi.launch
--gin_file=... --gin_bindings=... --workdir=<sweep_dir>/trials/<id>``) in its
own process; the executor starts at most ``parallel`` of them, records each
one's outcome and goes on when one fails. Layout of a sweep directory::

  <sweep_dir>/sweep.toml          copy of the sweep file (what --slurm runs)
  <sweep_dir>/trials.json         the expansion: [Trial.to_json(), ...]
  <sweep_dir>/trials/<id>/        the trial's launcher workdir, plus
      trial.json                  its status record (below)
      stdout.log, stderr.log      the launcher's output (appended per attempt)

``trial.json``::

  {"id": str, "status": "done" | "failed" | "interrupted" | "running",
   "returncode": int | null, "error": str | null (last stderr lines),
   "attempts": int, "seconds": float (last attempt), "command": [str, ...],
   "pid": int (the launcher process of the last attempt),
   "started": float, "finished": float | null (Unix time)}

Rerunning resumes: a trial whose record says ``done`` is skipped; every other
one (failed, interrupted, never started) is launched again, and the launcher
resumes it from its own checkpoints (and refuses, exit status 2, if the
trial's configuration changed since: ``jaxsi.training.run_config``). One
executor at a time per sweep directory (an exclusive ``flock`` on
``<sweep_dir>/.lock``). Ctrl-C / SIGTERM stop the running trials (their
records say ``interrupted``) and the executor.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Collection, Mapping, Optional, Sequence

from jaxsi.sweep import definition
from jaxsi.sweep.definition import Sweep, Trial

TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
TRIALS_FILE = "trials.json"
SWEEP_COPY = "sweep.toml"
ERROR_LINES = 20


class SweepBusy(RuntimeError):
  """Another executor holds the sweep directory."""


def trial_dir(sweep_dir: str, trial: Trial) -> str:
  return os.path.join(sweep_dir, TRIALS_DIR, trial.id)


def launcher_command(trial: Trial, workdir: str, *,
                     python: str = sys.executable,
                     extra_args: Sequence[str] = ()) -> list[str]:
  """The ``python -m jaxsi.launch`` argv of one trial."""
  cmd = [python, "-m", "jaxsi.launch"]
  cmd += [f"--gin_file={f}" for f in trial.gin_files]
  cmd += [f"--gin_bindings={b}" for b in trial.bindings]
  cmd += [f"--workdir={workdir}"] + list(extra_args)
  return cmd


def read_record(sweep_dir: str, trial: Trial) -> Optional[dict]:
  path = os.path.join(trial_dir(sweep_dir, trial), TRIAL_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _tail(path: str, n: int = ERROR_LINES) -> str:
  """The last ``n`` non-empty lines of a log (after the last attempt's marker)."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read()
  except FileNotFoundError:
    return ""
  text = text.rsplit("\n=== attempt ", 1)[-1]
  lines = [l for l in text.splitlines()[1:] if l.strip()]
  return "\n".join(lines[-n:])


def error_line(text: Optional[str]) -> str:
  """The line of a stderr tail that says what failed: the last unindented one
  (a traceback's exception, the launcher's one-line message), not gin's
  indented "In call to configurable" notes."""
  lines = [l for l in (text or "").splitlines() if l.strip()]
  flush = [l for l in lines if not l[0].isspace()]
  return (flush or lines or [""])[-1].strip()


def prepare(sweep: Sweep, trials: Sequence[Trial], sweep_dir: str) -> None:
  """Writes ``sweep.toml`` (a copy) and ``trials.json`` into ``sweep_dir``."""
  os.makedirs(os.path.join(sweep_dir, TRIALS_DIR), exist_ok=True)
  copy = os.path.join(sweep_dir, SWEEP_COPY)
  if os.path.abspath(sweep.path) != os.path.abspath(copy):
    shutil.copyfile(sweep.path, copy + ".tmp")
    os.replace(copy + ".tmp", copy)
  _write_json(os.path.join(sweep_dir, TRIALS_FILE),
              dict(name=sweep.name, sweep_file=os.path.abspath(sweep.path),
                   axes=[a.name for a in sweep.axes],
                   seed_binding=sweep.seed_binding,
                   summary=dict(sweep.summary),
                   trials=[t.to_json() for t in trials]))


class _Running:
  def __init__(self, trial, proc, record, out, err, t0):
    self.trial, self.proc, self.record = trial, proc, record
    self.out, self.err, self.t0 = out, err, t0


def _start(trial: Trial, sweep_dir: str, env: Mapping[str, str],
           extra_args: Sequence[str], python: str) -> _Running:
  wd = trial_dir(sweep_dir, trial)
  os.makedirs(wd, exist_ok=True)
  old = read_record(sweep_dir, trial) or {}
  cmd = launcher_command(trial, wd, python=python, extra_args=extra_args)
  record = dict(id=trial.id, status="running", returncode=None, error=None,
                attempts=int(old.get("attempts", 0)) + 1, seconds=None,
                command=cmd, started=time.time(), finished=None,
                config=trial.config_key)
  _write_json(os.path.join(wd, TRIAL_FILE), record)
  out = open(os.path.join(wd, "stdout.log"), "a", encoding="utf-8")
  err = open(os.path.join(wd, "stderr.log"), "a", encoding="utf-8")
  marker = f"\n=== attempt {record['attempts']} at {time.ctime()}\n"
  out.write(marker)
  err.write(marker)
  out.flush()
  err.flush()
  proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                          env=dict(env), start_new_session=True)
  record["pid"] = proc.pid
  _write_json(os.path.join(wd, TRIAL_FILE), record)
  return _Running(trial, proc, record, out, err, time.monotonic())


def _finish(run: _Running, sweep_dir: str, returncode: int,
            status: Optional[str] = None) -> dict:
  run.out.close()
  run.err.close()
  rec = dict(run.record)
  rec["returncode"] = returncode
  rec["seconds"] = time.monotonic() - run.t0
  rec["finished"] = time.time()
  rec["status"] = status or ("done" if returncode == 0 else "failed")
  if rec["status"] != "done":
    tail = _tail(os.path.join(trial_dir(sweep_dir, run.trial), "stderr.log"))
    rec["error"] = tail or f"exit status {returncode} (stderr was empty)"
  _write_json(os.path.join(trial_dir(sweep_dir, run.trial), TRIAL_FILE), rec)
  return rec


def _stop(running: list, sweep_dir: str) -> None:
  for r in running:
    try:
      os.killpg(r.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
      pass
  deadline = time.monotonic() + 10
  for r in running:
    try:
      r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      os.killpg(r.proc.pid, signal.SIGKILL)
      r.proc.wait()
    _finish(r, sweep_dir, r.proc.returncode, status="interrupted")


def run_trial(trial: Trial, sweep_dir: str, *, env: Optional[Mapping[str, str]] = None,
              extra_args: Sequence[str] = (), python: str = sys.executable) -> dict:
  """Runs one trial to its end in the foreground (a SLURM array task)."""
  run = _start(trial, sweep_dir, env if env is not None else os.environ,
               extra_args, python)
  try:
    rc = run.proc.wait()
  except BaseException:
    _stop([run], sweep_dir)
    raise
  return _finish(run, sweep_dir, rc)


def run_local(sweep: Sweep, sweep_dir: str, *, parallel: int = 1,
              trials: Optional[Sequence[Trial]] = None,
              only: Optional[Collection[str]] = None,
              env: Optional[Mapping[str, str]] = None,
              extra_args: Sequence[str] = (), python: str = sys.executable,
              log: Callable[[str], None] = print,
              poll_seconds: float = 0.2) -> dict:
  """Runs the sweep's unfinished trials, ``parallel`` at a time.

  Args:
    sweep: the parsed sweep.
    sweep_dir: output directory (created; rerun with the same one to resume).
    parallel: trials running at once.
    trials: the trials (default ``definition.expand(sweep)``); all of them
      are recorded in ``trials.json`` (the summary shows every one).
    only: run only the trials with these ids (a slice; ``None``: all).
    env: the trials' environment (default ``os.environ``).
    extra_args: more launcher flags for every trial (e.g.
      ``--allow_config_change=steps``).
    python: the interpreter that runs ``-m jaxsi.launch``.
    log: one line per started/finished trial.
    poll_seconds: how often finished processes are collected.

  Returns:
    ``{trial id: trial.json record}`` of every trial (skipped ones included).

  Raises:
    SweepBusy: another executor is running this sweep directory.
    ValueError: ``parallel < 1``.
  """
  if parallel < 1:
    raise ValueError(f"parallel must be >= 1, got {parallel}")
  trials = list(definition.expand(sweep) if trials is None else trials)
  prepare(sweep, trials, sweep_dir)
  env = dict(os.environ if env is None else env)
  lock = open(os.path.join(sweep_dir, ".lock"), "w")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.close()
    raise SweepBusy(f"{sweep_dir} is being run by another executor"
                    " (its .lock is held); wait for it or use another directory") from None
  records = {}
  todo = []
  for t in trials:
    rec = read_record(sweep_dir, t)
    if rec is not None and rec.get("status") == "done":
      records[t.id] = rec
    elif only is None or t.id in only:
      todo.append(t)
  from jaxsi.training import progress  # pylint: disable=g-import-not-at-top
  sliced = "" if only is None else f" (a slice of {len(set(only))})"
  log(f"[sweep] {sweep.name}: {len(trials)} trials, {len(records)} finished,"
      f" {len(todo)} to run{sliced}, {parallel} at a time, in {sweep_dir}")
  bar = progress.ProgressBar(len(records) + len(todo), "sweep", keys=("failed",),
                             initial=len(records), log_every=1, enabled=True)
  running: list[_Running] = []
  failed = 0
  previous_handler = None
  if hasattr(signal, "SIGTERM"):
    def _on_term(signum, frame):
      del signum, frame
      raise KeyboardInterrupt
    try:
      previous_handler = signal.signal(signal.SIGTERM, _on_term)
    except ValueError:  # not the main thread
      previous_handler = None
  try:
    queue = list(todo)
    while queue or running:
      while queue and len(running) < parallel:
        t = queue.pop(0)
        running.append(_start(t, sweep_dir, env, extra_args, python))
        log(f"[sweep] start {t.id}")
      time.sleep(poll_seconds)
      for r in list(running):
        rc = r.proc.poll()
        if rc is None:
          continue
        running.remove(r)
        rec = _finish(r, sweep_dir, rc)
        records[r.trial.id] = rec
        if rec["status"] == "done":
          log(f"[sweep] done  {r.trial.id} in {rec['seconds']:.1f}s")
        else:
          failed += 1
          log(f"[sweep] FAILED {r.trial.id} (exit status {rc}): {error_line(rec['error'])}")
        bar.update(len(records), {"failed": failed})
  except KeyboardInterrupt:
    log(f"[sweep] interrupted: stopping {len(running)} running trial(s);"
        " rerun the same command to resume")
    _stop(running, sweep_dir)
    raise
  finally:
    bar.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
    lock.close()
  done = sum(r["status"] == "done" for r in records.values())
  log(f"[sweep] {sweep.name}: {done}/{len(trials)} done, {failed} failed")
  return {t.id: records.get(t.id) for t in trials}
