r"""jaxsi vs TRL: seconds per GRPO step on the same random Qwen2-shaped model.

Runs only when ``torch``, ``transformers``, ``datasets`` and ``trl`` are
installed (they are not jaxsi dependencies and this is not part of the tests);
otherwise it exits with a message saying what to install::

  pip install torch transformers   # if missing; keep an installed torch
  pip install --no-deps trl accelerate datasets
  pip install dill multiprocess pandas xxhash && pip check
  python benchmarks/compare_trl.py --preset=tiny --prompts=8 --n=8 \
      --max_new_tokens=32 --steps=5

Both sides get: the same decoder shape (a ``transformers.Qwen2Config`` built
from the jaxsi preset: vocabulary, width, layers, heads, KV heads, head dim,
MLP width, RoPE θ, tied embeddings), random weights, the same character
vocabulary and prompts (1–2 digit addition), the same batch (prompts × n
samples), group size n, completion length, β = 0.04, one optimizer step per
rollout batch, and a correctness reward. Both do one reference forward
pass and one policy forward + backward pass per step: jaxsi copies π_old
from the sampler (``--jaxsi_old_logprobs=on_policy``), as TRL does with
``num_iterations=1``. TRL (1.x) builds its reference model from the
policy's ``config._name_or_path``, so the random model is saved to a
temporary directory and loaded from there (nothing is downloaded). TRL generates with
``transformers.generate`` (no vLLM) and computes its loss with
``loss_type='grpo'``. The script times ``--steps`` steps after
``--warmup`` steps on each side and prints seconds per step and the ratio
TRL / jaxsi. Completion lengths can differ (random models rarely emit EOS, so
both usually generate the full length); the mean lengths are printed too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
import tempfile
import time

from absl import app
from absl import flags

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

REQUIRED = ("torch", "transformers", "datasets", "trl")


def missing_packages() -> list[str]:
  return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def _prompts_and_tasks(n_prompts: int):
  from jaxsi.data import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  tasks = tasks_lib.make_tasks("addition", max(64, n_prompts * 8),
                               difficulty=[1, 2], seed=0)
  return tasks


# ------------------------------------------------------------------ jaxsi
def time_jaxsi(cfg, tok, tasks) -> tuple[float, float]:
  import jax  # pylint: disable=g-import-not-at-top
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  from jaxsi.spec import RolloutSpec  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as mmodel  # pylint: disable=g-import-not-at-top
  from jaxsi.training import optimizer as opt_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import loop  # pylint: disable=g-import-not-at-top
  model, params = mmodel.init(cfg, jax.random.key(0))
  from jaxsi.transforms import advantages, importance, rescoring  # pylint: disable=g-import-not-at-top
  from jaxsi.transforms.base import chain  # pylint: disable=g-import-not-at-top
  method = methods.grpo(rollout=RolloutSpec(n=_N.value, max_new_tokens=_MAX_NEW.value),
                        kl_coef=0.04, drop_zero_variance=False)
  if _OLD.value == "on_policy":
    # Same chain as methods.grpo(kl_coef>0, drop_zero_variance=False) with
    # π_old copied from the sampler instead of rescored.
    method = dataclasses.replace(method, transform=chain(
        rescoring.ref_logprobs(), importance.old_logprobs(on_policy=True),
        advantages.group_advantages(scale="group")))
  opt = opt_lib.make_optimizer(learning_rate=1e-6, schedule="constant")
  trainer = loop.Loop(model=model, params=params, method=method,
                      tokenizer=tok, tasks=tasks, optimizer=opt,
                      prompts_per_step=_PROMPTS.value, seed=0)
  for _ in range(_WARMUP.value):
    trainer.step()
  t0 = time.perf_counter()
  hist = [trainer.step() for _ in range(_STEPS.value)]
  per_step = (time.perf_counter() - t0) / _STEPS.value
  length = sum(h["completion_length/mean"] for h in hist) / len(hist)
  split = {k: sum(h[f"time/{k}_s"] for h in hist) / len(hist)
           for k in ("rollout", "reward", "prepare", "update")}
  print("jaxsi split (s/step): " + ", ".join(f"{k} {v:.3f}"
                                             for k, v in split.items()))
  return per_step, length


# -------------------------------------------------------------------- TRL
def _hf_tokenizer(tok):
  """A transformers fast tokenizer with exactly the jaxsi character ids."""
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  vocab = {"<pad>": tok.pad_id, "<bos>": tok.bos_id, "<eos>": tok.eos_id}
  for c in tok.alphabet:
    vocab[c] = tok.char_id(c)
  for i in range(tok.vocab_size):
    if i not in vocab.values():
      vocab[f"<special_{i}>"] = i
  core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
  core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
  hf = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                               bos_token="<bos>", eos_token="<eos>")
  hf.padding_side = "left"
  return hf


def _filter_kwargs(cls, kwargs: dict) -> dict:
  names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(
      cls) else set(inspect.signature(cls).parameters)
  return {k: v for k, v in kwargs.items() if k in names}


def time_trl(cfg, tok, tasks) -> tuple[float, float]:
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  qcfg = transformers.Qwen2Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
      intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
      head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
      max_position_embeddings=cfg.max_seq_len, bos_token_id=tok.bos_id,
      eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
  model = transformers.Qwen2ForCausalLM(qcfg)
  # TRL (>= 1.x) builds its β > 0 reference model from the policy's
  # ``config._name_or_path``: save the random model locally and load it back
  # from there (nothing is downloaded).
  local = tempfile.mkdtemp(prefix="jaxsi_compare_trl_model_")
  model.save_pretrained(local)
  model = transformers.Qwen2ForCausalLM.from_pretrained(local,
                                                        dtype=torch.float32)
  hf_tok = _hf_tokenizer(tok)
  # jaxsi prepends BOS to its prompts; the HF tokenizer here adds none (one
  # token shorter prompts on the TRL side).
  by_prompt = {t.prompt: t for t in tasks}
  data = datasets.Dataset.from_dict({"prompt": list(by_prompt)})

  def correctness(prompts, completions, **kwargs):
    del kwargs
    return [by_prompt[p].verify(c) for p, c in zip(prompts, completions)]

  batch = _PROMPTS.value * _N.value
  args = trl.GRPOConfig(**_filter_kwargs(trl.GRPOConfig, dict(
      output_dir="/tmp/jaxsi_compare_trl", per_device_train_batch_size=batch,
      generation_batch_size=batch, num_generations=_N.value,
      max_completion_length=_MAX_NEW.value, max_prompt_length=32,
      num_iterations=1, beta=0.04, loss_type="grpo", learning_rate=1e-6,
      max_steps=_WARMUP.value + _STEPS.value, logging_steps=10 ** 6,
      save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False,
      temperature=1.0, gradient_accumulation_steps=1, seed=0,
      dataloader_num_workers=0, disable_tqdm=True)))

  times = []

  class Timer(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
      self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      times.append(time.perf_counter() - self.t0)

  trainer = trl.GRPOTrainer(model=model, reward_funcs=correctness, args=args,
                            train_dataset=data, processing_class=hf_tok,
                            callbacks=[Timer()])
  trainer.train()
  timed = times[_WARMUP.value:]
  per_step = sum(timed) / max(len(timed), 1)
  # The metrics buffer is flushed into the log history by the final log.
  logged = [h["completions/mean_length"] for h in trainer.state.log_history
            if "completions/mean_length" in h]
  length = float(logged[-1]) if logged else float("nan")
  return per_step, length


def main(argv):
  del argv
  missing = missing_packages()
  if missing:
    sys.exit(
        "compare_trl.py needs " + ", ".join(missing) + " (not jaxsi "
        "dependencies). Install them with `pip install torch transformers "
        "datasets trl` and run again; nothing was measured.")
  from jaxsi.data import char_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config(_PRESET.value, vocab_size=tok.vocab_size)
  tasks = _prompts_and_tasks(_PROMPTS.value)
  jx, jx_len = time_jaxsi(cfg, tok, tasks)
  tr, tr_len = time_trl(cfg, tok, tasks)
  print(f"model={_PRESET.value} batch={_PROMPTS.value}x{_N.value} "
        f"max_new_tokens={_MAX_NEW.value}")
  print(f"jaxsi: {jx:.3f} s/step (mean completion length {jx_len:.1f})")
  print(f"TRL:   {tr:.3f} s/step (mean completion length {tr_len:.1f})")
  print(f"ratio TRL / jaxsi = {tr / jx:.2f}x")


if __name__ == "__main__":
  app.run(main)
