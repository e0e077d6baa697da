"""SPO (jaxsi.methods.spo) runs one loop step; its rewards are recomputed by hand.

* Verifier oracle: the win rates are recomputed from the decoded samples,
  and the step equals GRPO's on the verifier reward (same advantages, same
  updated parameters): the win rate is affine in a 0/1 grade in a group.
* Self-judge: a model with letters in its vocabulary judges every pair in
  both orders; win rates of a group always sum to N/2 (P_ij + P_ji = 1).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxsi import spec as spec_lib
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.data.registry import Task
from jaxsi.methods import spo
from jaxsi.methods.grpo import grpo as grpo_method
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import judging
from jaxsi.rewards import reward_fn
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

SPEC = spec_lib.RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW)


@dataclasses.dataclass(frozen=True)
class _DigitTask(Task):
  """The verifier says: correct iff the completion starts with a digit (≈ ½
  at random init, so groups have both grades)."""

  def verify(self, completion: str) -> float:
    return float(completion[:1].isdigit())


def _digit_tasks(tasks):
  return [_DigitTask(**dataclasses.asdict(t)) for t in tasks]


def _step(method, tasks=None, setup=None):
  tok, model, params, base_tasks, opt = setup or fx.setup()
  trainer = loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                      tasks=tasks or base_tasks, optimizer=opt,
                      prompts_per_step=fx.PROMPTS, seed=0,
                      compiler_options=loop.FAST_COMPILE)
  metrics = trainer.step()
  assert np.isfinite(metrics["loss"])
  return trainer, metrics


def test_spo_verifier_rewards_are_win_rates_and_the_step_is_grpos():
  tasks = _digit_tasks(fx.setup()[3])
  t_spo, _ = _step(spo.spo(rollout=SPEC, kl_coef=0.0), tasks)
  traj = t_spo.last_batch.traj
  texts = [t_spo.tokenizer.decode(t[m].tolist())
           for t, m in zip(traj.tokens, traj.loss_mask)]
  correct = np.asarray([float(c[:1].isdigit()) for c in texts]).reshape(fx.PROMPTS, fx.N)
  # By hand: k correct of N = 4 -> correct (N - k + (k - 1)/2)/3, wrong (N - k - 1)/6.
  want = []
  for row in correct:
    k = row.sum()
    want += [(4 - k + (k - 1) / 2) / 3 if c else (4 - k - 1) / 6 for c in row]
  np.testing.assert_allclose(t_spo.last_batch.rewards[:, 0], want, rtol=1e-6)
  assert 0 < correct.mean() < 1
  t_grpo, _ = _step(grpo_method(rollout=SPEC, kl_coef=0.0,
                              reward_fns=(reward_fn.correctness_reward,)), tasks)
  np.testing.assert_array_equal(t_grpo.last_batch.rewards[:, 0], correct.reshape(-1))
  # Â = (R - mean)/(std + ε): the win rate a + b·R (b = N/(2(N-1)) = 2/3) gives
  # b(R - mean)/(b·std + ε), GRPO's up to ε's relative weight (ε = 1e-4 here:
  # 1e-4 relative at std = ½).
  np.testing.assert_allclose(np.asarray(t_spo.last_traj.advantages),
                             np.asarray(t_grpo.last_traj.advantages), rtol=1e-3,
                             atol=1e-6)
  np.testing.assert_array_equal(np.asarray(t_spo.last_traj.valid),
                                np.asarray(t_grpo.last_traj.valid))
  for a, b in zip(jax.tree.leaves(t_spo.state.params), jax.tree.leaves(t_grpo.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def _letters_setup():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  tasks = tasks_lib.make_tasks("addition", 16, difficulty=1, seed=0)
  return tok, model, params, tasks, fx.setup()[4]


# The current-policy judge ('policy') runs in tests/test_recipes.py (spo_judge.gin).
@pytest.mark.parametrize("judge_role", ["judge"])
def test_spo_self_judge_step(judge_role):
  m = spo.spo(rollout=SPEC, preference="judge", judge_role=judge_role, kl_coef=0.0)
  assert m.name == "spo_judge"
  assert m.needs("judge") == (judge_role == "judge")
  trainer, metrics = _step(m, setup=_letters_setup())
  r = np.asarray(trainer.last_batch.rewards[:, 0]).reshape(fx.PROMPTS, fx.N)
  # With ties for unparsed judgments every P_ij + P_ji = 1, so a group's win
  # rates sum to N(N-1)/2 / (N-1) = N/2 = 2; each P_ij is the mean of two
  # votes in {0, ½, 1}, a multiple of ¼, so r_i (3 opponents) is one of 1/12.
  np.testing.assert_allclose(r.sum(1), [2.0] * fx.PROMPTS, atol=1e-5)
  np.testing.assert_allclose(np.round(r * 12), r * 12, atol=1e-4)
  assert 0.0 <= metrics["label_free/sample_acc"] <= 1.0
  if judge_role == "judge":
    assert "judge" in trainer.frozen


def test_teach_judge_examples_are_verifier_labelled_pairs():
  tasks = tasks_lib.make_tasks("addition", 6, difficulty=1, seed=0)
  stage = spo.spo(rollout=SPEC, preference="judge").rollout
  extras = stage.supervised_extras(tasks)
  assert len(extras) == 6
  for prompt, label in extras:
    task = next(t for t in tasks if prompt.startswith(t.prompt + "A:"))
    a, b = prompt[len(task.prompt) + 2:-len("|better:")].split(";B:")
    assert prompt == judging.PAIRWISE.prompt(task.prompt, a, completion_b=b)
    # One is the target, the other a corruption: the label names the right one.
    assert label == ("A" if task.verify(a) > task.verify(b) else
                     "B" if task.verify(b) > task.verify(a) else "=")
  assert spo.spo(rollout=SPEC, preference="judge",
                 teach_judge=False).rollout.supervised_extras(tasks) == []


def test_spo_errors():
  with pytest.raises(ValueError, match="preference must be one of"):
    spo.spo(preference="humans")
  with pytest.raises(ValueError, match="judge_role must be one of"):
    spo.spo(preference="judge", judge_role="teacher")
  with pytest.raises(ValueError, match="unparsed must be one of"):
    spo.spo(unparsed="zero")
  with pytest.raises(ValueError, match="pairwise format"):
    spo.spo(preference="judge", judge_format="verdict")
