"""Token log-probabilities (and entropies) aligned with the tokens.

Alignment (the Trajectory convention)::

    logprobs[b, t] = log softmax(logits[b, t-1] / temperature)[tokens[b, t]]
    entropy[b, t]  = H(softmax(logits[b, t-1] / temperature))

and 0 where undefined: at t = 0, where ``tokens[b, t]`` is padding, where the
previous slot is padding (the first real token of a left-padded row has no
context), and at the first token of a packed segment. ``logits[b, t-1]`` is
the model's prediction after reading ``tokens[b, :t]``.

``token_logprobs`` computes the unembedding chunk by chunk over time under
``jax.checkpoint``, so neither the forward nor the backward pass holds the
whole ``[B, T, V]`` float32 logits (only ``[B, chunk, V]`` at a time).
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from jaxsi.models.model import Model, Params
from jaxsi.trajectory import ModelOutputs, ScoreFn, Trajectory

Array = jax.Array

DEFAULT_CHUNK_SIZE = 128
# Upper bound on one chunk's f32 logits [B, chunk, V] (global shape): large
# batches × vocabularies (B = 512, V = 152k) get shorter chunks, so scoring a
# rollout never holds more than this many logit bytes per chunk.
LOGITS_CHUNK_BYTES = 2 ** 31


def prediction_mask(input_mask: Array, segment_ids: Optional[Array] = None
                    ) -> Array:
  """bool[B, T]: token t has a defined log-prob (see module docstring)."""
  input_mask = jnp.asarray(input_mask, bool)
  prev = input_mask[:, :-1] & input_mask[:, 1:]
  if segment_ids is not None:
    prev = prev & (segment_ids[:, :-1] == segment_ids[:, 1:])
  first = jnp.zeros_like(input_mask[:, :1])
  return jnp.concatenate([first, prev], axis=1)


def _shift_right(x: Array) -> Array:
  """[B, T-1, ...] -> [B, T, ...] with zeros at t = 0."""
  pad = [(0, 0)] * x.ndim
  pad[1] = (1, 0)
  return jnp.pad(x, pad)


def _check_temperature(temperature):
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")


def _lp_entropy(z: Array, targets: Array, with_entropy: bool):
  """log softmax(z)[targets] and entropy over the last axis of z (f32)."""
  lse = jax.nn.logsumexp(z, axis=-1)
  picked = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  lp = picked - lse
  if not with_entropy:
    return lp, None
  p = jnp.exp(z - lse[..., None])
  ent = lse - jnp.sum(p * z, axis=-1)
  return lp, ent


def logprobs_from_logits(logits: Array, tokens: Array, *,
                         input_mask: Optional[Array] = None,
                         segment_ids: Optional[Array] = None,
                         temperature=1.0, with_entropy: bool = False
                         ) -> Tuple[Array, Optional[Array]]:
  """Aligned log-probs from full logits (reference / small-vocab path).

  Args:
    logits: f[B, T, V], ``logits[b, t]`` predicts ``tokens[b, t+1]``.
    tokens: int[B, T].
    input_mask: bool[B, T] real tokens (default all real).
    segment_ids: int[B, T] packing segments, or None.
    temperature: divides the logits.
    with_entropy: also return the aligned entropies.

  Returns:
    (f32[B, T] logprobs, f32[B, T] entropy or None), 0 where undefined.
  """
  _check_temperature(temperature)
  tokens = jnp.asarray(tokens)
  if logits.shape[:2] != tokens.shape:
    raise ValueError(
        f"logprobs_from_logits: logits {logits.shape} vs tokens {tokens.shape}")
  if input_mask is None:
    input_mask = jnp.ones(tokens.shape, bool)
  valid = prediction_mask(input_mask, segment_ids)
  z = logits[:, :-1].astype(jnp.float32) / temperature
  lp, ent = _lp_entropy(z, tokens[:, 1:], with_entropy)
  lp = jnp.where(valid, _shift_right(lp), 0.0)
  if ent is not None:
    ent = jnp.where(valid, _shift_right(ent), 0.0)
  return lp, ent


def logprobs_from_hidden(model: Model, params: Params, hidden: Array,
                         tokens: Array, *, input_mask: Optional[Array] = None,
                         segment_ids: Optional[Array] = None, temperature=1.0,
                         with_entropy: bool = False,
                         chunk_size: int = DEFAULT_CHUNK_SIZE
                         ) -> Tuple[Array, Optional[Array]]:
  """Aligned log-probs from final hidden states, unembedding chunk by chunk.

  Args:
    model: the static Model.
    params: its params.
    hidden: [B, T, D] final-normed hidden states (``return_hidden=True``).
    tokens: int[B, T].
    input_mask: bool[B, T] real tokens (default all real).
    segment_ids: int[B, T] packing segments, or None.
    temperature: divides the logits.
    with_entropy: also return the aligned entropies.
    chunk_size: time steps per unembedding chunk (fewer when the chunk's
      logits would exceed ``LOGITS_CHUNK_BYTES``).

  Returns:
    (f32[B, T] logprobs, f32[B, T] entropy or None), 0 where undefined.
  """
  _check_temperature(temperature)
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  tokens = jnp.asarray(tokens)
  b, t = tokens.shape
  if hidden.shape[:2] != (b, t):
    raise ValueError(
        f"logprobs_from_hidden: hidden {hidden.shape} vs tokens {tokens.shape}")
  if input_mask is None:
    input_mask = jnp.ones((b, t), bool)
  valid = prediction_mask(input_mask, segment_ids)
  n = t - 1
  if n == 0:
    zeros = jnp.zeros((b, t), jnp.float32)
    return zeros, (zeros if with_entropy else None)
  vocab = model.config.vocab_size
  c = max(1, min(chunk_size, n, LOGITS_CHUNK_BYTES // (4 * b * vocab)))
  n_chunks = -(-n // c)
  pad = n_chunks * c - n
  h = jnp.pad(hidden[:, :-1], ((0, 0), (0, pad), (0, 0)))
  y = jnp.pad(tokens[:, 1:], ((0, 0), (0, pad)))
  d = h.shape[-1]
  h = h.reshape(b, n_chunks, c, d).swapaxes(0, 1)
  y = y.reshape(b, n_chunks, c).swapaxes(0, 1)

  @jax.checkpoint
  def chunk(args):
    hc, yc = args
    z = model.logits(params, hc) / temperature
    lp, ent = _lp_entropy(z, yc, with_entropy)
    return lp, (ent if with_entropy else jnp.zeros_like(lp))

  lp, ent = jax.lax.map(chunk, (h, y))
  lp = lp.swapaxes(0, 1).reshape(b, n_chunks * c)[:, :n]
  lp = jnp.where(valid, _shift_right(lp), 0.0)
  if not with_entropy:
    return lp, None
  ent = ent.swapaxes(0, 1).reshape(b, n_chunks * c)[:, :n]
  return lp, jnp.where(valid, _shift_right(ent), 0.0)


def reduce_logits_from_hidden(model: Model, params: Params, hidden: Array,
                              traj: Trajectory, reducer, *, temperature=1.0,
                              chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
  """Per-token values of the full next-token distribution, chunk by chunk over T.

  For terms that need the whole distribution (distillation) without keeping
  f32[B, T, V] logits alive: ``reducer(z, aux) -> {name: f[b, c]}`` is called
  on each chunk's logits z f32[b, c, V] (divided by ``temperature``) and the
  matching slices of ``aux = {k: traj.extras[k]}`` for ``k in reducer.keys``
  (arrays aligned like the log-probs: entry t belongs to the prediction of
  token t). Each chunk is rematerialised in the backward pass
  (``jax.checkpoint``), so at most one chunk's logits (and their cotangent)
  are alive, as in :func:`logprobs_from_hidden`.

  Returns:
    ``{name: f32[B, T]}`` aligned like the log-probs, 0 where undefined.
  """
  _check_temperature(temperature)
  b, t = traj.tokens.shape
  keys = tuple(getattr(reducer, "keys", ()))
  missing = [k for k in keys if k not in traj.extras]
  if missing:
    raise ValueError(f"reduce_logits_from_hidden: traj.extras lacks {missing}"
                     f" (the reducer reads {list(keys)})")
  valid = prediction_mask(traj.input_mask, traj.segment_ids)
  n = t - 1
  vocab = model.config.vocab_size
  c = max(1, min(chunk_size, max(n, 1), LOGITS_CHUNK_BYTES // (4 * b * vocab)))
  n_chunks = -(-max(n, 1) // c)
  pad = n_chunks * c - n

  def chunked(x):   # [B, T, ...] prediction-aligned → [n_chunks, B, c, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape((b, n_chunks, c) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)

  h = chunked(hidden[:, :-1])
  aux = {k: chunked(jnp.asarray(traj.extras[k])[:, 1:]) for k in keys}

  @jax.checkpoint
  def chunk(args):
    hc, ac = args
    z = model.logits(params, hc).astype(jnp.float32) / temperature
    return reducer(z, ac)

  out = jax.lax.map(chunk, (h, aux))
  res = {}
  for name, v in out.items():
    v = jnp.moveaxis(v, 0, 1).reshape((b, n_chunks * c) + v.shape[3:])[:, :n]
    res[name] = jnp.where(valid, _shift_right(v), 0.0)
  return res


def token_logprobs(model: Model, params: Params, tokens: Array,
                   positions: Array, *, input_mask: Optional[Array] = None,
                   segment_ids: Optional[Array] = None, temperature=1.0,
                   with_entropy: bool = False,
                   chunk_size: int = DEFAULT_CHUNK_SIZE
                   ) -> Tuple[Array, Optional[Array]]:
  """Forward pass + aligned log-probs (and entropies), chunked over time.

  Args:
    model: the static Model.
    params: its params.
    tokens: int[B, T].
    positions: int[B, T].
    input_mask: bool[B, T] real tokens (default all real).
    segment_ids: int[B, T] packing segments, or None.
    temperature: divides the logits (match the sampler's temperature).
    with_entropy: also return the aligned entropies.
    chunk_size: time steps per unembedding chunk (fewer when the chunk's
      logits would exceed ``LOGITS_CHUNK_BYTES``).

  Returns:
    (f32[B, T] logprobs, f32[B, T] entropy or None), 0 where undefined.
  """
  hidden, _ = model.apply(params, tokens, positions, input_mask=input_mask,
                          segment_ids=segment_ids, return_hidden=True)
  return logprobs_from_hidden(
      model, params, hidden, tokens, input_mask=input_mask,
      segment_ids=segment_ids, temperature=temperature,
      with_entropy=with_entropy, chunk_size=chunk_size)


def values_from_hidden(model: Model, params: Params, hidden: Array,
                       input_mask: Array, segment_ids: Optional[Array] = None
                       ) -> Array:
  """f32[B, T] value head aligned like the logprobs: ``[b, t]`` = the head on
  the hidden state that predicted token t (0 at t = 0, padding, segment starts)."""
  valid = prediction_mask(input_mask, segment_ids)
  return jnp.where(valid, _shift_right(model.values(params, hidden[:, :-1])), 0.0)


def score_fn(model: Model, *, temperature=1.0, with_entropy: bool = False,
             with_values: bool = False, with_logits: bool = False,
             logits_reducer=None,
             chunk_size: int = DEFAULT_CHUNK_SIZE) -> ScoreFn:
  """A ``ScoreFn(params, traj) -> ModelOutputs`` for ``Context.scorers``.

  Reads ``traj.tokens, positions, input_mask, segment_ids``.

  Args:
    model: the static Model.
    temperature: divides the logits.
    with_entropy: fill ``ModelOutputs.entropy``.
    with_values: fill ``ModelOutputs.values`` (needs ``config.value_head``):
      ``values[b, t]`` = value head on the hidden state that predicted token t
      (the state before token t), aligned and masked like the logprobs.
    with_logits: fill ``ModelOutputs.logits`` with full f32[B, T, V] logits
      aligned like the logprobs (``[b, t]`` = prediction of token t, zeros at
      t = 0); memory-heavy, for distillation with small vocabularies.
    logits_reducer: ``fn(z, aux) -> {name: f[b, c]}`` evaluated chunk by
      chunk on the full logits (:func:`reduce_logits_from_hidden`); its
      results go to ``ModelOutputs.extras`` (the full-distribution terms'
      memory-bounded path).
    chunk_size: time steps per unembedding chunk.

  Returns:
    fn(params, traj) -> ModelOutputs.
  """
  _check_temperature(temperature)
  if with_values and not model.config.value_head:
    raise ValueError(
        "score_fn(with_values=True): the model has no value head; build it "
        "with ModelConfig.value_head=True")

  def fn(params: Params, traj: Trajectory) -> ModelOutputs:
    hidden, _ = model.apply(params, traj.tokens, traj.positions,
                            input_mask=traj.input_mask,
                            segment_ids=traj.segment_ids, return_hidden=True)
    lp, ent = logprobs_from_hidden(
        model, params, hidden, traj.tokens, input_mask=traj.input_mask,
        segment_ids=traj.segment_ids, temperature=temperature,
        with_entropy=with_entropy, chunk_size=chunk_size)
    valid = prediction_mask(traj.input_mask, traj.segment_ids)
    values = None
    if with_values:
      values = values_from_hidden(model, params, hidden, traj.input_mask,
                                  traj.segment_ids)
    logits = None
    if with_logits:
      z = model.logits(params, hidden[:, :-1]) / temperature
      logits = _shift_right(z) * valid[..., None]
    extras = {}
    if logits_reducer is not None:
      extras = reduce_logits_from_hidden(model, params, hidden, traj,
                                         logits_reducer, temperature=temperature,
                                         chunk_size=chunk_size)
    return ModelOutputs(logprobs=lp, entropy=ent, values=values, logits=logits,
                        extras=extras)

  return fn
