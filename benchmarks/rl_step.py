r"""Times one full RL iteration: rollout + rewards + transforms + update.

For each model preset (``tiny``, ``small`` by default) it builds a GRPO
``RLTrainer`` (random init, character vocabulary, 1–2 digit addition prompts,
correctness reward), runs one iteration to compile, then times ``--iters``
iterations and prints the split (rollout / reward / transforms / update), the
rollout and update throughput in tokens/s, and the compile time::

  python benchmarks/rl_step.py --models=tiny,small --iters=5

Numbers are wall-clock on whatever machine runs it (see docs/rl.md for the
CPU figures).

Off-policy pipelining (``Loop(staleness=1)``, issue #20 item 5): with
``--staleness=0,1`` every (model, seed) row runs both loops at the same
budget (same iterations, batch, completion length, seed) and the table
adds the measured overlap: ``saved_s`` = synchronous minus pipelined
iteration time (mean over the timed iterations), ``wait_s`` = the time the
pipelined update waited for its next batch. ``--reward_sleep_s`` makes the
host reward cost real time: the correctness reward plus a deliberate
``time.sleep`` per call — a labelled stand-in for a verifier that waits on a
subprocess or sandbox (it holds no core), not a real reward cost::

  python benchmarks/rl_step.py --models=tiny --staleness=0,1 \
      --reward_sleep_s=0.5 --seeds=0,1,2 --iters=4
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
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import loop

_MODELS = flags.DEFINE_list("models", ["tiny", "small"], "Model presets.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed iterations.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Completion length.")
_KL = flags.DEFINE_float("kl_coef", 0.04, "GRPO β (0: no reference pass).")
_STALENESS = flags.DEFINE_list(
    "staleness", ["0"], "Loop staleness values to time (0 sync, 1 pipelined).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (one row per seed).")
_SLEEP = flags.DEFINE_float(
    "reward_sleep_s", 0.0, "Deliberate sleep added to every host reward call"
    " (a stand-in for a verifier waiting on a sandbox; 0: none).")


def sleepy_correctness(sleep_s: float):
  """The correctness reward plus ``time.sleep(sleep_s)`` per call (labelled
  stand-in for a slow host verifier)."""
  def correctness_plus_sleep(tasks, completions):
    time.sleep(sleep_s)
    return reward_lib.correctness_reward(tasks, completions)
  return correctness_plus_sleep


def bench_model(preset: str, staleness: int = 0, seed: int = 0) -> dict:
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config(preset, vocab_size=tok.vocab_size)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 256, difficulty=[1, 2], seed=0)
  # Keep zero-variance groups in the loss: at random init every reward is 0,
  # and the timed update should process the whole batch.
  extra = {}
  if _SLEEP.value > 0:
    extra["reward_fns"] = (sleepy_correctness(_SLEEP.value),)
  method = methods.grpo(rollout=RolloutSpec(n=_N.value, max_new_tokens=_MAX_NEW.value),
                        kl_coef=_KL.value, drop_zero_variance=False, **extra)
  opt = opt_lib.make_optimizer(learning_rate=1e-4, schedule="constant")
  trainer = loop.Loop(model=model, params=params, method=method,
                         tokenizer=tok, tasks=tasks, optimizer=opt,
                         prompts_per_step=_PROMPTS.value, seed=seed,
                         staleness=staleness)
  t0 = time.perf_counter()
  trainer.step()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  hist = [trainer.step() for _ in range(_ITERS.value)]
  wall_s = (time.perf_counter() - t0) / max(1, _ITERS.value)
  trainer.close()

  def mean(key):
    return float(np.mean([h[key] for h in hist]))

  return dict(model=preset, params=mmodel.count_params(params),
              staleness=staleness, seed=seed, wall_s=wall_s,
              wait_s=mean("pipeline/wait_s") if staleness else 0.0,
              batch=_PROMPTS.value * _N.value, compile_s=compile_s,
              iteration_s=mean("time/iteration_s"),
              rollout_s=mean("time/rollout_s"), reward_s=mean("time/reward_s"),
              prepare_s=mean("time/prepare_s"), update_s=mean("time/update_s"),
              rollout_tok_s=mean("rollout_tokens_per_s"),
              update_tok_s=mean("update_tokens_per_s"),
              completion_len=mean("completion_length/mean"))


def main(argv):
  del argv
  stal = [int(x) for x in _STALENESS.value]
  seeds = [int(x) for x in _SEEDS.value]
  rows = [bench_model(m, st, sd) for m in _MODELS.value for sd in seeds
          for st in stal]
  head = ("model", "params", "batch", "compile_s", "iteration_s", "rollout_s",
          "reward_s", "prepare_s", "update_s", "rollout_tok_s", "update_tok_s",
          "completion_len")
  if stal != [0] or seeds != [0]:
    head = head[:4] + ("staleness", "seed", "wall_s", "wait_s") + head[4:]
  _table(rows, head)
  if 0 in stal and 1 in stal:
    # The overlap gained: per (model, seed), sync − pipelined wall time per
    # iteration, then the mean ± std over seeds.
    print()
    print("| model | sync wall_s | stale wall_s | saved_s | saved % | stale wait_s |")
    print("|---|---|---|---|---|---|")
    for m in _MODELS.value:
      sync = np.array([r["wall_s"] for r in rows if r["model"] == m and r["staleness"] == 0])
      stale = np.array([r["wall_s"] for r in rows if r["model"] == m and r["staleness"] == 1])
      wait = np.array([r["wait_s"] for r in rows if r["model"] == m and r["staleness"] == 1])
      saved = sync - stale
      print(f"| {m} | {sync.mean():.3f} ± {sync.std():.3f} | {stale.mean():.3f} ±"
            f" {stale.std():.3f} | {saved.mean():.3f} ± {saved.std():.3f} |"
            f" {100 * (saved / sync).mean():.1f} | {wait.mean():.3f} |")


def _table(rows, head):
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for r in rows:
    cells = [f"{r[k]:,.3f}" if isinstance(r[k], float) else f"{r[k]:,}"
             if isinstance(r[k], int) else str(r[k]) for k in head]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
