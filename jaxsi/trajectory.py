"""The Trajectory pytree: the one data structure every stage reads and fills.

Conventions (they matter for every transform and objective):

* All ``[B, T]`` fields are aligned with ``tokens``: ``x[b, t]`` describes token
  ``tokens[b, t]``. In particular ``*_logprobs[b, t] = log p(tokens[b, t] |
  tokens[b, :t])`` (0 where undefined, e.g. ``t = 0`` or padding).
* ``input_mask`` marks real (non-padding) tokens; ``loss_mask`` marks the tokens a
  policy is trained on (model-written completion tokens). ``loss_mask`` implies
  ``input_mask``.
* Samples of one group (one prompt, ``n`` samples) share a ``group_ids`` value.
  Group ids are integers in ``[0, B)``; group statistics are computed with segment
  reductions so groups need not be contiguous or equal-sized.
* Optional fields are ``None`` when absent. Their presence is static structure
  (part of the pytree definition), never a data-dependent Python branch.
* ``valid[b] == False`` marks a filtered-out sample: it stays in the batch (fixed
  shapes) but contributes nothing to losses or statistics that respect it.

Beside it lives the other half of the data contract: :class:`ModelOutputs`, what
a forward pass over a Trajectory yields, and ``ScoreFn``, the function type
``fn(params, traj) -> ModelOutputs`` (models produce them, transforms read them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Fields of shape [B, T] (aligned with tokens).
TOKEN_FIELDS = (
    "tokens", "positions", "input_mask", "loss_mask", "segment_ids", "turn_ids",
    "span_ids", "behaviour_logprobs", "old_logprobs", "ref_logprobs",
    "teacher_logprobs", "token_rewards", "advantages", "returns", "values",
)
# Fields of shape [B].
SAMPLE_FIELDS = ("weights", "valid", "group_ids", "prompt_ids", "pair_ids")
# Fields of shape [B, K].
REWARD_FIELDS = ("rewards",)

_DTYPE_KIND = {
    "tokens": "i", "positions": "i", "segment_ids": "i", "turn_ids": "i",
    "span_ids": "i", "group_ids": "i", "prompt_ids": "i", "pair_ids": "i",
    "input_mask": "b", "loss_mask": "b", "valid": "b",
}


class TrajectoryError(ValueError):
  """A Trajectory whose fields disagree in shape or dtype."""


@flax.struct.dataclass
class Trajectory:
  """A batch of B sampled sequences of padded length T.

  Attributes:
    tokens: int32[B, T] prompt + completion (+ injected turns).
    positions: int32[B, T] RoPE positions (0 at the first real token).
    input_mask: bool[B, T] real (non-padding) tokens.
    loss_mask: bool[B, T] tokens the policy is trained on.
    segment_ids: int32[B, T] packing segments (None: one segment per row).
    turn_ids: int32[B, T] 0 prompt, k = k-th model turn, negative = injected.
    span_ids: int32[B, T] roles inside one sequence (solve/verify/correct…).
    behaviour_logprobs: f32[B, T] log-probs under the sampler.
    old_logprobs: f32[B, T] log-probs under the pre-update policy.
    ref_logprobs: f32[B, T] log-probs under the frozen reference.
    teacher_logprobs: f32[B, T] log-probs under a teacher.
    rewards: f32[B, K] K reward components.
    token_rewards: f32[B, T] dense / process rewards.
    advantages: f32[B, T] per-token advantages.
    returns: f32[B, T] value targets.
    values: f32[B, T] value predictions at sampling time.
    weights: f32[B] sample weights.
    valid: bool[B] False for filtered-out samples.
    group_ids: int32[B] samples of one prompt share an id in [0, B).
    prompt_ids: int32[B] dataset index of the prompt.
    pair_ids: int32[B] links between samples (chosen↔rejected, …); -1 none.
    extras: dict of arrays whose leading axis is B.
  """

  tokens: Array
  positions: Array
  input_mask: Array
  loss_mask: Array
  weights: Array
  valid: Array
  group_ids: Array
  prompt_ids: Array
  pair_ids: Array
  segment_ids: Optional[Array] = None
  turn_ids: Optional[Array] = None
  span_ids: Optional[Array] = None
  behaviour_logprobs: Optional[Array] = None
  old_logprobs: Optional[Array] = None
  ref_logprobs: Optional[Array] = None
  teacher_logprobs: Optional[Array] = None
  rewards: Optional[Array] = None
  token_rewards: Optional[Array] = None
  advantages: Optional[Array] = None
  returns: Optional[Array] = None
  values: Optional[Array] = None
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  # ----------------------------------------------------------------- builders
  @classmethod
  def create(
      cls,
      tokens,
      *,
      input_mask=None,
      loss_mask=None,
      positions=None,
      group_ids=None,
      prompt_ids=None,
      pair_ids=None,
      weights=None,
      valid=None,
      extras: Optional[Mapping[str, Any]] = None,
      **optional,
  ) -> "Trajectory":
    """Builds a Trajectory with defaults for the required bookkeeping fields.

    Defaults: every token real, nothing trained on, positions counted over real
    tokens (so left padding works), one group per sample, weights 1, all valid,
    no pairs (-1).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
      raise TrajectoryError(
          f"Trajectory.tokens must be [B, T], got shape {tuple(tokens.shape)}")
    b, t = tokens.shape
    input_mask = (jnp.ones((b, t), bool) if input_mask is None
                  else jnp.asarray(input_mask, bool))
    loss_mask = (jnp.zeros((b, t), bool) if loss_mask is None
                 else jnp.asarray(loss_mask, bool))
    if positions is None:
      positions = positions_from_mask(input_mask)
    ar = jnp.arange(b, dtype=jnp.int32)
    traj = cls(
        tokens=tokens,
        positions=jnp.asarray(positions, jnp.int32),
        input_mask=input_mask,
        loss_mask=loss_mask,
        weights=(jnp.ones((b,), jnp.float32) if weights is None
                 else jnp.asarray(weights, jnp.float32)),
        valid=jnp.ones((b,), bool) if valid is None else jnp.asarray(valid, bool),
        group_ids=ar if group_ids is None else jnp.asarray(group_ids, jnp.int32),
        prompt_ids=ar if prompt_ids is None else jnp.asarray(prompt_ids, jnp.int32),
        pair_ids=(jnp.full((b,), -1, jnp.int32) if pair_ids is None
                  else jnp.asarray(pair_ids, jnp.int32)),
        extras=dict(extras or {}),
        **optional,
    )
    validate(traj)
    return traj

  # ---------------------------------------------------------------- shortcuts
  @property
  def batch_size(self) -> int:
    return self.tokens.shape[0]

  @property
  def length(self) -> int:
    return self.tokens.shape[1]

  def replace(self, **updates) -> "Trajectory":  # pylint: disable=arguments-differ
    """Returns a copy with fields replaced (flax.struct's replace, typed)."""
    return dataclasses.replace(self, **updates)

  @property
  def completion_lengths(self) -> Array:
    """int32[B]: number of loss tokens per sample."""
    return jnp.sum(self.loss_mask, axis=-1, dtype=jnp.int32)

  @property
  def sample_mask(self) -> Array:
    """f32[B, T]: loss_mask restricted to valid samples."""
    return (self.loss_mask & self.valid[:, None]).astype(jnp.float32)


