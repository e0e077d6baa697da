r"""Bench: T-REG vs plain DPO on the same verifier pairs (arXiv:2412.02685 in miniature).

One tiny decoder per seed and one warm start for every arm: SFT on the
labeled targets plus the contrastive-instruction examples of
``methods.treg.contrastive_examples`` ('good|' + prompt → target,
'bad|' + prompt → a corrupted target). Then ``--rounds`` rounds of
iterative DPO on verifier pairs (n samples per problem from M_t, best ≻
worst by the verifier, M_{t+1} from M_t with reference M_t), the arms
differing only in α:

* ``dpo`` — ``methods.treg.treg(alpha=0)``: exactly iterative DPO's loss
  (tests/methods/test_treg.py checks the fitted parameters are equal);
* ``treg`` — ``alpha=--alpha``: + the token-level reward regulariser, token
  rewards from the reference re-scoring each response after the two
  instructions.

Same generation budget (the same n samples of the same problems per round)
and the same update budget (``--steps`` DPO steps of ``--batch`` rows per
round); T-REG's two extra reference forward passes per pair are not counted
as updates. Per arm and round: held-out greedy pass@1, pairs, chosen wrong
(share of pairs whose chosen answer is wrong; 0 with verifier pairs) and
chosen / rejected length. Diagnostic (round 1, warm-start model): the mean
self-generated token reward r_t on chosen vs rejected completions, and on
the tokens where the two differ.

Command (docs/preference.md, "T-REG")::

  PYTHONPATH=. python experiments/treg_bench.py --seeds=0,1,2 --out=/tmp/treg.md \
      --json=/tmp/treg.json
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
from jaxsi.methods import treg as treg_m
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import fit_data
from jaxsi.training import round_store
from jaxsi.training import rounds
from jaxsi.transforms import token_reward_regularization as treg_lib

_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data, model, sampling).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds per arm.")
_DIGITS = flags.DEFINE_integer("digits", 2, "Addition operand digits.")
_N_LABELED = flags.DEFINE_integer("n_labeled", 400, "Labeled problems (warm start).")
_N_UNLABELED = flags.DEFINE_integer("n_unlabeled", 128, "Unlabeled problems per round.")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_N = flags.DEFINE_integer("n", 8, "Samples per problem.")
_WARM = flags.DEFINE_integer("warm_start_steps", 400, "Warm-start SFT steps.")
_STEPS = flags.DEFINE_integer("steps", 40, "DPO steps per round.")
_BATCH = flags.DEFINE_integer("batch", 64, "Rows per update (pairs = batch / 2).")
_LR = flags.DEFINE_float("lr", 3e-3, "Warm-start learning rate.")
_DPO_LR = flags.DEFINE_float("dpo_lr", 1e-4, "DPO learning rate.")
_BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
_ALPHA = flags.DEFINE_float("alpha", 1.0, "T-REG alpha.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: a temp dir).")
_OUT = flags.DEFINE_string("out", "/tmp/treg_bench.md", "Markdown output.")
_JSON = flags.DEFINE_string("json", "/tmp/treg_bench.json", "JSON output.")


def token_reward_diagnostic(tok, model, params, pairs, max_len) -> dict:
  """Mean r_t (warm model) on chosen vs rejected tokens, all and differing ones."""
  if not pairs:
    return {}
  data = fit_data.preference_data(
      tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs],
      [p["rejected"] for p in pairs], max_len=max_len, reference=(model, params),
      contexts={k: [p["contexts"][k] for p in pairs] for k in ("better", "worse")})
  a = data.arrays
  out = {}
  toks = {}
  for side in ("chosen", "rejected"):
    m = a[f"{side}/loss_mask"]
    r = np.asarray(treg_lib.contrastive_token_rewards(
        a[f"{side}/context_logprobs/better"], a[f"{side}/context_logprobs/worse"], m))
    out[f"r_{side}"] = float(r[m].mean())
    # completion tokens by rank, for the "differing tokens" comparison
    toks[side] = [(a[f"{side}/tokens"][i][m[i]], r[i][m[i]]) for i in range(len(pairs))]
  diff_c, diff_r = [], []
  for (tc, rc), (tr, rr) in zip(toks["chosen"], toks["rejected"]):
    k = min(len(tc), len(tr))
    d = np.flatnonzero(tc[:k] != tr[:k])
    diff_c += list(rc[d])
    diff_r += list(rr[d])
  out["r_chosen_diff"] = float(np.mean(diff_c)) if diff_c else float("nan")
  out["r_rejected_diff"] = float(np.mean(diff_r)) if diff_r else float("nan")
  return out


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
      batch_size=_BATCH.value, max_len=24, learning_rate=_LR.value, warmup_steps=10,
      max_new_tokens=_DIGITS.value + 2, rollout_batch=256, chunk_size=256, seed=seed)
  out, warm = {}, None
  rollout = spec.RolloutSpec(n=_N.value, temperature=1.0)
  for arm, alpha in (("dpo", 0.0), ("treg", _ALPHA.value)):
    method = treg_m.treg(rollout=rollout, beta=_BETA.value, alpha=alpha, seed=seed,
                         name=arm)
    wd = os.path.join(workdir, f"seed{seed}", arm)
    t0 = time.time()
    if warm is None:
      rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                        labeled=labeled, unlabeled=unlabeled, test=test, workdir=wd,
                        config=dataclasses.replace(warm_cfg, rounds=0))
      p = pool_lib.CheckpointPool(round_store.RoundStore(wd).pool_dir)
      warm = p.params(0, like=params)
      p.close()
    config = dataclasses.replace(warm_cfg, learning_rate=_DPO_LR.value)
    recs = rounds.run_rounds(method=method, model=model, init_params=params,
                             tokenizer=tok, labeled=labeled, unlabeled=unlabeled,
                             test=test, workdir=wd, config=config, warm_params=warm)
    out[arm] = dict(records=recs, seconds=round(time.time() - t0, 1))
    if arm == "treg":
      sel = round_store.RoundStore(wd).load(1, "selected.json")
      out[arm]["diagnostic"] = token_reward_diagnostic(tok, model, warm, sel["pairs"], 24)
  return out


def _f(x, fmt="{:.3f}"):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "–"
  return fmt.format(x)


def tables(results: dict) -> str:
  lines = ["| seed | arm | round | pass@1 | pairs | chosen wrong | len chosen / rejected |",
           "|---|---|---|---|---|---|---|"]
  for seed, arms in results.items():
    for arm, res in arms.items():
      for r in res["records"]:
        sel = r.get("select", {})
        lines.append(f"| {seed} | {arm} | {r['round']} | {_f(r['test_pass1'])} |"
                     f" {r.get('pairs', '–')} | {_f(sel.get('pairs/self_preferred_wrong'))} |"
                     f" {_f(sel.get('pairs/chosen_len'), '{:.2f}')} /"
                     f" {_f(sel.get('pairs/rejected_len'), '{:.2f}')} |")
  arms = list(next(iter(results.values())))
  n_rounds = len(next(iter(results.values()))[arms[0]]["records"])
  summ = ["| arm | pass@1 by round (mean ± std over seeds) | seeds |", "|---|---|---|"]
  for arm in arms:
    cells = []
    for k in range(n_rounds):
      xs = [res[arm]["records"][k]["test_pass1"] for res in results.values()]
      cells.append(f"{np.mean(xs):.3f} ± {np.std(xs):.3f}")
    summ.append(f"| {arm} | {' → '.join(cells)} | {len(results)} |")
  diag = ["| seed | mean r_t chosen / rejected (all tokens) |"
          " mean r_t chosen / rejected (differing tokens) |", "|---|---|---|"]
  for seed, arms in results.items():
    d = arms.get("treg", {}).get("diagnostic", {})
    diag.append(f"| {seed} | {_f(d.get('r_chosen'))} / {_f(d.get('r_rejected'))} |"
                f" {_f(d.get('r_chosen_diff'))} / {_f(d.get('r_rejected_diff'))} |")
  return "\n".join(summ) + "\n\n" + "\n".join(diag) + "\n\n" + "\n".join(lines)


def main(argv):
  del argv
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="treg_bench_")
  t0 = time.time()
  results = {int(s): run_seed(int(s), workdir) for s in _SEEDS.value}
  md = f"{tables(results)}\n\ntotal wall time {time.time() - t0:.0f} s\n"
  print(md, flush=True)
  with open(_OUT.value, "w") as f:
    f.write(md)
  with open(_JSON.value, "w") as f:
    settings = {f.name: f.value for f in (
        _SEEDS, _ROUNDS, _DIGITS, _N_LABELED, _N_UNLABELED, _N_TEST, _N, _WARM, _STEPS,
        _BATCH, _LR, _DPO_LR, _BETA, _ALPHA, _D_MODEL, _LAYERS)}
    json.dump({"flags": settings, "results": {str(k): v for k, v in results.items()}},
              f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
