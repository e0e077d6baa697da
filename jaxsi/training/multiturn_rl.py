"""Held-out self-correction evaluation (one episode per task).

(The multi-turn RL loop is ``jaxsi.training.loop.Loop`` with the
``rollouts.Episodes`` stage.)
"""

from __future__ import annotations

import time
from typing import Any, Optional

import jax
import numpy as np

from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import rollouts


def turn_reward_fn(reward_fns, *, timeout_s: float = 60.0):
  """``fn(tasks, texts) -> f32[B]``: the summed components of ``reward_fns``.

  Runs each fn through ``reward_fn.safe_rewards`` (a failing fn gives NaN
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


def evaluate_self_correction(*, model, params, tokenizer, tasks, spec, reward_fns,
                             strategy, max_new_tokens: int, seed: int = 0,
                             batch_size: int = 128, first: int = 1,
                             second: int = 2) -> dict:
  """Held-out self-correction metrics of ``params`` (one episode per task).

  Args:
    model, params, tokenizer: the policy.
    tasks: evaluation tasks.
    spec: the EpisodeSpec (usually ``stop_on_correct=False`` so every task
      gets both attempts, as in SCoRe's evaluation).
    reward_fns: turn graders.
    strategy: decoding strategy (greedy for the bench).
    max_new_tokens: per-turn budget.
    seed: PRNG seed.
    batch_size: tasks per episode batch (the last batch is padded with dummy
      rows so every batch has one shape).
    first, second: the compared turns.

  Returns:
    :func:`multiturn.self_correction_stats` of all tasks plus 'episodes'
    (the per-task texts, rewards and injected turns).
  """
  from jaxsi.data import batching  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
  prompts = batching.encode_prompts(tokenizer, tasks)
  p = buckets_lib.bucket_size(max(len(x) for x in prompts),
                              buckets_lib.DEFAULT_PROMPT_BUCKETS)
  reward = turn_reward_fn(reward_fns)
  rewards, records = [], []
  for c0 in range(0, len(tasks), batch_size):
    chunk = list(range(c0, min(c0 + batch_size, len(tasks))))
    pad = batch_size - len(chunk)
    rows = [prompts[i] for i in chunk] + [[tokenizer.pad_id]] * pad
    tokens, mask = rollouts.left_pad(rows, p, tokenizer.pad_id)
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
  stats = multiturn.self_correction_stats(np.concatenate(rewards), first=first,
                                          second=second,
                                          threshold=spec.success_threshold)
  stats["episodes"] = records
  return stats
