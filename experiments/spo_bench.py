r"""Bench: SPO (verifier oracle, self-judge) and Self-motivated Learning vs GRPO / PPO.

Per seed, one warm start (``_warm_start``-style tiny decoder, SFT on the
labelled half of 2-digit addition *and* one verifier-labelled pairwise
judging example per labelled task, so the policy can judge; the full
character alphabet) is shared by every row, and one Bradley–Terry reward
model is trained on the warm start's own verifier-ranked samples of the
labelled problems (``training.reward_model_role``). Then, from the warm
start, with the same generation and update budget (``--steps`` iterations ×
``--prompts`` prompts × ``--n`` samples, ``OptimSpec(epochs, minibatches)``,
the same learning rate):

* ``grpo``            GRPO on the verifier reward;
* ``spo``             SPO, win rate under the verifier as perfect rater (GRPO update);
* ``spo_judge``       SPO, win rate under the current policy as pairwise judge
                      (both orders), the verifier unseen;
* ``ppo``             PPO + KL (β = ``--kl``) on the verifier reward;
* ``self_motivated``  PPO + KL (same β) on the BT reward model's score.

Reported: held-out greedy / sampled pass@1; reward hacking: the RM's mean
score of held-out samples vs their verifier accuracy (before → after, for
the PPO rows), the policy-as-judge's accuracy on held-out pairwise judging
examples (target vs a corruption, in both orders; before → after) and the
RL samples' verifier accuracy (first → last iterations) next to the train
reward.

Command (one seed per invocation keeps each under 15 minutes on 2 busy
cores; ``--merge`` renders the table of several)::

  python experiments/spo_bench.py --seeds=0 --out=/tmp/spo0.md
  python experiments/spo_bench.py --seeds=1 --out=/tmp/spo1.md
  python experiments/spo_bench.py --seeds=2 --out=/tmp/spo2.md
  python experiments/spo_bench.py --merge=/tmp/spo0.md.json,/tmp/spo1.md.json,/tmp/spo2.md.json \
      --out=/tmp/spo.md
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _warm_start  # pylint: disable=g-bad-import-order,wrong-import-position

from jaxsi.data import batching  # pylint: disable=wrong-import-position
from jaxsi.data import char_tokenizer  # pylint: disable=wrong-import-position
from jaxsi.data import judging as data_judging  # pylint: disable=wrong-import-position
from jaxsi.methods import spo as spo_lib  # pylint: disable=wrong-import-position
from jaxsi.methods import self_motivated as sm_lib  # pylint: disable=wrong-import-position
from jaxsi.methods.grpo import grpo  # pylint: disable=wrong-import-position
from jaxsi.methods.ppo import ppo  # pylint: disable=wrong-import-position
from jaxsi.models import config as mcfg  # pylint: disable=wrong-import-position
from jaxsi.models import model as mmodel  # pylint: disable=wrong-import-position
from jaxsi.rewards import judging  # pylint: disable=wrong-import-position
from jaxsi.sampling import sampler as sampler_lib  # pylint: disable=wrong-import-position
from jaxsi.sampling import strategies  # pylint: disable=wrong-import-position
from jaxsi.spec import OptimSpec, RolloutSpec  # pylint: disable=wrong-import-position
from jaxsi.training import loop  # pylint: disable=wrong-import-position
from jaxsi.training import optimizer as opt_lib  # pylint: disable=wrong-import-position
from jaxsi.training import reward_model as rm  # pylint: disable=wrong-import-position
from jaxsi.training import reward_model_role as rmr  # pylint: disable=wrong-import-position
from jaxsi.training import rl_run  # pylint: disable=wrong-import-position

ROWS = ("grpo", "spo", "spo_judge", "ppo", "self_motivated")

_ROWS = flags.DEFINE_list("rows", list(ROWS), f"Rows to run, of {ROWS}.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data / model / RL), run in turn.")
_STEPS = flags.DEFINE_integer("steps", 30, "RL iterations per row.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 4, "Samples per prompt (SPO's group).")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Passes over each rollout batch (every row).")
_MINIBATCHES = flags.DEFINE_integer("minibatches", 2, "Minibatches per pass (every row).")
_LR = flags.DEFINE_float("lr", 5e-4, "RL learning rate (every row).")
_KL = flags.DEFINE_float("kl", 0.05, "β of the KL to the warm start (every row).")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_EVAL_SAMPLES = flags.DEFINE_integer("eval_samples", 4, "Samples per held-out problem.")
_RM_PROBLEMS = flags.DEFINE_integer("rm_problems", 256, "Labelled problems sampled for the RM.")
_RM_N = flags.DEFINE_integer("rm_n", 8, "Samples per RM problem.")
_RM_STEPS = flags.DEFINE_integer("rm_steps", 150, "RM fit steps.")
_JUDGE_TEST = flags.DEFINE_integer("judge_test", 128, "Held-out pairwise judging examples.")
_MERGE = flags.DEFINE_list("merge", [], "Render the table of these JSON outputs.")
_OUT = flags.DEFINE_string("out", "/tmp/spo_bench.md", "Markdown output (+ .json).")

DIGITS = 2
MAX_NEW = DIGITS + 2


def warm_start(seed: int):
  """(tokenizer, model, warm params, labeled, unlabeled, test)."""
  tok = char_tokenizer.CharTokenizer()
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[DIGITS], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, labeled_fraction=0.5, seed=seed,
      task_format={"reverse": True})
  d = _D_MODEL.value
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                        n_layers=_LAYERS.value, n_heads=4, n_kv_heads=2,
                        head_dim=d // 4, d_ff=4 * d, value_head=True)
  model, init = mmodel.init(cfg, jax.random.key(seed))
  extras = spo_lib.TeachJudge(spec=RolloutSpec(n=_N.value, max_new_tokens=MAX_NEW),
                              seed=seed).supervised_extras(labeled)
  prompts = [t.prompt for t in labeled] + [p for p, _ in extras]
  targets = [t.target for t in labeled] + [c for _, c in extras]
  params = rl_run.supervised(model=model, params=init, tokenizer=tok, prompts=prompts,
                             targets=targets, steps=_SFT_STEPS.value,
                             learning_rate=_SFT_LR.value, seed=seed)
  return tok, model, params, labeled, unlabeled, test


def judge_accuracy(model, params, tok, examples) -> dict:
  """Greedy pairwise judgments of ``examples`` vs their verifier labels."""
  prompts = [batching.encode_prompt(tok, e["prompt"]) for e in examples]
  fmt = judging.PAIRWISE
  size = 128
  texts = []
  for c0 in range(0, len(prompts), size):
    chunk = prompts[c0:c0 + size]
    traj = sampler_lib.sample(model, params, chunk + [chunk[0]] * (size - len(chunk)),
                              rng=jax.random.key(c0), strategy=strategies.Greedy(), n=1,
                              max_new_tokens=2, stop_ids=(tok.eos_id,),
                              pad_id=tok.pad_id, batch_buckets=(size,))
    mask = np.asarray(traj.loss_mask, bool)
    toks = np.asarray(traj.tokens)
    texts += [tok.decode(toks[r][mask[r]].tolist()) for r in range(len(chunk))]
  scores = [fmt.parse(t)[0] for t in texts]
  want = {fmt.first: 1.0, fmt.second: 0.0, fmt.tie: 0.5}
  ok = [float(s == want[e["completion"]]) for s, e in zip(scores, examples)]
  return dict(accuracy=float(np.mean(ok)),
              parsed=float(np.mean([np.isfinite(s) for s in scores])))


def make_method(name: str):
  spec = RolloutSpec(n=_N.value, max_new_tokens=MAX_NEW, temperature=1.0)
  optim = OptimSpec(epochs=_EPOCHS.value, minibatches=_MINIBATCHES.value)
  kl = _KL.value
  if name == "grpo":
    return grpo(rollout=spec, optim=optim, kl_coef=kl)
  if name == "spo":
    return spo_lib.spo(rollout=spec, optim=optim, kl_coef=kl)
  if name == "spo_judge":
    return spo_lib.spo(rollout=spec, optim=optim, kl_coef=kl, preference="judge",
                       teach_judge=False)   # the bench's warm start taught it
  if name == "ppo":
    return ppo(rollout=spec, optim=optim, kl_coef=kl)
  if name == "self_motivated":
    return sm_lib.self_motivated(reward_fns=(rm.RewardModelScorer(),), rollout=spec,
                                 optim=optim, kl_coef=kl)
  raise ValueError(f"spo_bench: unknown row {name!r}; expected one of {ROWS}")


def _mean(history, key, sl):
  vals = [h[key] for h in history[sl] if key in h and np.isfinite(h[key])]
  return float(np.mean(vals)) if vals else float("nan")


def run_seed(seed: int) -> dict:
  t0 = time.perf_counter()
  tok, model, warm, labeled, unlabeled, test = warm_start(seed)
  ev = dict(model=model, tokenizer=tok, tasks=test, temperature=1.0,
            samples=_EVAL_SAMPLES.value, max_new_tokens=MAX_NEW, seed=seed + 7)
  before = rl_run.evaluate(params=warm, **ev)
  judge_ex = data_judging.pairwise_examples(test[:_JUDGE_TEST.value], judging.PAIRWISE,
                                            seed=seed + 1)
  judge0 = judge_accuracy(model, warm, tok, judge_ex)
  t_rm = time.perf_counter()
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as d:
    rm_model, rm_params, rm_info = rmr.build(
        rmr.RewardModelSpec(kind="bradley_terry", problems=_RM_PROBLEMS.value,
                            n=_RM_N.value, steps=_RM_STEPS.value),
        model=model, params=warm, tokenizer=tok, tasks=labeled,
        max_new_tokens=MAX_NEW, seed=seed, directory=os.path.join(d, "rm"))
  rm_info["seconds"] = time.perf_counter() - t_rm

  def rm_report(params):
    return rmr.heldout_report(rm_model=rm_model, rm_params=rm_params, model=model,
                              params=params, tokenizer=tok, tasks=test,
                              n=_EVAL_SAMPLES.value, max_new_tokens=MAX_NEW,
                              temperature=1.0, seed=seed)

  rm0 = rm_report(warm)
  print(f"[spo_bench] seed {seed}: warm {before} judge {judge0} rm {rm_info} {rm0}",
        flush=True)
  rows = []
  for name in _ROWS.value:
    method = make_method(name)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 warmup_steps=5, total_steps=_STEPS.value + 6,
                                 max_grad_norm=1.0)
    roles = {rm.ROLE: (rm_model, rm_params)} if name == "self_motivated" else {}
    t1 = time.perf_counter()
    trainer = loop.Loop(model=model, params=warm, method=method, tokenizer=tok,
                        tasks=unlabeled, optimizer=opt, prompts_per_step=_PROMPTS.value,
                        seed=seed, roles=roles, compiler_options=loop.FAST_COMPILE,
                        copy_params=True)
    try:
      trainer.run(_STEPS.value, log_every=max(1, _STEPS.value // 5))
      params = trainer.state.params
      after = rl_run.evaluate(params=params, **ev)
      h = trainer.history
      k = max(1, min(5, len(h) // 2))
      row = dict(method=name, after=after, seconds=time.perf_counter() - t1,
                 reward=(_mean(h, "reward/mean", slice(0, k)),
                         _mean(h, "reward/mean", slice(-k, None))),
                 sample_acc=(_mean(h, "label_free/sample_acc", slice(0, k)),
                             _mean(h, "label_free/sample_acc", slice(-k, None))),
                 judge=judge_accuracy(model, params, tok, judge_ex),
                 rm=rm_report(params))
    finally:
      trainer.close()
    print(f"[spo_bench] seed {seed} {row}", flush=True)
    rows.append(row)
  return dict(seed=seed, before=before, judge0=judge0, rm_info=rm_info, rm0=rm0,
              rows=rows, seconds=time.perf_counter() - t0)


def markdown(results: list, settings: str) -> str:
  ms = _warm_start.fmt_ms
  names = [r["method"] for r in results[0]["rows"]]
  lines = [settings, "", "mean ± std over seeds "
           f"{[r['seed'] for r in results]}:", "",
           "| row | greedy pass@1 | sampled pass@1 | train reward first → last |"
           " RL sample acc (verifier) first → last | held-out RM score | held-out"
           " RM pair acc | held-out verifier acc (RM samples) | policy-as-judge acc |",
           "|" + "---|" * 9]
  lines.append(
      f"| warm start | {ms([r['before']['greedy']['all'] for r in results])} |"
      f" {ms([r['before']['sampled']['all'] for r in results])} | – | – |"
      f" {ms([r['rm0']['rm_mean'] for r in results])} |"
      f" {ms([r['rm0']['rm_pair_accuracy'] for r in results])} |"
      f" {ms([r['rm0']['verifier_accuracy'] for r in results])} |"
      f" {ms([r['judge0']['accuracy'] for r in results])} |")
  for name in names:
    rows = [x for r in results for x in r["rows"] if x["method"] == name]
    sa = [x["sample_acc"] for x in rows]
    sa_txt = ("–" if any(not np.isfinite(a) for a, _ in sa) else
              f"{ms([a for a, _ in sa])} → {ms([b for _, b in sa])}")
    lines.append(
        f"| {name} | {ms([x['after']['greedy']['all'] for x in rows])} |"
        f" {ms([x['after']['sampled']['all'] for x in rows])} |"
        f" {ms([x['reward'][0] for x in rows])} → {ms([x['reward'][1] for x in rows])} |"
        f" {sa_txt} | {ms([x['rm']['rm_mean'] for x in rows])} |"
        f" {ms([x['rm']['rm_pair_accuracy'] for x in rows])} |"
        f" {ms([x['rm']['verifier_accuracy'] for x in rows])} |"
        f" {ms([x['judge']['accuracy'] for x in rows])} |")
  lines += ["", "Reward model (BT, on the warm start's verifier-ranked samples of the"
            " labelled problems): train pairs "
            f"{ms([r['rm_info']['train_items'] for r in results], '{:.0f}')}, their"
            f" samples' accuracy {ms([r['rm_info']['sample_accuracy'] for r in results])},"
            f" final loss {ms([r['rm_info']['final_loss'] for r in results])};"
            " seconds per seed:"
            f" {', '.join('%.0f' % r['seconds'] for r in results)}."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if _MERGE.value:
    results, settings = [], None
    for path in _MERGE.value:
      with open(path, encoding="utf-8") as f:
        got = json.load(f)
      results += got["results"]
      settings = settings or got["settings"]
  else:
    for name in _ROWS.value:
      if name not in ROWS:
        raise ValueError(f"--rows: unknown row {name!r}; expected of {ROWS}")
    load0 = os.getloadavg()
    results = [run_seed(int(s)) for s in _SEEDS.value]
    load1 = os.getloadavg()
    settings = (f"Held-out {DIGITS}-digit addition ({_N_TEST.value} problems) pass@1"
                f" (greedy; sampled = mean of {_EVAL_SAMPLES.value} at T=1); every row"
                f" from the same warm start, {_STEPS.value} RL iterations ×"
                f" {_PROMPTS.value} prompts × n={_N.value}, OptimSpec({_EPOCHS.value},"
                f" {_MINIBATCHES.value}), lr {_LR.value}, KL β {_KL.value}; SFT"
                f" {_SFT_STEPS.value} steps; RM {_RM_PROBLEMS.value}×{_RM_N.value}"
                f" samples, {_RM_STEPS.value} steps; load average {load0[0]:.1f} →"
                f" {load1[0]:.1f}.")
  text = markdown(results, settings)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  if not _MERGE.value:
    with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
      json.dump(dict(settings=settings, results=results), f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
