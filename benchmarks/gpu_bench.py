r"""Accelerator check: SFT-step MFU and decode tokens/s against the roofline.

One command for a GPU (or TPU) machine with JAX, flax, optax, orbax and chex
(no gin-config, no tensorboardX, no network; random weights, nothing
downloaded), finishing in a few minutes::

  python benchmarks/gpu_bench.py --out=/tmp/gpu_bench.json      # Qwen2.5-0.5B
  python benchmarks/gpu_bench.py --smoke                         # CPU, tiny

It measures, for the ``--model`` preset (default ``qwen2.5-0.5b``, bf16):

1. the supervised update step (``training.steps.make_update_step`` with the
   next-token NLL over every token and AdamW) on ``[--sft_batch,
   --sft_seq]``: median step time, MFU = analytic training FLOPs (PaLM App.
   B, ``jaxsi.training.flops``) / time / chip peak, and the roofline bound of
   *this compiled program* (FLOPs and bytes from its own
   ``cost_analysis()`` on the device: ``max(FLOPs / peak, bytes / HBM)``);
2. decoding with ``jaxsi.sampling.sample`` (greedy and temperature 1, no
   stop token) of ``--decode_new`` tokens for ``--decode_batch`` prompts of
   ``--decode_prompt`` tokens: tokens/s against the memory floor of one
   decode step (parameters + the whole KV cache read once,
   ``benchmarks/roofline.py``'s analytic bytes) and against the bound from
   the compiled decode-step program's own cost analysis.

Chip peaks come from ``roofline.CHIPS`` by ``device_kind`` (H100, H200,
TPU v5e, v6e); ``--peak_tflops`` / ``--hbm_gbps`` override them or describe
another chip. On a CPU (``--smoke``) the peak is a measured f32 matmul and
there is no HBM figure (memory bounds print as n/a).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import roofline


def _chip(device, peak_tflops: float, hbm_gbps: float) -> dict:
  """{'name', 'flops', 'hbm'} of ``device`` (flags override the table)."""
  kind = getattr(device, "device_kind", "") or ""
  name = None
  k = kind.lower()
  if "h200" in k:
    name = "H200-SXM"
  elif "h100" in k:
    name = "H100-SXM"
  elif "v5 lite" in k or "v5e" in k or "v5litepod" in k:
    name = "TPU-v5e"
  elif "v6" in k:
    name = "TPU-v6e"
  chip = dict(name=name or kind or device.platform, flops=None, hbm=None)
  if name:
    chip.update(flops=roofline.CHIPS[name]["flops"],
                hbm=roofline.CHIPS[name]["hbm"])
  if peak_tflops:
    chip["flops"] = peak_tflops * 1e12
  if hbm_gbps:
    chip["hbm"] = hbm_gbps * 1e9
  return chip


def _bound(flops, nbytes, chip) -> dict:
  t_c = flops / chip["flops"] if chip["flops"] else None
  t_m = nbytes / chip["hbm"] if chip["hbm"] and nbytes else None
  t = max(x for x in (t_c, t_m) if x is not None) if (t_c or t_m) else None
  return dict(t_s=t, compute_s=t_c, memory_s=t_m,
              mfu_bound=(t_c / t) if (t_c and t) else None)


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  cost = cost or {}
  return dict(flops=float(cost.get("flops", 0.0)),
              bytes=float(cost.get("bytes accessed", 0.0)))


def bench_sft(model, params, *, batch, seq, steps, warmup, chip) -> dict:
  """Times the SFT update step; returns times, MFU and its roofline bound."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxsi.trajectory import Trajectory  # pylint: disable=g-import-not-at-top
  from jaxsi.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import optimizer as opt_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import train_state as ts_lib  # pylint: disable=g-import-not-at-top
  cfg = model.config
  tx = opt_lib.make_optimizer(learning_rate=1e-5, schedule="constant",
                              max_grad_norm=1.0)
  update = steps_lib.make_update_step(
      model=model, optimizer=tx, objective=steps_lib.sft_objective(mask="input"))
  # The step donates its state: train a copy (decoding uses ``params`` next).
  state = ts_lib.create_train_state(jax.tree.map(jax.numpy.copy, params), tx,
                                    jax.random.key(1))
  rng = np.random.default_rng(0)
  traj = Trajectory.create(rng.integers(3, cfg.vocab_size, size=(batch, seq)))
  t0 = time.perf_counter()
  compiled = update.lower(state, traj).compile()
  compile_s = time.perf_counter() - t0
  cost = _cost(compiled)
  for _ in range(max(warmup, 1)):
    state, m = compiled(state, traj)
  jax.block_until_ready((state, m))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, traj)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  t = statistics.median(times)
  flops = flops_lib.train_step_flops(cfg, batch_size=batch, seq_len=seq)
  bound = _bound(cost["flops"], cost["bytes"], chip)
  return dict(step_s=t, times_s=times, compile_s=compile_s,
              analytic_flops=flops, xla_flops=cost["flops"],
              xla_bytes=cost["bytes"], loss=float(m["loss"]),
              tokens_per_s=batch * seq / t,
              mfu=flops / t / chip["flops"] if chip["flops"] else None,
              bound=bound,
              bound_fraction=(bound["t_s"] / t) if bound["t_s"] else None)


