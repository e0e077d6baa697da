r"""Bench: label-free RL (TTRL, SRT, Co-Reward) vs GRPO with labels vs the warm start.

Per seed: one tiny decoder, one SFT warm start on the labelled half of
2-digit addition (answers least-significant digit first,
``_warm_start.addition_warm_start``), then RL on the unlabelled half with
each method from that same warm start:

* ``grpo``      — the verifier's reward (uses the labels: the upper reference);
* ``ttrl``      — agreement with the group's majority answer, vote over n,
                  train on n/2 (no labels; Zuo et al. 2025, arXiv:2504.16084);
* ``ttrl_kl``   — TTRL plus β·KL(π ‖ warm start), β = ``--guard_kl_coef``
                  (the guard against collapse);
* ``srt``       — the same reward, every sample trained, RLOO baseline
                  (Shafayat et al. 2025, arXiv:2505.21444);
* ``co_reward`` — agreement with the majority answer of the rephrased problem
                  (b+a for a+b; Zhang et al. 2025, arXiv:2508.00410). With
                  ``--equal_samples`` (default) it draws n/2 per phrasing, so
                  every method spends n samples per problem.

Every method runs ``--steps`` iterations × ``--prompts`` prompts; every
``--eval_every`` iterations the held-out greedy and sampled pass@1 are
measured, so a curve (accuracy, training agreement) comes out per run.

**Collapse criterion** (:func:`collapse_step`): the first evaluation t whose
greedy accuracy is more than 2 standard errors below the running maximum,
acc_t < max_{s<t} acc_s − 2·sqrt(p(1−p)/n_test) with p the maximum, while the
mean training agreement since the maximum exceeds the agreement at the
maximum (agreement rising while accuracy falls). ``None``: no collapse
within the budget.

It writes a per-seed table and a mean ± std table over ``--seeds`` (ddof 1)
to ``--out`` (with ``.json`` next to it: every curve).

Command::

  python experiments/label_free_bench.py --seeds=0,1,2 --steps=60 \
      --eval_every=10 --out=/tmp/label_free.md

Numbers from a loaded machine are not results: the file records ``uptime``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.methods import majority_vote
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl_run

import _warm_start  # pylint: disable=g-bad-import-order  (sibling module)

METHODS = ("grpo", "ttrl", "ttrl_kl", "srt", "co_reward")

_METHODS = flags.DEFINE_list("methods", ["grpo", "ttrl", "srt", "co_reward"],
                             f"Methods to compare (each from the warm start), of {METHODS}.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data / model / RL), run in turn.")
_STEPS = flags.DEFINE_integer("steps", 40, "RL iterations per method.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Held-out evaluation every this"
                                   " many iterations (0: only at the end).")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt (TTRL: votes).")
_EQUAL = flags.DEFINE_bool("equal_samples", True, "Co-Reward draws n/2 per phrasing"
                           " (n samples per problem, as the others).")
_GUARD_KL = flags.DEFINE_float("guard_kl_coef", 0.1, "β of ttrl_kl.")
_LR = flags.DEFINE_float("lr", 3e-4, "RL learning rate.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_EVAL_SAMPLES = flags.DEFINE_integer("eval_samples", 4, "Samples per held-out problem.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/label_free_bench.md", "Markdown output.")

DIGITS = 2
MAX_NEW = DIGITS + 2        # answer digits (+ carry) + EOS


def make_method(name: str, *, n: int, equal_samples: bool = True,
                guard_kl_coef: float = 0.1):
  """The bench's method ``name`` with n samples per problem."""
  spec = RolloutSpec(n=n, max_new_tokens=MAX_NEW, temperature=1.0)
  if name == "ttrl":
    return majority_vote.ttrl(rollout=spec)
  if name == "ttrl_kl":
    if guard_kl_coef <= 0:
      raise ValueError(f"label_free_bench: guard_kl_coef must be > 0 for"
                       f" ttrl_kl, got {guard_kl_coef}")
    return majority_vote.ttrl(rollout=spec, kl_coef=guard_kl_coef, name="ttrl_kl")
  if name == "srt":
    return majority_vote.srt(rollout=spec)
  if name == "co_reward":
    if equal_samples:
      if n % 2:
        raise ValueError(f"label_free_bench: --n must be even for Co-Reward with"
                         f" --equal_samples (n/2 per phrasing), got {n}")
      spec = RolloutSpec(n=n // 2, max_new_tokens=MAX_NEW, temperature=1.0)
    return majority_vote.co_reward(rollout=spec)
  if name not in METHODS:
    raise ValueError(f"label_free_bench: unknown method {name!r}; expected one"
                     f" of {METHODS}")
  return methods_lib.get_method(name, rollout=spec)


def collapse_step(curve: Sequence[dict], n_test: int) -> Optional[int]:
  """First iteration whose accuracy fell > 2 SE below the running max while
  agreement rose (see the module docstring); ``None`` if none.

  Args:
    curve: evaluations in order, each ``{"iteration", "greedy",
      "agreement"}`` (``agreement``: mean training agreement of the
      iterations since the previous evaluation; ``None`` at iteration 0).
    n_test: held-out problems (the SE's denominator).
  """
  if n_test < 1:
    raise ValueError(f"collapse_step: n_test must be >= 1, got {n_test}")
  best, best_agree = -1.0, None
  for point in curve:
    acc, agree = point["greedy"], point.get("agreement")
    if best >= 0.0:
      se = math.sqrt(best * (1.0 - best) / n_test)
      rising = (agree is not None and best_agree is not None and agree > best_agree)
      if acc < best - 2.0 * se and rising:
        return int(point["iteration"])
    if acc > best:
      best, best_agree = acc, agree
  return None


def _mean(history, key, sl):
  vals = [h[key] for h in history[sl] if key in h]
  return float(np.mean(vals)) if vals else None


def _arrow(a, b, fmt="{:.3f}"):
  if a is None or b is None:
    return "–"
  return f"{fmt.format(a)} → {fmt.format(b)}"


def run_method(name, ws, *, seed, ev):
  """Trains ``name`` from the warm start; the row with its eval curve."""
  method = make_method(name, n=_N.value, equal_samples=_EQUAL.value,
                       guard_kl_coef=_GUARD_KL.value)
  opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                               warmup_steps=5, total_steps=_STEPS.value + 6,
                               max_grad_norm=1.0)
  t0 = time.perf_counter()
  trainer = loop.Loop(model=ws.model, params=ws.params, method=method,
                      tokenizer=ws.tokenizer, tasks=ws.unlabeled, optimizer=opt,
                      prompts_per_step=_PROMPTS.value, seed=seed,
                      compiler_options=loop.FAST_COMPILE)
  every = _EVAL_EVERY.value if _EVAL_EVERY.value > 0 else _STEPS.value
  stops = list(range(every, _STEPS.value, every)) + [_STEPS.value]
  curve, after = [], None
  for stop in stops:
    first = len(trainer.history)
    trainer.run(stop, log_every=max(1, _STEPS.value // 5))
    after = rl_run.evaluate(params=trainer.state.params, **ev)
    curve.append(dict(
        iteration=stop, greedy=after["greedy"]["all"],
        sampled=after["sampled"]["all"],
        agreement=_mean(trainer.history, "label_free/agreement", slice(first, None)),
        sample_acc=_mean(trainer.history, "label_free/sample_acc", slice(first, None)),
        reward=_mean(trainer.history, "reward/mean", slice(first, None))))
  history = trainer.history
  k = max(1, min(5, len(history) // 2))
  return dict(
      method=name, seed=seed, after=after, curve=curve,
      agreement0=history[0].get("label_free/agreement"),
      seconds=time.perf_counter() - t0,
      reward=(_mean(history, "reward/mean", slice(0, k)),
              _mean(history, "reward/mean", slice(-k, None))),
      pseudo=(_mean(history, "label_free/pseudo_label_acc", slice(0, k)),
              _mean(history, "label_free/pseudo_label_acc", slice(-k, None))),
      agreement=(_mean(history, "label_free/agreement", slice(0, k)),
                 _mean(history, "label_free/agreement", slice(-k, None))),
      sample_acc=(_mean(history, "label_free/sample_acc", slice(0, k)),
                  _mean(history, "label_free/sample_acc", slice(-k, None))))


def seed_table(before, rows) -> list:
  lines = ["| method | labels | greedy pass@1 | sampled pass@1 | train reward |"
           " pseudo-label acc | agreement | train sample acc | peak greedy (iter) |"
           " collapse iter | wall s |", "|" + "---|" * 11]
  g, s = before["greedy"]["all"], before["sampled"]["all"]
  lines.append(f"| warm start | SFT | {g:.3f} | {s:.3f} | – | – | – | – | – | – | – |")
  for r in rows:
    a = r["after"]
    peak = max(r["curve"], key=lambda p: p["greedy"])
    lines.append(
        f"| {r['method']} | {'yes' if r['method'] == 'grpo' else 'no'} |"
        f" {_arrow(g, a['greedy']['all'])} | {_arrow(s, a['sampled']['all'])} |"
        f" {_arrow(*r['reward'])} | {_arrow(*r['pseudo'])} |"
        f" {_arrow(*r['agreement'])} | {_arrow(*r['sample_acc'])} |"
        f" {peak['greedy']:.3f} ({peak['iteration']}) | {r['collapse']} |"
        f" {r['seconds']:.0f} |")
  return lines


def summary_table(results) -> list:
  """mean ± std over seeds of the end point and of the change vs warm start."""
  ms = _warm_start.fmt_ms
  lines = ["| method | greedy pass@1 | Δ greedy vs warm | sampled pass@1 |"
           " Δ sampled vs warm | agreement (last) | collapse iter per seed |",
           "|" + "---|" * 7]
  warm_g = [r["before"]["greedy"]["all"] for r in results]
  warm_s = [r["before"]["sampled"]["all"] for r in results]
  lines.append(f"| warm start | {ms(warm_g)} | – | {ms(warm_s)} | – | – | – |")
  for name in _METHODS.value:
    rows = [row for r in results for row in r["rows"] if row["method"] == name]
    g = [row["after"]["greedy"]["all"] for row in rows]
    s = [row["after"]["sampled"]["all"] for row in rows]
    ag = [row["agreement"][1] for row in rows if row["agreement"][1] is not None]
    lines.append(
        f"| {name} | {ms(g)} | {ms([a - b for a, b in zip(g, warm_g)])} |"
        f" {ms(s)} | {ms([a - b for a, b in zip(s, warm_s)])} |"
        f" {ms(ag) if ag else '–'} |"
        f" {', '.join(str(row['collapse']) for row in rows)} |")
  return lines


def main(argv):
  del argv
  for name in _METHODS.value:
    if name not in METHODS:
      raise ValueError(f"--methods: unknown method {name!r}; expected of {METHODS}")
  load0 = os.getloadavg()
  results = []
  for seed in [int(s) for s in _SEEDS.value]:
    ws = _warm_start.addition_warm_start(
        seed=seed, digits=(DIGITS,), n_train=_N_TRAIN.value, n_test=_N_TEST.value,
        sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value, d_model=_D_MODEL.value,
        layers=_LAYERS.value)
    ev = dict(model=ws.model, tokenizer=ws.tokenizer, tasks=ws.test,
              temperature=1.0, samples=_EVAL_SAMPLES.value,
              max_new_tokens=MAX_NEW, seed=seed + 7)
    before = rl_run.evaluate(params=ws.params, **ev)
    print(f"[bench] seed {seed} warm start ({ws.seconds:.0f}s): {before}", flush=True)
    rows = []
    for name in _METHODS.value:
      row = run_method(name, ws, seed=seed, ev=ev)
      # The warm start's agreement: that of the first iteration's rollouts
      # (drawn before any update).
      row["curve"].insert(0, dict(iteration=0, greedy=before["greedy"]["all"],
                                  sampled=before["sampled"]["all"],
                                  agreement=row.pop("agreement0")))
      row["collapse"] = collapse_step(row["curve"], len(ws.test))
      print(f"[bench] {row}", flush=True)
      rows.append(row)
    results.append(dict(seed=seed, before=before, rows=rows))
  load1 = os.getloadavg()
  lines = [f"Held-out {DIGITS}-digit addition ({_N_TEST.value} problems) pass@1"
           f" (greedy; sampled = mean of {_EVAL_SAMPLES.value} at T=1),"
           f" {_STEPS.value} RL iterations × {_PROMPTS.value} prompts × n={_N.value}"
           f" samples per problem{' (co_reward: n/2 per phrasing)' if _EQUAL.value else ''},"
           f" lr {_LR.value}, eval every {_EVAL_EVERY.value or _STEPS.value};"
           f" seeds {','.join(_SEEDS.value)}; load average"
           f" {load0[0]:.2f} → {load1[0]:.2f}.", ""]
  lines += ["mean ± std over seeds:", ""] + summary_table(results) + [""]
  for r in results:
    lines += [f"seed {r['seed']}:", ""] + seed_table(r["before"], r["rows"]) + [""]
  text = "\n".join(lines) + "\n"
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
  app.run(main)
