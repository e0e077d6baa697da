r"""One GRPO iteration on both sides: jaxsi's ``Loop`` and TRL's ``GRPOTrainer``.

Shared by ``benchmarks/compare_trl.py`` and ``benchmarks/peers.py``. Both
sides get: the same random Qwen2-shaped decoder (the jaxsi params, written
as a local HF checkpoint for TRL, ``torch_port``), the same character
vocabulary and prompts (1–2 digit addition, ``make_tasks('addition')``), the
same batch (prompts × n samples), group size n, completion length, β = 0.04
(k3 KL to the frozen initial policy), one optimizer step per rollout batch,
learning rate 1e-6, temperature 1 and a correctness reward. Both do one
reference forward pass and one policy forward + backward per iteration:
jaxsi copies π_old from the sampler (``old_logprobs='on_policy'``), as TRL
does with ``num_iterations=1``; ``'rescore'`` runs methods.grpo's default
extra frozen forward pass instead. TRL generates with
``transformers.generate`` (no vLLM) and uses ``loss_type='grpo'``; its
default gradient checkpointing is turned off (jaxsi does not rematerialise).

Prompt length differs by one token: jaxsi prepends BOS to its prompts, the
HF tokenizer here adds none. Completion lengths can differ (random models
rarely emit EOS, so both usually generate the full length); the mean
lengths and rewards are returned so a reader can see that.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Callable, Optional

import bench_env
import torch_port

TRL_MODULES = ("torch", "transformers", "datasets", "accelerate", "trl")


def make_tasks(n_prompts: int):
  """The addition tasks both sides draw prompts from."""
  from jaxsi.data import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  return tasks_lib.make_tasks("addition", max(64, n_prompts * 8),
                              difficulty=[1, 2], seed=0)


def jaxsi_trainer(*, model, params, tok, tasks, prompts: int, n: int,
                  max_new_tokens: int, old_logprobs: str = "on_policy"):
  """jaxsi's GRPO ``Loop`` on ``params`` (one ``step()`` = one iteration)."""
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  from jaxsi.spec import RolloutSpec  # pylint: disable=g-import-not-at-top
  from jaxsi.training import loop  # pylint: disable=g-import-not-at-top
  from jaxsi.training import optimizer as opt_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.transforms import advantages, importance, rescoring  # pylint: disable=g-import-not-at-top
  from jaxsi.transforms.base import chain  # pylint: disable=g-import-not-at-top
  if old_logprobs not in ("on_policy", "rescore"):
    raise ValueError(f"old_logprobs={old_logprobs!r}: expected 'on_policy' or "
                     "'rescore'")
  method = methods.grpo(rollout=RolloutSpec(n=n, max_new_tokens=max_new_tokens),
                        kl_coef=0.04, drop_zero_variance=False)
  if old_logprobs == "on_policy":
    # methods.grpo(kl_coef>0, drop_zero_variance=False) with π_old copied
    # from the sampler instead of rescored.
    method = dataclasses.replace(method, transform=chain(
        rescoring.ref_logprobs(), importance.old_logprobs(on_policy=True),
        advantages.group_advantages(scale="group")))
  opt = opt_lib.make_optimizer(learning_rate=1e-6, schedule="constant")
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=prompts, seed=0)


def summarize_jaxsi(warm: list, hist: list, step_s: float) -> dict:
  """What the peer benchmarks report of jaxsi's timed ``Loop.step`` metrics."""
  mean = lambda key: sum(h[key] for h in hist) / len(hist)
  return dict(
      step_s=step_s, times_s=[h["time/iteration_s"] for h in hist],
      split={k: mean(f"time/{k}_s")
             for k in ("rollout", "reward", "prepare", "update")},
      completion_length=mean("completion_length/mean"),
      reward=mean("reward/mean"),
      loss_step0=(warm or hist)[0].get("loss_first"))