def bench_decode(model, params, *, batch, prompt_len, new_tokens, steps,
                 warmup, chip) -> dict:
  """Times ``sampler.sample`` (greedy, sampled) against the decode bounds."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import sampler  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  cfg = model.config
  w = roofline.Workload(prompts=batch, n=1, prompt_len=prompt_len,
                        gen_len=new_tokens, minibatches=1)
  floor = roofline.analytic(cfg, w)["decode"]
  fn, args = roofline._programs(cfg, w)["decode"]  # pylint: disable=protected-access
  step_cost = _cost(jax.jit(fn).lower(*args).compile())
  rng = np.random.default_rng(1)
  prompts = rng.integers(3, cfg.vocab_size, size=(batch, prompt_len)).tolist()
  out = dict(floor_bytes=floor["bytes"], step_xla_flops=step_cost["flops"],
             step_xla_bytes=step_cost["bytes"])
  b_floor = _bound(floor["flops"], floor["bytes"], chip)
  b_xla = _bound(step_cost["flops"], step_cost["bytes"], chip)
  for kind, strategy in (("greedy", strategies.Greedy()),
                         ("sampled", strategies.Sampling(temperature=1.0))):
    def call(strategy=strategy):
      return sampler.sample(model, params, prompts, rng=jax.random.key(0),
                            strategy=strategy, max_new_tokens=new_tokens,
                            stop_ids=(), prompt_buckets=(prompt_len,)).tokens
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
      jax.block_until_ready(call())
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    tps = batch * new_tokens / t
    # Decoding is bandwidth-bound: without an HBM figure there is no bound.
    has_hbm = bool(chip["hbm"])
    out[kind] = dict(
        run_s=t, times_s=times, first_call_s=first, tokens_per_s=tps,
        floor_tokens_per_s=batch / b_floor["t_s"] if has_hbm else None,
        xla_tokens_per_s=batch / b_xla["t_s"] if has_hbm else None)
  return out


def _pct(x):
  return "n/a" if x is None else f"{x:.1%}"


def _num(x, fmt="{:,.0f}"):
  return "n/a" if x is None else fmt.format(x)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="qwen2.5-0.5b")
  p.add_argument("--smoke", action="store_true",
                 help="CPU check of this script: tiny f32 model, tiny shapes")
  p.add_argument("--remat", action="store_true",
                 help="rematerialise blocks in the SFT backward pass")
  p.add_argument("--sft_batch", type=int, default=8)
  p.add_argument("--sft_seq", type=int, default=1024)
  p.add_argument("--decode_batch", type=int, default=64)
  p.add_argument("--decode_prompt", type=int, default=256)
  p.add_argument("--decode_new", type=int, default=256)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--peak_tflops", type=float, default=0.0)
  p.add_argument("--hbm_gbps", type=float, default=0.0)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  if args.smoke:
    args.model = "tiny"
    args.sft_batch, args.sft_seq = 2, 32
    args.decode_batch, args.decode_prompt, args.decode_new = 2, 8, 8
    args.steps, args.warmup = 2, 1

  import jax  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as mmodel  # pylint: disable=g-import-not-at-top
  from jaxsi.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  t_start = time.perf_counter()
  device = jax.devices()[0]
  chip = _chip(device, args.peak_tflops, args.hbm_gbps)
  if chip["flops"] is None and device.platform == "cpu":
    chip["flops"] = flops_lib.measure_matmul_peak(n=512 if args.smoke else 2048) * 1e9
    chip["name"] += " (measured f32 matmul peak)"
  overrides = dict(remat=args.remat)
  cfg = mcfg.get_config(args.model, **overrides)
  model, params = mmodel.init(cfg, jax.random.key(0))
  print(f"jax {jax.__version__}; {jax.device_count()} x {device.device_kind} "
        f"({device.platform}); chip figures: {chip['name']} peak "
        f"{_num(chip['flops'] and chip['flops'] / 1e12, '{:.1f}')} TFLOP/s, "
        f"HBM {_num(chip['hbm'] and chip['hbm'] / 1e9, '{:,.0f}')} GB/s")
  print(f"model {args.model}: {mcfg.describe(cfg)}, dtype {cfg.dtype}", flush=True)

  sft = bench_sft(model, params, batch=args.sft_batch, seq=args.sft_seq,
                  steps=args.steps, warmup=args.warmup, chip=chip)
  print(f"\nSFT step [{args.sft_batch} x {args.sft_seq}] (compile "
        f"{sft['compile_s']:.1f} s): {sft['step_s'] * 1e3:.1f} ms, "
        f"{sft['tokens_per_s']:,.0f} tok/s, loss {sft['loss']:.3f}")
  print(f"  FLOPs analytic {sft['analytic_flops'] / 1e12:.3f} T, XLA "
        f"{sft['xla_flops'] / 1e12:.3f} T; XLA bytes {sft['xla_bytes'] / 1e9:.2f} GB")
  print(f"  MFU {_pct(sft['mfu'])} (roofline bound of this program: MFU "
        f"{_pct(sft['bound']['mfu_bound'])}, step >= "
        f"{_num(sft['bound']['t_s'] and sft['bound']['t_s'] * 1e3, '{:.1f}')} ms; "
        f"measured at {_pct(sft['bound_fraction'])} of the bound)", flush=True)

  dec = bench_decode(model, params, batch=args.decode_batch,
                     prompt_len=args.decode_prompt, new_tokens=args.decode_new,
                     steps=args.steps, warmup=args.warmup, chip=chip)
  print(f"\ndecode B={args.decode_batch} P={args.decode_prompt} "
        f"G={args.decode_new} (floor bytes/step {dec['floor_bytes'] / 1e6:,.1f} MB, "
        f"XLA decode-step bytes {dec['step_xla_bytes'] / 1e6:,.1f} MB)")
  for kind in ("greedy", "sampled"):
    d = dec[kind]
    frac = (d["tokens_per_s"] / d["floor_tokens_per_s"]
            if d["floor_tokens_per_s"] else None)
    print(f"  {kind:8s} {d['tokens_per_s']:>12,.0f} tok/s (first call "
          f"{d['first_call_s']:.1f} s); bound {_num(d['floor_tokens_per_s'])} "
          f"tok/s (memory floor), {_num(d['xla_tokens_per_s'])} (XLA bytes); "
          f"{_pct(frac)} of the floor")
  total = time.perf_counter() - t_start
  print(f"\n({total:.0f} s)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(settings=vars(args), chip=chip, device=device.device_kind,
                     sft=sft, decode=dec, seconds=total), f, indent=1,
                default=str)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
