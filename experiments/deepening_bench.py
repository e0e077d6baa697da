r"""Bench: iterative deepening against plain sampling at equal tokens (issue 16).

For every seed (the seed changes the warm start, the task split and the
sampling): SFT a tiny decoder on 2-digit addition (``experiments/_warm_start.py``,
the same warm start as ``test_time_bench.py`` but with the full character
alphabet so a text trigger can be injected), then on the held-out problems

* **plain**: ``--n_plain`` samples per problem in one generation; first
  sample and self-consistency (majority) over the first k;
* **deepening**: ``--n_deep`` samples per problem, each continued from its
  KV cache after every trigger of ``--triggers`` for ``--rounds`` rounds
  (``jaxsi.sampling.deepening``); the answer that counts is the last turn's
  (fallback: the latest parseable one); one sample alone (k = 1) and
  majority over the k deepened samples' final answers.

A deepened sample with d rounds generates about d + 1 plain samples' tokens,
so each deepening row is paired with plain majority@k·(d + 1) (the nearest
equal-token plain row); both token counts are printed. Tokens are tokens
generated; the injected trigger tokens (prefilled, not generated) are listed
apart.

Command (writes the markdown table, and JSON next to it)::

  nice -n 10 python experiments/deepening_bench.py --seeds=0,1,2 \
      --out=/tmp/deepening_bench.md

Numbers from a loaded machine are not speed results: report ``uptime``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Optional, Sequence

import jax
import numpy as np

from jaxsi.sampling import deepening
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt

try:
  from experiments import _warm_start
except ImportError:  # run as a script: experiments/ is sys.path[0]
  import _warm_start  # pylint: disable=g-import-not-at-top

DIGITS = 2
MAX_NEW = DIGITS + 2


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  p.add_argument("--n_train", type=int, default=2000)
  p.add_argument("--n_test", type=int, default=256)
  p.add_argument("--sft_steps", type=int, default=300)
  p.add_argument("--sft_lr", type=float, default=3e-3)
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--n_plain", type=int, default=16, help="plain samples / problem")
  p.add_argument("--n_deep", type=int, default=8, help="deepened samples / problem")
  p.add_argument("--rounds", type=int, default=3, help="max deepening rounds")
  p.add_argument("--triggers", default=" wait |=",
                 help="'|'-separated trigger texts")
  p.add_argument("--batch_size", type=int, default=256, help="rows per sampler call")
  p.add_argument("--out", default="/tmp/deepening_bench.md")
  return p


def _ks(n: int) -> list:
  return [k for k in (1, 2, 4, 8, 16, 32) if k <= n]


def one_seed(args, seed: int, triggers: Sequence[str]) -> dict:
  """Plain and deepened rows of one seed."""
  ws = _warm_start.addition_warm_start(
      digits=(DIGITS,), n_train=args.n_train, n_test=args.n_test,
      sft_steps=args.sft_steps, sft_lr=args.sft_lr, d_model=args.d_model,
      layers=args.layers, seed=seed, alphabet=None)
  strategy = strategies.Sampling(temperature=args.temperature)
  plain = tt.generate(ws.model, ws.params, ws.tokenizer, ws.test, n=args.n_plain,
                      max_new_tokens=MAX_NEW, strategy=strategy,
                      rng=jax.random.key(seed + 11), scores=(),
                      batch_size=args.batch_size)
  plain_rows = tt.sweep(plain, ks=range(1, args.n_plain + 1),
                        selectors={"majority": tt.majority})
  deep_rows = []
  for i, trig in enumerate(triggers):
    deep = deepening.deepen(ws.model, ws.params, ws.tokenizer, ws.test,
                            rounds=args.rounds, n=args.n_deep, trigger=trig,
                            max_new_tokens=MAX_NEW, strategy=strategy,
                            rng=jax.random.fold_in(jax.random.key(seed + 13), i),
                            batch_size=args.batch_size)
    deep_rows += deepening.sweep(deep, depths=range(1, args.rounds + 1),
                                 ks=_ks(args.n_deep))
    print(f"[seed {seed}] trigger {trig!r}: {deep.calls} calls, {deep.seconds:.1f}s",
          flush=True)
  print(f"[seed {seed}] warm start {ws.seconds:.0f}s, plain generation"
        f" {plain.seconds:.1f}s", flush=True)
  return dict(plain=plain_rows, deep=deep_rows, warm_seconds=ws.seconds)


def pairs(result: dict, n_plain: int) -> list:
  """Every deepened row with the plain majority row at k·(d + 1) samples.

  Returns:
    ``{trigger, depth, k, selector, tokens, accuracy, changed,
    right_to_wrong, wrong_to_right, fallback, plain_k, plain_tokens,
    plain_accuracy}``
    for one deepened sample (k = 1, ``first``) and majority over k >= 2
    (rows whose equal-token plain budget exceeds ``n_plain`` are left out).
  """
  plain = {r["k"]: r for r in result["plain"]}
  out = []
  for r in result["deep"]:
    k_eq = r["k"] * (r["depth"] + 1)
    if k_eq > n_plain:
      continue
    sel = r["selector"].rsplit(" ", 1)[1]
    # One deepened sample (k = 1), or majority over k >= 2 of them ("first"
    # at k >= 2 would be charged k samples' tokens for one).
    if (sel == "first") != (r["k"] == 1):
      continue
    out.append(dict(trigger=r["trigger"], depth=r["depth"], k=r["k"], selector=sel,
                    tokens=r["tokens_per_problem"],
                    trigger_tokens=r["trigger_tokens_per_problem"],
                    accuracy=r["accuracy"], changed=r["changed"],
                    right_to_wrong=r["right_to_wrong"],
                    wrong_to_right=r["wrong_to_right"], fallback=r["fallback"],
                    plain_k=k_eq,
                    plain_tokens=plain[k_eq]["tokens_per_problem"],
                    plain_accuracy=plain[k_eq]["accuracy"]))
  return out


def _ms(xs) -> str:
  xs = np.asarray(xs, np.float64)
  return f"{xs.mean():.3f} ± {xs.std():.3f}"


def aggregate(per_seed: Sequence[list]) -> list:
  """Mean and std over seeds of every paired row (same key in each seed)."""
  keys = [(r["trigger"], r["depth"], r["k"], r["selector"]) for r in per_seed[0]]
  rows = []
  for key in keys:
    got = [next(r for r in rs if (r["trigger"], r["depth"], r["k"], r["selector"])
                == key) for rs in per_seed]
    agg = dict(trigger=key[0], depth=key[1], k=key[2], selector=key[3],
               plain_k=got[0]["plain_k"], seeds=len(got))
    for f in ("tokens", "trigger_tokens", "accuracy", "changed", "right_to_wrong",
              "wrong_to_right", "fallback", "plain_tokens", "plain_accuracy"):
      agg[f] = [g[f] for g in got]
    agg["delta"] = [g["accuracy"] - g["plain_accuracy"] for g in got]
    rows.append(agg)
  return rows


def markdown(rows: Sequence[dict]) -> str:
  lines = ["| trigger | d | deepened samples k | selector | tokens / problem |"
           " trigger tokens | accuracy | answer changed | right→wrong |"
           " wrong→right | fallback | plain majority@ | plain tokens |"
           " plain accuracy | Δ accuracy |", "|" + "---|" * 15]
  for r in rows:
    lines.append(
        f"| {r['trigger']!r} | {r['depth']} | {r['k']} | {r['selector']} |"
        f" {np.mean(r['tokens']):.1f} | {np.mean(r['trigger_tokens']):.1f} |"
        f" {_ms(r['accuracy'])} | {_ms(r['changed'])} | {_ms(r['right_to_wrong'])} |"
        f" {_ms(r['wrong_to_right'])} | {_ms(r['fallback'])} | {r['plain_k']} |"
        f" {np.mean(r['plain_tokens']):.1f} | {_ms(r['plain_accuracy'])} |"
        f" {float(np.mean(r['delta'])):+.3f} ± {float(np.std(r['delta'])):.3f} |")
  return "\n".join(lines) + "\n"


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except Exception:  # pylint: disable=broad-except
    return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> dict:
  args = _parser().parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  triggers = [t for t in args.triggers.split("|") if t]
  if not seeds or not triggers:
    raise ValueError("deepening_bench: --seeds and --triggers must be non-empty")
  t0 = time.perf_counter()
  results = {s: one_seed(args, s, triggers) for s in seeds}
  rows = aggregate([pairs(results[s], args.n_plain) for s in seeds])
  load = os.getloadavg()
  text = (f"Held-out {DIGITS}-digit addition, {args.n_test} problems, T ="
          f" {args.temperature}, {args.sft_steps}-step SFT warm start"
          f" (d_model {args.d_model}, {args.layers} layers), seeds {seeds}"
          f" (mean ± std over seeds); {args.n_plain} plain and {args.n_deep}"
          f" deepened samples per problem, up to {args.rounds} rounds, G ="
          f" {MAX_NEW} tokens per turn. Commit {_commit()}, load average"
          f" {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f},"
          f" {time.perf_counter() - t0:.0f}s.\n\n" + markdown(rows))
  print(text, flush=True)
  with open(args.out, "w", encoding="utf-8") as f:
    f.write(text)
  summary = dict(args=vars(args), rows=rows, table=text,
                 per_seed={str(s): results[s] for s in seeds})
  with open(args.out + ".json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1, default=float)
  return summary


if __name__ == "__main__":
  main()
