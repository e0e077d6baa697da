"""A fast stand-in for a launcher MAIN (``MAIN = @fake_trial.run``) in sweep tests.

It writes what the real launchers write — ``metrics.jsonl`` rows and a
``results.json`` — from its bindings, so the sweep tests know every number:
``reward/mean`` at step k is ``value * k + seed``, ``results.json`` holds
``{"score": value + seed / 10, "nested": {"half": value / 2}}``. A negative
``value`` with seed 0 raises (a failing trial). Every call appends a line to
``calls.txt`` in the workdir (how often a trial was launched) and says
whether ``results.json`` was already there (a resumed run). The first call
in a workdir sleeps ``sleep_first`` seconds (a run to interrupt).
"""

import json
import os
import time


def run(*, workdir, value=1.0, seed=0, steps=3, sleep_first=0.0, dry_run=False):
  if dry_run:
    with open(os.path.join(workdir, "dry_run.txt"), "w") as f:
      f.write("dry")
    return None
  resumed = os.path.exists(os.path.join(workdir, "results.json"))
  first = not os.path.exists(os.path.join(workdir, "calls.txt"))
  with open(os.path.join(workdir, "calls.txt"), "a") as f:
    f.write(f"resumed={resumed}\n")
  if first and sleep_first:
    time.sleep(sleep_first)  # long enough to be interrupted
  if value < 0 and seed == 0:
    raise RuntimeError(f"boom: value {value} is negative")
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for k in range(1, steps + 1):
      f.write(json.dumps({"step": k, "time": 0.0, "reward/mean": value * k + seed}) + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"score": value + seed / 10, "nested": {"half": value / 2},
               "flag": True}, f)
  return {"score": value + seed / 10}
