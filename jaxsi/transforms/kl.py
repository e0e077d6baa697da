r"""KL estimators and the KL-penalty objective term.

Per-token estimators of KL(π ‖ π_ref) from the sampled token's log-probs
ℓp (policy, with gradient) and ref (reference), following Schulman's
"Approximating KL divergence" (http://joschu.net/blog/kl-approx.html):

============== ================================================ ==========================
estimator      value                                            reference
============== ================================================ ==========================
``k1``/``kl``  ℓp − ref                                         verl "kl"/"k1"
``abs``        |ℓp − ref|                                       verl "abs"
``k2``/``mse`` ½(ℓp − ref)²                                     verl "mse"/"k2"
``k3``         e^x − x − 1, x = ref − ℓp (no clamps)            TRL GRPO per_token_kl
``low_var_kl`` x = clip(ref − ℓp, ±20); clip(e^x − x − 1, ±10)  verl "low_var_kl"/"k3"
``<name>+``    value of <name>, gradient of k2 (straight-       verl "<name>+" (PR #6058)
               through: k2 + sg[<name> − k2])
============== ================================================ ==========================

NOTE: in verl "k3" is an alias of the clamped ``low_var_kl``; here ``k3`` is
TRL's unclamped estimator and ``low_var_kl`` (alias ``k3_clamped``) is verl's.
Bias-corrected KL (DeepSeek-V3.2, TRL ``use_bias_correction_kl``) multiplies the
estimate by the (not detached) ratio exp(ℓp − old).
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

_ALIASES = {"kl": "k1", "mse": "k2", "k3_clamped": "low_var_kl"}
ESTIMATORS = ("k1", "abs", "k2", "k3", "low_var_kl")


def _base(estimator: str) -> str:
  name = _ALIASES.get(estimator, estimator)
  if name not in ESTIMATORS:
    raise ValueError(
        f"Unknown KL estimator {estimator!r}; expected one of {ESTIMATORS}, the"
        f" aliases {sorted(_ALIASES)}, or any of them with a '+' suffix")
  return name


def validate_estimator(estimator: str) -> str:
  """Returns the canonical base estimator name; raises ValueError if unknown."""
  return _base(estimator[:-1] if estimator.endswith("+") else estimator)


def kl_estimate(logprobs: Array, ref_logprobs: Array, *, estimator: str = "k3") -> Array:
  """Per-token KL estimate (see the module table).

  Args:
    logprobs: f32[...] log π(y_t) of the sampled tokens.
    ref_logprobs: f32[...] log π_ref(y_t).
    estimator: estimator name, optionally with '+' (straight-through).

  Returns:
    f32[...] per-token estimate.
  """
  straight_through = estimator.endswith("+")
  name = _base(estimator[:-1] if straight_through else estimator)
  d = logprobs - ref_logprobs
  if name == "k1":
    value = d
  elif name == "abs":
    value = jnp.abs(d)
  elif name == "k2":
    value = 0.5 * jnp.square(d)
  elif name == "k3":
    x = -d
    value = jnp.exp(x) - x - 1.0
  else:  # low_var_kl
    x = jnp.clip(-d, -20.0, 20.0)
    value = jnp.clip(jnp.exp(x) - x - 1.0, -10.0, 10.0)
  if straight_through:
    k2 = 0.5 * jnp.square(d)
    value = k2 + sg(value - k2)
  return value


def kl_penalty(
    *,
    estimator: str = "k3",
    agg: str = "token-mean",
    bias_correction: bool = False,
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""KL(π ‖ π_ref) penalty term: L = agg_t( k(ℓp_t, ref_t) [· r_t] ).

  Reads ``outputs.logprobs`` and ``traj.ref_logprobs`` (run a ref-logprobs
  transform first). Use with a weight β in ``objective((beta, kl_penalty(...)))``.

  Matches TRL 1.10 GRPO ``β·per_token_kl`` (estimator='k3', aggregated with the
  same ``agg`` as the policy loss; ``bias_correction=True`` multiplies by
  coef_1 = exp(ℓp − old), not detached — DeepSeek-V3.2, arXiv:2512.02556) and verl
  ``use_kl_loss`` (kl_loss_type='low_var_kl', agg = loss_agg_mode).

  Args:
    estimator: KL estimator (module table).
    agg: aggregation mode (explicit).
    bias_correction: multiply by exp(ℓp − old) (old = traj.old_logprobs or
      sg[ℓp]).
    max_len, num_tokens, num_sequences: aggregation denominators.

  Returns:
    An objective term; metrics: ``kl`` (token mean of the estimate).
  """
  validate_estimator(estimator)

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.ref_logprobs is None:
      raise ValueError("kl_penalty needs traj.ref_logprobs")
    m = traj.loss_mask.astype(bool)
    lp = jnp.where(m, outputs.logprobs, 0.0)
    ref = jnp.where(m, traj.ref_logprobs, 0.0)
    kl_bt = kl_estimate(lp, ref, estimator=estimator)
    if bias_correction:
      old = sg(lp) if traj.old_logprobs is None else jnp.where(m, traj.old_logprobs, 0.0)
      kl_bt = kl_bt * jnp.exp(lp - old)
    loss = aggregation.aggregate_trajectory(
        kl_bt, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return loss, {"kl": aggregation.masked_token_mean(sg(kl_bt), traj)}

  return term
