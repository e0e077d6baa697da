r"""jaxsi vs TRL: seconds per GRPO step on the same random Qwen2-shaped model.

Runs only when ``torch``, ``transformers``, ``datasets`` and ``trl`` are
installed (they are not jaxsi dependencies and this is not part of the tests);
otherwise it exits with a message saying what to install::

  pip install torch transformers   # if missing; keep an installed torch
  pip install --no-deps trl accelerate datasets
  pip install dill multiprocess pandas xxhash && pip check
  python benchmarks/compare_trl.py --preset=tiny --prompts=8 --n=8 \
      --max_new_tokens=32 --steps=5

Both sides get: the same random Qwen2-shaped decoder (the jaxsi preset with
q/k/v biases; its weights written as a local HF checkpoint that TRL loads,
``benchmarks/torch_port.py``), the same character
vocabulary and prompts (1–2 digit addition), the same batch (prompts × n
samples), group size n, completion length, β = 0.04, one optimizer step per
rollout batch, and a correctness reward. Both do one reference forward
pass and one policy forward + backward pass per step: jaxsi copies π_old
from the sampler (``--jaxsi_old_logprobs=on_policy``), as TRL does with
``num_iterations=1``. TRL (1.x) builds its reference model from the
policy's ``config._name_or_path``, which is that temporary directory
(nothing is downloaded). TRL generates with
``transformers.generate`` (no vLLM) and computes its loss with
``loss_type='grpo'`` and without the gradient checkpointing TRL turns on by
default (``--trl_gradient_checkpointing`` restores it; jaxsi does not
rematerialise). The script times ``--steps`` steps after
``--warmup`` steps on each side and prints seconds per step and the ratio
TRL / jaxsi. The set-up of both sides lives in ``benchmarks/grpo_setup.py``
(shared with ``benchmarks/peers.py``, which runs this comparison on several
shapes next to the supervised step and decoding). Completion lengths can differ (random models rarely emit EOS, so
both usually generate the full length); the mean lengths are printed too.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

import grpo_setup
import torch_port

_PRESET = flags.DEFINE_string("preset", "tiny", "jaxsi model preset.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per step.")
_N = flags.DEFINE_integer("n", 8, "Samples per prompt (group size).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Completion length.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps (compilation).")
_OLD = flags.DEFINE_enum(
    "jaxsi_old_logprobs", "on_policy", ["on_policy", "rescore"],
    "jaxsi's π_old: 'on_policy' copies the sampler's log-probs (what TRL does "
    "with num_iterations=1: no extra forward pass), 'rescore' runs the "
    "default extra frozen forward pass of methods.grpo.")
_TRL_GC = flags.DEFINE_bool(
    "trl_gradient_checkpointing", False,
    "TRL's default gradient checkpointing (recomputes activations; jaxsi does "
    "not), off by default for equal work.")


def main(argv):
  del argv
  missing = torch_port.missing(grpo_setup.TRL_MODULES)
  if missing:
    sys.exit(
        "compare_trl.py needs " + ", ".join(missing) + " (not jaxsi "
        "dependencies). Install them with `" + torch_port.install_hint(missing)
        + "` and run again; nothing was measured.")
  from jaxsi.data import char_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as mmodel  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  tok = char_tokenizer.CharTokenizer()
  cfg = torch_port.peer_config(
      mcfg.get_config(_PRESET.value, vocab_size=tok.vocab_size))
  model, params = mmodel.init(cfg, jax.random.key(0))
  model_dir = torch_port.save_checkpoint(cfg, params, tokenizer=tok)
  tasks = grpo_setup.make_tasks(_PROMPTS.value)
  common = dict(tok=tok, tasks=tasks, prompts=_PROMPTS.value, n=_N.value,
                max_new_tokens=_MAX_NEW.value, steps=_STEPS.value,
                warmup=_WARMUP.value)
  jx = grpo_setup.time_jaxsi(model=model, params=params,
                             old_logprobs=_OLD.value, **common)
  print("jaxsi split (s/step): " + ", ".join(
      f"{k} {v:.3f}" for k, v in jx["split"].items()))
  tr = grpo_setup.time_trl(model_dir=model_dir,
                           gradient_checkpointing=_TRL_GC.value, **common)
  print(f"model={_PRESET.value} batch={_PROMPTS.value}x{_N.value} "
        f"max_new_tokens={_MAX_NEW.value}")
  print(f"jaxsi: {jx['step_s']:.3f} s/step (mean completion length "
        f"{jx['completion_length']:.1f})")
  print(f"TRL:   {tr['step_s']:.3f} s/step (mean completion length "
        f"{tr['completion_length']:.1f})")
  print(f"ratio TRL / jaxsi = {tr['step_s'] / jx['step_s']:.2f}x")


if __name__ == "__main__":
  app.run(main)
