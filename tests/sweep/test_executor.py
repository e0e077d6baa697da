"""The local executor: launcher processes N at a time, failures recorded, reruns resume.

The trials are real ``python -m jaxsi.launch`` processes of a gin file whose
MAIN is ``tests/sweep/fake_trial.run`` (fast, known outputs).
"""

import json
import os
import subprocess
import sys

import pytest

from jaxsi.sweep import definition as D
from jaxsi.sweep import executor
from jaxsi.sweep import slurm
from jaxsi.sweep import summary as summary_lib


def _sweep(tmp_path, fake_gin, values="[1.0, -1.0]"):
  p = tmp_path / "fake.toml"
  p.write_text(f"""
name = "fake"
[base]
gin_files = ["{fake_gin}"]
bindings = ["fake_trial.run.steps = 2"]
[[axis]]
name = "value"
binding = "fake_trial.run.value"
values = {values}
[seeds]
binding = "fake_trial.run.seed"
values = [0, 1]
""")
  return D.load_sweep(str(p))


def _calls(sweep_dir, trial):
  path = os.path.join(executor.trial_dir(sweep_dir, trial), "calls.txt")
  with open(path) as f:
    return f.read().split()


def test_run_record_fail_and_resume(tmp_path, fake_gin, trial_env):
  sweep = _sweep(tmp_path, fake_gin)
  trials = D.expand(sweep)
  ok = [t for t in trials if t.assignment["value"] == "1"]
  bad = [t for t in trials if t.assignment["value"] == "-1" and t.seed == 0]
  out = str(tmp_path / "sw")
  lines = []
  records = executor.run_local(sweep, out, parallel=2, env=trial_env, log=lines.append)
  assert {records[t.id]["status"] for t in ok} == {"done"}
  for t in bad:  # the failure is recorded with its error; the others went on
    rec = records[t.id]
    assert rec["status"] == "failed" and rec["returncode"] == 1
    assert "RuntimeError: boom: value -1.0 is negative" in rec["error"]
    assert (f"[sweep] FAILED {t.id} (exit status 1): RuntimeError: boom: value -1.0"
            " is negative") in lines
  for t in ok:
    wd = executor.trial_dir(out, t)
    assert os.path.exists(os.path.join(wd, "config.gin"))  # a launcher run
    with open(os.path.join(wd, "results.json")) as f:
      assert json.load(f)["score"] == pytest.approx(1.0 + t.seed / 10)
  with open(os.path.join(out, "trials.json")) as f:
    assert [t["id"] for t in json.load(f)["trials"]] == [t.id for t in trials]

  # Rerun: finished trials are skipped, failed ones launched again.
  done = ok[0]
  interrupted = ok[1]
  path = os.path.join(executor.trial_dir(out, interrupted), executor.TRIAL_FILE)
  rec = json.load(open(path))
  rec["status"] = "interrupted"
  json.dump(rec, open(path, "w"))
  records = executor.run_local(sweep, out, parallel=2, env=trial_env, log=lines.append)
  assert _calls(out, done) == ["resumed=False"]
  # The interrupted trial went through the launcher again (same config: accepted).
  assert _calls(out, interrupted) == ["resumed=False", "resumed=True"]
  assert records[interrupted.id]["status"] == "done"
  assert records[interrupted.id]["attempts"] == 2
  for t in bad:
    assert records[t.id]["attempts"] == 2 and len(_calls(out, t)) == 2

  # The summary: hand-computed mean ± sample std over the two seeds.
  s = summary_lib.write_summary(out, plot=True)
  (row_ok, row_bad) = s["configs"]
  assert row_ok["assignment"] == {"value": "1"} and row_ok["n_done"] == 2
  assert row_ok["metrics"]["score"]["mean"] == pytest.approx(1.05)
  assert row_ok["metrics"]["score"]["std"] == pytest.approx(0.070710678)
  assert row_ok["metrics"]["nested/half"]["std"] == pytest.approx(0.0)
  assert row_ok["metrics"]["last/reward/mean"]["values"] == [2.0, 3.0]
  assert row_bad["n_failed"] == 1 and row_bad["n_done"] == 1
  assert row_bad["metrics"]["score"] == dict(mean=-0.9, std=None, n=1, values=[-0.9])
  md = open(os.path.join(out, "summary.md")).read()
  # Shown by default: the final metrics that differ between trials.
  assert "| value | seeds done | nested/half | score |" in md
  assert "| 1 | 2/2 | 0.500 ± 0.000 (2) | 1.050 ± 0.071 (2) |" in md
  assert "| -1 | 1/2 | -0.500 (1) | -0.900 (1) |" in md
  assert "| failed | 1 | RuntimeError: boom: value -1.0 is negative |" in md
  assert json.load(open(os.path.join(out, "summary.json")))["metrics"] == ["nested/half", "score"]
  assert sorted(os.path.basename(p) for p in s["plots"]) == [
      "curve_reward_mean.png", "final_nested_half_by_value.png", "final_score_by_value.png"]
  assert all(os.path.getsize(p) > 1000 for p in s["plots"])


