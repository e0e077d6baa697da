r"""Regularizer objective terms: the entropy bonus.

Sign convention: :func:`entropy_bonus` returns L_H = −agg_t(H_t), so that
``objective((1.0, pg), (c, entropy_bonus(agg=...)))`` gives
L = L_pg − c·agg(H): a positive weight c *increases* entropy (verl
``policy_loss = pg_loss − entropy_coeff·agg_loss(entropy)``; TRL GRPO
``loss −= c_H·mean entropy``).
"""

from __future__ import annotations

from typing import Optional

import jax

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

sg = jax.lax.stop_gradient


def entropy_bonus(
    *,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Entropy bonus term: L = −agg_t(H_t) with H_t = −Σ_v π(v|·) log π(v|·).

  Reads ``outputs.entropy`` f32[B, T] (aligned like logprobs, the entropy of the
  distribution that produced token t), which the scorer must compute with
  gradient (``token_logprobs(..., with_entropy=True)``). Matches verl
  ``ppo_loss`` (−entropy_coeff·agg_loss(entropy, loss_agg_mode)) with weight c
  = entropy_coeff; the agg should equal the policy loss's.

  Args:
    agg: aggregation mode (explicit).
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metrics: ``entropy`` (the aggregated H, positive).
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.entropy is None:
      raise ValueError("entropy_bonus needs outputs.entropy (score with"
                       " with_entropy=True)")
    h = aggregation.aggregate_trajectory(
        outputs.entropy, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return -h, {"entropy": sg(h)}

  return term
