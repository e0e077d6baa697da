"""Re-scoring transforms: log-probs of the trajectory under other parameters
or under another context.

All of them run a frozen forward pass through ``ctx.score(scorer, params,
traj)`` (see :class:`jaxsi.transforms.base.Context`) and store the
stop-gradient log-probs in a trajectory field (or ``traj.extras[name]`` when
the name is not a Trajectory field). Log-probs are zeroed outside
``input_mask`` (the Trajectory convention: 0 on padding).

Re-scoring under another context (:func:`rescore`) — the alignment contract:

* ``traj.extras['<context>_tokens']`` int32[B, T'] holds, for every sample, the
  SAME completion after a different prompt (privileged information, a hint, a
  critique, or the plain prompt of a hint-conditioned sample);
  ``'<context>_positions'`` int32[B, T'] and ``'<context>_input_mask'``
  bool[B, T'] are optional (default: all tokens real, positions counted over
  real tokens).
* The completion is RIGHT-ALIGNED in both layouts: token ``traj.tokens[b, j]``
  of the completion sits at ``j + (T' − T)`` in the other layout (same
  completion length and same right padding). This is what the sampler's
  [left-padded prompt bucket | right-padded completion bucket] layout gives
  when only the prompt bucket changes.
* The result is aligned to ``traj``: ``out[b, j] = log p(tokens[b, j] | other
  prompt, completion[:j])`` on ``loss_mask`` tokens, 0 elsewhere. The metric
  ``'rescore/token_mismatch'`` (fraction of loss tokens whose aligned tokens
  differ) flags a violated contract; it should be 0.

Who builds the other layout: ``jaxsi.sampling.privileged.Privileged`` (a
privileged prompt per task in its own bucket T' − G ≥ the sampling bucket,
with positions; OPSD / Skill-SD, ``jaxsi.methods.opsd``) and
``jaxsi.sampling.rollouts.WithContext`` (same bucket, T' = T).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, positions_from_mask
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array
_FIELDS = {f.name for f in dataclasses.fields(Trajectory)}


def _store(traj: Trajectory, name: str, value: Array) -> Trajectory:
  if name in _FIELDS and name != "extras":
    return traj.replace(**{name: value})
  extras = dict(traj.extras)
  extras[name] = value
  return traj.replace(extras=extras)


def score_logprobs(*, field: str, scorer: str = "policy",
                   params: str = "policy", stop_gradient: bool = True,
                   entropy_key: Optional[str] = None) -> TrajectoryTransform:
  """Fills ``field`` with ``ctx.score(scorer, params, traj).logprobs``.

  Args:
    field: a Trajectory field ('ref_logprobs', 'old_logprobs', …) or an
      extras key.
    scorer: name of the ScoreFn in ``ctx.scorers``.
    params: name of the parameter set in ``ctx.params``.
    stop_gradient: wrap the result in ``lax.stop_gradient``.
    entropy_key: if set, also store the scorer's per-token entropy in
      ``traj.extras[entropy_key]`` (the scorer must return it).

  Returns:
    A stateless transform; metric '<field>/mean' (mean over loss tokens of
    valid samples).
  """

  def fn(traj: Trajectory, ctx: Context):
    out = ctx.score(scorer, params, traj)
    lp = jnp.where(traj.input_mask, jnp.asarray(out.logprobs, jnp.float32), 0.0)
    if stop_gradient:
      lp = jax.lax.stop_gradient(lp)
    traj = _store(traj, field, lp)
    if entropy_key is not None:
      if out.entropy is None:
        raise ValueError(f"scorer {scorer!r} returned no entropy; build it with "
                         "with_entropy=True or drop entropy_key")
      ent = jnp.where(traj.input_mask, out.entropy, 0.0)
      traj = _store(traj, entropy_key, jax.lax.stop_gradient(ent))
    m = traj.sample_mask
    return traj, {f"{field}/mean": jnp.sum(lp * m) / jnp.maximum(jnp.sum(m), 1.0)}

  return stateless(fn)


def ref_logprobs(*, scorer: str = "policy", params: str = "reference"
                 ) -> TrajectoryTransform:
  """``traj.ref_logprobs`` ← sg[ctx.score(scorer, 'reference', traj).logprobs].

  The frozen reference policy of the KL term / KL-in-reward (GRPO, PPO, DPO).
  """
  return score_logprobs(field="ref_logprobs", scorer=scorer, params=params)


def teacher_logprobs(*, scorer: str = "policy", params: str = "teacher",
                     entropy_key: Optional[str] = None) -> TrajectoryTransform:
  """``traj.teacher_logprobs`` ← sg[ctx.score(scorer, 'teacher', traj).logprobs].

  For a teacher with its own architecture register its ScoreFn under another
  name and pass ``scorer='teacher'``.
  """
  return score_logprobs(field="teacher_logprobs", scorer=scorer, params=params,
                        entropy_key=entropy_key)


def shift_columns(x: Array, d: int, fill) -> Array:
  """Moves columns (axis 1) right by d ≥ 0 (pad left) or left by −d (drop left)."""
  if d >= 0:
    pad = [(0, 0)] * x.ndim
    pad[1] = (d, 0)
    return jnp.pad(x, pad, constant_values=fill)
  return x[:, -d:]


def context_layout(traj: Trajectory, context: str):
  """The other-context layout of ``traj`` and its column offset d = T' − T.

  Reads ``traj.extras[f'{context}_tokens' | '_positions' | '_input_mask']``
  (module docstring: the completion is right-aligned in both layouts) and
  returns a Trajectory over the other layout (``loss_mask`` shifted by d, the
  row fields of ``traj``) and d: column j of ``traj`` is column j + d there.
  """
  key = f"{context}_tokens"
  if key not in traj.extras:
    raise KeyError(f"rescore needs traj.extras[{key!r}] (int32[B, T'])")
  tokens = jnp.asarray(traj.extras[key], jnp.int32)
  d = tokens.shape[1] - traj.length
  input_mask = traj.extras.get(f"{context}_input_mask")
  input_mask = (jnp.ones(tokens.shape, bool) if input_mask is None
                else jnp.asarray(input_mask, bool))
  positions = traj.extras.get(f"{context}_positions")
  positions = (positions_from_mask(input_mask) if positions is None
               else jnp.asarray(positions, jnp.int32))
  other = Trajectory(
      tokens=tokens, positions=positions, input_mask=input_mask,
      loss_mask=shift_columns(traj.loss_mask, d, False), weights=traj.weights,
      valid=traj.valid, group_ids=traj.group_ids, prompt_ids=traj.prompt_ids,
      pair_ids=traj.pair_ids)
  return other, d


def rescore(*, context: str = "rescore", scorer: str = "policy",
            params: str = "policy", field: str = "teacher_logprobs",
            stop_gradient: bool = True) -> TrajectoryTransform:
  r"""Log-probs of each completion under a different prompt.

  Reads ``traj.extras[f'{context}_tokens' | '_positions' | '_input_mask']``
  (see the module docstring for the right-alignment contract), scores that
  layout with ``ctx.score(scorer, params, ·)`` and writes the completion
  log-probs, aligned to ``traj.tokens``, into ``field`` (a Trajectory field or
  an extras key).

  Uses: OPSD / Skill-SD (``methods.opsd``: the same model with privileged
  context is the teacher, ``context='privileged'``,
  ``field='teacher_logprobs'``); Guide / ExPO / STaR rationalisation (a sample drawn
  under a hint, scored under the plain prompt or vice versa:
  ``field='behaviour_logprobs'`` or ``'old_logprobs'``).

  Returns:
    A stateless transform; metrics 'rescore/mean_logprob',
    'rescore/token_mismatch'.
  """

  def fn(traj: Trajectory, ctx: Context):
    other, d = context_layout(traj, context)
    tokens = other.tokens
    out = ctx.score(scorer, params, other)
    lp = shift_columns(jnp.asarray(out.logprobs, jnp.float32), -d, 0.0)
    lp = jnp.where(traj.loss_mask, lp, 0.0)
    if stop_gradient:
      lp = jax.lax.stop_gradient(lp)
    aligned_tokens = shift_columns(tokens, -d, -1)
    m = traj.sample_mask
    mismatch = ((aligned_tokens != traj.tokens) & traj.loss_mask).astype(
        jnp.float32)
    denom = jnp.maximum(jnp.sum(traj.loss_mask), 1)
    metrics = {
        "rescore/mean_logprob": jnp.sum(lp * m) / jnp.maximum(jnp.sum(m), 1.0),
        "rescore/token_mismatch": jnp.sum(mismatch) / denom,
    }
    return _store(traj, field, lp), metrics

  return stateless(fn)


__all__ = ["score_logprobs", "ref_logprobs", "teacher_logprobs", "rescore",
           "context_layout", "shift_columns"]
