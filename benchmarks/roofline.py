r"""Roofline bounds of jaxsi's RL steps on accelerators, from XLA's cost analysis.

::

  python benchmarks/roofline.py                       # the docs/performance.md table
  python benchmarks/roofline.py --models=qwen2.5-0.5b --prompts=8 --n=8 \
      --prompt_len=256 --gen_len=512 --minibatches=4 --out=/tmp/roofline.json

For each model (published shapes from ``jaxsi.models.config`` presets, bf16,
nothing downloaded, no weights materialised) and each step of one GRPO
iteration on one chip:

* ``prefill``: the rollout's prompt pass, ``model.apply`` over [R, P] writing
  a KV cache of P + G slots (R = ``--prompts``);
* ``decode``: one decode step of the rollout, ``model.apply`` over [B, 1]
  against that cache (B = R·n rows; jaxsi attends all P + G slots under a
  mask), the unembedding, ``log_softmax`` and the token draw — what the
  sampler's ``lax.while_loop`` body does; a rollout runs G of them;
* ``rescore``: one frozen forward pass with chunked log-probs
  (``jaxsi.models.logprobs.token_logprobs``) over [B, P + G] — the
  reference (and, with ``old_logprobs='rescore'``, π_old) pass of the
  transform chain;
* ``update``: the jitted update step (``training.steps.make_update_step``)
  with GRPO's objective (clipped policy gradient + 0.04·k3 KL,
  ``methods.grpo``) and AdamW, on one minibatch of B / ``--minibatches``
  rows; an iteration runs ``--minibatches`` of them.

FLOPs and bytes accessed come from ``jit(f).lower(abstract args).compile()
.cost_analysis()`` on the CPU (``jax.ShapeDtypeStruct`` inputs, as
``jaxsi/dry_run.py`` plans a run). Compiling 24–28-layer programs with a
150k vocabulary on a CPU takes minutes, so each program is compiled with 1
and 2 layers and extrapolated linearly in the layer count,
``cost(L) = cost(1) + (L − 1)·(cost(2) − cost(1))`` (exact for a stack of
identical layers; ``--layers_exact`` compiles the full depth instead). The
bytes are the CPU-compiled program's (its fusion decisions, not a GPU's or
TPU's), so they are an upper estimate of the traffic a fused accelerator
program needs — in particular XLA:CPU has no bf16 matmul and converts bf16
weights to f32 before each dot, which adds about 3× the weight bytes; the
analytic columns give the cross-check:

* FLOPs: 2·N_matmul per token and pass plus 4·L·H·Dh·T_q·T_kv for attention
  scores and values (PaLM, Chowdhery et al. 2022, App. B; no causal discount,
  as jaxsi computes the full masked product); training = 3× forward
  (``jaxsi.training.flops``);
* bytes, a floor W = parameter bytes, A(n) = 2·L·n·D activation elements
  (every layer reads and writes the residual stream once per token):
  decode W + the whole KV cache read once, 2·L·B·(P+G)·Hkv·Dh elements;
  prefill W + A(R·P) + the KV written; rescore W + A(B·(P+G)); update
  10·W (weights read in the forward and both backward products, gradients
  written and read, Adam's two moments read and written, weights written)
  + 2·A(rows·(P+G)) (saved activations written and read back).

XLA's FLOPs count a ``while``/``scan`` body once, so the chunked log-prob
unembedding (a scan over time chunks) is under-counted in ``rescore`` and
``update``; the bounds therefore use max(XLA, analytic) FLOPs. Two bounds
are given: the *floor* (analytic bytes: what a well-fused accelerator
program approaches) and the *XLA-CPU* one (the CPU program's bytes, with
unfused [B, H, T, T] attention scores and f32 copies of bf16 weights: a
pessimistic bound).

The roofline bound of a step on a chip is ``t = max(FLOPs / peak, bytes /
bandwidth)``; the MFU bound is ``(FLOPs / peak) / t`` and the decode bound in
tokens/s is ``B / t``, given for the XLA bytes and for the analytic floor. Peaks (dense bf16) and HBM bandwidths are in
``CHIPS`` with their sources.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

# Vendor figures: dense bf16 matmul peak (FLOP/s) and HBM bandwidth (B/s).
CHIPS = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS *with
    # sparsity* = 989.4 dense; HBM3 3.35 TB/s.
    "H100-SXM": dict(flops=989.4e12, hbm=3.35e12,
                     source="NVIDIA H100 datasheet (SXM5)"),
    # NVIDIA H200 product page / datasheet (SXM): same GH100 compute, HBM3e
    # 4.8 TB/s.
    "H200-SXM": dict(flops=989.4e12, hbm=4.8e12,
                     source="NVIDIA H200 datasheet (SXM)"),
    # Cloud TPU v5e docs: 197 TFLOP/s bf16, HBM2 819 GB/s.
    "TPU-v5e": dict(flops=197e12, hbm=819e9,
                    source="cloud.google.com/tpu/docs/v5e"),
    # Cloud TPU v6e (Trillium) docs: 918 TFLOP/s bf16, 1640 GB/s.
    "TPU-v6e": dict(flops=918e12, hbm=1640e9,
                    source="cloud.google.com/tpu/docs/v6e"),
}
MODELS = ("qwen2.5-0.5b", "qwen3-0.6b", "llama-3.2-1b")
STEPS = ("prefill", "decode", "rescore", "update")


@dataclasses.dataclass(frozen=True)
class Workload:
  """One GRPO iteration on one chip."""

  prompts: int = 8
  n: int = 8
  prompt_len: int = 256
  gen_len: int = 512
  minibatches: int = 4

  @property
  def batch(self) -> int:
    return self.prompts * self.n

  @property
  def seq(self) -> int:
    return self.prompt_len + self.gen_len


# ----------------------------------------------------------- the programs
def _programs(config, w: Workload):
  """{step: (fn, abstract args)} for ``config`` (no weights)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  from jaxsi.models import logprobs as logprobs_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as model_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.spec import RolloutSpec  # pylint: disable=g-import-not-at-top
  from jaxsi.trajectory import Trajectory  # pylint: disable=g-import-not-at-top
  from jaxsi.training import optimizer as opt_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import train_state as ts_lib  # pylint: disable=g-import-not-at-top

  model = model_lib.build(config)
  params = model.abstract_params()
  i32 = jnp.int32
  r, b, p, s = w.prompts, w.batch, w.prompt_len, w.seq
  sds = jax.ShapeDtypeStruct

  def prefill(params, tokens, positions):
    cache = model.init_cache(tokens.shape[0], s)
    logits, cache = model.apply(params, tokens, positions, cache=cache)
    return logits[:, -1], cache

  cache_abs = jax.eval_shape(lambda: model.init_cache(b, s))

  def decode(params, cache, tokens, positions, key):
    hidden, cache = model.apply(params, tokens, positions, cache=cache,
                                return_hidden=True)
    logits = model.logits(params, hidden[:, -1]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    tok = jax.random.categorical(key, logits, axis=-1)
    return tok, jnp.take_along_axis(logp, tok[:, None], -1), cache

  def rescore(params, tokens, positions):
    return logprobs_lib.token_logprobs(model, params, tokens, positions)[0]

  method = methods.grpo(rollout=RolloutSpec(n=w.n, max_new_tokens=w.gen_len),
                        kl_coef=0.04)
  tx = opt_lib.make_optimizer(learning_rate=1e-6, schedule="constant",
                              max_grad_norm=1.0)
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=method.objective, donate=False)
  state_abs = jax.eval_shape(
      lambda p: ts_lib.create_train_state(p, tx, jax.random.key(0)), params)
  mb = b // w.minibatches

  def traj_fn(tokens):
    f32 = jnp.zeros(tokens.shape, jnp.float32)
    loss_mask = jnp.zeros(tokens.shape, bool).at[:, p:].set(True)
    return Trajectory.create(tokens, loss_mask=loss_mask,
                             behaviour_logprobs=f32, old_logprobs=f32,
                             ref_logprobs=f32, advantages=f32)

  traj_abs = jax.eval_shape(traj_fn, sds((mb, s), i32))
  key_abs = jax.eval_shape(lambda: jax.random.key(0))
  return {
      "prefill": (prefill, (params, sds((r, p), i32), sds((r, p), i32))),
      "decode": (decode, (params, cache_abs, sds((b, 1), i32),
                          sds((b, 1), i32), key_abs)),
      "rescore": (rescore, (params, sds((b, s), i32), sds((b, s), i32))),
      "update": (update.step_fn if hasattr(update, "step_fn") else None,
                 (state_abs, traj_abs)),
  }


