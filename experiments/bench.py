r"""Bench: several RL methods, same tasks, budget, seeds and SFT warm start.

For each task and seed: one supervised warm start (shared by every method),
then each method runs ``--steps`` RL iterations of ``--prompts`` prompts from
the same training set, and the script reports held-out greedy pass@1 per
difficulty before and after, the fraction of training prompts no sample
solves (pass@k = 0 at temperature 1), and the compute spent (rollout and
update tokens, wall time, generation batches). The result is a markdown
table (``--out``) plus a JSON file next to it.

Example (the run in docs/rl.md)::

  python experiments/bench.py --methods=grpo,ppo,dapo,guide,guide_plain \
      --tasks=addition --seeds=0 --out=/tmp/bench.md

Everything is CPU-sized by default (a ~100k-parameter decoder, character
vocabulary, 1–3 digit addition with reversed answers). The warm start sees
labelled 1–2 digit problems (and hint-copy examples of every difficulty); RL
runs on a pool of *unlabelled* problems of all three difficulties.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import methods as methods_lib
from jaxsi.data import batching
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import strategies
from jaxsi.training import loops
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as train_state_lib

_METHODS = flags.DEFINE_list(
    "methods", ["grpo", "ppo", "dapo", "guide", "guide_plain"],
    "Methods (names in jaxsi.methods.METHODS, or 'guide_plain' = Guide with "
    "importance='plain').")
_TASKS = flags.DEFINE_list("tasks", ["addition"], "Synthetic task names.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")
_DIFFS = flags.DEFINE_list("difficulties", ["1", "2", "3"],
                           "Difficulties of the train/test sets.")
_STEPS = flags.DEFINE_integer("steps", 60, "RL iterations per method.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt.")
_LR = flags.DEFINE_float("lr", 1e-4, "RL learning rate (Adam).")
_RL_POOL = flags.DEFINE_integer(
    "rl_pool", 256, "RL prompts: this many unlabelled training problems (all "
    "difficulties), so each is revisited over the run.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 600, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_SFT_FRACTION = flags.DEFINE_float(
    "sft_fraction", 0.5, "Fraction of the training prompts with SFT labels.")
_N_TRAIN = flags.DEFINE_integer("n_train", 1500,
                                "Training prompts per difficulty.")
_REVERSE = flags.DEFINE_bool(
    "reverse", True, "Answers least-significant digit first (learnable by "
    "tiny models; see jaxsi.data.synthetic.addition).")
_N_TEST = flags.DEFINE_integer("n_test", 64, "Held-out prompts per difficulty.")
_PASS_K = flags.DEFINE_integer("pass_k", 8, "k of the zero-solve statistic.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/jaxsi_bench.md", "Markdown output.")
_FAST = flags.DEFINE_bool("fast_compile", True,
                          "Cheaper XLA compilation (rl.FAST_COMPILE).")

HINT_OPEN, HINT_CLOSE = "(", ")"


def hint_answer(task) -> str:
  """Guide's hint for the bench: the target completion in parentheses."""
  return f"{HINT_OPEN}{task.target}{HINT_CLOSE}"


def max_new_tokens(difficulties: Sequence[int]) -> int:
  return max(difficulties) + 2  # answer digits (+ carry) + EOS


def build_model(tok, *, d_model: int, layers: int, seed: int):
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d_model,
                        n_layers=layers, n_heads=4, n_kv_heads=2,
                        head_dim=d_model // 4, d_ff=4 * d_model,
                        value_head=True)
  return mmodel.init(cfg, jax.random.key(seed))


