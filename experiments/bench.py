r"""Bench: RL methods on addition from one shared SFT warm start (CPU-sized).

Two settings share one model, one warm start and one data split
(``jaxsi.training.rl_run.split_tasks``; 2- and 3-digit addition, answers
least-significant digit first):

* **main** (GRPO, PPO, DAPO): RL on unlabelled 2-digit problems, where the
  warm start is partly right (greedy ≈ 0.73, sampled ≈ 0.55 on held-out
  problems), so there is headroom. Reports held-out pass@1 (greedy and
  sampled at the training temperature) before → after, the training reward
  (first 10 → last 10 iterations), DAPO's effective batch and its
  generation-batch cost, PPO's value loss (first 10 → last 10), several RL
  seeds for GRPO (same warm start).
* **hard** (GRPO vs Guide): RL on unlabelled 3-digit problems, which the warm
  start never saw solved (greedy 0, nearly every group all-fail). Reports the
  fraction of the RL prompts with **no** correct unguided sample over the
  whole run, and the fraction with pass@k = 0 at the end (plain prompts).

The warm start is SFT on the labelled 2-digit problems plus hint-copy
examples (``prompt + "(" + target + ")" → target``) of a quarter of the
labelled problems of both difficulties, so Guide's hint-conditioned resamples can
succeed; every method starts from it.

Command (the run in docs/rl.md)::

  python experiments/bench.py --out=/tmp/bench_rl.md

The result is a markdown report (``--out``) plus a JSON file next to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import rollouts
from jaxsi.sampling import strategies
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl_run

_METHODS = flags.DEFINE_list("methods", ["grpo", "ppo", "dapo"],
                             "Methods of the main (2-digit) setting.")
_GRPO_SEEDS = flags.DEFINE_list("grpo_seeds", ["0", "1"],
                                "RL seeds of GRPO in the main setting (others "
                                "run the first one).")
_HARD_METHODS = flags.DEFINE_list(
    "hard_methods", ["grpo", "guide_plain", "guide"],
    "Methods of the hard (3-digit) setting; 'guide_plain' = Guide with "
    "importance='plain'.")
_STEPS = flags.DEFINE_integer("steps", 100, "RL iterations (main).")
_HARD_STEPS = flags.DEFINE_integer("hard_steps", 50, "RL iterations (hard).")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt (PPO: n/2 samples of "
                          "2x the prompts, same sample budget).")
_LR = flags.DEFINE_float("lr", 3e-4, "RL learning rate (AdamW, constant).")
_WARMUP = flags.DEFINE_integer("warmup", 10, "RL learning-rate warmup steps.")
_DAPO_GEN = flags.DEFINE_integer("dapo_max_gen_batches", 6,
                                 "DAPO generation batches per step at most.")
_HARD_POOL = flags.DEFINE_integer("hard_pool", 128,
                                  "3-digit RL prompts of the hard setting.")
_N_TRAIN = flags.DEFINE_integer("n_train", 6000,
                                "Training problems (2- and 3-digit, half "
                                "labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 512, "Held-out problems (both levels).")
_EVAL_SAMPLES = flags.DEFINE_integer("eval_samples", 4,
                                     "Sampled completions per held-out problem.")
_PASS_K = flags.DEFINE_integer("pass_k", 8, "k of the unsolved statistic.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 450, "Warm-start SFT steps.")
_HINT_EVERY = flags.DEFINE_integer(
    "hint_every", 4, "Every k-th labelled problem (both levels) is also a "
    "hint-copy SFT example.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_SEED = flags.DEFINE_integer("seed", 0, "Data / model / warm-start seed.")
_OUT = flags.DEFINE_string("out", "/tmp/jaxsi_bench.md", "Markdown output.")
_FAST = flags.DEFINE_bool("fast_compile", True,
                          "Cheaper XLA compilation (loop.FAST_COMPILE).")

EASY, HARD = 2, 3
MAX_NEW = HARD + 2          # answer digits (+ carry) + EOS
HINT_OPEN, HINT_CLOSE = "(", ")"


def hint_answer(task) -> str:
  """Guide's hint for the bench: the target completion in parentheses."""
  return f"{HINT_OPEN}{task.target}{HINT_CLOSE}"


def build_model(tok, *, d_model: int, layers: int, seed: int):
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d_model,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d_model // 4, d_ff=4 * d_model,
                        value_head=True)
  return mmodel.init(cfg, jax.random.key(seed))


