r"""jaxsi against its PyTorch peers, in one run, on several model shapes.

::

  python benchmarks/peers.py --out=/tmp/peers.json            # idle machine
  python benchmarks/peers.py --only=sft --shapes=tiny,small --steps=5

Three benchmarks, each on every shape of ``--shapes`` (default ``tiny``,
``small`` and ``medium``: the two presets and a 3× larger decoder, see
``SHAPES``), both sides on the **same random weights** (the jaxsi params are
written as a local Hugging Face checkpoint and loaded by transformers,
``benchmarks/torch_port.py``) and the same batches:

* ``sft``: one supervised step — forward, backward, gradient clipping to
  norm 1 and AdamW (β = (0.9, 0.999), ε = 1e-8, weight decay 0.1 on
  matrices, constant learning rate) — on a ``[--sft_batch, --sft_seq]``
  batch of random tokens, loss = next-token cross-entropy averaged over every
  predicted token. jaxsi: ``training.steps.make_update_step`` with
  ``sft_objective(mask='input')``; peer: transformers ``Qwen2ForCausalLM``
  (``labels=input_ids``) + ``torch.optim.AdamW`` in eager torch. MFU is the
  analytic training count (``jaxsi.training.flops``, PaLM App. B:
  6·N_matmul + 12·L·H·Dh·T FLOPs per token) over the best f32 matmul rate
  measured in this run (jax and torch, 2048³, before the benchmarks).
  **Correctness guard**: the step-0 losses of both sides on the ported weights
  must agree (``--loss_rtol``), and so must the losses after the last step
  (the same AdamW updates on both sides); a row that fails says ``FAIL``.
* ``grpo``: one GRPO iteration (rollout, reference pass, update) through
  jaxsi's ``Loop`` against TRL's ``GRPOTrainer``, set up as in
  ``benchmarks/compare_trl.py`` (``benchmarks/grpo_setup.py``).
* ``decode``: ``jaxsi.sampling.sample`` against transformers ``generate``
  with its KV cache, ``--decode_batch`` prompts of ``--decode_prompt``
  tokens, ``--decode_new`` new tokens, no stop token (every row decodes the
  full budget), greedy and sampled (temperature 1, no top-k/top-p). Greedy
  **guard**: the fraction of generated tokens on which the two sides agree
  (random models have near-ties, so a few late tokens may differ); the first
  generated token must agree on every row, except where the two choices'
  logits (transformers' forward pass) are within ``--tie_tol`` of each
  other — a near-tie that float rounding decides either way.

Ratios are speedups: peer time / jaxsi time (> 1 means jaxsi is faster).

Fair play: every side gets ``--warmup`` untimed calls (jaxsi's compilation
happens there) and then ``--steps`` timed calls; both compute with the same
number of threads (the process is pinned to ``--threads`` CPUs before JAX and
torch start, ``torch.set_num_threads`` is set to it; both are printed). The
jaxsi side's XLA compilations are counted per bucket (benchmark × shape ×
phase) from ``jax.monitoring``; the timed phase of a bucket must compile
nothing. The machine load (``uptime``) is recorded at start and end; a
1-minute load above 0.5 at the start refuses the run unless ``--allow_load``, and
the CPU time other processes use during the run is measured (/proc/stat minus
this process), so a run is marked as measured under load when the start load
exceeded 0.5 or other processes kept more than 0.1 cores busy on average. A peer that is not installed is
skipped with the pip line that installs it. ``--out`` writes every figure as
JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import bench_env
import torch_port

BENCHES = ("sft", "grpo", "decode")
PEERS = ("transformers", "trl")
# Shapes beyond the presets: a decoder 3x the `small` preset's matmul
# parameters that still runs in seconds per step on 2 CPU cores.
SHAPES = {
    "medium": ("small", dict(d_model=512, n_layers=6, n_heads=8, n_kv_heads=4,
                             head_dim=64, d_ff=1536)),
}
# Mean cores other processes may keep busy during a run that counts as idle.
OTHER_CORES_LIMIT = 0.1
TORCH_MODULES = ("torch", "transformers")
TRL_MODULES = ("torch", "transformers", "datasets", "accelerate", "trl")


def _csv(value: str, allowed=None, what="value") -> list:
  items = [v.strip() for v in value.split(",") if v.strip()]
  if allowed is not None:
    bad = [v for v in items if v not in allowed]
    if bad:
      raise SystemExit(f"peers.py: unknown {what} {bad}; choose from "
                       f"{list(allowed)}")
  return items


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default=",".join(BENCHES),
                 help="comma list of benchmarks: sft,grpo,decode")
  p.add_argument("--shapes", default="tiny,small,medium",
                 help="comma list of jaxsi presets or " + ",".join(SHAPES))
  p.add_argument("--peers", default=",".join(PEERS),
                 help="comma list of peers to run (transformers: sft and "
                      "decode; trl: grpo); empty = jaxsi only")
  p.add_argument("--steps", type=int, default=5, help="timed calls per side")
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed calls per side (compilation)")
  p.add_argument("--threads", type=int, default=0,
                 help="CPUs both sides compute on (0 = all this process may use)")
  p.add_argument("--vocab", type=int, default=0,
                 help="vocabulary (0 = the character tokenizer's; GRPO needs "
                      "at least that)")
  p.add_argument("--sft_batch", type=int, default=16)
  p.add_argument("--sft_seq", type=int, default=128)
  p.add_argument("--grpo_prompts", type=int, default=8)
  p.add_argument("--grpo_n", type=int, default=8)
  p.add_argument("--grpo_new", type=int, default=32)
  p.add_argument("--grpo_old_logprobs", default="on_policy",
                 choices=("on_policy", "rescore"))
  p.add_argument("--trl_gradient_checkpointing", action="store_true",
                 help="keep TRL's default gradient checkpointing (jaxsi does "
                      "not rematerialise)")
  p.add_argument("--decode_batch", type=int, default=64)
  p.add_argument("--decode_prompt", type=int, default=32)
  p.add_argument("--decode_new", type=int, default=64)
  p.add_argument("--loss_rtol", type=float, default=1e-3,
                 help="relative tolerance of the SFT loss guard")
  p.add_argument("--tie_tol", type=float, default=1e-4,
                 help="greedy guard: a first token may differ only where the "
                      "two choices' logits are within this of each other")
  p.add_argument("--matmul_n", type=int, default=2048)
  p.add_argument("--allow_load", action="store_true",
                 help="run even if the 1-minute load average is above 0.5")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="", help="write all results as JSON here")
  args = p.parse_args(argv)
  args.only = _csv(args.only, BENCHES, "benchmark")
  args.peers = _csv(args.peers, PEERS, "peer")
  args.shapes = _csv(args.shapes)
  for name in ("steps", "warmup", "sft_batch", "sft_seq", "grpo_prompts",
               "grpo_n", "grpo_new", "decode_batch", "decode_prompt",
               "decode_new"):
    low = 0 if name == "warmup" else 1
    if getattr(args, name) < low:
      raise SystemExit(f"peers.py: --{name}={getattr(args, name)} must be >= {low}")
  if args.sft_seq < 2:
    raise SystemExit("peers.py: --sft_seq must be >= 2 (next-token loss)")
  return args


# ------------------------------------------------------------------ shapes
def shape_config(name: str, vocab: int):
  """The Qwen2-shaped f32 ModelConfig of shape ``name``."""
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  base, overrides = SHAPES.get(name, (name, {}))
  try:
    cfg = mcfg.get_config(base, vocab_size=vocab, **overrides)
  except ValueError as e:
    raise SystemExit(f"peers.py --shapes: {e}; or one of {list(SHAPES)}") from e
  return torch_port.peer_config(cfg)


# --------------------------------------------------------------------- sft
def _sft_batches(*, batch, seq, vocab, n, seed):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  # Ids >= 3 (no pad/bos/eos): every token is real on both sides.
  return [rng.integers(3, vocab, size=(batch, seq)).astype(np.int32)
          for _ in range(n)]


def sft_jaxsi(model, params, batches):
  """jaxsi's supervised step as an ``interleave`` side; records the losses.

  Returns:
    ``((fn, sync), losses)``: every call trains on the next batch (cycling);
    ``losses`` gets each call's loss (computed before its update).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxsi.trajectory import Trajectory  # pylint: disable=g-import-not-at-top
  from jaxsi.training import optimizer as opt_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import train_state as ts_lib  # pylint: disable=g-import-not-at-top
  tx = opt_lib.make_optimizer(learning_rate=1e-4, schedule="constant",
                              weight_decay=0.1, max_grad_norm=1.0)
  update = steps_lib.make_update_step(
      model=model, optimizer=tx, objective=steps_lib.sft_objective(mask="input"))
  # The step donates its state: start from a copy (params serve later runs).
  state = ts_lib.create_train_state(jax.tree.map(jax.numpy.copy, params), tx,
                                    jax.random.key(1))
  trajs = [Trajectory.create(b) for b in batches]
  losses = []
  box = {"state": state, "i": 0}

  def call():
    traj = trajs[box["i"] % len(trajs)]
    box["i"] += 1
    box["state"], m = update(box["state"], traj)
    return box["state"], m

  def sync(out):
    jax.block_until_ready(out)
    losses.append(float(out[1]["loss"]))
    return None

  return (call, sync), losses


