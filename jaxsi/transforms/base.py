"""The transform API: optax-style trajectory transforms and objective terms.

A **trajectory transform** is a pair of pure functions::

    init() -> state
    update(traj, state, ctx) -> (traj, state, metrics)

It fills or rewrites Trajectory fields (reward shaping, advantages, filters,
weights, masks, re-scoring). ``metrics`` is a flat dict of scalars for logging.
``chain(*transforms)`` composes them in order and keeps a tuple of their states,
exactly like ``optax.chain``.

An **objective term** is a pure function::

    term(outputs: ModelOutputs, traj: Trajectory) -> (scalar_loss, metrics)

``objective((w1, term1), (w2, term2), ...)`` sums weighted terms. The token
aggregation mode of a term is always an explicit argument of its factory.

Nothing here knows about models or gin: the policy/reference/teacher are
reached only through ``Context.score(name, params_name, traj)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import flax.struct
import jax
import jax.numpy as jnp

# The forward-pass contract lives beside Trajectory; re-exported here.
from jaxsi.trajectory import ModelOutputs, ScoreFn, Trajectory

Array = jax.Array
Metrics = dict[str, Array]


@flax.struct.dataclass
class Context:
  """What a trajectory transform may call or read.

  Attributes:
    step: int32 scalar, the training step.
    rng: PRNG key for stochastic transforms (None if unused).
    params: named parameter pytrees ('policy', 'reference', 'teacher', …).
    scorers: static tuple of (name, ScoreFn); a ScoreFn runs a frozen forward
      pass of some parameters on a trajectory.
  """

  step: Array = 0
  rng: Optional[Array] = None
  params: Mapping[str, Any] = flax.struct.field(default_factory=dict)
  scorers: Tuple[Tuple[str, ScoreFn], ...] = flax.struct.field(
      pytree_node=False, default=())

  def scorer(self, name: str) -> ScoreFn:
    for n, fn in self.scorers:
      if n == name:
        return fn
    raise KeyError(
        f"Context has no scorer {name!r}; available: {[n for n, _ in self.scorers]}."
        " Pass it when building the Context (e.g. scorers=(('policy', fn),)).")

  def score(self, scorer: str, params: str, traj: Trajectory) -> ModelOutputs:
    """Runs scorer ``scorer`` with parameter set ``params`` on ``traj``."""
    if params not in self.params:
      raise KeyError(f"Context has no params {params!r}; available: {list(self.params)}")
    return self.scorer(scorer)(self.params[params], traj)


class EmptyState(NamedTuple):
  """State of a stateless transform."""


class TrajectoryTransform(NamedTuple):
  """An optax-style (init, update) pair over trajectories."""

  init: Callable[[], Any]
  update: Callable[[Trajectory, Any, Context], Tuple[Trajectory, Any, Metrics]]


def stateless(fn: Callable[[Trajectory, Context], Tuple[Trajectory, Metrics]]
              ) -> TrajectoryTransform:
  """Wraps ``fn(traj, ctx) -> (traj, metrics)`` as a TrajectoryTransform."""

  def update(traj, state, ctx):
    traj, metrics = fn(traj, ctx)
    return traj, state, metrics

  return TrajectoryTransform(EmptyState, update)


def chain(*transforms: TrajectoryTransform) -> TrajectoryTransform:
  """Applies transforms in order, keeping a tuple of their states.

  Metrics of the i-th transform are merged into one dict; a later transform's
  key overrides an earlier one's (transforms name their keys uniquely).
  """

  def init():
    return tuple(t.init() for t in transforms)

  def update(traj, state, ctx):
    if len(state) != len(transforms):
      raise ValueError(
          f"chain: got {len(state)} states for {len(transforms)} transforms")
    new_state, metrics = [], {}
    for t, s in zip(transforms, state):
      traj, s, m = t.update(traj, s, ctx)
      new_state.append(s)
      metrics.update(m)
    return traj, tuple(new_state), metrics

  return TrajectoryTransform(init, update)


ObjectiveTerm = Callable[[ModelOutputs, Trajectory], Tuple[Array, Metrics]]


def objective(*weighted_terms: Union[ObjectiveTerm, Tuple[float, ObjectiveTerm],
                                     Tuple[float, ObjectiveTerm, str]]
              ) -> ObjectiveTerm:
  """Sums weighted objective terms: L = Σ_k w_k L_k.

  Args:
    *weighted_terms: each a term, a ``(weight, term)`` pair, or a
      ``(weight, term, name)`` triple; the name prefixes the term's metrics
      (default ``term{k}``).

  Returns:
    A term whose metrics hold every sub-term's metrics under its prefix plus
    ``'{name}/loss'`` for each term and ``'loss'`` for the total. It carries
    ``needs_logits = True`` when any sub-term does (full-vocabulary
    distillation terms: the update then computes ``outputs.logits``) and the
    sub-terms' ``logits_reducer`` (their chunked alternative; at most one).
  """
  normalized = []
  for k, wt in enumerate(weighted_terms):
    if callable(wt):
      wt = (1.0, wt)
    if len(wt) == 2:
      wt = (wt[0], wt[1], f"term{k}")
    normalized.append(wt)

  def term(outputs: ModelOutputs, traj: Trajectory):
    total = jnp.zeros((), jnp.float32)
    metrics = {}
    for weight, fn, name in normalized:
      loss, m = fn(outputs, traj)
      total = total + weight * loss
      metrics[f"{name}/loss"] = loss
      for key, value in m.items():
        metrics[f"{name}/{key}"] = value
    metrics["loss"] = total
    return total, metrics

  if any(getattr(fn, "needs_logits", False) for _, fn, _ in normalized):
    term.needs_logits = True
  reducers = {id(r): r for r in (getattr(fn, "logits_reducer", None)
                                 for _, fn, _ in normalized) if r is not None}
  if len(reducers) > 1:
    raise ValueError("objective: two terms ask for different logits_reducer"
                     " functions; the forward pass computes one")
  if reducers:
    term.logits_reducer = next(iter(reducers.values()))
  return term
