r"""Token-level entropy minimisation, the EM-FT objective.

Agarwal et al. 2025, "The Unreasonable Effectiveness of Entropy Minimization
in LLM Reasoning" (arXiv:2505.15134), §2, EM-FT: on unlabeled completions
sampled from the model itself, minimise the token-level entropy

    L_EM-FT(θ) = agg_t H(π_θ(· | x, y_<t)),   H(p) = −Σ_v p_v log p_v,

exactly like supervised fine-tuning but with the entropy in place of the
NLL of a label (no reward, no advantage). The same quantity with the
opposite sign is the entropy *bonus* (``regularizers.entropy_bonus``,
L = −agg H); this term is its negation, named for the method. The
sequence-level counterpart (EM-RL, the trajectory's negative entropy as a
reward) is ``jaxsi.sampling.confidence.ConfidenceReward``.
"""

from __future__ import annotations

from typing import Optional

import jax

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

sg = jax.lax.stop_gradient


def token_entropy(*, agg: str = "token-mean", max_len: Optional[int] = None,
                  num_tokens=None, num_sequences=None):
  r"""EM-FT term: L = agg_t H_t over the completion tokens (minimised).

  Reads ``outputs.entropy`` (the update's forward pass must compute it with
  gradient: ``Method.with_entropy=True``).

  Args:
    agg: aggregation mode (explicit; EM-FT averages over tokens).
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metric ``entropy`` (the aggregated H).
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.entropy is None:
      raise ValueError("token_entropy needs outputs.entropy (score with"
                       " with_entropy=True)")
    h = aggregation.aggregate_trajectory(
        outputs.entropy, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return h, {"entropy": sg(h)}

  return term


__all__ = ["token_entropy"]
