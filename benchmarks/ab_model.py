"""Interleaved A/B timing of model variants on the SFT and GRPO update steps.

Usage::

  python benchmarks/ab_model.py --config small --variants base,scan --reps 7
  python benchmarks/ab_model.py --config tiny --variants base,scan --step grpo

A variant is a set of ``ModelConfig`` overrides (``VARIANTS`` below; or
``name:field=value;field=value`` on the command line). Every variant's update
step is compiled first; then the timed calls alternate between variants, one
call each per repetition, so that load on a shared machine hits all of them
alike. Prints the median and min per variant and the ratio to the first one,
plus the compile time of each. Report the ``uptime`` load next to the numbers:
on a loaded machine only the ratios mean something.

``run_ab`` is the library form: variants may also carry a context manager
that is entered while the variant's step is traced (to compare against an
implementation kept only in the calling script).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Callable, Dict, Optional, Tuple

import jax
import numpy as np

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib
from jaxsi.transforms import kl as kl_lib
from jaxsi.transforms import policy_losses as pg_lib
from jaxsi.transforms.base import objective as objective_lib

VARIANTS: Dict[str, dict] = {
    "base": {},
    "scan": {"scan_layers": True},
    "noscan": {"scan_layers": False},
    "remat": {"remat": True},
}


def _batch(*, batch: int, seq: int, vocab: int, seed: int, grpo: bool) -> Trajectory:
  rng = np.random.default_rng(seed)
  loss_mask = np.zeros((batch, seq), bool)
  loss_mask[:, seq // 4:] = True
  traj = Trajectory.create(rng.integers(1, vocab, size=(batch, seq)), loss_mask=loss_mask)
  if grpo:
    lp = -np.abs(rng.normal(size=(batch, seq))).astype(np.float32)
    traj = traj.replace(behaviour_logprobs=lp * loss_mask, old_logprobs=lp * loss_mask,
                        ref_logprobs=lp * loss_mask,
                        advantages=rng.normal(size=(batch, seq)).astype(np.float32)
                        * loss_mask)
  return traj


def _objective(step: str):
  if step == "sft":
    return steps_lib.sft_objective()
  return objective_lib(
      (1.0, pg_lib.pg_clip(eps_low=0.2, eps_high=0.2, agg="seq-mean-token-mean"), "pg"),
      (0.04, kl_lib.kl_penalty(estimator="k3"), "kl"))


def run_ab(variants: Dict[str, Tuple[dict, Optional[Callable[[], contextlib.AbstractContextManager]]]],
           *, config: str, batch: int, seq: int, vocab: int, reps: int,
           step: str = "sft") -> Dict[str, dict]:
  """Compiles each variant's update step, then times them interleaved.

  Args:
    variants: name -> (ModelConfig overrides, context-manager factory or None
      entered while tracing that variant).
    config: model preset.
    batch, seq, vocab: batch shape and vocabulary.
    reps: timed calls per variant (alternating).
    step: 'sft' (NLL) or 'grpo' (clipped policy gradient + 0.04 k3 KL).

  Returns:
    name -> {'median_s', 'min_s', 'compile_s', 'loss'}.
  """
  tx = opt_lib.make_optimizer(learning_rate=1e-3, schedule="constant", weight_decay=0.1)
  grpo = step == "grpo"
  trajs = [_batch(batch=batch, seq=seq, vocab=vocab, seed=i, grpo=grpo)
           for i in range(reps + 1)]
  run = {}
  for name, (overrides, ctx) in variants.items():
    cfg = mcfg.get_config(config, vocab_size=vocab, **overrides)
    model, params = mmodel.init(cfg, jax.random.key(0))
    update = steps_lib.make_update_step(model=model, optimizer=tx, objective=_objective(step))
    state = ts_lib.create_train_state(params, tx, jax.random.key(1))
    with (ctx() if ctx is not None else contextlib.nullcontext()):
      t0 = time.perf_counter()
      compiled = update.lower(state, trajs[0]).compile()
      compile_s = time.perf_counter() - t0
    state, m = compiled(state, trajs[0])
    jax.block_until_ready(state)
    run[name] = dict(compiled=compiled, state=state, times=[], compile_s=compile_s,
                     loss=float(m["loss"]))
  for traj in trajs[1:]:
    for name, r in run.items():
      t0 = time.perf_counter()
      r["state"], m = r["compiled"](r["state"], traj)
      jax.block_until_ready((r["state"], m))
      r["times"].append(time.perf_counter() - t0)
  return {name: dict(median_s=statistics.median(r["times"]), min_s=min(r["times"]),
                     compile_s=r["compile_s"], loss=r["loss"])
          for name, r in run.items()}


def report(results: Dict[str, dict], title: str) -> None:
  load = os.getloadavg()
  print(f"{title}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
  first = next(iter(results.values()))["median_s"]
  print(f"{'variant':12} {'median ms':>10} {'min ms':>8} {'ratio':>6} {'compile s':>9} {'loss':>9}")
  for name, r in results.items():
    print(f"{name:12} {r['median_s'] * 1e3:10.1f} {r['min_s'] * 1e3:8.1f} "
          f"{r['median_s'] / first:6.3f} {r['compile_s']:9.1f} {r['loss']:9.4f}")


def _parse_variant(text: str) -> Tuple[str, dict]:
  if ":" not in text:
    if text not in VARIANTS:
      raise SystemExit(f"ab_model: unknown variant {text!r}; known: {sorted(VARIANTS)} "
                       "or name:field=value;field=value")
    return text, VARIANTS[text]
  name, body = text.split(":", 1)
  overrides = {}
  for item in filter(None, body.split(";")):
    field, value = item.split("=", 1)
    overrides[field] = {"True": True, "False": False}.get(value, value)
  return name, overrides


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="small")
  parser.add_argument("--variants", default="noscan,scan")
  parser.add_argument("--step", default="sft", choices=("sft", "grpo"))
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--vocab", type=int, default=256)
  parser.add_argument("--reps", type=int, default=7)
  args = parser.parse_args()
  variants = dict(_parse_variant(v) for v in args.variants.split(","))
  results = run_ab({n: (o, None) for n, o in variants.items()}, config=args.config,
                   batch=args.batch, seq=args.seq, vocab=args.vocab, reps=args.reps,
                   step=args.step)
  report(results, f"{args.step} update, {args.config}, batch {args.batch} x {args.seq}, "
         f"vocab {args.vocab}, median of {args.reps} interleaved calls")


if __name__ == "__main__":
  main()
