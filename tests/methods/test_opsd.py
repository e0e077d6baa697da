"""Tests for jaxsi.methods.opsd (OPSD, OPSD+RL, Skill-SD) with hand-computed numbers."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.sampling import privileged
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.trajectory import ModelOutputs, Trajectory
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

# The module (the package attribute ``jaxsi.methods.opsd`` is the factory).
opsd_lib = importlib.import_module("jaxsi.methods.opsd")

# Two rows, T = 3, the prompt at column 0; loss tokens: row 0 cols 1-2, row 1 col 1.
LOSS = np.array([[0, 1, 1], [0, 1, 0]], bool)
LP = np.array([[0.0, -1.0, -2.0], [0.0, -0.5, 0.0]], np.float32)        # student
TEACHER = np.array([[0.0, -0.5, -3.0], [0.0, -1.5, 0.0]], np.float32)   # sg teacher


def _traj(**kw):
  return Trajectory.create(np.ones((2, 3), np.int32), loss_mask=LOSS,
                           group_ids=np.array([0, 0]),
                           teacher_logprobs=jnp.asarray(TEACHER), **kw)


def test_opsd_objective_is_the_token_mean_reverse_kl():
  m = opsd_lib.opsd(kd_coef=2.0, context_fn=privileged.answer_context)
  assert m.n == 1 and m.roles == () and isinstance(m.rollout, privileged.Privileged)
  # d = lp − lp_T on loss tokens: −1+0.5 = −0.5, −2+3 = 1, −0.5+1.5 = 1;
  # token mean (−0.5 + 1 + 1)/3 = 0.5; × kd_coef 2 = 1.0.
  loss, metrics = m.objective(ModelOutputs(logprobs=jnp.asarray(LP)), _traj())
  np.testing.assert_allclose(loss, 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["kd/reverse_kl"], 0.5, rtol=1e-6)
  # 'pg' estimator: ∂L/∂lp_t = kd_coef · d_t / #tokens = 2·[−0.5, 1, 1]/3.
  grad = jax.grad(lambda lp: m.objective(ModelOutputs(logprobs=lp), _traj())[0])(
      jnp.asarray(LP))
  np.testing.assert_allclose(grad, [[0, -1 / 3, 2 / 3], [0, 2 / 3, 0]], atol=1e-6)


def test_opsd_k2_estimator_value():
  m = opsd_lib.opsd(kd_estimator="k2", context_fn=privileged.answer_context)
  # k2 = ½ d²: ½(0.25 + 1 + 1)/3 = 0.375.
  loss, _ = m.objective(ModelOutputs(logprobs=jnp.asarray(LP)), _traj())
  np.testing.assert_allclose(loss, 0.375, rtol=1e-6)


def test_opsd_rl_adds_the_clipped_grpo_term():
  m = opsd_lib.opsd(rollout=RolloutSpec(n=2), pg_coef=1.0, kd_coef=0.1,
                    context_fn=privileged.answer_context)
  # At ratio 1 (old = current) pg_clip = −token-mean(A): A = +1 on row 0's
  # two tokens, −1 on row 1's one: −(1 + 1 − 1)/3 = −1/3; plus 0.1·0.5.
  adv = np.array([[0.0, 1.0, 1.0], [0.0, -1.0, 0.0]], np.float32)
  traj = _traj(old_logprobs=jnp.asarray(LP), advantages=jnp.asarray(adv))
  loss, metrics = m.objective(ModelOutputs(logprobs=jnp.asarray(LP)), traj)
  np.testing.assert_allclose(metrics["pg/loss"], -1 / 3, rtol=1e-6)
  np.testing.assert_allclose(loss, -1 / 3 + 0.05, rtol=1e-6)


def test_refusals_and_skill_sd():
  with pytest.raises(ValueError, match="teacher"):
    opsd_lib.opsd(teacher="other")
  with pytest.raises(ValueError, match="kd_coef"):
    opsd_lib.opsd(kd_coef=0.0)
  with pytest.raises(ValueError, match="pg_coef"):
    opsd_lib.opsd(pg_coef=-1.0)
  with pytest.raises(ValueError, match="n >= 2"):
    opsd_lib.opsd(pg_coef=1.0)
  with pytest.raises(ValueError, match="estimator"):
    opsd_lib.opsd(kd_estimator="k9")
  s = opsd_lib.skill_sd()
  assert s.name == "skill_sd" and s.n == 8
  assert s.rollout.context_fn is privileged.skill_context
  assert opsd_lib.opsd(teacher="initial").needs(spec.REFERENCE)


def _context(t):
  """The fixture's alphabet is 0-9 + =: the answer between '=' signs."""
  return t.prompt + t.answer + "="


