"""The RL loop across 2 processes (``jax.distributed`` on local CPU devices).

Two processes with 2 CPU devices each form one 4-device mesh (data=2,
fsdp=2); each holds the whole host batch, the sampler and updates run on
global arrays, rewards are computed from the all-gathered samples, and the
checkpoint is written by both (Orbax). The result equals a single-process run
of the same iterations.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 2

_WORKER = textwrap.dedent("""
    import json, os, sys
    pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                               process_id=pid)
    import numpy as np
    from jax.experimental import multihost_utils
    from jaxsi import methods, spec
    from jaxsi import partitioning
    from jaxsi.training import loop
    from tests.methods import rl_fixtures as fx
    tok, model, params, tasks, opt = fx.setup()
    method = methods.grpo(rollout=spec.RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                          reward_fns=(fx.first_is_digit,), kl_coef=0.1)
    mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=1)
    trainer = loop.Loop(model=model, params=params, method=method,
                           tokenizer=tok, tasks=tasks, optimizer=opt,
                           prompts_per_step=fx.PROMPTS, seed=3, mesh=mesh,
                           workdir=os.path.join(out, "wd"),
                           compiler_options=loop.FAST_COMPILE)
    history = [trainer.step() for _ in range(%d)]
    trainer.save()
    leaves = [np.asarray(x) for x in multihost_utils.process_allgather(
        jax.tree.leaves(trainer.state.params), tiled=True)]
    tokens = np.asarray(multihost_utils.process_allgather(
        trainer.last_traj.tokens, tiled=True))
    trainer.close()
    if pid == 0:
      np.savez(os.path.join(out, "params.npz"), tokens=tokens, *leaves)
      with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(history, f)
    print("worker", pid, "done", jax.process_count(), jax.device_count())
""" % STEPS)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  port = _free_port()
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port),
                             str(tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
    assert "done 2 4" in out, out[-2000:]

  tok, model, params, tasks, opt = fx.setup()
  method = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                        reward_fns=(fx.first_is_digit,), kl_coef=0.1)
  single = loop.Loop(model=model, params=params, method=method,
                        tokenizer=tok, tasks=tasks, optimizer=opt,
                        prompts_per_step=fx.PROMPTS, seed=3,
                        compiler_options=loop.FAST_COMPILE)
  history = [single.step() for _ in range(STEPS)]
  with open(tmp_path / "history.json") as f:
    multi = json.load(f)
  for h1, h2 in zip(history, multi):
    for k in ("loss", "reward/mean", "kl", "pg/clipfrac"):
      np.testing.assert_allclose(h1[k], h2[k], rtol=1e-4, atol=1e-6, err_msg=k)
  saved = np.load(tmp_path / "params.npz")
  np.testing.assert_array_equal(np.asarray(single.last_traj.tokens),
                                saved["tokens"])
  for i, leaf in enumerate(jax.tree.leaves(single.state.params)):
    np.testing.assert_allclose(np.asarray(leaf), saved[f"arr_{i}"],
                               rtol=1e-5, atol=1e-5)
  assert os.path.isdir(tmp_path / "wd" / "ckpt")
