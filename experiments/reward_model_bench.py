r"""Bench: best-of-N by a learned outcome reward model (CPU-sized), 3 seeds.

Per seed: the generator of ``experiments/test_time_bench.py`` (``warm_start``:
a tiny decoder SFT'd on the labelled half of 2-digit addition), N = ``--n``
samples on ``--n_rm_train`` unlabelled *training* problems, labelled by the
verifier; a pointwise and a Bradley–Terry reward model
(``jaxsi.rewards.reward_model``, both from the generator's backbone with a
fresh value head, the same steps and batch rows) are trained on them. Then N
samples of each of ``--n_test`` held-out problems (one batched generation)
are ranked by: the first sample (= random choice), majority vote
(self-consistency), self-certainty best-of-N, the two RMs' best-of-N and the
oracle (pass@k), at every k of ``--ks``. RM quality on the held-out samples:
AUC of the score against the verifier over all samples (pooled) and the
within-problem pair accuracy (correct vs wrong samples of one problem, ties ½).

Command::

  python experiments/reward_model_bench.py --seeds=0,1,2 --out=/tmp/rm_bench.md

Numbers from a loaded machine are not results: report ``uptime`` with them.
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
import test_time_bench as ttb  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxsi.methods import self_training_common as common  # pylint: disable=wrong-import-position
from jaxsi.training import reward_model as rm  # pylint: disable=wrong-import-position
from jaxsi.sampling import strategies  # pylint: disable=wrong-import-position
from jaxsi.sampling import test_time as tt  # pylint: disable=wrong-import-position

# Shared with test_time_bench (its flags: --n, --ks, --temperature, --n_train,
# --n_test, --sft_steps, --sft_lr, --d_model, --layers, --out, --seeds).
_N, _KS, _TEMPERATURE = ttb._N, ttb._KS, ttb._TEMPERATURE  # pylint: disable=protected-access
_N_TRAIN, _N_TEST, _SFT_STEPS = ttb._N_TRAIN, ttb._N_TEST, ttb._SFT_STEPS  # pylint: disable=protected-access
_SFT_LR, _D_MODEL, _LAYERS, _OUT = ttb._SFT_LR, ttb._D_MODEL, ttb._LAYERS, ttb._OUT  # pylint: disable=protected-access
flags.set_default(_KS, ["4", "8", "16"])
flags.set_default(_OUT, "/tmp/reward_model_bench.md")
# --seeds is test_time_bench's flag too (one flag namespace); three seeds here.
_SEEDS = ttb._SEEDS  # pylint: disable=protected-access
flags.set_default(_SEEDS, ["0", "1", "2"])
_N_RM_TRAIN = flags.DEFINE_integer("n_rm_train", 512, "Unlabelled training problems"
                                   " sampled for the RM data.")
_RM_STEPS = flags.DEFINE_integer("rm_steps", 400, "Steps of each reward model.")
_RM_LR = flags.DEFINE_float("rm_lr", 1e-3, "Reward-model peak learning rate.")
_RM_BATCH = flags.DEFINE_integer("rm_batch", 64, "Rows per RM batch (BT: 32 pairs).")
_FROM_JSON = flags.DEFINE_string("from_json", None, "Re-render the tables of a"
                                 " previous run's JSON instead of running.")
_MAX_PAIRS = flags.DEFINE_integer("max_pairs", 4, "BT pairs per problem.")

SELECTORS = ("first", "majority", "self_certainty", "rm_pointwise",
             "rm_bradley_terry", "oracle")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC (Mann–Whitney U / (n⁺ n⁻), ties ½); NaN with one class only."""
  s = np.asarray(scores, np.float64).reshape(-1)
  y = np.asarray(labels, bool).reshape(-1)
  pos, neg = s[y], s[~y]
  if not len(pos) or not len(neg):
    return float("nan")
  order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
  allv = np.concatenate([pos, neg])[order]
  ranks = np.empty(len(allv))
  i = 0
  while i < len(allv):            # average ranks over ties
    j = i
    while j + 1 < len(allv) and allv[j + 1] == allv[i]:
      j += 1
    ranks[i:j + 1] = (i + j) / 2.0 + 1.0
    i = j + 1
  r = np.empty(len(allv))
  r[order] = ranks
  u = r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
  return float(u / (len(pos) * len(neg)))


