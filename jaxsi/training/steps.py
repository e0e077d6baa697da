"""The jitted update step (and an eval step) over a TrainState and a Trajectory.

``make_update_step`` closes over the static pieces (model, optimizer,
objective term) and returns ``update(state, traj) -> (state, metrics)``:

1. forward pass → ``ModelOutputs`` (token log-probs via
   ``jaxsi.models.logprobs`` (chunked ``token_logprobs``); optional entropy, values, logits);
2. ``loss, metrics = objective(outputs, traj)``; ``jax.value_and_grad``;
3. optional gradient accumulation: a ``lax.scan`` over k micro-batches;
4. ``optimizer.update`` → new params/opt_state, unless the loss or the global
   gradient norm is non-finite: then params and opt_state are kept (the whole
   tree, via ``jnp.where``) and ``metrics['skipped_nonfinite'] = 1``;
5. ``step + 1`` (skipped steps count).

With a mesh the step is ``jax.jit(..., in_shardings=(state, batch),
out_shardings=(state, replicated), donate_argnums=0)``; the state shardings are
derived from the model's logical axes (``partitioning.state_shardings``) on the
first call unless given. The step compiles once per (state structure, batch
shape): call it with fixed-shape trajectories.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from jaxsi import partitioning
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms import sft as sft_lib
from jaxsi.transforms.base import ModelOutputs, ObjectiveTerm
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training.train_state import TrainState

Array = jax.Array
OutputsFn = Callable[[Any, Trajectory], ModelOutputs]
ACCUM_NORMALIZATIONS = ("global", "mean")
# XLA options that roughly halve CPU compile time (and slow the program):
# for tests and tiny experiments where compilation dominates.
FAST_COMPILE = {"xla_backend_optimization_level": 0,
                "xla_llvm_disable_expensive_passes": True}


def sft_objective(*, agg: str = "token-mean", mask: str = "loss") -> ObjectiveTerm:
  """Supervised NLL over ``loss_mask`` tokens (``jaxsi.transforms.sft.nll``).

  L = agg_t(−log p(y_t | y_<t)); metrics ``nll`` and ``ppl``.

  Args:
    agg: aggregation mode (see ``jaxsi/transforms/aggregation.py``).
    mask: 'loss' (completion tokens) or 'input' (every predicted token).

  Returns:
    An objective term ``(outputs, traj) -> (loss, metrics)``.
  """
  return sft_lib.nll(agg=agg, mask=mask)


def model_outputs_fn(
    model: Any,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    with_values: bool = False,
    with_logits: bool = False,
    logits_reducer=None,
) -> OutputsFn:
  """``fn(params, traj) -> ModelOutputs`` of a jaxsi decoder.

  This is ``jaxsi.models.logprobs.score_fn``: token log-probs from one forward
  pass, unembedded chunk by chunk over T (``[B, T, V]`` f32 logits are never
  all alive unless ``with_logits``); every output is aligned with
  ``traj.tokens`` (entry t comes from the prediction at t-1; 0 at t = 0, on
  padding and at segment starts).

  Args:
    model: a ``jaxsi.models.model.Model``.
    temperature: logits are divided by it.
    with_entropy: fill ``outputs.entropy``.
    with_values: fill ``outputs.values`` (needs ``config.value_head``).
    with_logits: fill ``outputs.logits``.
    logits_reducer: per-chunk function of the full logits whose results go
      to ``outputs.extras`` (``logprobs.reduce_logits_from_hidden``).

  Returns:
    The outputs function (pure, jit-able).
  """
  return logprobs_lib.score_fn(
      model, temperature=temperature, with_entropy=with_entropy,
      with_values=with_values, with_logits=with_logits,
      logits_reducer=logits_reducer)


def _split_microbatches(traj: Trajectory, k: int) -> Trajectory:
  """[B, ...] → [k, B/k, ...]; micro-batch j holds rows j, j+k, j+2k, …

  The strided split keeps every micro-batch spread over all batch shards
  (rows are sharded in contiguous blocks), so no resharding is needed.
  """
  def split(x):
    b = x.shape[0]
    x = x.reshape((b // k, k) + x.shape[1:])
    return jnp.moveaxis(x, 1, 0)
  return jax.tree.map(split, traj)


def _with_global_denominators(traj: Trajectory) -> Trajectory:
  """Adds the full-batch token/sequence counts to ``traj.extras``.

  ``aggregation.aggregate_trajectory`` reads them, so each micro-batch loss is
  its share of the full-batch loss and the micro-batch losses *sum* to it.
  """
  m = (traj.loss_mask.astype(bool) & traj.valid[:, None]).astype(jnp.float32)
  b = traj.batch_size
  extras = dict(traj.extras)
  extras.setdefault(aggregation.NUM_TOKENS_KEY,
                    jnp.full((b,), jnp.sum(m), jnp.float32))
  extras.setdefault(aggregation.NUM_SEQUENCES_KEY,
                    jnp.full((b,), jnp.sum(traj.valid.astype(jnp.float32)), jnp.float32))
  return traj.replace(extras=extras)


def _tree_where(pred: Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def make_loss_and_grad(
    *,
    outputs_fn: OutputsFn,
    objective: ObjectiveTerm,
    grad_accum_steps: int = 1,
    accum_normalization: str = "global",
) -> Callable[[Any, Trajectory], Tuple[Array, dict, Any]]:
  """``fn(params, traj) -> (loss, metrics, grads)`` with optional accumulation.

  Accumulation (k = ``grad_accum_steps`` > 1) splits the batch into k
  micro-batches (rows j::k) and scans over them, summing gradients in f32:

  * ``'global'`` (default): the full-batch token and sequence counts are put
    in ``traj.extras`` (``aggregation.NUM_TOKENS_KEY``/``NUM_SEQUENCES_KEY``)
    before splitting, so every aggregation mode of
    ``aggregation.aggregate_trajectory`` gives micro-batch losses that sum to
    the full-batch loss: loss and gradients are the **sums** over
    micro-batches and equal the k = 1 step (up to float rounding).
  * ``'mean'``: local denominators per micro-batch, loss and gradients are the
    **mean** over micro-batches (equal to k = 1 only when micro-batches have
    equal token counts). Use it for terms that do not read those extras.

  Metrics other than ``loss`` are averaged over micro-batches. Objective
  terms that relate rows (``group_ids``/``pair_ids`` inside the loss) need
  whole groups per micro-batch: use k = 1 for them.

  Raises:
    ValueError: unknown normalisation or a batch not divisible by k.
  """
  if accum_normalization not in ACCUM_NORMALIZATIONS:
    raise ValueError(
        f"accum_normalization={accum_normalization!r}; expected one of "
        f"{ACCUM_NORMALIZATIONS}")
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps={grad_accum_steps} must be >= 1")

  def loss_fn(params, traj):
    outputs = outputs_fn(params, traj)
    loss, metrics = objective(outputs, traj)
    return loss, metrics

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one(params, traj):
    (loss, metrics), grads = grad_fn(params, traj)
    return loss, metrics, grads

  if grad_accum_steps == 1:
    return one

  k = grad_accum_steps

  def accumulated(params, traj):
    if traj.batch_size % k:
      raise ValueError(
          f"grad_accum_steps={k} does not divide the batch size {traj.batch_size}")
    if accum_normalization == "global":
      traj = _with_global_denominators(traj)
    micro = _split_microbatches(traj, k)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    abstract = jax.eval_shape(one, params, jax.tree.map(lambda x: x[0], micro))
    metric_zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), abstract[1])

    def body(carry, mb):
      loss_acc, metrics_acc, grads_acc = carry
      loss, metrics, grads = one(params, mb)
      grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads)
      metrics_acc = jax.tree.map(lambda a, m: a + m.astype(jnp.float32), metrics_acc, metrics)
      return (loss_acc + loss, metrics_acc, grads_acc), None

    init = (jnp.zeros((), jnp.float32), metric_zeros, zeros)
    (loss, metrics, grads), _ = jax.lax.scan(body, init, micro)
    metrics = jax.tree.map(lambda m: m / k, metrics)
    if accum_normalization == "mean":
      loss = loss / k
      grads = jax.tree.map(lambda g: g / k, grads)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    metrics = dict(metrics)
    metrics["loss"] = loss
    return loss, metrics, grads

  return accumulated


def make_update_step(
    *,
    model: Any,
    optimizer: optax.GradientTransformation,
    objective: ObjectiveTerm,
    mesh: Optional[jax.sharding.Mesh] = None,
    rules: partitioning.Rules = partitioning.DEFAULT_RULES,
    state_shardings: Optional[TrainState] = None,
    grad_accum_steps: int = 1,
    accum_normalization: str = "global",
    donate: bool = True,
    with_entropy: bool = False,
    with_values: bool = False,
    with_logits: bool = False,
    logits_reducer=None,
    temperature: float = 1.0,
    outputs_fn: Optional[OutputsFn] = None,
    compiler_options: Optional[dict] = None,
) -> Callable[[TrainState, Trajectory], Tuple[TrainState, dict]]:
  """Builds the jitted ``update(state, traj) -> (state, metrics)``.

  Args:
    model: a ``jaxsi.models.model.Model`` (static; supplies the forward pass
      and, with a mesh, the logical axes of the params).
    optimizer: the optax transformation (``make_optimizer``).
    objective: an objective term ``(outputs, traj) -> (loss, metrics)``.
    mesh: if given, the step is jitted with state/batch shardings; pass a
      state already on those shardings (``partitioning.init_train_state`` or
      ``Checkpointer.restore`` into ``partitioning.with_shardings(...)``).
    rules: logical-axis rules table.
    state_shardings: TrainState of NamedSharding (default: derived on the
      first call from the state's shapes and ``model.logical_axes()``).
    grad_accum_steps: micro-batches per step (see :func:`make_loss_and_grad`).
    accum_normalization: 'global' or 'mean' (see :func:`make_loss_and_grad`).
    donate: donate the input state's buffers (``donate_argnums=0``); the
      caller must not reuse the state passed in.
    with_entropy: compute ``outputs.entropy`` for the objective.
    with_values: compute ``outputs.values``.
    with_logits: compute ``outputs.logits``.
    logits_reducer: a chunked function of the full logits (its results in
      ``outputs.extras``; a term's ``logits_reducer`` mark).
    temperature: logits temperature of the forward pass.
    outputs_fn: custom ``fn(params, traj) -> ModelOutputs`` replacing the
      default :func:`model_outputs_fn` (e.g. a LoRA-wrapped forward).
    compiler_options: XLA compiler options for ``jax.jit`` (e.g.
      :data:`FAST_COMPILE` for tests, where compile time dominates).

  Returns:
    ``update(state, traj) -> (new_state, metrics)``; metrics are f32 scalars:
    the objective's metrics plus ``loss``, ``grad_norm`` (before clipping),
    ``learning_rate`` (of this update; only for optimizers from
    ``make_optimizer``), ``tokens`` (Σ loss_mask over valid
    rows), ``input_tokens`` (Σ input_mask) and ``skipped_nonfinite`` (0/1).
    ``update.trace_count()`` returns how many times the step was traced;
    ``update.lower(state, traj)`` lowers the jitted step (for
    ``.compile().cost_analysis()``); ``update.step_fn`` is the unjitted step.
  """
  if outputs_fn is None:
    outputs_fn = model_outputs_fn(
        model, temperature=temperature, with_entropy=with_entropy,
        with_values=with_values, with_logits=with_logits,
        logits_reducer=logits_reducer)
  loss_and_grad = make_loss_and_grad(
      outputs_fn=outputs_fn, objective=objective,
      grad_accum_steps=grad_accum_steps, accum_normalization=accum_normalization)
  traces = [0]

  def step(state: TrainState, traj: Trajectory):
    traces[0] += 1
    loss, metrics, grads = loss_and_grad(state.params, traj)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Non-finite grads would poison Adam moments even when not applied; zero
    # them before the update and then discard the update as a whole.
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    updates, new_opt_state = optimizer.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    params = _tree_where(finite, new_params, state.params)
    opt_state = _tree_where(finite, new_opt_state, state.opt_state)
    out = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    lr = optimizer_lib.find_learning_rate(new_opt_state)
    if lr is not None:  # optimizers not built by make_optimizer have none
      out["learning_rate"] = lr
    out.update(
        loss=jnp.asarray(loss, jnp.float32),
        grad_norm=grad_norm.astype(jnp.float32),
        tokens=jnp.sum(traj.loss_mask & traj.valid[:, None], dtype=jnp.float32),
        input_tokens=jnp.sum(traj.input_mask, dtype=jnp.float32),
        skipped_nonfinite=(~finite).astype(jnp.float32),
    )
    new_state = state.replace(params=params, opt_state=opt_state,
                              step=state.step + 1)
    return new_state, out

  donate_argnums = (0,) if donate else ()
  compiled = {}

  def build(state):
    if mesh is None:
      return jax.jit(step, donate_argnums=donate_argnums,
                     compiler_options=compiler_options)
    shardings = state_shardings
    if shardings is None:
      shardings = partitioning.state_shardings(
          jax.eval_shape(lambda: state), optimizer=optimizer,
          logical_axes=model.logical_axes(), mesh=mesh, rules=rules)
    batch = partitioning.data_sharding(mesh, rules)
    return jax.jit(
        step,
        in_shardings=(shardings, batch),
        out_shardings=(shardings, partitioning.replicated(mesh)),
        donate_argnums=donate_argnums,
        compiler_options=compiler_options)

  def jitted(state: TrainState):
    if "fn" not in compiled:
      compiled["fn"] = build(state)
    return compiled["fn"]

  def update(state: TrainState, traj: Trajectory):
    return jitted(state)(state, traj)

  update.trace_count = lambda: traces[0]
  update.lower = lambda state, traj: jitted(state).lower(state, traj)
  update.step_fn = step
  return update


def make_eval_logprobs_step(
    *,
    model: Any,
    objective: Optional[ObjectiveTerm] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    rules: partitioning.Rules = partitioning.DEFAULT_RULES,
    param_shardings: Any = None,
    with_entropy: bool = False,
    temperature: float = 1.0,
    outputs_fn: Optional[OutputsFn] = None,
) -> Callable[[Any, Trajectory], Tuple[ModelOutputs, dict]]:
  """Builds the jitted ``eval_logprobs(params, traj) -> (outputs, metrics)``.

  A forward pass without gradients: token log-probs (and entropy) aligned with
  ``traj.tokens``; with an ``objective`` its loss and metrics on the batch,
  plus ``tokens`` and the token-mean ``nll`` over ``loss_mask & valid``.

  Args:
    model: the Model.
    objective: optional objective term evaluated on the outputs.
    mesh: if given, params/batch shardings are pinned (params derived from
      ``model.logical_axes()`` unless ``param_shardings`` is given).
    rules: logical-axis rules table.
    param_shardings: pytree of NamedSharding for the params.
    with_entropy: also compute per-token entropy.
    temperature: logits temperature.
    outputs_fn: custom forward (see :func:`make_update_step`).

  Returns:
    The jitted eval function.
  """
  if outputs_fn is None:
    outputs_fn = model_outputs_fn(model, temperature=temperature,
                                  with_entropy=with_entropy)

  def evaluate(params, traj):
    outputs = outputs_fn(params, traj)
    metrics = {}
    if objective is not None:
      loss, metrics = objective(outputs, traj)
      metrics = dict(metrics)
      metrics["loss"] = loss
    metrics["tokens"] = jnp.sum(traj.loss_mask & traj.valid[:, None], dtype=jnp.float32)
    metrics["nll"] = aggregation.masked_token_mean(-outputs.logprobs, traj)
    return outputs, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  if mesh is None:
    return jax.jit(evaluate)
  psh = param_shardings
  if psh is None:
    psh = partitioning.param_shardings(model, None, mesh, rules)
  batch = partitioning.data_sharding(mesh, rules)
  return jax.jit(evaluate, in_shardings=(psh, batch),
                 out_shardings=(batch, partitioning.replicated(mesh)))
