r"""Self-certainty and other confidence statistics of a model's own predictions.

Self-certainty (Kang, Zhao & Song 2025, "Scalable Best-of-N Selection for
Large Language Models via Self-Certainty", arXiv:2502.18581, §3, Eq. for
self-certainty) of a completion y = (y_1..y_n) is the mean over its tokens
of the KL divergence from the uniform distribution U over the V-token
vocabulary to the model's next-token distribution p_t = p(· | x, y_<t):

    SC(y) = 1/n Σ_t KL(U ‖ p_t) = −1/(n·V) Σ_t Σ_j log(V · p_tj)
          = 1/n Σ_t [ −log V − (1/V) Σ_j log p_tj ].

It is 0 for a uniform p_t and grows as p_t concentrates; unlike the
likelihood it reads the whole distribution, not only the sampled token.
Intuitor (Zhao et al. 2025, "Learning to Reason without External Rewards",
arXiv:2505.19590, §3) uses it as the only reward of GRPO.

This module holds the formulas (pure ``jax.numpy`` on logits, and the host
selection of best-of-N); the forward pass that produces the per-token
values from a role's parameters is ``jaxsi.sampling.confidence``.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def token_statistics_from_logits(z: Array, targets: Array):
  """Per-position log-prob, entropy and self-certainty from logits.

  Args:
    z: f32[..., V] logits (already divided by the temperature).
    targets: int[...] the tokens whose log-prob is read.

  Returns:
    ``(logprob, entropy, self_certainty)``, each f32[...]:
    ``log p[target]``, ``−Σ_j p_j log p_j`` and ``−log V − mean_j log p_j``.
  """
  z = z.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, axis=-1)
  lp = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - lse
  p = jnp.exp(z - lse[..., None])
  ent = lse - jnp.sum(p * z, axis=-1)
  sc = -math.log(z.shape[-1]) - (jnp.mean(z, axis=-1) - lse)
  return lp, ent, sc


def token_self_certainty(logits: Array, temperature: float = 1.0) -> Array:
  """f32[...]: KL(U ‖ softmax(logits / T)) over the last axis."""
  if temperature <= 0:
    raise ValueError(f"token_self_certainty: temperature must be > 0, got"
                     f" {temperature}")
  z = jnp.asarray(logits, jnp.float32) / temperature
  lse = jax.nn.logsumexp(z, axis=-1)
  return -math.log(z.shape[-1]) - (jnp.mean(z, axis=-1) - lse)


def sequence_reduce(values, mask, *, reduce: str = "mean") -> np.ndarray:
  """f32[B]: the masked mean (or sum) over T of f32[B, T] token values.

  A row without tokens gets 0 (mean and sum alike).
  """
  if reduce not in ("mean", "sum"):
    raise ValueError(f"sequence_reduce: reduce={reduce!r}; expected 'mean' or"
                     " 'sum'")
  v = np.asarray(values, np.float64)
  m = np.asarray(mask, bool)
  total = np.where(m, v, 0.0).sum(axis=1)
  if reduce == "sum":
    return total.astype(np.float32)
  return (total / np.maximum(m.sum(axis=1), 1)).astype(np.float32)


def best_of_n(scores, group_ids, valid: Optional[np.ndarray] = None
              ) -> dict:
  """``{group id: row}``: the highest-scoring row of every group.

  Ties go to the lowest row; non-finite scores and invalid rows never win;
  a group with no eligible row maps to None. (Best-of-N selection by a
  score: self-certainty, likelihood, a reward model.)
  """
  s = np.asarray(scores, np.float64)
  g = np.asarray(group_ids)
  ok = np.isfinite(s)
  if valid is not None:
    ok &= np.asarray(valid, bool)
  out = {}
  for k in np.unique(g):
    rows = np.flatnonzero((g == k) & ok)
    out[int(k)] = int(rows[np.argmax(s[rows])]) if rows.size else None
  return out


__all__ = ["best_of_n", "sequence_reduce", "token_self_certainty",
           "token_statistics_from_logits"]