@pytest.mark.parametrize("teacher", ["live", "initial"])
def test_teacher_params_under_the_loop(teacher):
  """'live': step 2's teacher is the updated policy under the privileged
  prompt; 'initial': it stays the initial params."""
  tok, model, params, tasks, opt = fx.setup()
  m = opsd_lib.opsd(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    optim=OptimSpec(), reward_fns=(fx.first_is_digit,),
                    context_fn=_context, teacher=teacher)
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(params)
  lp.step()
  p1 = fx.host_params(lp.state.params)
  metrics = lp.step()
  assert metrics["transform/rescore/token_mismatch"] == 0.0
  traj = lp.last_traj
  ext = {k: np.asarray(v) for k, v in traj.extras.items()}
  other = Trajectory.create(ext["privileged_tokens"],
                            input_mask=ext["privileged_input_mask"],
                            positions=ext["privileged_positions"])
  want_params = p1 if teacher == "live" else p0
  d = ext["privileged_tokens"].shape[1] - traj.length
  full = fx.policy_logprobs(model, want_params, other)[:, d:]
  lm = np.asarray(traj.loss_mask)
  got = np.asarray(traj.teacher_logprobs)
  np.testing.assert_allclose(got[lm], full[lm], rtol=1e-4, atol=1e-5)
  stale = fx.policy_logprobs(model, p0 if teacher == "live" else p1, other)[:, d:]
  assert np.abs(stale[lm] - got[lm]).max() > 1e-4


def test_topk_divergence_refusals():
  with pytest.raises(ValueError, match="divergence"):
    opsd_lib.opsd(divergence="full")
  with pytest.raises(ValueError, match="read only by divergence='topk'"):
    opsd_lib.opsd(k=4)
  with pytest.raises(ValueError, match="kd_estimator"):
    opsd_lib.opsd(divergence="topk", k=4, kd_estimator="k2")
  with pytest.raises(ValueError, match="k >= 1"):
    opsd_lib.opsd(divergence="topk")
  m = opsd_lib.opsd(divergence="topk", k=4)
  # chunked (None → True with 'topk') is the default: no full logits needed
  assert not getattr(m.objective, "needs_logits", False)
  assert opsd_lib.opsd(divergence="topk", k=4, chunked=False).objective.needs_logits
  with pytest.raises(ValueError, match="read only by divergence='topk'"):
    opsd_lib.opsd(chunked=True)


