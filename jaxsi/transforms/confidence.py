r"""RLSC: the self-confidence objective (Li et al. 2025, arXiv:2506.06395).

"Confidence Is All You Need: Few-Shot RL Fine-Tuning of Language Models".
RLSC maximises the model's self-confidence F(θ) = E_{y∼p_θ(·|x)}[p_θ(y|x)]
(the probability that two independent samples coincide). With samples
y_1..y_N from the frozen sampling policy p_old, its gradient is estimated by
the weighted likelihood loss (our reading follows the catalog's GK summary of
§3, not checked against the paper's equations)::

    L = − Σ_i (p_old(y_i|x) + α) · log p_θ(y_i|x)

with p_old(y|x) = exp Σ_t log p_old(y_t | x, y_<t) (stop-gradient) and a small
smoothing α > 0 (α = 0 is the unsmoothed L₁). It is an **objective term**,
not a reward: no advantage, no baseline; the weights come from the sampler's
own sequence probabilities. ``log p_θ(y|x) = Σ_t`` the trained token
log-probs, so the per-token loss is ℓ_{i,t} = −(p_old(y_i) + α)·log p_θ(y_{i,t})
reduced with ``agg`` (default ``'seq-mean-token-sum'``: Σ over tokens, mean
over the valid samples, i.e. the formula above divided by N).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

sg = jax.lax.stop_gradient


def sequence_probability(logprobs, loss_mask) -> jax.Array:
  """f32[B]: exp(Σ_t log p over the loss tokens), the sequence probability."""
  m = jnp.asarray(loss_mask, bool)
  return jnp.exp(jnp.sum(jnp.where(m, logprobs, 0.0), axis=-1))


def rlsc(*, alpha: float = 0.1, agg: str = "seq-mean-token-sum",
         max_len: Optional[int] = None):
  r"""The RLSC term L = −Σ_i (p_old(y_i|x) + α) · log p_θ(y_i|x) (module docstring).

  Reads ``traj.old_logprobs`` (chain ``importance.old_logprobs()``; the
  behaviour log-probs are used when absent) for p_old and
  ``outputs.logprobs`` for log p_θ.

  Args:
    alpha: the smoothing α ≥ 0.
    agg: token aggregation of ℓ_{i,t} (explicit).
    max_len: L_max of ``seq-mean-token-sum-norm``.

  Returns:
    An objective term; metrics ``p_old_mean`` (mean sequence probability of
    the valid samples) and ``logp_mean`` (mean Σ_t log p_θ).
  """
  if alpha < 0:
    raise ValueError(f"rlsc: alpha must be >= 0, got {alpha}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    old = traj.old_logprobs if traj.old_logprobs is not None else traj.behaviour_logprobs
    if old is None:
      raise ValueError("rlsc needs traj.old_logprobs (chain old_logprobs()) or"
                       " behaviour_logprobs")
    p_old = sg(sequence_probability(old, traj.loss_mask))
    w = p_old + alpha
    loss = aggregation.aggregate_trajectory(
        -w[:, None] * outputs.logprobs, traj, mode=agg, max_len=max_len)
    v = traj.valid.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(v), 1.0)
    logp = jnp.sum(jnp.where(traj.loss_mask, outputs.logprobs, 0.0), axis=-1)
    return loss, {"p_old_mean": jnp.sum(p_old * v) / n,
                  "logp_mean": sg(jnp.sum(logp * v) / n)}

  return term


__all__ = ["rlsc", "sequence_probability"]