@flax.struct.dataclass
class ModelOutputs:
  """What an objective term may read from the trained model's forward pass.

  Attributes:
    logprobs: f32[B, T] log p(tokens[b, t] | tokens[b, :t]) (0 at t=0/padding).
    entropy: f32[B, T] entropy of the next-token distribution that produced
      token t (same alignment as logprobs), or None.
    values: f32[B, T] value-head predictions, or None.
    logits: f32[B, T, V] full logits aligned like logprobs (only for terms
      that need the whole distribution, e.g. distillation), or None.
    extras: any further outputs.
  """

  logprobs: Array
  entropy: Optional[Array] = None
  values: Optional[Array] = None
  logits: Optional[Array] = None
  extras: Mapping[str, Any] = flax.struct.field(default_factory=dict)


# fn(params, traj) -> ModelOutputs: a frozen forward pass usable by transforms.
ScoreFn = Callable[[Any, Trajectory], ModelOutputs]


# ------------------------------------------------------------------ helpers
def positions_from_mask(input_mask: Array) -> Array:
  """Position of each token counted over real tokens (left padding → 0 start)."""
  m = jnp.asarray(input_mask, jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0).astype(jnp.int32)


def masked_sum(x: Array, mask: Array, axis: int = -1) -> Array:
  """Σ x·mask along ``axis``."""
  return jnp.sum(x * mask.astype(x.dtype), axis=axis)


