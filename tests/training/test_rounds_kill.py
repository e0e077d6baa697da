"""Resume survives kill -9: a rounds run SIGKILLed during a generation chunk
(inside the reward stage of a sampler batch), during the M-step (between two
fit steps, past a fit checkpoint) and while the round's parameters are being
written to the checkpoint pool, rerun in the same workdir after each kill,
ends with the final parameters bitwise equal to an uninterrupted run, and the
same round records and stored trajectories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

_WORKER = textwrap.dedent('''
    import json, os, signal, sys, threading
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import jax
    import numpy as np
    from jaxsi.data import char_tokenizer
    from jaxsi import spec
    from jaxsi.data import tasks as tasks_lib
    from jaxsi.methods import rft
    from jaxsi.models import config as mcfg
    from jaxsi.models import model as mmodel
    from jaxsi.training import checkpoint_pool, round_store, rounds, stage_context

    workdir, out, kill = sys.argv[2:5]
    where, _, at = kill.partition(":")
    at = int(at or -1)

    def die():
      os.kill(os.getpid(), signal.SIGKILL)

    tok = char_tokenizer.CharTokenizer()
    pool, test = tasks_lib.make_train_test("addition", n_train=24, n_test=4,
                                           difficulty=1, seed=0)
    cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                          n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=32)
    model, params = mmodel.init(cfg, jax.random.key(0))
    config = rounds.RoundsConfig(rounds=1, warm_start_steps=3, steps_per_round=5,
                                 batch_size=8, max_len=16, max_new_tokens=3,
                                 rollout_batch=8, chunk_size=4, save_every=2, seed=0)
    callback = None
    if where == "generate":     # the at-th sampler batch of the run, in its rewards
      calls = [0]
      rewards = stage_context.StageContext.rewards
      def patched(self, traj, task_index):
        calls[0] += 1
        if calls[0] == at:
          die()
        return rewards(self, traj, task_index)
      stage_context.StageContext.rewards = patched
    elif where == "train":      # after M-step step ``at`` (checkpoints every 2)
      def callback(event, **info):
        if event == "train_step" and info["tag"] == "round1" and info["position"] == at:
          die()
    elif where == "pool":       # while round ``at``'s parameters are being pooled
      save = checkpoint_pool.CheckpointPool.save
      def patched(self, r, p):
        if r == at:
          threading.Timer(0.01, die).start()
        return save(self, r, p)
      checkpoint_pool.CheckpointPool.save = patched
    method = rft.rft(rollout=spec.RolloutSpec(n=2, temperature=1.0), max_per_prompt=2)
    recs = rounds.run_rounds(method=method, model=model, init_params=params,
                             tokenizer=tok, labeled=pool[:16], unlabeled=pool[16:],
                             test=test, workdir=workdir, config=config,
                             callback=callback, verbose=False)
    if where == "pool":
      die()   # the timer may not have fired yet: a killed run must look killed
    p = checkpoint_pool.CheckpointPool(os.path.join(workdir, "pool"))
    final = p.params(config.rounds, like=params)
    p.close()
    leaves = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(final))}
    store = round_store.RoundStore(workdir)
    chunks = store.trajectory(1, 2)
    np.savez(out, records=json.dumps([{k: v for k, v in r.items() if k != "seconds"}
                                      for r in recs]),
             tokens=chunks.traj.tokens, rewards=chunks.traj.rewards, **leaves)
''')


def _run(tmp_path, workdir, out, kill=""):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # Fast XLA compilation (every run, reference included, uses the same flags).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0"
                       " --xla_llvm_disable_expensive_passes=true")
  return subprocess.run([sys.executable, str(script), root, str(workdir), str(out), kill],
                        env=env, capture_output=True, text=True, timeout=300)


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
  """One run killed three times in a row — in a generation chunk, in the
  M-step, in the pool write — each rerun resuming the last one's state; the
  final parameters, records and stored trajectories equal a clean run's."""
  ref = _run(tmp_path, tmp_path / "ref", tmp_path / "ref.npz")
  assert ref.returncode == 0, ref.stderr[-3000:]
  reference = dict(np.load(tmp_path / "ref.npz"))
  work, out = tmp_path / "work", tmp_path / "out.npz"
  for kill in ("generate:2", "train:3", "pool:1"):
    killed = _run(tmp_path, work, out, kill)
    assert killed.returncode == -signal.SIGKILL, (kill, killed.stderr[-3000:])
    assert not out.exists()
    if kill.startswith("generate"):   # chunk 0 is stored, chunk 1 is not
      names = sorted(os.listdir(work / "round_001" / "chunks"))
      assert names == ["chunk_00000.json", "chunk_00000.npz"], names
    if kill.startswith("train"):      # the M-step left a checkpoint to resume from
      assert os.listdir(work / "train")
  resumed = _run(tmp_path, work, out)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  got = dict(np.load(out))
  assert sorted(got) == sorted(reference)
  for k in reference:
    np.testing.assert_array_equal(got[k], reference[k], err_msg=k)
