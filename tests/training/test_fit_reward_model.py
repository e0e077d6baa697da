"""Reward-model objectives: the Bradley–Terry term and fit.reward_model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import ModelOutputs, Trajectory
from jaxsi.training import fit
from jaxsi.training import steps as steps_lib
from jaxsi.transforms import preference
from jaxsi.transforms import value
from tests.methods import rl_fixtures as fx

FAST = steps_lib.FAST_COMPILE


def nls(x):
  """−log σ(x) in float64."""
  return float(np.log1p(np.exp(-x)))


def _pairs_traj(rc, rr, *, valid=None, weights=None, extras=None, no_loss=()):
  """P pairs in halves layout; row b's score sits at its last loss token (2)."""
  rc, rr = np.asarray(rc, np.float32), np.asarray(rr, np.float32)
  p = len(rc)
  b, t = 2 * p, 4
  loss_mask = np.zeros((b, t), bool)
  loss_mask[:, 1:3] = True
  for row in no_loss:
    loss_mask[row] = False
  values = np.full((b, t), 99.0, np.float32)        # only column 2 is read
  values[:, 2] = np.concatenate([rc, rr])
  pair_ids, is_chosen = preference.halves_pairing(p)
  traj = Trajectory.create(np.ones((b, t), np.int32), loss_mask=loss_mask,
                           pair_ids=pair_ids, valid=valid, weights=weights,
                           extras={preference.IS_CHOSEN_KEY: is_chosen, **(extras or {})})
  return ModelOutputs(logprobs=jnp.zeros((b, t)), values=jnp.asarray(values)), traj


