r"""Bench: does windowed early stopping save real generation time?

Loads a jaxsi params checkpoint (e.g. an rl_run warm start), then times
``adaptive.run`` with the ``fixed`` policy (windowed self-consistency, S
samples each) against ``esc``, ``adaptive_consistency`` and ``dsc`` on the
same problems, interleaved (fixed, esc, ac, dsc, fixed, …) after one warm-up
pass of each that compiles every bucket, and prints wall seconds, sampler
calls, rows, samples and tokens per problem, with the ``uptime`` load.

Command::

  python experiments/test_time_adaptive_bench.py \
      --params_dir=/tmp/tt_warm/warm_start --n_tasks=256 --max_samples=8 \
      --window=2 --repeats=3

Numbers from a loaded machine are not results: keep the load with them.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi.sampling import adaptive
from jaxsi.sampling import strategies
from jaxsi.training import test_time_run

_PARAMS = flags.DEFINE_string("params_dir", None, "jaxsi params checkpoint.", required=True)
_N_TASKS = flags.DEFINE_integer("n_tasks", 256, "Problems.")
_MAX = flags.DEFINE_integer("max_samples", 8, "Samples cap S per problem.")
_WINDOW = flags.DEFINE_integer("window", 2, "Window w.")
_ROWS = flags.DEFINE_integer("rows", 256, "Rows per sampler call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed interleaved repeats.")
_SEED = flags.DEFINE_integer("seed", 0, "Task / sampling seed.")

OVERRIDES = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
             "head_dim": 16, "d_ff": 256}


def main(argv):
  del argv
  tok, model, params = test_time_run._load_model(  # pylint: disable=protected-access
      None, _PARAMS.value, "tiny", OVERRIDES, _SEED.value)
  tasks = test_time_run.load_tasks("synthetic:addition", n=_N_TASKS.value,
                                   difficulty=2, seed=_SEED.value,
                                   task_format={"reverse": True})
  policies = {"fixed": adaptive.fixed, "esc": adaptive.esc,
              "adaptive_consistency": adaptive.adaptive_consistency(),
              "dsc": adaptive.dsc}
  strategy = strategies.Sampling(temperature=1.0)

  def once(name, rep):
    draw = adaptive.SamplerDraw(model, params, tok, tasks, strategy=strategy,
                                max_new_tokens=4, rows=_ROWS.value,
                                rng=jax.random.key(1000 * rep + len(name)))
    t0 = time.perf_counter()
    res = adaptive.run(draw, len(tasks), policy=policies[name],
                       window=_WINDOW.value, max_samples=_MAX.value)
    return time.perf_counter() - t0, res

  for name in policies:       # warm-up: compile every bucket the runs use
    once(name, -1)
    once(name, -2)
  times = {n: [] for n in policies}
  last = {}
  for rep in range(_REPEATS.value):
    for name in policies:
      dt, res = once(name, rep)
      times[name].append(dt)
      last[name] = res
  print(f"uptime: {os.popen('uptime').read().strip()}")
  print(f"{len(tasks)} problems, S = {_MAX.value}, w = {_WINDOW.value},"
        f" rows/call = {_ROWS.value}, {_REPEATS.value} interleaved repeats\n")
  print("| policy | seconds (median) | all | calls | rows | samples / problem |"
        " tokens / problem | accuracy |\n|---|---|---|---|---|---|---|---|")
  for name in policies:
    s = last[name].summary()
    print(f"| {name} | {np.median(times[name]):.3f} |"
          f" {', '.join(f'{t:.2f}' for t in times[name])} | {s['calls']} |"
          f" {s['rows']} | {s['samples_per_problem']:.2f} |"
          f" {s['tokens_per_problem']:.1f} | {s['accuracy']:.3f} |")


if __name__ == "__main__":
  app.run(main)