def test_one_executor_per_sweep_dir(tmp_path, fake_gin):
  sweep = _sweep(tmp_path, fake_gin)
  out = str(tmp_path / "sw")
  os.makedirs(out)
  import fcntl  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, ".lock"), "w") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    with pytest.raises(executor.SweepBusy, match="another executor"):
      executor.run_local(sweep, out, log=lambda _: None)


def test_slurm_array_script_runs_one_trial_without_a_cluster(tmp_path, fake_gin, trial_env):
  sweep = _sweep(tmp_path, fake_gin, values="[2.0]")
  trials = D.expand(sweep)
  out = str(tmp_path / "sw")
  res = slurm.write_slurm(sweep, trials, out, parallel=1,
                          options={"partition": "gpu", "cpus_per_task": 4},
                          python=sys.executable)
  assert res["count"] == 2 and res["ids"] == [t.id for t in trials]
  text = open(res["script"]).read()
  assert text.startswith("#!/bin/bash\n")
  for line in ("#SBATCH --array=0-1%1", "#SBATCH --job-name=fake",
               "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=4",
               f"#SBATCH --output={out}/slurm/logs/%A_%a.out"):
    assert line in text.splitlines()
  assert open(res["trials"]).read().split() == [t.id for t in trials]
  subprocess.run(["bash", "-n", res["script"]], check=True)
  # Without the array variable the script refuses to run.
  r = subprocess.run(["bash", res["script"]], env=trial_env, capture_output=True, text=True)
  assert r.returncode != 0 and "sbatch" in r.stderr
  # As array task 1: runs the second trial, recorded like a local run.
  env = dict(trial_env, SLURM_ARRAY_TASK_ID="1")
  r = subprocess.run(["bash", res["script"]], env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert executor.read_record(out, trials[1])["status"] == "done"
  assert executor.read_record(out, trials[0]) is None
  # Exported again: only the unfinished trial is listed.
  res = slurm.write_slurm(sweep, trials, out, python=sys.executable)
  assert res["ids"] == [trials[0].id] and "#SBATCH --array=0-0\n" in open(res["script"]).read()
  with pytest.raises(ValueError, match="set by jaxsi"):
    slurm.write_slurm(sweep, trials, out, options={"array": "0-3"})


def test_sigterm_stops_the_trials_and_a_rerun_resumes(tmp_path, fake_gin, trial_env):
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  p = tmp_path / "slow.toml"
  p.write_text(f'[base]\ngin_files = ["{fake_gin}"]\n'
               'bindings = ["fake_trial.run.sleep_first = 120.0"]\n')
  sweep = D.load_sweep(str(p))
  (trial,) = D.expand(sweep)
  out = str(tmp_path / "sw")
  calls = os.path.join(executor.trial_dir(out, trial), "calls.txt")

  def terminate_when_running():
    deadline = time.monotonic() + 120
    while not os.path.exists(calls) and time.monotonic() < deadline:
      time.sleep(0.1)  # until the trial's MAIN runs
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would, to the executor

  lines = []
  handler = signal.getsignal(signal.SIGTERM)
  killer = threading.Thread(target=terminate_when_running)
  killer.start()
  with pytest.raises(KeyboardInterrupt):
    executor.run_local(sweep, out, env=trial_env, log=lines.append)
  killer.join()
  assert "[sweep] interrupted: stopping 1 running trial(s); rerun the same command to resume" in lines
  rec = executor.read_record(out, trial)
  assert rec["status"] == "interrupted"
  with pytest.raises(ProcessLookupError):  # the launcher process is gone
    os.kill(rec["pid"], 0)
  assert signal.getsignal(signal.SIGTERM) == handler  # restored
  # Run again: the trial runs to its end (its second call does not sleep).
  records = executor.run_local(sweep, out, env=trial_env, log=lines.append)
  assert records[trial.id]["status"] == "done" and records[trial.id]["attempts"] == 2
  assert _calls(out, trial) == ["resumed=False", "resumed=False"]
