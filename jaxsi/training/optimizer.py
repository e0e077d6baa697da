"""AdamW with warmup + decay schedules, global-norm clipping and a decay mask.

``make_optimizer`` returns one ``optax.GradientTransformation``::

    clip_by_global_norm(max_grad_norm)
    → scale_by_adam(b1, b2, eps)
    → add_decayed_weights(weight_decay, mask)       (decoupled, Loshchilov & Hutter 2019)
    → scale(-learning_rate(step))

wrapped in ``optax.inject_hyperparams`` so the learning rate used by the latest
update is part of the optimizer state (``learning_rate(opt_state)`` reads it for
logging, and it is checkpointed with everything else).

Gradient accumulation. The preferred way is inside the update step
(``jaxsi.training.steps.make_update_step(grad_accum_steps=k)``): one
``lax.scan`` over k micro-batches of a batch, exact and compiled once. The
``grad_accum_steps`` argument *here* is the other flavour: ``optax.MultiSteps``,
for when micro-batches arrive in separate calls of the update step — the inner
optimizer is applied every k-th call with the **mean** of the k gradients (the
right normalisation when each call's objective is a mean over its own
micro-batch; for a global token-mean pass the global counts to the objective,
see ``jaxsi/transforms/aggregation.py``, and then the k gradients should be
summed, i.e. multiply the learning rate by k). Use one flavour, not both.
"""

from __future__ import annotations

import math

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(
    *,
    learning_rate: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    total_steps: int = 1,
    end_lr_ratio: float = 0.0,
) -> optax.Schedule:
  """Linear warmup from 0 to ``learning_rate``, then constant/cosine/linear decay.

  For step s (0-based count of applied updates), W = warmup_steps, S = total_steps,
  η = learning_rate, η_end = end_lr_ratio · η:

  * s < W: η · s / W;
  * constant: η;
  * cosine: η_end + (η − η_end) · ½(1 + cos(π · min(1, (s − W) / (S − W))));
  * linear: η + (η_end − η) · min(1, (s − W) / (S − W)).

  Args:
    learning_rate: peak learning rate η.
    schedule: 'constant', 'cosine' or 'linear'.
    warmup_steps: W ≥ 0 (0 = no warmup).
    total_steps: S, the step at which decay reaches η_end (must be > W for the
      decaying schedules).
    end_lr_ratio: η_end / η.

  Returns:
    An optax schedule ``step -> learning rate``.

  Raises:
    ValueError: unknown schedule or inconsistent step counts.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"make_schedule: schedule={schedule!r}; expected one of {SCHEDULES}")
  if warmup_steps < 0:
    raise ValueError(f"make_schedule: warmup_steps={warmup_steps} must be >= 0")
  end_lr = learning_rate * end_lr_ratio
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  else:
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
      raise ValueError(
          f"make_schedule: total_steps={total_steps} must exceed "
          f"warmup_steps={warmup_steps} for schedule={schedule!r}")
    if schedule == "cosine":
      main = optax.cosine_decay_schedule(
          init_value=learning_rate, decay_steps=decay_steps,
          alpha=end_lr_ratio)
    else:
      main = optax.linear_schedule(
          init_value=learning_rate, end_value=end_lr,
          transition_steps=decay_steps)
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(
      init_value=0.0, end_value=learning_rate, transition_steps=warmup_steps)
  return optax.join_schedules([warmup, main], boundaries=[warmup_steps])


def default_decay_mask(params: Any) -> Any:
  """Decay matrices only: True for params with ndim ≥ 2 (not norms/biases).

  For models with stacked (scanned) layers a norm scale is [L, D]; use
  :func:`decay_mask_from_logical_axes` there.
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _is_axes(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)


def decay_mask_from_logical_axes(logical_axes: Any) -> Any:
  """Decay mask from logical axis names: no decay for norms and biases.

  A parameter is decayed iff it has at least two axes other than ``'layers'``
  and none of its axes is ``'norm'``. This is the 1-D rule made robust to
  layer stacking ([L, D] norm scales stay undecayed).

  Args:
    logical_axes: pytree like params whose leaves are tuples of axis names.

  Returns:
    A pytree of bools like params.
  """
  def rule(axes):
    if "norm" in axes:
      return False
    return sum(a != "layers" for a in axes) >= 2
  return jax.tree.map(rule, logical_axes, is_leaf=_is_axes)


