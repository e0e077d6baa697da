"""The loop's jitted pieces: scorers, the transform chain, epochs × minibatches.

Cached at module level, keyed by static (hashable) pieces, so several loops
of the same method (e.g. a resumed run) share one compilation. Every piece
has fixed shapes (prompt bucket P, generation length, R prompts × n
samples), so it compiles once per run.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi import spec as spec_lib
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.models import lora as lora_lib
from jaxsi import partitioning
from jaxsi.training import steps as steps_lib
from jaxsi.transforms.base import Context

# Cheaper XLA compilation (≈2× faster to compile, slower to run): for tests
# and tiny CPU experiments where compile time dominates.
FAST_COMPILE = (("xla_backend_optimization_level", 0),
                ("xla_llvm_disable_expensive_passes", True))


@functools.lru_cache(maxsize=None)
def score_fn(model, temperature: float, with_values: bool = False,
             with_entropy: bool = False, with_logits: bool = False):
  """A cached ``logprobs.score_fn`` (one per model and settings)."""
  return logprobs_lib.score_fn(model, temperature=temperature,
                               with_values=with_values,
                               with_entropy=with_entropy,
                               with_logits=with_logits)


def _prepare_fn(params, aux_params, traj, method_state, rng, step, *, transform,
                scorers, lora_reference: bool = False):
  """The method's transform chain with the live params of the trained role.

  ``Context.params`` holds the trained role under ``'policy'`` (whatever
  its role name) plus every other role by name. With ``lora_reference`` the
  reference policy is derived from the live params inside the step: the
  frozen base arrays themselves with zero adapters
  (``lora.reference_params``), so no copy of the base exists.
  """
  all_params = {**aux_params, spec_lib.POLICY: params}
  if lora_reference:
    all_params[spec_lib.REFERENCE] = lora_lib.reference_params(params)
  ctx = Context(step=step, rng=rng, params=all_params, scorers=scorers)
  return transform.update(traj, method_state, ctx)


@functools.lru_cache(maxsize=None)
def prepare_jit(compiler_options: Optional[tuple] = None):
  """jit(_prepare_fn) (one per compiler-options setting; static transform)."""
  return jax.jit(_prepare_fn,
                 static_argnames=("transform", "scorers", "lora_reference"),
                 compiler_options=dict(compiler_options or ()) or None)


@functools.lru_cache(maxsize=None)
def train_fn(model, optimizer, method: spec_lib.Method,
             compiler_options: Optional[tuple] = None):
  """jit(scan over epochs × minibatches of the update step), donating state."""
  return jax.jit(_train_body(model, optimizer, method), donate_argnums=0,
                 compiler_options=dict(compiler_options or ()) or None)


def sharded_train_fn(model, optimizer, method: spec_lib.Method, state_shardings,
                     mesh, compiler_options: Optional[tuple] = None,
                     rules: Sequence = partitioning.DEFAULT_RULES,
                     batch_size: Optional[int] = None):
  """``train_fn`` whose new state keeps ``state_shardings`` (a mesh run).

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
def _train_body(model, optimizer, method: spec_lib.Method,
                minibatch_sharding=None):
  """scan over epochs × minibatches of the update step (not jitted)."""
  update = steps_lib.make_update_step(
      model=model, optimizer=optimizer, objective=method.objective,
      with_entropy=method.with_entropy, with_values=method.value_head,
      temperature=method.temperature, donate=False,
      # Full-vocabulary distillation terms mark themselves ``needs_logits``.
      with_logits=bool(getattr(method.objective, "needs_logits", False)),
      # ... or ask for a chunked function of them (never all [B, T, V] alive).
      logits_reducer=getattr(method.objective, "logits_reducer", None))
  step_fn = update.step_fn

  def train(state, traj, perm):
    def body(state, idx):
      mb = jax.tree.map(lambda x: x[idx], traj)
      if minibatch_sharding is not None:
        mb = jax.lax.with_sharding_constraint(mb, minibatch_sharding)
      return step_fn(state, mb)
    state, metrics = jax.lax.scan(body, state, perm)
    # Read after the scan, so the update itself compiles exactly as before
    # (a second consumer inside the step changes XLA's fusion and rounding).
    metrics["params_finite"] = all_finite(state.params).astype(jnp.float32)
    return state, metrics

  return train


def all_finite(tree) -> jax.Array:
  """bool[]: every element of every floating leaf of ``tree`` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)
