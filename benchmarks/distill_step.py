r"""Times one distillation iteration against one GRPO iteration on the same batch.

Both are full loop iterations (``Loop.step``) on the same student, prompts,
batch (``--prompts`` × ``--n``) and completion length:

* ``grpo``  — student rollout + rewards + reference scoring (KL β = 0.04) +
  group advantages + the clipped policy-gradient update;
* ``gkd``   — student rollout (λ = 1) + rewards (logged) + teacher rescoring
  with its top-k per position (``teacher_logits.teacher_topk``, chunked over
  rows) + the JSD update on the student's full logits;
* ``kdrl``  — GRPO + the teacher's sampled-token log-probs (reverse KL).

The sides alternate (``bench_env.interleave``: warm-up calls compile, then
``--steps`` timed calls per side in alternating order); the table gives the
median iteration and its split (rollout / prepare = transforms incl. teacher
or reference scoring / update), and the ratio to GRPO::

  python benchmarks/distill_step.py --pairs=tiny:small,small:small --steps=5 \
      --out=/tmp/distill_step.json

``tiny:small`` is a tiny student with a ``small`` teacher. Refuses a loaded
machine unless ``--allow_load`` (the figures are then marked).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_env  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxsi import methods  # pylint: disable=wrong-import-position
from jaxsi.data import char_tokenizer  # pylint: disable=wrong-import-position
from jaxsi.data import tasks as tasks_lib  # pylint: disable=wrong-import-position
from jaxsi.models import config as mcfg  # pylint: disable=wrong-import-position
from jaxsi.models import model as mmodel  # pylint: disable=wrong-import-position
from jaxsi.spec import RolloutSpec  # pylint: disable=wrong-import-position
from jaxsi.training import loop  # pylint: disable=wrong-import-position
from jaxsi.training import optimizer as opt_lib  # pylint: disable=wrong-import-position

_PAIRS = flags.DEFINE_list("pairs", ["tiny:small", "small:small"],
                           "student_preset:teacher_preset pairs.")
_SIDES = flags.DEFINE_list("sides", ["grpo", "gkd", "kdrl"], "Methods timed.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed iterations per side.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed iterations per side.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Completion length.")
_K = flags.DEFINE_integer("k", 0, "GKD teacher top-k (0: the whole vocabulary).")
_ROW_CHUNK = flags.DEFINE_integer("row_chunk", 0, "Teacher rows per chunk (0: B/4).")
_ALLOW_LOAD = flags.DEFINE_bool("allow_load", False, "Run on a loaded machine.")
_OUT = flags.DEFINE_string("out", "/tmp/distill_step.json", "JSON output.")


def _method(name: str, vocab: int, batch: int):
  spec = RolloutSpec(n=_N.value, max_new_tokens=_MAX_NEW.value)
  if name == "grpo":
    return methods.grpo(rollout=spec, kl_coef=0.04, drop_zero_variance=False)
  if name == "kdrl":
    return methods.kdrl(rollout=spec)
  if name == "gkd":
    return methods.gkd(rollout=spec, lmbda=1.0, k=_K.value or vocab,
                       row_chunk=_ROW_CHUNK.value or max(1, batch // 4))
  raise ValueError(f"--sides: unknown side {name!r} (grpo | gkd | kdrl)")


def bench_pair(pair: str) -> list:
  student, _, teacher = pair.partition(":")
  tok = char_tokenizer.CharTokenizer()
  s_model, s_params = mmodel.init(mcfg.get_config(student, vocab_size=tok.vocab_size),
                                  jax.random.key(0))
  t_model, t_params = mmodel.init(mcfg.get_config(teacher or student,
                                                  vocab_size=tok.vocab_size),
                                  jax.random.key(1))
  tasks = tasks_lib.make_tasks("addition", 256, difficulty=[1, 2], seed=0)
  batch = _PROMPTS.value * _N.value
  trainers = {}
  for name in _SIDES.value:
    opt = opt_lib.make_optimizer(learning_rate=1e-4, schedule="constant")
    trainers[name] = loop.Loop(
        model=s_model, params=s_params, method=_method(name, tok.vocab_size, batch),
        tokenizer=tok, tasks=tasks, optimizer=opt, prompts_per_step=_PROMPTS.value,
        seed=0, roles={"teacher": (t_model, t_params)})
  sides = {k: (tr.step, lambda out: out) for k, tr in trainers.items()}
  res = bench_env.interleave(sides, warmup=_WARMUP.value, steps=_STEPS.value)
  rows = []
  for name, tr in trainers.items():
    hist = tr.history[_WARMUP.value:]
    mean = lambda key: float(np.mean([h[key] for h in hist]))
    rows.append(dict(
        pair=pair, side=name, batch=batch, median_s=res[name]["median_s"],
        first_s=res[name]["first_s"], rollout_s=mean("time/rollout_s"),
        prepare_s=mean("time/prepare_s"), update_s=mean("time/update_s"),
        completion_len=mean("completion_length/mean")))
  base = next((r["median_s"] for r in rows if r["side"] == "grpo"), None)
  for r in rows:
    r["vs_grpo"] = r["median_s"] / base if base else None
  return rows


def main(argv):
  del argv
  warning = bench_env.check_idle(allow_load=_ALLOW_LOAD.value)
  rows = [r for p in _PAIRS.value for r in bench_pair(p)]
  head = ("pair", "side", "batch", "median_s", "vs_grpo", "rollout_s", "prepare_s",
          "update_s", "first_s", "completion_len")
  lines = [f"`{bench_env.uptime()}`" + (" (measured under load)" if warning else ""),
           "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head]
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(rows=rows, uptime=bench_env.uptime(), warning=warning), f, indent=1)


if __name__ == "__main__":
  app.run(main)
