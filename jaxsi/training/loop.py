r"""The one loop: rollout stage → reward stages → transform chain → update.

One iteration (``Loop.step``) of a :class:`~jaxsi.spec.Method`::

    source: the next R prompts (int32 ids, encoded once)      host
      └─► method.rollout(ctx, params, rng)                   rollout stage
            plain sampling | refill until a predicate holds | hinted resample
            | multi-turn episodes — each calls the jitted sampler and
            the reward stages (host fns over the whole batch with group ids,
            or device scorers reading a role, e.g. a judge)  → Batch
      └─► prepare (jitted): method.transform.update(traj, state, ctx)
            ctx.params = {'policy': the trained role's live params,
                          every other role by name}
      └─► train (jitted): lax.scan over epochs × minibatches of the update
            step on the trained role's TrainState (donated)
      └─► metrics, checkpoint of every role's state

**Roles.** The loop holds one ``TrainState`` per trained role (own optimizer
state) and one parameter pytree per frozen role, placed on their shardings
and checkpointed together. ``roles={name: params | (model, params) |
'other_role'}`` supplies the roles a method reads (a string shares another
role's live weights: the policy as its own judge). A frozen
``spec.FROM_INITIAL`` role (the KL reference) is a copy of the trained
role's initial params — or, for a LoRA policy, the frozen base itself,
derived inside the jitted step without a copy.

**Schedule.** ``method`` is one Method (on-policy iterations) or a sequence
of Methods, run in turn (iteration i runs ``methods[i % k]``): alternating
updates of two trained roles, e.g. a challenger and a solver. The loop
knows no method by name; a method whose needs the run does not meet is
refused before any work (:class:`~jaxsi.spec.ConfigurationError`).

**Staleness** (``staleness=1``; default 0 is the synchronous loop above,
unchanged). One-step off-policy pipelining (issue #20 item 5): batch t is
generated — rollout, host rewards *and* the transform chain — by
θ_{t−1}, the params before the previous update, in a background host
thread while the device runs update t−1; then update t trains θ_t on it.
The transform chain scores ``old_logprobs`` under the behaviour params
θ_{t−1}, so the method's own ratio π_θ/π_{θ_{t−1}} (PPO/GRPO clip, CISPO,
GSPO, ...) is the importance correction — the "one step async" of prime-rl
(``async_level=1``) and of AReaL's decoupled PPO with π_prox = π_behav. A
method whose prepared batch has no ``old_logprobs`` (ratio ≡ 1: its
objective assumes on-policy samples) is refused with the first batch,
before any update. Resume stays exact: the behaviour params are
checkpointed next to the states (``workdir/ckpt_behaviour``) and the
pending batch is regenerated from them (batch t is a pure function of
(θ_{t−1}, seed, t, data position)).

Token in, token out: prompts are token ids and the trajectory holds the
sampled ids; text is decoded only for host reward stages. Resumable: every
role's TrainState and the data position / iteration are checkpointed with
Orbax; batch k's prompts and PRNG keys are pure functions of (seed, k), so a
resumed run replays what an uninterrupted run would have done.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.data import batching
from jaxsi.rewards import stages as reward_stages
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import rollouts
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import guards
from jaxsi.training import loop_steps
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import progress as progress_lib
from jaxsi.training import roles as roles_lib
from jaxsi import partitioning
from jaxsi.training import placement
from jaxsi.training import stage_context

FAST_COMPILE = loop_steps.FAST_COMPILE
Batch = rollouts.Batch
RoleValue = Union[Any, tuple, str]


RunFailure = guards.RunFailure

# Scalars every Loop iteration writes, whatever the method (the table in
# docs/getting_started.md, "What the runs log"):
# TensorBoard and metrics.jsonl use these names for every method, so runs of
# different methods compare column by column. Method-specific metrics come on
# top, under the name of their term ('pg/…', 'kl/…', 'kd/…') or transform
# ('transform/…'); 'kl' and 'entropy' are 0.0 for a method without them.
SCALARS = (
    "loss", "loss_first", "grad_norm", "learning_rate", "skipped_nonfinite",
    "tokens", "kl", "entropy",
    "reward/mean", "reward/std", "reward_failed", "reward_failed_frac",
    "frac_zero_variance_groups", "effective_batch_frac", "gen_batches",
    "completion_length/mean", "completion_length/max",
    "completion_length/frac_truncated",
    "time/rollout_s", "time/reward_s", "time/prepare_s", "time/update_s",
    "time/iteration_s", "rollout_tokens_per_s", "update_tokens_per_s",
)


STALENESS = (0, 1)


@dataclasses.dataclass
class _Produced:
  """A rollout batch after its transform chain, not yet trained on."""

  batch: Batch
  traj: Any
  method_state: Any
  tmetrics: Any
  t_prep: float
  reward_errors: list
  position: int      # the data position before its prompts were drawn


def _copy_tree(tree):
  """A device copy of every array leaf (kept alive past a donation)."""
  return jax.tree.map(
      lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


class Loop:
  """Runs a :class:`~jaxsi.spec.Method` (or several in turn) on a task list.

  Args:
    model: the static Model of the trained role (``jaxsi.models.model``).
    params: its initial params (e.g. an SFT warm start).
    method: a Method, or a sequence of Methods run in turn (one per
      iteration, cycling; each trains its own ``train`` role).
    tokenizer: a jaxsi tokenizer (encode/decode, pad/bos/eos ids).
    tasks: training tasks (``jaxsi.data.tasks.Task``).
    optimizer: optax transformation (``jaxsi.training.optimizer``); every
      trained role gets its own state of it.
    prompts_per_step: R prompts per rollout batch (B = R·n samples).
    seed: seeds prompt order, sampling and minibatch order.
    roles: ``{name: params | (model, params) | (model, params, tokenizer) |
      other_role_name}`` — the roles the methods read (teacher, judge, the
      initial params of a second trained role, an explicit reference, …).
      A role model whose ``vocab_size`` (or a given tokenizer) differs from
      the trained role's is refused (``check_vocab`` / ``check_tokenizer``).
    workdir: if given, metrics go to ``workdir/metrics.jsonl`` and
      checkpoints to ``workdir/ckpt``; an existing checkpoint is resumed.
    checkpoint_every: save every this many iterations (0: only at the end of
      ``run``).
    reward_timeout_s: per-call timeout of host reward stages.
    console: print one metrics line per logged iteration.
    tensorboard: also write the scalars as TensorBoard events under
      ``workdir/tensorboard`` (names: :data:`SCALARS` + the method's own;
      docs/getting_started.md). A resumed run rewrites the steps after its
      checkpoint there; ``metrics.jsonl`` stays exactly-once.
    compiler_options: XLA options of the jitted steps, as (name, value)
      pairs (e.g. :data:`FAST_COMPILE`).
    mesh: a device mesh; params and optimizer state are placed on the
      shardings the logical-axis ``rules`` give, trajectories are sharded
      over the batch axes (B must be a multiple of the batch shards).
    rules: logical-axis rules (default ``partitioning.DEFAULT_RULES``).
    copy_params: keep the caller's ``params`` valid by training a copy
      (default); ``False`` donates them to the first update.
    max_skipped_iterations: stop (:class:`RunFailure`) after this many
      iterations in a row whose every update was skipped as non-finite
      (loss, gradient or update: NaN data, a NaN learning rate).
    max_reward_failure_rate: stop after ``reward_failure_patience``
      iterations in a row in which more than this fraction of the graded
      samples failed their reward (raised, timed out, NaN, wrong shape); the
      message quotes the first errors.
    reward_failure_patience: see ``max_reward_failure_rate``.
    staleness: 0 (synchronous: batch t from θ_t) or 1 (one-step off-policy
      pipelining: batch t from θ_{t−1}, generated while update t−1 runs;
      see the module docstring). One method only; its transform chain must
      fill ``old_logprobs``.

  Raises:
    ConfigurationError: a method needs a role, a value head or a batch
      layout the run does not provide (the message names both).
  """

  def __init__(self, *, model, params, method, tokenizer, tasks: Sequence[Any],
               optimizer, prompts_per_step: int, seed: int = 0,
               roles: Optional[Mapping[str, RoleValue]] = None,
               workdir: Optional[str] = None, checkpoint_every: int = 0,
               reward_timeout_s: float = 60.0, console: bool = False,
               tensorboard: bool = True,
               compiler_options: Optional[tuple] = None, mesh=None,
               rules: Optional[Sequence] = None, copy_params: bool = True,
               max_skipped_iterations: int = 3,
               max_reward_failure_rate: float = 0.5,
               reward_failure_patience: int = 2, staleness: int = 0):
    methods = (tuple(method) if isinstance(method, (tuple, list)) else (method,))
    for m in methods:
      if not isinstance(m, spec_lib.Method):
        raise spec_lib.ConfigurationError(
            f"Loop runs jaxsi.spec.Method values; got {type(m).__name__}"
            f" {getattr(m, 'name', m)!r} (a rounds method runs under"
            " rounds_run.run / rounds.run_rounds)")
    if isinstance(staleness, bool) or staleness not in STALENESS:
      raise ValueError(f"Loop: staleness must be one of {STALENESS} (0: the"
                       f" synchronous loop, 1: one-step off-policy), got"
                       f" {staleness!r}")
    if staleness and len(methods) > 1:
      raise spec_lib.ConfigurationError(
          f"Loop: staleness={staleness} pipelines one method; the schedule"
          f" {[m.name for m in methods]} alternates several (use staleness=0)")
    self.staleness = int(staleness)
    self.methods = methods
    self.method = methods[0]
    self.tokenizer = tokenizer
    self.tasks = list(tasks)
    if not self.tasks:
      raise ValueError("Loop: no tasks")
    self.prompts_per_step = int(prompts_per_step)
    if self.prompts_per_step != prompts_per_step or self.prompts_per_step < 1:
      raise ValueError(f"Loop: prompts_per_step must be an integer >= 1, got"
                       f" {prompts_per_step!r}")
    self.seed = int(seed)
    self.reward_timeout_s = reward_timeout_s
    self.guard = guards.FailureGuard(max_skipped_iterations=max_skipped_iterations,
                              max_reward_failure_rate=max_reward_failure_rate,
                              reward_failure_patience=reward_failure_patience)
    self.stop_ids = (int(tokenizer.eos_id),)
    self.pad_id = int(tokenizer.pad_id)
    self.mesh = mesh
    self.rules = tuple(partitioning.DEFAULT_RULES if rules is None else rules)
    self.optimizer = optimizer
    self.compiler_options = (None if compiler_options is None
                             else tuple(compiler_options))
    self._prepare = loop_steps.prepare_jit(self.compiler_options)
    self._set_up_roles(model, params, dict(roles or {}), copy_params)
    self._set_up_prompts()
    self.phases = [self._build_phase(m) for m in methods]
    self._train = self.phases[0].train
    self.reward_names = self.phases[0].reward_names
    self.iterator = batching.EpochIterator(
        size=len(self.tasks), batch_size=self.prompts_per_step, seed=self.seed)
    self.position = 0
    self.iteration = 0
    self.history: list[dict] = []
    self.last_batch = self.last_traj = None
    self.checkpoint_every = checkpoint_every
    self.writer = self.ckpt = None
    # staleness=1: the batch of the next iteration (or None: regenerate it
    # from ``_behaviour``, the params that generate it; None at iteration 0:
    # the live params), and the live params' stand-in while producing.
    self._pending: Optional[_Produced] = None
    self._behaviour = None
    self._producing = None
    self._ckpt_behaviour = None
    self._executor = None
    if workdir is not None:
      self.writer = metrics_lib.MetricWriter(workdir, tensorboard=tensorboard,
                                             console=console)
      self.ckpt = checkpoint_lib.Checkpointer(
          os.path.join(workdir, "ckpt"), keep=2,
          save_every=max(1, checkpoint_every or 10 ** 9), async_save=False)
      if self.staleness:
        self._ckpt_behaviour = checkpoint_lib.Checkpointer(
            os.path.join(workdir, "ckpt_behaviour"), keep=2,
            save_every=max(1, checkpoint_every or 10 ** 9), async_save=False)
      if self.ckpt.latest_step() is not None:
        self.restore()
      else:   # killed before its first checkpoint: the rows start over
        self.writer.rewind(0)

  # ----------------------------------------------------------------- roles
  def _set_up_roles(self, model, params, given: dict, copy_params: bool):
    r = roles_lib.build_roles(
        methods=self.methods, model=model, params=params, given=given,
        tokenizer=self.tokenizer, optimizer=self.optimizer,
        prompts_per_step=self.prompts_per_step, seed=self.seed, mesh=self.mesh,
        rules=self.rules, copy_params=copy_params)
    self.trained_roles, self.role_models, self.aliases = r.trained, r.models, r.aliases
    self.frozen, self.states = r.frozen, r.states
    self.param_shardings, self._state_shardings = r.param_shardings, r.state_shardings
    self.lora_reference = r.lora_reference

  def role_model(self, name: str):
    """The model of role ``name`` (aliases resolved)."""
    name = self.aliases.get(name, name)
    return self.role_models[name]

  def role_params(self, name: str):
    """The live params of role ``name`` (aliases resolved)."""
    name = self.aliases.get(name, name)
    if self._producing is not None and name == self._producing[0]:
      return self._producing[1]   # staleness=1: the behaviour params
    if name in self.states:
      return self.states[name].params
    if name in self.frozen:
      return self.frozen[name]
    raise KeyError(f"Loop: no role {name!r}; roles: "
                   f"{sorted(set(self.states) | set(self.frozen) | set(self.aliases))}")

  @property
  def state(self):
    """The TrainState of the first trained role (the policy)."""
    return self.states[self.trained_roles[0]]

  @state.setter
  def state(self, value):
    self.states[self.trained_roles[0]] = value

  @property
  def model(self):
    return self.role_models[self.trained_roles[0]]

  @property
  def batch_size(self) -> int:
    return self.prompts_per_step * self.method.n

  # --------------------------------------------------------------- prompts
  def _set_up_prompts(self):
    self.prompts = batching.encode_prompts(self.tokenizer, self.tasks)
    self.prompt_variants = {}
    sampled = set()
    for m in self.methods:
      # Context variants (a privileged prompt that only conditions a
      # rescoring, jaxsi.sampling.privileged) are encoded once too, but are
      # never sampled from: they do not size the sampling bucket.
      context = getattr(m.rollout, "context_variants", dict)()
      variants = m.rollout.prompt_variants()
      sampled.update(variants)
      for name, fn in {**context, **variants}.items():
        if name not in self.prompt_variants:
          self.prompt_variants[name] = [
              batching.encode_prompt(self.tokenizer, fn(t)) for t in self.tasks]
    longest = max(len(p) for rows in [self.prompts, *(
        self.prompt_variants[name] for name in sampled)] for p in rows)
    self.prompt_len = buckets_lib.bucket_size(
        longest, buckets_lib.DEFAULT_PROMPT_BUCKETS)

  def place_rows(self, arrays):
    """Prompt rows sharded over the batch axes (replicated if R does not
    divide the batch shards)."""
    r = arrays[0].shape[0]
    if r % partitioning.batch_divisor(self.mesh, self.rules) == 0:
      sharding = partitioning.data_sharding(self.mesh, self.rules)
    else:
      sharding = partitioning.replicated(self.mesh)
    return placement.to_global(arrays, sharding)

  # ---------------------------------------------------------------- phases
  def _build_phase(self, m: spec_lib.Method) -> stage_context.Phase:
    stages = reward_stages.as_stages(m.rewards)
    names = m.rollout.reward_names(reward_stages.stage_names(stages))
    t = m.temperature
    mdl = self.role_models[m.train]
    scorers = [(spec_lib.POLICY, loop_steps.score_fn(mdl, t)),
               (spec_lib.POLICY_ENTROPY,
                loop_steps.score_fn(mdl, t, with_entropy=True)),
               (spec_lib.POLICY_LOGITS,
                loop_steps.score_fn(mdl, t, with_logits=True))]
    if mdl.config.value_head:
      scorers.append((spec_lib.POLICY_VALUES,
                      loop_steps.score_fn(mdl, t, with_values=True)))
    # A scorer per role the method reads, named after it (its own model),
    # and '<role>/logits' with full logits (top-k teacher transforms).
    for role in m.roles:
      known = role.name in self.role_models or role.name in self.aliases
      other = self.role_model(role.name) if known else mdl
      scorers.append((role.name, loop_steps.score_fn(other, t)))
      scorers.append((f"{role.name}/logits",
                      loop_steps.score_fn(other, t, with_logits=True)))
    if self.mesh is None:
      train = loop_steps.train_fn(mdl, self.optimizer, m, self.compiler_options)
    else:
      train = loop_steps.sharded_train_fn(
          mdl, self.optimizer, m, self._state_shardings[m.train], self.mesh,
          self.compiler_options, rules=self.rules,
          batch_size=self.prompts_per_step * m.n)
    phase = stage_context.Phase(method=m, reward_names=names,
                   strategy=rollouts.strategy_of(m.spec), scorers=tuple(scorers),
                   lora_reference=bool(self.lora_reference.get(m.train)),
                   train=train)
    phase.ctx = stage_context.StageContext(
        model=mdl, tokenizer=self.tokenizer, tasks=self.tasks, stages=stages,
        reward_names=names, strategy=phase.strategy, max_new_tokens=m.max_new_tokens,
        prompts=self.prompts, prompt_variants=self.prompt_variants,
        prompt_len=self.prompt_len, next_prompts=self._next_prompts,
        place_rows=None if self.mesh is None else self.place_rows, roles=self,
        text_batch=self.batch_size, reward_timeout_s=self.reward_timeout_s)
    return phase

  def _next_prompts(self) -> np.ndarray:
    """Task indices of the next R prompts (a pure function of (seed, position))."""
    index = np.asarray(self.iterator.indices(self.position))
    self.position += 1
    return index

  def _aux_params(self, phase: stage_context.Phase) -> dict:
    """Every role but the trained one, by name (live params for trained or
    aliased roles)."""
    out = {}
    names = set(self.frozen) | set(self.states) | set(self.aliases)
    for name in names:
      if name != phase.method.train:
        out[name] = self.role_params(name)
    return out

  # -------------------------------------------------------------- rollout
  def collect(self, params, rng, phase: Optional[stage_context.Phase] = None) -> Batch:
    """One scored rollout batch of the (current) phase's method (host)."""
    phase = phase or self.phases[self.iteration % len(self.phases)]
    return phase.method.rollout(phase.ctx, params, rng)

  # ----------------------------------------------------------------- step
  def _produce(self, phase: stage_context.Phase, params, method_state,
               iteration: int) -> _Produced:
    """Batch ``iteration``: rollout and rewards (host), then the transform
    chain (jitted) under ``params`` (a pure function of (params,
    method_state, seed, iteration, data position))."""
    m = phase.method
    key = jax.random.fold_in(jax.random.key(self.seed), iteration)
    position = self.position
    phase.ctx.reward_errors = []
    batch = self.collect(params, jax.random.fold_in(key, 1), phase)
    traj = batch.traj.replace(rewards=batch.rewards.astype(np.float32))
    if self.mesh is not None:
      traj = placement.to_global(traj, partitioning.data_sharding(self.mesh, self.rules))
    else:
      traj = placement.to_device(traj)
    t0 = time.perf_counter()
    traj, method_state, tmetrics = self._prepare(
        params, self._aux_params(phase), traj, method_state,
        placement.host_key(jax.random.fold_in(key, 2)), np.int32(iteration),
        transform=m.transform, scorers=phase.scorers,
        lora_reference=phase.lora_reference)
    jax.block_until_ready(traj.tokens)
    t_prep = time.perf_counter() - t0
    return _Produced(batch=batch, traj=traj, method_state=method_state,
                     tmetrics=tmetrics, t_prep=t_prep,
                     reward_errors=phase.ctx.reward_errors, position=position)

  def _produce_behind(self, phase, params, method_state, iteration,
                      host_work: Optional[threading.Event] = None) -> _Produced:
    """:meth:`_produce` with the trained role read as ``params`` (the
    behaviour params θ_{t−1}, also for roles aliased to it).

    ``host_work`` is set when the rollout first calls the host reward
    stages (its sampling is then done: the update may take the device
    while the host grades), or when production ends, whichever is first.
    """
    self._producing = (phase.method.train, params)
    ctx = phase.ctx
    if host_work is not None:
      def rewards(*args, **kwargs):
        host_work.set()
        return type(ctx).rewards(ctx, *args, **kwargs)
      ctx.rewards = rewards   # this context only, for this production
    try:
      return self._produce(phase, params, method_state, iteration)
    finally:
      self._producing = None
      if host_work is not None:
        del ctx.rewards
        host_work.set()

  def step(self, prefetch: bool = True) -> dict:
    """Runs one iteration and returns its metrics (host floats).

    Args:
      prefetch: with ``staleness=1``, also generate the next iteration's
        batch during this update (``run`` passes False on its last
        iteration; a later ``step`` then generates it first). Ignored with
        ``staleness=0``.
    """
    if self.staleness:
      return self._step_stale(prefetch)
    phase = self.phases[self.iteration % len(self.phases)]
    m, role = phase.method, phase.method.train
    t_start = time.perf_counter()
    state = self.states[role]
    produced = self._produce(phase, state.params, state.method_state,
                             self.iteration)
    batch, traj = produced.batch, produced.traj
    self.last_batch, self.last_traj = batch, traj
    perm = self._permutations(traj.batch_size, m)
    t0 = time.perf_counter()
    state, umetrics = phase.train(
        state.replace(method_state=produced.method_state), traj, perm)
    umetrics = placement.to_host(umetrics)
    t_upd = time.perf_counter() - t0
    self.states[role] = state
    self.iteration += 1
    metrics = self._metrics(phase, batch, placement.to_host(produced.tmetrics),
                            umetrics, t_prep=produced.t_prep, t_upd=t_upd,
                            t_total=time.perf_counter() - t_start)
    return self._finish(phase, metrics, produced.reward_errors)

  def _finish(self, phase, metrics: dict, reward_errors) -> dict:
    self.history.append(metrics)
    if self.writer is not None:
      self.writer.write_scalars(self.iteration, metrics)
    self.guard.check(self.iteration, phase.method.name, metrics, reward_errors)
    if (self.ckpt is not None and self.checkpoint_every
        and self.iteration % self.checkpoint_every == 0):
      self.save()
    return metrics

  def _step_stale(self, prefetch: bool) -> dict:
    """staleness=1: train θ_t on batch t (from θ_{t−1}) while a host thread
    produces batch t+1 from θ_t (a copy: the update donates θ_t)."""
    phase = self.phases[0]
    m, role = phase.method, phase.method.train
    t_start = time.perf_counter()
    state = self.states[role]
    if self._pending is None:   # iteration 0, a resumed run, no prefetch
      behaviour = state.params if self._behaviour is None else self._behaviour
      self._pending = self._produce_behind(phase, behaviour, state.method_state,
                                           self.iteration)
    produced, self._pending = self._pending, None
    if produced.traj.old_logprobs is None:
      raise spec_lib.ConfigurationError(
          f"Loop: method {m.name!r} with staleness=1: its transform chain"
          " leaves traj.old_logprobs None (ratio ≡ 1, an objective for"
          " on-policy samples), so one-step-stale batches would go"
          " uncorrected; chain importance.old_logprobs() or use staleness=0"
          " (refused before any update)")
    batch, traj = produced.batch, produced.traj
    self.last_batch, self.last_traj = batch, traj
    behaviour = _copy_tree(state.params)          # θ_t: generates batch t+1
    future = None
    if prefetch:
      if self._executor is None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="jaxsi-rollout")
      host_work = threading.Event()
      future = self._executor.submit(
          self._produce_behind, phase, behaviour,
          _copy_tree(produced.method_state), self.iteration + 1, host_work)
      # The device runs the next batch's sampling first, then this update
      # while the host grades that batch: dispatched in the other order,
      # the sampler would queue behind the update and the host rewards
      # would find an idle device.
      host_work.wait()
      if future.done() and future.exception() is not None:
        future.result()   # raise before the update consumes (donates) θ_t
    perm = self._permutations(traj.batch_size, m)
    t0 = time.perf_counter()
    state, umetrics = phase.train(
        state.replace(method_state=produced.method_state), traj, perm)
    umetrics = placement.to_host(umetrics)
    t_upd = time.perf_counter() - t0
    t0 = time.perf_counter()
    self._pending = None if future is None else future.result()
    t_wait = time.perf_counter() - t0
    self._behaviour = behaviour
    self.states[role] = state
    self.iteration += 1
    metrics = self._metrics(phase, batch, placement.to_host(produced.tmetrics),
                            umetrics, t_prep=produced.t_prep, t_upd=t_upd,
                            t_total=time.perf_counter() - t_start)
    # Time the update waited for the next batch after it had finished (0
    # when the update is the longer of the two).
    metrics["pipeline/wait_s"] = t_wait
    return self._finish(phase, metrics, produced.reward_errors)

  def _permutations(self, b: int, m: Optional[spec_lib.Method] = None
                    ) -> np.ndarray:
    """int32[epochs·minibatches, b / minibatches] minibatch rows of iteration
    ``self.iteration`` (a pure function of (seed, iteration))."""
    m = m or self.phases[self.iteration % len(self.phases)].method
    rng = np.random.default_rng([self.seed, self.iteration, 7])
    size = b // m.minibatches
    perms = []
    for _ in range(m.epochs):
      order = rng.permutation(b) if m.minibatches > 1 else np.arange(b)
      perms.extend(order[j * size:(j + 1) * size] for j in range(m.minibatches))
    return np.stack(perms).astype(np.int32)

  def _metrics(self, phase: stage_context.Phase, batch: Batch, tmetrics, umetrics, *,
               t_prep, t_upd, t_total) -> dict:
    out = {}
    traj = batch.traj
    valid = np.asarray(traj.valid, bool)
    for j, name in enumerate(phase.reward_names):
      col = batch.rewards[:, j]
      ok = valid & np.isfinite(col)
      out[f"reward/{name}/mean"] = float(col[ok].mean()) if ok.any() else 0.0
      out[f"reward/{name}/std"] = float(col[ok].std()) if ok.any() else 0.0
    total = rollouts.total_reward(batch.rewards)
    ok = valid & np.isfinite(total)
    out["reward/mean"] = float(total[ok].mean()) if ok.any() else 0.0
    out["reward/std"] = float(total[ok].std()) if ok.any() else 0.0
    for k in ("frac_zero_variance_groups", "effective_batch_frac",
              "gen_batches", "reward_failed"):
      out[k] = float(batch.info[k])
    graded = max(1, traj.batch_size * int(batch.info["gen_batches"]))
    out["reward_failed_frac"] = min(1.0, out["reward_failed"] / graded)
    lengths = np.asarray(traj.loss_mask, bool).sum(axis=1)
    out["completion_length/mean"] = float(lengths[valid].mean()) if valid.any() else 0.0
    out["completion_length/max"] = float(lengths[valid].max()) if valid.any() else 0.0
    finished = np.asarray(traj.extras["finished"], bool)
    out["completion_length/frac_truncated"] = (
        float((~finished[valid]).mean()) if valid.any() else 0.0)
    out.update({k: float(v) for k, v in batch.metrics.items()})
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
    if len(self.phases) > 1:
      out["phase"] = float(self.phases.index(phase))
    out["time/rollout_s"] = batch.info["gen_s"]
    out["time/reward_s"] = batch.info["reward_s"]
    out["time/prepare_s"] = t_prep
    out["time/update_s"] = t_upd
    out["time/iteration_s"] = t_total
    out["rollout_tokens_per_s"] = batch.info["gen_tokens"] / max(batch.info["gen_s"], 1e-9)
    trained = float(np.asarray(umetrics["tokens"]).sum())
    out["update_tokens_per_s"] = trained / max(t_upd, 1e-9)
    return out

  # ---------------------------------------------------------- run / resume
  def run(self, num_steps: int, *, log_every: int = 1,
          callback: Optional[Callable[[int, dict], None]] = None) -> list[dict]:
    """Runs iterations until ``self.iteration == num_steps``."""
    keys = ("reward/mean", "loss", "kl", "effective_batch_frac",
            "skipped_nonfinite", "reward_failed_frac")
    name = "+".join(m.name for m in self.methods)
    with progress_lib.ProgressBar(num_steps, f"loop/{name}", keys=keys,
                                 log_every=max(1, log_every),
                                 initial=self.iteration) as bar:
      while self.iteration < num_steps:
        metrics = (self.step(prefetch=self.iteration + 1 < num_steps)
                   if self.staleness else self.step())
        bar.update(self.iteration, metrics)
        if callback is not None:
          callback(self.iteration, metrics)
    if self.ckpt is not None:
      self.save(force=True)
    return self.history

  def save(self, force: bool = False) -> None:
    """Checkpoints every trained role's state with the data position."""
    del force
    if self.ckpt is None:
      return
    if self.writer is not None:
      self.writer.flush()   # metrics up to this checkpoint are durable first
    if not self.staleness:
      self.ckpt.save(self.iteration, self.states, force=True,
                     extra={"position": self.position, "iteration": self.iteration})
      return
    # The behaviour params first: a checkpoint of the states is complete
    # only with them. The position is the one before the pending batch.
    state = self.state
    behaviour = state.params if self._behaviour is None else self._behaviour
    position = self.position if self._pending is None else self._pending.position
    self._ckpt_behaviour.save(self.iteration, behaviour, force=True)
    self.ckpt.save(self.iteration, self.states, force=True,
                   extra={"position": position, "iteration": self.iteration,
                          "staleness": self.staleness})

  def restore(self) -> None:
    """Restores the latest checkpoint of ``workdir/ckpt`` (exact resume)."""
    states, extra = self.ckpt.restore(self.states)
    self.states = dict(states)
    saved = int(extra.get("staleness", 0))
    if saved != self.staleness:
      raise spec_lib.ConfigurationError(
          f"Loop: {self.ckpt.directory} holds a run with staleness={saved}; resuming it with"
          f" staleness={self.staleness} would mix two runs")
    self.position = int(extra["position"])
    self.iteration = int(extra["iteration"])
    if self.staleness:
      # The pending batch is regenerated from the params that generated it.
      self._behaviour, _ = self._ckpt_behaviour.restore(
          self.state.params, step=self.iteration)
      self._pending = None
    if self.writer is not None:
      # Iterations after the checkpoint are replayed: their rows go once.
      self.writer.rewind(self.iteration)

  def close(self) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=True)
      self._executor = None
    if self._ckpt_behaviour is not None:
      self._ckpt_behaviour.close()
    if self.ckpt is not None:
      self.ckpt.close()
    if self.writer is not None:
      self.writer.close()
