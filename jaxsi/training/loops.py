"""Plain-Python outer loops over the jitted steps: SFT training, rollouts, eval.

The inner steps (update, sampler) are jitted and compile once per shape
bucket; these loops only move int32 arrays between them, read metrics once per
log interval, and decode text only where a verifier needs it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.data import batching
from jaxsi.rewards import verifiers
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.training import evaluation
from jaxsi.training import metrics as metrics_lib
from jaxsi.trajectory import Trajectory


@dataclasses.dataclass
class SFTResult:
  """What ``train_sft`` returns."""

  state: Any
  position: int
  steps_done: int
  skipped_nonfinite: int
  last_metrics: dict


def train_sft(
    *,
    state: Any,
    update_step: Callable,
    arrays: Mapping[str, np.ndarray],
    iterator: batching.EpochIterator,
    num_steps: int,
    start_position: int = 0,
    writer: Optional[metrics_lib.MetricWriter] = None,
    log_every: int = 50,
    desc: str = "sft",
    step_offset: int = 0,
    checkpoint_fn: Optional[Callable[[Any, int], None]] = None,
) -> SFTResult:
  """Runs ``num_steps`` supervised updates over ``arrays`` batches.

  Args:
    state: the TrainState (donated to ``update_step``; do not reuse it).
    update_step: ``update(state, traj) -> (state, metrics)``.
    arrays: ``batching.sft_arrays`` output (numpy, host).
    iterator: the resumable batch order.
    num_steps: updates to run.
    start_position: batch position to start from (resume).
    writer: metric writer (scalars every ``log_every`` steps).
    log_every: logging interval; metrics are fetched from device only then.
    desc: progress-bar label.
    step_offset: added to the local step for logging (global step).
    checkpoint_fn: called as ``fn(state, position)`` after every step; it
      decides itself whether to save (e.g. ``Checkpointer.should_save``).

  Returns:
    SFTResult with the final state and the next data position.
  """
  position = start_position
  skipped = 0
  last = {}
  acc = []
  with metrics_lib.ProgressBar(num_steps, desc, keys=("loss", "grad_norm"),
                               log_every=max(1, min(log_every, num_steps))) as bar:
    for i in range(num_steps):
      traj = batching.sft_trajectory(arrays, iterator.indices(position))
      state, m = update_step(state, traj)
      position += 1
      acc.append(m)
      bar.update(i + 1, m)
      if checkpoint_fn is not None:
        checkpoint_fn(state, position)
      if (i + 1) % log_every == 0 or i + 1 == num_steps:
        host = jax.device_get(acc)
        last = {k: float(np.mean([h[k] for h in host])) for k in host[-1]}
        skipped += int(sum(h.get("skipped_nonfinite", 0.0) for h in host))
        acc = []
        if writer is not None:
          writer.write_scalars(step_offset + i + 1,
                               {f"{desc}/{k}": v for k, v in last.items()})
  return SFTResult(state=state, position=position, steps_done=num_steps,
                   skipped_nonfinite=skipped, last_metrics=last)


def completion_ids(traj: Trajectory) -> list[list[int]]:
  """Token ids of each row's completion (the loss-mask tokens), host lists."""
  tokens, mask = jax.device_get((traj.tokens, traj.loss_mask))
  return [row[m].tolist() for row, m in zip(np.asarray(tokens), np.asarray(mask))]


def decode_completions(tokenizer, traj: Trajectory) -> list[str]:
  """Completion texts (special tokens such as EOS dropped)."""
  return [tokenizer.decode(ids) for ids in completion_ids(traj)]


@dataclasses.dataclass
class Rollout:
  """Sampled completions for a list of tasks (``n`` per task, contiguous)."""

  traj: Trajectory
  texts: list[str]
  correct: np.ndarray        # bool[num_tasks * n]
  answers: list[Optional[str]]
  n: int
  seconds: float
  tokens_generated: int


def rollout(
    *,
    model: Any,
    params: Any,
    tokenizer: Any,
    tasks: Sequence[Any],
    rng: jax.Array,
    strategy: Any,
    n: int,
    max_new_tokens: int,
    batch_size: int = 256,
    prompt_buckets: Sequence[int] = (16, 32, 64, 128, 256),
) -> Rollout:
  """Samples ``n`` completions per task in fixed-size chunks and verifies them.

  Chunks of ``batch_size // n`` prompts are padded to the same prompt count
  (dummy rows are dropped), so the sampler compiles once per prompt bucket.
  """
  per_chunk = max(1, batch_size // n)
  prompts = batching.encode_prompts(tokenizer, tasks)
  trajs, texts = [], []
  start = time.perf_counter()
  generated = 0
  for c0 in range(0, len(tasks), per_chunk):
    chunk = prompts[c0:c0 + per_chunk]
    traj = sampler_lib.sample(
        model, params, chunk, rng=jax.random.fold_in(rng, c0), strategy=strategy,
        n=n, max_new_tokens=max_new_tokens, stop_ids=(tokenizer.eos_id,),
        pad_id=tokenizer.pad_id, prompt_buckets=prompt_buckets,
        batch_buckets=(per_chunk,))
    keep = len(chunk) * n
    traj = jax.tree.map(lambda x: x[:keep], traj)
    trajs.append(traj)
    chunk_texts = decode_completions(tokenizer, traj)
    texts.extend(chunk_texts)
    generated += int(np.sum(jax.device_get(traj.loss_mask)))
  seconds = time.perf_counter() - start
  correct, answers = [], []
  for i, text in enumerate(texts):
    task = tasks[i // n]
    correct.append(task.verify(text) >= 1.0)
    answers.append(verifiers.canonical_answer(task, text))
  return Rollout(traj=_concat_same_length(trajs), texts=texts,
                 correct=np.asarray(correct, bool), answers=answers, n=n,
                 seconds=seconds, tokens_generated=generated)


def _concat_same_length(trajs: Sequence[Trajectory]) -> Optional[Trajectory]:
  """Concatenates rollout chunks (padding to a common length), keeps group ids."""
  from jaxsi import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  if not trajs:
    return None
  length = max(t.length for t in trajs)
  trajs = [traj_lib.pad_length(t, length) for t in trajs]
  # Keep the sampler's group ids globally unique (offset per chunk).
  return traj_lib.concat(trajs)


def eval_records(tasks: Sequence[Any], ro: Rollout) -> list[dict]:
  """Per-task records for ``evaluation.evaluate``."""
  records = []
  for i, task in enumerate(tasks):
    sl = slice(i * ro.n, (i + 1) * ro.n)
    records.append(dict(task_id=task.id, category=task.category,
                        difficulty=task.difficulty, answers=ro.answers[sl],
                        correct=ro.correct[sl].tolist()))
  return records


def evaluate_tasks(*, model, params, tokenizer, tasks, rng, strategy, n: int,
                   max_new_tokens: int, batch_size: int = 256,
                   ks: Optional[Sequence[int]] = None,
                   maj_ks: Optional[Sequence[int]] = None) -> dict:
  """Samples and scores ``tasks``: pass@k / maj@k per category and difficulty."""
  ro = rollout(model=model, params=params, tokenizer=tokenizer, tasks=tasks,
               rng=rng, strategy=strategy, n=n, max_new_tokens=max_new_tokens,
               batch_size=batch_size)
  return evaluation.evaluate(eval_records(tasks, ro), ks=ks, maj_ks=maj_ks)