def sft_torch(model, batches):
  """The eager transformers + ``torch.optim.AdamW`` step, jaxsi's settings.

  Returns:
    ``((fn, sync), losses)`` like :func:`sft_jaxsi`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  model.train()
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1),
                           dict(params=no_decay, weight_decay=0.0)],
                          lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
  ids = [torch.from_numpy(b.astype("int64")) for b in batches]
  params = list(model.parameters())
  losses = []
  box = {"i": 0}

  def call():
    x = ids[box["i"] % len(ids)]
    box["i"] += 1
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    losses.append(float(loss.detach()))
    return None

  return (call, lambda out: out), losses


# ------------------------------------------------------------------ decode
def _decode_prompts(*, batch, length, vocab, seed):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed + 1)
  return rng.integers(3, vocab, size=(batch, length)).astype(np.int32)


def decode_jaxsi(model, params, prompts, *, new_tokens, greedy, seed):
  """``jaxsi.sampling.sample`` at one fixed bucket, as an ``interleave`` side.

  The call returns the generated tokens int32[B, new_tokens].
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import sampler  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.Greedy() if greedy else strategies.Sampling(temperature=1.0)
  rows = [list(map(int, r)) for r in prompts]
  p = prompts.shape[1]

  def call():
    return sampler.sample(model, params, rows, rng=jax.random.key(seed),
                          strategy=strategy, max_new_tokens=new_tokens,
                          stop_ids=(), prompt_buckets=(p,)).tokens

  return call, lambda out: np.asarray(jax.block_until_ready(out))[:, p:]


