r"""Bench: a generative RM before/after SPCT's rule-based GRPO, voted k = 1 … K.

Per seed (its own data, model and draws):

1. Judging tasks (``rl_run.run.task = 'judge'``: a 2-digit addition problem
   and a candidate answer, the target or a one-digit corruption, half and
   half, labeled by the verifier), split into labeled (cold-start SFT on the
   label judgments, ``--sft_steps``) and unlabeled (the GRPO pool).
2. **GRM judge accuracy** (greedy judgment agrees with the verifier) on the
   held-out judging tasks, after SFT and after ``--grpo_steps`` steps of
   ``jaxsi.methods.spct.spct`` (GRPO, G = ``--n`` judgments per task,
   reward ±1, unparsed −1).
3. **Best-of-N by voting** on ``--n_problems`` held-out additions (problems
   never seen in the judging train set): N = ``--candidates`` candidates each
   (the target and N − 1 distinct corruptions, in a random order; chance =
   1/N); the GRM samples K = max(``--ks``) judgments of every candidate at
   ``--temperature`` (``spct.grm_scores``), and best-of-N picks the highest
   summed score of the first k (``spct.vote`` / ``add_votes`` →
   ``test_time.best_of_n``), for each k in ``--ks``; same draws for both
   models' k (the first k of the K).

Every arm of a seed uses the same SFT, the same GRPO budget and the same
judgment budget per k. Writes a markdown table (mean ± std over seeds) to
``--table`` and the per-seed rows to ``<table>.json``.

Command::

  python experiments/spct_bench.py --seeds=0,1,2 --table=/tmp/spct_bench.md

Numbers from a loaded machine are not results for speed: report ``uptime``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import judging as data_judging
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import spct
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time
from jaxsi.training import loop as loop_lib
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training import rl_run

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_N_TRAIN = flags.DEFINE_integer("n_train", 2000, "Judging train tasks (labeled + pool).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out judging tasks.")
_N_PROBLEMS = flags.DEFINE_integer("n_problems", 128, "Best-of-N problems.")
_CANDIDATES = flags.DEFINE_integer("candidates", 4, "Candidates per problem (N).")
_KS = flags.DEFINE_list("ks", ["1", "2", "4"], "Votes per candidate (k).")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Cold-start SFT steps.")
_GRPO_STEPS = flags.DEFINE_integer("grpo_steps", 40, "GRPO steps.")
_N = flags.DEFINE_integer("n", 8, "GRPO group size (judgments per task).")
_PROMPTS = flags.DEFINE_integer("prompts_per_step", 16, "GRPO prompts per step.")
_LR = flags.DEFINE_float("learning_rate", 3e-4, "GRPO learning rate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Judgment temperature.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("n_layers", 2, "Model layers.")
_TABLE = flags.DEFINE_string("table", "/tmp/spct_bench.md", "Markdown output.")

BUDGET = 4        # judgment tokens
FMT = "score_1_5"


def best_of_n_problems(train, n_problems, n_cand, seed):
  """Held-out additions (not a source problem of the judging train set),
  with the target and n_cand − 1 distinct corruptions, shuffled."""
  seen = {t.prompt.split("=")[0] for t in train}
  pool = tasks_lib.make_tasks("addition", 4 * n_problems, difficulty=2, seed=seed + 100,
                              reverse=True)
  rng = np.random.default_rng([seed, 0xB0])
  problems, cands = [], []
  for t in pool:
    if t.prompt.split("=")[0] in seen or len(problems) == n_problems:
      continue
    cs = [t.target]
    for _ in range(50):
      c = data_judging.corrupt(t.target, rng)
      if c is not None and c not in cs:
        cs.append(c)
      if len(cs) == n_cand:
        break
    if len(cs) < n_cand:
      continue
    rng.shuffle(cs)
    problems.append(t)
    cands.append(cs)
  return problems, cands


def measure(model, params, tok, test, problems, cands, ks, seed):
  """Greedy judge accuracy on ``test`` and best-of-N accuracy per k."""
  acc = rl_run.evaluate(model=model, params=params, tokenizer=tok, tasks=test,
                        temperature=1.0, samples=0, max_new_tokens=BUDGET,
                        seed=seed + 7)["greedy"]["all"]
  scores = spct.grm_scores(model, params, tok, problems, cands, k=max(ks),
                           judge_format=FMT, max_new_tokens=BUDGET,
                           strategy=strategies.Sampling(temperature=_TEMPERATURE.value),
                           rng=jax.random.key(seed + 11))
  correct = np.asarray([[t.verify(c) for c in cs] for t, cs in zip(problems, cands)],
                       np.float32)
  c = test_time.Candidates(tasks=problems, texts=cands, answers=cands, correct=correct,
                           lengths=np.ones(correct.shape, int), scores={})
  sel = spct.add_votes(c, scores, ks)
  row = {"judge_accuracy": float(acc), "parsed_rate": float(np.isfinite(scores).mean())}
  for k in ks:
    row[f"bon@{k}"] = test_time.accuracy(c, sel[f"genrm_vote@{k}"](c, c.n))
  return row


def one_seed(seed: int, ks) -> list:
  tok = char_tokenizer.CharTokenizer()
  fmt = {"base": "addition", "judge_format": FMT, "correct_fraction": 0.5,
         "reverse": True}
  labeled, unlabeled, test = rl_run.split_tasks(
      task="judge", difficulty=[2], n_train=_N_TRAIN.value, n_test=_N_TEST.value,
      labeled_fraction=0.5, seed=seed, task_format=fmt)
  problems, cands = best_of_n_problems(labeled + unlabeled + test, _N_PROBLEMS.value,
                                       _CANDIDATES.value, seed)
  cfg = model_config.get_config("tiny", vocab_size=tok.vocab_size, d_model=_D_MODEL.value,
                                n_layers=_LAYERS.value, n_heads=4, n_kv_heads=2,
                                head_dim=16, d_ff=4 * _D_MODEL.value)
  model, init = model_lib.init(cfg, jax.random.key(seed))
  t0 = time.time()
  warm = rl_run.supervised(model=model, params=init, tokenizer=tok,
                           prompts=[t.prompt for t in labeled],
                           targets=[t.target for t in labeled], steps=_SFT_STEPS.value,
                           learning_rate=3e-3, batch_size=64, seed=seed)
  rows = [dict(seed=seed, stage="cold start (SFT)", grpo_steps=0,
               **measure(model, warm, tok, test, problems, cands, ks, seed))]
  method = spct.spct(rollout=spec.RolloutSpec(n=_N.value, max_new_tokens=BUDGET,
                                              temperature=1.0))
  opt = optimizer_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                     warmup_steps=5, total_steps=_GRPO_STEPS.value + 6,
                                     max_grad_norm=1.0)
  with tempfile.TemporaryDirectory() as wd:
    trainer = loop_lib.Loop(model=model, params=warm, method=method, tokenizer=tok,
                            tasks=unlabeled, optimizer=opt,
                            prompts_per_step=_PROMPTS.value, seed=seed, roles={},
                            workdir=wd, checkpoint_every=0,
                            compiler_options=loop_lib.FAST_COMPILE)
    try:
      hist = trainer.run(_GRPO_STEPS.value, log_every=max(1, _GRPO_STEPS.value // 4))
      params = trainer.state.params
    finally:
      trainer.close()
  rows.append(dict(seed=seed, stage="+ SPCT GRPO", grpo_steps=_GRPO_STEPS.value,
                   train_reward_last5=float(np.mean([h["reward/mean"] for h in hist[-5:]])),
                   **measure(model, params, tok, test, problems, cands, ks, seed)))
  for r in rows:
    r["seed_seconds"] = time.time() - t0   # the whole seed: SFT, GRPO, both measures
  return rows


def table(rows, ks) -> str:
  cols = ["judge_accuracy", "parsed_rate"] + [f"bon@{k}" for k in ks]
  head = ("| stage | GRPO steps | judge accuracy | parsed | "
          + " | ".join(f"best-of-{_CANDIDATES.value}, k={k}" for k in ks) + " |")
  lines = [head, "|" + "---|" * (len(cols) + 2)]
  for stage in dict.fromkeys(r["stage"] for r in rows):
    rs = [r for r in rows if r["stage"] == stage]
    cells = [f"{np.mean([r[c] for r in rs]):.3f} ± {np.std([r[c] for r in rs]):.3f}"
             for c in cols]
    lines.append(f"| {stage} | {rs[0]['grpo_steps']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  ks = sorted({int(k) for k in _KS.value})
  rows = []
  for s in _SEEDS.value:
    rows += one_seed(int(s), ks)
    print(json.dumps(rows[-2:]), flush=True)
  md = table(rows, ks)
  print(md)
  with open(_TABLE.value, "w", encoding="utf-8") as f:
    f.write(md + "\n")
  with open(_TABLE.value + ".json", "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
