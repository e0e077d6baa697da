"""Tests for jaxsi.transforms.preference (formulas.md §2.2–2.5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import preference as pref
from jaxsi.transforms import unpaired_preference as kto_lib
from jaxsi.transforms.base import ModelOutputs

B, T = 8, 6
P = 3  # pairs: rows [0:3] chosen, [3:6] rejected, rows 6, 7 filtered-out padding.

RNG = np.random.default_rng(0)
LP = RNG.normal(-1.0, 0.4, size=(B, T)).astype(np.float32)
REF = RNG.normal(-1.0, 0.4, size=(B, T)).astype(np.float32)
LENGTHS = np.array([3, 5, 2, 4, 1, 3, 2, 2])
MASK = (np.arange(T)[None] >= 1) & (np.arange(T)[None] <= LENGTHS[:, None])


def halves_traj(mask=MASK, ref=REF, *, valid=None, weights=None, extras=None,
                positions=None):
  pair_ids, is_chosen = pref.halves_pairing(P)
  pair_ids = np.concatenate([pair_ids, [-1, -1]]).astype(np.int32)
  is_chosen = np.concatenate([is_chosen, [False, False]])
  v = np.arange(B) < 2 * P if valid is None else valid
  ex = {"is_chosen": is_chosen}
  ex.update(extras or {})
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=mask, valid=v,
                           weights=weights, pair_ids=pair_ids, extras=ex,
                           ref_logprobs=None if ref is None else jnp.asarray(ref))


def out(lp=LP, logits=None):
  return ModelOutputs(logprobs=jnp.asarray(lp, jnp.float32),
                      logits=None if logits is None else jnp.asarray(logits))


# ------------------------------------------------ independent numpy reference
def logsig(x):
  return -np.logaddexp(0.0, -x)


def sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_pairs(lp=LP, ref=REF, mask=MASK):
  """Per-pair sums, TRL concatenated_forward style: chosen = rows[:P], rejected = rows[P:2P]."""
  lp64, ref64 = lp.astype(np.float64), ref.astype(np.float64)
  logps = (lp64 * mask).sum(-1)
  ref_logps = (ref64 * mask).sum(-1)
  lengths = mask.sum(-1).astype(np.float64)
  c, r = slice(0, P), slice(P, 2 * P)
  return dict(pc=logps[c], pr=logps[r], rc=ref_logps[c], rr=ref_logps[r],
              lc=lengths[c], lr=lengths[r])


def np_trl_dpo_losses(loss_type, beta, eps=0.0, f_div="reverse_kl", alpha=0.5, tau=0.05,
                      q=None):
  """TRL 1.x DPOTrainer._compute_loss per-pair losses (formulas §2.2)."""
  q = q or np_pairs()
  rho_c, rho_r = q["pc"] - q["rc"], q["pr"] - q["rr"]

  def score(rho):
    if f_div == "reverse_kl":
      return rho
    if f_div == "forward_kl":
      return -np.exp(-rho)
    if f_div == "js_divergence":
      return logsig(rho)
    return np.exp(np.minimum((alpha - 1) * rho, 80)) / (alpha - 1)

  s_c, s_r = score(rho_c), score(rho_r)
  d = s_c - s_r
  if loss_type == "sigmoid":
    return -logsig(beta * d)
  if loss_type == "hinge":
    return np.maximum(0.0, 1 - beta * d)
  if loss_type == "ipo":
    return (s_c / q["lc"] - s_r / q["lr"] - 1 / (2 * beta)) ** 2
  if loss_type == "exo_pair":
    return (sig(beta * d) * (logsig(beta * d) - np.log(1 - eps))
            + sig(-beta * d) * (logsig(-beta * d) - np.log(eps)))
  if loss_type == "nca_pair":
    return -logsig(beta * s_c) - 0.5 * logsig(-beta * s_c) - 0.5 * logsig(-beta * s_r)
  if loss_type == "robust":
    return (-(1 - eps) * logsig(beta * d) + eps * logsig(-beta * d)) / (1 - 2 * eps)
  if loss_type == "bco_pair":
    return -logsig(beta * s_c) - logsig(-beta * s_r)
  if loss_type == "sppo_hard":
    return (s_c - 1 / (2 * beta)) ** 2 + (s_r + 1 / (2 * beta)) ** 2
  if loss_type == "aot":
    delta = np.sort(q["pc"] - q["pr"]) - np.sort(q["rc"] - q["rr"])
    return -(1 - eps) * logsig(beta * delta) - eps * logsig(-beta * delta)
  if loss_type == "aot_unpaired":
    delta = np.sort(rho_c) - np.sort(rho_r)
    return -(1 - eps) * logsig(beta * delta) - eps * logsig(-beta * delta)
  if loss_type == "apo_zero":
    return (1 - sig(beta * rho_c)) + sig(beta * rho_r)
  if loss_type == "apo_down":
    return sig(beta * rho_c) + (1 - sig(beta * d))
  if loss_type == "discopop":
    x = beta * d
    mu = sig(x / tau)
    return (1 - mu) * (-logsig(x)) + mu * np.exp(-x)
  if loss_type == "sft":
    m = MASK[:P]
    return np.full(P, -(LP[:P].astype(np.float64) * m).sum() / m.sum())
  if loss_type == "sigmoid_norm":
    return -logsig(beta * (s_c / q["lc"] - s_r / q["lr"]))
  raise ValueError(loss_type)


@pytest.mark.parametrize("loss_type", pref.DPO_LOSS_TYPES)
def test_dpo_every_loss_type_matches_trl(loss_type):
  eps = 0.1 if loss_type in ("exo_pair", "robust", "aot", "aot_unpaired") else 0.0
  term = pref.dpo(beta=0.5, loss_type=loss_type, label_smoothing=eps)
  loss, m = term(out(), halves_traj())
  expected = np_trl_dpo_losses(loss_type, 0.5, eps).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m[f"loss/{loss_type}"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("f_div", ["forward_kl", "js_divergence", "alpha_divergence"])
def test_dpo_f_divergences(f_div):
  for loss_type in ("sigmoid", "ipo", "nca_pair"):
    # f_alpha is an option of the alpha divergence only (elsewhere: refused).
    alpha_kw = {"f_alpha": 0.3} if f_div == "alpha_divergence" else {}
    loss, _ = pref.dpo(beta=0.5, loss_type=loss_type, f_divergence=f_div, **alpha_kw)(
        out(), halves_traj())
    np.testing.assert_allclose(
        loss, np_trl_dpo_losses(loss_type, 0.5, f_div=f_div, alpha=0.3).mean(), rtol=1e-5)
  # α → 1 falls back to the reverse KL score.
  np.testing.assert_allclose(pref.f_divergence_score(jnp.array([0.3]),
                                                     f_divergence="alpha_divergence", alpha=1.0),
                             [0.3])


def test_dpo_hand_numbers():
  # One pair: chosen row 0 (tokens 1..3), rejected row 3 (tokens 1..4).
  lp = np.zeros((B, T), np.float32)
  ref = np.zeros((B, T), np.float32)
  lp[0, 1:4] = [-0.1, -0.2, -0.2]    # logπ_c = −0.5, ref_c = −1.5 → ρ_c = 1
  ref[0, 1:4] = -0.5
  lp[3, 1:5] = -0.5                  # logπ_r = −2.0, ref_r = −1.0 → ρ_r = −1
  ref[3, 1:5] = -0.25
  valid = np.zeros(B, bool)
  valid[[0, 3]] = True
  traj = halves_traj(ref=ref, valid=valid)
  beta = 0.5
  cases = {
      "sigmoid": np.log1p(np.exp(-1.0)),                     # −logσ(0.5·2)
      "hinge": 0.0,                                          # relu(1 − 1)
      "ipo": (1 / 3 + 1 / 4 - 1.0) ** 2,                     # (ρ_c/3 − ρ_r/4 − 1/(2β))²
      "sppo_hard": (1 - 1.0) ** 2 + (-1 + 1.0) ** 2,         # 0
      "apo_zero": (1 - sig(0.5)) + sig(-0.5),
      "bco_pair": 2 * np.log1p(np.exp(-0.5)),
      "sigmoid_norm": np.log1p(np.exp(-0.5 * (1 / 3 + 1 / 4))),
  }
  for loss_type, expected in cases.items():
    loss, m = pref.dpo(beta=beta, loss_type=loss_type)(out(lp), traj)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-7, err_msg=loss_type)
  np.testing.assert_allclose(m["rewards/chosen"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/rejected"], -0.5, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/margins"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/accuracies"], 1.0)
  np.testing.assert_allclose(m["logps/chosen"], -0.5, rtol=1e-6)


def test_sigmoid_and_ipo_limits():
  z = np.zeros((B, T), np.float32)
  traj = halves_traj(ref=z)
  # Δ = 0 (policy = reference): sigmoid = log 2, hinge = 1, ipo = 1/(4β²).
  for loss_type, expected in (("sigmoid", np.log(2.0)), ("hinge", 1.0), ("ipo", 1.0)):
    loss, _ = pref.dpo(beta=0.5, loss_type=loss_type)(out(z), traj)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # A large margin drives sigmoid → 0; IPO is minimised (0) at margin 1/(2β), not ∞.
  lp = np.zeros((B, T), np.float32)
  lp[:P] = np.where(MASK[:P], 40.0 / MASK[:P].sum(-1, keepdims=True), 0.0)
  loss, _ = pref.dpo(beta=0.5, loss_type="sigmoid")(out(lp), traj)
  assert float(loss) < 1e-8
  lp = np.zeros((B, T), np.float32)
  lp[:P] = np.where(MASK[:P], 1.0, 0.0)  # s_c/L_c = 1 = 1/(2β) with β = 0.5
  loss, _ = pref.dpo(beta=0.5, loss_type="ipo")(out(lp), traj)
  np.testing.assert_allclose(loss, 0.0, atol=1e-10)
  g = jax.grad(lambda x: pref.dpo(beta=0.5, loss_type="ipo")(out(x), traj)[0])(jnp.asarray(lp))
  np.testing.assert_allclose(g, 0.0, atol=1e-7)


def test_sigmoid_dpo_gradients():
  traj = halves_traj()
  term = pref.dpo(beta=0.3, loss_type="sigmoid")
  f = lambda x: term(out(x), traj)[0]
  check_grads(f, (jnp.asarray(LP),), order=1, modes=["rev"], atol=1e-3, rtol=1e-3, eps=1e-2)
  # Analytic: dL/dℓp_c,t = −β·σ(−βΔ)/P on chosen tokens, +β·σ(−βΔ)/P on rejected ones.
  q = np_pairs()
  d = (q["pc"] - q["rc"]) - (q["pr"] - q["rr"])
  coef = 0.3 * sig(-0.3 * d) / P
  expected = np.zeros((B, T))
  expected[:P] = -coef[:, None] * MASK[:P]
  expected[P:2 * P] = coef[:, None] * MASK[P:2 * P]
  np.testing.assert_allclose(jax.grad(f)(jnp.asarray(LP)), expected, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(jax.jit(term)(out(), traj)[0], term(out(), traj)[0], rtol=1e-6)


def test_multi_loss_weights_cdpo_reference_free_and_validation():
  traj = halves_traj()
  loss, m = pref.dpo(beta=0.2, loss_type=("sigmoid", "bco_pair", "sft"),
                     loss_weights=(0.8, 0.2, 1.0))(out(), traj)
  expected = sum(w * np_trl_dpo_losses(t, 0.2).mean()
                 for t, w in (("sigmoid", 0.8), ("bco_pair", 0.2), ("sft", 1.0)))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Legacy cDPO label smoothing (TRL ≤ 0.28 sigmoid).
  q = np_pairs()
  d = (q["pc"] - q["rc"]) - (q["pr"] - q["rr"])
  loss, _ = pref.dpo(beta=0.2, cdpo=True, label_smoothing=0.1)(out(), traj)
  np.testing.assert_allclose(loss, np.mean(-0.9 * logsig(0.2 * d) - 0.1 * logsig(-0.2 * d)),
                             rtol=1e-5)
  # Reference-free: ref = 0.
  loss, _ = pref.dpo(beta=0.2, reference_free=True)(out(), halves_traj(ref=None))
  np.testing.assert_allclose(loss, np.mean(-logsig(0.2 * (q["pc"] - q["pr"]))), rtol=1e-5)
  with pytest.raises(ValueError, match="ref_logprobs"):
    pref.dpo()(out(), halves_traj(ref=None))
  with pytest.raises(ValueError, match="exo_pair"):
    pref.dpo(loss_type="exo_pair")
  with pytest.raises(ValueError, match="f_divergence"):
    pref.dpo(f_divergence="tv")
  with pytest.raises(ValueError, match="Unknown DPO"):
    pref.dpo(loss_type="dpo")
  with pytest.raises(ValueError, match="loss_weights"):
    pref.dpo(loss_type=("sigmoid", "ipo"), loss_weights=(1.0,))
  with pytest.raises(ValueError, match="is_chosen"):
    plain = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK,
                              ref_logprobs=jnp.asarray(REF))
    pref.dpo()(out(), plain)


def test_pairing_layout_invariance_weights_and_invalid_pairs():
  # Interleaved layout (c0, r0, c1, r1, …) gives the same loss as the halves layout.
  perm = np.array([0, 3, 1, 4, 2, 5, 6, 7])
  inv = np.argsort(perm)
  # pair_ids of a chosen row point to the new position of its rejected row.
  pair_ids = np.full(B, -1, np.int32)
  for new_pos, old_row in enumerate(perm):
    if old_row < P:
      pair_ids[new_pos] = inv[old_row + P]
  is_chosen = perm < P
  traj_i = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK[perm],
                             valid=perm < 2 * P, pair_ids=pair_ids,
                             extras={"is_chosen": is_chosen}, ref_logprobs=jnp.asarray(REF[perm]))
  for loss_type in ("sigmoid", "ipo", "aot"):
    term = pref.dpo(beta=0.5, loss_type=loss_type)
    np.testing.assert_allclose(term(out(LP[perm]), traj_i)[0], term(out(), halves_traj())[0],
                               rtol=1e-6)
  # A filtered-out rejected row drops its pair; sample weights scale pairs.
  valid = np.arange(B) < 2 * P
  valid[P + 1] = False
  w = np.ones(B, np.float32)
  w[0] = 2.0
  loss, m = pref.dpo(beta=0.5)(out(), halves_traj(valid=valid, weights=w))
  per = np_trl_dpo_losses("sigmoid", 0.5)
  np.testing.assert_allclose(loss, (2.0 * per[0] + per[2]) / 2.0, rtol=1e-5)


def test_ld_dpo_and_wpo():
  # LD-DPO: tokens beyond the shared length min(L_c, L_r) are weighted by α.
  alpha = 0.3
  rank = np.cumsum(MASK, axis=-1)
  shared = np.minimum(MASK[:P].sum(-1), MASK[P:2 * P].sum(-1))
  shared = np.concatenate([shared, shared, [0, 0]])
  w_tok = MASK * np.where(rank <= shared[:, None], 1.0, alpha)
  q = {"pc": (LP * w_tok).sum(-1)[:P], "pr": (LP * w_tok).sum(-1)[P:2 * P],
       "rc": (REF * w_tok).sum(-1)[:P], "rr": (REF * w_tok).sum(-1)[P:2 * P]}
  loss, _ = pref.dpo(beta=0.5, ld_alpha=alpha)(out(), halves_traj())
  np.testing.assert_allclose(loss, np_trl_dpo_losses("sigmoid", 0.5, q={**np_pairs(), **q}).mean(),
                             rtol=1e-5)
  loss1, _ = pref.dpo(beta=0.5, ld_alpha=1.0)(out(), halves_traj())
  np.testing.assert_allclose(loss1, np_trl_dpo_losses("sigmoid", 0.5).mean(), rtol=1e-5)
  # WPO: w = exp(mean_t(ℓp_t − log Σ_v p_v²)), ℓ ×= w_c·w_r; ℓp consistent with the logits.
  v = 4
  logits = np.random.default_rng(1).normal(size=(B, T, v)).astype(np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  tokens = np.random.default_rng(2).integers(0, v, size=(B, T))
  lp = np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
  log_sum_p2 = np.log(np.exp(2 * logp).sum(-1))
  logw = ((lp - log_sum_p2) * MASK).sum(-1) / MASK.sum(-1)
  pair_w = np.exp(logw[:P] + logw[P:2 * P])
  per = np_trl_dpo_losses("sigmoid", 0.5, q=np_pairs(lp=lp))
  loss, m = pref.dpo(beta=0.5, use_weighting=True)(out(lp, logits), halves_traj())
  np.testing.assert_allclose(loss, np.mean(per * pair_w), rtol=1e-4)
  with pytest.raises(ValueError, match="logits"):
    pref.dpo(use_weighting=True)(out(lp), halves_traj())


# ------------------------------------------------------------------------- KTO
def test_kto_matches_trl():
  des = np.array([True, False, True, False, True, True, False, False])
  valid = np.arange(B) < 6
  kl_logps = np.linspace(-3.0, -1.0, B).astype(np.float32)
  kl_ref = np.linspace(-3.5, -1.0, B).astype(np.float32)
  extras = {"is_desirable": des, "kl_logps": kl_logps, "kl_ref_logps": kl_ref}
  traj = Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, valid=valid,
                           extras=extras, ref_logprobs=jnp.asarray(REF))
  beta, lam_d, lam_u = 0.1, 1.0, 1.33
  rho = ((LP - REF).astype(np.float64) * MASK).sum(-1)
  z = max(np.mean((kl_logps - kl_ref)[valid]), 0.0)
  ell = np.where(des, lam_d * (1 - sig(beta * (rho - z))), lam_u * (1 - sig(beta * (z - rho))))
  loss, m = kto_lib.kto(beta=beta, desirable_weight=lam_d, undesirable_weight=lam_u)(out(), traj)
  np.testing.assert_allclose(loss, ell[valid].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["kl"], z, rtol=1e-5)
  # z_ref is clamped at 0 and detached.
  extras_neg = dict(extras, kl_logps=kl_ref - 1.0)
  traj_neg = traj.replace(extras=extras_neg)
  _, m = kto_lib.kto(beta=beta)(out(), traj_neg)
  np.testing.assert_allclose(m["kl"], 0.0)
  g = jax.grad(lambda k: kto_lib.kto()(out(), traj.replace(extras=dict(extras, kl_logps=k)))[0])(
      jnp.asarray(kl_logps))
  np.testing.assert_allclose(g, 0.0)
  # apo_zero_unpaired needs no KL completions.
  loss, _ = kto_lib.kto(loss_type="apo_zero_unpaired", beta=beta)(
      out(), traj.replace(extras={"is_desirable": des}))
  ell = np.where(des, 1 - sig(beta * rho), sig(beta * rho))
  np.testing.assert_allclose(loss, ell[valid].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="kl_logps"):
    kto_lib.kto()(out(), traj.replace(extras={"is_desirable": des}))


# ------------------------------------------------------------------------ ORPO
def test_log1mexp():
  x = jnp.array([-1e-6, -0.1, -0.6931, -0.7, -5.0, -50.0, -1.0, -3.0])  # [B]: shared shape
  np.testing.assert_allclose(pref.log1mexp(x), np.log(-np.expm1(np.asarray(x, np.float64))),
                             rtol=1e-5, atol=1e-12)
  g = jax.grad(lambda v: jnp.sum(pref.log1mexp(v)))(x)
  np.testing.assert_allclose(g, -np.exp(x) / -np.expm1(np.asarray(x, np.float64)), rtol=1e-3)
  assert np.all(np.isfinite(g))


def test_orpo_matches_trl():
  traj = halves_traj(ref=None)
  beta = 0.1
  avg = (LP.astype(np.float64) * MASK).sum(-1) / MASK.sum(-1)
  ac, ar = avg[:P], avg[P:2 * P]
  log_odds = (ac - ar) - (np.log1p(-np.exp(ac)) - np.log1p(-np.exp(ar)))
  nll_mask = np.ones((B, T), bool)
  nll_mask[:, 0] = False  # first token of each sequence has no prediction
  nll = -(LP[:P] * nll_mask[:P]).sum() / nll_mask[:P].sum()
  loss, m = pref.orpo(beta=beta)(out(), traj)
  np.testing.assert_allclose(loss, nll - beta * np.mean(logsig(log_odds)), rtol=1e-5)
  np.testing.assert_allclose(m["log_odds_chosen"], np.mean(log_odds), rtol=1e-5)
  loss, _ = pref.orpo(beta=beta, nll_mask="loss")(out(), traj)
  nll_c = -(LP[:P] * MASK[:P]).sum() / MASK[:P].sum()
  np.testing.assert_allclose(loss, nll_c - beta * np.mean(logsig(log_odds)), rtol=1e-5)
  check_grads(lambda x: pref.orpo(beta=beta)(out(x), traj)[0], (jnp.asarray(LP),), order=1,
              modes=["rev"], atol=1e-2, rtol=1e-2, eps=1e-2)


# ----------------------------------------------------------------- CPO / SimPO
@pytest.mark.parametrize("loss_type,alpha", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0),
                                             ("simpo", 0.0), ("simpo", 0.5)])
def test_cpo_simpo_alphapo_match_trl(loss_type, alpha):
  beta, gamma, eps, cpo_alpha = 2.0, 0.5, 0.1, 1.0
  traj = halves_traj(ref=None)
  sums = (LP.astype(np.float64) * MASK).sum(-1)
  avg = sums / MASK.sum(-1)
  x = avg if loss_type in ("ipo", "simpo") else sums
  if alpha:
    x = (1 - np.exp(x) ** (-alpha)) / alpha       # TRL: (1 − p^(−α))/α
  z = x[:P] - x[P:2 * P]
  if loss_type == "simpo":
    z = z - gamma / beta
  if loss_type in ("sigmoid", "simpo"):
    ell = -logsig(beta * z) * (1 - eps) - logsig(-beta * z) * eps
  elif loss_type == "hinge":
    ell = np.maximum(0.0, 1 - beta * z)
  else:
    ell = (z - 1 / (2 * beta)) ** 2
  nll = -(LP[:P] * MASK[:P]).sum() / MASK[:P].sum()
  if loss_type in ("hinge", "ipo"):
    assert eps and eps == 0.1       # they do not read label smoothing: refused
    with pytest.raises(ValueError, match="label_smoothing"):
      pref.cpo(beta=beta, loss_type=loss_type, label_smoothing=eps)
    eps = 0.0
    ell = (np.maximum(0.0, 1 - beta * z) if loss_type == "hinge"
           else (z - 1 / (2 * beta)) ** 2)
  term = pref.cpo(beta=beta, loss_type=loss_type, label_smoothing=eps, simpo_gamma=gamma,
                  cpo_alpha=cpo_alpha, alpha=alpha)
  loss, m = term(out(), traj)
  np.testing.assert_allclose(loss, ell.mean() + cpo_alpha * nll, rtol=1e-5)
  np.testing.assert_allclose(m["nll_loss"], nll, rtol=1e-5)
  # cpo_alpha = 0: pure SimPO.
  loss0, _ = pref.cpo(beta=beta, loss_type=loss_type, label_smoothing=eps, simpo_gamma=gamma,
                      cpo_alpha=0.0, alpha=alpha)(out(), traj)
  np.testing.assert_allclose(loss0, ell.mean(), rtol=1e-5)


def test_kto_orpo_cpo_hand_numbers_and_jit():
  # One pair: chosen row 0 has ā_c = log 0.5 (2 tokens), rejected row 3 ā_r = log 0.25.
  lp = np.zeros((B, T), np.float32)
  mask = np.zeros((B, T), bool)
  mask[0, 1:3] = True
  mask[3, 1:3] = True
  lp[0, 1:3] = np.log(0.5)
  lp[3, 1:3] = np.log(0.25)
  valid = np.zeros(B, bool)
  valid[[0, 3]] = True
  traj = halves_traj(mask=mask, ref=np.zeros((B, T), np.float32), valid=valid)
  # ORPO: odds_c = 0.5/0.5 = 1, odds_r = 0.25/0.75 = 1/3 → log-odds ratio = log 3;
  # loss = NLL_c(completion) − β·logσ(log 3) = −log 0.5 − β·log(3/4).
  orpo = pref.orpo(beta=0.1, nll_mask="loss")
  np.testing.assert_allclose(orpo(out(lp), traj)[0], np.log(2.0) - 0.1 * np.log(0.75), rtol=1e-5)
  # SimPO (cpo_alpha = 0): z = log 0.5 − log 0.25 − γ/β = log 2 − 0.25, β = 2.
  simpo = pref.cpo(beta=2.0, loss_type="simpo", simpo_gamma=0.5, cpo_alpha=0.0)
  np.testing.assert_allclose(simpo(out(lp), traj)[0],
                             np.log1p(np.exp(-2.0 * (np.log(2.0) - 0.25))), rtol=1e-5)
  # KTO with ρ = 0 for both rows and z_ref = 0: every row loses 1 − σ(0) = ½.
  kto_traj = Trajectory.create(
      np.zeros((B, T), np.int32), loss_mask=mask, valid=valid,
      ref_logprobs=jnp.asarray(lp), extras={
          "is_desirable": np.arange(B) == 0, "kl_logps": np.zeros(B, np.float32),
          "kl_ref_logps": np.zeros(B, np.float32)})
  kto = kto_lib.kto(beta=0.1)
  np.testing.assert_allclose(kto(out(lp), kto_traj)[0], 0.5, rtol=1e-6)
  for term, tr in ((orpo, traj), (kto, kto_traj)):
    np.testing.assert_allclose(jax.jit(term)(out(lp), tr)[0], term(out(lp), tr)[0], rtol=1e-6)


# ------------------------------------------- strictness: options never ignored
@pytest.mark.parametrize("kwargs,match", [
    (dict(loss_type="sigmoid", label_smoothing=0.1), "label_smoothing"),
    (dict(loss_type=("hinge", "ipo"), label_smoothing=0.1), "label_smoothing"),
    (dict(loss_type="ipo", cdpo=True), "cdpo"),
    (dict(loss_type="apo_zero", f_divergence="js_divergence"), "f_divergence"),
    (dict(loss_type=("sigmoid", "aot"), f_divergence="forward_kl"), "f_divergence"),
    (dict(loss_type="sft", f_divergence="forward_kl"), "f_divergence"),
    (dict(loss_type="sigmoid", f_alpha=0.3), "f_alpha"),
    (dict(loss_type="sigmoid", discopop_tau=0.1), "discopop_tau"),
    (dict(loss_type="aot_unpaired", use_weighting=True), "use_weighting"),
    (dict(loss_type="sft", ld_alpha=0.5), "ld_alpha"),
])
def test_dpo_refuses_options_its_loss_types_do_not_read(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pref.dpo(**kwargs)


def test_options_that_are_read_are_accepted():
  pref.dpo(loss_type=("sigmoid", "robust"), label_smoothing=0.1)
  pref.dpo(loss_type="sigmoid", cdpo=True, label_smoothing=0.1)
  pref.dpo(loss_type=("sigmoid", "sft"), f_divergence="alpha_divergence", f_alpha=0.3)
  pref.dpo(loss_type="discopop", discopop_tau=0.1)
  pref.dpo(loss_type=("sigmoid", "sft"), use_weighting=True, ld_alpha=0.5)
  with pytest.raises(ValueError, match="simpo_gamma"):
    pref.cpo(loss_type="sigmoid", simpo_gamma=1.0)
  pref.cpo(loss_type="simpo", simpo_gamma=1.0, label_smoothing=0.1)


def test_sorted_aot_refuses_sample_weights_eagerly_and_under_jit():
  w = np.ones(B, np.float32)
  w[1] = 0.5
  term = pref.dpo(beta=0.5, loss_type="aot")
  with pytest.raises(ValueError, match="traj.weights must be 1"):
    term(out(), halves_traj(weights=w))
  with pytest.raises(Exception, match="traj.weights must be 1"):
    jax.block_until_ready(jax.jit(term)(out(), halves_traj(weights=w)))
  # A weight on an uncounted row (padding row 7) is not an error; weight 1 runs.
  w = np.ones(B, np.float32)
  w[7] = 3.0
  loss, _ = jax.jit(term)(out(), halves_traj(weights=w))
  np.testing.assert_allclose(loss, np_trl_dpo_losses("aot", 0.5).mean(), rtol=1e-5)


def test_pair_weights_reach_every_part_of_dpo_plus_nll_orpo_and_cpo():
  """Weights w = (2, 0.5, 1) on the 3 pairs scale the preference term per pair
  and each chosen row's NLL: −Σ_i w_i Σ_t ℓp_i,t / Σ_i L_i (plain mean at w=1)."""
  w = np.ones(B, np.float32)
  w[:P] = [2.0, 0.5, 1.0]
  traj = halves_traj(weights=w)
  per = np_trl_dpo_losses("sigmoid", 0.5)
  sums = (LP[:P].astype(np.float64) * MASK[:P]).sum(-1)
  nll_w = -(w[:P] * sums).sum() / MASK[:P].sum()
  # chosen lengths 3, 5, 2 → Σ L = 10
  assert MASK[:P].sum() == 10
  loss, m = pref.dpo(beta=0.5, loss_type=("sigmoid", "sft"), loss_weights=(1.0, 0.3))(
      out(), traj)
  np.testing.assert_allclose(m["loss/sigmoid"], (w[:P] * per).mean(), rtol=1e-5)
  np.testing.assert_allclose(m["loss/sft"], nll_w, rtol=1e-5)
  np.testing.assert_allclose(loss, (w[:P] * per).mean() + 0.3 * nll_w, rtol=1e-5)
  # ORPO and CPO: the chosen NLL is weighted the same way.
  _, mo = pref.orpo(beta=0.1, nll_mask="loss")(out(), traj)
  np.testing.assert_allclose(mo["nll_loss"], nll_w, rtol=1e-5)
  _, mc = pref.cpo(beta=0.1)(out(), halves_traj(ref=None, weights=w))
  np.testing.assert_allclose(mc["nll_loss"], nll_w, rtol=1e-5)
  # Unit weights: the old plain token mean (TRL's sft / nll_loss).
  _, m1 = pref.dpo(beta=0.5, loss_type=("sigmoid", "sft"))(out(), halves_traj())
  np.testing.assert_allclose(m1["loss/sft"], np_trl_dpo_losses("sft", 0.5)[0], rtol=1e-5)
