r"""T-REG: DPO regularised by self-generated token-level rewards.

Zhou, Zhang, Zhao & Meng 2024, "T-REG: Preference Optimization with
Token-Level Reward Regularization" (arXiv:2412.02685, ACL 2025).

Three pieces, each a pure function of the trajectory (pairing convention:
``jaxsi.transforms.preference``, chosen row i ↔ rejected row ``pair_ids[i]``):

1. **Contrastive token rewards** (:func:`contrastive_token_rewards`). The same
   model re-scores each response y under a "better" and a "worse" instruction
   (contrastive prompting, the paper's §3; in jaxsi the re-scoring is
   ``transforms.rescoring.rescore(context='better'|'worse')`` on the layouts of
   ``sampling.rollouts.WithContext`` in the Loop, or the ``contexts`` of
   ``fit_data.preference_data`` in rounds). Per completion token,
   d_t = log π(y_t | x⁺, y_<t) − log π(y_t | x⁻, y_<t) and
   r_t = 2σ(d_t) − 1 ∈ (−1, 1) (``normalize='sigmoid'``) or r_t = d_t
   (``'none'``); stop-gradient (the rewards are a fixed target).
2. **Token-level regulariser** on each row (chosen and rejected) with DPO's
   implicit token rewards h_t = log π_θ(y_t) − log π_ref(y_t):
   ℓ_reg(y) = −log σ(β Σ_t r_t h_t): the implicit reward must be high where
   the self-generated reward is positive and low where it is negative.
3. **Sequence-level weighting**: ℓ_reg of a pair is scaled by
   w = sg(σ(−βΔ)), Δ = ρ_c − ρ_r, the magnitude of DPO's own gradient
   factor for that pair (pairs DPO already ranks well are regularised less);
   ``sequence_weighting=False`` sets w = 1.

L = mean_pairs[ −log σ(βΔ) + α·w·(ℓ_reg(y_c) + ℓ_reg(y_l)) ]
(the first term is ``preference.dpo(loss_type='sigmoid')``, Rafailov et al.
2023, Eq. 7, reused as is).

What was checked and what is not (GK): the paper's text was not available
here (only the abstract and the introduction of the arXiv page). The
structure — DPO + α·(token-reward regulariser) with rewards from the model
itself under contrastive ("better" vs "worse") prompts, applied to chosen and
rejected responses — follows the abstract and the seeds catalogue
(catalog_01 [37]). UNVERIFIED against the paper's equations: the exact token
reward normalisation (here 2σ(d) − 1, a rescaled sigmoid of the log-prob
difference), the exact regulariser form (here −log σ(β Σ_t r_t h_t)), the
sequence weight (here sg(σ(−βΔ))) and the paper's α (default here 1.0).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import preference
from jaxsi.transforms.base import ModelOutputs

Array = jax.Array
sg = jax.lax.stop_gradient

NORMALIZATIONS = ("sigmoid", "none")
BETTER_KEY = "better_logprobs"
WORSE_KEY = "worse_logprobs"


def contrastive_token_rewards(better_logprobs: Array, worse_logprobs: Array,
                              mask: Array, *, normalize: str = "sigmoid") -> Array:
  """Self-generated token rewards r_t from contrastive prompting (stop-gradient).

  Args:
    better_logprobs: f32[B, T] log π(y_t | better instruction, y_<t), aligned
      to the trajectory (``rescoring.rescore`` layout).
    worse_logprobs: f32[B, T] the same under the worse instruction.
    mask: bool[B, T] the completion tokens (0 elsewhere in the result).
    normalize: 'sigmoid' (r = 2σ(d) − 1 ∈ (−1, 1)) or 'none' (r = d),
      d = better − worse.

  Returns:
    f32[B, T] token rewards.

  Raises:
    ValueError: an unknown ``normalize``.
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"contrastive_token_rewards: normalize must be one of"
                     f" {NORMALIZATIONS}, got {normalize!r}")
  d = sg(jnp.asarray(better_logprobs, jnp.float32) - jnp.asarray(worse_logprobs,
                                                                 jnp.float32))
  r = 2.0 * jax.nn.sigmoid(d) - 1.0 if normalize == "sigmoid" else d
  return jnp.where(jnp.asarray(mask, bool), r, 0.0)


