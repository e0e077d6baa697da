"""benchmarks/peers.py and its helpers stay runnable (not a timing test).

One subprocess runs the real command line on the ``tiny`` shape with one
warm-up and one timed call per side and tiny batches: jaxsi always; the
transformers peer (supervised step, ``generate``) when torch and
transformers are installed (CI installs them); TRL only where it is installed
(CI does not: the peer is then skipped with its pip line). The run must pass
its own guards: no compilation in a timed phase and, with torch, equal
step-0 losses on the ported weights and equal greedy tokens.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_env  # pylint: disable=g-import-not-at-top,wrong-import-position
import peers  # pylint: disable=g-import-not-at-top,wrong-import-position

HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


def _env():
  env = dict(os.environ)
  # A user's run: one CPU device (the test session fakes 8).
  env["XLA_FLAGS"] = " ".join(
      f for f in env.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  # Compile-time-bound tiny programs: XLA's cheapest optimisation level.
  env["XLA_FLAGS"] += (" --xla_backend_optimization_level=0"
                       " --xla_llvm_disable_expensive_passes=true")
  env["HF_HUB_OFFLINE"] = "1"
  return env


def test_peers_tiny_end_to_end(tmp_path):
  out = tmp_path / "peers.json"
  peer_list = "transformers" if HAVE_TORCH else ""
  cmd = [sys.executable, str(BENCH / "peers.py"), "--shapes=tiny",
         "--steps=1", "--warmup=1", "--allow_load", f"--peers={peer_list}",
         "--sft_batch=2", "--sft_seq=8", "--grpo_prompts=2", "--grpo_n=2",
         "--grpo_new=2", "--decode_batch=2", "--decode_prompt=4",
         "--decode_new=3", "--matmul_n=64", f"--out={out}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                        timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  rows = {r["bench"]: r for r in result["rows"]}
  assert set(rows) == {"sft", "grpo", "decode_greedy", "decode_sampled"}
  for r in rows.values():
    assert r["shape"] == "tiny"
    assert r["compiles"]["warmup"] >= 1 and r["compiles"]["timed"] == 0, r
    assert r["jaxsi"]["step_s"] > 0
  assert rows["sft"]["jaxsi"]["mfu"] > 0
  assert len(rows["sft"]["jaxsi"]["losses"]) == 2
  assert "load average" in result["uptime_start"]
  assert result["threads"]["xla_intra_op_threads"] >= 1
  if HAVE_TORCH:
    assert rows["sft"]["check"]["ok"], rows["sft"]["check"]
    assert rows["decode_greedy"]["check"]["ok"], rows["decode_greedy"]["check"]
    assert rows["sft"]["speedup"] > 0
    assert result["threads"]["torch_num_threads"] == result["threads"]["pinned"]
  else:
    assert "sft" in rows and "peer" not in rows["sft"]
  assert "| sft | tiny |" in proc.stdout


def test_missing_peer_prints_pip_line(monkeypatch):
  monkeypatch.setattr(peers.torch_port, "missing",
                      lambda modules: [m for m in modules if m == "trl"])
  args = peers.parse_args(["--only=grpo", "--shapes=tiny", "--steps=1",
                           "--allow_load", "--peers=trl"])
  # Only the set-up: which peers are skipped and what to install.
  skipped = peers.skipped_peers(args)
  assert set(skipped) == {"trl"}
  assert "pip install --no-deps trl" in skipped["trl"]


def test_parse_args_rejects_unknown_bench_and_bad_sizes():
  with pytest.raises(SystemExit, match="unknown benchmark"):
    peers.parse_args(["--only=sft,train"])
  with pytest.raises(SystemExit, match="--steps=0 must be >= 1"):
    peers.parse_args(["--steps=0"])


def test_loss_check():
  ok = peers._loss_check([5.0, 4.0], [5.001, 4.002], 1e-3)
  assert ok["ok"] and ok["loss_step0"] == (5.0, 5.001)
  assert not peers._loss_check([5.0, 4.0], [5.1, 4.0], 1e-3)["ok"]
  assert not peers._loss_check([5.0, 4.0], [5.0, 4.1], 1e-3)["ok"]


def test_interleave_alternates_and_counts():
  order = []
  sides = {"a": (lambda: order.append("a"), lambda o: o),
           "b": (lambda: order.append("b"), lambda o: o)}
  res = bench_env.interleave(sides, warmup=1, steps=3)
  assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
  assert len(res["a"]["times_s"]) == 3 and res["a"]["first_s"] is not None
  with pytest.raises(ValueError, match="steps=0"):
    bench_env.interleave(sides, warmup=0, steps=0)


def test_compile_counter_counts_one_per_new_shape():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  counter = bench_env.CompileCounter()
  f = jax.jit(lambda x: x * 3 + 1)
  x, y = jnp.ones((3, 5)), jnp.ones((4, 5))
  jax.block_until_ready((x, y))
  with counter.bucket("w"):
    f(x).block_until_ready()
  with counter.bucket("t"):
    f(x).block_until_ready()
    f(x).block_until_ready()
  with counter.bucket("n"):
    f(y).block_until_ready()
  assert counter.count("w") == 1 and counter.count("t") == 0
  assert counter.count("n") == 1
  assert sum(counter.names("w").values()) == 1
  assert counter.counts() == {"w": 1, "t": 0, "n": 1}


def test_check_idle_refuses_when_loaded(monkeypatch):
  monkeypatch.setattr(bench_env, "load_average", lambda: 3.0)
  with pytest.raises(SystemExit, match="refusing to benchmark"):
    bench_env.check_idle(allow_load=False)
  assert "WARNING" in bench_env.check_idle(allow_load=True)
  monkeypatch.setattr(bench_env, "load_average", lambda: 0.1)
  assert bench_env.check_idle(allow_load=False) is None
