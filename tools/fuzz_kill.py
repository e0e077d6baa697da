r"""Kill-9 fuzzing of resume: parameters *and* logs, at random points.

For each run kind (one-role RL, two alternating trained roles, self-training
rounds) the script runs a small job once uninterrupted (the reference), then
``--points`` times: start the same job in a fresh workdir, SIGKILL it after a
random delay (uniform over the reference's wall time from its first file in
the workdir on, so kills land during generation, updates, checkpoint and log
writes alike, never in the JAX start-up), rerun it in the same
workdir — killing again with probability ``--rekill`` — until it finishes,
and compare with the reference:

* the final parameters of every trained role, bitwise;
* the logs: ``metrics.jsonl`` holds each step exactly once with the
  reference's values (wall-clock fields excepted); for rounds, ``rounds.json``
  equals the reference's records (times excepted);
* no temporary files left (``*.tmp*``, orbax ``*.orbax-checkpoint-tmp-*``).

Usage::

  python tools/fuzz_kill.py --kinds=rl,two_role,rounds --points=20 --seed=0

It prints one line per trial and a summary table; exit status 1 if any trial
differs. Each trial costs two to four process starts (JAX import and
compilation dominate): about 25 minutes for 3 × 20 points on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LOOP_WORKER = textwrap.dedent('''
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import dataclasses
    import jax
    import numpy as np
    from jaxsi import methods, spec
    from jaxsi.training import loop
    from tests.methods import rl_fixtures as fx

    kind, workdir, out = sys.argv[2:5]
    tok, model, params, tasks, opt = fx.setup()
    rollout = spec.RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW)
    grpo = methods.grpo(rollout=rollout, reward_fns=(fx.first_is_digit,), kl_coef=0.04)
    roles, method = None, grpo
    if kind == "two_role":
      solver = dataclasses.replace(
          methods.grpo(rollout=rollout, reward_fns=(fx.starts_with_one,),
                       kl_coef=0.0, name="solver"), train=spec.SOLVER)
      method = [grpo, solver]
      roles = {spec.SOLVER: fx.perturbed(params)}
    lp = loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   seed=3, roles=roles, workdir=workdir, checkpoint_every=2,
                   compiler_options=loop.FAST_COMPILE)
    lp.run(ITERATIONS)
    lp.close()
    leaves = {f"{role}/{i}": np.asarray(x) for role, st in lp.states.items()
              for i, x in enumerate(jax.tree.leaves(st.params))}
    np.savez(out, **leaves)
''').replace("ITERATIONS", "6")

_ROUNDS_WORKER = textwrap.dedent('''
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import jax
    import numpy as np
    from jaxsi import spec
    from jaxsi.data import char_tokenizer
    from jaxsi.data import tasks as tasks_lib
    from jaxsi.methods import rft
    from jaxsi.models import config as mcfg
    from jaxsi.models import model as mmodel
    from jaxsi.training import checkpoint_pool, rounds

    workdir, out = sys.argv[3:5]
    tok = char_tokenizer.CharTokenizer()
    pool, test = tasks_lib.make_train_test("addition", n_train=24, n_test=4,
                                           difficulty=1, seed=0)
    cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                          n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=32)
    model, params = mmodel.init(cfg, jax.random.key(0))
    config = rounds.RoundsConfig(rounds=2, warm_start_steps=3, steps_per_round=5,
                                 batch_size=8, max_len=16, max_new_tokens=3,
                                 rollout_batch=8, chunk_size=4, save_every=2, seed=0)
    rounds.run_rounds(method=rft.rft(rollout=spec.RolloutSpec(n=2, temperature=0.7)), model=model,
                      init_params=params, tokenizer=tok, labeled=pool[:8],
                      unlabeled=pool[8:], test=test, workdir=workdir,
                      config=config, verbose=False)
    final = checkpoint_pool.CheckpointPool(os.path.join(workdir, "pool"))
    p = final.params(config.rounds, like=params)
    final.close()
    np.savez(out, **{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(p))})
''')

_VOLATILE = ("time", "seconds")


def _strip(row):
  """A log row without wall-clock fields (time, *_s, *per_s)."""
  if isinstance(row, dict):
    return {k: _strip(v) for k, v in row.items()
            if k not in _VOLATILE and not k.startswith("time/")
            and not k.endswith("_per_s") and not k.endswith("_s")}
  if isinstance(row, list):
    return [_strip(v) for v in row]
  return row


def _logs(workdir: str) -> dict:
  out = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      out["metrics"] = [_strip(json.loads(l)) for l in f if l.strip()]
  path = os.path.join(workdir, "rounds.json")
  if os.path.exists(path):
    with open(path) as f:
      out["rounds"] = _strip(json.load(f))
  return out


def _leftovers(workdir: str) -> list:
  bad = []
  for dirpath, dirnames, filenames in os.walk(workdir):
    for name in dirnames + filenames:
      if ".tmp" in name or "orbax-checkpoint-tmp" in name:
        bad.append(os.path.relpath(os.path.join(dirpath, name), workdir))
  return bad


def _start(script: str, kind: str, workdir: str, out: str) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, script, ROOT, kind, workdir, out],
                          env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _wait_for(path: str, p: subprocess.Popen) -> float:
  """Waits until ``path`` exists (the job wrote its first file) or ``p`` ends."""
  while not os.path.exists(path) and p.poll() is None:
    time.sleep(0.05)
  return time.perf_counter()


def _compare(want_params, want_logs, out, workdir) -> list:
  problems = []
  got = dict(np.load(out))
  if sorted(got) != sorted(want_params):
    problems.append("parameter leaves differ")
  else:
    for k in want_params:
      if not np.array_equal(got[k], want_params[k]):
        problems.append(f"params {k} differ")
        break
  logs = _logs(workdir)
  for name, rows in want_logs.items():
    if logs.get(name) != rows:
      if name == "metrics":
        steps = [r.get("step") for r in logs.get(name, [])]
        problems.append(f"metrics.jsonl steps {steps} (want"
                        f" {[r.get('step') for r in rows]}) or values differ")
      else:
        problems.append(f"{name} differs")
  left = _leftovers(workdir)
  if left:
    problems.append(f"left behind: {left[:3]}")
  return problems


def fuzz(kind: str, points: int, rng: random.Random, rekill: float, tmp: str) -> list:
  script = os.path.join(tmp, f"worker_{kind}.py")
  with open(script, "w") as f:
    f.write(_ROUNDS_WORKER if kind == "rounds" else _LOOP_WORKER)
  ref_dir, ref_out = os.path.join(tmp, f"{kind}_ref"), os.path.join(tmp, f"{kind}_ref.npz")
  t0 = time.perf_counter()
  p = _start(script, kind, ref_dir, ref_out)
  startup = _wait_for(ref_dir, p) - t0
  _, err = p.communicate(timeout=900)
  wall = time.perf_counter() - t0 - startup   # from the first file on
  if p.returncode != 0:
    raise SystemExit(f"{kind}: the reference run failed:\n{err[-3000:]}")
  want_params, want_logs = dict(np.load(ref_out)), _logs(ref_dir)
  results = []
  for trial in range(points):
    work, out = os.path.join(tmp, f"{kind}_{trial}"), os.path.join(tmp, f"{kind}_{trial}.npz")
    kills, delays = 0, []
    delay = rng.uniform(0.0, wall)
    while True:
      p = _start(script, kind, work, out)
      if delay is not None:
        _wait_for(work, p)    # kills land after start-up, in the run itself
        try:
          p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
          p.send_signal(signal.SIGKILL)
          kills += 1
          delays.append(round(delay, 1))
      _, err = p.communicate(timeout=900)
      if p.returncode == 0:
        break
      if p.returncode != -signal.SIGKILL:
        results.append((kind, trial, delays, [f"exit {p.returncode}: {err[-500:]}"]))
        break
      delay = rng.uniform(0.0, wall) if rng.random() < rekill else None
    if p.returncode == 0:
      results.append((kind, trial, delays, _compare(want_params, want_logs, out, work)))
    r = results[-1]
    print(f"{kind} trial {trial:2d}: killed at {r[2]} s -> "
          f"{'OK' if not r[3] else '; '.join(r[3])}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
  return results


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--kinds", default="rl,two_role,rounds")
  ap.add_argument("--points", type=int, default=20)
  ap.add_argument("--rekill", type=float, default=0.3,
                  help="probability of killing the resumed run again")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  rng = random.Random(args.seed)
  tmp = tempfile.mkdtemp(prefix="jaxsi_fuzz_")
  all_results = []
  t0 = time.perf_counter()
  for kind in args.kinds.split(","):
    all_results += fuzz(kind, args.points, rng, args.rekill, tmp)
  print("\n| kind | trials | kills | passed |\n|---|---|---|---|")
  for kind in args.kinds.split(","):
    rs = [r for r in all_results if r[0] == kind]
    print(f"| {kind} | {len(rs)} | {sum(len(r[2]) for r in rs)} |"
          f" {sum(not r[3] for r in rs)} |")
  print(f"\n{time.perf_counter() - t0:.0f} s")
  shutil.rmtree(tmp, ignore_errors=True)
  return 0 if all(not r[3] for r in all_results) else 1


if __name__ == "__main__":
  sys.exit(main())
