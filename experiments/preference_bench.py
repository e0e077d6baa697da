"""Preference rounds in miniature: ScPO without labels vs iterative DPO on gold
pairs vs the warm start; DNO's margin filter vs unfiltered pairs.

Every arm starts from one shared warm start (SFT on the labeled set) and runs
the same rounds with the same generation budget (k samples for each of the
same unlabeled problems per round) and the same update budget (steps per
round × batch size); only the pairs differ:

* ``iterative_dpo``: best ≻ worst by the gold verifier (correct ≻ incorrect),
  reference = previous iterate (``methods.iterative_dpo``);
* ``scpo``: most- ≻ least-voted answer, vote-margin-weighted DPO + NLL, no
  labels (``methods.scpo``);
* ``dno``: best ≻ worst by verifier + 0.5·format only if the gap > 0.5
  (``methods.dno``); ``dno_unfiltered``: the same with margin 0;
  ``dno_teacher`` (not run by default): ``dno`` with the teacher's response
  (the labeled target) as the last of each group's k rows, k − 1 samples
  (``dno(teacher_response=True)``, the paper's GPT-4 response per prompt).

Per round and arm: held-out greedy pass@1, pairs, and the reward-hacking
monitors — the share of pairs whose chosen sample is wrong by the verifier,
the share whose rejected sample is correct, and chosen/rejected mean length.
Writes ``--out`` (JSON) and prints a markdown table; docs/preference.md has
the command and the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import dno as dno_lib
from jaxsi.methods import iterative_dpo as idpo_lib
from jaxsi.methods import scpo as scpo_lib
from jaxsi.methods import self_training_common as common
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import round_fit
from jaxsi.training import round_store
from jaxsi.training import rounds
from jaxsi.transforms import base as transforms_base
from jaxsi.transforms.preference import IS_CHOSEN_KEY

ARMS = ("iterative_dpo", "scpo", "dno", "dno_unfiltered")
# Not in the default run: DNO with the teacher response in every group.
EXTRA_ARMS = ("dno_teacher",)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--arms", default=",".join(ARMS))
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--warm_steps", type=int, default=300)
  p.add_argument("--round_steps", type=int, default=60)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--k", type=int, default=8, help="samples per problem and round")
  p.add_argument("--n_labeled", type=int, default=64)
  p.add_argument("--n_unlabeled", type=int, default=96)
  p.add_argument("--n_test", type=int, default=100)
  p.add_argument("--difficulty", default="1,2")
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--n_layers", type=int, default=2)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--pair_lr", type=float, default=3e-4,
                 help="learning rate of the pairwise M-steps (all arms)")
  p.add_argument("--beta", type=float, default=0.1)
  p.add_argument("--max_new_tokens", type=int, default=6)
  p.add_argument("--workdir", default="/tmp/preference_bench")
  p.add_argument("--out", default="/tmp/preference_bench/results.json")
  return p.parse_args(argv)


def make_arm(name, args):
  ro = spec.RolloutSpec(n=args.k, temperature=1.0)
  if name == "iterative_dpo":
    return idpo_lib.iterative_dpo(rollout=ro, beta=args.beta)
  if name == "scpo":
    return scpo_lib.scpo(rollout=ro, beta=args.beta)
  if name == "dno":
    return dno_lib.dno(rollout=ro, beta=args.beta, margin=0.5)
  if name == "dno_unfiltered":
    return dno_lib.dno(rollout=ro, beta=args.beta, margin=0.0, name="dno_unfiltered")
  if name == "dno_teacher":
    return dno_lib.dno(rollout=ro, beta=args.beta, margin=0.5, teacher_response=True,
                       name="dno_teacher")
  raise ValueError(f"--arms: unknown arm {name!r}; expected {ARMS + EXTRA_ARMS}")


def pair_monitors(method, store, r, tok):
  """Verifier-based monitors of round r's pairs (column 0 = the verifier)."""
  stored = store.trajectory(r, 1)
  if stored is None:
    return {}
  traj = jax.tree.map(jnp.asarray, stored.traj)
  out, _, _ = method.select.update(traj, method.select.init(), transforms_base.Context())
  chosen = np.asarray(out.extras[IS_CHOSEN_KEY], bool) & (np.asarray(out.pair_ids) >= 0)
  rows = np.flatnonzero(chosen)
  if not rows.size:
    return dict(pairs=0)
  rej = np.asarray(out.pair_ids)[rows]
  correct = np.nan_to_num(np.asarray(stored.traj.rewards)[:, 0]) >= 1.0
  lengths = np.asarray(stored.traj.loss_mask).sum(1)
  return dict(pairs=int(rows.size),
              chosen_wrong=float(np.mean(~correct[rows])),
              rejected_correct=float(np.mean(correct[rej])),
              chosen_len=float(np.mean(lengths[rows])),
              rejected_len=float(np.mean(lengths[rej])))


