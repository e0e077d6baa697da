r"""Bench: EVOLVE / RLRF rounds on 2-digit addition, four arms, three seeds.

Per seed one data split and one initial model; per arm its own warm start
(the arm's ``warm_start`` data: targets, refinement examples, judging
examples where it judges; the same ``--warm_start_steps``), then
``--rounds`` rounds on the unlabeled problems with the same generation
budget (``--n`` answers per problem, each refined once: 2n candidates) and
the same DPO steps per round:

* ``evolve`` — judge selection over originals + refinements, direct and
  refinement DPO pairs (``jaxsi.methods.evolve.evolve``);
* ``evolve_direct`` — the same pairs, direct term only (the refinement
  term's ablation);
* ``evolve_rule`` — rule selection (last refinement ≻ original), no judge;
* ``rlrf`` — two aspects (score 1–5, y/n), feedback-conditioned refinement
  of all n answers (``refine_top = n``: the same 2n candidates), direct
  pairs (``jaxsi.methods.evolve.rlrf``).

Per arm and round: held-out greedy pass@1 (direct answer), the greedy
answer → greedy refinement on the held-out problems (accuracy after
refinement, wrong→right, right→wrong), pairs, the share of pairs whose
chosen answer is wrong, and the judge's accuracy on the round's own
candidates. Markdown to ``--out`` (per seed and a mean over seeds), JSON to
``--json``.

Command::

  PYTHONPATH=. python experiments/evolve_bench.py --seeds=0,1,2 \
      --out=/tmp/evolve_bench.md --json=/tmp/evolve_bench.json

Numbers from a loaded machine are not results for speed: report ``uptime``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import evolve as ev
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import round_store
from jaxsi.training import rounds

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data, model, sampling).")
_ARMS = flags.DEFINE_list("arms", ["evolve", "evolve_direct", "evolve_rule", "rlrf"],
                          "Arms.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds per arm.")
_N_LABELED = flags.DEFINE_integer("n_labeled", 400, "Labeled problems (warm start).")
_N_UNLABELED = flags.DEFINE_integer("n_unlabeled", 256, "Unlabeled problems per round.")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_N = flags.DEFINE_integer("n", 2, "Answers per problem (each refined once).")
_WARM = flags.DEFINE_integer("warm_start_steps", 400, "Warm-start SFT steps.")
_STEPS = flags.DEFINE_integer("steps_per_round", 40, "DPO steps per round.")
_LR = flags.DEFINE_float("lr", 3e-3, "Warm-start learning rate.")
_DPO_LR = flags.DEFINE_float("dpo_lr", 3e-4, "DPO learning rate.")
_BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/evolve_bench.md", "Markdown output.")
_JSON = flags.DEFINE_string("json", "/tmp/evolve_bench.json", "JSON output.")


def make_arm(name: str, seed: int):
  ro = spec.RolloutSpec(n=_N.value, temperature=1.0)
  common = dict(rollout=ro, beta=_BETA.value, seed=seed)
  if name == "evolve":
    return ev.evolve(**common, name=name)
  if name == "evolve_direct":
    return ev.evolve(**common, refine_pairs=False, name=name)
  if name == "evolve_rule":
    return ev.evolve(**common, selection="rule", name=name)
  if name == "rlrf":
    return ev.rlrf(**common, refine_top=_N.value, name=name)
  raise ValueError(f"--arms: unknown arm {name!r}")


def run_seed(seed: int, workdir: str) -> dict:
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=_D_MODEL.value,
                        n_layers=_LAYERS.value, n_heads=2, n_kv_heads=1,
                        head_dim=_D_MODEL.value // 2, d_ff=4 * _D_MODEL.value,
                        max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=_N_LABELED.value + _N_UNLABELED.value, n_test=_N_TEST.value,
      difficulty=[2], seed=seed, reverse=True)
  labeled, unlabeled = pool[:_N_LABELED.value], pool[_N_LABELED.value:]
  config = rounds.RoundsConfig(
      rounds=_ROUNDS.value, warm_start_steps=_WARM.value, steps_per_round=_STEPS.value,
      batch_size=64, max_len=32, learning_rate=_DPO_LR.value, warmup_steps=10,
      max_new_tokens=4, rollout_batch=256, chunk_size=256, eval_n=1, seed=seed)
  out = {}
  for arm in _ARMS.value:
    t0 = time.time()
    method, wd = make_arm(arm, seed), os.path.join(workdir, f"seed{seed}", arm)
    # The arm's warm start at --lr (round 0 only), then its rounds at --dpo_lr.
    rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                      labeled=labeled, unlabeled=unlabeled, test=test, workdir=wd,
                      config=dataclasses.replace(config, rounds=0,
                                                 learning_rate=_LR.value),
                      verbose=False)
    p = pool_lib.CheckpointPool(round_store.RoundStore(wd).pool_dir)
    warm = p.params(0, like=params)
    p.close()
    recs = rounds.run_rounds(method=method, model=model, init_params=params,
                             tokenizer=tok, labeled=labeled, unlabeled=unlabeled,
                             test=test, workdir=wd, config=config, warm_params=warm,
                             verbose=False)
    out[arm] = dict(records=recs, seconds=round(time.time() - t0, 1))
  return out


def _f(x, fmt="{:.3f}"):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return fmt.format(x)


COLS = (("held-out pass@1", lambda r: r["test_pass1"]),
        ("after refinement", lambda r: r["eval"].get("eval_refine/acc_final")),
        ("wrong→right", lambda r: r["eval"].get("eval_refine/wrong_to_right")),
        ("right→wrong", lambda r: r["eval"].get("eval_refine/right_to_wrong")),
        ("pairs", lambda r: r.get("pairs")),
        ("chosen wrong", lambda r: r.get("select", {}).get("pairs/self_preferred_wrong")),
        ("judge acc (own)", lambda r: r.get("select", {}).get("judge/accuracy")))


def table(results: dict) -> str:
  lines = ["| seed | arm | round | " + " | ".join(c for c, _ in COLS) + " |",
           "|" + "---|" * (len(COLS) + 3)]
  for seed, arms in results.items():
    for arm, res in arms.items():
      for r in res["records"]:
        cells = [_f(fn(r)) if not isinstance(fn(r), int) else str(fn(r)) for _, fn in COLS]
        lines.append(f"| {seed} | {arm} | {r['round']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def summary(results: dict) -> str:
  arms = list(next(iter(results.values())))
  lines = ["| arm | round | " + " | ".join(c for c, _ in COLS[:4]) + " | seeds |",
           "|" + "---|" * 7]
  for arm in arms:
    for rnd in range(_ROUNDS.value + 1):
      cells = []
      for _, fn in COLS[:4]:
        v = [fn(res[arm]["records"][rnd]) for res in results.values()]
        v = [x for x in v if x is not None]
        cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "–")
      lines.append(f"| {arm} | {rnd} | " + " | ".join(cells) + f" | {len(results)} |")
  return "\n".join(lines)


def main(argv):
  del argv
  for a in _ARMS.value:
    make_arm(a, 0)
  workdir = tempfile.mkdtemp(prefix="evolve_bench_")
  t0 = time.time()
  results = {}
  for s in _SEEDS.value:
    results[int(s)] = run_seed(int(s), workdir)
    print(table({int(s): results[int(s)]}), flush=True)
  md = (summary(results) + "\n\n" + table(results)
        + f"\n\n{time.time() - t0:.0f} s in all\n")
  print(md)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(md)
  with open(_JSON.value, "w", encoding="utf-8") as f:
    json.dump({str(k): {a: v for a, v in arms.items()} for k, arms in results.items()},
              f, indent=1, default=str)


if __name__ == "__main__":
  app.run(main)
