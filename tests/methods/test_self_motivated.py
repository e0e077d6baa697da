"""Self-motivated Learning (jaxsi.methods.self_motivated): the composition.

The reward-model stage under the loop is tested in
tests/rewards/test_reward_model_loop.py, PPO in tests/methods; the whole
recipe (RM training before RL, then PPO on its scores) runs in
tests/test_recipes.py (self_motivated.gin) and tests/training/test_reward_model_role.py.
"""

import pytest

from jaxsi import spec as spec_lib
from jaxsi.methods import self_motivated as sm
from jaxsi.rewards import reward_fn
from jaxsi.sampling import label_free as monitors
from jaxsi.training import reward_model as rm


def test_ppo_with_kl_on_the_reward_model_role():
  m = sm.self_motivated(reward_fns=(rm.RewardModelScorer(),))
  assert m.name == "self_motivated" and m.value_head
  assert m.role(spec_lib.REWARD_MODEL).source == spec_lib.FROM_RUN
  assert m.role(spec_lib.REFERENCE).source == spec_lib.FROM_INITIAL   # β = 0.05
  assert isinstance(m.rollout, monitors.LabelMonitor) and not m.rollout.vote
  assert [type(r).__name__ for r in m.rewards] == ["RewardModelScorer"]
  assert (m.epochs, m.minibatches) == (2, 2)
  assert not sm.self_motivated(reward_fns=(rm.RewardModelScorer(),),
                               kl_coef=0.0).needs(spec_lib.REFERENCE)
  # Another role name: the stage must read it.
  m = sm.self_motivated(reward_fns=(rm.RewardModelScorer(role="orm"),), role="orm")
  assert m.needs("orm") and not m.needs(spec_lib.REWARD_MODEL)


def test_refuses_a_reward_without_the_reward_model():
  with pytest.raises(ValueError, match="self_motivated.reward_fns: give a reward stage"):
    sm.self_motivated()
  with pytest.raises(ValueError, match="reads role 'reward_model'"):
    sm.self_motivated(reward_fns=(reward_fn.correctness_reward,))
  with pytest.raises(ValueError, match="reads role 'orm'"):
    sm.self_motivated(reward_fns=(rm.RewardModelScorer(),), role="orm")
