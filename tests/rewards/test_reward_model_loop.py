"""The reward-model stage under the loop: a Method trains on RM scores.

GRPO whose only reward is ``RewardModelScorer`` reading a separate
``'reward_model'`` role (its own model and parameters): the rewards of the
batch are the RM's scores of the sampled rows.
"""

import jax
import numpy as np

from jaxsi import methods
from jaxsi.training import reward_model as rm
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx


def test_rm_scores_are_the_rewards_of_the_batch():
  tok, model, params, tasks, opt = fx.setup()
  bare = {k: v for k, v in params.items() if k != "value_head"}
  rmodel, rparams = rm.init_from(model, bare, jax.random.key(5))
  m = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                   reward_fns=(rm.RewardModelScorer(),), kl_coef=0.0, name="rm_grpo")
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok, tasks=tasks,
                 optimizer=opt, prompts_per_step=fx.PROMPTS,
                 roles={rm.ROLE: (rmodel, rparams)},
                 compiler_options=loop.FAST_COMPILE)
  metrics = lp.step()
  batch = lp.last_batch
  rows = np.flatnonzero(batch.traj.valid)
  traj = jax.tree.map(lambda x: np.asarray(x)[rows], batch.traj)
  want = rm.score(rmodel, rparams, traj)
  np.testing.assert_allclose(batch.rewards[rows, 0], want, rtol=1e-5, atol=1e-6)
  assert np.isfinite(want).all() and np.std(want) > 0
  assert lp.reward_names == ("reward_model",) and "reward/reward_model/mean" in metrics