def _cost(fn, args) -> dict:
  """FLOPs, bytes accessed and compile seconds of ``jit(fn)`` on ``args``."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return dict(flops=float(cost.get("flops", 0.0)),
              bytes=float(cost.get("bytes accessed", 0.0)), compile_s=seconds)


def xla_costs(config, w: Workload, *, exact: bool = False, steps=STEPS,
              log=print) -> dict:
  """{step: {flops, bytes, compile_s, layers_compiled}} of ``config``."""
  if exact:
    depths = (config.n_layers,)
  else:
    depths = (1, 2)
  per_depth = {}
  for d in depths:
    progs = _programs(config.replace(n_layers=d), w)
    for step, (fn, args) in progs.items():
      if step not in steps:
        continue
      if fn is None:
        raise RuntimeError("make_update_step has no step_fn: cannot lower the "
                           "update on abstract inputs")
      c = _cost(fn, args)
      per_depth.setdefault(step, {})[d] = c
      log(f"  {config.n_layers:>2}-layer {step:<8} compiled at {d} layer(s) "
          f"in {c['compile_s']:.1f}s")
  out = {}
  big = config.n_layers
  for step, by_d in per_depth.items():
    if exact:
      c = by_d[big]
      out[step] = dict(flops=c["flops"], bytes=c["bytes"],
                       compile_s=c["compile_s"], layers_compiled=[big])
      continue
    c1, c2 = by_d[1], by_d[2]
    out[step] = dict(
        flops=c1["flops"] + (big - 1) * (c2["flops"] - c1["flops"]),
        bytes=c1["bytes"] + (big - 1) * (c2["bytes"] - c1["bytes"]),
        compile_s=c1["compile_s"] + c2["compile_s"], layers_compiled=[1, 2])
  return out


# --------------------------------------------------------------- analytic
def analytic(config, w: Workload) -> dict:
  """Analytic FLOPs (PaLM count) and decode bytes (see module doc)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  c = config
  n_mm = flops_lib.matmul_params(c)
  attn = lambda tq, tkv: 4 * c.n_layers * c.n_heads * c.head_dim * tq * tkv
  b, r, p, s = w.batch, w.prompts, w.prompt_len, w.seq
  mb = b // w.minibatches
  item = jnp.dtype(c.param_dtype).itemsize
  kv_item = jnp.dtype(c.dtype).itemsize
  params_bytes = mcfg.num_params(c) * item
  kv_bytes = 2 * c.n_layers * b * s * c.n_kv_heads * c.head_dim * kv_item
  act = lambda tokens: 2 * c.n_layers * tokens * c.d_model * kv_item
  kv_write = lambda tokens: 2 * c.n_layers * tokens * c.n_kv_heads * c.head_dim * kv_item
  return {
      "prefill": dict(flops=r * (2 * n_mm * p + attn(p, s)),
                      bytes=params_bytes + act(r * p) + kv_write(r * p)),
      "decode": dict(flops=b * (2 * n_mm + attn(1, s)),
                     bytes=params_bytes + kv_bytes),
      "rescore": dict(flops=b * (2 * n_mm * s + attn(s, s)),
                      bytes=params_bytes + act(b * s)),
      "update": dict(flops=3 * mb * (2 * n_mm * s + attn(s, s)),
                     bytes=10 * params_bytes + 2 * act(mb * s)),
      "params_bytes": params_bytes, "kv_cache_bytes": kv_bytes,
  }


