"""Benchmark of the SFT update step: step time, tokens/s, FLOPs and MFU.

Usage::

  python benchmarks/train_step.py --configs tiny,small --batch 16 --seq 128 --steps 5

Runs on the local devices (one CPU device unless XLA_FLAGS says otherwise).
The matmul peak is measured in the same run (``flops.measure_matmul_peak``),
before and after the model timings; MFU uses the larger of the two. FLOPs per
step are reported twice: the analytic 6·N·tokens + attention count and XLA's
own ``cost_analysis`` of the compiled step (which also counts softmax, norms,
the optimizer and the chunked log-prob recomputation).

On a shared CPU the numbers are noisy: the step time is the median of the
timed steps, the peak the best of its repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.training import flops as flops_lib
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib


def _batch(*, batch: int, seq: int, vocab: int, seed: int) -> Trajectory:
  rng = np.random.default_rng(seed)
  loss_mask = np.zeros((batch, seq), bool)
  loss_mask[:, seq // 4:] = True
  return Trajectory.create(rng.integers(1, vocab, size=(batch, seq)), loss_mask=loss_mask)


def bench_config(name: str, *, batch: int, seq: int, steps: int, vocab: int) -> dict:
  """Compiles and times the SFT update step of preset ``name``."""
  cfg = mcfg.get_config(name, vocab_size=vocab)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tx = opt_lib.make_optimizer(learning_rate=1e-3, schedule="cosine", warmup_steps=10,
                              total_steps=1000, weight_decay=0.1)
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=steps_lib.sft_objective())
  state = ts_lib.create_train_state(params, tx, jax.random.key(1))
  trajs = [_batch(batch=batch, seq=seq, vocab=vocab, seed=i) for i in range(steps + 1)]
  t0 = time.perf_counter()
  compiled = update.lower(state, trajs[0]).compile()
  compile_s = time.perf_counter() - t0
  xla = flops_lib.compiled_flops(compiled)
  state, m = compiled(state, trajs[0])  # warm-up
  jax.block_until_ready(state)
  times = []
  for traj in trajs[1:]:
    t0 = time.perf_counter()
    state, m = compiled(state, traj)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  return {
      "name": name,
      "params": mmodel.count_params(params),
      "compile_s": compile_s,
      "step_s": step_s,
      "tokens_per_s": batch * seq / step_s,
      "analytic_flops": flops_lib.train_step_flops(cfg, batch_size=batch, seq_len=seq),
      "xla_flops": xla,
      "loss": float(m["loss"]),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,small")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--vocab", type=int, default=256)
  parser.add_argument("--matmul_n", type=int, default=2048)
  args = parser.parse_args()

  print(f"jax {jax.__version__}, devices: {jax.devices()}")
  peak0 = flops_lib.measure_matmul_peak(n=args.matmul_n)
  print(f"matmul peak (f32 {args.matmul_n}^3, before): {peak0:.1f} GFLOP/s")
  rows = [bench_config(n, batch=args.batch, seq=args.seq, steps=args.steps,
                       vocab=args.vocab)
          for n in args.configs.split(",")]
  peak1 = flops_lib.measure_matmul_peak(n=args.matmul_n)
  print(f"matmul peak (f32 {args.matmul_n}^3, after):  {peak1:.1f} GFLOP/s")
  peak = max(peak0, peak1)

  head = (f"{'config':8} {'params':>9} {'compile s':>9} {'step ms':>9} {'tok/s':>9} "
          f"{'GFLOP/step':>10} {'XLA GFLOP':>10} {'GFLOP/s':>8} {'MFU':>6} {'MFU(XLA)':>8}")
  print(f"\nSFT update step, batch {args.batch} x {args.seq} tokens, vocab {args.vocab}, "
        f"median of {args.steps} steps; peak {peak:.1f} GFLOP/s")
  print(head)
  print("-" * len(head))
  for r in rows:
    achieved = r["analytic_flops"] / r["step_s"] / 1e9
    mfu = flops_lib.mfu(flops_per_step=r["analytic_flops"], step_time_s=r["step_s"],
                        peak_gflops=peak)
    if r["xla_flops"]:
      xla_s = f"{r['xla_flops'] / 1e9:10.2f}"
      mfu_xla = f"{flops_lib.mfu(flops_per_step=r['xla_flops'], step_time_s=r['step_s'], peak_gflops=peak):8.1%}"
    else:
      xla_s, mfu_xla = f"{'n/a':>10}", f"{'n/a':>8}"
    print(f"{r['name']:8} {r['params']:9,d} {r['compile_s']:9.1f} {r['step_s'] * 1e3:9.1f} "
          f"{r['tokens_per_s']:9.0f} {r['analytic_flops'] / 1e9:10.2f} {xla_s} "
          f"{achieved:8.1f} {mfu:6.1%} {mfu_xla}")


if __name__ == "__main__":
  main()
