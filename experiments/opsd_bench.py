r"""Bench: OPSD (privileged-context self-distillation) vs GRPO on tiny addition.

One tiny decoder, one SFT warm start shared by every arm: the labelled half
of 2-digit addition (answers least-significant digit first,
``rl_run.split_tasks``) plus, for every second labelled task, the same target
after the privileged prompt ``prompt|target|`` (the verified solution) (``Privileged.supervised_extras``:
the teacher has seen the privileged format). Then, from that warm start, on
the unlabelled half:

* ``grpo``   — the verifier's reward, group advantages, clipped PG (no KL);
* ``opsd``   — no reward in the loss: reverse KL(student ‖ sg same model
               under ``prompt|target|``) on the student's own samples
               (``methods.opsd``, kd estimator 'pg');
* ``opsd_rl``— GRPO + 0.1 · the OPSD term;
* ``opsd_topk`` — OPSD with the full-distribution reverse KL: the privileged
               teacher's whole next-token distribution (k = V, one chunked
               stop-gradient pass) against the student's update logits
               (``divergence='topk'``, β = 1);
* ``opsd_topk_nostop`` — the same without loss on the stop token
               (``kd_on_stop=False``);
* ``pi_distill`` — π-Distill: n/2 samples per prompt from the teacher
               (``prompt|target|``), each trained under both prompts,
               α·PG(teacher) + (1 − α)·PG(student, importance ratio), α = 0.5
               (``methods.pi_distill``; half the generated samples of the
               other arms, the same update rows);
* ``pi_distill_student`` — the same with α = 0 (only the student term).

Every arm makes the same number of updates (``--steps``, one per iteration)
on the same prompts per iteration with the same n: equal generation and
update budgets. Held-out greedy pass@1 (plain prompt, no privileged info) is
measured every ``--eval_every`` iterations, so the table reads accuracy
against generated tokens. ``--seeds`` repeats everything (warm start
included) per seed.

Command::

  python experiments/opsd_bench.py --seeds=0,1,2 --out=/tmp/opsd_bench.json

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
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import privileged
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import rl_run

_ARMS = flags.DEFINE_list("arms", ["grpo", "opsd", "opsd_rl", "opsd_topk",
                                   "opsd_topk_nostop", "pi_distill",
                                   "pi_distill_student"], "Arms to compare.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (data, model, RL).")
_STEPS = flags.DEFINE_integer("steps", 30, "RL iterations (= updates) per arm.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 10, "Held-out eval period.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per RL iteration.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt (every arm).")
_LR = flags.DEFINE_float("lr", 3e-4, "RL learning rate.")
_KD = flags.DEFINE_float("kd_coef", 1.0, "OPSD reverse-KL weight (arm opsd).")
_N_TRAIN = flags.DEFINE_integer("n_train", 1000, "Training problems (half labelled).")
_N_TEST = flags.DEFINE_integer("n_test", 128, "Held-out problems.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 200, "Warm-start SFT steps.")
_SFT_LR = flags.DEFINE_float("sft_lr", 3e-3, "Warm-start learning rate.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 2, "Decoder layers.")
_OUT = flags.DEFINE_string("out", "/tmp/opsd_bench.json", "JSON output (+ .md).")

DIGITS = 2
MAX_NEW = DIGITS + 2        # answer digits (+ carry) + EOS
ALPHABET = "0123456789+=|"
VOCAB = char_tokenizer.CharTokenizer(alphabet=ALPHABET).vocab_size


def make_method(name: str, n: int):
  spec = RolloutSpec(n=n, max_new_tokens=MAX_NEW, temperature=1.0)
  if name == "grpo":
    return methods_lib.grpo(rollout=spec, kl_coef=0.0, drop_zero_variance=True)
  if name == "opsd":
    return methods_lib.opsd(rollout=spec, context_fn=privileged.solution_context,
                            kd_coef=_KD.value)
  if name in ("opsd_topk", "opsd_topk_nostop"):
    return methods_lib.opsd(rollout=spec, context_fn=privileged.solution_context,
                            kd_coef=_KD.value, divergence="topk", k=VOCAB,
                            row_chunk=n, kd_on_stop=name == "opsd_topk", name=name,
                            chunked=False)   # the documented tables' path
  if name in ("pi_distill", "pi_distill_student"):
    return methods_lib.pi_distill(
        rollout=spec, context_fn=privileged.solution_context,
        alpha=0.5 if name == "pi_distill" else 0.0, name=name)
  if name == "opsd_rl":
    return methods_lib.opsd(rollout=spec, context_fn=privileged.solution_context,
                            pg_coef=1.0, kd_coef=0.1,
                            agg="seq-mean-token-mean", name="opsd_rl")
  raise ValueError(f"--arms: unknown arm {name!r} (grpo, opsd, opsd_rl, opsd_topk,"
                   " opsd_topk_nostop, pi_distill, pi_distill_student)")


def run_seed(seed: int) -> dict:
  tok = char_tokenizer.CharTokenizer(alphabet=ALPHABET)
  labeled, unlabeled, test = rl_run.split_tasks(
      task="addition", difficulty=[DIGITS], n_train=_N_TRAIN.value,
      n_test=_N_TEST.value, labeled_fraction=0.5, seed=seed,
      task_format={"reverse": True})
  d = _D_MODEL.value
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=d,
                        n_layers=_LAYERS.value, n_heads=4, n_kv_heads=2,
                        head_dim=d // 4, d_ff=4 * d)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  # One warm start for every arm (the privileged format taught as OPSD's
  # stage asks, so the comparison differs only in the RL phase).
  extras = make_method("opsd", 1).rollout.supervised_extras(labeled)
  t0 = time.perf_counter()
  warm = rl_run.supervised(
      model=model, params=params, tokenizer=tok,
      prompts=[t.prompt for t in labeled] + [p for p, _ in extras],
      targets=[t.target for t in labeled] + [t for _, t in extras],
      steps=_SFT_STEPS.value, learning_rate=_SFT_LR.value, seed=seed)
  ev = dict(model=model, tokenizer=tok, tasks=test, temperature=1.0,
            samples=0, max_new_tokens=MAX_NEW, seed=seed + 7)
  priv = [_privileged_task(t) for t in test]
  before = rl_run.evaluate(params=warm, **ev)["greedy"]["all"]
  teacher = rl_run.evaluate(params=warm, **dict(ev, tasks=priv))["greedy"]["all"]
  print(f"[opsd_bench] seed {seed} warm start ({time.perf_counter() - t0:.0f}s):"
        f" pass@1 {before:.3f}, under prompt|target| {teacher:.3f}", flush=True)
  arms = {}
  for name in _ARMS.value:
    method = make_method(name, _N.value)
    opt = opt_lib.make_optimizer(learning_rate=_LR.value, schedule="constant",
                                 warmup_steps=5, total_steps=_STEPS.value + 6,
                                 max_grad_norm=1.0)
    t0 = time.perf_counter()
    trainer = loop.Loop(model=model, params=warm, method=method, tokenizer=tok,
                        tasks=unlabeled, optimizer=opt,
                        prompts_per_step=_PROMPTS.value, seed=seed,
                        compiler_options=loop.FAST_COMPILE)
    curve = [dict(iteration=0, gen_tokens=0, pass1=before)]
    tokens = [0]

    def callback(it, metrics, trainer=trainer, curve=curve, tokens=tokens):
      del metrics
      tokens[0] += int(trainer.last_batch.info["gen_tokens"])
      if it % _EVAL_EVERY.value == 0 or it == _STEPS.value:
        acc = rl_run.evaluate(params=trainer.state.params, **ev)["greedy"]["all"]
        curve.append(dict(iteration=it, gen_tokens=tokens[0], pass1=acc))

    history = trainer.run(_STEPS.value, log_every=max(1, _STEPS.value // 3),
                          callback=callback)
    k = max(1, min(5, len(history) // 2))
    reward = [float(np.mean([h["reward/mean"] for h in history[:k]])),
              float(np.mean([h["reward/mean"] for h in history[-k:]]))]
    kd = [h.get("kd/reverse_kl", h.get("kd/divergence")) for h in history]
    arms[name] = dict(curve=curve, train_reward=reward,
                      reverse_kl=[kd[0], kd[-1]] if kd[0] is not None else None,
                      seconds=time.perf_counter() - t0)
    print(f"[opsd_bench] seed {seed} {name}: {arms[name]}", flush=True)
  return dict(seed=seed, warm_pass1=before, warm_privileged_pass1=teacher,
              arms=arms)


def _privileged_task(task):
  """The test task with the privileged prompt (the teacher's accuracy)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(task, prompt=privileged.solution_context(task))


def table(results: list) -> str:
  seeds = [r["seed"] for r in results]
  lines = [
      f"Held-out {DIGITS}-digit addition greedy pass@1 (plain prompt), mean ±"
      f" std over seeds {seeds}; {_STEPS.value} updates × {_PROMPTS.value}"
      f" prompts × n={_N.value} rows per arm (equal update budgets; π-Distill"
      " generates n/2 samples per prompt);"
      " tokens = generated completion tokens so far.", "",
      "| arm | iteration | generated tokens | pass@1 | train reward first → last |",
      "|---|---|---|---|---|"]
  w = np.array([r["warm_pass1"] for r in results])
  wt = np.array([r["warm_privileged_pass1"] for r in results])
  lines.append(f"| warm start | 0 | 0 | {w.mean():.3f} ± {w.std():.3f} | – |")
  lines.append(f"| (teacher: warm start under prompt\\|target\\|) | 0 | 0 |"
               f" {wt.mean():.3f} ± {wt.std():.3f} | – |")
  for name in _ARMS.value:
    curves = [r["arms"][name]["curve"] for r in results]
    rew = np.array([r["arms"][name]["train_reward"] for r in results])
    for j in range(1, len(curves[0])):
      acc = np.array([c[j]["pass1"] for c in curves])
      tok = np.mean([c[j]["gen_tokens"] for c in curves])
      last = j == len(curves[0]) - 1
      rw = (f"{rew[:, 0].mean():.3f} → {rew[:, 1].mean():.3f}" if last else "")
      lines.append(f"| {name} | {curves[0][j]['iteration']} | {tok:.0f} |"
                   f" {acc.mean():.3f} ± {acc.std():.3f} | {rw} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  results = [run_seed(int(s)) for s in _SEEDS.value]
  text = table(results)
  print(text)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(flags={k: flags.FLAGS[k].value for k in (
        "arms", "seeds", "steps", "eval_every", "prompts", "n", "lr", "kd_coef",
        "n_train", "n_test", "sft_steps", "sft_lr", "d_model", "layers")},
                   results=results), f, indent=1, default=str)
  with open(_OUT.value + ".md", "w", encoding="utf-8") as f:
    f.write(text)


if __name__ == "__main__":
  app.run(main)
