r"""Bench: Meta-Rewarding's judge vs Self-Rewarding's judge, same budgets.

Claim (Wu et al. 2024, arXiv:2407.19594): adding a meta-judge that builds
judge-preference pairs from the model's own judgments improves the model's
judging, where Self-Rewarding (Yuan et al. 2024, arXiv:2401.10020) trains
the actor only.

One tiny decoder per seed and one warm start, shared by every arm (SFT on
the labeled targets + verifier-labeled judging examples + verifier-labeled
meta-judging examples, ``jaxsi.methods.meta_rewarding``; the last use of
gold labels). From that warm start, ``--rounds`` rounds of each arm on the
unlabeled problems, each with the **same generation** (``--n`` answers per
problem, ``--k`` sampled judgments per answer, the meta-judge's
position-swapped battles over every two distinct judgments — run by every
arm, used only by some) and the **same update budget** (``--steps_per_round``
DPO steps of the same batch, reference = previous iterate):

* ``meta_rewarding`` — actor pairs (length control, ρ = ``--rho``) + judge
  pairs (best vs worst judgment by meta-judge win rate).
* ``self_rewarding`` — actor pairs only, best vs worst averaged score, no
  length control (Self-Rewarding with 3 averaged judgments).
* ``random_judge_pairs`` — the actor pairs of ``meta_rewarding`` plus judge
  pairs between two of a response's judgments picked at random (DPO on the
  model's own judgments without the meta-judge's signal).

Per arm and round: held-out greedy pass@1; the judge on ``--eval_judge_n``
held-out samples per problem (temperature 1, k averaged judgments):
accuracy and balanced accuracy against the verifier, best-of-N by judge
score vs random choice; the held-out meta-judge accuracy (the right vs the
wrong label judgment of each held-out sample, both orders); and the
reward-hacking metrics of the round's selection: judge accuracy on its own
samples, mean judge score of correct / wrong samples, chosen vs rejected
length and the share of actor pairs whose chosen answer is wrong; judge
pairs and the share whose chosen judgment agrees with the verifier.

Command (the docs table)::

  python experiments/meta_rewarding_bench.py --seeds=0,1,2 --out=/tmp/mr.md \
      --json=/tmp/mr.json

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
from jaxsi.methods import meta_rewarding as mr
from jaxsi.models import config as mcfg
from jaxsi.rewards import judging
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import round_store
from jaxsi.training import rounds

ARMS = ("meta_rewarding", "self_rewarding", "random_judge_pairs")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data, model, sampling).")
_ARMS = flags.DEFINE_list("arms", list(ARMS), "Arms, each from the same warm start.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Self-training rounds per arm.")
_DIGITS = flags.DEFINE_integer("digits", 2, "Addition operand digits.")
_N_LABELED = flags.DEFINE_integer("n_labeled", 1000, "Labeled problems (warm start).")
_N_UNLABELED = flags.DEFINE_integer("n_unlabeled", 128, "Unlabeled problems per round.")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_N = flags.DEFINE_integer("n", 4, "Answers per problem.")
_K = flags.DEFINE_integer("k", 3, "Sampled judgments per answer.")
_RHO = flags.DEFINE_float("rho", 0.0, "Length-control rho of the meta_rewarding arms.")
_WARM = flags.DEFINE_integer("warm_start_steps", 1200, "Warm-start SFT steps.")
_STEPS = flags.DEFINE_integer("steps_per_round", 40, "DPO steps per round.")
_LR = flags.DEFINE_float("lr", 3e-3, "Warm-start learning rate.")
_DPO_LR = flags.DEFINE_float("dpo_lr", 1e-4, "DPO learning rate (M-steps).")
_BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
_EVAL_JUDGE_N = flags.DEFINE_integer("eval_judge_n", 4, "Held-out samples judged.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_MAX_LEN = flags.DEFINE_integer("max_len", 40, "Padded training length (the"
                                " meta-judging examples need ~32).")
_JUDGE_FORMAT = flags.DEFINE_string("judge_format", "score_1_5", "Judging format"
                                    " (rationale_1_5: the judge writes its own"
                                    " solution, then the score).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "Completion and judgment"
                                " budget (default digits + 2; a rationale judgment"
                                " needs digits + 4).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: a temp dir).")
_OUT = flags.DEFINE_string("out", "/tmp/meta_rewarding_bench.md", "Markdown output.")
_JSON = flags.DEFINE_string("json", "/tmp/meta_rewarding_bench.json", "JSON output.")


def _random_judge_pairs(method: "spec.RoundsMethod") -> "spec.RoundsMethod":
  """``method`` whose judge pairs are two of a response's distinct judgments
  in a random order, on the same responses the meta-judge pairs (the same
  number of judge pairs; sampling, judging and meta-judging unchanged)."""

  def select(records, plan, ctx):
    rng = np.random.default_rng([zlib.crc32(b"random_judge_pairs"), ctx.config.seed,
                                 ctx.round])
    fmt = judging.get_format(_JUDGE_FORMAT.value)
    shuffled = []
    for r in records:
      k = len(r["judgments"])
      wins, battles = [0.5] * k, [0] * k
      if mr.judge_pairs([r], fmt)[0]:     # the meta-judge pairs this response
        options = mr.battle_pairs(r["judgments"])
        i, j = options[int(rng.integers(len(options)))]
        if rng.random() < 0.5:
          i, j = j, i
        wins[i], wins[j], battles = 1.0, 0.0, [1] * k
      shuffled.append(dict(r, meta_wins=wins, meta_battles=battles))
    _, pairs, m = method.select(shuffled, plan, ctx)
    _, _, real = method.select(records, plan, ctx)   # the meta-judge's own metrics
    m.update({k: v for k, v in real.items() if k.startswith("meta/")})
    return [], pairs, m

  return dataclasses.replace(method, name="random_judge_pairs", select=select)


def make_arm(name: str, seed: int):
  kw = dict(rollout=spec.RolloutSpec(n=_N.value, temperature=1.0), judge_samples=_K.value,
            judge_format=_JUDGE_FORMAT.value,
            beta=_BETA.value, eval_judge_n=_EVAL_JUDGE_N.value, seed=seed)
  if name == "meta_rewarding":
    return mr.meta_rewarding(length_rho=_RHO.value, **kw)
  if name == "self_rewarding":
    return mr.meta_rewarding(length_rho=None, train_judge=False, name=name, **kw)
  if name == "random_judge_pairs":
    return _random_judge_pairs(mr.meta_rewarding(length_rho=_RHO.value, **kw))
  raise ValueError(f"--arms: unknown arm {name!r}; one of {ARMS}")


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
  warm_cfg = rounds.RoundsConfig(
      rounds=_ROUNDS.value, warm_start_steps=_WARM.value,
      steps_per_round=_STEPS.value, batch_size=64, max_len=_MAX_LEN.value,
      learning_rate=_LR.value, warmup_steps=10, max_new_tokens=_MAX_NEW.value or _DIGITS.value + 2,
      rollout_batch=256, chunk_size=256, eval_n=_EVAL_JUDGE_N.value, seed=seed)
  out, warm = {}, None
  for arm in _ARMS.value:
    method = make_arm(arm, seed)
    wd = os.path.join(workdir, f"seed{seed}", arm)
    t0 = time.time()
    # One warm start per seed (every arm's warm_start is the same examples),
    # trained at the warm-start learning rate; the DPO M-steps use --dpo_lr.
    if warm is None:
      rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                        labeled=labeled, unlabeled=unlabeled, test=test,
                        workdir=wd, config=dataclasses.replace(warm_cfg, rounds=0))
      p = pool_lib.CheckpointPool(round_store.RoundStore(wd).pool_dir)
      warm = p.params(0, like=params)
      p.close()
    recs = rounds.run_rounds(method=method, model=model, init_params=params,
                             tokenizer=tok, labeled=labeled, unlabeled=unlabeled,
                             test=test, workdir=wd,
                             config=dataclasses.replace(warm_cfg,
                                                        learning_rate=_DPO_LR.value),
                             warm_params=warm)
    out[arm] = dict(records=recs, seconds=round(time.time() - t0, 1))
  return out


def _f(x, fmt="{:.3f}"):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return fmt.format(x)


def table(results: dict) -> str:
  lines = ["| seed | arm | round | pass@1 | judge acc | judge bal. acc |"
           " best-of-N / random | meta acc (held-out) | judge acc (own) |"
           " score correct / wrong | actor pairs | chosen wrong | len chosen / rejected |"
           " judge pairs | judge chosen agrees | meta acc (own) |",
           "|" + "---|" * 16]
  for seed, arms in results.items():
    for arm, res in arms.items():
      for r in res["records"]:
        ev, sel = r.get("eval", {}), r.get("select", {})
        lines.append(
            f"| {seed} | {arm} | {r['round']} | {_f(r['test_pass1'])} |"
            f" {_f(ev.get('judge/accuracy'))} | {_f(ev.get('judge/balanced_accuracy'))} |"
            f" {_f(ev.get('judge/best_of_n'))} / {_f(ev.get('judge/random_choice'))} |"
            f" {_f(ev.get('eval_meta/accuracy'))} | {_f(sel.get('judge/accuracy'))} |"
            f" {_f(sel.get('judge/score_correct'), '{:.2f}')} /"
            f" {_f(sel.get('judge/score_wrong'), '{:.2f}')} |"
            f" {_f(sel.get('pairs/count'), '{:.0f}')} |"
            f" {_f(sel.get('pairs/self_preferred_wrong'))} |"
            f" {_f(sel.get('pairs/chosen_len'), '{:.2f}')} /"
            f" {_f(sel.get('pairs/rejected_len'), '{:.2f}')} |"
            f" {_f(sel.get('judge_pairs/count'), '{:.0f}')} |"
            f" {_f(sel.get('judge_pairs/chosen_agrees'))} |"
            f" {_f(sel.get('meta/accuracy'))} |")
  return "\n".join(lines)


def _ms(xs):
  xs = [x for x in xs if x is not None and np.isfinite(x)]
  if not xs:
    return "–"
  return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0.0:.3f}"


def summary(results: dict) -> str:
  """Mean ± std over seeds, warm start → last round."""
  arms = list(next(iter(results.values())))
  rows = ["| arm | pass@1 | judge acc | judge bal. acc | meta acc (held-out) | seeds |",
          "|---|---|---|---|---|---|"]

  def col(arm, i, key):
    vals = []
    for res in results.values():
      r = res[arm]["records"][i]
      vals.append(r["test_pass1"] if key == "pass1" else r.get("eval", {}).get(key))
    return vals

  for arm in arms:
    cells = [f"{_ms(col(arm, 0, k))} → {_ms(col(arm, -1, k))}"
             for k in ("pass1", "judge/accuracy", "judge/balanced_accuracy",
                       "eval_meta/accuracy")]
    rows.append(f"| {arm} | " + " | ".join(cells) + f" | {len(results)} |")
  return "\n".join(rows)


def main(argv):
  del argv
  for a in _ARMS.value:
    make_arm(a, 0)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="mr_bench_")
  t0 = time.time()
  results = {int(s): run_seed(int(s), workdir) for s in _SEEDS.value}
  md = (f"{summary(results)}\n\n{table(results)}\n\ntotal wall time"
        f" {time.time() - t0:.0f} s\n")
  print(md, flush=True)
  with open(_OUT.value, "w") as f:
    f.write(md)
  with open(_JSON.value, "w") as f:
    settings = {f.name: f.value for f in (
        _SEEDS, _ARMS, _ROUNDS, _DIGITS, _N_LABELED, _N_UNLABELED, _N_TEST, _N, _K, _RHO,
        _WARM, _STEPS, _LR, _DPO_LR, _BETA, _EVAL_JUDGE_N, _D_MODEL, _LAYERS, _MAX_LEN,
        _JUDGE_FORMAT, _MAX_NEW)}
    json.dump({"flags": settings, "results": {str(k): v for k, v in results.items()}},
              f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