def time_jaxsi(*, steps: int, warmup: int,
               counter: Optional[bench_env.CompileCounter] = None,
               bucket: str = "grpo", **trainer_kwargs) -> dict:
  """Seconds per jaxsi GRPO iteration (``Loop.step``) and its split.

  Args:
    steps: timed iterations.
    warmup: untimed iterations first (compilation).
    counter: counts compilations in ``{bucket}/warmup`` and ``{bucket}/timed``.
    bucket: the counter's bucket prefix.
    **trainer_kwargs: :func:`jaxsi_trainer`'s arguments.

  Returns:
    :func:`summarize_jaxsi`'s dict: ``step_s`` (mean of the timed steps),
    ``times_s``, ``split`` (rollout/reward/prepare/update seconds per step),
    ``completion_length``, ``reward``, ``loss_step0``.
  """
  trainer = jaxsi_trainer(**trainer_kwargs)
  counter = counter or _NullCounter()
  with counter.bucket(f"{bucket}/warmup"):
    warm = [trainer.step() for _ in range(warmup)]
  t0 = time.perf_counter()
  with counter.bucket(f"{bucket}/timed"):
    hist = [trainer.step() for _ in range(steps)]
  return summarize_jaxsi(warm, hist, (time.perf_counter() - t0) / steps)


class _NullCounter:

  def bucket(self, name):
    del name
    import contextlib  # pylint: disable=g-import-not-at-top
    return contextlib.nullcontext()


def _filter_kwargs(cls, kwargs: dict) -> dict:
  names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(
      cls) else set(inspect.signature(cls).parameters)
  return {k: v for k, v in kwargs.items() if k in names}


def time_trl(*, model_dir: str, tok, tasks, prompts: int, n: int,
             max_new_tokens: int, steps: int, warmup: int,
             gradient_checkpointing: bool = False,
             between: Optional[Callable[[int], None]] = None) -> dict:
  """Seconds per TRL ``GRPOTrainer`` step on the checkpoint in ``model_dir``.

  ``between(i)``, if given, runs after TRL's step i (0-based, warm-up steps
  included) has been timed: ``peers.py`` runs a jaxsi iteration there, so the
  two sides alternate step by step.

  ``gradient_checkpointing``: TRL 1.x turns it on by default (recomputing
  activations in the backward pass); jaxsi does not rematerialise unless
  ``ModelConfig.remat``, so it is off here to compare equal work.

  Returns:
    dict: ``step_s`` (mean of the timed steps), ``times_s``,
    ``completion_length`` and ``reward`` (TRL's last logged means).
  """
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_port.load_torch_model(model_dir)
  hf_tok = torch_port.hf_tokenizer(tok)
  by_prompt = {t.prompt: t for t in tasks}
  data = datasets.Dataset.from_dict({"prompt": list(by_prompt)})

  def correctness(prompts, completions, **kwargs):
    del kwargs
    return [by_prompt[p].verify(c) for p, c in zip(prompts, completions)]

  batch = prompts * n
  args = trl.GRPOConfig(**_filter_kwargs(trl.GRPOConfig, dict(
      output_dir="/tmp/jaxsi_compare_trl", per_device_train_batch_size=batch,
      generation_batch_size=batch, num_generations=n,
      max_completion_length=max_new_tokens, max_prompt_length=32,
      num_iterations=1, beta=0.04, loss_type="grpo", learning_rate=1e-6,
      max_steps=warmup + steps, logging_steps=10 ** 6,
      save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False,
      temperature=1.0, gradient_accumulation_steps=1, seed=0,
      dataloader_num_workers=0, disable_tqdm=True,
      gradient_checkpointing=gradient_checkpointing)))

  times = []

  class Timer(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
      self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      times.append(time.perf_counter() - self.t0)
      if between is not None:
        between(len(times) - 1)

  trainer = trl.GRPOTrainer(model=model, reward_funcs=correctness, args=args,
                            train_dataset=data, processing_class=hf_tok,
                            callbacks=[Timer()])
  trainer.train()
  timed = times[warmup:]
  # The metrics buffer is flushed into the log history by the final log.
  logs = trainer.state.log_history

  def last(key):
    vals = [h[key] for h in logs if key in h]
    return float(vals[-1]) if vals else float("nan")

  return dict(step_s=sum(timed) / max(len(timed), 1), times_s=timed,
              completion_length=last("completions/mean_length"),
              reward=last("reward"))

