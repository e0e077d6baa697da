"""Per-turn transforms (jaxsi.transforms.turns) on a hand-built 2-turn batch.

Rows (turn ids over 8 columns; loss tokens are the positive ones)::

  row 0  0 0 1 1 -1 2 2 0      r = (0, 1)    group 0
  row 1  0 0 1 1  1 0 0 0      r = (1, NaN)  group 0  (stopped after turn 1)
  row 2  0 1 1 -1 -1 2 0 0     r = (1, 1)    group 2
  row 3  0 0 1 -1 2 2 2 0      r = (0, 0)    group 2
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import rewards as rewards_lib
from jaxsi.transforms import turns
from jaxsi.transforms.base import Context, ModelOutputs

NAN = np.nan
IDS = np.array([[0, 0, 1, 1, -1, 2, 2, 0],
                [0, 0, 1, 1, 1, 0, 0, 0],
                [0, 1, 1, -1, -1, 2, 0, 0],
                [0, 0, 1, -1, 2, 2, 2, 0]], np.int32)
REWARDS = np.array([[0, 1], [1, NAN], [1, 1], [0, 0]], np.float32)


def make_traj(rewards=REWARDS, extras=None):
  real = np.ones_like(IDS, bool)
  real[1, 5:] = False
  real[2, 6:] = False
  real[0, 7] = real[3, 7] = False
  return Trajectory.create(
      np.where(real, 5, 0), input_mask=real, loss_mask=IDS > 0,
      turn_ids=IDS, group_ids=np.array([0, 0, 2, 2]),
      rewards=jnp.asarray(rewards), extras=extras or {})


def apply(t, traj):
  out, _, metrics = t.update(traj, t.init(), Context())
  return out, metrics


def test_score_bonus_keeps_turn_columns():
  out, _ = apply(turns.score_bonus(alpha=2.0), make_traj())
  # r2 + 2 (r2 - r1): 1 + 2 = 3; NaN; 1; 0.
  np.testing.assert_allclose(np.asarray(out.rewards),
                             [[0, 3], [1, NAN], [1, 1], [0, 0]])


def test_score_bonus_kept_out_of_the_first_attempt():
  traj, _ = apply(turns.score_bonus(alpha=2.0, bonus_to_first=False),
                  make_traj())
  # Row 0: b = 2 -> (0 - 2, 1 + 2); row 1: no second turn -> r1 kept.
  np.testing.assert_allclose(np.asarray(traj.rewards),
                             [[-2, 3], [1, NAN], [1, 1], [0, 0]])
  out, _ = apply(turns.turn_advantages(gamma=1.0, baseline="none"), traj)
  # G1 = r1 + r2 = (1, 1, 2, 0): the bonus no longer reaches attempt 1.
  np.testing.assert_allclose(np.asarray(out.advantages)[:, 2], [1, 1, 2, 0])


def test_turn_advantages_per_turn_returns_and_group_baseline():
  traj, _ = apply(turns.score_bonus(alpha=2.0), make_traj())
  out, m = apply(turns.turn_advantages(gamma=1.0, baseline="group"), traj)
  # Returns: G1 = r1 + r̂2 = (3, 1, 2, 0); G2 = r̂2 = (3, -, 1, 0).
  # Turn 1: group 0 mean 2 -> (+1, -1); group 2 mean 1 -> (+1, -1).
  # Turn 2: group 0 has one member (row 0) -> 0; group 2 mean 0.5 -> ±0.5.
  want = np.array([[0, 0, 1, 1, 0, 0, 0, 0],
                   [0, 0, -1, -1, -1, 0, 0, 0],
                   [0, 1, 1, 0, 0, .5, 0, 0],
                   [0, 0, -1, 0, -.5, -.5, -.5, 0]], np.float32)
  np.testing.assert_allclose(np.asarray(out.advantages), want, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.returns)[0], [0, 0, 3, 3, 0, 3, 3, 0])
  np.testing.assert_allclose(float(m["turns/return_mean_t1"]), 1.5)
  # gamma = 0.5, no baseline: G1 = r1 + 0.5 r̂2 = (1.5, 1, 1.5, 0).
  out, _ = apply(turns.turn_advantages(gamma=0.5, baseline="none"), traj)
  adv = np.asarray(out.advantages)
  np.testing.assert_allclose(adv[:, 2], [1.5, 1, 1.5, 0])
  np.testing.assert_allclose(adv[0, 5:7], [3, 3])
  # scale='group': turn-1 advantages divided by the unbiased group std
  # (sqrt(2) for both groups) + eps.
  out, _ = apply(turns.turn_advantages(baseline="group", scale="group"), traj)
  np.testing.assert_allclose(np.asarray(out.advantages)[:, 2],
                             np.array([1, -1, 1, -1]) / (np.sqrt(2) + 1e-4),
                             rtol=1e-6)


def test_turn_discount_and_repeat_penalty():
  out, m = apply(turns.turn_discount(gamma=0.5), make_traj())
  # 0 + .5·1; 1 (turn 2 not taken); 1 + .5; 0.
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], [.5, 1, 1.5, 0])
  np.testing.assert_allclose(float(m["reward/mean"]), 0.75)
  rep = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], np.float32)
  traj = make_traj(extras={"turn_repeats": jnp.asarray(rep)})
  out, m = apply(turns.repeat_penalty(penalty=0.25), traj)
  np.testing.assert_allclose(np.asarray(out.rewards),
                             [[0, .75], [1, NAN], [1, .75], [0, 0]])
  np.testing.assert_allclose(float(m["turns/repeat_frac"]), 2 / 7)
  # Penalty then discount: .5·.75 = .375; 1; 1 + .375; 0.
  out, _ = apply(turns.turn_discount(gamma=0.5), out)
  np.testing.assert_allclose(np.asarray(out.rewards)[:, 0], [.375, 1, 1.375, 0])
  # All-NaN row stays unscorable.
  out, _ = apply(turns.turn_discount(gamma=0.5),
                 make_traj(rewards=np.array([[NAN, NAN], [1, NAN], [0, 0],
                                             [0, 1]], np.float32)))
  assert np.isnan(np.asarray(out.rewards)[0, 0])


def test_pooled_turn_advantages_refinements_join_group():
  out, m = apply(turns.pooled_turn_advantages(), make_traj())
  # Group 0 members: r(0,1)=0, r(0,2)=1, r(1,1)=1: mean 2/3, std sqrt(1/3).
  # Group 2 members: 1, 1, 0, 0: mean 1/2, std sqrt(1/3).
  s = np.sqrt(1 / 3) + 1e-4
  adv = np.asarray(out.advantages)
  np.testing.assert_allclose(adv[0, [2, 3, 5, 6]],
                             [-2 / 3 / s, -2 / 3 / s, 1 / 3 / s, 1 / 3 / s],
                             rtol=1e-5)
  np.testing.assert_allclose(adv[1, 2:5], [1 / 3 / s] * 3, rtol=1e-5)
  np.testing.assert_allclose(adv[2, [1, 2, 5]], [.5 / s] * 3, rtol=1e-5)
  np.testing.assert_allclose(adv[3, [2, 4, 5, 6]], [-.5 / s] * 4, rtol=1e-5)
  assert (adv[IDS <= 0] == 0).all()
  np.testing.assert_allclose(float(m["turns/members_per_group"]), 3.5)


def test_masks_require_reward_and_restrict_loss():
  out, m = apply(turns.require_reward(column=1), make_traj())
  np.testing.assert_array_equal(np.asarray(out.valid), [True, False, True, True])
  np.testing.assert_allclose(float(m["turns/frac_kept"]), 0.75)
  out, _ = apply(turns.restrict_loss_to_turns(turns=(2,)), make_traj())
  np.testing.assert_array_equal(np.asarray(out.loss_mask), IDS == 2)
  traj = make_traj()
  np.testing.assert_array_equal(np.asarray(turns.taken_turns(traj, 2)),
                                [[1, 1], [1, 0], [1, 1], [1, 1]])


def test_stage1_rewards_via_shape_turn_rewards():
  t = rewards_lib.shape_turn_rewards(lambda r1, r2: (jnp.zeros_like(r1), r2))
  out, _ = apply(t, make_traj())
  out, _ = apply(turns.turn_advantages(baseline="none"), out)
  # Turn 1 and turn 2 tokens both get r2 (turn 1 has no own reward).
  np.testing.assert_allclose(np.asarray(out.advantages)[:, 2], [1, 0, 1, 0])


def test_turn_kl_penalty_weights_turns():
  traj = make_traj().replace(
      ref_logprobs=jnp.asarray(np.where(IDS == 1, -1.5, -0.5), jnp.float32))
  lp = jnp.full(IDS.shape, -1.0, jnp.float32)
  term = turns.turn_kl_penalty(weights=(2.0, 0.5), estimator="k1",
                               agg="token-mean")
  loss, m = term(ModelOutputs(logprobs=lp), traj)
  # k1 = +0.5 on 8 turn-1 tokens (weight 2), -0.5 on 6 turn-2 tokens (0.5).
  np.testing.assert_allclose(float(loss), (8 * 1.0 + 6 * -0.25) / 14, rtol=1e-6)
  np.testing.assert_allclose(float(m["kl_t1"]), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(m["kl_t2"]), -0.5, rtol=1e-6)
  # jit == no jit.
  jl, _ = jax.jit(term)(ModelOutputs(logprobs=lp), traj)
  np.testing.assert_allclose(float(jl), float(loss), rtol=1e-6)
  with pytest.raises(ValueError, match="ref_logprobs"):
    term(ModelOutputs(logprobs=lp), make_traj())


def test_errors():
  with pytest.raises(ValueError, match="baseline"):
    turns.turn_advantages(baseline="mean")
  with pytest.raises(ValueError, match="turn_repeats"):
    apply(turns.repeat_penalty(penalty=1.0), make_traj())


def test_turn_as_response_relays_the_second_turn():
  tokens = np.arange(32, dtype=np.int32).reshape(4, 8) + 1
  base = make_traj()
  # Row 2's prompt is left-padded (column 0 is padding): dropped.
  real = np.asarray(base.input_mask).copy()
  real[2, 0] = False
  base = base.replace(input_mask=jnp.asarray(real))
  adv = np.where(IDS > 0, IDS * 10.0 + np.arange(4)[:, None], 0.0)
  traj = base.replace(tokens=jnp.asarray(tokens),
                      advantages=jnp.asarray(adv, jnp.float32),
                      behaviour_logprobs=jnp.full(IDS.shape, -0.5),
                      extras={"tok_extra": jnp.asarray(tokens * 2),
                              "tok3_extra": jnp.asarray(
                                  np.stack([tokens, -tokens], -1)),
                              "tempered_logprobs": jnp.full(IDS.shape, -0.7),
                              "row_extra": jnp.arange(4)})
  out, m = apply(turns.turn_as_response(turn=2), traj)
  assert out.batch_size == 8
  np.testing.assert_array_equal(out.extras["off_policy"], [0] * 4 + [1] * 4)
  # Original rows: turn 2 leaves the loss, nothing else changes.
  np.testing.assert_array_equal(np.asarray(out.loss_mask[:4]), IDS == 1)
  np.testing.assert_array_equal(out.tokens[:4], tokens)
  # New rows: prompt, then the turn-2 tokens, compacted to the left.
  real = np.asarray(base.input_mask)
  for b in range(4):
    keep = real[b] & ((IDS[b] == 0) | (IDS[b] == 2))
    n = int(keep.sum())
    row = out.tokens[4 + b]
    np.testing.assert_array_equal(row[:n], tokens[b][keep])
    np.testing.assert_array_equal(out.extras["tok_extra"][4 + b][:n],
                                  2 * tokens[b][keep])
    np.testing.assert_array_equal(out.extras["tok3_extra"][4 + b][:n, 1],
                                  -tokens[b][keep])
    np.testing.assert_array_equal(out.input_mask[4 + b], np.arange(8) < n)
    np.testing.assert_array_equal(out.positions[4 + b][:n], np.arange(n))
    lm = np.asarray(out.loss_mask[4 + b])
    np.testing.assert_array_equal(lm[:n], (IDS[b] == 2)[keep])
    assert not lm[n:].any()
    np.testing.assert_array_equal(out.turn_ids[4 + b], lm.astype(np.int32))
    np.testing.assert_allclose(np.asarray(out.advantages[4 + b])[lm],
                               20.0 + b)
  # Row 1 stopped after turn 1: its new row is invalid.
  np.testing.assert_array_equal(out.valid, [1, 1, 1, 1, 1, 0, 1, 1])
  np.testing.assert_array_equal(out.group_ids, [0, 0, 2, 2] * 2)
  np.testing.assert_array_equal(out.extras["row_extra"], [0, 1, 2, 3] * 2)
  # New rows: the response's own reward in column 0.
  np.testing.assert_array_equal(np.asarray(out.rewards[4:]),
                                [[1, NAN], [NAN, NAN], [1, NAN], [0, NAN]])
  np.testing.assert_array_equal(np.asarray(out.rewards[:4]), REWARDS)
  # Sampler log-probs of the new rows (critique context) are zeroed.
  assert (np.asarray(out.behaviour_logprobs[:4]) == -0.5).all()
  assert (np.asarray(out.behaviour_logprobs[4:]) == 0).all()
  assert (np.asarray(out.extras["tempered_logprobs"][4:]) == 0).all()
  assert int(m["turns/as_response_rows"]) == 3


def test_turn_as_response_refuses_scored_trajectories():
  traj = make_traj().replace(old_logprobs=jnp.zeros(IDS.shape, jnp.float32))
  with pytest.raises(ValueError, match="before re-scoring"):
    apply(turns.turn_as_response(), traj)
  with pytest.raises(ValueError, match=">= 2"):
    turns.turn_as_response(turn=1)


def test_turn_rewards_at_ends_places_each_turn_reward():
  out, _ = apply(turns.turn_rewards_at_ends(), make_traj())
  want = np.zeros(IDS.shape, np.float32)
  want[0, 6] = 1.0            # row 0: r1 = 0 on col 3, r2 = 1 on col 6
  want[1, 4] = 1.0            # row 1: turn 1 ends at col 4, no turn 2
  want[2, 2] = want[2, 5] = 1.0
  np.testing.assert_array_equal(np.asarray(out.token_rewards), want)
  # Shaped columns travel (score_bonus first), NaN places nothing.
  traj = make_traj().replace(token_rewards=jnp.full(IDS.shape, 0.5))
  shaped, _ = apply(turns.score_bonus(alpha=2.0, bonus_to_first=False), traj)
  out, _ = apply(turns.turn_rewards_at_ends(accumulate=True), shaped)
  got = np.asarray(out.token_rewards) - 0.5
  assert got[0, 3] == pytest.approx(-2.0) and got[0, 6] == pytest.approx(3.0)
  assert got[1, 4] == pytest.approx(1.0) and (got[1, 5:] == 0).all()
