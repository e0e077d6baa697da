r"""Bench: Self-Rewarding rounds vs the warm start vs same-budget controls.

One tiny decoder per seed; one warm start (SFT on the labeled targets plus
verifier-labeled judging examples, ``jaxsi.data.judging``); then, from that
same warm start, ``--rounds`` rounds of each arm on the unlabeled problems:

* ``self_rewarding`` — N samples per problem, the model judges each one
  (score 1–5), best vs worst by the judge's score → DPO, reference =
  previous iterate (Yuan et al. 2024, arXiv:2401.10020). No labels.
* ``random_pairs`` — the same samples and the same judging pass (equal
  generation budget), but the pair of a problem is two of its samples
  picked at random (equal update budget: the same DPO steps): separates the
  judge's signal from "DPO on own samples".
* ``oracle_pairs`` — the same, pairs by the *verifier* (best vs worst by
  correctness): uses the labels; the upper reference of a perfect judge.

Per arm and round: held-out greedy pass@1; the judge on held-out samples
(``--eval_judge_n`` per problem, temperature 1): accuracy and balanced
accuracy against the verifier, best-of-N by judge score vs random choice;
and the reward-hacking metrics of the selection step: judge accuracy on the
round's own samples, mean judge score on correct vs wrong samples, chosen
vs rejected length, share of pairs with a wrong chosen answer.

Command (the docs table)::

  python experiments/self_rewarding_bench.py --seeds=0 --out=/tmp/sr.md \
      --json=/tmp/sr.json

Numbers from a loaded machine are not results: report ``uptime`` with them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import zlib

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import self_rewarding as sr
from jaxsi.methods import self_training_common as common
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import round_store
from jaxsi.training import rounds

_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data, model, sampling).")
_ARMS = flags.DEFINE_list("arms", ["self_rewarding", "random_pairs", "oracle_pairs"],
                          "Arms, each from the same warm start.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Self-training rounds per arm.")
_DIGITS = flags.DEFINE_integer("digits", 2, "Addition operand digits.")
_N_LABELED = flags.DEFINE_integer("n_labeled", 400, "Labeled problems (warm start).")
_N_UNLABELED = flags.DEFINE_integer("n_unlabeled", 128, "Unlabeled problems per round.")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_N = flags.DEFINE_integer("n", 4, "Samples per problem.")
_WARM = flags.DEFINE_integer("warm_start_steps", 400, "Warm-start SFT steps.")
_STEPS = flags.DEFINE_integer("steps_per_round", 40, "DPO steps per round.")
_LR = flags.DEFINE_float("lr", 3e-3, "Warm-start learning rate.")
_DPO_LR = flags.DEFINE_float("dpo_lr", 3e-4, "DPO learning rate (M-steps).")
_BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
_JUDGE_WRONG = flags.DEFINE_integer("judge_wrong_per_task", 1,
                                    "Corrupted candidates per labeled task in the"
                                    " warm start's judging data.")
_EVAL_JUDGE_N = flags.DEFINE_integer("eval_judge_n", 4, "Held-out samples judged.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: a temp dir).")
_OUT = flags.DEFINE_string("out", "/tmp/self_rewarding_bench.md", "Markdown output.")
_JSON = flags.DEFINE_string("json", "/tmp/self_rewarding_bench.json", "JSON output.")


def _rescored(method, name, score_fn):
  """``method`` whose pairs are best vs worst by ``score_fn(records, rng)``
  (its sampling and judging are unchanged: the same generation budget)."""

  def select(records, plan, ctx):
    rng = np.random.default_rng([zlib.crc32(name.encode()), ctx.config.seed, ctx.round])
    scored = [dict(r, judge_score=float(s)) for r, s in zip(records, score_fn(records, rng))]
    _, pairs, m = method.select(scored, plan, ctx)
    # the judge's own metrics on the round's samples stay those of the real judge
    _, _, judged = method.select(records, plan, ctx)
    m.update({k: v for k, v in judged.items() if k.startswith("judge/")})
    return [], pairs, m

  return dataclasses.replace(method, name=name, select=select)


def make_arm(name: str, base: "spec.RoundsMethod"):
  if name == "self_rewarding":
    return base
  if name == "random_pairs":
    return _rescored(base, name, lambda recs, rng: rng.permutation(len(recs)))
  if name == "oracle_pairs":
    return _rescored(base, name, lambda recs, rng: [float(r["correct"]) for r in recs])
  raise ValueError(f"--arms: unknown arm {name!r}; one of self_rewarding,"
                   " random_pairs, oracle_pairs")


def run_seed(seed: int, workdir: str) -> dict:
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=_D_MODEL.value,
                        n_layers=_LAYERS.value, n_heads=2, n_kv_heads=1,
                        head_dim=_D_MODEL.value // 2, d_ff=4 * _D_MODEL.value,
                        max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=_N_LABELED.value + _N_UNLABELED.value, n_test=_N_TEST.value,
      difficulty=[_DIGITS.value], seed=seed, reverse=True)
  labeled, unlabeled = pool[:_N_LABELED.value], pool[_N_LABELED.value:]
  base = sr.self_rewarding(rollout=spec.RolloutSpec(n=_N.value, temperature=1.0),
                           beta=_BETA.value, eval_judge_n=_EVAL_JUDGE_N.value, seed=seed,
                           judge_wrong_per_task=_JUDGE_WRONG.value)
  max_new = _DIGITS.value + 2
  warm_cfg = rounds.RoundsConfig(
      rounds=_ROUNDS.value, warm_start_steps=_WARM.value,
      steps_per_round=_STEPS.value, batch_size=64, max_len=24,
      learning_rate=_LR.value, warmup_steps=10, max_new_tokens=max_new,
      rollout_batch=256, chunk_size=256, eval_n=_EVAL_JUDGE_N.value, seed=seed)
  out, warm = {}, None
  for arm in _ARMS.value:
    method = make_arm(arm, base)
    wd = os.path.join(workdir, f"seed{seed}", arm)
    t0 = time.time()
    # The warm start is trained once (first arm, at the warm-start learning
    # rate); every arm's DPO M-steps use --dpo_lr.
    config = dataclasses.replace(warm_cfg, learning_rate=_DPO_LR.value)
    if warm is None:
      rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                        labeled=labeled, unlabeled=unlabeled, test=test,
                        workdir=wd, config=dataclasses.replace(warm_cfg, rounds=0))
      p = pool_lib.CheckpointPool(round_store.RoundStore(wd).pool_dir)
      warm = p.params(0, like=params)
      p.close()
    recs = rounds.run_rounds(method=method, model=model, init_params=params,
                             tokenizer=tok, labeled=labeled, unlabeled=unlabeled,
                             test=test, workdir=wd, config=config, warm_params=warm)
    out[arm] = dict(records=recs, seconds=round(time.time() - t0, 1))
  return out


def _f(x, fmt="{:.3f}"):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return fmt.format(x)


def table(results: dict) -> str:
  lines = ["| seed | arm | round | held-out pass@1 | judge acc (held-out) | judge bal. acc |"
           " judge best-of-N / random | judge acc (own samples) | score correct / wrong |"
           " pairs | chosen wrong | len chosen / rejected |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for seed, arms in results.items():
    for arm, res in arms.items():
      for r in res["records"]:
        ev, sel = r.get("eval", {}), r.get("select", {})
        lines.append(
            f"| {seed} | {arm} | {r['round']} | {_f(r['test_pass1'])} |"
            f" {_f(ev.get('judge/accuracy'))} | {_f(ev.get('judge/balanced_accuracy'))} |"
            f" {_f(ev.get('judge/best_of_n'))} / {_f(ev.get('judge/random_choice'))} |"
            f" {_f(sel.get('judge/accuracy'))} |"
            f" {_f(sel.get('judge/score_correct'), '{:.2f}')} /"
            f" {_f(sel.get('judge/score_wrong'), '{:.2f}')} |"
            f" {r.get('pairs', '–')} | {_f(sel.get('pairs/self_preferred_wrong'))} |"
            f" {_f(sel.get('pairs/chosen_len'), '{:.2f}')} /"
            f" {_f(sel.get('pairs/rejected_len'), '{:.2f}')} |")
  return "\n".join(lines)


def summary(results: dict) -> str:
  """Mean over seeds of the last round's pass@1 and held-out judge accuracy."""
  arms = list(next(iter(results.values())))
  rows = ["| arm | pass@1 warm start → last round | judge acc warm start → last |"
          " seeds |", "|---|---|---|---|"]
  for arm in arms:
    p0 = [res[arm]["records"][0]["test_pass1"] for res in results.values()]
    p1 = [res[arm]["records"][-1]["test_pass1"] for res in results.values()]
    j0 = [res[arm]["records"][0]["eval"]["judge/accuracy"] for res in results.values()]
    j1 = [res[arm]["records"][-1]["eval"]["judge/accuracy"] for res in results.values()]
    rows.append(f"| {arm} | {np.mean(p0):.3f} → {np.mean(p1):.3f} (±{np.std(p1):.3f}) |"
                f" {np.mean(j0):.3f} → {np.mean(j1):.3f} (±{np.std(j1):.3f}) |"
                f" {len(p1)} |")
  return "\n".join(rows)


def main(argv):
  del argv
  for a in _ARMS.value:
    make_arm(a, sr.self_rewarding())
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="sr_bench_")
  t0 = time.time()
  results = {int(s): run_seed(int(s), workdir) for s in _SEEDS.value}
  md = (f"{summary(results)}\n\n{table(results)}\n\ntotal wall time"
        f" {time.time() - t0:.0f} s\n")
  print(md, flush=True)
  with open(_OUT.value, "w") as f:
    f.write(md)
  with open(_JSON.value, "w") as f:
    settings = {f.name: f.value for f in (
        _SEEDS, _ARMS, _ROUNDS, _DIGITS, _N_LABELED, _N_UNLABELED, _N_TEST, _N, _WARM,
        _STEPS, _LR, _DPO_LR, _BETA, _JUDGE_WRONG, _EVAL_JUDGE_N, _D_MODEL, _LAYERS)}
    json.dump({"flags": settings, "results": {str(k): v for k, v in results.items()}},
              f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