def make_method(name: str, *, n: int):
  # PPO needs no groups: half the group size (and twice the prompts, set by
  # the caller) keeps the same sample budget.
  k = max(2, n // 2) if name == "ppo" else n
  kw = dict(rollout=RolloutSpec(n=k, max_new_tokens=MAX_NEW),
            reward_fns=(reward_lib.correctness_reward,))
  if name in ("guide", "guide_plain"):
    kw["hint_fn"] = hint_answer
  if name == "guide_plain":  # ExPO / STaR-rationalisation style ratio
    return methods_lib.guide(importance="plain", name=name, **kw)
  if name == "dapo":
    kw["overlong_buffer"] = None  # completions are short; no length shaping
    kw["max_gen_batches"] = _DAPO_GEN.value
  return methods_lib.get_method(name, **kw)


def unsolved(*, model, params, tok, tasks, k: int, seed: int) -> float:
  """Fraction of ``tasks`` with no correct answer among k samples (T = 1)."""
  ro = evaluate_lib.rollout(model=model, params=params, tokenizer=tok, tasks=tasks,
                            rng=jax.random.key(seed), n=k, max_new_tokens=MAX_NEW,
                            strategy=strategies.Sampling(temperature=1.0),
                            batch_size=256 // k * k)
  c = np.asarray(ro.correct).reshape(len(tasks), k)
  return float((c.sum(axis=1) == 0).mean())


@dataclasses.dataclass
class Row:
  setting: str
  method: str
  seed: int
  before: dict
  after: dict
  reward_first: float
  reward_last: float
  effective_batch: float
  gen_batches: float
  frac_zero_var: float
  vf_first: Optional[float]
  vf_last: Optional[float]
  never_solved: Optional[float] = None
  unsolved_before: Optional[float] = None
  unsolved_after: Optional[float] = None
  guide_groups: Optional[float] = None
  rollout_tokens: int = 0
  update_tokens: int = 0
  seconds: float = 0.0


def _mean(history, key, sl):
  vals = [h[key] for h in history[sl] if key in h]
  return float(np.mean(vals)) if vals else None


def run_method(name: str, seed: int, *, setting: str, model, warm, tok, pool,
               test, steps: int, hard_tasks=None) -> Row:
  method = make_method(name, n=_N.value)
  opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                               warmup_steps=_WARMUP.value,
                               total_steps=steps + _WARMUP.value + 1,
                               max_grad_norm=1.0)
  prompts = _PROMPTS.value * _N.value // method.n
  ev = dict(model=model, tokenizer=tok, tasks=test, temperature=1.0,
            samples=_EVAL_SAMPLES.value, max_new_tokens=MAX_NEW,
            seed=_SEED.value + 7)
  t0 = time.perf_counter()
  trainer = loop.Loop(
      model=model, params=warm, method=method, tokenizer=tok, tasks=pool,
      optimizer=opt, prompts_per_step=prompts, seed=seed,
      compiler_options=loop.FAST_COMPILE if _FAST.value else None)
  solved = np.zeros(len(pool), bool)

  def track(iteration, metrics):
    del iteration, metrics
    b = trainer.last_batch
    ok = np.asarray(b.traj.valid, bool) & (np.nan_to_num(
        rollouts.total_reward(b.rewards), nan=0.0) > 0)  # pylint: disable=protected-access
    guided = b.traj.extras.get("guided")
    if guided is not None:
      ok &= ~np.asarray(guided, bool)
    solved[b.task_index[ok]] = True

  history = trainer.run(steps, log_every=max(1, steps // 5), callback=track)
  seconds = time.perf_counter() - t0
  after = rl_run.evaluate(params=trainer.state.params, **ev)
  row = Row(
      setting=setting, method=name, seed=seed, before={}, after=after,
      reward_first=_mean(history, "reward/mean", slice(0, 10)),
      reward_last=_mean(history, "reward/mean", slice(-10, None)),
      effective_batch=_mean(history, "effective_batch_frac", slice(None)),
      gen_batches=_mean(history, "gen_batches", slice(None)),
      frac_zero_var=_mean(history, "frac_zero_variance_groups", slice(None)),
      vf_first=_mean(history, "vf/loss", slice(0, 10)),
      vf_last=_mean(history, "vf/loss", slice(-10, None)),
      rollout_tokens=int(sum(h["rollout_tokens_per_s"] * h["time/rollout_s"]
                             for h in history)),
      update_tokens=int(sum(h["update_tokens_per_s"] * h["time/update_s"]
                            for h in history)),
      seconds=seconds)
  if hard_tasks is not None:
    row.never_solved = float(1.0 - solved.mean())
    row.unsolved_after = unsolved(model=model, params=trainer.state.params,
                                  tok=tok, tasks=hard_tasks, k=_PASS_K.value,
                                  seed=_SEED.value + 3)
    row.guide_groups = _mean(history, "guide/groups", slice(None))
  print(f"[bench] {row}", flush=True)
  return row


def _pair(before: dict, after: dict, kind: str, level: str) -> str:
  return f"{before[kind][level]:.3f} → {after[kind][level]:.3f}"


def _opt(x, fmt="{:.2f}"):
  return "–" if x is None else fmt.format(x)


def markdown(main: Sequence[Row], hard: Sequence[Row], before: dict,
             unsolved_before: float) -> str:
  e, h = str(EASY), str(HARD)
  lines = [
      "Main setting: RL on unlabelled 2-digit problems; held-out 2-digit "
      f"pass@1 (greedy; sampled = mean of {_EVAL_SAMPLES.value} samples at "
      "T=1).", "",
      "| method | RL seed | greedy pass@1 | sampled pass@1 | train reward "
      "first10→last10 | frac zero-var groups | effective batch | gen "
      "batches/step | value loss first10→last10 | rollout tokens | update "
      "tokens | wall s |",
      "|" + "---|" * 12]
  for r in main:
    vf = ("–" if r.vf_first is None
          else f"{r.vf_first:.4f} → {r.vf_last:.4f}")
    lines.append(
        f"| {r.method} | {r.seed} | {_pair(before, r.after, 'greedy', e)} | "
        f"{_pair(before, r.after, 'sampled', e)} | {r.reward_first:.3f} → "
        f"{r.reward_last:.3f} | {r.frac_zero_var:.2f} | "
        f"{r.effective_batch:.2f} | {r.gen_batches:.2f} | {vf} | "
        f"{r.rollout_tokens:,} | {r.update_tokens:,} | {r.seconds:.0f} |")
  lines += [
      "", f"Hard setting: RL on {_HARD_POOL.value} unlabelled 3-digit "
      "problems (warm start never saw a 3-digit answer except inside a hint).",
      "",
      "| method | RL prompts never solved during RL (unguided samples) | "
      f"RL prompts unsolved (pass@{_PASS_K.value}=0, plain prompt) before→after"
      " | guided groups/step | held-out 3-digit greedy | held-out 3-digit "
      "sampled | train reward first10→last10 | wall s |",
      "|" + "---|" * 8]
  for r in hard:
    lines.append(
        f"| {r.method} | {r.never_solved:.2f} | {unsolved_before:.2f} → "
        f"{r.unsolved_after:.2f} | {_opt(r.guide_groups, '{:.1f}')} | "
        f"{_pair(before, r.after, 'greedy', h)} | "
        f"{_pair(before, r.after, 'sampled', h)} | {r.reward_first:.3f} → "
        f"{r.reward_last:.3f} | {r.seconds:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  t_all = time.perf_counter()
  seed = _SEED.value
  tok = char_tokenizer.CharTokenizer()
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[EASY, HARD], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, labeled_fraction=0.5, seed=seed,
      task_format={"reverse": True})
  sft = [t for t in labeled if t.difficulty <= EASY]
  hinted = labeled[::_HINT_EVERY.value]
  prompts = [t.prompt for t in sft] + [t.prompt + hint_answer(t) for t in hinted]
  targets = [t.target for t in sft] + [t.target for t in hinted]
  easy_pool = [t for t in unlabeled if t.difficulty == EASY]
  hard_pool = [t for t in unlabeled if t.difficulty == HARD][:_HARD_POOL.value]
  model, init = build_model(tok, d_model=_D_MODEL.value, layers=_LAYERS.value,
                            seed=seed)
  print(f"[bench] {mmodel.count_params(init):,} params; SFT {len(prompts)} "
        f"examples ({len(sft)} 2-digit + {len(hinted)} hint-copy); RL pools "
        f"{len(easy_pool)} (2-digit) / {len(hard_pool)} (3-digit); test "
        f"{len(test)}", flush=True)
  t0 = time.perf_counter()
  warm = rl_run.supervised(model=model, params=init, tokenizer=tok,
                           prompts=prompts, targets=targets,
                           steps=_SFT_STEPS.value, learning_rate=_SFT_LR.value,
                           seed=seed)
  print(f"[bench] warm start {time.perf_counter() - t0:.0f}s", flush=True)
  before = rl_run.evaluate(model=model, params=warm, tokenizer=tok, tasks=test,
                           temperature=1.0, samples=_EVAL_SAMPLES.value,
                           max_new_tokens=MAX_NEW, seed=seed + 7)
  unsolved_before = unsolved(model=model, params=warm, tok=tok,
                             tasks=hard_pool, k=_PASS_K.value, seed=seed + 3)
  print(f"[bench] before: {before}; hard unsolved {unsolved_before:.2f}",
        flush=True)
  common = dict(model=model, warm=warm, tok=tok, test=test)
  main_rows = []
  for name in _METHODS.value:
    seeds = ([int(s) for s in _GRPO_SEEDS.value] if name == "grpo"
             else [int(_GRPO_SEEDS.value[0])])
    for s in seeds:
      main_rows.append(run_method(name, s, setting="main", pool=easy_pool,
                                  steps=_STEPS.value, **common))
  hard_rows = [run_method(name, int(_GRPO_SEEDS.value[0]), setting="hard",
                          pool=hard_pool, steps=_HARD_STEPS.value,
                          hard_tasks=hard_pool, **common)
               for name in _HARD_METHODS.value]
  for r in hard_rows:
    r.unsolved_before = unsolved_before
  report = markdown(main_rows, hard_rows, before, unsolved_before)
  report += f"\nTotal wall time {time.perf_counter() - t_all:.0f} s.\n"
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(report)
  with open(os.path.splitext(_OUT.value)[0] + ".json", "w",
            encoding="utf-8") as f:
    json.dump({"before": before, "unsolved_before": unsolved_before,
               "rows": [dataclasses.asdict(r) for r in main_rows + hard_rows]},
              f, indent=1)
  print(report)


if __name__ == "__main__":
  app.run(main)
