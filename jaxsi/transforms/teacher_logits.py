r"""Teacher distributions for distillation, kept as top-k, computed chunk by chunk.

:func:`teacher_topk` runs a teacher scorer that returns full logits
(``ModelOutputs.logits`` f32[b, T, V]; the loop registers one per role as
``'<role>/logits'``) on ``row_chunk`` rows at a time (``lax.map`` over row
chunks), keeps only each position's top-k token ids and teacher log-probs,
and stores them in ``traj.extras`` (``distillation.TOPK_IDS_KEY`` int32[B, T,
K], ``distillation.TOPK_LOGPROBS_KEY`` f32[B, T, K], and the exact log-mass
of the other ids ``distillation.TOPK_TAIL_KEY`` f32[B, T]). At most one chunk's
[row_chunk, T, V] f32 logits are alive; what the update reads is [B, T, K].

The stored log-probs are the teacher's true (full-softmax) log-probs of the
top-k ids, at the scorer's temperature (the loop's scorers use the method's
sampling temperature, the same as the update's forward pass), so the tail
mass is known to the terms of :mod:`distillation`. With
K = V the stored distribution is the whole teacher distribution.

Alignment: like ``logprobs`` (entry t is the distribution that produced
token t); positions outside ``input_mask`` hold ids 0 and the finite
log-prob floor ``LOGPROB_FLOOR`` (no −inf, so no NaN can reach a gradient;
the terms mask those positions anyway).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import distillation
from jaxsi.transforms import rescoring
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array
TOPK_IDS_KEY = distillation.TOPK_IDS_KEY
TOPK_LOGPROBS_KEY = distillation.TOPK_LOGPROBS_KEY
TOPK_TAIL_KEY = distillation.TOPK_TAIL_KEY
LOGPROB_FLOOR = -1e4


def topk_of_logits(logits: Array, k: int):
  """(int32[..., K] ids, f32[..., K] log-probs, f32[...] tail log-prob).

  log-probs are the full-softmax ones (log_softmax over V, then top-k), in
  decreasing order; the tail is the exact log-mass of the other V − K ids
  (``distillation.tail_logprob``; ``LOGPROB_FLOOR`` when K = V).
  """
  z = jnp.asarray(logits, jnp.float32)
  lp = jax.nn.log_softmax(z, axis=-1)
  vals, ids = jax.lax.top_k(lp, k)
  ids = ids.astype(jnp.int32)
  return ids, jnp.maximum(vals, LOGPROB_FLOOR), distillation.tail_logprob(z, ids)


def _row_slice(traj: Trajectory, start, size: int) -> Trajectory:
  """Rows [start, start + size) of every [B, ...] leaf (extras included)."""
  return jax.tree.map(
      lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=0), traj)


def chunked_topk(score, traj: Trajectory, *, k: int, row_chunk: int):
  """Top-k of ``score(traj_chunk).logits`` over row chunks (``lax.map``).

  Args:
    score: ``fn(traj) -> ModelOutputs`` with ``logits`` f32[b, T, V].
    traj: the trajectory (B rows).
    k: K kept per position (1 <= K <= V).
    row_chunk: rows per chunk; must divide B.

  Returns:
    (int32[B, T, K] ids, f32[B, T, K] log-probs, f32[B, T] tail log-prob),
    masked to ``input_mask`` (ids 0, log-probs ``LOGPROB_FLOOR`` elsewhere).
  """
  b = traj.batch_size
  if row_chunk < 1 or b % row_chunk:
    raise ValueError(f"teacher_topk: row_chunk={row_chunk} must be >= 1 and"
                     f" divide the batch size {b}")
  n = b // row_chunk

  def one(i):
    part = _row_slice(traj, i * row_chunk, row_chunk)
    out = score(part)
    if out.logits is None:
      raise ValueError("teacher_topk: the scorer returned no logits; use a"
                       " scorer built with with_logits=True (the loop's"
                       " '<role>/logits')")
    if not 1 <= k <= out.logits.shape[-1]:
      raise ValueError(f"teacher_topk: k={k} must be in [1, V={out.logits.shape[-1]}]")
    return topk_of_logits(out.logits, k)

  ids, lps, tail = jax.lax.map(one, jnp.arange(n))
  ids, lps, tail = (x.reshape((b,) + x.shape[2:]) for x in (ids, lps, tail))
  m = traj.input_mask
  return (jnp.where(m[..., None], ids, 0),
          jnp.where(m[..., None], lps, LOGPROB_FLOOR),
          jnp.where(m, tail, LOGPROB_FLOOR))


def teacher_topk(*, k: int, scorer: str = "teacher/logits",
                 params: str = "teacher", row_chunk: int = 1,
                 context: Optional[str] = None) -> TrajectoryTransform:
  """Stores the teacher's top-k ids / log-probs of every position.

  Args:
    k: ids kept per position (K = V keeps the whole distribution).
    scorer: a ScoreFn in ``ctx.scorers`` returning full logits.
    params: the teacher's parameter set in ``ctx.params``.
    row_chunk: rows scored at once (divides B); one chunk's [row_chunk, T, V]
      logits are the most that is alive.
    context: score each completion under another prompt instead
      (``traj.extras['<context>_tokens']``, the right-aligned layout of
      ``rescoring.rescore``; e.g. ``'privileged'``, OPSD's teacher
      p_T(· | x, y*, ŷ_<t)). The stored arrays are aligned to ``traj`` and
      kept on ``loss_mask`` positions only (ids 0, ``LOGPROB_FLOOR`` elsewhere:
      the prompt columns of the two layouts differ).

  Returns:
    A stateless transform; metric ``teacher_topk/mass`` (mean kept teacher
    probability mass over loss tokens of valid samples; 1 when K = V).
  """
  if int(k) != k or k < 1:
    raise ValueError(f"teacher_topk: k must be an integer >= 1, got {k!r}")
  if int(row_chunk) != row_chunk or row_chunk < 1:
    raise ValueError(f"teacher_topk: row_chunk must be an integer >= 1, got {row_chunk!r}")

  def fn(traj: Trajectory, ctx: Context):
    score = lambda part: ctx.score(scorer, params, part)
    if context is None:
      ids, lps, tail = jax.lax.stop_gradient(
          chunked_topk(score, traj, k=int(k), row_chunk=int(row_chunk)))
    else:
      other, d = rescoring.context_layout(traj, context)
      ids, lps, tail = jax.lax.stop_gradient(
          chunked_topk(score, other, k=int(k), row_chunk=int(row_chunk)))
      lm = traj.loss_mask
      ids = jnp.where(lm[..., None], rescoring.shift_columns(ids, -d, 0), 0)
      lps = jnp.where(lm[..., None],
                      rescoring.shift_columns(lps, -d, LOGPROB_FLOOR), LOGPROB_FLOOR)
      tail = jnp.where(lm, rescoring.shift_columns(tail, -d, LOGPROB_FLOOR),
                       LOGPROB_FLOOR)
    extras = dict(traj.extras)
    extras[TOPK_IDS_KEY], extras[TOPK_LOGPROBS_KEY] = ids, lps
    extras[TOPK_TAIL_KEY] = tail
    mass = jnp.sum(jnp.exp(lps), axis=-1)
    m = traj.sample_mask
    metrics = {"teacher_topk/mass": jnp.sum(mass * m) / jnp.maximum(jnp.sum(m), 1.0)}
    return traj.replace(extras=extras), metrics

  return stateless(fn)


__all__ = ["teacher_topk", "chunked_topk", "topk_of_logits", "TOPK_IDS_KEY",
           "TOPK_LOGPROBS_KEY", "TOPK_TAIL_KEY", "LOGPROB_FLOOR"]
