r"""Bench: Tailored learning (teacher corrects the student's mistakes) vs untailored distillation.

Wang et al. 2023 (arXiv:2310.13332) claim that distillation data tailored to
the student — the teacher's corrections of the student's own mistakes,
round after round — teaches more than the same teacher's data not tailored to
it. Miniature: 2-digit addition (answers least-significant digit first,
``rl_run.split_tasks``); per seed

1. a *teacher* (``--teacher_d`` × ``--teacher_layers``) SFT-trained on the
   labelled half, on both formats of ``tailored.teacher_examples``: question →
   answer and question ⊕ a one-digit-wrong attempt ⊕ '|' → answer;
2. a *student* (``--student_d`` × ``--student_layers``) SFT-warm-started on the
   labelled half (``_warm_start.addition_warm_start``), shared by every arm;
3. ``--rounds`` rounds per arm from that warm start (``rounds.run_rounds``,
   ``train_from='current'``, the labelled set in every M-step, the same
   M-step steps): the student answers the unlabelled questions greedily and

   * ``tailored``: the teacher sees each wrong attempt and corrects it;
   * ``tailored_plain``: the teacher answers the failed questions without
     seeing the attempt;
   * ``untailored``: the teacher answers as many questions drawn at random
     (the same number of teacher generations per round as ``tailored``);
   * ``tailored_cpo``: ``tailored`` with the self-reflection stand-in (CPO:
     correction ≻ own mistake, + NLL);
   * ``control``: ``rounds.labeled_only(tailored)``: the same M-steps on the
     labelled set only.

   Corrections are kept only if the verifier accepts them.

Reported: held-out greedy pass@1 per round (mean ± std over seeds), the
teacher's plain and correction accuracy, the teacher queries and kept
corrections per round. JSON with every number.

Command::

  python experiments/tailored_bench.py --seeds=0,1,2 --out=/tmp/tailored_bench.json

Numbers from a loaded machine are not timings: report ``uptime`` with them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

import _warm_start
from jaxsi.methods import tailored as tailored_lib
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import rl_run
from jaxsi.training import rounds

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data, models).")
_ARMS = flags.DEFINE_list("arms", ["tailored", "tailored_plain", "untailored",
                                   "tailored_cpo", "control"], "Arms.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds per arm.")
_STEPS = flags.DEFINE_integer("steps_per_round", 100, "M-step steps per round.")
_BATCH = flags.DEFINE_integer("batch", 64, "M-step batch size.")
_LR = flags.DEFINE_float("lr", 1e-3, "M-step learning rate.")
_N_TRAIN = flags.DEFINE_integer("n_train", 3000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 256, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 300, "Student warm-start SFT steps.")
_TEACHER_STEPS = flags.DEFINE_integer("teacher_steps", 1200, "Teacher SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "SFT learning rate (warm start, teacher).")
_TEACHER_D = flags.DEFINE_integer("teacher_d", 64, "Teacher width.")
_TEACHER_LAYERS = flags.DEFINE_integer("teacher_layers", 2, "Teacher layers.")
_STUDENT_D = flags.DEFINE_integer("student_d", 32, "Student width.")
_STUDENT_LAYERS = flags.DEFINE_integer("student_layers", 2, "Student layers.")
_OUT = flags.DEFINE_string("out", "/tmp/tailored_bench.json", "JSON output (+ .md table).")

ALPHABET = _warm_start.ALPHABET + tailored_lib.SEP


def _method(arm, teacher):
  kw = dict(tailored=dict(), tailored_plain=dict(teacher_prompt="plain"),
            untailored=dict(focus="random", teacher_prompt="plain"),
            tailored_cpo=dict(reflection="cpo"), control=dict())[arm]
  m = tailored_lib.tailored(teacher=teacher, name=arm, **kw)
  return rounds.labeled_only(m) if arm == "control" else m


def _accuracy(model, params, tok, tasks, max_new):
  ev = rl_run.evaluate(model=model, params=params, tokenizer=tok, tasks=tasks,
                       temperature=1.0, samples=0, max_new_tokens=max_new, seed=0)
  return float(ev["greedy"]["all"])


def run_seed(seed: int) -> dict:
  t0 = time.perf_counter()
  ws = _warm_start.addition_warm_start(
      seed=seed, n_train=_N_TRAIN.value, n_test=_N_TEST.value,
      sft_steps=_SFT_STEPS.value, sft_lr=_SFT_LR.value, d_model=_STUDENT_D.value,
      layers=_STUDENT_LAYERS.value, alphabet=ALPHABET)
  tok = ws.tokenizer
  d = _TEACHER_D.value
  t_cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                          n_layers=_TEACHER_LAYERS.value, n_heads=4, n_kv_heads=2,
                          head_dim=d // 4, d_ff=4 * d)
  t_model, t_init = mmodel.init(t_cfg, jax.random.key(1000 + seed))
  t_data = tailored_lib.teacher_examples(
      [dict(prompt=t.prompt, completion=t.target, task_id=t.id) for t in ws.labeled],
      seed=seed)
  t_params = rl_run.supervised(model=t_model, params=t_init, tokenizer=tok,
                               prompts=[e["prompt"] for e in t_data],
                               targets=[e["completion"] for e in t_data],
                               steps=_TEACHER_STEPS.value, learning_rate=_SFT_LR.value,
                               seed=seed, desc="teacher")
  rng = np.random.default_rng(seed + 99)
  shown = [t.replace(prompt=tailored_lib.correction_prompt(
      t.prompt, tailored_lib.perturb(t.target, rng))) for t in ws.test]
  teacher = dict(plain=_accuracy(t_model, t_params, tok, ws.test, ws.max_new_tokens),
                 correction=_accuracy(t_model, t_params, tok, shown, ws.max_new_tokens))
  print(f"[tailored_bench] seed {seed}: teacher {teacher}"
        f" ({time.perf_counter() - t0:.0f}s)", flush=True)
  cfg = rounds.RoundsConfig(
      rounds=_ROUNDS.value, warm_start_steps=_SFT_STEPS.value,
      steps_per_round=_STEPS.value, batch_size=_BATCH.value, max_len=24,
      learning_rate=_LR.value, max_new_tokens=ws.max_new_tokens, rollout_batch=512,
      chunk_size=512, eval_n=1, seed=seed)
  arms = {}
  for arm in _ARMS.value:
    workdir = tempfile.mkdtemp(prefix=f"tailored_{arm}_{seed}_")
    t1 = time.perf_counter()
    try:
      recs = rounds.run_rounds(
          method=_method(arm, (t_model, t_params)), model=ws.model,
          init_params=ws.init, tokenizer=tok, labeled=ws.labeled,
          unlabeled=ws.unlabeled, test=ws.test, workdir=workdir, config=cfg,
          verbose=False, warm_params=ws.params)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)
    arms[arm] = dict(
        pass1=[float(r["test_pass1"]) for r in recs],
        select=[r.get("select", {}) for r in recs[1:]],
        seconds=time.perf_counter() - t1)
    print(f"[tailored_bench] seed {seed} {arm}: pass@1 {arms[arm]['pass1']}"
          f" ({arms[arm]['seconds']:.0f}s)", flush=True)
  return dict(seed=seed, teacher=teacher, arms=arms)


def table(results) -> str:
  arms = list(results[0]["arms"])
  R = len(results[0]["arms"][arms[0]]["pass1"])
  ms = _warm_start.fmt_ms
  lines = [
      f"Held-out 2-digit addition greedy pass@1 of the student, mean ± std over seeds"
      f" {[r['seed'] for r in results]}; {_ROUNDS.value} rounds × {_STEPS.value}"
      f" M-step steps (batch {_BATCH.value}, lr {_LR.value}) per arm from one warm"
      " start per seed. queries / kept = teacher generations / verified corrections"
      " per round (mean over rounds and seeds).", "",
      "| arm | " + " | ".join(f"round {r}" if r else "warm start" for r in range(R))
      + " | teacher queries | kept |",
      "|" + "---|" * (R + 3)]
  for arm in arms:
    cells = [ms([res["arms"][arm]["pass1"][r] for res in results]) for r in range(R)]
    sel = [s for res in results for s in res["arms"][arm]["select"]]
    q = np.mean([s.get("teacher_queries", 0) for s in sel]) if sel else 0.0
    k = np.mean([s.get("kept", 0) + s.get("pairs", 0) for s in sel]) if sel else 0.0
    lines.append(f"| {arm} | " + " | ".join(cells) + f" | {q:.0f} | {k:.0f} |")
  lines += ["", "Teacher (greedy, held-out): plain prompt "
            + ms([r["teacher"]["plain"] for r in results]) + "; shown a one-digit-wrong"
            " attempt " + ms([r["teacher"]["correction"] for r in results]) + "."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  results = [run_seed(int(s)) for s in _SEEDS.value]
  text = table(results)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(flags={k: flags.FLAGS[k].value for k in (
        "seeds", "arms", "rounds", "steps_per_round", "batch", "lr", "n_train",
        "n_test", "sft_steps", "teacher_steps", "teacher_d", "teacher_layers",
        "student_d", "student_layers")}, results=results), f, indent=1, default=str)
  base = _OUT.value[:-5] if _OUT.value.endswith(".json") else _OUT.value
  with open(base + ".md", "w", encoding="utf-8") as f:
    f.write(text)


if __name__ == "__main__":
  app.run(main)
