"""MiniLLM (arXiv:2306.08543, TRL MiniLLMTrainer): the reverse-KL return by hand,
and the first loss in the loop against numpy (PPO-clip at ratio 1 + full reverse KL)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import methods, spec  # pylint: disable=g-bad-import-order
import importlib

minillm_lib = importlib.import_module("jaxsi.methods.minillm")
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx


def test_discounted_suffix_mean_by_hand():
  r = jnp.asarray([[1.0, 2.0, 4.0, 9.0]])
  m = jnp.asarray([[1, 1, 1, 0]])          # the last position is padding
  # γ = 0.5, normalised: t=2: 4/1; t=1: (2 + .5·4)/(1 + .5) = 8/3;
  # t=0: (1 + .5·2 + .25·4)/(1 + .5 + .25) = 3/1.75; padding 0.
  np.testing.assert_allclose(
      minillm_lib.discounted_suffix_mean(r, m, gamma=0.5),
      [[3 / 1.75, 8 / 3, 4.0, 0.0]], rtol=1e-6)
  # not normalised: [3, 4, 4, 0]
  np.testing.assert_allclose(
      minillm_lib.discounted_suffix_mean(r, m, gamma=0.5, normalize=False),
      [[3.0, 4.0, 4.0, 0.0]], rtol=1e-6)
  # γ = 0: the rewards themselves (masked); γ = 1: suffix means 7/3, 3, 4
  np.testing.assert_allclose(minillm_lib.discounted_suffix_mean(r, m, gamma=0.0),
                             [[1.0, 2.0, 4.0, 0.0]])
  np.testing.assert_allclose(minillm_lib.discounted_suffix_mean(r, m, gamma=1.0),
                             [[7 / 3, 3.0, 4.0, 0.0]], rtol=1e-6)


def teacher():
  """Another parameter set of the student's model (one compile, a real gap)."""
  _, model, params, _, _ = fx.setup()
  return model, fx.host_params(fx.perturbed(params, scale=0.5, seed=3))


def _loop(method, roles):
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   roles=roles, compiler_options=loop.FAST_COMPILE)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_first_loss_is_pg_on_rkl_return_plus_reverse_kl():
  tok, model, params, _, _ = fx.setup()
  t_model, t_params = teacher()
  v = model.config.vocab_size
  m = methods.minillm(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                      reward_fns=(fx.first_is_digit,), gamma=0.5, k=v)
  trainer = _loop(m, {"teacher": (t_model, t_params)})
  p0 = fx.host_params(trainer.state.params)
  metrics = trainer.step()
  traj = trainer.last_traj
  lm = np.asarray(traj.loss_mask, bool) & np.asarray(traj.valid, bool)[:, None]
  s_lp = fx.policy_logprobs(model, p0, traj)
  t_lp = fx.policy_logprobs(t_model, t_params, traj)
  r = np.where(lm, t_lp - s_lp, 0.0)
  # A_t = Σ_{i≥t} .5^{i−t} R_i / Σ_{i≥t} .5^{i−t} over each row's tokens
  a = np.zeros_like(r)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(lm[b])
    for t in idx:
      w = 0.5 ** (idx[idx >= t] - t)
      a[b, t] = (w * r[b, idx[idx >= t]]).sum() / w.sum()
  # ratio = 1 at the first update: PPO-clip = −A, token-mean
  pg = fx.agg(-a, lm, "token-mean")
  s, t = _log_softmax(fx.policy_logits(model, p0, traj)), _log_softmax(
      fx.policy_logits(t_model, t_params, traj))
  kl = (np.exp(s) * (s - t)).sum(-1)          # KL(student ‖ teacher) per position
  np.testing.assert_allclose(metrics["loss_first"], pg + fx.agg(kl, lm, "token-mean"),
                             rtol=2e-4, atol=2e-5)


def test_teacher_equal_to_student_gives_zero_loss():
  tok, model, params, _, _ = fx.setup()
  m = methods.minillm(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                      reward_fns=(fx.first_is_digit,), gamma=0.9,
                      k=model.config.vocab_size)
  metrics = _loop(m, {"teacher": (model, fx.host_params(params))}).step()
  # R_t = 0 → A^KL = 0; KL(p ‖ p) = 0.
  assert abs(metrics["loss_first"]) < 1e-5


def test_options_are_checked():
  with pytest.raises(ValueError, match="nothing to train"):
    methods.minillm(rkl_advantage=False, single_coef=0.0)
  with pytest.raises(ValueError, match="gamma"):
    methods.minillm(gamma=1.5)
  with pytest.raises(ValueError, match="single_coef"):
    methods.minillm(single_coef=-1.0)
  with pytest.raises(ValueError, match="reward_advantage needs"):
    methods.minillm(reward_advantage=True, rollout=RolloutSpec(n=1))
  m = methods.minillm()
  assert m.needs(spec.TEACHER) and not getattr(m.objective, "needs_logits", False)
  assert methods.minillm(chunked=False).objective.needs_logits
  assert not getattr(methods.minillm(single_coef=0.0).objective, "needs_logits", False)
