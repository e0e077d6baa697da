r"""Off-policy rows in an on-policy batch, trained through a shaping function.

LUFFY (Yan et al. 2025, "Learning to Reason under Off-Policy Guidance",
arXiv:2504.14945; "policy shaping via regularized importance sampling")
mixes off-policy responses (there: a stronger model's) into the GRPO group
and trains them without an importance ratio,
replacing the ratio by the *policy shaping* function of the current token
probability π = π_θ(y_t | x, y_{<t})::

    f(π) = π / (π + γ)                      (γ = 0.1)

whose gradient ∇f = γ/(π + γ)² · ∇π = γπ/(π + γ)² · ∇log π puts weight on
low-probability tokens (at π ≪ γ it is ≈ ∇π/γ, at π ≫ γ it vanishes), so
rare correct tokens are learned instead of being crushed by the log-likelihood
of what the policy already does. Critique-GRPO (Zhang et al. 2025,
arXiv:2506.03106, §3) trains its critique-guided refinements the
same way (as responses to the bare question;
``jaxsi.transforms.turns.turn_as_response`` builds those rows).

:func:`mixed_policy_pg` is the objective term of both: per token

    ℓ_t = −A_t · f(π_t)                             on off-policy rows
    ℓ_t = max(−A_t r_t, −A_t clip(r_t, 1−ε_low, 1+ε_high))   elsewhere

aggregated over *all* loss tokens together (``agg``; the papers' token mean
over the joint group, the LUFFY / Critique-GRPO code's ``masked_mean``).
Rows are marked by the bool[B] ``traj.extras[key]``; without it every row is
on-policy and the term equals ``policy_losses.pg_clip`` (extra importance
weights ``extras['is_weights']`` multiply the on-policy tokens, as there).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms import policy_losses
from jaxsi.transforms.base import ModelOutputs
from jaxsi.transforms.turns import OFF_POLICY_KEY

Array = jax.Array
sg = jax.lax.stop_gradient


def shaped_probability(logprobs: Array, gamma: float) -> Array:
  """f(π) = π / (π + γ) with π = exp(logprobs) (LUFFY)."""
  p = jnp.exp(logprobs)
  return p / (p + gamma)


def off_policy_rows(traj: Trajectory, key: str = OFF_POLICY_KEY) -> Array:
  """bool[B]: rows flagged off-policy (all False when the key is absent)."""
  if key not in traj.extras:
    return jnp.zeros(traj.valid.shape, bool)
  flags = jnp.asarray(traj.extras[key])
  if flags.shape != traj.valid.shape:
    raise ValueError(f"extras[{key!r}] must be bool[B] {traj.valid.shape}, got "
                     f"{flags.shape}")
  return flags.astype(bool)


def mixed_policy_pg(*, gamma: float = 0.1, eps_low: float = 0.2,
                    eps_high: float = 0.2, agg: str = "token-mean",
                    key: str = OFF_POLICY_KEY, max_len: Optional[int] = None):
  r"""Clipped surrogate on on-policy rows, −A·f(π) on off-policy rows.

  LUFFY (arXiv:2504.14945) / Critique-GRPO (arXiv:2506.03106, §3);
  see the module docstring. Reads ``outputs.logprobs``, ``traj.advantages``,
  ``traj.old_logprobs`` (on-policy ratio; None → on-policy) and
  ``traj.extras[key]``.

  Args:
    gamma: γ of the shaping function (the papers use 0.1); > 0.
    eps_low, eps_high: clip range of the on-policy surrogate.
    agg: aggregation over all loss tokens of both kinds (the papers:
      'token-mean').
    key: extras key of the bool[B] off-policy row flag.
    max_len: aggregation constant for the 'seq-mean-token-sum-norm' modes.

  Returns:
    An objective term. Metrics: 'off_policy/token_frac', 'off_policy/prob_mean'
    (mean π on off-policy tokens), 'off_policy/shaped_mean' (mean f(π)),
    'clipfrac' (on-policy tokens), 'approx_kl', 'entropy' (when given).
  """
  if gamma <= 0:
    raise ValueError(f"mixed_policy_pg: gamma must be > 0, got {gamma}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.advantages is None:
      raise ValueError("mixed_policy_pg needs traj.advantages (run an advantage"
                       " transform first)")
    adv = sg(traj.advantages)
    off = off_policy_rows(traj, key)[:, None]
    logw, delta = policy_losses.log_importance_weights(
        outputs.logprobs, traj.old_logprobs, traj.loss_mask)
    r = jnp.exp(logw)
    on_loss = policy_losses.clipped_surrogate(r, adv, eps_low=eps_low,
                                              eps_high=eps_high)
    on_loss = on_loss * policy_losses._is_weights(  # pylint: disable=protected-access
        traj, policy_losses.IS_WEIGHTS_KEY, on_loss)
    shaped = shaped_probability(outputs.logprobs, gamma)
    loss_bt = jnp.where(off, -adv * shaped, on_loss)
    loss = aggregation.aggregate_trajectory(loss_bt, traj, mode=agg,
                                            max_len=max_len)
    tok = traj.loss_mask.astype(bool) & traj.valid[:, None]
    off_tok = tok & off
    on_tok = tok & ~off
    rs = sg(r)
    clipped = (((rs < 1.0 - eps_low) & (adv < 0))
               | ((rs > 1.0 + eps_high) & (adv > 0)))
    n_tok = jnp.maximum(jnp.sum(tok), 1)
    n_off = jnp.maximum(jnp.sum(off_tok), 1)
    n_on = jnp.maximum(jnp.sum(on_tok), 1)
    metrics = {
        "off_policy/token_frac": jnp.sum(off_tok) / n_tok,
        "off_policy/prob_mean": jnp.sum(
            jnp.where(off_tok, jnp.exp(sg(outputs.logprobs)), 0.0)) / n_off,
        "off_policy/shaped_mean": jnp.sum(
            jnp.where(off_tok, sg(shaped), 0.0)) / n_off,
        "clipfrac": jnp.sum(jnp.where(on_tok, clipped, False)) / n_on,
        "approx_kl": jnp.sum(jnp.where(on_tok, -sg(delta), 0.0)) / n_on,
    }
    if outputs.entropy is not None:
      metrics["entropy"] = aggregation.masked_token_mean(sg(outputs.entropy),
                                                         traj)
    return loss, metrics

  return term


__all__ = ["mixed_policy_pg", "off_policy_rows", "shaped_probability"]