def test_sequence_scores_reads_the_last_loss_token():
  values = np.arange(12, dtype=np.float32).reshape(3, 4)
  lm = np.asarray([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)
  traj = Trajectory.create(np.ones((3, 4), np.int32), loss_mask=lm)
  v, has = value.sequence_scores(jnp.asarray(values), traj)
  np.testing.assert_allclose(np.asarray(v), [2.0, 7.0, 11.0])
  np.testing.assert_array_equal(np.asarray(has), [True, True, False])


def test_bradley_terry_hand_numbers():
  rc, rr = [2.0, 0.0, 1.0], [1.0, 0.0, 3.0]        # diffs 1, 0 (tie), -2
  out, traj = _pairs_traj(rc, rr)
  loss, m = value.bradley_terry()(out, traj)
  assert float(loss) == pytest.approx(np.mean([nls(1), np.log(2), nls(-2)]), rel=1e-6)
  assert float(m["rm/accuracy"]) == pytest.approx(0.5)   # win, tie (½), loss
  assert float(m["rm/margin"]) == pytest.approx(-1 / 3, rel=1e-6)
  assert float(m["rm/chosen"]) == pytest.approx(1.0)
  assert float(m["rm/rejected"]) == pytest.approx(4 / 3, rel=1e-6)
  assert float(m["rm/num_pairs"]) == 3
  assert float(m["rm/center"]) == pytest.approx((9 + 0 + 16) / 3, rel=1e-6)
  # A tie alone costs log 2.
  out, traj = _pairs_traj([0.7], [0.7])
  assert float(value.bradley_terry()(out, traj)[0]) == pytest.approx(np.log(2), rel=1e-6)


def test_bradley_terry_margin_and_centering():
  rc, rr = [2.0, 0.0, 1.0], [1.0, 0.0, 3.0]
  out, traj = _pairs_traj(rc, rr)
  loss, _ = value.bradley_terry(margin=0.5)(out, traj)
  assert float(loss) == pytest.approx(np.mean([nls(0.5), nls(-0.5), nls(-2.5)]), rel=1e-6)
  # Per-pair margins (extras, on the chosen rows) add to the constant one.
  per = np.asarray([1.0, -1.0, 0.0, 0.0, 0.0, 0.0], np.float32)
  out, traj = _pairs_traj(rc, rr, extras={"margin": per})
  loss, _ = value.bradley_terry(margin=0.5)(out, traj)
  assert float(loss) == pytest.approx(np.mean([nls(-0.5), nls(0.5), nls(-2.5)]), rel=1e-6)
  # Centering: + λ·mean((r⁺ + r⁻)²).
  out, traj = _pairs_traj(rc, rr)
  loss, _ = value.bradley_terry(center_rewards_coefficient=0.1)(out, traj)
  base = np.mean([nls(1), np.log(2), nls(-2)])
  assert float(loss) == pytest.approx(base + 0.1 * (9 + 0 + 16) / 3, rel=1e-6)
  # λ = 0 is the plain loss.
  loss0, _ = value.bradley_terry(center_rewards_coefficient=0.0)(out, traj)
  assert float(loss0) == pytest.approx(base, rel=1e-6)


def test_bradley_terry_invalid_rows_weights_and_denominator():
  rc, rr = [2.0, 0.0, 1.0], [1.0, 0.0, 3.0]
  # Pair 1's rejected row (4) invalid, pair 2's chosen row (2) has no loss
  # token: only pair 0 counts.
  valid = np.ones(6, bool)
  valid[4] = False
  out, traj = _pairs_traj(rc, rr, valid=valid, no_loss=(2,))
  loss, m = value.bradley_terry()(out, traj)
  assert float(loss) == pytest.approx(nls(1), rel=1e-6)
  assert float(m["rm/num_pairs"]) == 1
  # Sample weights are the chosen row's; the denominator is the pair count
  # (or num_pairs).
  w = np.asarray([2.0, 1.0, 0.5, 9.0, 9.0, 9.0], np.float32)
  out, traj = _pairs_traj(rc, rr, weights=w)
  loss, _ = value.bradley_terry()(out, traj)
  assert float(loss) == pytest.approx(
      (2 * nls(1) + np.log(2) + 0.5 * nls(-2)) / 3, rel=1e-6)
  loss, _ = value.bradley_terry(num_pairs=6)(out, traj)
  assert float(loss) == pytest.approx(
      (2 * nls(1) + np.log(2) + 0.5 * nls(-2)) / 6, rel=1e-6)
  # No counted pair: loss 0, never NaN.
  out, traj = _pairs_traj([1.0], [0.0], valid=np.asarray([False, True]))
  loss, m = value.bradley_terry()(out, traj)
  assert float(loss) == 0.0 and float(m["rm/num_pairs"]) == 0


def test_bradley_terry_refuses_bad_settings_and_inputs():
  with pytest.raises(ValueError, match="margin"):
    value.bradley_terry(margin=float("nan"))
  with pytest.raises(ValueError, match="center_rewards_coefficient"):
    value.bradley_terry(center_rewards_coefficient=-0.1)
  out, traj = _pairs_traj([1.0], [0.0])
  with pytest.raises(ValueError, match="outputs.values"):
    value.bradley_terry()(ModelOutputs(logprobs=out.logprobs), traj)
  with pytest.raises(ValueError, match="is_chosen"):
    value.bradley_terry()(out, traj.replace(extras={}))
  with pytest.raises(ValueError, match="kind must be one of"):
    fit.reward_model("listwise")
  with pytest.raises(ValueError, match="unknown settings"):
    fit.reward_model("bradley_terry", beta=0.1)
  with pytest.raises(ValueError, match="takes no settings"):
    fit.reward_model("pointwise", margin=1.0)
  assert fit.reward_model("bradley_terry", margin=1.0).key == fit.reward_model(
      "bradley_terry", margin=1.0).key
  assert fit.reward_model("pointwise").key == fit.score_regression().key


def _bt_pairs(tasks):
  prompts = [t.prompt for t in tasks]
  chosen = [t.target for t in tasks]
  rejected = [str((int(c[0]) + 1) % 10) + c[1:] for c in chosen]
  return prompts, chosen, rejected


def test_fit_bradley_terry_first_loss_is_the_hand_formula():
  tok, model, params, tasks, _ = fx.setup()
  prompts, chosen, rejected = _bt_pairs(tasks[:4])
  margins = [0.0, 0.5, 1.0, -0.5]
  data = fit.preference_data(tok, prompts, chosen, rejected, max_len=12,
                             margins=margins)
  traj = data.batch(np.arange(4))
  np.testing.assert_allclose(np.asarray(traj.extras["margin"]), margins * 2)
  vals = np.asarray(jax.jit(steps_lib.model_outputs_fn(model, with_values=True))(
      params, traj).values, np.float64)
  lm = np.asarray(traj.loss_mask)
  last = [np.flatnonzero(row)[-1] for row in lm]
  r = vals[np.arange(8), last]
  diff = r[:4] - r[4:]
  lam = 0.25
  hand = np.mean([nls(d - m) for d, m in zip(diff, margins)]) + lam * np.mean(
      (r[:4] + r[4:]) ** 2)
  res = fit.fit(model=model, params=params,
                objective=fit.reward_model("bradley_terry",
                                           center_rewards_coefficient=lam),
                data=data, optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=1,
                batch_size=8, seed=0, compiler_options=FAST)
  assert float(res.history[0]["loss"]) == pytest.approx(hand, rel=1e-5)
  assert float(res.history[0]["rm/num_pairs"]) == 4


def test_pair_margins_are_checked():
  tok, _, _, tasks, _ = fx.setup()
  prompts, chosen, rejected = _bt_pairs(tasks[:3])
  with pytest.raises(ValueError, match="margins must be 3 finite"):
    fit.preference_data(tok, prompts, chosen, rejected, max_len=12, margins=[1.0])
  with pytest.raises(ValueError, match="margins must be 3 finite"):
    fit.preference_data(tok, prompts, chosen, rejected, max_len=12,
                        margins=[1.0, float("inf"), 0.0])
  data = fit.preference_data(tok, prompts, chosen, rejected, max_len=12)
  arrays = dict(data.arrays, margin=np.zeros((3, 2), np.float32))
  with pytest.raises(ValueError, match="one value per item"):
    fit.FitData("pairs", arrays)
  assert "margin" not in data.batch(np.arange(3)).extras
