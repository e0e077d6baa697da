r"""KTO: unpaired preference optimisation (Ethayarajh et al. 2024, arXiv:2402.01306).

Split from ``jaxsi.transforms.preference`` (the paired DPO family, ORPO, CPO),
whose sequence sums and metric means it shares. Rows are unpaired: each
sample is desirable or not (``traj.extras['is_desirable']``), and the
reference point z₀ comes from mismatched (prompt, completion) log-probs
(``'kl_logps'``, ``'kl_ref_logps'``) as in TRL's ``KTOTrainer``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import ModelOutputs
from jaxsi.transforms.preference import _metric_mean, _seq_sum

Array = jax.Array
sg = jax.lax.stop_gradient
sigmoid = jax.nn.sigmoid

IS_DESIRABLE_KEY = "is_desirable"
KL_LOGPS_KEY = "kl_logps"
KL_REF_LOGPS_KEY = "kl_ref_logps"


def kto(
    *,
    beta: float = 0.1,
    loss_type: str = "kto",
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    num_samples=None,
):
  r"""KTO (Ethayarajh et al. 2024, arXiv:2402.01306) as in TRL 1.10 KTOTrainer.

  Unpaired rows: ``traj.extras['is_desirable']`` bool[B]. ρ = logπ(y) −
  logπ_ref(y) (summed over loss_mask). Reference point
  z_ref = sg[max(0, mean_rows(kl_logps − kl_ref_logps))], where
  ``traj.extras['kl_logps']`` / ``['kl_ref_logps']`` (f32[B]) are the summed
  log-probs under policy / reference of a MISMATCHED completion for the row's
  prompt (TRL: the batch's completions rotated by one, [c_{n−1}, c_0, …,
  c_{n−2}]); score them with a frozen forward pass in a transform.

  kto:               desirable ℓ = 1 − σ(β(ρ − z_ref)); undesirable ℓ = 1 − σ(β(z_ref − ρ))
  apo_zero_unpaired: desirable ℓ = 1 − σ(βρ);          undesirable ℓ = σ(βρ)  (no z_ref)
  L = Σ_valid w_b·λ_b·ℓ_b / N (N = valid rows or ``num_samples``).

  Args:
    beta: β.
    loss_type: 'kto' or 'apo_zero_unpaired'.
    desirable_weight: λ_D.
    undesirable_weight: λ_U.
    num_samples: global row count (default: local valid rows).

  Returns:
    An objective term; metrics: kl (z_ref), rewards/chosen, rewards/rejected.
  """
  if loss_type not in ("kto", "apo_zero_unpaired"):
    raise ValueError(f"kto loss_type must be 'kto' or 'apo_zero_unpaired', got {loss_type!r}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if IS_DESIRABLE_KEY not in traj.extras:
      raise ValueError("kto needs traj.extras['is_desirable'] (bool[B])")
    des = jnp.asarray(traj.extras[IS_DESIRABLE_KEY], bool)
    m = traj.loss_mask.astype(bool)
    if traj.ref_logprobs is None:
      raise ValueError("kto needs traj.ref_logprobs")
    rho = _seq_sum(outputs.logprobs, m) - _seq_sum(traj.ref_logprobs, m)
    valid = traj.valid
    if loss_type == "kto":
      if KL_LOGPS_KEY not in traj.extras or KL_REF_LOGPS_KEY not in traj.extras:
        raise ValueError("kto needs traj.extras['kl_logps'] and ['kl_ref_logps'] (f32[B]):"
                         " log-probs of mismatched completions (see docstring)")
      kl = jnp.asarray(traj.extras[KL_LOGPS_KEY]) - jnp.asarray(traj.extras[KL_REF_LOGPS_KEY])
      z = jnp.sum(jnp.where(valid, kl, 0.0)) / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
      z = sg(jnp.maximum(z, 0.0))
      ell = jnp.where(des, 1.0 - sigmoid(beta * (rho - z)), 1.0 - sigmoid(beta * (z - rho)))
    else:
      z = jnp.zeros((), jnp.float32)
      ell = jnp.where(des, 1.0 - sigmoid(beta * rho), sigmoid(beta * rho))
    lam = jnp.where(des, desirable_weight, undesirable_weight)
    n = (jnp.sum(valid.astype(jnp.float32)) if num_samples is None
         else jnp.asarray(num_samples, jnp.float32))
    loss = jnp.sum(jnp.where(valid, lam * ell * traj.weights, 0.0)) / jnp.maximum(n, 1.0)
    metrics = {
        "kl": z,
        "rewards/chosen": _metric_mean(beta * rho, valid & des),
        "rewards/rejected": _metric_mean(beta * rho, valid & ~des),
    }
    return loss, metrics

  return term


# ------------------------------------------------------------------------ ORPO
