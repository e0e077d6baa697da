r"""Supervised terms: NLL (SFT / STaR / RFT) and DFT.

Both read ``outputs.logprobs`` (log p of each target token, aligned with
tokens) over ``traj.loss_mask & traj.valid`` (use ``mask='input'`` to train on
every predicted real token, e.g. ORPO-style full-sequence NLL), scaled by
``traj.weights``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import ModelOutputs

Array = jax.Array
sg = jax.lax.stop_gradient


def target_mask(traj: Trajectory, mask: str = "loss") -> Array:
  """bool[B, T] tokens that are trained on.

  Args:
    traj: the Trajectory.
    mask: 'loss' → traj.loss_mask (completion-only, TRL completion_only_loss);
      'input' → every real token that has a prediction (input_mask and
      position > 0, i.e. all tokens but each sequence's first).

  Returns:
    bool[B, T].
  """
  if mask == "loss":
    return traj.loss_mask.astype(bool)
  if mask == "input":
    return traj.input_mask.astype(bool) & (traj.positions > 0)
  raise ValueError(f"mask must be 'loss' or 'input', got {mask!r}")


def nll(
    *,
    agg: str = "token-mean",
    mask: str = "loss",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Negative log-likelihood: L = agg_t(−log p(y_t | y_<t)).

  With ``agg='token-mean'`` and ``num_tokens`` = the global number of target
  tokens this matches TRL 1.10 SFTTrainer loss_type='nll'
  (Σ −log p / num_items_in_batch).

  Args:
    agg: aggregation mode (explicit; default token-mean).
    mask: 'loss' (completion tokens) or 'input' (all predicted tokens).
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metrics: ``nll`` (token mean), ``ppl`` = exp(nll).
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    m = target_mask(traj, mask)
    loss_bt = -outputs.logprobs
    loss = aggregation.aggregate_trajectory(
        loss_bt, traj, mode=agg, mask=m, max_len=max_len,
        num_tokens=num_tokens, num_sequences=num_sequences)
    tok = aggregation.masked_token_mean(sg(loss_bt), traj, mask=m)
    return loss, {"nll": tok, "ppl": jnp.exp(tok)}

  return term


def dft(
    *,
    agg: str = "token-mean",
    mask: str = "loss",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Dynamic Fine-Tuning: ℓ_t = −sg[p_t]·log p_t, p_t = exp(log p_t).

  Wu et al. 2025, "On the Generalization of SFT: An RL Perspective with Reward
  Rectification" (arXiv:2508.05629). Matches TRL 1.10 ``sft_trainer.dft_loss``
  (Σ m ℓ / num_items_in_batch = token-mean with the global count).

  Args:
    agg: aggregation mode.
    mask: 'loss' or 'input'.
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metrics: ``nll``, ``mean_prob``.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    m = target_mask(traj, mask)
    lp = jnp.where(m, outputs.logprobs, 0.0)
    loss_bt = -sg(jnp.exp(lp)) * lp
    loss = aggregation.aggregate_trajectory(
        loss_bt, traj, mode=agg, mask=m, max_len=max_len,
        num_tokens=num_tokens, num_sequences=num_sequences)
    metrics = {
        "nll": aggregation.masked_token_mean(-sg(lp), traj, mask=m),
        "mean_prob": aggregation.masked_token_mean(sg(jnp.exp(lp)), traj, mask=m),
    }
    return loss, metrics

  return term