def run_seed(seed: int) -> dict:
  t0 = time.perf_counter()
  tok, model, warm, _, unlabeled, test = ttb.warm_start(
      seed=seed, n_train=_N_TRAIN.value, n_test=_N_TEST.value,
      sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value, d_model=_D_MODEL.value,
      layers=_LAYERS.value)
  strategy = strategies.Sampling(temperature=_TEMPERATURE.value)
  n = _N.value
  train = tt.generate(model, warm, tok, unlabeled[:_N_RM_TRAIN.value], n=n,
                      max_new_tokens=ttb.MAX_NEW, strategy=strategy,
                      rng=jax.random.key(seed + 101), scores=())
  records = rm.records_from_candidates(train)
  max_len = rm.max_length(tok, records)
  rm_model, rm_init = rm.init_from(model, warm, jax.random.key(seed + 202))
  test_c = tt.generate(model, warm, tok, test, n=n, max_new_tokens=ttb.MAX_NEW,
                       strategy=strategy, rng=jax.random.key(seed + 11),
                       score_temperature=_TEMPERATURE.value,
                       scores=("self_certainty",))
  test_len = rm.max_length(tok, rm.records_from_candidates(test_c))
  out = dict(seed=seed, train_sample_accuracy=float(train.correct.mean()),
             train_samples=len(records))
  selectors = {"first": tt.first, "majority": tt.majority,
               "self_certainty": tt.best_of_n("self_certainty"), "oracle": tt.oracle}
  correct = np.asarray(test_c.correct) >= 1.0
  for kind in rm.KINDS:
    data = rm.training_data(kind, tok, records, max_len=max_len,
                            max_pairs_per_problem=_MAX_PAIRS.value)
    res = rm.train(model=rm_model, params=rm_init, kind=kind, data=data,
                   steps=_RM_STEPS.value, learning_rate=_RM_LR.value,
                   batch_size=_RM_BATCH.value, seed=seed, desc=f"rm-{kind}")
    name = f"rm_{kind}"
    rm.fill_scores(test_c, rm_model, res.params, tok, name=name,
                   max_len=max(test_len, max_len))
    selectors[name] = tt.best_of_n(name)
    s = test_c.scores[name]
    out[f"{name}/train_items"] = len(data)
    out[f"{name}/final_loss"] = float(res.metrics.get("loss", float("nan")))
    out[f"{name}/heldout_auc"] = auc(s, correct)
    out[f"{name}/heldout_pair_accuracy"] = common.pair_ranking_accuracy(
        s.reshape(-1), correct.reshape(-1), n)
    if kind == "pointwise":
      out[f"{name}/heldout_accuracy@0.5"] = float(np.mean((s >= 0.5) == correct))
  out["heldout_sample_accuracy"] = float(correct.mean())
  ks = [int(k) for k in _KS.value if int(k) <= n]
  rows = tt.sweep(test_c, ks=ks, selectors={k: selectors[k] for k in SELECTORS})
  out["sweep"] = rows
  out["seconds"] = time.perf_counter() - t0
  print(f"[reward_model_bench] seed {seed}: {json.dumps({k: v for k, v in out.items() if k != 'sweep'})}",
        flush=True)
  return out


def mean_std(values) -> str:
  v = np.asarray(values, np.float64)
  return f"{v.mean():.3f} ± {v.std():.3f}"


def acc(result: dict, selector: str, k: int) -> float:
  """Accuracy of ``selector`` at ``k`` in one seed's sweep."""
  return next(x["accuracy"] for x in result["sweep"]
              if x["selector"] == selector and x["k"] == k)


def markdown(results: list) -> str:
  ks = sorted({r["k"] for r in results[0]["sweep"]})
  lines = [f"Best-of-N accuracy on {_N_TEST.value} held-out 2-digit additions, mean ± std"
           f" over seeds {[r['seed'] for r in results]} (N = {_N.value} samples at"
           f" T = {_TEMPERATURE.value}; the first sample is a random choice).", "",
           "| selector | " + " | ".join(f"k = {k}" for k in ks) + " |",
           "|---|" + "---|" * len(ks)]
  for name in SELECTORS:
    cells = []
    for k in ks:
      cells.append(mean_std([acc(r, name, k) for r in results]))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Paired gain over the first sample (same samples, per seed), mean ± std:", "",
            "| selector | " + " | ".join(f"k = {k}" for k in ks) + " |",
            "|---|" + "---|" * len(ks)]
  for name in SELECTORS[1:-1]:
    cells = [mean_std([acc(r, name, k) - acc(r, "first", k) for r in results])
             for k in ks]
    lines.append(f"| {name} − first | " + " | ".join(cells) + " |")
  lines += ["", "| reward model | train items | held-out AUC | held-out pair accuracy"
            " | final train loss |", "|---|---|---|---|---|"]
  for kind in rm.KINDS:
    p = f"rm_{kind}"
    lines.append(f"| {kind} | {mean_std([r[p + '/train_items'] for r in results])} | "
                 f"{mean_std([r[p + '/heldout_auc'] for r in results])} | "
                 f"{mean_std([r[p + '/heldout_pair_accuracy'] for r in results])} | "
                 f"{mean_std([r[p + '/final_loss'] for r in results])} |")
  lines += ["", f"Pointwise RM accuracy at threshold 0.5: "
            f"{mean_std([r['rm_pointwise/heldout_accuracy@0.5'] for r in results])};"
            f" held-out sample accuracy (the majority class rate is max(a, 1 − a)): "
            f"{mean_std([r['heldout_sample_accuracy'] for r in results])};"
            f" RM training samples' accuracy: "
            f"{mean_std([r['train_sample_accuracy'] for r in results])};"
            f" seconds per seed: {mean_std([r['seconds'] for r in results])}."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if _FROM_JSON.value:
    with open(_FROM_JSON.value, encoding="utf-8") as f:
      results = json.load(f)
  else:
    results = [run_seed(int(s)) for s in _SEEDS.value]
  text = markdown(results)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  if not _FROM_JSON.value:
    with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
