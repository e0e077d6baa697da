r"""SPOC bench: in-sequence self-verification, span rewards vs final-answer GRPO.

One command (CPU, tiny model, ≈12 min on 2 shared cores)::

  python experiments/spoc_bench.py --out=/tmp/spoc_bench.md

Set-up: reversed-digit addition (2–3 digit operands) in the format
``attempt [verdict] (revision [verdict])*`` with M = ``--max_attempts``
(``jaxsi.data.tasks.addition_self_verify``). Warm start = SFT on synthetic
traces of half of the training problems: most are ``answer[correct]``, a
fraction ``--p_wrong`` start with an injected wrong attempt, ``[wrong]`` and
the correct revision; the injected wrong attempts are masked out of the loss
(``jaxsi.data.spans.rejected_attempt_mask``). Then, from the same warm start,
seed and budget (steps × prompts × n samples, learning rate):

* ``spoc`` — ``jaxsi.methods.spoc``: per-span rewards (solution correctness,
  verdict correctness) and per-span group-normalised advantages, verdicts
  pooled by the truth of their attempt (``split_verdicts_by_truth``);
* ``spoc_role`` — the same with plain per-role pooling (all verdicts of a
  group in one pool);
* ``grpo`` — ``jaxsi.methods.grpo`` with the final-answer reward only
  (``Task.verify`` = last attempt correct), same clip/aggregation, no KL.

Reported on held-out problems, before and after RL, greedy decoding (and
temperature-1 sampling, 4 per problem): final-answer accuracy, first-attempt
accuracy, verdict accuracy (all emitted verdicts vs the truth of their
attempt), its two halves (TPR: "[correct]" on correct attempts, TNR: "[wrong]"
on wrong ones) and their mean (balanced: 0.5 for any constant verdict),
wrong→right and right→wrong rates (over all problems), revision rate. Writes markdown (``--out``) and JSON next to it.
"""

from __future__ import annotations

import importlib
import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.data import batching
from jaxsi.data import char_tokenizer
from jaxsi.data import spans as spans_lib
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import strategies
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib

# The package attribute ``jaxsi.methods.spoc`` is the factory; this is the module.
spoc_lib = importlib.import_module("jaxsi.methods.spoc")

_METHODS = flags.DEFINE_list(
    "methods", ["spoc", "spoc_role", "grpo"],
    "spoc (verdicts pooled by the truth of their attempt), spoc_role (plain "
    "per-role pooling), grpo (final-answer reward only).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed (tasks, init, sampling).")
_DIFFS = flags.DEFINE_list("difficulties", ["2", "3"], "Operand digits.")
_MAX_ATTEMPTS = flags.DEFINE_integer("max_attempts", 2, "M.")
_P_WRONG = flags.DEFINE_float("p_wrong", 0.3,
                              "Injected wrong first attempts in SFT traces.")
_REV_OPS = flags.DEFINE_bool(
    "reverse_operands", True, "Operands least-significant digit first too "
    "(digit k of both operands lines up with answer digit k).")
