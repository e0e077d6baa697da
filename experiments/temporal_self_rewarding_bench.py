r"""Bench: Temporal Self-Rewarding vs Self-Rewarding (arXiv:2508.06026 in miniature).

One tiny decoder per seed and one warm start (SFT on the labeled targets plus
verifier-labeled judging examples, as ``experiments/self_rewarding_bench.py``),
then ``--rounds`` rounds of each arm from that same warm start:

* ``self_rewarding`` — ``--sr_n`` samples per problem from M_t, judged by
  M_t, best ≻ worst → DPO (``methods.self_rewarding``), ``2·--steps`` DPO
  steps per round.
* ``temporal`` — ``--n`` samples from M_t (chosen candidates) and ``--past_n``
  from the initial model M_0 (rejected candidates), all judged by M_t; a
  temporary future model (``--steps`` DPO steps on the anchored pairs)
  samples ``--future_n`` per paired problem; then ``--steps`` DPO steps on
  the final pairs (``methods.temporal_self_rewarding``).
* ``anchored_only`` — ``temporal`` without the future model
  (``future_n=0``), ``2·--steps`` DPO steps per round.

Budgets: every arm makes 2·--steps DPO updates per round (``temporal``:
--steps for the future model + --steps for M_{t+1}); generation per problem
and round: self_rewarding --sr_n (default 6), temporal --n + --past_n (+
--future_n on paired problems) ≤ 6, anchored_only --n + --past_n = 4. So
Self-Rewarding gets at least Temporal SR's generation and update budget.

Per arm and round: held-out greedy pass@1, held-out judge accuracy, the
pairs, the chosen − rejected judge-score gap (the paper's claim: it does not
shrink under Temporal SR), the share of pairs with a wrong chosen answer
(self-preferred wrong), the share with correct ≻ wrong, chosen / rejected
length, and the share of chosen answers taken from the future model.

Command (docs/self_rewarding.md, "Temporal Self-Rewarding")::

  python experiments/temporal_self_rewarding_bench.py --seeds=0,1,2 \
      --out=/tmp/tsr.md --json=/tmp/tsr.json
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
from jaxsi.methods import self_rewarding as sr
from jaxsi.methods import temporal_self_rewarding as tsr
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import round_store
from jaxsi.training import rounds

ARMS = ("self_rewarding", "temporal", "anchored_only")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data, model, sampling).")
_ARMS = flags.DEFINE_list("arms", list(ARMS), "Arms, each from the same warm start.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Self-training rounds per arm.")
_DIGITS = flags.DEFINE_integer("digits", 2, "Addition operand digits.")
_N_LABELED = flags.DEFINE_integer("n_labeled", 400, "Labeled problems (warm start).")
_N_UNLABELED = flags.DEFINE_integer("n_unlabeled", 128, "Unlabeled problems per round.")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_SR_N = flags.DEFINE_integer("sr_n", 6, "Self-Rewarding samples per problem.")
_N = flags.DEFINE_integer("n", 2, "Temporal SR: current-model samples per problem.")
_PAST_N = flags.DEFINE_integer("past_n", 2, "Temporal SR: initial-model samples.")
_FUTURE_N = flags.DEFINE_integer("future_n", 2, "Temporal SR: future-model samples.")
_WARM = flags.DEFINE_integer("warm_start_steps", 400, "Warm-start SFT steps.")
_STEPS = flags.DEFINE_integer("steps", 20, "DPO steps (see the module docstring).")
_LR = flags.DEFINE_float("lr", 3e-3, "Warm-start learning rate.")
_DPO_LR = flags.DEFINE_float("dpo_lr", 3e-4, "DPO learning rate.")
_BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
_EVAL_JUDGE_N = flags.DEFINE_integer("eval_judge_n", 4, "Held-out samples judged.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: a temp dir).")
_OUT = flags.DEFINE_string("out", "/tmp/temporal_self_rewarding_bench.md", "Markdown.")
_JSON = flags.DEFINE_string("json", "/tmp/temporal_self_rewarding_bench.json", "JSON.")


def make_arm(name: str, seed: int):
  """(method, DPO steps per round) of an arm."""
  common = dict(beta=_BETA.value, eval_judge_n=_EVAL_JUDGE_N.value, seed=seed)
  if name == "self_rewarding":
    return sr.self_rewarding(rollout=spec.RolloutSpec(n=_SR_N.value, temperature=1.0),
                             **common), 2 * _STEPS.value
  if name in ("temporal", "anchored_only"):
    future = _FUTURE_N.value if name == "temporal" else 0
    m = tsr.temporal_self_rewarding(
        rollout=spec.RolloutSpec(n=_N.value, temperature=1.0), past_n=_PAST_N.value,
        future_n=future, future_steps=_STEPS.value, name=name, **common)
    return m, (_STEPS.value if future else 2 * _STEPS.value)
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
      rounds=_ROUNDS.value, warm_start_steps=_WARM.value, steps_per_round=_STEPS.value,
      batch_size=64, max_len=24, learning_rate=_LR.value, warmup_steps=10,
      max_new_tokens=_DIGITS.value + 2, rollout_batch=256, chunk_size=256,
      eval_n=_EVAL_JUDGE_N.value, seed=seed)
  out, warm = {}, None
  for arm in _ARMS.value:
    method, steps = make_arm(arm, seed)
    wd = os.path.join(workdir, f"seed{seed}", arm)
    t0 = time.time()
    if warm is None:   # one warm start (SR's: targets + judging data) for all arms
      rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                        labeled=labeled, unlabeled=unlabeled, test=test, workdir=wd,
                        config=dataclasses.replace(warm_cfg, rounds=0))
      p = pool_lib.CheckpointPool(round_store.RoundStore(wd).pool_dir)
      warm = p.params(0, like=params)
      p.close()
    config = dataclasses.replace(warm_cfg, learning_rate=_DPO_LR.value,
                                 steps_per_round=steps)
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
  lines = ["| seed | arm | round | pass@1 | judge acc (held-out) | pairs |"
           " score gap chosen − rejected | chosen wrong | correct ≻ wrong |"
           " len chosen / rejected | chosen from future |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for seed, arms in results.items():
    for arm, res in arms.items():
      for r in res["records"]:
        ev, sel = r.get("eval", {}), r.get("select", {})
        lines.append(
            f"| {seed} | {arm} | {r['round']} | {_f(r['test_pass1'])} |"
            f" {_f(ev.get('judge/accuracy'))} | {r.get('pairs', '–')} |"
            f" {_f(sel.get('pairs/margin_mean'), '{:.2f}')} |"
            f" {_f(sel.get('pairs/self_preferred_wrong'))} |"
            f" {_f(sel.get('pairs/correct_over_wrong'))} |"
            f" {_f(sel.get('pairs/chosen_len'), '{:.2f}')} /"
            f" {_f(sel.get('pairs/rejected_len'), '{:.2f}')} |"
            f" {_f(sel.get('pairs/future_chosen'), '{:.2f}')} |")
  return "\n".join(lines)


def summary(results: dict) -> str:
  """Per arm, means over seeds per round: pass@1, score gap, chosen wrong."""
  arms = list(next(iter(results.values())))
  n_rounds = len(next(iter(results.values()))[arms[0]]["records"])
  rows = ["| arm | pass@1 by round (mean over seeds) | score gap by round |"
          " chosen wrong by round | judge acc by round | seeds |",
          "|---|---|---|---|---|---|"]

  def series(arm, get):
    vals = []
    for k in range(n_rounds):
      xs = [get(res[arm]["records"][k]) for res in results.values()]
      xs = [x for x in xs if x is not None and np.isfinite(x)]
      vals.append(f"{np.mean(xs):.3f}" if xs else "–")
    return " → ".join(vals)

  for arm in arms:
    rows.append(
        f"| {arm} | {series(arm, lambda r: r['test_pass1'])} |"
        f" {series(arm, lambda r: r.get('select', {}).get('pairs/margin_mean'))} |"
        f" {series(arm, lambda r: r.get('select', {}).get('pairs/self_preferred_wrong'))} |"
        f" {series(arm, lambda r: r.get('eval', {}).get('judge/accuracy'))} |"
        f" {len(results)} |")
  return "\n".join(rows)


def main(argv):
  del argv
  for a in _ARMS.value:
    make_arm(a, 0)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="tsr_bench_")
  t0 = time.time()
  results = {int(s): run_seed(int(s), workdir) for s in _SEEDS.value}
  md = (f"{summary(results)}\n\n{table(results)}\n\ntotal wall time"
        f" {time.time() - t0:.0f} s\n")
  print(md, flush=True)
  with open(_OUT.value, "w") as f:
    f.write(md)
  with open(_JSON.value, "w") as f:
    settings = {f.name: f.value for f in (
        _SEEDS, _ARMS, _ROUNDS, _DIGITS, _N_LABELED, _N_UNLABELED, _N_TEST, _SR_N, _N,
        _PAST_N, _FUTURE_N, _WARM, _STEPS, _LR, _DPO_LR, _BETA, _EVAL_JUDGE_N,
        _D_MODEL, _LAYERS)}
    json.dump({"flags": settings, "results": {str(k): v for k, v in results.items()}},
              f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
