r"""Bench: does ``chunked=True`` (student-side JSD chunk by chunk over T) cost time at small V?

``distillation.topk_jsd(chunked=True)`` (``gkd(chunked=True)``,
``opsd(divergence='topk', chunked=True)``) never keeps a [B, T, V] f32 student
logits array alive; the question for making it the default is whether it
costs step time at the synthetic tasks' vocabularies. Per vocabulary (the
``0123456789+=`` alphabet, V = 15 with specials, and the default printable
alphabet) this runs GKD (λ = 1, k = V) from the same init with ``chunked``
False and True, alternating blocks of ``--block`` steps so machine load hits
both alike, and reports the median wall time per step (after 2 compile
steps) and the largest |Δ loss| between the two arms over the steps (same
seeds, same samples while the parameters agree).

Command::

  python experiments/chunked_kd_bench.py --out=/tmp/chunked_kd_bench.json

Timings on a shared machine: report ``uptime`` with them.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib

_BLOCKS = flags.DEFINE_integer("blocks", 4, "Alternating blocks per arm.")
_BLOCK = flags.DEFINE_integer("block", 5, "Steps per block.")
_D = flags.DEFINE_integer("d", 64, "Model width.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per step.")
_N = flags.DEFINE_integer("n", 2, "Samples per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new", 16, "Completion budget (T of the JSD).")
_OUT = flags.DEFINE_string("out", "/tmp/chunked_kd_bench.json", "JSON output.")

ALPHABETS = {"digits": "0123456789+=", "printable": None}


def _trainer(tok, model, params, chunked):
  v = model.config.vocab_size
  m = methods.gkd(rollout=RolloutSpec(n=_N.value, max_new_tokens=_MAX_NEW.value,
                                      temperature=1.0),
                  lmbda=1.0, beta=0.5, k=v, row_chunk=_PROMPTS.value * _N.value,
                  chunked=chunked, name=f"gkd_chunked{int(chunked)}")
  tasks = tasks_lib.make_tasks("addition", 256, difficulty=2, seed=0, reverse=True)
  return loop.Loop(model=model, params=params, method=m, tokenizer=tok, tasks=tasks,
                   optimizer=opt_lib.make_optimizer(learning_rate=1e-3,
                                                    schedule="constant"),
                   prompts_per_step=_PROMPTS.value, seed=0,
                   roles={"teacher": (model, params)},
                   compiler_options=loop.FAST_COMPILE)


def run(name, alphabet):
  tok = char_tokenizer.CharTokenizer(alphabet=alphabet)
  d = _D.value
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d, n_layers=2,
                        n_heads=4, n_kv_heads=2, head_dim=d // 4, d_ff=4 * d)
  model, params = mmodel.init(cfg, jax.random.key(0))
  host = jax.tree.map(np.asarray, params)
  trainers = {c: _trainer(tok, model, jax.tree.map(np.copy, host), c)
              for c in (False, True)}
  times = {False: [], True: []}
  losses = {False: [], True: []}
  for c in (False, True):          # compile + first steps, untimed
    for _ in range(2):
      losses[c].append(float(trainers[c].step()["loss_first"]))
  for _ in range(_BLOCKS.value):
    for c in (False, True):
      for _ in range(_BLOCK.value):
        t0 = time.perf_counter()
        mt = trainers[c].step()
        times[c].append(time.perf_counter() - t0)
        losses[c].append(float(mt["loss_first"]))
  n = min(len(losses[False]), len(losses[True]))
  out = dict(vocab=int(tok.vocab_size),
             median_s={str(c): float(np.median(times[c])) for c in times},
             p90_s={str(c): float(np.percentile(times[c], 90)) for c in times},
             max_abs_dloss_first2=float(np.max(np.abs(
                 np.asarray(losses[False][:2]) - np.asarray(losses[True][:2])))),
             max_abs_dloss_all=float(np.max(np.abs(
                 np.asarray(losses[False][:n]) - np.asarray(losses[True][:n])))))
  print(f"[chunked_kd_bench] {name}: {out}", flush=True)
  return out


def main(argv):
  del argv
  res = {name: run(name, a) for name, a in ALPHABETS.items()}
  lines = ["| alphabet | V | median s/step chunked=False | chunked=True | ratio |"
           " max abs Δloss (first 2 steps) | (all steps) |", "|---|---|---|---|---|---|---|"]
  for name, r in res.items():
    a, b = r["median_s"]["False"], r["median_s"]["True"]
    lines.append(f"| {name} | {r['vocab']} | {a:.4f} | {b:.4f} | {b / a:.2f} |"
                 f" {r['max_abs_dloss_first2']:.2e} | {r['max_abs_dloss_all']:.2e} |")
  text = "\n".join(lines)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(flags={k: flags.FLAGS[k].value for k in (
        "blocks", "block", "d", "prompts", "n", "max_new")}, results=res), f, indent=1)


if __name__ == "__main__":
  app.run(main)
