"""Self-training in rounds, in miniature: the demonstrations of docs/self_training.md.

Demos (``--demo``; each writes ``<workdir>/<demo>/results.md`` and plots):

* ``rounds``: held-out accuracy round over round under ReST-EM, STaR (with
  rationalisation) and RFT, against a control that keeps training on the
  labeled set only for the same number of steps. Reversed-digit addition.
* ``e2h``: easy-to-hard self-improvement (Lee et al. 2025): supervised on
  levels ≤ d₀, the model labels d₀+1, d₀+2, … itself; with majority-vote +
  length filtering (``--e2h_vote_models`` independently trained models vote)
  vs without filtering. Difficulty axis ``--e2h_axis``: ``digits`` (format
  ``--e2h_format fixed``: operands and answer zero-padded to one fixed width,
  all digits reversed; or ``level``: padded to the problem's own width),
  ``carries`` (6-digit fixed-width reversed addition, difficulty = number of
  carries) or ``ops`` (3-digit reversed multi-operand addition, difficulty =
  number of '+').
* ``bstar``: B-STaR's exploration (Pass@K, distinct correct) and exploitation
  (Reward@K-S precision) per round, the balance score and the chosen (T, τ).
* ``vstar``: V-STaR's verifier best-of-N against random choice, maj@N,
  best-of-N by the generator's likelihood and the oracle pass@N, on the
  current generator's and on the warm start's samples.
* ``sharpening``: SFT-Sharpening: sampling pass@1 before/after against its
  target, best-of-N by the model's own likelihood.

The exact commands of the bench tables are in docs/self_training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import synthetic
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import bstar as bstar_lib
from jaxsi.methods import easy_to_hard as e2h_lib
from jaxsi.methods import rest_em as rest_em_lib
from jaxsi.methods import self_training_common as common
from jaxsi.methods import rft as rft_lib
from jaxsi.methods import sharpening as sharpening_lib
from jaxsi.methods import star as star_lib
from jaxsi.methods import vstar as vstar_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import strategies
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import checkpoint_pool
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import evaluation
from jaxsi.training import round_context
from jaxsi.training import round_fit
from jaxsi.training import rounds


def make_model(args, tok):
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=args.d_model,
                        n_layers=args.n_layers, n_heads=4, n_kv_heads=2,
                        head_dim=args.d_model // 4, d_ff=3 * args.d_model,
                        max_seq_len=64)
  return mmodel.init(cfg, jax.random.key(args.seed))


def labeled_only(name="labeled_only"):
  """Control: no generated data, keep training on the labeled set (current)."""
  return spec.RoundsMethod(
      name=name, sample_chunk=lambda ctx, tasks, plan: [],
      select=lambda records, plan, ctx: ([], [], {}), problems=lambda r, un: [],
      train_from="current", include_labeled=True)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text + "\n")
  print(text, flush=True)


def _config(args, **kw):
  base = dict(rounds=args.rounds, warm_start_steps=args.warm_steps,
              steps_per_round=args.round_steps, batch_size=args.batch_size,
              max_len=args.max_len, learning_rate=args.lr, warmup_steps=20,
              max_new_tokens=args.max_new_tokens, rollout_batch=512,
              chunk_size=512, save_every=100, eval_n=8, seed=args.seed)
  base.update(kw)
  return rounds.RoundsConfig(**base)


def demo_rounds(args, out):
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.difficulty.split(",")]
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
      difficulty=levels, seed=args.seed, reverse=True)
  labeled, unlabeled = pool[:args.n_labeled], pool[args.n_labeled:]
  model, init = make_model(args, tok)
  config = _config(args)
  # One warm start shared by the methods that use the plain warm start.
  warm, _ = round_fit.fit_sft(model=model, params=init, tokenizer=tok,
                              examples=common.task_examples(labeled),
                              steps=args.warm_steps, config=config,
                              ckpt_dir=os.path.join(out, "shared_warm_start"),
                              seed=args.seed * 1009)
  methods = {
      "labeled_only": labeled_only(),
      "rest_em": rest_em_lib.rest_em(rollout=spec.RolloutSpec(n=args.k, temperature=1.0),
                                     max_per_prompt=4),
      "star": star_lib.star(),
      "rft": rft_lib.rft(rollout=spec.RolloutSpec(n=args.k, temperature=0.7),
                         max_per_prompt=4),
  }
  results = {}
  for name in args.methods.split(","):
    t0 = time.time()
    recs = rounds.run_rounds(
        method=methods[name], model=model, init_params=init, tokenizer=tok,
        labeled=labeled, unlabeled=unlabeled, test=test,
        workdir=os.path.join(out, name), config=config,
        warm_params=None if name == "star" else warm)
    results[name] = recs
    print(f"[bench] {name}: {time.time() - t0:.0f}s", flush=True)
  lines = ["| method | " + " | ".join(
      "warm start" if r == 0 else f"round {r}" for r in range(args.rounds + 1))
           + " |", "|---|" + "---|" * (args.rounds + 1)]
  for name, recs in results.items():
    lines.append(f"| {name} | " + " | ".join(
        f"{r['test_pass1']:.3f} ({r.get('selected', r.get('train_size'))})"
        for r in recs) + " |")
  _write(os.path.join(out, "results.md"),
         "Held-out greedy pass@1 (kept self-generated examples in parentheses;"
         " warm start: labeled set size)\n\n" + "\n".join(lines))
  evaluation.plot_curves(
      {"round": list(range(args.rounds + 1)),
       **{n: [r["test_pass1"] for r in recs] for n, recs in results.items()}},
      os.path.join(out, "accuracy.png"), x="round", title="self-training rounds",
      ylabel="held-out pass@1")
  return results


def fixed_width_addition(n, *, difficulty, width, seed):
  """Reversed, zero-padded-to-``width`` addition: constant length, d non-zero digits."""
  base = synthetic.addition(n, difficulty=difficulty, seed=seed)
  out = []
  for t in base:
    a, b = t.meta["operands"]
    prompt, target = synthetic.addition_text(a, b, width=width, reverse=True, pad=True,
                                             reverse_operands=True)
    out.append(t.replace(id=t.id + f"/w{width}", prompt=prompt, target=target,
                         meta=dict(t.meta, reverse=True, pad=True,
                                   reverse_operands=True)))
  return out


def _rev_fixed(x, width):
  return str(x).zfill(width)[::-1]


def _carries(a, b, width):
  carry, count = 0, 0
  for k in range(width):
    carry = int((a // 10 ** k % 10) + (b // 10 ** k % 10) + carry >= 10)
    count += carry
  return count


def carries_addition(n, *, carries, width, seed):
  """Fixed-width reversed addition whose difficulty is the number of carries.

  Operands are uniform ``width``-digit numbers (leading zeros allowed), written
  zero-padded and reversed like the sum (``width + 1`` digits); problems are
  drawn by rejection until ``n`` have exactly ``carries`` carries.
  """
  rng = np.random.default_rng([seed, carries, width, 17])
  out, seen = [], set()
  while len(out) < n:
    a, b = (int(x) for x in rng.integers(0, 10 ** width, size=2))
    if _carries(a, b, width) != carries or (a, b) in seen:
      continue
    seen.add((a, b))
    out.append(tasks_lib.Task(
        id=f"carries/c{carries}/w{width}/s{seed}/{len(out)}",
        prompt=f"{_rev_fixed(a, width)}+{_rev_fixed(b, width)}=", answer=str(a + b),
        category="addition", difficulty=carries, target=_rev_fixed(a + b, width + 1),
        meta={"operands": [a, b], "reverse": True, "pad": True,
              "reverse_operands": True}))
  return out


def ops_addition(n, *, ops, width, seed):
  """Multi-operand reversed addition; difficulty = number of '+' operations.

  ``ops + 1`` operands of ``width`` digits (leading zeros allowed), every
  number zero-padded (the sum to ``width + 1`` digits) and reversed.
  """
  rng = np.random.default_rng([seed, ops, width, 23])
  out = []
  for i in range(n):
    xs = [int(x) for x in rng.integers(0, 10 ** width, size=ops + 1)]
    out.append(tasks_lib.Task(
        id=f"ops/o{ops}/w{width}/s{seed}/{i}",
        prompt="+".join(_rev_fixed(x, width) for x in xs) + "=", answer=str(sum(xs)),
        category="addition", difficulty=ops, target=_rev_fixed(sum(xs), width + 1),
        meta={"operands": xs, "reverse": True, "pad": True, "reverse_operands": True}))
  return out


def e2h_tasks(args):
  """(labeled, unlabeled, test) of the easy-to-hard demo on ``args.e2h_axis``.

  digits: fixed (or level) width reversed addition, difficulty = digits;
  carries: 6-digit fixed-width reversed addition, difficulty = carries (0..6);
  ops: 3-digit reversed multi-operand addition, difficulty = '+' count.
  """
  d0, top = args.e2h_start, args.e2h_start + args.rounds + 1
  lo = 0 if args.e2h_axis == "carries" else 1
  width = top

  def make(n, d, seed):
    if args.e2h_axis == "carries":
      return carries_addition(n, carries=d, width=args.e2h_width, seed=seed)
    if args.e2h_axis == "ops":
      return ops_addition(n, ops=d, width=args.e2h_width, seed=seed)
    if args.e2h_format == "fixed":
      return fixed_width_addition(n, difficulty=d, width=width, seed=seed)
    return synthetic.addition(n, difficulty=d, seed=seed, reverse=True, pad=True,
                              reverse_operands=True)

  labeled = [t for d in range(lo, d0 + 1)
             for t in make(args.e2h_labeled // (d0 + 1 - lo), d, args.seed + d)]
  unlabeled = [t for d in range(d0 + 1, top) for t in make(args.e2h_unlabeled, d,
                                                           args.seed + 100 + d)]
  test = [t for d in range(lo, top + 1) for t in make(args.e2h_test, d, args.seed + 200 + d)]
  test_keys = {t.key for t in test}
  labeled = [t for t in labeled if t.key not in test_keys]
  unlabeled = [t for t in unlabeled if t.key not in test_keys]
  return labeled, unlabeled, test


def demo_e2h(args, out):
  tok = char_tokenizer.CharTokenizer()
  labeled, unlabeled, test = e2h_tasks(args)
  model, init = make_model(args, tok)
  if args.e2h_axis == "digits":
    top = args.e2h_start + args.rounds
    max_new, max_len = top + 3, 2 * (top + 1) + 2 + (top + 3) + 2
  else:
    longest_prompt = max(len(t.prompt) for t in labeled + unlabeled + test)
    longest_target = max(len(t.target) for t in labeled + unlabeled + test)
    max_new = longest_target + 2
    # BOS + prompt + any completion the sampler can emit + EOS.
    max_len = longest_prompt + max_new + 2
  config = _config(args, warm_start_steps=args.e2h_warm_steps,
                   steps_per_round=args.e2h_round_steps, max_new_tokens=max_new,
                   max_len=max_len)
  if args.e2h_warm_from:
    # Round 0 of an earlier run with the same settings (its pool directory):
    # skips recomputing the shared warm start.
    src = checkpoint_pool.CheckpointPool(args.e2h_warm_from)
    warm = src.params(0, like=init)
    src.close()
  else:
    warm, _ = round_fit.fit_sft(model=model, params=init, tokenizer=tok,
                                examples=common.task_examples(labeled),
                                steps=config.warm_start_steps, config=config,
                                ckpt_dir=os.path.join(out, "shared_warm_start"),
                                seed=args.seed * 1009)
  results = {}
  for name in args.e2h_runs.split(","):
    filtering = name == "filtered"
    method = e2h_lib.easy_to_hard(start_difficulty=args.e2h_start,
                                  rollout=(spec.RolloutSpec(n=args.e2h_samples, temperature=0.7)
                                           if args.e2h_samples >= 1 else None),
                                  filtering=filtering,
                                  min_agreement=args.e2h_min_agreement,
                                  vote_models=args.e2h_vote_models if filtering else 1,
                                  name=f"e2h_{name}")
    results[name] = rounds.run_rounds(
        method=method, model=model, init_params=init, tokenizer=tok, labeled=labeled,
        unlabeled=unlabeled, test=test, workdir=os.path.join(out, name), config=config,
        warm_params=warm)
  levels = sorted({t.difficulty for t in test})
  lo = min(levels)
  lines = [f"Axis: {args.e2h_axis} (format {args.e2h_format}); supervised levels"
           f" {lo}..{args.e2h_start}; round r self-labels level {args.e2h_start}+r;"
           f" filtered = {args.e2h_vote_models} voting model(s) (greedy each) +"
           f" {args.e2h_samples} samples at T=0.7 of the main model, agreement >="
           f" {args.e2h_min_agreement}, length filter.\n",
           "| run | round | " + " | ".join(f"d{d}" for d in levels)
           + " | kept / problems | label acc. of kept |",
           "|---|---|" + "---|" * (len(levels) + 2)]
  for name, recs in results.items():
    for r in recs:
      sel = r.get("select", {})
      lines.append(f"| {name} | {r['round']} | " + " | ".join(
          f"{r['test_by_difficulty'].get(str(d), 0.0):.2f}" for d in levels)
          + f" | {sel.get('kept', '-')} / {sel.get('problems', '-')} | "
          + (f"{sel['label_accuracy']:.2f}" if "label_accuracy" in sel else "-") + " |")
  _write(os.path.join(out, "results.md"), "\n".join(lines))
  return results


def demo_bstar(args, out):
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.difficulty.split(",")]
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
      difficulty=levels, seed=args.seed, reverse=True)
  model, init = make_model(args, tok)
  method = bstar_lib.bstar(rollout=spec.RolloutSpec(n=args.k), temperatures=(0.5, 0.8, 1.1),
                           thresholds=(0.0, 0.25, 0.5), n_star=4, probe_size=128)
  recs = rounds.run_rounds(method=method, model=model, init_params=init, tokenizer=tok,
                           labeled=pool[:args.n_labeled],
                           unlabeled=pool[args.n_labeled:], test=test,
                           workdir=os.path.join(out, "run"), config=_config(args))
  lines = ["| round | T | τ | Pass@K (explore) | distinct correct/problem (explore) |"
           " Reward@K-S precision (exploit) | balance | held-out pass@1 |",
           "|---|---|---|---|---|---|---|---|"]
  curves = {"round": [], "Pass@K": [], "distinct correct / K": [],
            "reward precision": [], "balance": []}
  for r in recs[1:]:
    s, p = r["select"], r["plan"]
    lines.append(f"| {r['round']} | {p['temperature']} | {p['threshold']} |"
                 f" {s['pass_at_k']:.3f} | {s['distinct_correct']:.2f} |"
                 f" {s['reward_precision']:.3f} | {s['balance']:.3f} |"
                 f" {r['test_pass1']:.3f} |")
    curves["round"].append(r["round"])
    curves["Pass@K"].append(s["pass_at_k"])
    curves["distinct correct / K"].append(s["distinct_correct"] / args.k)
    curves["reward precision"].append(s["reward_precision"])
    curves["balance"].append(s["balance"])
  _write(os.path.join(out, "results.md"),
         f"Warm start held-out pass@1 {recs[0]['test_pass1']:.3f}\n\n" + "\n".join(lines))
  evaluation.plot_curves(curves, os.path.join(out, "exploration_exploitation.png"),
                         x="round", title="B-STaR monitors per round", ylabel="value")
  return recs


def demo_vstar(args, out):
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.difficulty.split(",")]
  lines = [f"N = 8 held-out samples per problem at T = 1 (same samples for every selector);"
           f" verifier = DPO from the warm start (reference = warm start) on the"
           f" correct ≻ incorrect pairs of rounds 1..r"
           f"{' + the round-r generator' if args.vstar_own_samples else ''}"
           f" ({'all' if args.vstar_all_pairs else 'linear'} pairing, ≤"
           f" {args.vstar_max_pairs}/problem/set), {args.verifier_steps} steps,"
           f" β = {args.verifier_beta}, lr = {args.verifier_lr or args.lr}.\n",
           "| seed | round | samples of | pairs | verifier train pair acc. |"
           " random choice | maj@8 | likelihood best-of-8 | verifier best-of-8 |"
           " pass@8 (oracle) | held-out pair acc. (verifier / likelihood) |"
           " log π_V best-of-8 (diag.) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]

  def f(x):
    return "-" if x is None else f"{x:.3f}"

  results = {}
  for seed in [int(x) for x in args.seeds.split(",")]:
    pool, test = tasks_lib.make_train_test(
        "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
        difficulty=levels, seed=seed, reverse=True)
    if args.vstar_test_difficulty:
      _, test = tasks_lib.make_train_test(
          "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
          difficulty=[int(x) for x in args.vstar_test_difficulty.split(",")],
          seed=seed, reverse=True)
      train_prompts = {t.prompt for t in pool}
      test = [t for t in test if t.prompt not in train_prompts]
    a = argparse.Namespace(**dict(vars(args), seed=seed))
    model, init = make_model(a, tok)
    warm = None
    if args.vstar_warm_target > 0:
      # Fresh validation problems, disjoint from the training pool and the test set.
      seen = {t.key for t in pool + test}
      val = [t for t in tasks_lib.make_tasks(
          "addition", 2 * args.n_test, difficulty=levels, seed=seed + 7777, unique=True,
          reverse=True) if t.key not in seen][:args.n_test]
      warm, a.warm_steps, val_acc = warm_start_to_target(
          model=model, init=init, tok=tok, labeled=pool[:args.n_labeled], val=val,
          config=_config(a), target=args.vstar_warm_target,
          start=args.warm_steps, inc=args.vstar_warm_inc, max_steps=args.vstar_warm_max,
          ckpt_dir=os.path.join(out, f"seed{seed}_warm_search"))
      print(f"[bench] seed {seed}: warm start {a.warm_steps} steps, validation greedy"
            f" {val_acc:.3f} ({len(val)} problems)", flush=True)
    method = vstar_lib.vstar(rollout=spec.RolloutSpec(n=args.k, temperature=1.0),
                             verifier_steps=args.verifier_steps, pairs_per_batch=32,
                             beta=args.verifier_beta, eval_temperature=1.0,
                             verifier_learning_rate=args.verifier_lr,
                             eval_on_base=True, all_pairs=bool(args.vstar_all_pairs),
                             max_pairs_per_problem=args.vstar_max_pairs,
                             verifier_tasks=(pool[args.n_labeled:]
                                             if args.vstar_own_samples else None))
    recs = rounds.run_rounds(method=method, model=model, init_params=init, tokenizer=tok,
                             labeled=pool[:args.n_labeled],
                             unlabeled=pool[args.n_labeled:], test=test,
                             workdir=os.path.join(out, f"seed{seed}"),
                             config=_config(a, rounds=args.vstar_rounds),
                             warm_params=warm)
    recs[0]["warm_steps"] = a.warm_steps
    results[seed] = recs
    for r in recs:
      e, ar = r.get("eval", {}), r.get("after_round", {})
      for pre, who in (("", f"round {r['round']} generator" if r["round"] else
                        "warm start"), ("base_", "warm start")):
        if pre + "random_choice" not in e:
          continue
        lines.append(
            f"| {seed} | {r['round']} | {who} | {ar.get('verifier_pairs', '-')} |"
            f" {f(ar.get('verifier_pair_accuracy'))} | {f(e[pre + 'random_choice'])} |"
            f" {f(e[pre + 'majority'])} | {f(e[pre + 'likelihood_best_of_n'])} |"
            f" {f(e.get(pre + 'verifier_best_of_n'))} | {f(e[pre + 'pass_at_n'])} |"
            f" {f(e.get(pre + 'verifier_pair_accuracy'))} /"
            f" {f(e[pre + 'likelihood_pair_accuracy'])} |"
            f" {f(e.get(pre + 'verifier_logpi_best_of_n'))} |")
  lines += ["", *vstar_seed_summary(results)]
  _write(os.path.join(out, "results.md"), "\n".join(lines))
  return results


def warm_start_to_target(*, model, init, tok, labeled, val, config, target, start, inc,
                         max_steps, ckpt_dir):
  """The shortest warm start (``start``, ``start + inc``, … ≤ ``max_steps`` SFT steps on
  ``labeled``) whose greedy accuracy on the validation problems ``val`` is ≥ ``target``.

  One resumable run (the schedule is constant, so the k-step state equals a k-step
  warm start, i.e. ``--warm_steps k``); returns ``(params, steps, val_accuracy)``
  (the longest one if the target is never reached). The choice is written to
  ``ckpt_dir/chosen.json``; a rerun retrains exactly that many steps, and an
  interrupted search resumes after its last checkpoint.
  """
  if inc <= 0:
    raise ValueError(f"--vstar_warm_inc must be > 0, got {inc}")
  config = dataclasses.replace(config, save_every=inc)
  done_path = os.path.join(ckpt_dir, "chosen.json")
  steps = start
  if os.path.exists(done_path):  # a finished search: retrain its choice (no search)
    with open(done_path) as fh:
      steps = int(json.load(fh)["steps"])
    ckpt_dir = os.path.join(ckpt_dir, "chosen")
  else:  # an interrupted search: a checkpoint at p means p was evaluated and missed
    probe = checkpoint_lib.Checkpointer(ckpt_dir, keep=1, save_every=inc, async_save=False)
    latest = probe.latest_step()
    probe.close()
    if latest is not None:
      steps = max(start, int(latest) + inc)
  while True:
    params, _ = round_fit.fit_sft(model=model, params=init, tokenizer=tok,
                                  examples=common.task_examples(labeled), steps=steps,
                                  config=config, ckpt_dir=ckpt_dir, seed=config.seed * 1009,
                                  desc="warm_start")
    acc = evaluate_lib.evaluate_policy(
        model, params, tok, val, strategy=strategies.Greedy(),
        max_new_tokens=config.max_new_tokens, seed=config.seed + 30_000,
        batch_size=config.rollout_batch, ks=(1,), maj_ks=())["overall"]["pass@1"]
    print(f"[bench] warm start {steps} steps: validation greedy {acc:.3f}", flush=True)
    if acc >= target or steps + inc > max_steps or os.path.exists(done_path):
      if not os.path.exists(done_path):
        _write(done_path, json.dumps({"steps": steps, "validation_greedy": acc}))
      return params, steps, acc
    steps += inc


def mean_se(xs):
  """(mean, standard error of the mean) of ``xs`` (s.e. = sample std / sqrt(n))."""
  xs = np.asarray(xs, float)
  se = float(xs.std(ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else float("nan")
  return float(xs.mean()), se


def vstar_seed_summary(results):
  """Per-seed rows of the last round (final generator, and the warm start's samples
  ranked by the last verifier) and mean ± s.e. over seeds of verifier − random."""
  lines = ["Last round per seed (best-of-8 accuracy; margin = verifier − random choice):\n",
           "| seed | warm start steps | warm start greedy | warm start sample acc. |"
           " final generator:"
           " random | maj@8 | likelihood | **verifier** | margin | warm start's samples:"
           " random | maj@8 | likelihood | **verifier** | margin |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  cols = {}

  def cell(v, i, se=None):
    if v is None:
      return "-"
    text = f"{v:+.3f}" if i in (6, 11) else f"{v:.3f}"
    return text if se is None else f"{text} ± {se:.3f}"

  for seed, recs in results.items():
    # A round without a verifier (e.g. --vstar_rounds 0) has no verifier keys.
    e = recs[-1].get("eval", {})
    row = [recs[0]["test_pass1"], recs[0].get("eval", {}).get("random_choice")]
    for pre in ("", "base_"):
      vals = [e.get(pre + k) for k in ("random_choice", "majority", "likelihood_best_of_n",
                                       "verifier_best_of_n")]
      margin = None if None in (vals[0], vals[3]) else vals[3] - vals[0]
      row += vals + [margin]
    for i, v in enumerate(row):
      cols.setdefault(i, []).append(v)
    lines.append(f"| {seed} | {recs[0].get('warm_steps', '-')} | "
                 + " | ".join(cell(v, i) for i, v in enumerate(row)) + " |")
  if len(results) > 1:
    cells = []
    for i in range(len(cols)):
      if any(v is None for v in cols[i]):
        cells.append("-")
      else:
        m, s = mean_se(cols[i])
        cells.append(cell(m, i, s))
    lines.append(f"| mean ± s.e. ({len(results)} seeds) | - | " + " | ".join(cells) + " |")
  return lines


def demo_vstar_diag(args, out):
  """Which score ranks which generator's samples? (run after ``--demo vstar``).

  Loads the stored generators and verifiers of ``<workdir>/vstar/seed<s>`` and
  ranks the same N = 8 held-out samples (the key of ``vstar.evaluate``) by the
  DPO reward, by its negation (sign check), by log π_V alone, by log π_ref and
  by the generator's own log-likelihood.
  """
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.difficulty.split(",")]
  lines = ["best-of-8 accuracy / held-out pair ranking accuracy\n",
           "| seed | verifier of round | samples of | random | maj@8 | DPO reward"
           " log π_V − log π_ref | sign flipped | log π_V | log π_ref | log π_generator |"
           " DPO reward / length |"
           " pass@8 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for seed in [int(x) for x in args.seeds.split(",")]:
    _, test = tasks_lib.make_train_test(
        "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
        difficulty=levels, seed=seed, reverse=True)
    a = argparse.Namespace(**dict(vars(args), seed=seed))
    model, init = make_model(a, tok)
    run = os.path.join(args.workdir, "vstar", f"seed{seed}")
    gpool = checkpoint_pool.CheckpointPool(os.path.join(run, "pool"))
    vpool = checkpoint_pool.CheckpointPool(os.path.join(run, "verifier_pool"))
    base = gpool.params(0, like=init)
    config = _config(a)
    for vr in vpool.rounds():
      vparams = vpool.params(vr, like=init)
      for gr in sorted({0, vr}):
        gen = gpool.params(gr, like=init)
        ctx = round_context.RoundContext(round=gr, model=model, params=gen, base_params=base,
                                         tokenizer=tok, rng=jax.random.key(0), pool=gpool,
                                         config=config, workdir=run)
        m, ro, lgen = common.sampled_eval(ctx, test, n=config.eval_n, temperature=1.0)
        c = np.asarray(ro.correct, bool)
        lv = round_context.sequence_logprobs(model, vparams, ro.traj)
        lb = round_context.sequence_logprobs(model, base, ro.traj)
        dpo_mean = (round_context.sequence_logprobs(model, vparams, ro.traj, normalize=True)
                    - round_context.sequence_logprobs(model, base, ro.traj, normalize=True))
        cells = [f"{common.best_of_n_accuracy(sc, c, m['n']):.3f} /"
                 f" {common.pair_ranking_accuracy(sc, c, m['n']):.3f}"
                 for sc in (lv - lb, lb - lv, lv, lb, lgen, dpo_mean)]
        lines.append(f"| {seed} | {vr} | {'warm start' if gr == 0 else f'round {gr}'} |"
                     f" {m['random_choice']:.3f} | {m['majority']:.3f} | "
                     + " | ".join(cells) + f" | {m['pass_at_n']:.3f} |")
    gpool.close()
    vpool.close()
  _write(os.path.join(out, "results.md"), "\n".join(lines))


def demo_sharpening(args, out):
  """SFT-Sharpening: sampling pass@1 before/after vs best-of-N by likelihood."""
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.sharpen_difficulty.split(",")]
  lines = [f"N = 8 held-out samples per problem at T = 1 (fixed key); round r trains"
           f" {args.sharpen_round_steps} steps from round r-1 on the best-of-{args.k_sharpen}"
           f" (by log π(y|x)) of every unlabeled problem.\n",
           "| seed | round | greedy pass@1 | sampling pass@1 (random choice) | maj@8 |"
           " likelihood best-of-8 (target) | pass@8 | held-out pair acc. of log π |"
           " selected label acc. |", "|---|---|---|---|---|---|---|---|---|"]
  results = {}
  for seed in [int(x) for x in args.seeds.split(",")]:
    pool, test = tasks_lib.make_train_test(
        "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
        difficulty=levels, seed=seed, reverse=True)
    a = argparse.Namespace(**dict(vars(args), seed=seed))
    model, init = make_model(a, tok)
    method = sharpening_lib.sharpening(
        rollout=spec.RolloutSpec(n=args.k_sharpen, temperature=1.0),
        include_labeled=False, train_from="current", eval_temperature=1.0)
    recs = rounds.run_rounds(
        method=method, model=model, init_params=init, tokenizer=tok,
        labeled=pool[:args.n_labeled], unlabeled=pool[args.n_labeled:], test=test,
        workdir=os.path.join(out, f"seed{seed}"),
        config=_config(a, rounds=args.sharpen_rounds,
                       warm_start_steps=args.sharpen_warm_steps,
                       steps_per_round=args.sharpen_round_steps))
    results[seed] = recs
    for r in recs:
      e, sel = r["eval"], r.get("select", {})
      lines.append(f"| {seed} | {r['round']} | {r['test_pass1']:.3f} |"
                   f" {e['random_choice']:.3f} | {e['majority']:.3f} |"
                   f" {e['likelihood_best_of_n']:.3f} | {e['pass_at_n']:.3f} |"
                   f" {e['likelihood_pair_accuracy']:.3f} |"
                   + (f" {sel['selected_accuracy']:.3f} |" if sel else " - |"))
  _write(os.path.join(out, "results.md"), "\n".join(lines))
  return results


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--demo", default="rounds,e2h,bstar,vstar")
  p.add_argument("--workdir", default="/tmp/jaxsi_self_training")
  p.add_argument("--methods", default="labeled_only,rest_em,star,rft")
  p.add_argument("--difficulty", default="1,2")
  p.add_argument("--n_labeled", type=int, default=256)
  p.add_argument("--n_unlabeled", type=int, default=1024)
  p.add_argument("--n_test", type=int, default=256)
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--n_layers", type=int, default=2)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warm_steps", type=int, default=300)
  p.add_argument("--round_steps", type=int, default=150)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--max_len", type=int, default=24)
  p.add_argument("--max_new_tokens", type=int, default=5)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--k", type=int, default=4)
  p.add_argument("--verifier_steps", type=int, default=150)
  p.add_argument("--vstar_rounds", type=int, default=2)
  p.add_argument("--verifier_lr", type=float, default=None)
  p.add_argument("--verifier_beta", type=float, default=0.1)
  p.add_argument("--vstar_own_samples", type=int, default=1,
                 help="1: round r's verifier also trains on pairs of G_r's own samples on"
                      " the unlabeled problems (the paper's D_VER, vstar(verifier_tasks=))")
  p.add_argument("--vstar_all_pairs", type=int, default=0,
                 help="1: all correct x incorrect pairs per problem (up to the cap)")
  p.add_argument("--vstar_max_pairs", type=int, default=4,
                 help="DPO pairs per problem and sample set")
  p.add_argument("--vstar_warm_target", type=float, default=0.0,
                 help=">0: per seed, the warm start is the shortest of --warm_steps,"
                      " +--vstar_warm_inc, … (≤ --vstar_warm_max) steps whose greedy"
                      " accuracy on --n_test fresh validation problems (disjoint from"
                      " train and test) reaches this target")
  p.add_argument("--vstar_warm_inc", type=int, default=25,
                 help="step increment of the --vstar_warm_target search")
  p.add_argument("--vstar_warm_max", type=int, default=800,
                 help="longest warm start the --vstar_warm_target search tries")
  p.add_argument("--vstar_test_difficulty", default="",
                 help="held-out difficulty levels of the vstar demo (default: --difficulty)")
  p.add_argument("--e2h_format", default="fixed", choices=("fixed", "level"))
  p.add_argument("--e2h_axis", default="digits", choices=("digits", "carries", "ops"))
  p.add_argument("--e2h_width", type=int, default=6,
                 help="operand width of the carries (6) / ops (3) axes")
  p.add_argument("--e2h_runs", default="filtered,unfiltered")
  p.add_argument("--e2h_vote_models", type=int, default=1)
  p.add_argument("--e2h_samples", type=int, default=4)
  p.add_argument("--e2h_warm_from", default="",
                 help="pool directory whose round 0 is the warm start (optional)")
  p.add_argument("--e2h_start", type=int, default=3)
  p.add_argument("--e2h_min_agreement", type=float, default=0.6)
  p.add_argument("--e2h_labeled", type=int, default=1500)
  p.add_argument("--e2h_unlabeled", type=int, default=512)
  p.add_argument("--e2h_test", type=int, default=64)
  p.add_argument("--e2h_warm_steps", type=int, default=400)
  p.add_argument("--e2h_round_steps", type=int, default=150)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--seeds", default="0", help="seeds of the demos that loop over seeds")
  p.add_argument("--sharpen_difficulty", default="3")
  p.add_argument("--sharpen_warm_steps", type=int, default=300)
  p.add_argument("--sharpen_round_steps", type=int, default=150)
  p.add_argument("--sharpen_rounds", type=int, default=2)
  p.add_argument("--k_sharpen", type=int, default=8)
  args = p.parse_args()
  demos = {"rounds": demo_rounds, "e2h": demo_e2h, "bstar": demo_bstar,
           "vstar": demo_vstar, "vstar_diag": demo_vstar_diag,
           "sharpening": demo_sharpening}
  for d in args.demo.split(","):
    out = os.path.join(args.workdir, d)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "args.json"), "w") as f:
      json.dump(vars(args), f, indent=1)
    t0 = time.time()
    demos[d](args, out)
    print(f"[bench] demo {d} done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
  main()