def treg(*, beta: float = 0.1, alpha: float = 1.0, normalize: str = "sigmoid",
         sequence_weighting: bool = True, better_key: str = BETTER_KEY,
         worse_key: str = WORSE_KEY, num_pairs=None):
  r"""T-REG objective term (arXiv:2412.02685): DPO + α·w·token-reward regulariser.

  See the module docstring for the equations and what is unverified.

  Args:
    beta: β of DPO and of the regulariser's implicit token rewards.
    alpha: α, weight of the regulariser (0: plain DPO, exactly).
    normalize: token-reward normalisation (:func:`contrastive_token_rewards`).
    sequence_weighting: scale each pair's regulariser by sg(σ(−βΔ)).
    better_key, worse_key: ``traj.extras`` keys of the contrastive log-probs.
    num_pairs: global pair count (default: local), as in ``preference.dpo``.

  Returns:
    An objective term ``(outputs, traj) -> (loss, metrics)``; metrics: DPO's
    (``rewards/*``, ``logps/*``, ``loss/sigmoid``) plus ``treg/reg`` (mean
    ℓ_reg(y_c) + ℓ_reg(y_l) per pair), ``treg/seq_weight`` (mean w),
    ``treg/token_reward_chosen`` / ``_rejected`` (mean r_t over tokens) and
    ``treg/sign_agreement`` (share of completion tokens where sign(h_t) =
    sign(r_t)).

  Raises:
    ValueError: beta ≤ 0, alpha < 0 or an unknown ``normalize`` (at build
      time); missing contrastive log-probs (when called, naming the key).
  """
  if not beta > 0:
    raise ValueError(f"treg: beta must be > 0, got {beta!r}")
  if not alpha >= 0:
    raise ValueError(f"treg: alpha must be >= 0, got {alpha!r}")
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"treg: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
  dpo_term = preference.dpo(beta=beta, loss_type="sigmoid", num_pairs=num_pairs)

  def term(outputs: ModelOutputs, traj: Trajectory):
    for key in (better_key, worse_key):
      if key not in traj.extras:
        raise ValueError(
            f"treg: traj.extras[{key!r}] is missing: the completion's log-probs under"
            " the contrastive prompt (rescoring.rescore(context=..., field=...) in the"
            " Loop, or pair 'contexts' in fit_data.preference_data)")
    loss, metrics = dpo_term(outputs, traj)
    j, pmask = preference.pair_index(traj)
    m = traj.loss_mask.astype(bool)
    if traj.ref_logprobs is None:
      raise ValueError("treg: needs traj.ref_logprobs (the DPO reference)")
    h = jnp.where(m, outputs.logprobs - traj.ref_logprobs, 0.0)
    r = contrastive_token_rewards(traj.extras[better_key], traj.extras[worse_key], m,
                                  normalize=normalize)
    score = jnp.sum(r * h, axis=-1)                      # Σ_t r_t h_t per row
    ell = -jax.nn.log_sigmoid(beta * score)              # ℓ_reg per row
    rho = jnp.sum(h, axis=-1)
    delta = rho - rho[j]
    w = sg(jax.nn.sigmoid(-beta * delta)) if sequence_weighting else jnp.ones_like(delta)
    reg = ell + ell[j]
    reg_loss = preference._pair_mean(w * reg, traj, pmask, num_pairs)  # pylint: disable=protected-access
    total = loss + alpha * reg_loss
    mf = m.astype(jnp.float32)

    def token_mean(x, rows):
      sel = mf * rows[:, None].astype(jnp.float32)
      return jnp.sum(sg(x) * sel) / jnp.maximum(jnp.sum(sel), 1.0)

    rows = pmask | jnp.zeros_like(pmask).at[j].max(pmask)   # chosen and their partners
    agree = (jnp.sign(h) == jnp.sign(r)).astype(jnp.float32)
    metrics = dict(metrics)
    metrics.update({
        "treg/reg": preference._metric_mean(reg, pmask),  # pylint: disable=protected-access
        "treg/seq_weight": preference._metric_mean(w, pmask),  # pylint: disable=protected-access
        "treg/token_reward_chosen": token_mean(r, pmask),
        "treg/token_reward_rejected": token_mean(r, rows & ~pmask),
        "treg/sign_agreement": token_mean(agree, rows),
    })
    return total, metrics

  return term


__all__ = ["contrastive_token_rewards", "treg", "NORMALIZATIONS", "BETTER_KEY",
           "WORSE_KEY"]
