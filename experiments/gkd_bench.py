r"""Bench: GKD on-policy (λ = 1) vs supervised KD on teacher samples (λ = 0).

Agarwal et al. 2024 (arXiv:2306.13649) claim on-policy distillation beats
distillation on teacher-generated sequences for a capacity-limited student.
Miniature: 2-digit addition (answers least-significant digit first,
``rl_run.split_tasks``); per seed

1. a *teacher* (wider, deeper decoder) SFT-trained on the labelled half;
2. a *student* (``--student_d`` × ``--student_layers``, half the teacher's
   width) briefly SFT-warm-started on the
   same labelled half (weak but not random, as the paper's SFT'd students);
3. from that one student warm start, each arm runs ``--steps`` GKD
   iterations on the unlabelled prompts (no labels used): ``--prompts`` ×
   ``n`` samples per iteration drawn by the student (λ = 1) or the teacher
   (λ = 0), JSD_β against the teacher's top-k (k = V here, i.e. the full
   distribution), one optimizer step per iteration. Both arms therefore
   have the same generation budget (samples × tokens per iteration) and the
   same update budget (steps × batch).

Reported: held-out greedy and sampled pass@1 of the student before / after
per arm and seed, the teacher's, and the mean over seeds; a JSON with every
number.

Command::

  python experiments/gkd_bench.py --seeds=0,1,2 --out=/tmp/gkd_bench.json

Numbers from a loaded machine are not timings: report ``uptime`` with them.
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
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl_run

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data, models, RL).")
_LAMBDAS = flags.DEFINE_list("lmbdas", ["1.0", "0.0"], "λ of each arm.")
_BETA = flags.DEFINE_float("beta", 0.5, "β of the generalised JSD.")
_MINILLM = flags.DEFINE_bool("minillm", False, "Also run a MiniLLM arm (methods.minillm:"
                             " reverse-KL advantage + single-step KL, student samples)"
                             " at the same budget.")
_STEPS = flags.DEFINE_integer("steps", 150, "GKD iterations per arm.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per iteration.")
_N = flags.DEFINE_integer("n", 2, "Samples per prompt.")
_LR = flags.DEFINE_float("lr", 1e-3, "Distillation learning rate.")
_N_TRAIN = flags.DEFINE_integer("n_train", 3000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 200, "Held-out problems.")
_TEACHER_STEPS = flags.DEFINE_integer("teacher_steps", 450, "Teacher SFT steps.")
_STUDENT_STEPS = flags.DEFINE_integer("student_steps", 150, "Student warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "SFT learning rate.")
_TEACHER_D = flags.DEFINE_integer("teacher_d", 64, "Teacher width.")
_TEACHER_LAYERS = flags.DEFINE_integer("teacher_layers", 2, "Teacher layers.")
_STUDENT_D = flags.DEFINE_integer("student_d", 32, "Student width.")
_STUDENT_LAYERS = flags.DEFINE_integer("student_layers", 2, "Student layers.")
_EVAL_SAMPLES = flags.DEFINE_integer("eval_samples", 2, "Samples per held-out problem.")
_OUT = flags.DEFINE_string("out", "/tmp/gkd_bench.json", "JSON output (+ .md table).")

DIGITS = 2
MAX_NEW = DIGITS + 2        # answer digits (+ carry) + EOS


def _cfg(tok, d, layers):
  return mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                         n_layers=layers, n_heads=4, n_kv_heads=2,
                         head_dim=d // 4, d_ff=4 * d)


def run_seed(seed: int, tok) -> dict:
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[DIGITS], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, labeled_fraction=0.5, seed=seed,
      task_format={"reverse": True})
  prompts = [t.prompt for t in labeled]
  targets = [t.target for t in labeled]
  ev = dict(tokenizer=tok, tasks=test, temperature=1.0,
            samples=_EVAL_SAMPLES.value, max_new_tokens=MAX_NEW, seed=seed + 7)
  t0 = time.perf_counter()
  t_model, t_init = mmodel.init(_cfg(tok, _TEACHER_D.value, _TEACHER_LAYERS.value),
                                jax.random.key(1000 + seed))
  t_params = rl_run.supervised(model=t_model, params=t_init, tokenizer=tok,
                               prompts=prompts, targets=targets,
                               steps=_TEACHER_STEPS.value,
                               learning_rate=_SFT_LR.value, seed=seed, desc="teacher")
  teacher_eval = rl_run.evaluate(model=t_model, params=t_params, **ev)
  s_model, s_init = mmodel.init(_cfg(tok, _STUDENT_D.value, _STUDENT_LAYERS.value),
                                jax.random.key(seed))
  warm = rl_run.supervised(model=s_model, params=s_init, tokenizer=tok,
                           prompts=prompts, targets=targets,
                           steps=_STUDENT_STEPS.value, learning_rate=_SFT_LR.value,
                           seed=seed, desc="student")
  before = rl_run.evaluate(model=s_model, params=warm, **ev)
  print(f"[gkd_bench] seed {seed}: teacher {teacher_eval} student {before}"
        f" ({time.perf_counter() - t0:.0f}s)", flush=True)
  arms = []
  spec = RolloutSpec(n=_N.value, max_new_tokens=MAX_NEW, temperature=1.0)
  plan = [float(x) for x in _LAMBDAS.value] + (["minillm"] if _MINILLM.value else [])
  for lmbda in plan:
    if lmbda == "minillm":
      method = methods_lib.minillm(rollout=spec, k=tok.vocab_size,
                                   row_chunk=_PROMPTS.value * _N.value,
                                   chunked=False, name="minillm")
    else:
      method = methods_lib.gkd(
          rollout=spec, lmbda=lmbda, beta=_BETA.value, k=tok.vocab_size,
          row_chunk=_PROMPTS.value * _N.value, name=f"gkd_l{lmbda:g}",
          chunked=False)   # the documented tables' path (docs/distillation_gkd.md)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 max_grad_norm=1.0)
    t0 = time.perf_counter()
    trainer = loop.Loop(model=s_model, params=warm, method=method, tokenizer=tok,
                        tasks=unlabeled, optimizer=opt,
                        prompts_per_step=_PROMPTS.value, seed=seed,
                        roles={"teacher": (t_model, t_params)},
                        compiler_options=loop.FAST_COMPILE)
    history = trainer.run(_STEPS.value, log_every=max(1, _STEPS.value // 5))
    after = rl_run.evaluate(model=s_model, params=trainer.state.params, **ev)
    k = max(1, min(5, len(history) // 2))
    div = "kd/divergence" if lmbda == "minillm" else "gkd/divergence"
    arm = dict(
        lmbda=lmbda, after=after, seconds=time.perf_counter() - t0,
        teacher_sampled=float(np.mean([h.get("gkd_teacher_sampled", 0.0)
                                       for h in history])),
        gen_tokens=float(np.sum([h["completion_length/mean"] for h in history])
                         * _PROMPTS.value * _N.value),
        divergence=(float(np.mean([h[div] for h in history[:k]])),
                    float(np.mean([h[div] for h in history[-k:]]))))
    print(f"[gkd_bench] seed {seed}: {arm}", flush=True)
    arms.append(arm)
  return dict(seed=seed, teacher=teacher_eval, before=before, arms=arms)


def _label(x) -> str:
  return x if isinstance(x, str) else f"λ={x:g}"


def table(results) -> str:
  lam = [a["lmbda"] for a in results[0]["arms"]]
  lines = [
      f"Held-out {DIGITS}-digit addition pass@1 of the student (greedy; sampled ="
      f" mean of {_EVAL_SAMPLES.value} at T=1). GKD β={_BETA.value}, k=V,"
      f" {_STEPS.value} iterations × {_PROMPTS.value} prompts × n={_N.value}"
      " per arm, same warm start per seed. div = the training JSD (first → last"
      " iterations, on the arm's own samples).", "",
      "| seed | teacher greedy | student warm start | "
      + " | ".join(f"{_label(x)} greedy | {_label(x)} sampled | {_label(x)} div"
                   for x in lam)
      + " |",
      "|" + "---|" * (3 + 3 * len(lam))]
  for r in results:
    cells = [str(r["seed"]), f"{r['teacher']['greedy']['all']:.3f}",
             f"{r['before']['greedy']['all']:.3f} / {r['before']['sampled']['all']:.3f}"]
    for a in r["arms"]:
      cells += [f"{a['after']['greedy']['all']:.3f}",
                f"{a['after']['sampled']['all']:.3f}",
                f"{a['divergence'][0]:.3f} → {a['divergence'][1]:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  mean = lambda f: float(np.mean([f(r) for r in results]))
  cells = ["mean", f"{mean(lambda r: r['teacher']['greedy']['all']):.3f}",
           f"{mean(lambda r: r['before']['greedy']['all']):.3f} /"
           f" {mean(lambda r: r['before']['sampled']['all']):.3f}"]
  for j in range(len(lam)):
    cells += [f"{mean(lambda r: r['arms'][j]['after']['greedy']['all']):.3f}",
              f"{mean(lambda r: r['arms'][j]['after']['sampled']['all']):.3f}", ""]
  lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  tok = char_tokenizer.CharTokenizer(alphabet="0123456789+=")
  results = [run_seed(int(s), tok) for s in _SEEDS.value]
  text = table(results)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(flags={k: flags.FLAGS[k].value for k in (
        "seeds", "lmbdas", "beta", "minillm", "steps", "prompts", "n", "lr", "n_train",
        "n_test", "teacher_steps", "student_steps", "teacher_d", "teacher_layers",
        "student_d", "student_layers")},
        results=results), f, indent=1, default=str)
  with open(_OUT.value[:-5] + ".md" if _OUT.value.endswith(".json")
            else _OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write(text)


if __name__ == "__main__":
  app.run(main)
