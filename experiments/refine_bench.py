r"""Bench: Self-Refine, IoRT and ProgCo against sampling at reported tokens.

The warm start is experiments/test_time_bench.py's (``warm_start``, the same
flags: ``--n_train``, ``--sft_steps``, ``--d_model``, …), once per seed. On
``--n_test`` held-out 2-digit additions it compares, with the tokens each
spends per problem:

* the first sample and majority@k (self-consistency, k in ``--ks`` ≤
  ``--n``; one batched generation, ``jaxsi.sampling.test_time``);
* Self-Refine, IoRT, ProgCo with the program tool and ProgCo with the model
  executing the program (``jaxsi.sampling.refine``), budgets of 1 …
  ``--max_turns`` answer turns, every model turn sampled at
  ``--temperature``.

Rows are mean ± std over ``--seeds`` (each seed: its own data split, warm
start and sampling). Writes a markdown table to ``--table``, the per-seed
rows to ``<table>.json`` and accuracy-versus-tokens curves (means) to
``<table>.png``.

Command::

  python experiments/refine_bench.py --seeds=0,1,2 --max_turns=4 \
      --table=/tmp/refine_bench.md

Numbers from a loaded machine are not results for speed: report ``uptime``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_time_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxsi.sampling import refine  # pylint: disable=wrong-import-position
from jaxsi.sampling import strategies  # pylint: disable=wrong-import-position
from jaxsi.sampling import test_time as tt  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
# --seeds is test_time_bench's flag too (one flag namespace); three seeds here.
_SEEDS = test_time_bench._SEEDS  # pylint: disable=protected-access
flags.set_default(_SEEDS, ["0", "1", "2"])
_MAX_TURNS = flags.DEFINE_integer("max_turns", 4, "Answer turns at most.")
_TABLE = flags.DEFINE_string("table", "/tmp/refine_bench.md", "Markdown output.")

METHODS = (("self_refine", "tool"), ("iort", "tool"), ("progco", "tool"),
           ("progco", "model"))


def one_seed(seed: int) -> list:
  """Every row of one seed (a fresh warm start)."""
  tok, model, warm, _, _, test = test_time_bench.warm_start(
      seed=seed, n_train=FLAGS.n_train, n_test=FLAGS.n_test,
      sft_steps=FLAGS.sft_steps, sft_lr=FLAGS.sft_lr, d_model=FLAGS.d_model,
      layers=FLAGS.layers)
  strategy = strategies.Sampling(temperature=FLAGS.temperature)
  cands = tt.generate(model, warm, tok, test, n=FLAGS.n,
                      max_new_tokens=test_time_bench.MAX_NEW, strategy=strategy,
                      rng=jax.random.key(seed + 11), scores=())
  ks = [int(k) for k in FLAGS.ks if int(k) <= FLAGS.n]
  rows = []
  for r in tt.sweep(cands, ks=ks, selectors={"first": tt.first,
                                             "majority": tt.majority}):
    if (r["selector"] == "first") != (r["k"] == 1):  # first@1, majority@k>1
      continue
    rows.append(dict(method="first sample" if r["selector"] == "first" else
                     f"majority@{r['k']}", turns=r["k"], accuracy=r["accuracy"],
                     tokens_per_problem=r["tokens_per_problem"],
                     injected_tokens_per_problem=0.0, seed=seed))
  for method, executor in METHODS:
    t0 = time.perf_counter()
    out = refine.run(model, warm, tok, test, method=method, executor=executor,
                     max_turns=_MAX_TURNS.value, rng=jax.random.key(seed + 23),
                     strategy=strategy, max_new_tokens=test_time_bench.MAX_NEW)
    print(f"seed {seed} {method}({executor}): {time.perf_counter() - t0:.1f}s",
          flush=True)
    rows.extend(dict(r, seed=seed) for r in out)
  return rows


def table(rows: list) -> str:
  """Mean ± std over seeds per (method, turns)."""
  keys = list(dict.fromkeys((r["method"], r["turns"]) for r in rows))
  head = ("| method | turns / k | tokens / problem | injected / problem | "
          "accuracy | per-turn accuracy | wrong→right | right→wrong |")
  lines = [head, "|" + "---|" * 8]
  ms = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"
  for m, t in keys:
    g = [r for r in rows if (r["method"], r["turns"]) == (m, t)]
    per_turn = ("—" if "turn_accuracy" not in g[0] else " / ".join(
        f"{np.mean([r['turn_accuracy'][j] for r in g]):.3f}" for j in range(t)))
    sc = lambda k: ms([r[k] for r in g]) if k in g[0] else "—"
    lines.append(
        f"| {m} | {t} | {np.mean([r['tokens_per_problem'] for r in g]):.1f} | "
        f"{np.mean([r['injected_tokens_per_problem'] for r in g]):.1f} | "
        f"{ms([r['accuracy'] for r in g])} | {per_turn} | {sc('wrong_to_right')} "
        f"| {sc('right_to_wrong')} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  t0 = time.perf_counter()
  rows = []
  for s in _SEEDS.value:
    rows.extend(one_seed(int(s)))
  text = (f"Held-out 2-digit addition, {FLAGS.n_test} problems, T = "
          f"{FLAGS.temperature}, seeds {','.join(_SEEDS.value)} (mean ± std), "
          f"{time.perf_counter() - t0:.0f}s wall.\n\n" + table(rows))
  print(text)
  with open(_TABLE.value, "w", encoding="utf-8") as f:
    f.write(text)
  with open(_TABLE.value + ".json", "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  curve = {}
  for r in rows:  # one curve per method; majority@k joins the first sample
    m = r["method"]
    name = "majority" if m == "first sample" or m.startswith("majority@") else m
    curve.setdefault((name, r["turns"]), []).append(r)
  tt.plot([dict(selector=n, accuracy=float(np.mean([r["accuracy"] for r in g])),
                tokens_per_problem=float(np.mean([r["tokens_per_problem"] for r in g])))
           for (n, _), g in curve.items()], _TABLE.value + ".png",
          title="2-digit addition: accuracy vs model tokens")


if __name__ == "__main__":
  app.run(main)