def _first_token_gaps(hf_model, prompts, jaxsi_tokens, peer_tokens) -> list:
  """Logit gaps (peer's view) where the two sides' first greedy tokens differ.

  Random models have near-ties, so a first token may legitimately differ
  when the two choices' logits are within float rounding of each other;
  a real bug shows up as a large gap. Returns one gap per differing row.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  rows = np.nonzero(jaxsi_tokens[:, 0] != peer_tokens[:, 0])[0]
  if not len(rows):
    return []
  with torch.inference_mode():
    logits = hf_model(torch.from_numpy(prompts[rows].astype("int64"))).logits
  last = logits[:, -1, :].float().numpy()
  idx = np.arange(len(rows))
  return [float(g) for g in
          last[idx, peer_tokens[rows, 0]] - last[idx, jaxsi_tokens[rows, 0]]]


def decode_hf(model, prompts, *, new_tokens, greedy, seed):
  """transformers ``generate`` with its KV cache and no stop token, as a side."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model.eval()
  x = torch.from_numpy(prompts.astype("int64"))
  mask = torch.ones_like(x)
  # No stop token; sampled = plain ancestral sampling (top-k/top-p off).
  sampling = {} if greedy else dict(temperature=1.0, top_k=0, top_p=1.0)
  gc = transformers.GenerationConfig(
      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=not greedy,
      use_cache=True, eos_token_id=None, pad_token_id=0, bos_token_id=None,
      **sampling)

  def call():
    torch.manual_seed(seed)
    with torch.inference_mode():
      return model.generate(input_ids=x, attention_mask=mask,
                            generation_config=gc)

  def sync(out):
    out = out.numpy()[:, prompts.shape[1]:]
    if out.shape[1] != new_tokens:
      raise RuntimeError(f"generate returned {out.shape[1]} new tokens, "
                         f"expected {new_tokens}")
    return out

  return call, sync


