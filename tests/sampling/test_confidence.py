"""Confidence scores from a role's forward pass (self-certainty, likelihood,
entropy), the device reward stage and the best-of-N selector."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.rewards import stages
from jaxsi.sampling import confidence
from jaxsi.trajectory import Trajectory
from tests.methods import rl_fixtures as fx

B, T, P = 3, 7, 3


def _traj():
  tok, model, params, _, _ = fx.setup()
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, tok.vocab_size, size=(B, T)).astype(np.int32)
  input_mask = np.ones((B, T), bool)
  input_mask[1, :1] = False          # a left-padded prompt
  tokens[1, 0] = tok.pad_id
  loss_mask = np.zeros((B, T), bool)
  loss_mask[:, P:] = True
  loss_mask[2, 5:] = False           # a shorter completion
  traj = Trajectory.create(tokens, input_mask=input_mask, loss_mask=loss_mask,
                           group_ids=[0, 0, 2])
  return model, params, jax.tree.map(np.asarray, traj)


def _reference(model, params, traj, temperature):
  out = logprobs_lib.score_fn(model, temperature=temperature, with_entropy=True,
                              with_logits=True)(params, traj)
  z = np.asarray(out.logits, np.float64)
  lse = np.log(np.exp(z).sum(-1))
  sc = -math.log(z.shape[-1]) - (z.mean(-1) - lse)
  valid = np.asarray(logprobs_lib.prediction_mask(traj.input_mask))
  return np.asarray(out.logprobs), np.asarray(out.entropy), np.where(valid, sc, 0.0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_statistics_match_full_logits(temperature):
  model, params, traj = _traj()
  lp, ent, sc = confidence.token_statistics(
      model, params, traj.tokens, traj.positions, traj.input_mask,
      temperature=temperature, chunk_size=2)      # several chunks + padding
  rlp, rent, rsc = _reference(model, params, traj, temperature)
  np.testing.assert_allclose(lp, rlp, atol=2e-5)
  np.testing.assert_allclose(ent, rent, atol=2e-5)
  np.testing.assert_allclose(sc, rsc, atol=2e-5)
  assert np.all(np.asarray(sc) >= -1e-6)          # a KL divergence


def test_sequence_scores_and_padding_to_a_bucket():
  model, params, traj = _traj()
  rlp, rent, rsc = _reference(model, params, traj, 1.0)
  m = np.asarray(traj.loss_mask)
  n = m.sum(1)
  got = {k: confidence.sequence_confidence(model, params, traj, kind=k)
         for k in confidence.KINDS}
  np.testing.assert_allclose(got["self_certainty"], (rsc * m).sum(1) / n, atol=2e-5)
  np.testing.assert_allclose(got["logprob"], (rlp * m).sum(1), atol=2e-5)
  np.testing.assert_allclose(got["neg_entropy"], -(rent * m).sum(1), atol=2e-5)
  norm = confidence.sequence_confidence(model, params, traj, kind="logprob",
                                        length_normalize=True)
  np.testing.assert_allclose(norm, (rlp * m).sum(1) / n, atol=2e-5)
  # B = 3 runs padded to 4 rows; one row alone gives the same value.
  one = jax.tree.map(lambda x: x[2:3], traj)
  np.testing.assert_allclose(
      confidence.sequence_confidence(model, params, one, kind="logprob"),
      got["logprob"][2:3], atol=2e-5)
  with pytest.raises(ValueError, match="kind"):
    confidence.sequence_confidence(model, params, traj, kind="nope")


class _Ctx:
  def __init__(self, roles):
    self.roles = roles

  def role_model_params(self, role):
    if role not in self.roles:
      raise spec.ConfigurationError(f"no role {role!r}")
    return self.roles[role]


def test_reward_stage_and_best_of_n_selector():
  model, params, traj = _traj()
  stage = confidence.ConfidenceReward(role="policy", kind="self_certainty",
                                      name="sc")
  assert stages.as_stages([stage]) == (stage,) and stage.names == ("sc",)
  assert stage.roles == ("policy",)
  ref = confidence.ConfidenceReward(role=spec.REFERENCE, kind="logprob")
  assert ref.roles == ()                   # declared by the method instead
  inputs = stages.RewardInputs(tasks=[None] * B, completions=[""] * B,
                               group_ids=np.asarray([0, 0, 2]),
                               prompt_ids=np.zeros(B, int), rows=np.arange(B),
                               traj=traj)
  r, _ = stage(_Ctx({"policy": (model, params)}), inputs)
  want = confidence.sequence_confidence(model, params, traj, kind="self_certainty")
  np.testing.assert_allclose(r[:, 0], want, rtol=1e-6)
  with pytest.raises(spec.ConfigurationError, match="reference"):
    ref(_Ctx({"policy": (model, params)}), inputs)
  rows, scores = confidence.select_best_of_n(model, params, traj)
  np.testing.assert_allclose(scores, want, rtol=1e-6)
  assert rows == {0: int(np.argmax(want[:2])), 2: 2}
  with pytest.raises(ValueError, match="kind"):
    confidence.ConfidenceReward(kind="bad")
