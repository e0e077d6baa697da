"""The on-policy RL loop: rollout → rewards → transform chain → updates.

One iteration (``RLTrainer.step``)::

    prompts (int32 ids, encoded once)                      host: which prompts
      └─► sampler.generate (jitted, current params)        n per prompt
            └─► rewards (host reward fns on decoded text)  f32[B, K]
                  [DAPO dynamic sampling: regenerate, keep non-zero-variance groups]
                  [Guide: hint-conditioned resamples of all-fail groups]
            └─► prepare (jitted): method.transform.update(traj, state, ctx)
                  ctx.params = {policy: current params, reference, teacher}
            └─► train (jitted): lax.scan over epochs × minibatches of the
                  update step (jaxsi.training.steps) → new TrainState
      └─► metrics (rewards per component, zero-variance groups, clip
          fractions, KL, entropy, lengths, rollout / update tokens/s), checkpoint

Token in, token out: prompts are token ids and the trajectory holds the
sampled ids; text is decoded only for the reward fns. The sampler reads the
live params (no copy); the reference (when a method needs one) is the frozen
warm start, the only extra copy. Every jitted piece has fixed shapes (prompt
bucket P, generation length ``max_new_tokens``, R prompts × n samples), so it
compiles once per run.

Resumable: the TrainState (params, optimizer state, step, rng, method state)
and the data position / iteration are checkpointed with Orbax; batch k's
prompts and PRNG keys are pure functions of (seed, k), so a resumed run
replays what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from jaxsi.data import batching
from jaxsi.methods.base import (GUIDED_KEY, HINT_LOGPROBS_KEY, POLICY,
                                POLICY_ENTROPY, POLICY_VALUES, REFERENCE,
                                TEACHER, RLMethod, reward_names_of)
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.models import lora as lora_lib
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import metrics as metrics_lib
from jaxsi import partitioning
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as train_state_lib
from jaxsi.trajectory import positions_from_mask
from jaxsi.transforms.base import Context

Array = jax.Array


# ---------------------------------------------------------------- helpers
def left_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int):
  """(int32[R, length], bool[R, length]) left-padded prompt arrays."""
  tokens = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, r in enumerate(rows):
    if len(r) > length:
      raise ValueError(f"prompt {i} has {len(r)} tokens > prompt bucket {length}")
    if r:
      tokens[i, length - len(r):] = r
      mask[i, length - len(r):] = True
  return tokens, mask


def group_zero_variance(scores: np.ndarray, valid: np.ndarray, n: int,
                        atol: float = 0.0) -> np.ndarray:
  """bool[R]: groups (contiguous, size n) whose valid finite scores are equal.

  Groups with fewer than two usable samples count as zero-variance (no
  learning signal), matching ``advantages.frac_zero_std_groups``.
  """
  s = scores.reshape(-1, n)
  ok = (valid & np.isfinite(scores)).reshape(-1, n)
  hi = np.where(ok, s, -np.inf).max(axis=1)
  lo = np.where(ok, s, np.inf).min(axis=1)
  count = ok.sum(axis=1)
  return (count < 2) | (hi - lo <= atol)


def _to_host(tree):
  """numpy copy of ``tree``; with several processes, the whole global value
  on every process (``process_allgather``)."""
  if jax.process_count() > 1:
    return jax.tree.map(np.asarray,
                        multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _host_key(key) -> np.ndarray:
  """The raw uint32 data of a PRNG key, on the host.

  Keys are derived eagerly from (seed, iteration); passing their data as
  numpy makes them a jit argument that every process agrees on (a key
  computed eagerly lives on one local device). The jitted functions use it
  as a raw key: the same random bits as the typed key.
  """
  return np.asarray(jax.random.key_data(key))


def _global(tree, sharding):
  """Global arrays on ``sharding`` from host values every process holds in
  full (single process: like ``device_put``)."""
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(one, tree)


def _as_global(tree, shardings):
  """``tree`` as global arrays on ``shardings`` (multi-process only: leaves
  that are not yet global are built from their host values; a model loaded
  with ``hf.load_pretrained(mesh=...)`` is already global)."""
  if jax.process_count() == 1:
    return tree
  def one(x, sh):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sh, lambda idx: host[idx])
  return jax.tree.map(one, tree, shardings)


def _to_device(tree):
  return jax.tree.map(jnp.asarray, tree)


def _concat_host(parts):
  return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


def _take_rows(tree, index):
  return jax.tree.map(lambda x: x[index], tree)


@dataclasses.dataclass
class Batch:
  """A host-side rollout batch before the jitted transforms."""

  traj: Any            # Trajectory of numpy arrays
  rewards: np.ndarray  # f32[B, K]
  task_index: np.ndarray  # int[B] index into the task list
  info: dict


# ------------------------------------------------------ jitted pieces
# Cached at module level, keyed by static (hashable) pieces, so several
# trainers of the same method (e.g. a resumed run) share one compilation.
@functools.lru_cache(maxsize=None)
def _score_fn(model, temperature: float, with_values: bool = False,
              with_entropy: bool = False):
  return logprobs_lib.score_fn(model, temperature=temperature,
                               with_values=with_values,
                               with_entropy=with_entropy)


def _prepare_fn(params, aux_params, traj, method_state, rng, step, *, transform,
                scorers, lora_reference: bool = False):
  """The method's transform chain with the live policy params.

  With ``lora_reference`` the reference policy is derived from the live
  params inside the step: the frozen base arrays themselves with zero
  adapters (``lora.reference_params``), so no copy of the base exists.
  """
  all_params = {POLICY: params, **aux_params}
  if lora_reference:
    all_params[REFERENCE] = lora_lib.reference_params(params)
  ctx = Context(step=step, rng=rng, params=all_params, scorers=scorers)
  return transform.update(traj, method_state, ctx)


@functools.lru_cache(maxsize=None)
def _prepare_jit(compiler_options: Optional[tuple] = None):
  """jit(_prepare_fn) (one per compiler-options setting; static transform)."""
  return jax.jit(_prepare_fn,
                 static_argnames=("transform", "scorers", "lora_reference"),
                 compiler_options=dict(compiler_options or ()) or None)


def _copy(tree, shardings=None):
  """A copy of ``tree`` on ``shardings`` (fresh, donatable buffers)."""
  return jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                 out_shardings=shardings)(tree)


@functools.lru_cache(maxsize=None)
def _train_fn(model, optimizer, method: RLMethod,
              compiler_options: Optional[tuple] = None):
  """jit(scan over epochs × minibatches of the update step), donating state."""
  return jax.jit(_train_body(model, optimizer, method), donate_argnums=0,
                 compiler_options=dict(compiler_options or ()) or None)


def _sharded_train_fn(model, optimizer, method: RLMethod, state_shardings,
                      mesh, compiler_options: Optional[tuple] = None,
                      rules: Sequence = partitioning.DEFAULT_RULES,
                      batch_size: Optional[int] = None):
  """``_train_fn`` whose new state keeps ``state_shardings`` (a mesh run).

  Minibatches (rows gathered by a permutation) are constrained back to the
  batch sharding when their size divides the batch shards; otherwise XLA
  would be free to replicate them and every device would compute the whole
  minibatch.
  """
  mb_sharding = None
  if batch_size is not None:
    size = batch_size // method.minibatches
    if size % partitioning.batch_divisor(mesh, tuple(rules)) == 0:
      mb_sharding = partitioning.data_sharding(mesh, tuple(rules))
  return jax.jit(_train_body(model, optimizer, method, mb_sharding),
                 donate_argnums=0,
                 out_shardings=(state_shardings, partitioning.replicated(mesh)),
                 compiler_options=dict(compiler_options or ()) or None)


@functools.lru_cache(maxsize=None)
def _train_body(model, optimizer, method: RLMethod, minibatch_sharding=None):
  """scan over epochs × minibatches of the update step (not jitted)."""
  update = steps_lib.make_update_step(
      model=model, optimizer=optimizer, objective=method.objective,
      with_entropy=method.with_entropy, with_values=method.with_values,
      temperature=method.temperature, donate=False)
  step_fn = update.step_fn

  def train(state, traj, perm):
    def body(state, idx):
      mb = jax.tree.map(lambda x: x[idx], traj)
      if minibatch_sharding is not None:
        mb = jax.lax.with_sharding_constraint(mb, minibatch_sharding)
      return step_fn(state, mb)
    return jax.lax.scan(body, state, perm)

  return train


# Cheaper XLA compilation (≈2× faster to compile, slower to run): for tests
# and tiny CPU experiments where compile time dominates.
FAST_COMPILE = (("xla_backend_optimization_level", 0),
                ("xla_llvm_disable_expensive_passes", True))


# ---------------------------------------------------------------- trainer
class RLTrainer:
  """Runs one :class:`~jaxsi.methods.base.RLMethod` on a list of tasks.

  Args:
    model: the static Model (``jaxsi.models.model``).
    params: initial policy params (e.g. an SFT warm start).
    method: the RLMethod (``jaxsi.methods``).
    tokenizer: a jaxsi tokenizer (encode/decode, pad/bos/eos ids).
    tasks: training tasks (``jaxsi.data.tasks.Task``).
    optimizer: optax transformation (``jaxsi.training.optimizer.make_optimizer``).
    prompts_per_step: R prompts per rollout batch (B = R·n samples).
    seed: seeds prompt order, sampling and minibatch order.
    reference_params: frozen reference (default: ``params``) when
      ``method.reference``.
    teacher: ``(teacher_model, teacher_params)`` when ``method.teacher``.
    workdir: if given, metrics go to ``workdir/metrics.jsonl`` and
      checkpoints to ``workdir/ckpt``.
    checkpoint_every: save every this many iterations (0: only at the end of
      ``run`` when a workdir is given).
    reward_timeout_s: per-call timeout of the host reward fns.
    console: print one metrics line per logged iteration.
    compiler_options: XLA options of the jitted transform and update steps,
      as a tuple of (name, value) pairs (e.g. :data:`FAST_COMPILE`).
    mesh: a device mesh (``partitioning.make_mesh``). Params and optimizer
      state are placed on the shardings the logical-axis ``rules`` give;
      prompts and trajectories are sharded over the batch axes (B = R·n
      must be a multiple of the number of batch shards). Single process.
      ``None``: default device placement.
    rules: logical-axis rules (default ``partitioning.DEFAULT_RULES``).
    copy_params: keep the caller's ``params`` valid by training a copy
      (default). ``False`` hands the arrays to the trainer (they are donated
      to the first update): no extra copy of a large model.

  LoRA: with a :class:`~jaxsi.models.lora.LoraModel` and no
  ``reference_params``, the reference policy is the frozen base itself (zero
  adapters over the same arrays, derived inside the jitted step), so the
  base exists once. This needs ``optimizer = lora.freeze_base(...)`` (checked):
  any other optimizer would move the base (e.g. through weight decay).
  """

  def __init__(self, *, model, params, method: RLMethod, tokenizer,
               tasks: Sequence[Any], optimizer, prompts_per_step: int,
               seed: int = 0, reference_params=None, teacher=None,
               workdir: Optional[str] = None, checkpoint_every: int = 0,
               reward_timeout_s: float = 60.0, console: bool = False,
               compiler_options: Optional[tuple] = None, mesh=None,
               rules: Optional[Sequence] = None, copy_params: bool = True):
    if method.with_values and not model.config.value_head:
      raise ValueError(f"method {method.name} trains a value head: build the "
                       "model with ModelConfig.value_head=True")
    if method.teacher and teacher is None:
      raise ValueError(f"method {method.name} needs teacher=(model, params)")
    b = prompts_per_step * method.n
    if b % method.minibatches:
      raise ValueError(f"batch {b} (= {prompts_per_step} prompts × n={method.n})"
                       f" is not divisible by minibatches={method.minibatches}")
    self.model = model
    self.method = method
    self.tokenizer = tokenizer
    self.tasks = list(tasks)
    self.prompts_per_step = int(prompts_per_step)
    self.seed = int(seed)
    self.reward_timeout_s = reward_timeout_s
    self.reward_names = reward_names_of(method.reward_fns)
    self.stop_ids = (int(tokenizer.eos_id),)
    self.pad_id = int(tokenizer.pad_id)
    self.prompts = batching.encode_prompts(tokenizer, self.tasks)
    longest = max(len(p) for p in self.prompts)
    if method.guide is not None:
      self.hint_prompts = [
          batching.encode_prompt(tokenizer, t.prompt + method.guide.hint_fn(t))
          for t in self.tasks]
      longest = max(longest, max(len(p) for p in self.hint_prompts))
    self.prompt_len = buckets_lib.bucket_size(
        longest, buckets_lib.DEFAULT_PROMPT_BUCKETS)
    self.iterator = batching.EpochIterator(
        size=len(self.tasks), batch_size=self.prompts_per_step, seed=self.seed)

    self.mesh = mesh
    self.rules = tuple(partitioning.DEFAULT_RULES if rules is None else rules)
    self.param_shardings = None
    if mesh is not None:
      div = partitioning.batch_divisor(mesh, self.rules)
      if b % div:
        raise ValueError(
            f"batch {b} (= {prompts_per_step} prompts × n={method.n}) is not a "
            f"multiple of the {div} batch shards of mesh {dict(mesh.shape)}")
      self.param_shardings = partitioning.param_shardings(
          model, mesh=mesh, rules=self.rules)

    self.aux_params = {}
    self.lora_reference = bool(
        method.reference and reference_params is None
        and isinstance(model, lora_lib.LoraModel))
    if self.lora_reference and not lora_lib.is_base_frozen(optimizer, params):
      raise ValueError(
          f"method {method.name} uses the LoRA base as its reference policy: "
          "wrap the optimizer with lora.freeze_base(...) so the base stays "
          "exactly frozen (or pass reference_params)")
    if mesh is not None:
      params = _as_global(params, self.param_shardings)
    if method.reference and not self.lora_reference:
      # A real copy: the policy params are donated to the update step.
      ref = params if reference_params is None else reference_params
      if mesh is not None:
        ref = _as_global(ref, self.param_shardings)
      self.aux_params[REFERENCE] = _copy(ref, self.param_shardings)
    t = method.temperature
    scorers = [(POLICY, _score_fn(model, t)),
               (POLICY_ENTROPY, _score_fn(model, t, with_entropy=True))]
    if model.config.value_head:
      scorers.append((POLICY_VALUES, _score_fn(model, t, with_values=True)))
    if method.teacher:
      teacher_model, teacher_params = teacher
      if mesh is not None:
        tsh = partitioning.param_shardings(teacher_model, mesh=mesh,
                                           rules=self.rules)
        teacher_params = jax.device_put(_as_global(teacher_params, tsh), tsh)
      self.aux_params[TEACHER] = teacher_params
      scorers.append((TEACHER, _score_fn(teacher_model, t)))
    self.scorers = tuple(scorers)
    self.optimizer = optimizer
    self.compiler_options = (None if compiler_options is None
                             else tuple(compiler_options))
    self._prepare = _prepare_jit(self.compiler_options)
    # The state owns its params (donated to every update). With copy_params
    # the jitted constructor writes them to new buffers (the caller's stay
    # valid); without, it takes the caller's buffers (donated).
    seed = self.seed

    def create(p):
      return train_state_lib.create_train_state(
          p, optimizer, jax.random.key(seed),
          method_state=method.transform.init())

    donate = () if copy_params else (0,)
    if mesh is None:
      self.state = jax.jit(create, donate_argnums=donate)(params)
      self._train = _train_fn(model, optimizer, method, self.compiler_options)
    else:
      shardings = partitioning.state_shardings(
          jax.eval_shape(create, params), optimizer=optimizer,
          logical_axes=model.logical_axes(), mesh=mesh, rules=self.rules)
      self.state = jax.jit(create, out_shardings=shardings,
                           donate_argnums=donate)(params)
      self._train = _sharded_train_fn(model, optimizer, method, shardings,
                                      mesh, self.compiler_options,
                                      rules=self.rules, batch_size=b)
    self.position = 0
    self.iteration = 0
    self.history: list[dict] = []
    self.workdir = workdir
    self.checkpoint_every = checkpoint_every
    self.writer = None
    self.ckpt = None
    if workdir is not None:
      self.writer = metrics_lib.MetricWriter(workdir, tensorboard=False,
                                             console=console)
      self.ckpt = checkpoint_lib.Checkpointer(
          os.path.join(workdir, "ckpt"), keep=2,
          save_every=max(1, checkpoint_every or 10 ** 9), async_save=False)
      if self.ckpt.latest_step() is not None:
        self.restore()

  # -------------------------------------------------------------- rollout
  def _generate(self, params, task_index: np.ndarray, rng, *, hinted=False,
                n: Optional[int] = None, valid: Optional[np.ndarray] = None):
    source = self.hint_prompts if hinted else self.prompts
    rows = [source[i] for i in task_index]
    tokens, mask = left_pad(rows, self.prompt_len, self.pad_id)
    n = self.method.n if n is None else n
    valid = (np.ones((len(rows),), bool) if valid is None
             else np.asarray(valid, bool))
    prompt_ids = np.asarray(task_index, np.int32)
    if self.mesh is not None:
      tokens, mask, valid, prompt_ids = self._place_rows(
          (tokens, mask, valid, prompt_ids))
    traj, _ = sampler_lib.generate(
        self.model, params, tokens, mask, rng=_host_key(rng),
        max_new_tokens=np.int32(self.method.max_new_tokens),
        strategy=self.method.strategy, n=int(n),
        gen_length=int(self.method.max_new_tokens), stop_ids=self.stop_ids,
        pad_id=self.pad_id, valid=valid, prompt_ids=prompt_ids)
    return traj

  def _place_rows(self, arrays):
    """Prompt rows sharded over the batch axes (replicated if R does not
    divide the batch shards)."""
    r = arrays[0].shape[0]
    if r % partitioning.batch_divisor(self.mesh, self.rules) == 0:
      sharding = partitioning.data_sharding(self.mesh, self.rules)
    else:
      sharding = partitioning.replicated(self.mesh)
    return _global(arrays, sharding)

  def _rewards(self, traj_host, task_index: np.ndarray):
    """f32[B, K] rewards of the valid rows (NaN for failed/invalid rows)."""
    tokens, loss_mask, valid = (traj_host.tokens, traj_host.loss_mask,
                                traj_host.valid)
    rows = np.flatnonzero(valid)
    texts = [self.tokenizer.decode(tokens[r][loss_mask[r]].tolist()) for r in rows]
    tasks = [self.tasks[task_index[r]] for r in rows]
    cols, failed_total = [], 0
    for fn in self.method.reward_fns:
      k = len(reward_lib.reward_names(fn))
      r, failed, info = reward_lib.safe_rewards(
          fn, tasks, texts, timeout_s=self.reward_timeout_s, num_components=k)
      failed_total += int(info["num_failed"])
      cols.append(r)
    out = np.full((tokens.shape[0], len(self.reward_names)), np.nan, np.float32)
    if rows.size:
      out[rows] = np.concatenate(cols, axis=1)
    return out, failed_total

  def _one_batch(self, params, rng, *, hinted=False):
    task_index = np.asarray(self.iterator.indices(self.position))
    self.position += 1
    t0 = time.perf_counter()
    traj = self._generate(params, task_index, rng)
    jax.block_until_ready(traj.tokens)
    traj = _to_host(traj)
    t_gen = time.perf_counter() - t0
    rows = np.repeat(task_index, self.method.n)
    t0 = time.perf_counter()
    rewards, failed = self._rewards(traj, rows)
    t_rew = time.perf_counter() - t0
    return Batch(traj=traj, rewards=rewards, task_index=rows,
                 info=dict(gen_s=t_gen, reward_s=t_rew, reward_failed=failed,
                           gen_tokens=int(traj.loss_mask.sum())))

  def collect(self, params, rng) -> Batch:
    """One rollout batch of R prompts × n samples with rewards (host).

    With dynamic sampling, regenerates until R non-zero-variance groups are
    found (or ``max_gen_batches``); with Guide, replaces part of every
    all-fail group by hint-conditioned samples re-placed under the plain
    prompt.
    """
    m = self.method
    r, n = self.prompts_per_step, m.n
    first = self._one_batch(params, jax.random.fold_in(rng, 0))
    batches = [first]
    scores0 = _total(first.rewards)
    zero0 = group_zero_variance(scores0, first.traj.valid, n)
    info = dict(first.info)
    info["frac_zero_variance_groups"] = float(zero0.mean())
    if m.dynamic_sampling is not None:
      ds = m.dynamic_sampling
      zero = [group_zero_variance(scores0, first.traj.valid, n, ds.atol)]
      while (sum(int((~z).sum()) for z in zero) < r
             and len(batches) < ds.max_gen_batches):
        b = self._one_batch(params, jax.random.fold_in(rng, len(batches)))
        batches.append(b)
        zero.append(group_zero_variance(_total(b.rewards), b.traj.valid, n,
                                        ds.atol))
        for key in ("gen_s", "reward_s", "reward_failed", "gen_tokens"):
          info[key] += b.info[key]
      zero_all = np.concatenate(zero)
      keep = np.flatnonzero(~zero_all)[:r]
      fill = np.flatnonzero(zero_all)[:r - keep.size]
      groups = np.concatenate([keep, fill])
      rows = (groups[:, None] * n + np.arange(n)[None, :]).reshape(-1)
      traj = _take_rows(_concat_host([b.traj for b in batches]), rows)
      rewards = np.concatenate([b.rewards for b in batches])[rows]
      task_index = np.concatenate([b.task_index for b in batches])[rows]
      valid = traj.valid.copy()
      valid[keep.size * n:] = False
      traj = traj.replace(valid=valid,
                          group_ids=np.repeat(np.arange(r, dtype=np.int32) * n, n))
      info["gen_batches"] = len(batches)
      info["effective_batch_frac"] = keep.size / r
      batch = Batch(traj=traj, rewards=rewards, task_index=task_index, info=info)
    else:
      batch = Batch(traj=first.traj, rewards=first.rewards,
                    task_index=first.task_index, info=info)
      batch.info["gen_batches"] = 1
      batch.info["effective_batch_frac"] = float(1.0 - zero0.mean())
    if m.guide is not None:
      batch = self._guide(params, jax.random.fold_in(rng, 10_000), batch)
    return batch

  def _guide(self, params, rng, batch: Batch) -> Batch:
    """Guide: hint-conditioned resamples for the all-fail groups."""
    g = self.method.guide
    r, n = self.prompts_per_step, self.method.n
    k = max(1, min(n, int(round(g.fraction * n))))
    traj = batch.traj
    b, t = traj.tokens.shape
    scores = _total(batch.rewards).reshape(r, n)
    valid = traj.valid.reshape(r, n)
    fail = np.all(np.where(valid, np.nan_to_num(scores, nan=-np.inf)
                           <= g.fail_threshold, True), axis=1) & valid.any(axis=1)
    guided = np.zeros((b,), bool)
    hint_lp = np.zeros((b, t), np.float32)
    info = dict(batch.info)
    info["guide_groups"] = int(fail.sum())
    info["guide_success"] = 0.0
    if fail.any():
      groups = np.flatnonzero(fail)
      # Fixed shape: R prompt rows, the non-failing ones are dummy rows.
      task_rows = batch.task_index.reshape(r, n)[:, 0]
      t0 = time.perf_counter()
      gtraj = _to_host(self._generate(params, task_rows, rng, hinted=True, n=k,
                                      valid=fail))
      info["gen_s"] += time.perf_counter() - t0
      info["gen_tokens"] += int(gtraj.loss_mask.sum())
      p = self.prompt_len
      src = (groups[:, None] * k + np.arange(k)[None, :]).reshape(-1)
      dst = (groups[:, None] * n + (n - k) + np.arange(k)[None, :]).reshape(-1)
      new = jax.tree.map(np.copy, traj)
      # Completion columns from the guided sample, prompt columns stay plain.
      for name in ("tokens", "input_mask", "loss_mask", "behaviour_logprobs",
                   "turn_ids"):
        arr = getattr(new, name)
        if arr is not None:
          arr[dst, p:] = getattr(gtraj, name)[src, p:]
      extras = dict(new.extras)
      for key in ("finished", "completion_length"):
        extras[key][dst] = gtraj.extras[key][src]
      extras["tempered_logprobs"][dst, p:] = gtraj.extras["tempered_logprobs"][src, p:]
      new = new.replace(extras=extras,
                        positions=np.asarray(positions_from_mask(new.input_mask)))
      guided[dst] = True
      hint_lp[dst] = new.behaviour_logprobs[dst]
      t0 = time.perf_counter()
      grew, failed = self._rewards(_take_rows(new, dst), batch.task_index[dst])
      info["reward_s"] += time.perf_counter() - t0
      info["reward_failed"] += failed
      rewards = batch.rewards.copy()
      rewards[dst] = grew
      info["guide_success"] = float(np.nanmean(_total(grew) > g.fail_threshold))
      traj, batch = new, Batch(traj=new, rewards=rewards,
                               task_index=batch.task_index, info=info)
    extras = dict(traj.extras)
    extras[GUIDED_KEY] = guided
    extras[HINT_LOGPROBS_KEY] = hint_lp
    return Batch(traj=traj.replace(extras=extras), rewards=batch.rewards,
                 task_index=batch.task_index, info=info)

  # ----------------------------------------------------------------- step
  def step(self) -> dict:
    """Runs one RL iteration and returns its metrics (host floats)."""
    m = self.method
    key = jax.random.fold_in(jax.random.key(self.seed), self.iteration)
    t_start = time.perf_counter()
    batch = self.collect(self.state.params, jax.random.fold_in(key, 1))
    traj = batch.traj.replace(rewards=batch.rewards.astype(np.float32))
    if self.mesh is not None:
      traj = _global(traj, partitioning.data_sharding(self.mesh, self.rules))
    else:
      traj = _to_device(traj)
    t0 = time.perf_counter()
    traj, method_state, tmetrics = self._prepare(
        self.state.params, self.aux_params, traj, self.state.method_state,
        _host_key(jax.random.fold_in(key, 2)), np.int32(self.iteration),
        transform=m.transform, scorers=self.scorers,
        lora_reference=self.lora_reference)
    self.last_batch, self.last_traj = batch, traj
    jax.block_until_ready(traj.tokens)
    t_prep = time.perf_counter() - t0
    perm = self._permutations(traj.batch_size)
    state = self.state.replace(method_state=method_state)
    t0 = time.perf_counter()
    state, umetrics = self._train(state, traj, perm)
    umetrics = _to_host(umetrics)
    t_upd = time.perf_counter() - t0
    self.state = state
    self.iteration += 1
    metrics = self._metrics(batch, _to_host(tmetrics), umetrics,
                            t_prep=t_prep, t_upd=t_upd,
                            t_total=time.perf_counter() - t_start)
    self.history.append(metrics)
    if self.writer is not None:
      self.writer.write_scalars(self.iteration, metrics)
    if (self.ckpt is not None and self.checkpoint_every
        and self.iteration % self.checkpoint_every == 0):
      self.save()
    return metrics

  def _permutations(self, b: int) -> np.ndarray:
    m = self.method
    rng = np.random.default_rng([self.seed, self.iteration, 7])
    size = b // m.minibatches
    perms = []
    for _ in range(m.epochs):
      order = rng.permutation(b) if m.minibatches > 1 else np.arange(b)
      perms.extend(order[j * size:(j + 1) * size] for j in range(m.minibatches))
    return np.stack(perms).astype(np.int32)

  def _metrics(self, batch: Batch, tmetrics, umetrics, *, t_prep, t_upd,
               t_total) -> dict:
    out = {}
    traj = batch.traj
    valid = np.asarray(traj.valid, bool)
    for j, name in enumerate(self.reward_names):
      col = batch.rewards[:, j]
      ok = valid & np.isfinite(col)
      out[f"reward/{name}/mean"] = float(col[ok].mean()) if ok.any() else 0.0
      out[f"reward/{name}/std"] = float(col[ok].std()) if ok.any() else 0.0
    total = _total(batch.rewards)
    ok = valid & np.isfinite(total)
    out["reward/mean"] = float(total[ok].mean()) if ok.any() else 0.0
    out["reward/std"] = float(total[ok].std()) if ok.any() else 0.0
    out["frac_zero_variance_groups"] = batch.info["frac_zero_variance_groups"]
    out["effective_batch_frac"] = float(batch.info["effective_batch_frac"])
    out["gen_batches"] = float(batch.info["gen_batches"])
    out["reward_failed"] = float(batch.info["reward_failed"])
    lengths = np.asarray(traj.loss_mask, bool).sum(axis=1)
    out["completion_length/mean"] = float(lengths[valid].mean()) if valid.any() else 0.0
    out["completion_length/max"] = float(lengths[valid].max()) if valid.any() else 0.0
    finished = np.asarray(traj.extras["finished"], bool)
    out["completion_length/frac_truncated"] = (
        float((~finished[valid]).mean()) if valid.any() else 0.0)
    if "guide_groups" in batch.info:
      out["guide/groups"] = float(batch.info["guide_groups"])
      out["guide/success"] = float(batch.info["guide_success"])
    for k, v in tmetrics.items():
      out[f"transform/{k}"] = float(v)
    for k, v in umetrics.items():
      v = np.asarray(v, np.float64)
      out[k] = float(v.mean())
      if k == "loss":
        out["loss_first"] = float(v[0])
    out["kl"] = next((out[k] for k in out if k.endswith("kl/kl")), 0.0)
    out["entropy"] = next((out[k] for k in out if k.endswith("/entropy")),
                          out.get("entropy", 0.0))
    gen_tokens = batch.info["gen_tokens"]
    out["time/rollout_s"] = batch.info["gen_s"]
    out["time/reward_s"] = batch.info["reward_s"]
    out["time/prepare_s"] = t_prep
    out["time/update_s"] = t_upd
    out["time/iteration_s"] = t_total
    out["rollout_tokens_per_s"] = gen_tokens / max(batch.info["gen_s"], 1e-9)
    trained = float(np.asarray(umetrics["tokens"]).sum())
    out["update_tokens_per_s"] = trained / max(t_upd, 1e-9)
    return out

  # ---------------------------------------------------------- run / resume
  def run(self, num_steps: int, *, log_every: int = 1,
          callback: Optional[Callable[[int, dict], None]] = None) -> list[dict]:
    """Runs iterations until ``self.iteration == num_steps``."""
    keys = ("reward/mean", "loss", "kl", "effective_batch_frac")
    with metrics_lib.ProgressBar(num_steps, f"rl/{self.method.name}", keys=keys,
                                 log_every=max(1, log_every),
                                 initial=self.iteration) as bar:
      while self.iteration < num_steps:
        metrics = self.step()
        bar.update(self.iteration, metrics)
        if callback is not None:
          callback(self.iteration, metrics)
    if self.ckpt is not None:
      self.save(force=True)
    return self.history

  def save(self, force: bool = False) -> None:
    if self.ckpt is None:
      return
    self.ckpt.save(self.iteration, self.state, force=True,
                   extra={"position": self.position, "iteration": self.iteration})
    if self.writer is not None:
      self.writer.flush()

  def restore(self) -> None:
    """Restores the latest checkpoint of ``workdir/ckpt`` (exact resume)."""
    state, extra = self.ckpt.restore(self.state)
    self.state = state
    self.position = int(extra["position"])
    self.iteration = int(extra["iteration"])

  def close(self) -> None:
    if self.ckpt is not None:
      self.ckpt.close()
    if self.writer is not None:
      self.writer.close()


def _total(rewards: np.ndarray) -> np.ndarray:
  """f32[B] NaN-aware sum of the reward columns (NaN when all are NaN)."""
  r = np.asarray(rewards, np.float32)
  s = np.nansum(r, axis=1)
  return np.where(np.all(np.isnan(r), axis=1), np.nan, s).astype(np.float32)


def train_rl(*, model, params, method: RLMethod, tokenizer, tasks, optimizer,
             prompts_per_step: int, num_steps: int, seed: int = 0,
             workdir: Optional[str] = None, checkpoint_every: int = 0,
             reference_params=None, teacher=None, console: bool = False,
             mesh=None):
  """Builds an :class:`RLTrainer`, runs ``num_steps`` iterations, returns it."""
  trainer = RLTrainer(model=model, params=params, method=method,
                      tokenizer=tokenizer, tasks=tasks, optimizer=optimizer,
                      prompts_per_step=prompts_per_step, seed=seed,
                      workdir=workdir, checkpoint_every=checkpoint_every,
                      reference_params=reference_params, teacher=teacher,
                      console=console, mesh=mesh)
  trainer.run(num_steps)
  return trainer