def _side(res: dict, **extra) -> dict:
  out = dict(step_s=res["median_s"], times_s=res["times_s"],
             first_call_s=res["first_s"])
  out.update(extra)
  return out


# ------------------------------------------------------------------ driver
def _peak(args, torch_mod):
  """Best f32 matmul GFLOP/s of jax and torch on this machine."""
  from jaxsi.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  out = {"jax": flops_lib.measure_matmul_peak(n=args.matmul_n)}
  if torch_mod is not None:
    n = args.matmul_n
    a, b = torch_mod.randn(n, n), torch_mod.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(5):
      t0 = time.perf_counter()
      a @ b
      best = min(best, time.perf_counter() - t0)
    out["torch"] = 2.0 * n ** 3 / best / 1e9
  out["peak"] = max(out.values())
  return out


def skipped_peers(args) -> dict:
  """{peer: pip line} for each requested peer that is not installed."""
  out = {}
  need = {"transformers": TORCH_MODULES, "trl": TRL_MODULES}
  for peer in args.peers:
    if peer == "trl" and "grpo" not in args.only:
      continue
    missing = torch_port.missing(need[peer])
    if missing:
      out[peer] = torch_port.install_hint(missing)
  return out


def run(args) -> dict:
  """Runs every requested benchmark and shape; returns the results dict."""
  n_threads = bench_env.pin_threads(args.threads)
  warning = bench_env.check_idle(allow_load=args.allow_load)
  start_uptime = bench_env.uptime()
  start_load = bench_env.load_average()
  other_cpu = bench_env.OtherCpu()

  skipped = skipped_peers(args)
  for peer, hint in skipped.items():
    print(f"peer {peer} skipped (not installed): {hint}", flush=True)
  run_hf = "transformers" in args.peers and "transformers" not in skipped
  run_trl = ("trl" in args.peers and "grpo" in args.only
             and "trl" not in skipped)

  torch_mod = None
  if run_hf or run_trl:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(n_threads)
    torch_mod = torch
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxsi.data import char_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as mmodel  # pylint: disable=g-import-not-at-top
  from jaxsi.training import flops as flops_lib  # pylint: disable=g-import-not-at-top
  import grpo_setup  # pylint: disable=g-import-not-at-top

  counter = bench_env.CompileCounter()
  threads = bench_env.thread_report(torch_mod)
  threads["pinned"] = n_threads
  versions = {"jax": jax.__version__, "python": platform.python_version()}
  if torch_mod is not None:
    import transformers  # pylint: disable=g-import-not-at-top
    versions.update(torch=torch_mod.__version__,
                    transformers=transformers.__version__)
  if run_trl:
    import trl  # pylint: disable=g-import-not-at-top
    versions["trl"] = trl.__version__
  print(f"jaxsi peers benchmark — {start_uptime}", flush=True)
  print(f"devices {jax.devices()}; threads {threads}; {versions}", flush=True)
  peak = _peak(args, torch_mod) if "sft" in args.only else None
  if peak:
    print("f32 matmul peak (GFLOP/s): " + ", ".join(
        f"{k} {v:.1f}" for k, v in peak.items()), flush=True)

  tok = char_tokenizer.CharTokenizer()
  vocab = args.vocab or tok.vocab_size
  if "grpo" in args.only and vocab < tok.vocab_size:
    raise SystemExit(f"peers.py: --vocab={vocab} < the character tokenizer's "
                     f"{tok.vocab_size} (GRPO prompts use it)")
  rows = []
  for shape in args.shapes:
    cfg = shape_config(shape, vocab)
    model, params = mmodel.init(cfg, jax.random.key(args.seed))
    base = dict(shape=shape, params=mcfg.num_params(cfg),
                config=dict(d_model=cfg.d_model, n_layers=cfg.n_layers,
                            n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                            head_dim=cfg.head_dim, d_ff=cfg.d_ff,
                            vocab_size=cfg.vocab_size))
    model_dir = None
    hf_model = None
    if run_hf or run_trl:
      model_dir = torch_port.save_checkpoint(cfg, params, tokenizer=tok)
    print(f"\n== shape {shape}: {mcfg.describe(cfg)}", flush=True)

    if "sft" in args.only:
      batches = _sft_batches(batch=args.sft_batch, seq=args.sft_seq,
                             vocab=vocab, n=args.warmup + args.steps + 1,
                             seed=args.seed)
      bucket = f"sft/{shape}"
      sides, losses = {}, {}
      sides["jaxsi"], losses["jaxsi"] = sft_jaxsi(model, params, batches)
      if run_hf:
        hf_model = torch_port.load_torch_model(model_dir)
        sides["peer"], losses["peer"] = sft_torch(hf_model, batches)
      res = bench_env.interleave(sides, warmup=args.warmup, steps=args.steps,
                                 counter=counter, bucket=bucket)
      flops = flops_lib.train_step_flops(cfg, batch_size=args.sft_batch,
                                         seq_len=args.sft_seq)
      mfu = lambda t: flops / t / (peak["peak"] * 1e9)
      jx = _side(res["jaxsi"], loss_step0=losses["jaxsi"][0],
                 losses=losses["jaxsi"], mfu=mfu(res["jaxsi"]["median_s"]))
      row = dict(base, bench="sft", batch=f"{args.sft_batch}x{args.sft_seq}",
                 flops_per_step=flops, jaxsi=jx,
                 compiles=_compiles(counter, bucket))
      if run_hf:
        pt = _side(res["peer"], loss_step0=losses["peer"][0],
                   losses=losses["peer"], mfu=mfu(res["peer"]["median_s"]),
                   name="transformers",
                   attn_implementation=getattr(
                       hf_model.config, "_attn_implementation", None))
        row["peer"] = pt
        row["speedup"] = pt["step_s"] / jx["step_s"]
        row["check"] = _loss_check(jx["losses"], pt["losses"], args.loss_rtol)
        hf_model = None
      rows.append(row)
      _print_row(row)

    if "grpo" in args.only:
      tasks = grpo_setup.make_tasks(args.grpo_prompts)
      common = dict(tok=tok, tasks=tasks, prompts=args.grpo_prompts,
                    n=args.grpo_n, max_new_tokens=args.grpo_new,
                    steps=args.steps, warmup=max(args.warmup, 1))
      bucket = f"grpo/{shape}"
      tkw = dict(model=model, params=params, tok=tok, tasks=tasks,
                 prompts=args.grpo_prompts, n=args.grpo_n,
                 max_new_tokens=args.grpo_new,
                 old_logprobs=args.grpo_old_logprobs)
      warmup = max(args.warmup, 1)
      if run_trl:
        # Alternate: each TRL step is followed by one jaxsi iteration.
        trainer = grpo_setup.jaxsi_trainer(**tkw)
        warm, hist, jx_times = [], [], []

        def between(i, trainer=trainer, warm=warm, hist=hist,
                    jx_times=jx_times, bucket=bucket, warmup=warmup):
          phase = "warmup" if i < warmup else "timed"
          with counter.bucket(f"{bucket}/{phase}"):
            t0 = time.perf_counter()
            m = trainer.step()
            if phase == "timed":
              jx_times.append(time.perf_counter() - t0)
          (warm if phase == "warmup" else hist).append(m)

        tr = grpo_setup.time_trl(
            model_dir=model_dir, tok=tok, tasks=tasks,
            prompts=args.grpo_prompts, n=args.grpo_n,
            max_new_tokens=args.grpo_new, steps=args.steps, warmup=warmup,
            gradient_checkpointing=args.trl_gradient_checkpointing,
            between=between)
        jx = grpo_setup.summarize_jaxsi(warm, hist, statistics.fmean(jx_times))
      else:
        jx = grpo_setup.time_jaxsi(steps=args.steps, warmup=warmup,
                                   counter=counter, bucket=bucket, **tkw)
      row = dict(base, bench="grpo",
                 batch=f"{args.grpo_prompts}x{args.grpo_n}x{args.grpo_new}",
                 jaxsi=jx, compiles=_compiles(counter, bucket))
      if run_trl:
        row["peer"] = dict(tr, name="trl")
        row["speedup"] = tr["step_s"] / jx["step_s"]
        row["check"] = dict(
            ok=None, note=(f"completion length jaxsi {jx['completion_length']:.1f}"
                           f" / TRL {tr['completion_length']:.1f}; reward "
                           f"{jx['reward']:.3f} / {tr['reward']:.3f}"))
      rows.append(row)
      _print_row(row)

    if "decode" in args.only:
      prompts = _decode_prompts(batch=args.decode_batch,
                                length=args.decode_prompt, vocab=vocab,
                                seed=args.seed)
      if run_hf:
        hf_model = torch_port.load_torch_model(model_dir)
      for greedy in (True, False):
        kind = "greedy" if greedy else "sampled"
        bucket = f"decode_{kind}/{shape}"
        kw = dict(new_tokens=args.decode_new, greedy=greedy, seed=args.seed)
        sides = {"jaxsi": decode_jaxsi(model, params, prompts, **kw)}
        if run_hf:
          sides["peer"] = decode_hf(hf_model, prompts, **kw)
        res = bench_env.interleave(sides, warmup=args.warmup, steps=args.steps,
                                   counter=counter, bucket=bucket)
        tps = lambda t: args.decode_batch * args.decode_new / t
        jx = _side(res["jaxsi"], tokens_per_s=tps(res["jaxsi"]["median_s"]))
        row = dict(base, bench=f"decode_{kind}",
                   batch=f"{args.decode_batch}x{args.decode_prompt}+"
                         f"{args.decode_new}",
                   jaxsi=jx, compiles=_compiles(counter, bucket))
        if run_hf:
          pt = _side(res["peer"], tokens_per_s=tps(res["peer"]["median_s"]),
                     name="transformers.generate")
          row["peer"] = pt
          row["speedup"] = pt["step_s"] / jx["step_s"]
          if greedy:
            same = res["jaxsi"]["last"] == res["peer"]["last"]
            gaps = _first_token_gaps(hf_model, prompts, res["jaxsi"]["last"],
                                     res["peer"]["last"])
            row["check"] = dict(
                ok=bool(all(g <= args.tie_tol for g in gaps)),
                agree=float(same.mean()),
                first_token_agree=float(same[:, 0].mean()),
                first_token_gaps=gaps)
          else:
            row["check"] = dict(ok=None, note="sampled: different RNGs")
        rows.append(row)
        _print_row(row)
      hf_model = None

  end_uptime = bench_env.uptime()
  # The end load counts this run's own threads; what matters is whether
  # anything *else* used the CPUs meanwhile.
  other_cores = other_cpu.cores()
  return dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
      command=" ".join([os.path.basename(sys.executable)] + sys.argv),
      uptime_start=start_uptime, uptime_end=end_uptime,
      load_start=start_load, load_end=bench_env.load_average(),
      other_cores=other_cores,
      under_load=warning is not None or (other_cores or 0.0) > OTHER_CORES_LIMIT,
      threads=threads, versions=versions, matmul_peak_gflops=peak,
      skipped_peers=skipped, settings=vars(args), rows=rows,
      compile_counts=counter.counts(),
      compile_names={k: counter.names(k) for k in counter.counts()})


