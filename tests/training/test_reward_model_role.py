"""training/reward_model_role.py: the RM trained on the warm start's ranked samples."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxsi.data.registry import Task
from jaxsi.training import arguments
from jaxsi.training import reward_model_role as rmr
from jaxsi.training import rl_run
from jaxsi.methods.grpo import grpo
from jaxsi.spec import RolloutSpec
from tests.methods import rl_fixtures as fx


@dataclasses.dataclass(frozen=True)
class _DigitTask(Task):
  def verify(self, completion: str) -> float:   # ≈ ½ at random init: pairs exist
    return float(completion[:1].isdigit())


def test_build_trains_ranks_saves_and_restores(tmp_path):
  tok, model, params, tasks, _ = fx.setup()
  tasks = [_DigitTask(**dataclasses.asdict(t)) for t in tasks[:6]]
  spec = rmr.RewardModelSpec(kind="bradley_terry", problems=4, n=4, steps=2,
                             batch_size=4, max_pairs_per_problem=2)
  d = str(tmp_path / "rm")
  m1, p1, info = rmr.build(spec, model=model, params=params, tokenizer=tok,
                           tasks=tasks, max_new_tokens=fx.MAX_NEW, seed=0, directory=d)
  # 4 problems (of 6) × 4 samples; at most 2 correct ≻ wrong pairs per problem.
  assert info["samples"] == 16 and not info["restored"]
  assert 1 <= info["train_items"] <= 8 and 0 < info["sample_accuracy"] < 1
  assert np.isfinite(info["final_loss"])
  m2, p2, info2 = rmr.build(spec, model=model, params=params, tokenizer=tok,
                            tasks=tasks, max_new_tokens=fx.MAX_NEW, seed=0, directory=d)
  assert info2["restored"] and info2["train_items"] == info["train_items"]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rep = rmr.heldout_report(rm_model=m2, rm_params=p2, model=model, params=params,
                           tokenizer=tok, tasks=tasks, n=4, max_new_tokens=fx.MAX_NEW,
                           temperature=1.0, seed=0)
  assert 0 <= rep["verifier_accuracy"] <= 1 and np.isfinite(rep["rm_mean"])
  assert 0 <= rep["rm_pair_accuracy"] <= 1


def test_spec_errors():
  with pytest.raises(ValueError, match="reward_model.kind must be one of"):
    rmr.RewardModelSpec(kind="ranking")
  with pytest.raises(ValueError, match="reward_model.n must be >= 2"):
    rmr.RewardModelSpec(n=1)
  rmr.RewardModelSpec(kind="pointwise", n=1)
  with pytest.raises(ValueError, match="reward_model.steps must be an integer"):
    rmr.RewardModelSpec(steps=0)
  with pytest.raises(ValueError, match="learning_rate must be > 0"):
    rmr.RewardModelSpec(learning_rate=0.0)


def test_rl_run_refuses_a_reward_model_the_method_does_not_read(tmp_path):
  with pytest.raises(arguments.ArgumentError, match="reads no 'reward_model' role"):
    rl_run.run(workdir=str(tmp_path), method=grpo(rollout=RolloutSpec(n=2)),
               reward_model=rmr.RewardModelSpec(), n_train=4, n_test=1)