def warm_start(*, model, params, tok, tasks, steps: int, lr: float, seed: int,
               hint_tasks=()):
  """Supervised warm start on ``tasks`` (and, for Guide, hinted copies)."""
  prompts = [t.prompt for t in tasks] + [t.prompt + hint_answer(t)
                                         for t in hint_tasks]
  targets = [t.target for t in tasks] + [t.target for t in hint_tasks]
  max_len = max(len(p) + len(c) for p, c in zip(prompts, targets)) + 2
  arrays = batching.sft_arrays(tok, prompts, targets, max_len=max_len)
  opt = opt_lib.make_optimizer(learning_rate=lr, schedule="cosine",
                               warmup_steps=min(20, steps // 4),
                               total_steps=steps)
  update = steps_lib.make_update_step(
      model=model, optimizer=opt, objective=steps_lib.sft_objective())
  state = train_state_lib.create_train_state(params, opt, jax.random.key(seed))
  it = batching.EpochIterator(size=len(prompts),
                              batch_size=min(64, len(prompts)), seed=seed)
  res = loops.train_sft(state=state, update_step=update, arrays=arrays,
                        iterator=it, num_steps=steps, log_every=100,
                        desc="warm-start")
  return res.state.params


def accuracy_by_difficulty(*, model, params, tok, tasks, n: int, strategy,
                           max_new: int, seed: int) -> dict:
  """{difficulty: (pass@1 mean over samples, frac of prompts with 0 correct)}."""
  ro = loops.rollout(model=model, params=params, tokenizer=tok, tasks=tasks,
                     rng=jax.random.key(seed), strategy=strategy, n=n,
                     max_new_tokens=max_new, batch_size=256)
  correct = ro.correct.reshape(len(tasks), n)
  diffs = np.asarray([t.difficulty for t in tasks])
  out = {}
  for d in sorted(set(diffs.tolist())):
    c = correct[diffs == d]
    out[int(d)] = (float(c.mean()), float((c.sum(axis=1) == 0).mean()))
  return out


def make_method(name: str, *, n: int, max_new: int):
  kw = dict(n=n, max_new_tokens=max_new,
            reward_fns=(reward_lib.correctness_reward,))
  if name in ("guide", "guide_plain"):
    kw["hint_fn"] = hint_answer
  if name == "guide_plain":  # ExPO / STaR-rationalisation style ratio
    return methods_lib.guide(importance="plain", name=name, **kw)
  if name == "dapo":
    kw["overlong_buffer"] = None  # completions are short; no length shaping
  if name == "ppo":
    kw["n"] = max(2, n // 2)      # PPO needs no groups: same sample budget
  return methods_lib.get_method(name, **kw)


@dataclasses.dataclass
class Row:
  task: str
  seed: int
  method: str
  before: dict
  after: dict
  zero_before: float
  zero_after: float
  rollout_tokens: int
  update_tokens: int
  seconds: float
  gen_batches: float
  effective_batch: float


def run_task(task: str, seed: int, method_names: Sequence[str]) -> list[Row]:
  diffs = [int(d) for d in _DIFFS.value]
  max_new = max_new_tokens(diffs)
  tok = char_tokenizer.CharTokenizer()
  train, test = [], []
  for d in diffs:
    # Small problem spaces (1-digit addition has 100 problems) get fewer.
    n_train, n_test = _N_TRAIN.value, _N_TEST.value
    if d == 1:
      n_train, n_test = min(n_train, 60), min(n_test, 30)
    fmt = {"reverse": True} if _REVERSE.value else {}
    tr, te = tasks_lib.make_train_test(task, n_train=n_train, n_test=n_test,
                                       difficulty=d, seed=seed, **fmt)
    train += tr
    test += te
  rng = np.random.default_rng(seed)
  labeled = [train[i] for i in rng.permutation(len(train))[
      :int(_SFT_FRACTION.value * len(train))]]
  # The warm start never sees a solved problem of the hardest difficulty, so
  # RL has room to improve there; it does learn to *use a hint* (copy the
  # target given in parentheses) on half of the labelled problems of every
  # difficulty, which is what Guide's hint-conditioned resampling needs.
  hard = max(diffs)
  sft_tasks = [t for t in labeled if t.difficulty < hard]
  hint_tasks = labeled[::2]
  labelled_ids = {t.id for t in labeled}
  unlabelled = [t for t in train if t.id not in labelled_ids]
  rl_tasks = [unlabelled[i] for i in rng.permutation(len(unlabelled))[
      :_RL_POOL.value]]
  zero_tasks = [t for t in rl_tasks if t.difficulty == max(diffs)]
  model, init_params = build_model(tok, d_model=_D_MODEL.value,
                                   layers=_LAYERS.value, seed=seed)
  t0 = time.perf_counter()
  warm = warm_start(model=model, params=init_params, tok=tok, tasks=sft_tasks,
                    steps=_SFT_STEPS.value, lr=_SFT_LR.value, seed=seed,
                    hint_tasks=hint_tasks)
  print(f"[bench] warm start {time.perf_counter() - t0:.0f}s", flush=True)
  greedy = strategies.Greedy()
  temp = strategies.Sampling(temperature=1.0)
  before = accuracy_by_difficulty(model=model, params=warm, tok=tok,
                                  tasks=test, n=1, strategy=greedy,
                                  max_new=max_new, seed=seed)
  zero_b = accuracy_by_difficulty(model=model, params=warm, tok=tok,
                                  tasks=zero_tasks, n=_PASS_K.value,
                                  strategy=temp,
                                  max_new=max_new, seed=seed + 1)
  rows = []
  for name in method_names:
    method = make_method(name, n=_N.value, max_new=max_new)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 max_grad_norm=1.0)
    prompts = _PROMPTS.value * _N.value // method.n
    t0 = time.perf_counter()
    trainer = rl.RLTrainer(
        model=model, params=warm, method=method, tokenizer=tok, tasks=rl_tasks,
        optimizer=opt, prompts_per_step=prompts, seed=seed,
        compiler_options=rl.FAST_COMPILE if _FAST.value else None)
    history = trainer.run(_STEPS.value, log_every=10)
    seconds = time.perf_counter() - t0
    after = accuracy_by_difficulty(model=model, params=trainer.state.params,
                                   tok=tok, tasks=test, n=1, strategy=greedy,
                                   max_new=max_new, seed=seed)
    zero_a = accuracy_by_difficulty(model=model, params=trainer.state.params,
                                    tok=tok, tasks=zero_tasks, n=_PASS_K.value,
                                    strategy=temp, max_new=max_new,
                                    seed=seed + 1)
    rollout_tokens = int(sum(h["rollout_tokens_per_s"] * h["time/rollout_s"]
                             for h in history))
    update_tokens = int(sum(h["update_tokens_per_s"] * h["time/update_s"]
                            for h in history))
    rows.append(Row(
        task=task, seed=seed, method=name,
        before={d: v[0] for d, v in before.items()},
        after={d: v[0] for d, v in after.items()},
        zero_before=zero_b[hard][1], zero_after=zero_a[hard][1],
        rollout_tokens=rollout_tokens, update_tokens=update_tokens,
        seconds=seconds,
        gen_batches=float(np.mean([h["gen_batches"] for h in history])),
        effective_batch=float(np.mean([h["effective_batch_frac"]
                                       for h in history]))))
    print(f"[bench] {task} seed={seed} {name}: {rows[-1]}", flush=True)
  return rows


def markdown(rows: Sequence[Row], diffs: Sequence[int]) -> str:
  head = ["task", "seed", "method"]
  head += [f"d{d} pass@1 before→after" for d in diffs]
  head += [f"d{max(diffs)} RL prompts unsolved (pass@{_PASS_K.value}=0) "
           "before→after", "rollout tokens", "update tokens",
           "gen batches/step", "effective batch", "wall s"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for r in rows:
    cells = [r.task, str(r.seed), r.method]
    cells += [f"{r.before[d]:.2f} → {r.after[d]:.2f}" for d in diffs]
    cells += [f"{r.zero_before:.2f} → {r.zero_after:.2f}",
              f"{r.rollout_tokens:,}", f"{r.update_tokens:,}",
              f"{r.gen_batches:.2f}", f"{r.effective_batch:.2f}",
              f"{r.seconds:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  rows = []
  for task in _TASKS.value:
    for seed in _SEEDS.value:
      rows += run_task(task, int(seed), _METHODS.value)
  diffs = [int(d) for d in _DIFFS.value]
  table = markdown(rows, diffs)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(table)
  with open(os.path.splitext(_OUT.value)[0] + ".json", "w",
            encoding="utf-8") as f:
    json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
  print(table)


if __name__ == "__main__":
  app.run(main)