def _compiles(counter, bucket) -> dict:
  return dict(warmup=counter.count(f"{bucket}/warmup"),
              timed=counter.count(f"{bucket}/timed"),
              warmup_s=counter.seconds(f"{bucket}/warmup"),
              ok=counter.count(f"{bucket}/timed") == 0)


def _close(a, b, rtol):
  return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def _loss_check(jx_losses, pt_losses, rtol) -> dict:
  first = _close(jx_losses[0], pt_losses[0], rtol)
  last = _close(jx_losses[-1], pt_losses[-1], rtol)
  return dict(ok=bool(first and last), loss_step0=(jx_losses[0], pt_losses[0]),
              loss_last=(jx_losses[-1], pt_losses[-1]), rtol=rtol)


def _fmt_check(row) -> str:
  c = row.get("check")
  if c is None:
    return "-"
  if "loss_step0" in c:
    return (("ok" if c["ok"] else "FAIL") +
            f" loss0 {c['loss_step0'][0]:.4f}/{c['loss_step0'][1]:.4f}")
  if "agree" in c:
    gaps = c.get("first_token_gaps") or []
    ties = ""
    if gaps:
      ties = (f"; {len(gaps)} first token(s) differ, logit gap in transformers'"
              f" own forward ≤ {max(gaps):.1e} (< 0: it prefers jaxsi's token)")
    return (("ok" if c["ok"] else "FAIL") +
            f" agree {c['agree']:.3f}{ties}")
  return c.get("note", "-")


