"""Tests for jaxsi.transforms.token_reward_regularization (T-REG, arXiv:2412.02685)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import preference as pref
from jaxsi.transforms import token_reward_regularization as treg_lib
from jaxsi.transforms.base import ModelOutputs

# One pair: row 0 chosen, row 1 rejected; completion tokens at columns 1, 2.
MASK = np.array([[False, True, True], [False, True, True]])
LP = np.array([[0.0, -1.0, -2.0], [0.0, -2.0, -1.0]], np.float32)
REF = np.array([[0.0, -1.5, -2.5], [0.0, -1.0, -1.0]], np.float32)
# h = LP − REF on the completion: chosen [0.5, 0.5] (ρ_c = 1), rejected [−1, 0] (ρ_r = −1).
BETTER = np.array([[0.0, -1.0, -2.0], [0.0, -3.0, -1.0]], np.float32)
WORSE = np.array([[0.0, -2.0, -1.0], [0.0, -1.0, -1.0]], np.float32)
# d = BETTER − WORSE: chosen [1, −1], rejected [−2, 0].


def traj(better=BETTER, worse=WORSE, weights=None, drop=()):
  pair_ids, is_chosen = pref.halves_pairing(1)
  ex = {"is_chosen": is_chosen}
  if better is not None:
    ex["better_logprobs"] = jnp.asarray(better)
  if worse is not None:
    ex["worse_logprobs"] = jnp.asarray(worse)
  for k in drop:
    ex.pop(k)
  return Trajectory.create(np.zeros((2, 3), np.int32), loss_mask=MASK, pair_ids=pair_ids,
                           weights=weights, extras=ex, ref_logprobs=jnp.asarray(REF))


def outputs(lp=LP):
  return ModelOutputs(logprobs=jnp.asarray(lp, jnp.float32))


def test_contrastive_token_rewards_hand_numbers():
  # sigmoid: r = 2σ(d) − 1 = tanh(d/2): d = 1 → 0.4621172, −1 → −0.4621172,
  # −2 → −0.7615942, 0 → 0; masked-out column 0 → 0.
  r = treg_lib.contrastive_token_rewards(BETTER, WORSE, MASK)
  np.testing.assert_allclose(r, [[0.0, 0.4621172, -0.4621172], [0.0, -0.7615942, 0.0]],
                             atol=1e-6)
  r = treg_lib.contrastive_token_rewards(BETTER, WORSE, MASK, normalize="none")
  np.testing.assert_allclose(r, [[0.0, 1.0, -1.0], [0.0, -2.0, 0.0]], atol=1e-6)
  with pytest.raises(ValueError, match="normalize"):
    treg_lib.contrastive_token_rewards(BETTER, WORSE, MASK, normalize="softmax")


def test_treg_hand_numbers_none_normalisation():
  # β = 0.5. DPO: βΔ = 0.5·(1 − (−1)) = 1 → −log σ(1) = 0.3132617.
  # Chosen: Σ r h = 1·0.5 + (−1)·0.5 = 0 → ℓ_reg = log 2 = 0.6931472.
  # Rejected: Σ r h = (−2)(−1) + 0·0 = 2 → β·2 = 1 → ℓ_reg = 0.3132617.
  # w = σ(−βΔ) = σ(−1) = 0.2689414; α = 2:
  # L = 0.3132617 + 2·0.2689414·(0.6931472 + 0.3132617) = 0.8545918.
  term = treg_lib.treg(beta=0.5, alpha=2.0, normalize="none")
  loss, m = term(outputs(), traj())
  np.testing.assert_allclose(loss, 0.8545918, atol=1e-5)
  np.testing.assert_allclose(m["loss/sigmoid"], 0.3132617, atol=1e-5)
  np.testing.assert_allclose(m["treg/reg"], 1.0064089, atol=1e-5)
  np.testing.assert_allclose(m["treg/seq_weight"], 0.2689414, atol=1e-6)
  # Token rewards: chosen mean (1 − 1)/2 = 0; rejected (−2 + 0)/2 = −1.
  np.testing.assert_allclose(m["treg/token_reward_chosen"], 0.0, atol=1e-6)
  np.testing.assert_allclose(m["treg/token_reward_rejected"], -1.0, atol=1e-6)
  # sign(h) vs sign(r): chosen (+,+) yes, (+,−) no; rejected (−,−) yes, (0,0) yes → 3/4.
  np.testing.assert_allclose(m["treg/sign_agreement"], 0.75, atol=1e-6)


def test_treg_hand_numbers_sigmoid_and_no_weighting():
  # sigmoid rewards: chosen Σ r h = 0.4621·0.5 − 0.4621·0.5 = 0 → log 2;
  # rejected Σ r h = (−0.7615942)(−1) = 0.7615942 → β·= 0.3807971 →
  # ℓ_reg = log(1 + e^−0.3807971) = 0.5207660.
  # With w: 0.3132617 + 2·0.2689414·(0.6931472 + 0.5207660) = 0.9662047.
  # Without (w = 1): 0.3132617 + 2·(1.2139132) = 2.7410880.
  loss, _ = treg_lib.treg(beta=0.5, alpha=2.0)(outputs(), traj())
  np.testing.assert_allclose(loss, 0.9662047, atol=1e-5)
  loss, m = treg_lib.treg(beta=0.5, alpha=2.0, sequence_weighting=False)(outputs(), traj())
  np.testing.assert_allclose(loss, 2.7410880, atol=1e-5)
  np.testing.assert_allclose(m["treg/seq_weight"], 1.0, atol=1e-6)


def test_alpha_zero_is_plain_dpo_and_weights_scale_the_pair():
  for w in (None, np.array([0.5, 1.0], np.float32)):
    t = traj(weights=w)
    loss, _ = treg_lib.treg(beta=0.5, alpha=0.0)(outputs(), t)
    ref, _ = pref.dpo(beta=0.5)(outputs(), t)
    np.testing.assert_allclose(loss, ref, atol=1e-7)
  # Sample weight 0.5 on the chosen row scales the whole pair loss: 0.5·0.8545918.
  loss, _ = treg_lib.treg(beta=0.5, alpha=2.0, normalize="none")(
      outputs(), traj(weights=np.array([0.5, 1.0], np.float32)))
  np.testing.assert_allclose(loss, 0.4272959, atol=1e-5)


def test_gradient_pushes_implicit_rewards_towards_token_rewards():
  # Regulariser only (DPO gradient removed by subtracting the α = 0 loss): on the
  # chosen row, ∂/∂lp_t of ℓ_reg = −β σ(−β Σ r h) r_t, so a descent step raises
  # lp where r_t > 0 (column 1) and lowers it where r_t < 0 (column 2).
  t = traj()

  def reg_only(lp):
    a, _ = treg_lib.treg(beta=0.5, alpha=1.0, normalize="none",
                         sequence_weighting=False)(outputs(lp), t)
    b, _ = treg_lib.treg(beta=0.5, alpha=0.0)(outputs(lp), t)
    return a - b

  g = np.asarray(jax.grad(reg_only)(jnp.asarray(LP)))
  # chosen: Σ r h = 0 → σ(0) = 0.5: g = −0.5·0.5·[1, −1] = [−0.25, 0.25].
  np.testing.assert_allclose(g[0, 1:], [-0.25, 0.25], atol=1e-6)
  # rejected: Σ r h = 2 → σ(−1) = 0.2689414: g = −0.5·0.2689414·[−2, 0] = [0.2689414, 0].
  np.testing.assert_allclose(g[1, 1:], [0.2689414, 0.0], atol=1e-6)
  np.testing.assert_allclose(g[:, 0], 0.0)


def test_bad_options_and_missing_inputs():
  with pytest.raises(ValueError, match="beta"):
    treg_lib.treg(beta=0.0)
  with pytest.raises(ValueError, match="alpha"):
    treg_lib.treg(alpha=-1.0)
  with pytest.raises(ValueError, match="normalize"):
    treg_lib.treg(normalize="l1")
  with pytest.raises(ValueError, match="worse_logprobs"):
    treg_lib.treg()(outputs(), traj(drop=("worse_logprobs",)))
