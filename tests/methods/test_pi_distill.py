"""Tests for π-Distill (jaxsi.methods.pi_distill, sampling.privileged.TeacherSample,
transforms.importance.twin_old_logprobs) against hand-computed numbers."""

import importlib

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.sampling import privileged
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.trajectory import Trajectory
from jaxsi.training import loop
from jaxsi.transforms import importance
from tests.methods import rl_fixtures as fx

pd = importlib.import_module("jaxsi.methods.pi_distill")


def _context(t):
  """The fixture's alphabet is 0-9 + =: the answer between '=' signs."""
  return t.prompt + t.answer + "="


def test_twin_old_logprobs_hand_numbers():
  # Rows 0, 1 teacher, rows 2, 3 their student twins; loss on columns 1-2.
  old = jnp.array([[0.0, -1.0, -2.0], [0.0, -0.5, -0.25],
                   [0.0, -3.0, -1.0], [0.0, -1.5, -0.5]])
  loss = np.array([[0, 1, 1]] * 4, bool)
  traj = Trajectory.create(np.ones((4, 3), np.int32), loss_mask=loss,
                           old_logprobs=old,
                           extras={"s": jnp.array([False, False, True, True]),
                                   "w": jnp.array([2, 3, 0, 1], jnp.int32)})
  out, _, m = importance.twin_old_logprobs(rows_key="s", twin_key="w").update(
      traj, (), None)
  np.testing.assert_allclose(out.old_logprobs, [[0, -1, -2], [0, -0.5, -0.25],
                                                [0, -1, -2], [0, -0.5, -0.25]])
  # gap: mean over student loss tokens of old − twin old:
  # (−3+1) + (−1+2) + (−1.5+0.5) + (−0.5+0.25) = −2.25, / 4.
  np.testing.assert_allclose(m["twin/log_ratio"], -2.25 / 4, rtol=1e-6)
  with pytest.raises(ValueError, match="twin_old_logprobs needs"):
    importance.twin_old_logprobs(rows_key="x", twin_key="w").update(traj, (), None)


def test_joint_weights_make_the_mean_alpha_teacher_plus_rest_student():
  traj = Trajectory.create(np.ones((4, 2), np.int32), extras={
      privileged.STUDENT_KEY: jnp.array([False, False, True, True])})
  out, _, _ = pd.joint_weights(0.8).update(traj, (), None)
  np.testing.assert_allclose(out.weights, [1.6, 1.6, 0.4, 0.4], rtol=1e-6)
  # mean(w·ℓ) with ℓ = (1, 3 | 5, 7): 0.8·2 + 0.2·6 = 2.8.
  np.testing.assert_allclose(np.mean(np.asarray(out.weights) * [1, 3, 5, 7]), 2.8,
                             rtol=1e-6)


def test_refusals():
  with pytest.raises(ValueError, match="alpha"):
    pd.pi_distill(alpha=1.5, context_fn=_context)
  with pytest.raises(ValueError, match="even"):
    pd.pi_distill(rollout=RolloutSpec(n=3), context_fn=_context)
  with pytest.raises(ValueError, match="context_fn"):
    pd.pi_distill(context_fn=None)
  m = pd.pi_distill(context_fn=_context)
  assert isinstance(m.rollout, privileged.TeacherSample) and m.n == 8
  assert m.rollout.supervised_extras(fx.setup()[3][:4]) == [
      (_context(t), t.target or t.answer) for t in fx.setup()[3][:4:2]]


@pytest.mark.parametrize("alpha", [0.5, 0.0])
def test_under_the_loop_layout_ratio_and_first_loss(alpha):
  tok, model, params, tasks, opt = fx.setup()
  m = pd.pi_distill(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    optim=OptimSpec(), reward_fns=(fx.first_is_digit,),
                    context_fn=_context, alpha=alpha, drop_zero_variance=False,
                    agg="seq-mean-token-mean")
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(params)
  metrics = lp.step()
  traj = lp.last_traj
  half = fx.N // 2
  student = np.asarray(traj.extras[privileged.STUDENT_KEY])
  twin = np.asarray(traj.extras[privileged.TWIN_KEY])
  assert student.tolist() == ([False] * half + [True] * half) * fx.PROMPTS
  tokens = np.asarray(traj.tokens)
  g = fx.MAX_NEW
  p = tokens.shape[1] - g
  mask = np.asarray(traj.input_mask)
  # Twins: the same completion columns; the prompts are the two contexts.
  np.testing.assert_array_equal(tokens[:, p:], tokens[twin, p:])
  for b in range(len(tokens)):
    text = tok.decode([int(x) for x, ok in zip(tokens[b, :p], mask[b, :p]) if ok])
    task = tasks[int(np.asarray(traj.prompt_ids)[b])]
    want = _context(task) if not student[b] else task.prompt
    assert text.endswith(want), (b, text, want)
  assert np.asarray(traj.group_ids).tolist() == list(np.repeat(np.arange(2 * fx.PROMPTS), half))
  rewards = np.asarray(traj.rewards)[:, 0]
  np.testing.assert_array_equal(rewards, rewards[twin])
  # old log-probs: every row's = its TEACHER row under the initial params.
  lm = np.asarray(traj.loss_mask) & np.asarray(traj.valid)[:, None]
  own = fx.policy_logprobs(model, p0, traj)
  teacher_rows = np.where(student, twin, np.arange(len(tokens)))
  old = np.asarray(traj.old_logprobs)
  np.testing.assert_allclose(old[lm], own[teacher_rows][lm], rtol=1e-4, atol=1e-5)
  # The first update's loss: clipped PG with ρ = π(y|this layout)/π_old(y|teacher),
  # weights 2α / 2(1 − α), seq-mean-token-mean.
  adv = fx.group_std_adv(rewards, half, scale=True)
  ratio = np.exp(own - own[teacher_rows])
  per = fx.ppo_clip(ratio, adv[:, None], 0.2, 0.2)
  w = np.where(student, 2 * (1 - alpha), 2 * alpha)
  want = fx.agg(per * w[:, None], lm, "seq-mean-token-mean")
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=1e-5)
  assert abs(metrics["transform/twin/log_ratio"]) > 0   # the layouts differ