def _time_of(side) -> float:
  return side["step_s"]


def _print_row(row) -> None:
  jx = row["jaxsi"]
  peer = row.get("peer")
  line = (f"{row['bench']:<14} {row['shape']:<7} jaxsi {_time_of(jx) * 1e3:9.1f} ms")
  if peer:
    line += (f" | {peer['name']} {_time_of(peer) * 1e3:9.1f} ms | speedup "
             f"{row['speedup']:.2f}x")
  line += (f" | compiles {row['compiles']['warmup']}/{row['compiles']['timed']}"
           f" | {_fmt_check(row)}")
  print(line, flush=True)


def format_table(result: dict) -> str:
  """The results as a Markdown table."""
  head = ("| bench | shape | params | batch | jaxsi ms | peer | peer ms | "
          "speedup | jaxsi MFU | peer MFU | jaxsi tok/s | peer tok/s | "
          "compiles warm/timed | check |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in result["rows"]:
    jx, peer = r["jaxsi"], r.get("peer") or {}
    pct = lambda x: f"{x:.1%}" if x is not None else "-"
    tps = lambda x: f"{x:,.0f}" if x is not None else "-"
    lines.append(
        f"| {r['bench']} | {r['shape']} | {r['params']:,} | {r['batch']} | "
        f"{_time_of(jx) * 1e3:.1f} | {peer.get('name', 'skipped')} | "
        + (f"{_time_of(peer) * 1e3:.1f}" if peer else "-") + " | "
        + (f"{r['speedup']:.2f}x" if "speedup" in r else "-") + " | "
        f"{pct(jx.get('mfu'))} | {pct(peer.get('mfu'))} | "
        f"{tps(jx.get('tokens_per_s'))} | {tps(peer.get('tokens_per_s'))} | "
        f"{r['compiles']['warmup']}/{r['compiles']['timed']} | {_fmt_check(r)} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  result = run(args)
  print("\n" + format_table(result))
  for r in result["rows"]:
    if r["bench"] == "grpo":
      s = r["jaxsi"]["split"]
      print(f"jaxsi GRPO split ({r['shape']}, s/step): " + ", ".join(
          f"{k} {v:.3f}" for k, v in s.items()))
  speedups = [r["speedup"] for r in result["rows"] if "speedup" in r]
  if speedups:
    print(f"geometric-mean speedup {statistics.geometric_mean(speedups):.2f}x "
          f"over {len(speedups)} rows (> 1: jaxsi faster)")
  oc = result.get("other_cores")
  print(f"load: start [{result['uptime_start']}] end [{result['uptime_end']}]"
        + (f"; other processes kept {oc:.2f} cores busy on average" if oc is not None else "")
        + ("  — MEASURED UNDER LOAD, not a result" if result["under_load"] else ""))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1, default=float)
    print(f"wrote {args.out}")
  failed = [r for r in result["rows"]
            if (r.get("check") or {}).get("ok") is False
            or not r["compiles"]["ok"]]
  for r in failed:
    print(f"CHECK FAILED: {r['bench']} {r['shape']}: {_fmt_check(r)}; "
          f"timed compiles {r['compiles']['timed']}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
