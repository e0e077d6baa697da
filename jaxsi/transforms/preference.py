r"""Preference objective terms: the DPO family, ORPO, CPO/SimPO/AlphaPO (KTO: ``unpaired_preference``).

Pairing convention (all pairwise terms)
--------------------------------------
Chosen and rejected completions are separate rows of one Trajectory:

* ``traj.extras['is_chosen']``: bool[B], True on chosen rows;
* ``traj.pair_ids[i]``: for a chosen row i, the row index of its rejected
  partner (rejected rows may link back to their chosen row or hold −1; only
  the chosen → rejected link is read).

A pair counts iff ``is_chosen[i] & pair_ids[i] >= 0 & valid[i] & valid[j]``;
its sample weight is ``traj.weights[i]`` (the chosen row's). Every pairwise
loss is ``Σ_pairs w·ℓ / num_pairs`` (``num_pairs`` defaults to the local count
of counted pairs; pass the global count for micro-batching). The layout
"rows [0:P] chosen, rows [P:2P] rejected" (TRL's concatenated batch) is
:func:`halves_pairing`.

Sequence log-probs: logπ(y) = Σ_t loss_mask·ℓp_t over ``outputs.logprobs``;
reference: the same sum over ``traj.ref_logprobs``. ρ = logπ − logπ_ref.
L = Σ_t loss_mask (completion length).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import ModelOutputs

Array = jax.Array
sg = jax.lax.stop_gradient
log_sigmoid = jax.nn.log_sigmoid
sigmoid = jax.nn.sigmoid

IS_CHOSEN_KEY = "is_chosen"
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
    "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
    "sft", "sigmoid_norm",
)
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# Which DPO loss types read which option (the rest refuse it: ``dpo``).
SMOOTHED_TYPES = ("exo_pair", "robust", "aot", "aot_unpaired")   # + sigmoid with cdpo
SORTED_TYPES = ("aot", "aot_unpaired")
NO_F_SCORE_TYPES = ("aot", "aot_unpaired", "apo_zero", "apo_down")  # read ρ, not f(ρ)


# --------------------------------------------------------------------- pairing
def halves_pairing(num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
  """pair_ids and is_chosen for rows [0:P] chosen, [P:2P] rejected.

  Links go both ways (chosen i ↔ rejected P+i).

  Returns:
    (pair_ids int32[2P], is_chosen bool[2P]) for ``Trajectory.create(...,
    pair_ids=pair_ids, extras={'is_chosen': is_chosen})``.
  """
  p = int(num_pairs)
  ar = np.arange(p, dtype=np.int32)
  pair_ids = np.concatenate([ar + p, ar]).astype(np.int32)
  is_chosen = np.concatenate([np.ones(p, bool), np.zeros(p, bool)])
  return pair_ids, is_chosen


def pair_index(traj: Trajectory) -> tuple[Array, Array]:
  """(partner row j int32[B] clipped to [0, B), pair_mask bool[B]) per chosen row."""
  if IS_CHOSEN_KEY not in traj.extras:
    raise ValueError(
        "pairwise preference terms need traj.extras['is_chosen'] (bool[B]) and"
        " traj.pair_ids (chosen row → rejected row); see halves_pairing()")
  b = traj.batch_size
  is_chosen = jnp.asarray(traj.extras[IS_CHOSEN_KEY], bool)
  j = jnp.clip(traj.pair_ids, 0, b - 1)
  mask = is_chosen & (traj.pair_ids >= 0) & traj.valid & traj.valid[j]
  return j, mask


def _pair_mean(x: Array, traj: Trajectory, mask: Array, num_pairs) -> Array:
  n = jnp.sum(mask.astype(jnp.float32)) if num_pairs is None else jnp.asarray(
      num_pairs, jnp.float32)
  x = jnp.where(mask, x * traj.weights, 0.0)
  return jnp.sum(x) / jnp.maximum(n, 1.0)


def _refuse_sample_weights(weights: Array, mask: Array, who: str) -> None:
  """Raises (at run time, also under jit) if a counted row's weight is not 1.

  For terms whose formula cannot carry per-pair sample weights (sorted
  pairings): a weighted batch is an error, never silently unweighted.
  """

  def check(w, m):
    w, m = np.asarray(w), np.asarray(m, bool)
    bad = m & (w != 1.0)
    if bad.any():
      raise ValueError(
          f"{who}: traj.weights must be 1 on every counted pair (row"
          f" {int(np.flatnonzero(bad)[0])} has weight"
          f" {float(w[np.flatnonzero(bad)[0]])}); sorted pairings are not tied"
          " to rows, so they cannot apply sample weights — use another loss_type")

  if isinstance(weights, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    jax.debug.callback(check, weights, mask)
  else:
    check(weights, mask)


def _metric_mean(x: Array, mask: Array) -> Array:
  x = jnp.where(mask, sg(x), 0.0)
  return jnp.sum(x) / jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)


def _seq_sum(x: Array, m: Array) -> Array:
  return jnp.sum(jnp.where(m, x, 0.0), axis=-1)


def _ref(traj: Trajectory, reference_free: bool) -> Array:
  if reference_free:
    return jnp.zeros(traj.tokens.shape, jnp.float32)
  if traj.ref_logprobs is None:
    raise ValueError("this term needs traj.ref_logprobs (or reference_free=True)")
  return traj.ref_logprobs


def f_divergence_score(rho: Array, *, f_divergence: str = "reverse_kl",
                       alpha: float = 0.5) -> Array:
  r"""The f-divergence "score" s(ρ) of TRL 1.x DPO (Wang et al. 2023, f-DPO).

  reverse_kl: s = ρ; forward_kl: s = −e^{−ρ}; js_divergence: s = logσ(ρ);
  alpha_divergence: s = exp(min((α−1)ρ, 80))/(α−1) (|α−1| < 1e-6 → ρ).
  """
  if f_divergence == "reverse_kl":
    return rho
  if f_divergence == "forward_kl":
    return -jnp.exp(-rho)
  if f_divergence == "js_divergence":
    return log_sigmoid(rho)
  if f_divergence == "alpha_divergence":
    if abs(alpha - 1.0) < 1e-6:
      return rho
    return jnp.exp(jnp.minimum((alpha - 1.0) * rho, 80.0)) / (alpha - 1.0)
  raise ValueError(f"f_divergence must be one of {F_DIVERGENCES}, got {f_divergence!r}")


def _ld_weights(m: Array, shared_len: Array, ld_alpha: Optional[float]) -> Array:
  """Per-token weights of LD-DPO: 1 on the first shared_len loss tokens, α after."""
  mf = m.astype(jnp.float32)
  if ld_alpha is None:
    return mf
  rank = jnp.cumsum(mf, axis=-1)
  return mf * jnp.where(rank <= shared_len[:, None], 1.0, ld_alpha)


def _masked_sort(x: Array, mask: Array) -> Array:
  """Sorts the masked-in entries ascending to the front (rest: large values)."""
  return jnp.sort(jnp.where(mask, x, 1e30))


def _wpo_logw(logits: Array, logprobs: Array, m: Array) -> Array:
  """WPO log-weight per row: mean_t m·(ℓp_t − log Σ_v p_v²), stop-gradient."""
  logits = sg(logits).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  log_sum_p2 = jax.nn.logsumexp(2.0 * logp, axis=-1)
  mf = m.astype(jnp.float32)
  x = jnp.where(m, sg(logprobs) - log_sum_p2, 0.0)
  return jnp.sum(x, axis=-1) / jnp.maximum(jnp.sum(mf, axis=-1), 1.0)


# ------------------------------------------------------------------------- DPO
def dpo(
    *,
    beta: float = 0.1,
    loss_type: Union[str, Sequence[str]] = "sigmoid",
    loss_weights: Optional[Sequence[float]] = None,
    label_smoothing: float = 0.0,
    f_divergence: str = "reverse_kl",
    f_alpha: float = 0.5,
    ld_alpha: Optional[float] = None,
    use_weighting: bool = False,
    discopop_tau: float = 0.05,
    reference_free: bool = False,
    cdpo: bool = False,
    num_pairs=None,
):
  r"""The DPO family (Rafailov et al. 2023, arXiv:2305.18290) as in TRL 1.x.

  Matches TRL 1.10.0.dev0 ``DPOTrainer._compute_loss`` (formulas.md §2.2;
  v0.29+ formulas). With ρ_c, ρ_r the chosen/rejected log-ratios, s = f(ρ) the
  f-divergence score, Δ = s_c − s_r, β = ``beta``, ε = ``label_smoothing``::

    sigmoid      −logσ(βΔ)                        (cdpo=True: −(1−ε)logσ(βΔ) − ε logσ(−βΔ),
                                                   legacy ≤0.28 label smoothing)
    hinge        relu(1 − βΔ)
    ipo          (s_c/L_c − s_r/L_r − 1/(2β))²    (Azar et al. 2023, length-normalised)
    exo_pair     σ(βΔ)(logσ(βΔ) − log(1−ε)) + σ(−βΔ)(logσ(−βΔ) − log ε)   (ε > 0)
    nca_pair     −logσ(βs_c) − ½logσ(−βs_c) − ½logσ(−βs_r)
    robust       [−(1−ε)logσ(βΔ) + ε logσ(−βΔ)] / (1−2ε)
    bco_pair     −logσ(βs_c) − logσ(−βs_r)
    sppo_hard    (s_c − 1/(2β))² + (s_r + 1/(2β))²
    aot          δ = sort(logπ_c − logπ_r) − sort(ref_c − ref_r); −(1−ε)logσ(βδ) − ε logσ(−βδ)
    aot_unpaired δ = sort(ρ_c) − sort(ρ_r); same form
    apo_zero     (1 − σ(βρ_c)) + σ(βρ_r)
    apo_down     σ(βρ_c) + (1 − σ(βΔ))
    discopop     x = βΔ, μ = σ(x/τ); (1−μ)(−logσ(x)) + μ·e^{−x}
    sft          token-mean NLL over all chosen completion tokens (broadcast)
    sigmoid_norm −logσ(β(s_c/L_c − s_r/L_r))

  Sorting (aot*) is over the counted pairs of the batch (sorted positions are
  no longer tied to rows, so aot* refuse a batch whose counted rows carry
  sample weights ≠ 1 — a run-time error, also under jit — and refuse WPO).
  Sample weights w (``traj.weights`` of the chosen row) scale every other
  type's per-pair loss; for 'sft' each chosen row's token NLL is scaled:
  −Σ_i w_i Σ_t ℓp_{i,t} / Σ_i L_i (the plain token mean when w = 1).

  Strictness: an option that no selected loss type reads is refused
  (ValueError) instead of being ignored: ``label_smoothing`` without
  exo_pair/robust/aot*/cdpo-sigmoid, ``cdpo`` without 'sigmoid', a
  non-reverse-KL ``f_divergence`` with apo_*/aot* (they read ρ) or with
  'sft' alone, ``f_alpha`` without the alpha divergence, ``discopop_tau``
  without 'discopop', ``use_weighting`` with aot*, ``ld_alpha`` with 'sft'
  alone.
  L = Σ_k w_k·mean_pairs ℓ_k
  (``loss_weights``, MPO). WPO (Zhou et al. 2024): ℓ ×= w_c·w_r with
  w = exp(mean_t(ℓp_t − log Σ_v p_v²)) (stop-gradient; needs
  ``outputs.logits``). LD-DPO (Liu et al. 2024): logπ = Σ_{k ≤ min(L_c, L_r)}
  ℓp_k + α·Σ_{k > min} ℓp_k over the k-th completion token, for policy and
  reference.

  Args:
    beta: β.
    loss_type: one name or a sequence of names (DPO_LOSS_TYPES).
    loss_weights: weights of the loss types (default 1 each).
    label_smoothing: ε (exo_pair, robust, aot*, cdpo).
    f_divergence: reverse_kl | forward_kl | js_divergence | alpha_divergence.
    f_alpha: α of the alpha divergence.
    ld_alpha: LD-DPO α (None: off).
    use_weighting: WPO weighting.
    discopop_tau: τ of discopop.
    reference_free: use ref = 0.
    cdpo: legacy conservative-DPO label smoothing for 'sigmoid'.
    num_pairs: global pair count (default: local).

  Returns:
    An objective term. Metrics: rewards/chosen, rewards/rejected (β·ρ),
    rewards/margins, rewards/accuracies, logps/chosen, logps/rejected, and
    loss/<type> per loss type.
  """
  types = (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)
  for t in types:
    if t not in DPO_LOSS_TYPES:
      raise ValueError(f"Unknown DPO loss_type {t!r}; expected one of {DPO_LOSS_TYPES}")
  weights = (1.0,) * len(types) if loss_weights is None else tuple(loss_weights)
  if len(weights) != len(types):
    raise ValueError(f"loss_weights has {len(weights)} entries for {len(types)} loss types")
  if "exo_pair" in types and not 0.0 < label_smoothing < 1.0:
    raise ValueError("exo_pair needs 0 < label_smoothing < 1 (e.g. 1e-3)")
  if "robust" in types and not 0.0 <= label_smoothing < 0.5:
    raise ValueError("robust needs 0 <= label_smoothing < 0.5")
  if f_divergence not in F_DIVERGENCES:
    raise ValueError(f"f_divergence must be one of {F_DIVERGENCES}, got {f_divergence!r}")
  # An option no selected loss type reads is refused, never silently ignored.
  if label_smoothing and not (any(t in SMOOTHED_TYPES for t in types)
                              or (cdpo and "sigmoid" in types)):
    raise ValueError(f"dpo: label_smoothing={label_smoothing} is read only by"
                     f" {SMOOTHED_TYPES} and by 'sigmoid' with cdpo=True; loss_type"
                     f" {types} would ignore it")
  if cdpo and "sigmoid" not in types:
    raise ValueError(f"dpo: cdpo=True changes only the 'sigmoid' loss; loss_type {types}")
  if f_divergence != "reverse_kl":
    bad = [t for t in types if t in NO_F_SCORE_TYPES]
    if bad or set(types) <= {"sft"}:
      raise ValueError(f"dpo: f_divergence={f_divergence!r} is not read by loss types"
                       f" {bad or ['sft']} (they use the log-ratio ρ, not f(ρ))")
  if f_alpha != 0.5 and f_divergence != "alpha_divergence":
    raise ValueError(f"dpo: f_alpha={f_alpha} is read only with"
                     f" f_divergence='alpha_divergence', not {f_divergence!r}")
  if discopop_tau != 0.05 and "discopop" not in types:
    raise ValueError(f"dpo: discopop_tau={discopop_tau} is read only by 'discopop';"
                     f" loss_type {types}")
  if use_weighting and any(t in SORTED_TYPES for t in types):
    raise ValueError(f"dpo: use_weighting (WPO) cannot weight the sorted pairings of"
                     f" {SORTED_TYPES}; loss_type {types}")
  if ld_alpha is not None and set(types) <= {"sft"}:
    raise ValueError("dpo: ld_alpha (LD-DPO) reweights the preference log-probs; the"
                     " 'sft' loss alone does not read it")
  eps = label_smoothing

  def term(outputs: ModelOutputs, traj: Trajectory):
    j, pmask = pair_index(traj)
    m = traj.loss_mask.astype(bool)
    m_c, m_r = m, m[j]
    lp = outputs.logprobs
    ref = _ref(traj, reference_free)
    len_c = jnp.sum(m_c, axis=-1).astype(jnp.float32)
    len_r = jnp.sum(m_r, axis=-1).astype(jnp.float32)
    shared = jnp.minimum(len_c, len_r)
    wt_c = _ld_weights(m_c, shared, ld_alpha)
    wt_r = _ld_weights(m_r, shared, ld_alpha)
    logp_c = jnp.sum(jnp.where(m_c, lp, 0.0) * wt_c, axis=-1)
    logp_r = jnp.sum(jnp.where(m_r, lp[j], 0.0) * wt_r, axis=-1)
    ref_c = jnp.sum(jnp.where(m_c, ref, 0.0) * wt_c, axis=-1)
    ref_r = jnp.sum(jnp.where(m_r, ref[j], 0.0) * wt_r, axis=-1)
    rho_c, rho_r = logp_c - ref_c, logp_r - ref_r
    s_c = f_divergence_score(rho_c, f_divergence=f_divergence, alpha=f_alpha)
    s_r = f_divergence_score(rho_r, f_divergence=f_divergence, alpha=f_alpha)
    delta = s_c - s_r
    safe_len_c, safe_len_r = jnp.maximum(len_c, 1.0), jnp.maximum(len_r, 1.0)

    if use_weighting:
      if outputs.logits is None:
        raise ValueError("dpo(use_weighting=True) needs outputs.logits")
      logw = _wpo_logw(outputs.logits, lp, m)
      pair_w = jnp.exp(logw + logw[j])
    else:
      pair_w = jnp.ones_like(delta)

    def smoothed(x):
      return -(1.0 - eps) * log_sigmoid(beta * x) - eps * log_sigmoid(-beta * x)

    def sorted_delta(a, b):
      n = jnp.sum(pmask.astype(jnp.int32))
      keep = jnp.arange(a.shape[0]) < n
      d = _masked_sort(a, pmask) - _masked_sort(b, pmask)
      return jnp.where(keep, d, 0.0), keep

    total = jnp.zeros((), jnp.float32)
    metrics = {}
    for t, w in zip(types, weights):
      mask_t = pmask
      if t == "sigmoid":
        ell = smoothed(delta) if cdpo else -log_sigmoid(beta * delta)
      elif t == "hinge":
        ell = jax.nn.relu(1.0 - beta * delta)
      elif t == "ipo":
        ell = jnp.square(s_c / safe_len_c - s_r / safe_len_r - 1.0 / (2.0 * beta))
      elif t == "exo_pair":
        x = beta * delta
        ell = (sigmoid(x) * (log_sigmoid(x) - jnp.log1p(-eps))
               + sigmoid(-x) * (log_sigmoid(-x) - jnp.log(eps)))
      elif t == "nca_pair":
        ell = (-log_sigmoid(beta * s_c) - 0.5 * log_sigmoid(-beta * s_c)
               - 0.5 * log_sigmoid(-beta * s_r))
      elif t == "robust":
        ell = ((-(1.0 - eps) * log_sigmoid(beta * delta) + eps * log_sigmoid(-beta * delta))
               / (1.0 - 2.0 * eps))
      elif t == "bco_pair":
        ell = -log_sigmoid(beta * s_c) - log_sigmoid(-beta * s_r)
      elif t == "sppo_hard":
        ell = jnp.square(s_c - 0.5 / beta) + jnp.square(s_r + 0.5 / beta)
      elif t in SORTED_TYPES:
        _refuse_sample_weights(traj.weights, pmask, f"dpo(loss_type={t!r})")
        if t == "aot":
          d, keep = sorted_delta(logp_c - logp_r, ref_c - ref_r)
        else:
          d, keep = sorted_delta(rho_c, rho_r)
        ell = smoothed(d)
        # Sorted positions are no longer tied to rows: weight 1, mask = first n.
        val = jnp.sum(jnp.where(keep, ell, 0.0)) / jnp.maximum(
            jnp.sum(keep.astype(jnp.float32)) if num_pairs is None
            else jnp.asarray(num_pairs, jnp.float32), 1.0)
        total = total + w * val
        metrics[f"loss/{t}"] = sg(val)
        continue
      elif t == "apo_zero":
        ell = (1.0 - sigmoid(beta * rho_c)) + sigmoid(beta * rho_r)
      elif t == "apo_down":
        ell = sigmoid(beta * rho_c) + (1.0 - sigmoid(beta * delta))
      elif t == "discopop":
        x = beta * delta
        mu = sigmoid(x / discopop_tau)
        ell = (1.0 - mu) * (-log_sigmoid(x)) + mu * jnp.exp(-x)
      elif t == "sft":
        # Token-mean NLL of the chosen completions, each row scaled by its
        # pair weight w·(WPO weight): weights apply once, as for every type.
        # (num_pairs: the local/global pair ratio, so micro-batches add up.)
        cmask = m_c & pmask[:, None]
        val = _weighted_token_nll(lp, cmask, jnp.where(pmask, traj.weights * pair_w, 0.0))
        if num_pairs is not None:
          val = val * jnp.sum(pmask.astype(jnp.float32)) / jnp.maximum(
              jnp.asarray(num_pairs, jnp.float32), 1.0)
        total = total + w * val
        metrics[f"loss/{t}"] = sg(val)
        continue
      else:  # sigmoid_norm
        ell = -log_sigmoid(beta * (s_c / safe_len_c - s_r / safe_len_r))
      val = _pair_mean(ell * pair_w, traj, mask_t, num_pairs)
      total = total + w * val
      metrics[f"loss/{t}"] = sg(val)

    metrics.update({
        "rewards/chosen": _metric_mean(beta * rho_c, pmask),
        "rewards/rejected": _metric_mean(beta * rho_r, pmask),
        "rewards/margins": _metric_mean(beta * (rho_c - rho_r), pmask),
        "rewards/accuracies": _metric_mean((rho_c > rho_r).astype(jnp.float32), pmask),
        "logps/chosen": _metric_mean(logp_c, pmask),
        "logps/rejected": _metric_mean(logp_r, pmask),
    })
    if use_weighting:
      metrics["wpo_weight"] = _metric_mean(pair_w, pmask)
    return total, metrics

  return term


def log1mexp(x: Array) -> Array:
  """log(1 − eˣ) for x < 0, stable (branch at −ln 2, Mächler 2012)."""
  x = jnp.minimum(x, -1e-30)
  near = x > -np.log(2.0)
  # Double where: each branch only ever sees inputs where it is finite.
  x_near = jnp.where(near, x, -1.0)
  x_far = jnp.where(near, -1.0, x)
  return jnp.where(near, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


def _avg_logps(lp: Array, m: Array) -> Array:
  return _seq_sum(lp, m) / jnp.maximum(jnp.sum(m, axis=-1).astype(jnp.float32), 1.0)


def _chosen_nll(outputs: ModelOutputs, traj: Trajectory, pmask: Array, mask: str) -> Array:
  if mask == "input":
    tm = traj.input_mask.astype(bool) & (traj.positions > 0)
  elif mask == "loss":
    tm = traj.loss_mask.astype(bool)
  else:
    raise ValueError(f"nll_mask must be 'input' or 'loss', got {mask!r}")
  return _weighted_token_nll(outputs.logprobs, tm & pmask[:, None], traj.weights)


def _weighted_token_nll(lp: Array, cm: Array, row_w: Array) -> Array:
  """−Σ_i w_i Σ_t cm·ℓp / Σ_i Σ_t cm: the token-mean NLL, each row scaled by
  its sample weight (= the plain token mean when every weight is 1)."""
  x = jnp.where(cm, lp, 0.0) * row_w[:, None]
  return -jnp.sum(x) / jnp.maximum(jnp.sum(cm.astype(jnp.float32)), 1.0)


def orpo(*, beta: float = 0.1, nll_mask: str = "input", num_pairs=None):
  r"""ORPO (Hong et al. 2024, arXiv:2403.07691) as in TRL experimental ORPOTrainer.

  ā = mean per-token log-prob of the completion (loss_mask);
  log_odds = (ā_c − ā_r) − (log1mexp(ā_c) − log1mexp(ā_r));
  L = NLL_chosen − β·mean_pairs logσ(log_odds).
  NLL_chosen is the token-mean cross-entropy over the chosen rows (each row
  scaled by its sample weight, as the odds-ratio term is): over the
  full prompt+response (``nll_mask='input'``, TRL decoder-only default) or the
  completion only (``'loss'``). Pairing: module docstring.

  Args:
    beta: β (λ of the paper).
    nll_mask: 'input' or 'loss'.
    num_pairs: global pair count.

  Returns:
    An objective term; metrics: nll_loss, log_odds_ratio, log_odds_chosen.
  """

  def term(outputs: ModelOutputs, traj: Trajectory):
    j, pmask = pair_index(traj)
    m = traj.loss_mask.astype(bool)
    a = _avg_logps(outputs.logprobs, m)
    a_c, a_r = a, a[j]
    # Keep log1mexp's argument finite on uncounted rows.
    a_c = jnp.where(pmask, a_c, -1.0)
    a_r = jnp.where(pmask, a_r, -1.0)
    log_odds = (a_c - a_r) - (log1mexp(a_c) - log1mexp(a_r))
    ratio = log_sigmoid(log_odds)
    nll = _chosen_nll(outputs, traj, pmask, nll_mask)
    loss = nll - beta * _pair_mean(ratio, traj, pmask, num_pairs)
    metrics = {
        "nll_loss": sg(nll),
        "log_odds_ratio": _metric_mean(ratio, pmask),
        "log_odds_chosen": _metric_mean(log_odds, pmask),
    }
    return loss, metrics

  return term


# ---------------------------------------------------------------- CPO / SimPO
def cpo(
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    cpo_alpha: float = 1.0,
    alpha: float = 0.0,
    num_pairs=None,
):
  r"""CPO / SimPO / AlphaPO: reference-free preference losses (TRL experimental CPOTrainer).

  x_c, x_r = average (ipo, simpo) or summed completion log-probs; AlphaPO
  (α ≠ 0): x ← (1 − e^{−α·x})/α (= (1 − p^{−α})/α). z = x_c − x_r::

    sigmoid  −(1−ε)logσ(βz) − ε logσ(−βz)             (CPO, Xu et al. 2024)
    hinge    relu(1 − βz)
    ipo      (z − 1/(2β))²
    simpo    z ← z − γ/β, then the sigmoid form        (SimPO, Meng et al. 2024)

  L = mean_pairs ℓ + cpo_alpha·NLL_chosen (token-mean over chosen completion
  tokens, each row scaled by its sample weight; cpo_alpha = 0 gives pure
  SimPO). Pairing: module docstring. ``label_smoothing`` with hinge/ipo and a
  non-default ``simpo_gamma`` without 'simpo' are refused (not read).

  Args:
    beta: β.
    loss_type: 'sigmoid' | 'hinge' | 'ipo' | 'simpo'.
    label_smoothing: ε.
    simpo_gamma: γ (target reward margin).
    cpo_alpha: weight of the chosen NLL (TRL default 1.0).
    alpha: AlphaPO α (0: off).
    num_pairs: global pair count.

  Returns:
    An objective term; metrics: rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies, nll_loss.
  """
  if loss_type not in ("sigmoid", "hinge", "ipo", "simpo"):
    raise ValueError(f"cpo loss_type must be sigmoid|hinge|ipo|simpo, got {loss_type!r}")
  if label_smoothing and loss_type not in ("sigmoid", "simpo"):
    raise ValueError(f"cpo: label_smoothing={label_smoothing} is read only by 'sigmoid'"
                     f" and 'simpo', not {loss_type!r}")
  if simpo_gamma != 0.5 and loss_type != "simpo":
    raise ValueError(f"cpo: simpo_gamma={simpo_gamma} is read only by 'simpo', not"
                     f" {loss_type!r}")
  average = loss_type in ("ipo", "simpo")

  def term(outputs: ModelOutputs, traj: Trajectory):
    j, pmask = pair_index(traj)
    m = traj.loss_mask.astype(bool)
    lp = outputs.logprobs
    x = _avg_logps(lp, m) if average else _seq_sum(lp, m)
    if alpha != 0.0:
      x = (1.0 - jnp.exp(-alpha * x)) / alpha
    x_c, x_r = x, x[j]
    z = x_c - x_r
    if loss_type == "simpo":
      z = z - simpo_gamma / beta
    if loss_type in ("sigmoid", "simpo"):
      ell = -(1.0 - label_smoothing) * log_sigmoid(beta * z) - label_smoothing * log_sigmoid(-beta * z)
    elif loss_type == "hinge":
      ell = jax.nn.relu(1.0 - beta * z)
    else:
      ell = jnp.square(z - 1.0 / (2.0 * beta))
    loss = _pair_mean(ell, traj, pmask, num_pairs)
    nll = _chosen_nll(outputs, traj, pmask, "loss")
    if cpo_alpha:
      loss = loss + cpo_alpha * nll
    metrics = {
        "rewards/chosen": _metric_mean(beta * x_c, pmask),
        "rewards/rejected": _metric_mean(beta * x_r, pmask),
        "rewards/margins": _metric_mean(beta * (x_c - x_r), pmask),
        "rewards/accuracies": _metric_mean((x_c > x_r).astype(jnp.float32), pmask),
        "nll_loss": sg(nll),
    }
    return loss, metrics

  return term