def test_twin_reference_and_joint_kl_hand_numbers():
  # Rows 0 teacher, 1 its student twin; loss on columns 1-2.
  old = jnp.array([[0.0, -1.0, -2.0], [0.0, -3.0, -0.5]])
  loss = np.array([[0, 1, 1]] * 2, bool)
  extras = {privileged.STUDENT_KEY: jnp.array([False, True]),
            privileged.TWIN_KEY: jnp.array([1, 0], jnp.int32)}
  traj = Trajectory.create(np.ones((2, 3), np.int32), loss_mask=loss,
                           old_logprobs=old, extras=extras)
  out, _, _ = pd.twin_reference_logprobs().update(traj, (), None)
  # teacher row's reference = the student layout's old log-probs on loss tokens
  np.testing.assert_allclose(out.teacher_logprobs[0], [0.0, -3.0, -0.5])
  out, _, _ = importance.twin_old_logprobs(
      rows_key=privileged.STUDENT_KEY, twin_key=privileged.TWIN_KEY).update(out, (), None)
  lp = jnp.array([[0.0, -1.0, -2.0], [0.0, -2.5, -1.0]])   # the update's log-probs
  from jaxsi.transforms.base import ModelOutputs  # pylint: disable=g-import-not-at-top
  loss_v, m = pd.joint_kl(agg="token-mean")(ModelOutputs(logprobs=lp), out)
  # teacher row: d = lp − ref = (−1+3, −2+0.5) = (2, −1.5)
  # student row: old(teacher's) − lp = (−1+2.5, −2+1) = (1.5, −1)
  # token-mean over 4 tokens: (2 − 1.5 + 1.5 − 1)/4 = 0.25
  np.testing.assert_allclose(loss_v, 0.25, rtol=1e-6)
  np.testing.assert_allclose(m["teacher_kl"], 0.25, rtol=1e-6)
  np.testing.assert_allclose(m["student_kl"], 0.25, rtol=1e-6)
  with pytest.raises(ValueError, match="kl_coef"):
    pd.pi_distill(kl_coef=-0.1, context_fn=_context)


def test_kl_terms_under_the_loop_first_loss():
  tok, model, params, tasks, opt = fx.setup()
  alpha, beta = 0.5, 0.3
  m = pd.pi_distill(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    optim=OptimSpec(), reward_fns=(fx.first_is_digit,),
                    context_fn=_context, alpha=alpha, kl_coef=beta,
                    drop_zero_variance=False, agg="seq-mean-token-mean")
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(params)
  metrics = lp.step()
  traj = lp.last_traj
  student = np.asarray(traj.extras[privileged.STUDENT_KEY])
  twin = np.asarray(traj.extras[privileged.TWIN_KEY])
  lm = np.asarray(traj.loss_mask) & np.asarray(traj.valid)[:, None]
  own = fx.policy_logprobs(model, p0, traj)
  teacher_rows = np.where(student, twin, np.arange(len(own)))
  rewards = np.asarray(traj.rewards)[:, 0]
  adv = fx.group_std_adv(rewards, fx.N // 2, scale=True)
  pg = fx.ppo_clip(np.exp(own - own[teacher_rows]), adv[:, None], 0.2, 0.2)
  # KL per token at the first update: teacher rows log π_T − log π_S (twin),
  # student rows log π_T(old) − log π_S.
  kl = np.where(student[:, None], own[teacher_rows] - own, own - own[twin])
  w = np.where(student, 2 * (1 - alpha), 2 * alpha)[:, None]
  want = fx.agg(pg * w, lm, "seq-mean-token-mean") + beta * fx.agg(
      kl * w, lm, "seq-mean-token-mean")
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=2e-4, atol=1e-5)