def masked_mean(x: Array, mask: Array, axis: Optional[int] = -1) -> Array:
  """Σ x·mask / max(1, Σ mask) along ``axis`` (0 where the mask is empty)."""
  mask = mask.astype(x.dtype)
  return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def sequence_sum(x: Array, traj: Trajectory) -> Array:
  """f[B]: per-sequence sum of a [B, T] field over loss tokens."""
  return masked_sum(x, traj.loss_mask)


def sequence_mean(x: Array, traj: Trajectory) -> Array:
  """f[B]: per-sequence mean of a [B, T] field over loss tokens."""
  return masked_mean(x, traj.loss_mask)


# Group views ---------------------------------------------------------------
def group_sum(x: Array, group_ids: Array, mask: Optional[Array] = None) -> Array:
  """Per-sample sum over its group: out[b] = Σ_{j: g_j = g_b} x_j·mask_j.

  Works for any group layout (ids in [0, B)); fixed shapes, jit-safe.
  """
  b = x.shape[0]
  if mask is not None:
    x = jnp.where(mask, x, jnp.zeros_like(x))
  totals = jax.ops.segment_sum(x, group_ids, num_segments=b)
  return totals[group_ids]


def group_count(group_ids: Array, mask: Optional[Array] = None) -> Array:
  """Per-sample number of (masked-in) members of its group."""
  ones = jnp.ones(group_ids.shape, jnp.float32)
  return group_sum(ones, group_ids, mask)