def bounds(flops: float, nbytes: float, chip: dict) -> dict:
  """Roofline time, MFU bound and arithmetic intensity on ``chip``."""
  t_compute = flops / chip["flops"]
  t_memory = nbytes / chip["hbm"]
  t = max(t_compute, t_memory)
  return dict(t_s=t, mfu_bound=t_compute / t if t > 0 else 0.0,
              bound="compute" if t_compute >= t_memory else "memory",
              intensity=flops / nbytes if nbytes else float("inf"))


def iteration_counts(w: Workload) -> dict:
  """How many times each step runs per GRPO iteration (rescore: reference
  only; ``old_logprobs='rescore'`` doubles it)."""
  return {"prefill": 1, "decode": w.gen_len, "rescore": 1,
          "update": w.minibatches}


def table(results: dict, chips, w: Workload) -> str:
  """Markdown tables: costs per model × step, bounds per chip, iterations."""
  lines = [
      "| model | step | runs/iter | XLA GFLOP | analytic GFLOP | XLA-CPU GB "
      "accessed | floor GB |", "|---|---|---|---|---|---|---|"]
  runs = iteration_counts(w)
  for name, res in results.items():
    for step in STEPS:
      x, a = res["xla"][step], res["analytic"][step]
      lines.append(f"| {name} | {step} | {runs[step]} | {x['flops'] / 1e9:,.1f} | "
                   f"{a['flops'] / 1e9:,.1f} | {x['bytes'] / 1e9:,.2f} | "
                   f"{a['bytes'] / 1e9:,.2f} |")
  lines += ["", "Bounds per step (floor bytes; XLA-CPU bytes in brackets):", "",
            "| model | step | chip | bound | time bound ms | MFU bound | "
            "decode tok/s bound |", "|---|---|---|---|---|---|---|"]
  for name, res in results.items():
    for step in STEPS:
      for chip in chips:
        f, x = res["floor_bounds"][chip][step], res["bounds"][chip][step]
        tps = "-"
        if step == "decode":
          tps = f"{w.batch / f['t_s']:,.0f} [{w.batch / x['t_s']:,.0f}]"
        lines.append(
            f"| {name} | {step} | {chip} | {f['bound']} [{x['bound']}] | "
            f"{f['t_s'] * 1e3:,.2f} [{x['t_s'] * 1e3:,.2f}] | "
            f"{f['mfu_bound']:.0%} [{x['mfu_bound']:.0%}] | {tps} |")
  lines += ["", "One GRPO iteration (rollout = prefill + G decode steps; "
            "update = all minibatches):", "",
            "| model | chip | iteration bound s | rollout share | "
            "iteration MFU bound |", "|---|---|---|---|---|"]
  for name, res in results.items():
    for chip in chips:
      f, x = res["iteration"][chip]["floor"], res["iteration"][chip]["xla"]
      lines.append(f"| {name} | {chip} | {f['t_s']:.3f} [{x['t_s']:.3f}] | "
                   f"{f['rollout_share']:.0%} [{x['rollout_share']:.0%}] | "
                   f"{f['mfu_bound']:.0%} [{x['mfu_bound']:.0%}] |")
  return "\n".join(lines)