def run_seed(args, seed):
  tok = char_tokenizer.CharTokenizer()
  levels = [int(x) for x in args.difficulty.split(",")]
  pool, test = tasks_lib.make_train_test(
      "addition", n_train=args.n_labeled + args.n_unlabeled, n_test=args.n_test,
      difficulty=levels, seed=seed, reverse=True)
  labeled, unlabeled = pool[:args.n_labeled], pool[args.n_labeled:]
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=args.d_model,
                        n_layers=args.n_layers, n_heads=4, n_kv_heads=2,
                        head_dim=args.d_model // 4, d_ff=3 * args.d_model,
                        max_seq_len=64)
  model, init = mmodel.init(cfg, jax.random.key(seed))
  base = rounds.RoundsConfig(
      rounds=args.rounds, warm_start_steps=args.warm_steps,
      steps_per_round=args.round_steps, batch_size=args.batch_size, max_len=32,
      learning_rate=args.lr, warmup_steps=10, max_new_tokens=args.max_new_tokens,
      rollout_batch=512, chunk_size=max(args.n_unlabeled, 1), save_every=1000,
      eval_n=1, seed=seed)
  out = os.path.join(args.workdir, f"seed{seed}")
  warm, _ = round_fit.fit_sft(model=model, params=init, tokenizer=tok,
                              examples=common.task_examples(labeled),
                              steps=args.warm_steps, config=base,
                              ckpt_dir=os.path.join(out, "warm_start"), seed=seed * 1009)
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(base, learning_rate=args.pair_lr)
  res = {}
  for name in args.arms.split(","):
    method = make_arm(name, args)
    t0 = time.time()
    recs = rounds.run_rounds(method=method, model=model, init_params=init, tokenizer=tok,
                             labeled=labeled, unlabeled=unlabeled, test=test,
                             workdir=os.path.join(out, name), config=config,
                             warm_params=warm, verbose=False)
    store = round_store.RoundStore(os.path.join(out, name))
    res[name] = dict(
        test_pass1=[float(r["test_pass1"]) for r in recs],
        monitors=[pair_monitors(method, store, r, tok) for r in range(1, args.rounds + 1)],
        seconds=time.time() - t0)
    print(f"[preference_bench] seed {seed} {name}: pass@1 {res[name]['test_pass1']}"
          f" ({res[name]['seconds']:.0f}s)", flush=True)
  return res


def summarise(results, arms, rounds_):
  """Mean ± std over seeds of the final pass@1 and the monitors; gain ratio."""
  seeds = sorted(results)
  warm = np.asarray([results[s][arms[0]]["test_pass1"][0] for s in seeds])
  rows = {"warm_start": dict(final=(float(warm.mean()), float(warm.std())))}
  for a in arms:
    final = np.asarray([results[s][a]["test_pass1"][rounds_] for s in seeds])
    mon = [results[s][a]["monitors"] for s in seeds]
    def avg(key):
      vals = [m.get(key) for ms in mon for m in ms if m.get(key) is not None]
      return float(np.mean(vals)) if vals else float("nan")
    rows[a] = dict(final=(float(final.mean()), float(final.std())),
                   gain=float((final - warm).mean()),
                   pairs=avg("pairs"), chosen_wrong=avg("chosen_wrong"),
                   rejected_correct=avg("rejected_correct"),
                   chosen_len=avg("chosen_len"), rejected_len=avg("rejected_len"))
  if "scpo" in rows and "iterative_dpo" in rows:
    g = rows["iterative_dpo"]["gain"]
    # Only meaningful when the gold-label baseline improved on the warm start.
    rows["scpo_gain_ratio"] = float(rows["scpo"]["gain"] / g) if g > 0 else float("nan")
  return rows


def table(summary, arms):
  lines = ["| arm | final pass@1 (mean ± std) | gain vs warm | pairs/round |"
           " chosen wrong | rejected correct | len chosen / rejected |",
           "|---|---|---|---|---|---|---|"]
  m, s = summary["warm_start"]["final"]
  lines.append(f"| warm start | {m:.3f} ± {s:.3f} | – | – | – | – | – |")
  for a in arms:
    r = summary[a]
    lines.append(f"| {a} | {r['final'][0]:.3f} ± {r['final'][1]:.3f} | {r['gain']:+.3f} |"
                 f" {r['pairs']:.1f} | {r['chosen_wrong']:.2f} | {r['rejected_correct']:.2f} |"
                 f" {r['chosen_len']:.1f} / {r['rejected_len']:.1f} |")
  if "scpo_gain_ratio" in summary:
    ratio = summary["scpo_gain_ratio"]
    lines.append(f"\nScPO gain / iterative-DPO gain: {ratio:.2f}" + (
        " (iterative DPO did not improve on the warm start)" if np.isnan(ratio) else ""))
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  arms = args.arms.split(",")
  for a in arms:
    make_arm(a, args)                       # unknown arms fail before any work
  seeds = [int(s) for s in args.seeds.split(",")]
  results = {s: run_seed(args, s) for s in seeds}
  summary = summarise(results, arms, args.rounds)
  text = table(summary, arms)
  print(text, flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(args=vars(args), results={str(k): v for k, v in results.items()},
                   summary=summary, table=text), f, indent=1)
  return summary


if __name__ == "__main__":
  main()
