"""The context the loop hands to rollout and reward stages, per phase.

A rollout stage (``jaxsi.sampling.rollouts``) or a device reward stage
(``jaxsi.rewards.stages``) never sees the loop itself: it calls the methods
of a :class:`StageContext` bound to one :class:`Phase` (a method with what
the loop built for it). Host rewards see the whole batch as
``stages.RewardInputs`` with group and prompt ids.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.data import batching
from jaxsi.rewards import stages as reward_stages
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import rollouts
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.sampling import strategies
from jaxsi.training import placement


@dataclasses.dataclass
class Phase:
  """A method with what the loop built for it (stages, jitted pieces)."""

  method: spec_lib.Method
  stages: tuple
  reward_names: tuple
  strategy: Any
  scorers: tuple
  lora_reference: bool
  train: Callable
  ctx: Any = None


class StageContext:
  """What a rollout stage and a reward stage may call.

  The interface of ``jaxsi.sampling.rollouts`` (``next_prompts``,
  ``prompt_arrays``, ``generate``, ``rewards``, ``turn_reward``, ``model``,
  ``tokenizer``, ``tasks``, ``strategy``, ``stop_ids``, ``pad_id``,
  ``to_host``) and of ``jaxsi.rewards.stages`` device scorers
  (``generate_text``, ``reward_timeout_s``), bound to one phase of a loop.
  """

  def __init__(self, loop: Any, phase: Phase):
    self._loop = loop
    self._phase = phase
    self.model = loop.role_models[phase.method.train]
    self.tokenizer = loop.tokenizer
    self.tasks = loop.tasks
    self.stop_ids = loop.stop_ids
    self.pad_id = loop.pad_id
    self.strategy = phase.strategy
    self.reward_timeout_s = loop.reward_timeout_s
    self.to_host = placement.to_host
    self.reward_errors: list[str] = []   # first error texts of this iteration

  # -- rollout stage interface
  def next_prompts(self) -> np.ndarray:
    loop = self._loop
    index = np.asarray(loop.iterator.indices(loop.position))
    loop.position += 1
    return index

  def prompt_arrays(self, task_index, variant: Optional[str] = None):
    loop = self._loop
    source = loop.prompts if variant is None else loop.prompt_variants[variant]
    return rollouts.left_pad([source[i] for i in task_index],
                             self._loop.prompt_len, self.pad_id)

  def generate(self, params, task_index, rng, *, n: int,
               variant: Optional[str] = None, valid=None):
    """Host trajectory of ``n`` samples per task (jitted sampler)."""
    loop = self._loop
    tokens, mask = self.prompt_arrays(task_index, variant)
    valid = (np.ones((len(task_index),), bool) if valid is None
             else np.asarray(valid, bool))
    prompt_ids = np.asarray(task_index, np.int32)
    if loop.mesh is not None:
      tokens, mask, valid, prompt_ids = loop.place_rows(
          (tokens, mask, valid, prompt_ids))
    m = self._phase.method
    traj, _ = sampler_lib.generate(
        self.model, params, tokens, mask, rng=placement.host_key(rng),
        max_new_tokens=np.int32(m.max_new_tokens), strategy=self.strategy,
        n=int(n), gen_length=int(m.max_new_tokens), stop_ids=self.stop_ids,
        pad_id=self.pad_id, valid=valid, prompt_ids=prompt_ids)
    jax.block_until_ready(traj.tokens)
    return placement.to_host(traj)

  def rewards(self, traj, task_index):
    """(f32[B, K] rewards of the valid rows, NaN elsewhere; failed count)."""
    valid = np.asarray(traj.valid, bool)
    rows = np.flatnonzero(valid)
    tokens, loss_mask = traj.tokens, traj.loss_mask
    texts = [self.tokenizer.decode(tokens[r][loss_mask[r]].tolist()) for r in rows]
    group_ids = (np.asarray(traj.group_ids)[rows] if traj.group_ids is not None
                 else np.asarray(task_index)[rows])
    inputs = reward_stages.RewardInputs(
        tasks=[self.tasks[task_index[r]] for r in rows], completions=texts,
        group_ids=group_ids, prompt_ids=np.asarray(task_index)[rows], rows=rows,
        traj=jax.tree.map(lambda x: np.asarray(x)[rows], traj))
    cols, failed = self._run_stages(inputs)
    out = np.full((tokens.shape[0], len(self._phase.reward_names)), np.nan,
                  np.float32)
    if rows.size:
      out[rows] = cols
    return out, failed

  def _run_stages(self, inputs):
    cols, failed = [], 0
    for stage in self._phase.stages:
      r, info = stage(self, inputs)
      failed += int(info.get("num_failed", 0))
      for e in info.get("errors", ()):
        # 'sample 3: f raised …' — keep a few distinct texts, with one place.
        where, _, text = str(e).partition(": ")
        seen = {x.split(": ", 2)[-1] for x in self.reward_errors}
        if len(self.reward_errors) < 3 and (text or where) not in seen:
          names = ",".join(reward_stages.stage_names((stage,)))
          self.reward_errors.append(f"{names}: {where}: {text}" if text else f"{names}: {where}")
      cols.append(np.asarray(r, np.float32).reshape(len(inputs), -1))
    return np.concatenate(cols, axis=1), failed

  def turn_reward(self, tasks, texts) -> np.ndarray:
    """f32[len] summed reward-stage columns of one episode turn (each row its
    own retry unit: turns are graded per sample)."""
    index = np.arange(len(texts))
    inputs = reward_stages.RewardInputs(tasks=list(tasks), completions=list(texts),
                                        group_ids=index, prompt_ids=index,
                                        rows=index)
    cols, _ = self._run_stages(inputs)
    return np.nansum(cols, axis=1).astype(np.float32)

  # -- device reward stage interface
  def generate_text(self, role: str, prompts: Sequence[str], *,
                    max_new_tokens: int, strategy=None) -> list[str]:
    """Completions of ``role`` for prompt texts (greedy by default), batched
    to the rollout batch size so the sampler compiles once."""
    loop = self._loop
    model, params = loop.role_model(role), loop.role_params(role)
    ids = [batching.encode_prompt(self.tokenizer, p) for p in prompts]
    size = max(loop.batch_size, 1)
    bucket = buckets_lib.bucket_size(max((len(x) for x in ids), default=1),
                                     buckets_lib.DEFAULT_PROMPT_BUCKETS)
    out = []
    for c0 in range(0, len(ids), size):
      chunk = ids[c0:c0 + size]
      rows = chunk + [[self.pad_id]] * (size - len(chunk))
      tokens, mask = rollouts.left_pad(rows, bucket, self.pad_id)
      valid = np.arange(size) < len(chunk)
      traj, _ = sampler_lib.generate(
          model, params, jnp.asarray(tokens), jnp.asarray(mask),
          rng=placement.host_key(jax.random.key(c0)),
          max_new_tokens=np.int32(max_new_tokens),
          strategy=strategy or strategies.Greedy(), n=1,
          gen_length=int(max_new_tokens), stop_ids=self.stop_ids,
          pad_id=self.pad_id, valid=jnp.asarray(valid))
      host = placement.to_host(traj)
      for r in range(len(chunk)):
        out.append(self.tokenizer.decode(host.tokens[r][host.loss_mask[r]].tolist()))
    return out