def make_optimizer(
    *,
    learning_rate: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    total_steps: int = 1,
    end_lr_ratio: float = 0.0,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    max_grad_norm: Optional[float] = 1.0,
    grad_accum_steps: int = 1,
    decay_mask: Union[None, Any, Callable[[Any], Any]] = None,
) -> optax.GradientTransformation:
  """AdamW (decoupled weight decay) with a schedule, clipping and a decay mask.

  Args:
    learning_rate: peak learning rate.
    schedule: 'constant', 'cosine' or 'linear' after a linear warmup (see
      :func:`make_schedule`).
    warmup_steps: number of warmup updates.
    total_steps: number of updates at which the decay ends.
    end_lr_ratio: final learning rate / peak learning rate.
    weight_decay: decoupled weight decay λ (p ← p − η·λ·p on masked params).
    b1: Adam β1.
    b2: Adam β2.
    eps: Adam ε.
    max_grad_norm: clip gradients to this global L2 norm (None: no clipping).
    grad_accum_steps: k > 1 wraps the optimizer in ``optax.MultiSteps``
      (cross-call accumulation, mean of k gradients; see the module doc).
    decay_mask: which params are decayed: a pytree of bools, or a callable
      ``params -> pytree of bools``; default :func:`default_decay_mask`
      (ndim ≥ 2, i.e. no decay on norms and biases).

  Returns:
    An ``optax.GradientTransformation``; its state records the learning rate
    of the latest update (read it with :func:`learning_rate`).
  """
  if grad_accum_steps < 1:
    raise ValueError(f"make_optimizer: grad_accum_steps={grad_accum_steps} must be >= 1")
  for name, value, low in (("learning_rate", learning_rate, 0.0),
                           ("weight_decay", weight_decay, 0.0),
                           ("end_lr_ratio", end_lr_ratio, 0.0),
                           ("eps", eps, 0.0)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= low):
      raise ValueError(f"make_optimizer: {name} must be a finite number >= {low},"
                       f" got {value!r}")
  if max_grad_norm is not None and not (
      isinstance(max_grad_norm, (int, float)) and math.isfinite(max_grad_norm)
      and max_grad_norm > 0):
    raise ValueError(f"make_optimizer: max_grad_norm must be a finite number > 0"
                     f" or None, got {max_grad_norm!r}")
  lr_schedule = make_schedule(
      learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
      total_steps=total_steps, end_lr_ratio=end_lr_ratio)
  mask = default_decay_mask if decay_mask is None else decay_mask

  def adamw(learning_rate):
    parts = []
    if max_grad_norm is not None:
      parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay, mask=mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)

  tx = optax.inject_hyperparams(adamw)(learning_rate=lr_schedule)
  if grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps)
  return tx


def find_learning_rate(opt_state: Any) -> Optional[jax.Array]:
  """The injected learning rate in ``opt_state``, or None if there is none."""
  def is_inject(x):
    return isinstance(getattr(x, "hyperparams", None), dict)

  for s in jax.tree.leaves(opt_state, is_leaf=is_inject):
    if is_inject(s) and "learning_rate" in s.hyperparams:
      return jnp.asarray(s.hyperparams["learning_rate"], jnp.float32)
  return None


def learning_rate(opt_state: Any) -> jax.Array:
  """The learning rate used by the latest update recorded in ``opt_state``.

  Finds the ``optax.inject_hyperparams`` state inside the state (also through
  ``MultiSteps``); after ``init`` (no update yet) it is the rate of step 0.

  Raises:
    ValueError: the state holds no injected learning rate (not built by
      :func:`make_optimizer`).
  """
  lr = find_learning_rate(opt_state)
  if lr is None:
    raise ValueError(
        "learning_rate: optimizer state has no injected 'learning_rate' "
        "(build the optimizer with jaxsi.training.optimizer.make_optimizer)")
  return lr