def run(models, w: Workload, chips, *, exact: bool = False, log=print) -> dict:
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  results = {}
  runs = iteration_counts(w)
  for name in models:
    cfg = mcfg.get_config(name)
    log(f"== {name}: {mcfg.describe(cfg)}")
    xla = xla_costs(cfg, w, exact=exact, log=log)
    ana = analytic(cfg, w)
    fl = {st: max(xla[st]["flops"], ana[st]["flops"]) for st in STEPS}
    bds = {chip: {st: bounds(fl[st], xla[st]["bytes"], CHIPS[chip])
                  for st in STEPS} for chip in chips}
    floor = {chip: {st: bounds(fl[st], ana[st]["bytes"], CHIPS[chip])
                    for st in STEPS} for chip in chips}
    iteration = {}
    total_flops = sum(runs[st] * fl[st] for st in STEPS)
    for chip in chips:
      iteration[chip] = {}
      for kind, bd in (("floor", floor), ("xla", bds)):
        t = sum(runs[st] * bd[chip][st]["t_s"] for st in STEPS)
        roll = (runs["prefill"] * bd[chip]["prefill"]["t_s"]
                + runs["decode"] * bd[chip]["decode"]["t_s"])
        iteration[chip][kind] = dict(
            t_s=t, rollout_share=roll / t,
            mfu_bound=total_flops / CHIPS[chip]["flops"] / t)
    results[name] = dict(config=dataclasses.asdict(cfg), xla=xla, analytic=ana,
                         bounds=bds, floor_bounds=floor, iteration=iteration)
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--chips", default=",".join(CHIPS))
  p.add_argument("--prompts", type=int, default=Workload.prompts)
  p.add_argument("--n", type=int, default=Workload.n)
  p.add_argument("--prompt_len", type=int, default=Workload.prompt_len)
  p.add_argument("--gen_len", type=int, default=Workload.gen_len)
  p.add_argument("--minibatches", type=int, default=Workload.minibatches)
  p.add_argument("--layers_exact", action="store_true",
                 help="compile the full depth instead of 1 and 2 layers")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  chips = [c for c in args.chips.split(",") if c]
  bad = [c for c in chips if c not in CHIPS]
  if bad:
    raise SystemExit(f"roofline.py --chips: unknown {bad}; choose from {list(CHIPS)}")
  w = Workload(prompts=args.prompts, n=args.n, prompt_len=args.prompt_len,
               gen_len=args.gen_len, minibatches=args.minibatches)
  if w.batch % w.minibatches:
    raise SystemExit(f"roofline.py: B = {w.batch} is not divisible by "
                     f"--minibatches={w.minibatches}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  t0 = time.perf_counter()
  results = run([m for m in args.models.split(",") if m], w, chips,
                exact=args.layers_exact)
  print(f"\nGRPO iteration on one chip: R={w.prompts} prompts x n={w.n} = "
        f"B={w.batch} rows, P={w.prompt_len}, G={w.gen_len}, "
        f"{w.minibatches} minibatches; bf16 parameters and activations")
  print(table(results, chips, w))
  print("\nchips: " + "; ".join(
      f"{c} {CHIPS[c]['flops'] / 1e12:.1f} TFLOP/s, {CHIPS[c]['hbm'] / 1e12:.2f} "
      f"TB/s ({CHIPS[c]['source']})" for c in chips))
  print(f"({time.perf_counter() - t0:.0f} s)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(workload=dataclasses.asdict(w), chips={c: CHIPS[c] for c in chips},
                     results=results), f, indent=1, default=str)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
