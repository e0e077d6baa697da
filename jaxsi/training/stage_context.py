"""The context a schedule hands to rollout and reward stages.

A rollout stage (``jaxsi.sampling.rollouts``) or a device reward stage
(``jaxsi.rewards.stages``) never sees the loop or the rounds schedule: it
calls the methods of a :class:`StageContext` built by either, over a fixed
task list with its encoded prompts. The loop builds one per :class:`Phase`
(a method with what the loop built for it; prompts from its resumable epoch
iterator); the rounds build one per sampled task list (prompts in order,
sampler batches padded to a fixed size with invalid dummy rows). Host rewards
see the whole batch as ``stages.RewardInputs`` with group and prompt ids.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

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
  (``generate_text``, ``reward_timeout_s``).

  Args:
    model: the sampling model.
    tokenizer: the tokenizer (its eos id stops a completion).
    tasks: the task list the prompt indices refer to.
    stages: the reward stages (``reward_stages.as_stages``).
    reward_names: the rollout stage's reward column names.
    strategy: the sampling strategy.
    max_new_tokens: the completion budget (the generation length).
    prompts: the encoded prompt of every task.
    next_prompts: ``fn() -> int[R]`` task indices of the next prompt batch.
    prompt_variants: ``{name: encoded prompts}`` a stage declares (hints …).
    prompt_len: a fixed prompt bucket (default: the bucket of each batch's
      longest prompt).
    batch_prompts: pad every sampler batch to this many prompt rows with
      invalid dummy rows (dropped from the result), so the sampler compiles
      once per prompt bucket (default: no padding).
    place_rows: ``fn(arrays) -> arrays`` placing prompt rows on a mesh.
    roles: what ``generate_text`` reads (``role_model(name)``,
      ``role_params(name)``), or None (a schedule without roles).
    text_batch: rows per ``generate_text`` sampler call.
    reward_timeout_s: seconds per host reward call.
  """

  def __init__(self, *, model, tokenizer, tasks: Sequence[Any], stages: Sequence[Any],
               reward_names: Sequence[str], strategy: Any, max_new_tokens: int,
               prompts: Sequence[Sequence[int]], next_prompts: Callable[[], Any],
               prompt_variants: Optional[Mapping[str, Sequence]] = None,
               prompt_len: Optional[int] = None, batch_prompts: Optional[int] = None,
               place_rows: Optional[Callable] = None, roles: Any = None,
               text_batch: int = 1, reward_timeout_s: float = 60.0):
    self.model, self.tokenizer, self.tasks = model, tokenizer, list(tasks)
    self.stages, self.reward_names = tuple(stages), tuple(reward_names)
    self.strategy, self.max_new_tokens = strategy, int(max_new_tokens)
    self.prompts, self.prompt_variants = prompts, dict(prompt_variants or {})
    self.next_prompts = next_prompts
    self.prompt_len, self.batch_prompts = prompt_len, batch_prompts
    self._place_rows, self._roles = place_rows, roles
    self.text_batch = max(1, int(text_batch))
    self.stop_ids = (int(tokenizer.eos_id),)
    self.pad_id = int(tokenizer.pad_id)
    self.reward_timeout_s = reward_timeout_s
    self.to_host = placement.to_host
    self.reward_errors: list[str] = []   # first error texts of this iteration
    # keep_caches: generate() also keeps (host traj, device KVCache) of each
    # call in ``caches`` (for a follow-up prompt that continues the
    # generation, jaxsi.sampling.continuation); off by default (memory).
    self.keep_caches = False
    self.caches: list = []

  # -- rollout stage interface
  def prompt_arrays(self, task_index, variant: Optional[str] = None):
    """Left-padded (int32[R', P], bool[R', P]) prompts of ``task_index``
    (R' = ``batch_prompts`` if set, else R)."""
    if variant is not None and variant not in self.prompt_variants:
      raise ValueError(f"StageContext: no prompt variant {variant!r} (the stage"
                       f" declares {sorted(self.prompt_variants)})")
    source = self.prompts if variant is None else self.prompt_variants[variant]
    rows = [source[i] for i in task_index]
    if self.batch_prompts is not None:
      rows += [[self.pad_id]] * (self.batch_prompts - len(rows))
    length = self.prompt_len or buckets_lib.bucket_size(
        max(len(x) for x in rows), buckets_lib.DEFAULT_PROMPT_BUCKETS)
    return rollouts.left_pad(rows, length, self.pad_id)

  def generate(self, params, task_index, rng, *, n: int,
               variant: Optional[str] = None, valid=None):
    """Host trajectory of ``n`` samples per task (jitted sampler)."""
    task_index = np.asarray(task_index)
    num = len(task_index)
    tokens, mask = self.prompt_arrays(task_index, variant)
    rows = tokens.shape[0]
    ok = np.arange(rows) < num
    if valid is not None:
      ok[:num] &= np.asarray(valid, bool)
    ids = np.full((rows,), -1, np.int32)
    ids[:num] = task_index
    if self._place_rows is not None:
      tokens, mask, ok, ids = self._place_rows((tokens, mask, ok, ids))
    traj, cache = sampler_lib.generate(
        self.model, params, tokens, mask, rng=placement.host_key(rng),
        max_new_tokens=np.int32(self.max_new_tokens), strategy=self.strategy,
        n=int(n), gen_length=self.max_new_tokens, stop_ids=self.stop_ids,
        pad_id=self.pad_id, valid=ok, prompt_ids=ids)
    host = placement.to_host(traj)
    if rows != num:
      host = jax.tree.map(lambda x: x[:num * n], host)
    if self.keep_caches:
      if rows != num:
        cache = cache.replace(k=cache.k[:, :num * n], v=cache.v[:, :num * n],
                              mask=cache.mask[:num * n])
      self.caches.append((host, cache))
    return host

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
    out = np.full((tokens.shape[0], len(self.reward_names)), np.nan,
                  np.float32)
    if rows.size:
      out[rows] = cols
    return out, failed

  def _run_stages(self, inputs):
    cols, failed = [], 0
    for stage in self.stages:
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
  def role_model_params(self, role: str):
    """(model, params) of ``role``, for device reward stages (scorers, judges).

    Raises:
      spec.ConfigurationError: this schedule has no roles, or not ``role``.
    """
    if self._roles is None:
      raise spec_lib.ConfigurationError(
          f"a reward stage reads role {role!r}, but this schedule has no roles"
          " (device scorers run under the loop, rl_run.run)")
    try:
      return self._roles.role_model(role), self._roles.role_params(role)
    except KeyError as e:
      raise spec_lib.ConfigurationError(
          f"a reward stage reads role {role!r}, which this run does not hold"
          f" ({e}); a LoRA policy's frozen base is not a separate role here:"
          f" pass roles={{{role!r}: params}}") from None

  def generate_text(self, role: str, prompts: Sequence[str], *,
                    max_new_tokens: int, strategy=None) -> list[str]:
    """Completions of ``role`` for prompt texts (greedy by default), batched
    to the rollout batch size so the sampler compiles once."""
    if self._roles is None:
      raise spec_lib.ConfigurationError(
          f"a reward stage reads role {role!r}, but this schedule has no roles"
          " (judges and reward models run under the loop, rl_run.run)")
    model, params = self._roles.role_model(role), self._roles.role_params(role)
    ids = [batching.encode_prompt(self.tokenizer, p) for p in prompts]
    size = self.text_batch
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