@pytest.mark.parametrize("teacher", ["live", "initial"])
def test_topk_opsd_under_the_loop_is_the_full_reverse_kl(teacher):
  """k = V, β = 1: the kd loss of the loop's update equals the exact token-mean
  reverse KL(p_S ‖ p_T) computed here from the two layouts' full logits."""
  tok, model, params, tasks, opt = fx.setup()
  v = model.config.vocab_size
  m = opsd_lib.opsd(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    optim=OptimSpec(), reward_fns=(fx.first_is_digit,),
                    context_fn=_context, teacher=teacher, divergence="topk",
                    k=v, row_chunk=2)
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(params)
  metrics = lp.step()
  traj = lp.last_traj
  ext = {k: np.asarray(x) for k, x in traj.extras.items()}
  other = Trajectory.create(ext["privileged_tokens"],
                            input_mask=ext["privileged_input_mask"],
                            positions=ext["privileged_positions"])
  d = ext["privileged_tokens"].shape[1] - traj.length
  t_logp = np.asarray(jax.nn.log_softmax(
      fx.policy_logits(model, p0, other), axis=-1))[:, d:]
  s_logp = np.asarray(jax.nn.log_softmax(
      fx.policy_logits(model, p0, traj), axis=-1))
  lm = np.asarray(traj.loss_mask) & np.asarray(traj.valid)[:, None]
  kl = (np.exp(s_logp) * (s_logp - t_logp)).sum(-1)
  want = kl[lm].mean()
  np.testing.assert_allclose(metrics["kd/divergence"], want, rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(metrics["transform/teacher_topk/mass"], 1.0, atol=1e-5)


def test_kd_on_stop_false_masks_the_stop_token_and_refuses_pg():
  with pytest.raises(ValueError, match="pg_coef = 0"):
    opsd_lib.opsd(rollout=RolloutSpec(n=2), pg_coef=1.0, kd_on_stop=False,
                  context_fn=privileged.answer_context)
  m = opsd_lib.opsd(kd_on_stop=False, context_fn=privileged.answer_context)
  traj = Trajectory.create(
      np.ones((2, 3), np.int32), loss_mask=LOSS, group_ids=np.array([0, 1]),
      extras={"finished": np.array([True, False]),
              "privileged_tokens": np.ones((2, 3), np.int32)})
  ctx = fx_context(traj)
  out, _, _ = m.transform.update(traj, m.transform.init(), ctx)
  # Row 0 finished: its last loss token (column 2) is the stop token.
  np.testing.assert_array_equal(out.loss_mask, [[0, 1, 0], [0, 1, 0]])


def fx_context(traj):
  from jaxsi.transforms.base import Context  # pylint: disable=g-import-not-at-top
  def score(params, t):
    del params
    return ModelOutputs(logprobs=jnp.zeros(t.tokens.shape))
  return Context(params={"policy": None}, scorers=(("policy", score),))


def test_skill_sd_weights_the_kl_by_the_importance_ratio():
  s = opsd_lib.skill_sd()
  # ρ = 1 where old = current: the kd term equals the unweighted one.
  traj = _traj(old_logprobs=jnp.asarray(LP), advantages=jnp.zeros((2, 3)))
  loss, metrics = s.objective(ModelOutputs(logprobs=jnp.asarray(LP)), traj)
  plain = opsd_lib.opsd(rollout=RolloutSpec(n=8), pg_coef=1.0, kd_coef=0.1,
                        agg="seq-mean-token-mean",
                        context_fn=privileged.skill_context)
  want, _ = plain.objective(ModelOutputs(logprobs=jnp.asarray(LP)), traj)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  with pytest.raises(ValueError, match="kd_importance"):
    opsd_lib.skill_sd(kd_estimator="k2")
  assert opsd_lib.skill_sd(kd_estimator="k2", kd_importance=False).name == "skill_sd"


def test_sdft_mode_frozen_teacher_jsd_half_under_the_loop():
  """SDFT (gin_configs/methods/sdft.gin: teacher='initial', β = 0.5, TRL
  SDFTTrainer defaults): the kd divergence equals the token-mean generalised
  JSD_0.5 with mixture M = ½p_S + ½p_T, ½KL(p_S‖M) + ½KL(p_T‖M) (TRL
  compute_divergence), student on the plain layout, teacher = the initial
  params on the privileged layout."""
  tok, model, params, tasks, opt = fx.setup()
  v = model.config.vocab_size
  m = opsd_lib.opsd(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    optim=OptimSpec(), reward_fns=(fx.first_is_digit,),
                    context_fn=_context, teacher="initial", divergence="topk",
                    k=v, jsd_beta=0.5, row_chunk=2, name="sdft")
  assert m.needs(spec.REFERENCE)
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(params)
  metrics = lp.step()
  traj = lp.last_traj
  ext = {k: np.asarray(x) for k, x in traj.extras.items()}
  other = Trajectory.create(ext["privileged_tokens"],
                            input_mask=ext["privileged_input_mask"],
                            positions=ext["privileged_positions"])
  d = ext["privileged_tokens"].shape[1] - traj.length
  t = np.asarray(jax.nn.log_softmax(fx.policy_logits(model, p0, other), axis=-1),
                 np.float64)[:, d:]
  s = np.asarray(jax.nn.log_softmax(fx.policy_logits(model, p0, traj), axis=-1),
                 np.float64)
  mix = np.logaddexp(s + np.log(0.5), t + np.log(0.5))
  kl = lambda a, b: (np.exp(a) * (a - b)).sum(-1)
  jsd = 0.5 * kl(s, mix) + 0.5 * kl(t, mix)
  lm = np.asarray(traj.loss_mask) & np.asarray(traj.valid)[:, None]
  np.testing.assert_allclose(metrics["kd/divergence"], jsd[lm].mean(), rtol=2e-3,
                             atol=1e-5)
