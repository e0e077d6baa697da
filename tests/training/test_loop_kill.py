"""Resume survives kill -9: a loop run SIGKILLed at a chosen point (during the
rollout, after the update, while a checkpoint is being written) and rerun in
the same workdir ends with every role's parameters bitwise equal to an
uninterrupted run. One-role RL, a two-role alternating schedule and one-step
off-policy RL (``staleness=1``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ITERATIONS = 4

_WORKER = textwrap.dedent('''
    import os, signal, sys, threading
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import dataclasses
    import jax
    import numpy as np
    from jaxsi import methods, spec
    from jaxsi.training import checkpoint as checkpoint_lib
    from jaxsi.training import loop, stage_context
    from tests.methods import rl_fixtures as fx

    kind, workdir, out, kill = sys.argv[2:6]
    where, _, at = kill.partition(":")
    at = int(at or -1)

    def die():
      os.kill(os.getpid(), signal.SIGKILL)

    tok, model, params, tasks, opt = fx.setup()
    grpo = methods.grpo(rollout=spec.RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                        reward_fns=(fx.first_is_digit,), kl_coef=0.04)
    roles = None
    method = grpo
    if kind == "two_role":
      solver = dataclasses.replace(
          methods.grpo(rollout=spec.RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                       reward_fns=(fx.starts_with_one,), kl_coef=0.0,
                       name="solver"), train=spec.SOLVER)
      method = [grpo, solver]
      roles = {spec.SOLVER: fx.perturbed(params)}
    lp = loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   seed=3, roles=roles, workdir=workdir, checkpoint_every=1,
                   compiler_options=loop.FAST_COMPILE,
                   staleness=1 if kind == "rl_stale" else 0)
    if where == "rollout":
      rewards = stage_context.StageContext.rewards
      def patched(self, traj, task_index):
        if lp.iteration == at:
          die()
        return rewards(self, traj, task_index)
      stage_context.StageContext.rewards = patched
    elif where == "update":
      metrics = loop.Loop._metrics
      def patched(self, *a, **k):
        if self.iteration == at:   # the update of iteration at-1 is done
          die()
        return metrics(self, *a, **k)
      loop.Loop._metrics = patched
    elif where == "checkpoint":
      save = checkpoint_lib.Checkpointer.save
      def patched(self, step, *a, **k):
        if step == at:
          threading.Timer(0.02, die).start()
        return save(self, step, *a, **k)
      checkpoint_lib.Checkpointer.save = patched
    lp.run(%d)
    lp.close()
    leaves = {f"{role}/{i}": np.asarray(x) for role, st in lp.states.items()
              for i, x in enumerate(jax.tree.leaves(st.params))}
    np.savez(out, iteration=lp.iteration, **leaves)
''' % ITERATIONS)


def _run(tmp_path, kind, workdir, out, kill=""):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(script), root, kind, str(workdir),
                         str(out), kill], env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  cache = {}

  def get(kind):
    if kind not in cache:
      d = tmp_path_factory.mktemp(f"ref_{kind}")
      p = _run(d, kind, d / "work", d / "out.npz")
      assert p.returncode == 0, p.stderr[-3000:]
      cache[kind] = dict(np.load(d / "out.npz"))
    return cache[kind]

  return get


@pytest.mark.parametrize("kind,kill", [
    ("rl", "rollout:2"),
    ("rl", "update:1"),
    ("two_role", "checkpoint:3"),
    # staleness=1: killed in the rollout thread while update 2 runs (batch 3
    # from θ_2); the resumed run regenerates batch 2 from the saved θ_1.
    ("rl_stale", "rollout:2"),
])
def test_resume_after_sigkill_is_bitwise_exact(tmp_path, reference, kind, kill):
  work, out = tmp_path / "work", tmp_path / "out.npz"
  killed = _run(tmp_path, kind, work, out, kill)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not out.exists()
  resumed = _run(tmp_path, kind, work, out)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  got, want = dict(np.load(out)), reference(kind)
  assert int(got["iteration"]) == ITERATIONS
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # The log is exactly-once: every iteration one row, whatever the kill point.
  rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, ITERATIONS + 1))
