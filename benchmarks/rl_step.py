r"""Times one full RL iteration: rollout + rewards + transforms + update.

For each model preset (``tiny``, ``small`` by default) it builds a GRPO
``RLTrainer`` (random init, character vocabulary, 1–2 digit addition prompts,
correctness reward), runs one iteration to compile, then times ``--iters``
iterations and prints the split (rollout / reward / transforms / update), the
rollout and update throughput in tokens/s, and the compile time::

  python benchmarks/rl_step.py --models=tiny,small --iters=5

Numbers are wall-clock on whatever machine runs it (see docs/rl.md for the
CPU figures).
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import loop

_MODELS = flags.DEFINE_list("models", ["tiny", "small"], "Model presets.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed iterations.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Completion length.")
_KL = flags.DEFINE_float("kl_coef", 0.04, "GRPO β (0: no reference pass).")


def bench_model(preset: str) -> dict:
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config(preset, vocab_size=tok.vocab_size)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 256, difficulty=[1, 2], seed=0)
  # Keep zero-variance groups in the loss: at random init every reward is 0,
  # and the timed update should process the whole batch.
  method = methods.grpo(rollout=RolloutSpec(n=_N.value, max_new_tokens=_MAX_NEW.value),
                        kl_coef=_KL.value, drop_zero_variance=False)
  opt = opt_lib.make_optimizer(learning_rate=1e-4, schedule="constant")
  trainer = loop.Loop(model=model, params=params, method=method,
                         tokenizer=tok, tasks=tasks, optimizer=opt,
                         prompts_per_step=_PROMPTS.value, seed=0)
  t0 = time.perf_counter()
  trainer.step()
  compile_s = time.perf_counter() - t0
  hist = [trainer.step() for _ in range(_ITERS.value)]

  def mean(key):
    return float(np.mean([h[key] for h in hist]))

  return dict(model=preset, params=mmodel.count_params(params),
              batch=_PROMPTS.value * _N.value, compile_s=compile_s,
              iteration_s=mean("time/iteration_s"),
              rollout_s=mean("time/rollout_s"), reward_s=mean("time/reward_s"),
              prepare_s=mean("time/prepare_s"), update_s=mean("time/update_s"),
              rollout_tok_s=mean("rollout_tokens_per_s"),
              update_tok_s=mean("update_tokens_per_s"),
              completion_len=mean("completion_length/mean"))


def main(argv):
  del argv
  rows = [bench_model(m) for m in _MODELS.value]
  head = ("model", "params", "batch", "compile_s", "iteration_s", "rollout_s",
          "reward_s", "prepare_s", "update_s", "rollout_tok_s", "update_tok_s",
          "completion_len")
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for r in rows:
    cells = [f"{r[k]:,.3f}" if isinstance(r[k], float) else f"{r[k]:,}"
             if isinstance(r[k], int) else str(r[k]) for k in head]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