_N_TRAIN = flags.DEFINE_integer("n_train", 4000, "Train problems/difficulty.")
_N_TEST = flags.DEFINE_integer("n_test", 100, "Held-out problems/difficulty.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 800, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_STEPS = flags.DEFINE_integer("steps", 40, "RL iterations per method.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt.")
_LR = flags.DEFINE_float("lr", 2e-4, "RL learning rate (Adam).")
_RL_POOL = flags.DEFINE_integer("rl_pool", 256, "Unlabelled RL problems.")
_EVAL_N = flags.DEFINE_integer("eval_n", 4, "Samples/problem (T=1) in eval.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/spoc_bench.md", "Markdown output.")

_ALL_FLAGS = (_METHODS, _SEED, _DIFFS, _MAX_ATTEMPTS, _P_WRONG, _REV_OPS,
              _N_TRAIN,
              _N_TEST, _SFT_STEPS, _SFT_LR, _STEPS, _PROMPTS, _N, _LR,
              _RL_POOL, _EVAL_N, _D_MODEL, _LAYERS)

STAT_KEYS = ("final_acc", "first_acc", "verdict_acc", "verdict_tpr",
             "verdict_tnr", "verdict_balanced", "wrong_to_right",
             "right_to_wrong", "revised")


def build_model(tok, *, d_model: int, layers: int, seed: int):
  """The 'tiny' preset narrowed to d_model/layers (as experiments/bench.py)."""
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d_model,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d_model // 4, d_ff=4 * d_model)
  return mmodel.init(cfg, jax.random.key(seed))


def warm_start(*, model, params, tok, tasks, fmt, steps: int, lr: float,
               seed: int):
  """SFT on the synthetic traces; injected wrong attempts are not trained on."""
  prompts = [t.prompt for t in tasks]
  targets = [t.target for t in tasks]
  max_len = max(len(p) + len(c) for p, c in zip(prompts, targets)) + 2
  arrays = batching.sft_arrays(tok, prompts, targets, max_len=max_len)
  masked = 0
  for i in range(len(tasks)):
    pos = np.flatnonzero(arrays["loss_mask"][i])
    rej = spans_lib.rejected_attempt_mask(
        tok, arrays["tokens"][i, pos].tolist(), fmt)
    arrays["loss_mask"][i, pos[rej]] = False
    masked += int(rej.sum())
  opt = fit_lib.OptimizerSpec(learning_rate=lr, schedule="cosine",
                              warmup_steps=min(20, steps // 4), total_steps=steps)
  res = fit_lib.fit(model=model, params=params, objective=fit_lib.sft(),
                    data=fit_lib.FitData.sft(arrays), optimizer=opt, steps=steps,
                    batch_size=min(64, len(prompts)), seed=seed, log_every=100,
                    desc="warm-start")
  return res.params, masked


def evaluate(*, model, params, tok, tasks, fmt, max_new: int, seed: int
             ) -> dict:
  """Self-verification stats, greedy and sampled (T=1, eval_n per problem)."""
  out = {}
  for name, strategy, n in (("greedy", strategies.Greedy(), 1),
                            ("sampled", strategies.Sampling(temperature=1.0),
                             _EVAL_N.value)):
    ro = evaluate_lib.rollout(model=model, params=params, tokenizer=tok, tasks=tasks,
                              rng=jax.random.key(seed + 17), strategy=strategy, n=n,
                              max_new_tokens=max_new, batch_size=256)
    rep = [t for t in tasks for _ in range(n)]
    out[name] = spoc_lib.self_verification_stats(rep, ro.texts, fmt)
    if name == "greedy":
      out["examples"] = [(t.prompt, c) for t, c in zip(tasks[:6], ro.texts)]
  return out


def make_method(name: str, *, tok, fmt, max_new: int):
  common = dict(rollout=RolloutSpec(n=_N.value, max_new_tokens=max_new),
                kl_coef=0.0,
                eps_low=0.2, eps_high=0.2, agg="seq-mean-token-mean")
  if name in ("spoc", "spoc_role"):
    return spoc_lib.spoc(tokenizer=tok, correct=fmt.correct, wrong=fmt.wrong,
                         max_attempts=fmt.max_attempts,
                         split_verdicts_by_truth=name == "spoc", name=name,
                         **common)
  if name == "grpo":
    return methods_lib.grpo(reward_fns=(reward_lib.correctness_reward,),
                            **common)
  raise ValueError(f"unknown method {name!r}")


def run() -> dict:
  seed = _SEED.value
  diffs = [int(d) for d in _DIFFS.value]
  fmt = spans_lib.VerdictFormat(max_attempts=_MAX_ATTEMPTS.value)
  # M attempts of ≤ (max digits + 1) characters, each with the longer marker.
  max_new = fmt.max_attempts * (max(diffs) + 1 + max(
      len(fmt.correct), len(fmt.wrong))) + 1
  tok = char_tokenizer.CharTokenizer()
  fmt_kw = dict(max_attempts=fmt.max_attempts, p_wrong=_P_WRONG.value,
                reverse_operands=_REV_OPS.value)
  train, test = [], []
  for d in diffs:
    tr, te = tasks_lib.make_train_test(
        "addition_self_verify", n_train=_N_TRAIN.value, n_test=_N_TEST.value,
        difficulty=d, seed=seed, **fmt_kw)
    train += tr
    test += te
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train))
  labelled = [train[i] for i in order[:len(train) // 2]]
  rl_tasks = [train[i] for i in order[len(train) // 2:]][:_RL_POOL.value]
  model, init = build_model(tok, d_model=_D_MODEL.value, layers=_LAYERS.value,
                            seed=seed)
  t0 = time.perf_counter()
  warm, masked = warm_start(model=model, params=init, tok=tok, tasks=labelled,
                            fmt=fmt, steps=_SFT_STEPS.value, lr=_SFT_LR.value,
                            seed=seed)
  sft_s = time.perf_counter() - t0
  print(f"[spoc_bench] warm start {sft_s:.0f}s ({masked} injected-attempt "
        "tokens masked)", flush=True)
  before = evaluate(model=model, params=warm, tok=tok, tasks=test, fmt=fmt,
                    max_new=max_new, seed=seed)
  print(f"[spoc_bench] before: {before['greedy']}", flush=True)
  results = {"config": {h.name: h.value for h in _ALL_FLAGS},
             "max_new_tokens": max_new, "sft_seconds": sft_s,
             "sft_injected_frac": float(np.mean([t.meta["injected_wrong"] > 0
                                                 for t in labelled])),
             "before": before, "methods": {}}
  for name in _METHODS.value:
    method = make_method(name, tok=tok, fmt=fmt, max_new=max_new)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 max_grad_norm=1.0)
    t0 = time.perf_counter()
    trainer = loop.Loop(model=model, params=warm, method=method,
                           tokenizer=tok, tasks=rl_tasks, optimizer=opt,
                           prompts_per_step=_PROMPTS.value, seed=seed,
                           compiler_options=loop.FAST_COMPILE)
    history = trainer.run(_STEPS.value, log_every=10)
    seconds = time.perf_counter() - t0
    after = evaluate(model=model, params=trainer.state.params, tok=tok,
                     tasks=test, fmt=fmt, max_new=max_new, seed=seed)
    train_final = [h.get("reward/correct/mean", h.get("reward/mean"))
                   for h in history]
    results["methods"][name] = {
        "after": after, "seconds": seconds,
        "rollout_tokens": int(sum(h["rollout_tokens_per_s"] * h["time/rollout_s"]
                                  for h in history)),
        "history": [{k: v for k, v in h.items()
                     if k.startswith(("reward/", "transform/span", "loss",
                                      "completion_length/mean",
                                      "transform/filter"))}
                    for h in history],
        "train_reward_first_last": (train_final[0], train_final[-1]),
    }
    print(f"[spoc_bench] {name} after ({seconds:.0f}s): {after['greedy']}",
          flush=True)
  return results


def markdown(res: dict) -> str:
  head = ["decoding", "model"] + list(STAT_KEYS)
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for dec in ("greedy", "sampled"):
    rows = [("warm start (before RL)", res["before"][dec])]
    rows += [(f"{m} (after RL)", r["after"][dec])
             for m, r in res["methods"].items()]
    for label, st in rows:
      lines.append("| " + " | ".join(
          [dec, label] + [f"{st[k]:.3f}" for k in STAT_KEYS]) + " |")
  lines.append("")
  lines.append(f"max_new_tokens={res['max_new_tokens']}, warm start "
               f"{res['sft_seconds']:.0f}s; per method: " + ", ".join(
                   f"{m} {r['seconds']:.0f}s / {r['rollout_tokens']:,} rollout "
                   "tokens" for m, r in res["methods"].items()))
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  t0 = time.perf_counter()
  res = run()
  res["total_seconds"] = time.perf_counter() - t0
  table = markdown(res)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(table)
  with open(os.path.splitext(_OUT.value)[0] + ".json", "w",
            encoding="utf-8") as f:
    json.dump(res, f, indent=1, default=str)
  print(table)
  print(f"[spoc_bench] total {res['total_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
  app.run(main)
