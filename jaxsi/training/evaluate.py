r"""Sample and grade: held-out evaluation of a policy on tasks.

The sampling half of evaluation (``jaxsi.training.evaluation`` is the
metrics half, over already graded records):

* :func:`rollout` — ``n`` completions per task in fixed-size sampler chunks
  (chunk c of ``batch_size // n`` prompts uses ``fold_in(rng, c0)``, c0 its
  first task index), each verified (``task.verify``) and its answer extracted
  (``verifiers.canonical_answer``);
* :func:`evaluate_policy` — a rollout graded by ``evaluation.evaluate``:
  greedy (``n = 1``) or sampled pass@k and maj@k, overall, per category and
  per difficulty;
* :func:`evaluate_multi_turn` — one episode per task
  (``jaxsi.sampling.multiturn.run_episodes``: attempt → injected turn →
  attempt …) and the self-correction statistics of SCoRe (Kumar et al. 2024,
  §3): acc@t1, acc@t2, Δ(t1, t2), wrong→right, right→wrong.

Every function takes its PRNG seed explicitly; equal seeds give equal samples.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jaxsi import trajectory as traj_lib
from jaxsi.data import batching
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.rewards import verifiers
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.training import evaluation
from jaxsi.training import progress as progress_lib
from jaxsi.trajectory import Trajectory


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

  traj: Optional[Trajectory]
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
    desc: str = "eval",
) -> Rollout:
  """Samples ``n`` completions per task in fixed-size chunks and verifies them.

  Chunks of ``batch_size // n`` prompts are padded to the same prompt count
  (dummy rows are dropped), so the sampler compiles once per prompt bucket.
  A progress bar labelled ``desc`` counts the tasks done (silent in logs
  unless the rollout takes ``progress.PHASE_LINE_SECONDS``).
  """
  per_chunk = max(1, batch_size // n)
  prompts = batching.encode_prompts(tokenizer, tasks)
  trajs, texts = [], []
  start = time.perf_counter()
  generated = 0
  bar = progress_lib.ProgressBar(
      len(tasks), desc, keys=(), leave=False,
      min_line_seconds=progress_lib.PHASE_LINE_SECONDS)
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
    texts.extend(decode_completions(tokenizer, traj))
    generated += int(np.sum(jax.device_get(traj.loss_mask)))
    bar.update(c0 + len(chunk))
  bar.close()
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
  if not trajs:
    return None
  length = max(t.length for t in trajs)
  return traj_lib.concat([traj_lib.pad_length(t, length) for t in trajs])


def eval_records(tasks: Sequence[Any], ro: Rollout) -> list[dict]:
  """Per-task records for ``evaluation.evaluate``."""
  records = []
  for i, task in enumerate(tasks):
    sl = slice(i * ro.n, (i + 1) * ro.n)
    records.append(dict(task_id=task.id, category=task.category,
                        difficulty=task.difficulty, answers=ro.answers[sl],
                        correct=ro.correct[sl].tolist()))
  return records


def evaluate_policy(model: Any, params: Any, tokenizer: Any, tasks: Sequence[Any], *,
                    strategy: Any, n: int = 1, max_new_tokens: int, seed: int = 0,
                    batch_size: int = 256, ks: Optional[Sequence[int]] = None,
                    maj_ks: Optional[Sequence[int]] = None,
                    per_task: bool = False, desc: str = "eval") -> dict:
  """Samples ``n`` completions per task and grades them (pass@k, maj@k).

  Args:
    model, params, tokenizer: the policy.
    tasks: the evaluation tasks (``verify``, ``id``, ``category``,
      ``difficulty``).
    strategy: decoding strategy (``strategies.Greedy()`` with ``n = 1`` for
      greedy pass@1).
    n: samples per task.
    max_new_tokens: completion budget.
    seed: the rollout key is ``jax.random.key(seed)``.
    batch_size: sampler rows per call.
    ks, maj_ks, per_task: as ``evaluation.evaluate`` (defaults: pass@1, 2,
      4, … up to n; maj@n).
    desc: label of the progress bar (:func:`rollout`).

  Returns:
    ``evaluation.evaluate``'s dict: 'overall', 'by_category',
    'by_difficulty', 'by_category_difficulty' (and 'tasks').
  """
  ro = rollout(model=model, params=params, tokenizer=tokenizer, tasks=tasks,
               rng=jax.random.key(seed), strategy=strategy, n=n,
               max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)
  return evaluation.evaluate(eval_records(tasks, ro), ks=ks, maj_ks=maj_ks,
                             per_task=per_task)


def pass_at_1(model: Any, params: Any, tokenizer: Any, tasks: Sequence[Any], *,
              strategy: Any, n: int, max_new_tokens: int, seed: int,
              batch_size: int, desc: str = "eval") -> dict:
  """``{difficulty: pass@1, ..., 'all': overall pass@1}`` of :func:`evaluate_policy`
  (mean correctness over ``n`` samples per task)."""
  res = evaluate_policy(model, params, tokenizer, tasks, strategy=strategy, n=n,
                        max_new_tokens=max_new_tokens, seed=seed,
                        batch_size=batch_size, ks=(1,), maj_ks=(), desc=desc)
  out = {d: v["pass@1"] for d, v in res["by_difficulty"].items()}
  out["all"] = res["overall"]["pass@1"]
  return out


def _summed_rewards(reward_fns, *, timeout_s: float = 60.0):
  """``fn(tasks, texts) -> f32[B]``: the summed components of ``reward_fns``.

  Each fn runs through ``reward_fn.safe_rewards`` (a failing fn gives NaN
  rows, never an exception).
  """

  def fn(tasks, texts):
    total = np.zeros((len(texts),), np.float32)
    for f in reward_fns:
      k = len(reward_lib.reward_names(f))
      r, _, _ = reward_lib.safe_rewards(f, tasks, texts, timeout_s=timeout_s,
                                        num_components=k)
      total = total + np.asarray(r, np.float32).sum(axis=1)
    return total

  return fn


def evaluate_multi_turn(*, model, params, tokenizer, tasks, spec, reward_fns,
                        strategy, max_new_tokens: int, seed: int = 0,
                        batch_size: int = 128, first: int = 1,
                        second: int = 2) -> dict:
  """Held-out self-correction metrics of ``params`` (one episode per task).

  Args:
    model, params, tokenizer: the policy.
    tasks: evaluation tasks.
    spec: the ``multiturn.EpisodeSpec`` (usually ``stop_on_correct=False``
      so every task gets both attempts, as in SCoRe's evaluation).
    reward_fns: turn graders (their components are summed per turn).
    strategy: decoding strategy.
    max_new_tokens: per-turn budget.
    seed: batch c0 (first task index c0) uses ``fold_in(key(seed), c0)``.
    batch_size: tasks per episode batch (the last batch is padded with dummy
      rows so every batch has one shape).
    first, second: the compared turns.

  Returns:
    ``multiturn.self_correction_stats`` of all tasks plus 'episodes' (the
    per-task prompt, answer, texts, injected turns and rewards).
  """
  prompts = batching.encode_prompts(tokenizer, tasks)
  p = buckets_lib.bucket_size(max(len(x) for x in prompts),
                              buckets_lib.DEFAULT_PROMPT_BUCKETS)
  reward = _summed_rewards(reward_fns)
  rewards, records = [], []
  bar = progress_lib.ProgressBar(
      len(tasks), "eval/episodes", keys=(), leave=False,
      min_line_seconds=progress_lib.PHASE_LINE_SECONDS)
  for c0 in range(0, len(tasks), batch_size):
    chunk = list(range(c0, min(c0 + batch_size, len(tasks))))
    pad = batch_size - len(chunk)
    rows = [prompts[i] for i in chunk] + [[tokenizer.pad_id]] * pad
    tokens, mask = buckets_lib.left_pad(rows, length=p, pad_id=tokenizer.pad_id)
    chunk_tasks = [tasks[i] for i in chunk] + [tasks[chunk[0]]] * pad
    valid = np.arange(batch_size) < len(chunk)
    ep = multiturn.run_episodes(
        model, params, prompt_tokens=tokens, prompt_mask=mask,
        tasks=chunk_tasks, tokenizer=tokenizer, spec=spec, reward_fn=reward,
        rng=jax.random.fold_in(jax.random.key(seed), c0), strategy=strategy,
        n=1, max_new_tokens=max_new_tokens, stop_ids=(tokenizer.eos_id,),
        pad_id=tokenizer.pad_id, valid=valid)
    rewards.append(ep.rewards[:len(chunk)])
    for j, i in enumerate(chunk):
      records.append(dict(prompt=tasks[i].prompt, answer=tasks[i].answer,
                          texts=ep.texts[j], injected=ep.injected[j],
                          rewards=[None if not np.isfinite(x) else float(x)
                                   for x in ep.rewards[j]]))
    bar.update(chunk[-1] + 1)
  bar.close()
  stats = multiturn.self_correction_stats(np.concatenate(rewards), first=first,
                                          second=second,
                                          threshold=spec.success_threshold)
  stats["episodes"] = records
  return stats
