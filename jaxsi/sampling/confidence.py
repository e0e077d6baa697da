r"""Confidence of completions under a role's own next-token distributions.

One forward pass of a role (the policy, or the frozen reference) over a
batch of completions gives, per completion token t, ``log p(y_t)``, the
entropy H_t and the self-certainty KL(U ‖ p_t)
(``jaxsi.rewards.self_certainty``). Reduced over the completion they are:

=================== ============================================== =====================================
kind                sequence score                                  used by
=================== ============================================== =====================================
``self_certainty``  1/n Σ_t KL(U ‖ p_t)                             Intuitor reward (arXiv:2505.19590
                                                                    §3); best-of-N (arXiv:2502.18581)
``logprob``         Σ_t log p(y_t) (÷ n if length-normalised)       EM-RL-sequence reward (−trajectory
                                                                    entropy estimate, arXiv:2505.15134
                                                                    §2); RLHF-Sharpening reward under
                                                                    the base model (arXiv:2412.01951)
``neg_entropy``     −Σ_t H_t (÷ n if length-normalised)             EM-RL-token reward (arXiv:2505.15134)
=================== ============================================== =====================================

:class:`ConfidenceReward` is the device reward stage; :func:`select_best_of_n`
the test-time selector. The logits are unembedded chunk by chunk over time
(as ``models.logprobs``), so ``[B, T, V]`` f32 logits are never all alive.

A device reward stage reads its role's model and parameters through the
stage context's ``role_model_params(role)`` (``training/stage_context.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.rewards import self_certainty as sc_lib
from jaxsi.rewards import stages

KINDS = ("self_certainty", "logprob", "neg_entropy")


def token_statistics(model, params, tokens, positions, input_mask, *,
                     temperature: float = 1.0,
                     chunk_size: int = logprobs_lib.DEFAULT_CHUNK_SIZE):
  """Aligned per-token (logprob, entropy, self-certainty), each f32[B, T].

  Aligned like ``models.logprobs``: index t holds the statistics of the
  distribution that predicted token t (0 at t = 0 and where undefined).
  Pure and jit-able.
  """
  if temperature <= 0:
    raise ValueError(f"token_statistics: temperature must be > 0, got {temperature}")
  tokens = jnp.asarray(tokens)
  b, t = tokens.shape
  valid = logprobs_lib.prediction_mask(input_mask)
  hidden, _ = model.apply(params, tokens, positions, input_mask=input_mask,
                          return_hidden=True)
  n = t - 1
  if n == 0:
    zeros = jnp.zeros((b, t), jnp.float32)
    return zeros, zeros, zeros
  vocab = model.config.vocab_size
  c = max(1, min(chunk_size, n, logprobs_lib.LOGITS_CHUNK_BYTES // (4 * b * vocab)))
  chunks = -(-n // c)
  pad = chunks * c - n
  h = jnp.pad(hidden[:, :-1], ((0, 0), (0, pad), (0, 0)))
  y = jnp.pad(tokens[:, 1:], ((0, 0), (0, pad)))
  h = h.reshape(b, chunks, c, h.shape[-1]).swapaxes(0, 1)
  y = y.reshape(b, chunks, c).swapaxes(0, 1)

  def chunk(args):
    hc, yc = args
    z = model.logits(params, hc).astype(jnp.float32) / temperature
    return sc_lib.token_statistics_from_logits(z, yc)

  outs = jax.lax.map(chunk, (h, y))

  def align(x):
    x = x.swapaxes(0, 1).reshape(b, chunks * c)[:, :n]
    return jnp.where(valid, jnp.pad(x, ((0, 0), (1, 0))), 0.0)

  return tuple(align(x) for x in outs)


@functools.lru_cache(maxsize=None)
def _statistics_jit(model, temperature: float):
  return jax.jit(functools.partial(token_statistics, model,
                                   temperature=temperature))


def _bucket(b: int) -> int:
  """Rows padded to a power of two, so varying graded sub-batches (hinted
  resamples, per-group retries) compile a handful of shapes only."""
  return 1 << max(0, int(b - 1).bit_length())


def sequence_confidence(model, params, traj, *, kind: str,
                        temperature: float = 1.0,
                        length_normalize: Optional[bool] = None) -> np.ndarray:
  """f32[B] confidence of every row's completion (``traj.loss_mask``).

  Args:
    model: the role's static Model.
    params: its parameters.
    traj: a (host or device) Trajectory with ``tokens``, ``positions``,
      ``input_mask``, ``loss_mask``.
    kind: ``'self_certainty'`` (always a token mean), ``'logprob'`` or
      ``'neg_entropy'`` (see the module docstring).
    temperature: divides the logits.
    length_normalize: divide ``logprob`` / ``neg_entropy`` by the completion
      length (default: no).

  Returns:
    Host f32[B].
  """
  if kind not in KINDS:
    raise ValueError(f"sequence_confidence: kind={kind!r}; expected one of {KINDS}")
  tokens = np.asarray(traj.tokens)
  b = tokens.shape[0]
  if b == 0:
    return np.zeros((0,), np.float32)
  size = _bucket(b)

  def padded(x):
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[-1:], size - b, axis=0)]) if size > b else x

  lp, ent, sc = _statistics_jit(model, float(temperature))(
      params, padded(tokens), padded(traj.positions), padded(traj.input_mask))
  mask = np.asarray(traj.loss_mask, bool)
  if kind == "self_certainty":
    return sc_lib.sequence_reduce(np.asarray(sc)[:b], mask, reduce="mean")
  values = np.asarray(lp)[:b] if kind == "logprob" else -np.asarray(ent)[:b]
  return sc_lib.sequence_reduce(values, mask,
                                reduce="mean" if length_normalize else "sum")


def role_model_params(ctx: Any, role: str):
  """(model, params) of ``role`` through the stage context's public accessor.

  Raises:
    spec.ConfigurationError: the context gives no role access, or the run has
      no such role.
  """
  getter = getattr(ctx, "role_model_params", None)
  if not callable(getter):
    raise spec_lib.ConfigurationError(
        f"ConfidenceReward: the stage context {type(ctx).__name__} gives no"
        f" access to role {role!r} (needs role_model_params(role))")
  return getter(role)


@dataclasses.dataclass(frozen=True, eq=False)
class ConfidenceReward(stages.Scorer):
  """A device reward stage: a role's confidence in each graded completion.

  Attributes:
    role: the role scored under (``'policy'``: the live policy, Intuitor /
      EM-RL; ``'reference'``: the frozen base, RLHF-Sharpening — list
      ``spec.Role('reference', FROM_INITIAL)`` in the method's roles so the
      loop keeps the copy).
    kind: ``'self_certainty'``, ``'logprob'`` or ``'neg_entropy'``.
    temperature: divides the logits (use the rollout's scoring temperature).
    length_normalize: for ``logprob`` / ``neg_entropy``, divide by the
      completion length.
    name: the reward column name.
  """

  role: str = spec_lib.POLICY
  kind: str = "self_certainty"
  temperature: float = 1.0
  length_normalize: bool = False
  name: str = "self_certainty"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"ConfidenceReward {self.name!r}: kind={self.kind!r};"
                       f" expected one of {KINDS}")
    if not self.temperature > 0:
      raise ValueError(f"ConfidenceReward {self.name!r}: temperature must be"
                       f" > 0, got {self.temperature!r}")

  @property
  def names(self):  # pylint: disable=invalid-overridden-method
    return (self.name,)

  @property
  def roles(self):  # pylint: disable=invalid-overridden-method
    # A FROM_INITIAL role is declared by the method (spec.Role), not here:
    # the loop refuses a stage-read role that the run does not pass itself.
    return () if self.role == spec_lib.REFERENCE else (self.role,)

  def __call__(self, ctx: Any, inputs: stages.RewardInputs):
    if inputs.traj is None:
      raise ValueError(f"ConfidenceReward {self.name!r}: the graded rows carry"
                       " no trajectory")
    model, params = role_model_params(ctx, self.role)
    scores = sequence_confidence(model, params, inputs.traj, kind=self.kind,
                                 temperature=self.temperature,
                                 length_normalize=self.length_normalize)
    return scores[:, None].astype(np.float32), {}

  def __hash__(self):
    return id(self)


def select_best_of_n(model, params, traj, *, kind: str = "self_certainty",
                     temperature: float = 1.0,
                     length_normalize: Optional[bool] = None):
  """Best-of-N by confidence: the most confident completion of every group.

  Self-certainty best-of-N (Kang et al. 2025, arXiv:2502.18581, §3) with
  ``kind='self_certainty'``; likelihood best-of-N (SFT-Sharpening's
  selector, arXiv:2412.01951 §3.1) with ``kind='logprob'``.

  Args:
    model, params: the scoring model (usually the sampler itself).
    traj: the sampled Trajectory (``group_ids``: the samples of one prompt).
    kind, temperature, length_normalize: as :func:`sequence_confidence`.

  Returns:
    ``(rows, scores)``: ``{group id: chosen row}`` (ties → lowest row;
    invalid rows never chosen) and the f32[B] scores.
  """
  scores = sequence_confidence(model, params, traj, kind=kind,
                               temperature=temperature,
                               length_normalize=length_normalize)
  valid = None if traj.valid is None else np.asarray(traj.valid, bool)
  return sc_lib.best_of_n(scores, np.asarray(traj.group_ids), valid), scores


__all__ = ["ConfidenceReward", "KINDS", "role_model_params", "select_best_of_n",
           "sequence_confidence", "token_statistics"]
