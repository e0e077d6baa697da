r"""Bench: label-free RL (TTRL, SRT, Co-Reward) vs GRPO with labels vs the warm start.

One tiny decoder, one SFT warm start on the labelled half of 2-digit addition
(answers least-significant digit first, ``rl_run.split_tasks``), then RL on
the unlabelled half with each method from that same warm start:

* ``grpo``      — the verifier's reward (uses the labels: the upper reference);
* ``ttrl``      — agreement with the group's majority answer, vote over n,
                  train on n/2 (no labels);
* ``srt``       — the same reward, every sample trained, RLOO baseline;
* ``co_reward`` — agreement with the majority answer of the rephrased problem
                  (b+a for a+b), n samples per phrasing.

It prints (and writes to ``--out``) a table: held-out greedy / sampled
pass@1 before → after, the training reward first → last iterations, and for
the label-free methods the pseudo-label accuracy (the majority answer against
the verifier, monitored only) and the agreement, first → last.

Command::

  python experiments/label_free_bench.py --steps=40 --out=/tmp/label_free.md

Numbers from a loaded machine are not results: report ``uptime`` with them.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.data import char_tokenizer
from jaxsi.methods import majority_vote
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl_run

_METHODS = flags.DEFINE_list("methods", ["grpo", "ttrl", "srt", "co_reward"],
                             "Methods to compare (each from the warm start).")
_STEPS = flags.DEFINE_integer("steps", 40, "RL iterations per method.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt (TTRL: votes).")
_LR = flags.DEFINE_float("lr", 3e-4, "RL learning rate.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_EVAL_SAMPLES = flags.DEFINE_integer("eval_samples", 4, "Samples per held-out problem.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_SEED = flags.DEFINE_integer("seed", 0, "Data / model / RL seed.")
_OUT = flags.DEFINE_string("out", "/tmp/label_free_bench.md", "Markdown output.")

DIGITS = 2
MAX_NEW = DIGITS + 2        # answer digits (+ carry) + EOS


def make_method(name: str):
  spec = RolloutSpec(n=_N.value, max_new_tokens=MAX_NEW, temperature=1.0)
  if name == "ttrl":
    return majority_vote.ttrl(rollout=spec)
  if name == "srt":
    return majority_vote.srt(rollout=spec)
  if name == "co_reward":
    return majority_vote.co_reward(rollout=spec)
  return methods_lib.get_method(name, rollout=spec)


def _mean(history, key, sl):
  vals = [h[key] for h in history[sl] if key in h]
  return float(np.mean(vals)) if vals else None


def _arrow(a, b, fmt="{:.3f}"):
  if a is None or b is None:
    return "–"
  return f"{fmt.format(a)} → {fmt.format(b)}"


def main(argv):
  del argv
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=")
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[DIGITS], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, labeled_fraction=0.5, seed=_SEED.value,
      task_format={"reverse": True})
  d = _D_MODEL.value
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                        n_layers=_LAYERS.value, n_heads=4, n_kv_heads=2,
                        head_dim=d // 4, d_ff=4 * d)
  model, params = mmodel.init(cfg, jax.random.key(_SEED.value))
  t0 = time.perf_counter()
  warm = rl_run.supervised(model=model, params=params, tokenizer=tok,
                           prompts=[t.prompt for t in labeled],
                           targets=[t.target for t in labeled],
                           steps=_SFT_STEPS.value, learning_rate=_SFT_LR.value,
                           seed=_SEED.value)
  ev = dict(model=model, tokenizer=tok, tasks=test, temperature=1.0,
            samples=_EVAL_SAMPLES.value, max_new_tokens=MAX_NEW,
            seed=_SEED.value + 7)
  before = rl_run.evaluate(params=warm, **ev)
  print(f"[bench] warm start ({time.perf_counter() - t0:.0f}s): {before}", flush=True)
  rows = []
  for name in _METHODS.value:
    method = make_method(name)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 warmup_steps=5, total_steps=_STEPS.value + 6,
                                 max_grad_norm=1.0)
    t0 = time.perf_counter()
    trainer = loop.Loop(model=model, params=warm, method=method, tokenizer=tok,
                        tasks=unlabeled, optimizer=opt,
                        prompts_per_step=_PROMPTS.value, seed=_SEED.value,
                        compiler_options=loop.FAST_COMPILE)
    history = trainer.run(_STEPS.value, log_every=max(1, _STEPS.value // 5))
    after = rl_run.evaluate(params=trainer.state.params, **ev)
    k = max(1, min(5, len(history) // 2))
    row = dict(
        method=name, after=after, seconds=time.perf_counter() - t0,
        reward=(_mean(history, "reward/mean", slice(0, k)),
                _mean(history, "reward/mean", slice(-k, None))),
        pseudo=(_mean(history, "label_free/pseudo_label_acc", slice(0, k)),
                _mean(history, "label_free/pseudo_label_acc", slice(-k, None))),
        agreement=(_mean(history, "label_free/agreement", slice(0, k)),
                   _mean(history, "label_free/agreement", slice(-k, None))),
        sample_acc=(_mean(history, "label_free/sample_acc", slice(0, k)),
                    _mean(history, "label_free/sample_acc", slice(-k, None))))
    print(f"[bench] {row}", flush=True)
    rows.append(row)
  lines = [f"Held-out {DIGITS}-digit addition pass@1 (greedy; sampled = mean of"
           f" {_EVAL_SAMPLES.value} at T=1), {_STEPS.value} RL iterations ×"
           f" {_PROMPTS.value} prompts × n={_N.value}; first/last = mean of the"
           " first/last iterations.", "",
           "| method | labels | greedy pass@1 | sampled pass@1 | train reward |"
           " pseudo-label acc | agreement | train sample acc | wall s |",
           "|" + "---|" * 9]
  g, s = before["greedy"]["all"], before["sampled"]["all"]
  lines.append(f"| warm start | SFT | {g:.3f} | {s:.3f} | – | – | – | – | – |")
  for r in rows:
    a = r["after"]
    lines.append(
        f"| {r['method']} | {'yes' if r['method'] == 'grpo' else 'no'} |"
        f" {_arrow(g, a['greedy']['all'])} | {_arrow(s, a['sampled']['all'])} |"
        f" {_arrow(*r['reward'])} | {_arrow(*r['pseudo'])} |"
        f" {_arrow(*r['agreement'])} | {_arrow(*r['sample_acc'])} |"
        f" {r['seconds']:.0f} |")
  text = "\n".join(lines) + "\n"
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  with open(_OUT.value + ".json", "w", encoding="utf-8") as f:
    json.dump(dict(before=before, rows=rows), f, indent=1, default=str)


if __name__ == "__main__":
  app.run(main)
