"""Self-training in rounds, in miniature: the demonstrations of docs/self_training.md.

Demos (``--demo``; each writes ``<workdir>/<demo>/results.md`` and plots):

* ``rounds``: held-out accuracy round over round under ReST-EM, STaR (with
  rationalisation) and RFT, against a control that keeps training on the
  labeled set only for the same number of steps. Reversed-digit addition.
* ``e2h``: easy-to-hard self-improvement (Lee et al. 2025): supervised on
  1..d₀ digits, the model labels d₀+1, d₀+2, … itself; with majority-vote +
  length filtering vs without filtering. Format: ``--e2h_format``
  ``fixed`` (operands and answer zero-padded to one fixed width, all digits
  reversed: every problem has the same length, difficulty = non-zero digits)
  or ``level`` (padding to the problem's own width, so length grows with
  difficulty).
* ``bstar``: B-STaR's exploration (Pass@K, distinct correct) and exploitation
  (Reward@K-S precision) per round, the balance score and the chosen (T, τ).
* ``vstar``: V-STaR's verifier best-of-N against random choice and majority.

Example (the bench table in docs/self_training.md)::

  python experiments/self_training_bench.py --demo rounds,e2h,bstar,vstar \
      --workdir /tmp/jaxsi_self_training
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

from jaxsi.data import char_tokenizer
from jaxsi.data import synthetic
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import bstar as bstar_lib
from jaxsi.methods import easy_to_hard as e2h_lib
from jaxsi.methods import rest_em as rest_em_lib
from jaxsi.methods import rft as rft_lib
from jaxsi.methods import star as star_lib
from jaxsi.methods import vstar as vstar_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import evaluation
from jaxsi.training import rounds


def make_model(args, tok):
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=args.d_model,
                        n_layers=args.n_layers, n_heads=4, n_kv_heads=2,
                        head_dim=args.d_model // 4, d_ff=3 * args.d_model,
                        max_seq_len=64)
  return mmodel.init(cfg, jax.random.key(args.seed))


def labeled_only(name="labeled_only"):
  """Control: no generated data, keep training on the labeled set (current)."""
  return rounds.RoundsMethod(
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
  warm, _ = rounds.fit_sft(model=model, params=init, tokenizer=tok,
                           examples=rounds.task_examples(labeled),
                           steps=args.warm_steps, config=config,
                           ckpt_dir=os.path.join(out, "shared_warm_start"),
                           seed=args.seed * 1009)
  methods = {
      "labeled_only": labeled_only(),
      "rest_em": rest_em_lib.rest_em(samples_per_prompt=args.k, temperature=1.0,
                                     max_per_prompt=4),
      "star": star_lib.star(),
      "rft": rft_lib.rft(samples_per_prompt=args.k, temperature=0.7,
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


def e2h_tasks(args):
  d0, top = args.e2h_start, args.e2h_start + args.rounds + 1
  width = top

  def make(n, d, seed):
    if args.e2h_format == "fixed":
      return fixed_width_addition(n, difficulty=d, width=width, seed=seed)
    return synthetic.addition(n, difficulty=d, seed=seed, reverse=True, pad=True,
                              reverse_operands=True)

  labeled = [t for d in range(1, d0 + 1)
             for t in make(args.e2h_labeled // d0, d, args.seed + d)]
  unlabeled = [t for d in range(d0 + 1, top) for t in make(args.e2h_unlabeled, d,
                                                           args.seed + 100 + d)]
  test = [t for d in range(1, top + 1) for t in make(args.e2h_test, d, args.seed + 200 + d)]
  test_keys = {t.key for t in test}
  labeled = [t for t in labeled if t.key not in test_keys]
  unlabeled = [t for t in unlabeled if t.key not in test_keys]
  return labeled, unlabeled, test


def demo_e2h(args, out):
  tok = char_tokenizer.CharTokenizer()
  labeled, unlabeled, test = e2h_tasks(args)
  model, init = make_model(args, tok)
  config = _config(args, warm_start_steps=args.e2h_warm_steps,
                   steps_per_round=args.e2h_round_steps,
                   max_new_tokens=args.e2h_start + args.rounds + 3,
                   # BOS + prompt (2 operands + '+=') + any completion + EOS.
                   max_len=2 * (args.e2h_start + args.rounds + 1) + 2
                   + (args.e2h_start + args.rounds + 3) + 2)
  warm, _ = rounds.fit_sft(model=model, params=init, tokenizer=tok,
                           examples=rounds.task_examples(labeled),
                           steps=config.warm_start_steps, config=config,
                           ckpt_dir=os.path.join(out, "shared_warm_start"),
                           seed=args.seed * 1009)
  results = {}
  for name, filtering in (("filtered", True), ("unfiltered", False)):
    method = e2h_lib.easy_to_hard(start_difficulty=args.e2h_start,
                                  samples_per_prompt=args.k, temperature=0.7,
                                  filtering=filtering,
                                  min_agreement=args.e2h_min_agreement,
                                  name=f"e2h_{name}")
    results[name] = rounds.run_rounds(
        method=method, model=model, init_params=init, tokenizer=tok, labeled=labeled,
        unlabeled=unlabeled, test=test, workdir=os.path.join(out, name), config=config,
        warm_params=warm)
  levels = sorted({t.difficulty for t in test})
  lines = [f"Format: {args.e2h_format}; supervised digits 1..{args.e2h_start}; round r"
           f" self-labels {args.e2h_start}+r digits.\n",
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
  method = bstar_lib.bstar(samples_per_prompt=args.k, temperatures=(0.5, 0.8, 1.1),
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
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
      difficulty=levels, seed=args.seed, reverse=True)
  model, init = make_model(args, tok)
  method = vstar_lib.vstar(samples_per_prompt=args.k, temperature=1.0,
                           verifier_steps=args.verifier_steps, pairs_per_batch=32,
                           beta=args.verifier_beta, eval_temperature=1.0,
                           verifier_learning_rate=args.verifier_lr)
  recs = rounds.run_rounds(method=method, model=model, init_params=init, tokenizer=tok,
                           labeled=pool[:args.n_labeled],
                           unlabeled=pool[args.n_labeled:], test=test,
                           workdir=os.path.join(out, "run"),
                           config=_config(args, rounds=args.vstar_rounds))
  lines = ["| round | pairs | random choice (pass@1 of samples) | maj@N |"
           " verifier best-of-N | pass@N (oracle) | greedy |",
           "|---|---|---|---|---|---|---|"]
  for r in recs:
    e = r.get("eval", {})
    vb = e.get("verifier_best_of_n")
    lines.append(f"| {r['round']} | {r.get('after_round', {}).get('verifier_pairs', '-')} |"
                 f" {e.get('random_choice', 0):.3f} | {e.get('majority', 0):.3f} |"
                 f" {'-' if vb is None else f'{vb:.3f}'} | {e.get('pass_at_n', 0):.3f} |"
                 f" {r['test_pass1']:.3f} |")
  _write(os.path.join(out, "results.md"), f"N = {recs[0]['eval']['n']}\n\n" + "\n".join(lines))
  return recs


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
  p.add_argument("--e2h_format", default="fixed", choices=("fixed", "level"))
  p.add_argument("--e2h_start", type=int, default=3)
  p.add_argument("--e2h_min_agreement", type=float, default=0.6)
  p.add_argument("--e2h_labeled", type=int, default=1500)
  p.add_argument("--e2h_unlabeled", type=int, default=512)
  p.add_argument("--e2h_test", type=int, default=64)
  p.add_argument("--e2h_warm_steps", type=int, default=400)
  p.add_argument("--e2h_round_steps", type=int, default=150)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  demos = {"rounds": demo_rounds, "e2h": demo_e2h, "bstar": demo_bstar,
           "vstar": demo_vstar}
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