def group_reshape(x: Array, group_size: int) -> Array:
  """[B, ...] → [B // G, G, ...] for contiguous equal-size groups."""
  b = x.shape[0]
  if b % group_size:
    raise TrajectoryError(
        f"group_reshape: batch {b} is not a multiple of group size {group_size}")
  return x.reshape((b // group_size, group_size) + x.shape[1:])


def group_flatten(x: Array) -> Array:
  """[N, G, ...] → [N·G, ...] (inverse of group_reshape)."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


# Selection and concatenation ------------------------------------------------
def select(traj: Trajectory, index) -> Trajectory:
  """Gathers samples ``index`` (int array or slice) from every [B, ...] leaf."""
  return jax.tree.map(lambda x: x[index], traj)


def concat(trajs: Sequence[Trajectory]) -> Trajectory:
  """Concatenates trajectories along the batch axis.

  Group ids of later parts are offset so groups stay distinct; all parts must
  have the same length T and the same optional fields.
  """
  if not trajs:
    raise TrajectoryError("concat: no trajectories given")
  structs = [jax.tree.structure(t) for t in trajs]
  for i, s in enumerate(structs[1:], 1):
    if s != structs[0]:
      raise TrajectoryError(
          f"concat: trajectory {i} has different fields/extras than trajectory 0"
          f" ({_present(trajs[i])} vs {_present(trajs[0])})")
  lengths = {t.length for t in trajs}
  if len(lengths) != 1:
    raise TrajectoryError(f"concat: lengths differ {sorted(lengths)}; pad first")
  offset, parts = 0, []
  for t in trajs:
    parts.append(t.replace(group_ids=t.group_ids + offset))
    offset += t.batch_size
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)


def pad_length(traj: Trajectory, length: int) -> Trajectory:
  """Right-pads every [B, T] field to ``length`` (masks False, values 0)."""
  t = traj.length
  if length < t:
    raise TrajectoryError(f"pad_length: target {length} < current length {t}")
  updates = {}
  for name in TOKEN_FIELDS:
    v = getattr(traj, name)
    if v is not None:
      updates[name] = jnp.pad(v, ((0, 0), (0, length - t)))
  return traj.replace(**updates)


def _present(traj: Trajectory) -> list[str]:
  return [f.name for f in dataclasses.fields(traj) if getattr(traj, f.name) is not None]


# Validation -----------------------------------------------------------------
LOGPROB_FIELDS = ("behaviour_logprobs", "old_logprobs", "ref_logprobs",
                  "teacher_logprobs")


def _concrete(x) -> Optional[np.ndarray]:
  """``x`` as a host array when its values can be read for free, else None
  (tracers under jit, ``ShapeDtypeStruct``s, arrays not addressable from this
  host, and arrays on an accelerator: reading those back would be a blocking
  device-to-host copy in the inner loop)."""
  if isinstance(x, np.ndarray):
    return x
  if (isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
      and getattr(x, "is_fully_addressable", True)
      and all(d.platform == "cpu" for d in x.devices())):
    return np.asarray(x)
  return None


def _where(mask: np.ndarray) -> str:
  first = tuple(int(i) for i in np.argwhere(mask)[0])
  return f"{int(mask.sum())} entr{'y' if mask.sum() == 1 else 'ies'}, first at {list(first)}"


def _check_values(traj: Trajectory, b: int) -> None:
  """The value invariants of the module doc, on concrete arrays only."""
  g = traj.group_ids
  gv = _concrete(g)
  if gv is not None:
    bad = (gv < 0) | (gv >= b)
    if bad.any():
      raise TrajectoryError(
          f"Trajectory.group_ids must be in [0, B) = [0, {b}); "
          f"{_where(bad)} (value {int(gv[bad][0])}; group_ids shape "
          f"{tuple(np.shape(g))}, tokens {tuple(traj.tokens.shape)})")
  lm, im = _concrete(traj.loss_mask), _concrete(traj.input_mask)
  if lm is not None and im is not None:
    bad = lm & ~im
    if bad.any():
      raise TrajectoryError(
          f"Trajectory.loss_mask is True outside input_mask (padding) at "
          f"{_where(bad)} [b, t] (loss_mask {tuple(lm.shape)}, input_mask "
          f"{tuple(im.shape)})")
  for name in LOGPROB_FIELDS:
    v = _concrete(getattr(traj, name))
    if v is not None:
      bad = np.isnan(v)
      if bad.any():
        raise TrajectoryError(
            f"Trajectory.{name} has NaN at {_where(bad)} [b, t] (shape "
            f"{tuple(v.shape)})")


def validate(traj: Trajectory) -> Trajectory:
  """Checks shapes, dtypes and value invariants; raises naming field and shapes.

  Shapes and dtypes are checked on concrete or abstract arrays, so it is safe
  to call under jit. On concrete arrays (not under jit) the values are checked
  too: ``group_ids`` in ``[0, B)``, ``loss_mask`` only where ``input_mask``,
  no NaN in the ``*_logprobs`` fields.

  Returns:
    The trajectory itself, for chaining.

  Raises:
    TrajectoryError: a field whose shape or dtype disagrees with ``tokens``,
      a field that is not an array, or a broken value invariant.
  """
  if np.ndim(traj.tokens) != 2:
    raise TrajectoryError(
        f"Trajectory.tokens must be [B, T], got shape {tuple(np.shape(traj.tokens))}")
  b, t = np.shape(traj.tokens)
  for name in TOKEN_FIELDS + SAMPLE_FIELDS + REWARD_FIELDS:
    v = getattr(traj, name)
    if v is None:
      continue
    if not hasattr(v, "dtype"):
      raise TrajectoryError(
          f"Trajectory.{name} must be an array, got {type(v).__name__}")
    shape = tuple(np.shape(v))
    if name in TOKEN_FIELDS:
      want = (b, t)
      ok = shape == want
      want_s = f"[B, T] = {want}"
    elif name in SAMPLE_FIELDS:
      ok = shape == (b,)
      want_s = f"[B] = {(b,)}"
    else:
      ok = len(shape) == 2 and shape[0] == b
      want_s = f"[B, K] with B = {b}"
    if not ok:
      raise TrajectoryError(
          f"Trajectory.{name} has shape {shape}, expected {want_s} "
          f"(from tokens {tuple(traj.tokens.shape)})")
    kind = _DTYPE_KIND.get(name, "f")
    actual = jnp.dtype(v.dtype).kind
    if kind == "i" and actual not in "iu":
      raise TrajectoryError(f"Trajectory.{name} must be integer, got {v.dtype}")
    if kind == "b" and actual != "b":
      raise TrajectoryError(f"Trajectory.{name} must be bool, got {v.dtype}")
    if kind == "f" and actual != "f":
      raise TrajectoryError(f"Trajectory.{name} must be floating, got {v.dtype}")
  for key, v in traj.extras.items():
    for leaf in jax.tree.leaves(v):
      if np.ndim(leaf) == 0 or np.shape(leaf)[0] != b:
        raise TrajectoryError(
            f"Trajectory.extras[{key!r}] leaf has shape {tuple(np.shape(leaf))};"
            f" extras need a leading batch axis of size {b}")
  _check_values(traj, b)
  return traj
