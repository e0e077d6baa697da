"""rollouts.WithTeacherResponse: n − 1 policy samples + the teacher's row (DNO)."""

import math

import numpy as np
import pytest

from jaxsi.methods import base
from jaxsi.methods import dno
from jaxsi import spec
from jaxsi.methods.base import RolloutSpec
from jaxsi.sampling import rollouts
from jaxsi.training import loop
from jaxsi.transforms import pairs, preference, rescoring
from jaxsi.transforms.base import chain, objective
from tests.methods import rl_fixtures as fx


def starts_with_target(tasks, completions):
  """1.0 when the completion is the task's target (the teacher always wins)."""
  return np.asarray([1.0 if c == t.target else 0.0 for t, c in zip(tasks, completions)],
                    np.float32)


def _loop(response_fn=rollouts.target_response):
  m = base.make_method(
      name="dpo_teacher", rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
      reward_fns=(starts_with_target,),
      stage=lambda s: rollouts.WithTeacherResponse(s, response_fn=response_fn),
      transform=chain(rescoring.ref_logprobs(), pairs.best_vs_worst(margin=0.5)),
      objective=objective((1.0, preference.dpo(beta=0.1), "dpo")),
      roles=base.reference_role(1.0))
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=m, tokenizer=tok, tasks=tasks,
                   optimizer=opt, prompts_per_step=fx.PROMPTS,
                   compiler_options=loop.FAST_COMPILE, seed=1), tok, tasks


def test_teacher_row_is_the_target_and_is_chosen():
  lp, tok, tasks = _loop()
  metrics = lp.step()
  traj, batch = lp.last_traj, lp.last_batch
  n, r = fx.N, fx.PROMPTS
  flag = np.asarray(traj.extras[rollouts.TEACHER_RESPONSE_KEY])
  # The last row of every group of n is the teacher's, nothing else.
  np.testing.assert_array_equal(flag, np.tile([False] * (n - 1) + [True], r))
  gid = np.asarray(traj.group_ids).reshape(r, n)
  assert (gid == gid[:, :1]).all() and len(set(gid[:, 0])) == r
  tokens, lm = np.asarray(traj.tokens), np.asarray(traj.loss_mask)
  rewards = np.asarray(batch.rewards)[:, 0]
  for row in np.flatnonzero(flag):
    task = tasks[int(batch.task_index[row])]
    ids = tokens[row][lm[row]].tolist()
    # target + the stop token, decoded back to the target.
    assert ids == list(tok.encode(task.target)) + [tok.eos_id]
    assert tok.decode(ids) == task.target
    assert rewards[row] == 1.0
    np.testing.assert_array_equal(np.asarray(traj.behaviour_logprobs)[row], 0.0)
    assert bool(np.asarray(traj.extras["finished"])[row])
  # Policy rows come from the sampler: the same prompt as their group's teacher row.
  pi = np.asarray(batch.task_index).reshape(r, n)
  assert (pi == pi[:, :1]).all()
  # Best vs worst by the score: the teacher row (1.0) is chosen in every group
  # that has a policy sample scoring 0 (all of them at random init here).
  chosen = np.asarray(traj.extras[preference.IS_CHOSEN_KEY])
  want = int(np.sum(rewards.reshape(r, n).min(1) < 0.5))
  assert int(chosen.sum()) == want == metrics["transform/pairs/count"] > 0
  assert chosen[~flag].sum() == 0
  assert metrics["teacher/reward"] == 1.0 and metrics["teacher/truncated"] == 0.0
  np.testing.assert_allclose(metrics["loss_first"], math.log(2.0), rtol=1e-5)


def test_teacher_response_is_cut_to_the_budget():
  lp, tok, _ = _loop(response_fn=lambda task: "12345")
  metrics = lp.step()
  traj = lp.last_traj
  flag = np.asarray(traj.extras[rollouts.TEACHER_RESPONSE_KEY])
  row = int(np.flatnonzero(flag)[0])
  ids = np.asarray(traj.tokens)[row][np.asarray(traj.loss_mask)[row]].tolist()
  assert ids == list(tok.encode("123"))      # MAX_NEW = 3 tokens, no stop token
  assert not bool(np.asarray(traj.extras["finished"])[row])
  assert metrics["teacher/truncated"] == 1.0


def test_dno_teacher_response_option():
  m = dno.dno(rollout=spec.RolloutSpec(n=4), teacher_response=True)
  assert isinstance(m.rollout, rollouts.WithTeacherResponse)
  assert type(dno.dno().rollout) is rollouts.Sample
  with pytest.raises(ValueError, match="n must be >= 2"):
    rollouts.WithTeacherResponse(RolloutSpec(n=1, max_new_tokens=2))(None, None, None)
