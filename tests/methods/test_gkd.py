"""GKD (arXiv:2306.13649) in the one loop: the loss against a numpy JSD_β, λ's
data mix, and the teacher checks (vocabulary / tokenizer mismatch)."""

from __future__ import annotations

import functools
import importlib

import jax
import numpy as np
import pytest

from jaxsi import methods, spec
from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.models import model as mmodel
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop, role_checks
from jaxsi.transforms import distillation as dist
from tests.methods import rl_fixtures as fx

# The module (jaxsi.methods re-exports the factory under the same name).
gkd_lib = importlib.import_module("jaxsi.methods.gkd")


@functools.lru_cache(maxsize=None)
def teacher():
  """A separate jaxsi model (other width and depth, same vocabulary)."""
  tok, model, _, _, _ = fx.setup()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=48,
                        n_layers=2, n_heads=2, n_kv_heads=1, head_dim=24, d_ff=96)
  return mmodel.init(cfg, jax.random.key(7))


def _loop(method, roles):
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   roles=roles, compiler_options=loop.FAST_COMPILE)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_jsd(s_logits, t_logits, beta):
  """TRL generalized_jsd_loss per position (reduction='none', summed over V)."""
  s, t = _log_softmax(s_logits), _log_softmax(t_logits)
  kl = lambda a, b: (np.exp(a) * (a - b)).sum(-1)   # KL(a ‖ b)
  if beta == 0:
    return kl(t, s)
  if beta == 1:
    return kl(s, t)
  m = np.logaddexp(s + np.log(1 - beta), t + np.log(beta))
  return beta * kl(t, m) + (1 - beta) * kl(s, m)


def _logits(model, params, traj):
  fn = logprobs_lib.score_fn(model, with_logits=True)
  return np.asarray(jax.jit(fn)(params, traj).logits, np.float64)


@pytest.mark.parametrize("lmbda", [1.0, 0.0])
def test_gkd_step_loss_is_the_token_mean_jsd(lmbda):
  tok, model, params, _, _ = fx.setup()
  t_model, t_params = teacher()
  v = model.config.vocab_size
  m = methods.gkd(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                  reward_fns=(fx.first_is_digit,), lmbda=lmbda, beta=0.3, k=v)
  trainer = _loop(m, {"teacher": (t_model, t_params)})
  p0 = fx.host_params(trainer.state.params)
  metrics = trainer.step()
  traj = trainer.last_traj
  # λ = 1: the student sampled; λ = 0: the teacher did (its log-probs are the
  # behaviour log-probs of the batch).
  assert metrics[gkd_lib.TEACHER_SAMPLED_KEY] == (0.0 if lmbda == 1.0 else 1.0)
  sampler = (model, p0) if lmbda == 1.0 else (t_model, t_params)
  lm = np.asarray(traj.loss_mask, bool) & np.asarray(traj.valid, bool)[:, None]
  own = fx.policy_logprobs(sampler[0], sampler[1], traj)
  np.testing.assert_allclose(own[lm], np.asarray(traj.behaviour_logprobs)[lm],
                             rtol=1e-4, atol=1e-4)
  # The loss of the first update: Σ_t JSD_0.3(student_t, teacher_t) / #tokens
  # over the full vocabulary (k = V), student at the rollout params.
  d = np_jsd(_logits(model, p0, traj), _logits(t_model, t_params, traj), 0.3)
  np.testing.assert_allclose(metrics["loss_first"], fx.agg(d, lm, "token-mean"),
                             rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(metrics["transform/teacher_topk/mass"], 1.0, rtol=1e-5)
  assert int(trainer.state.step) == 1


def test_teacher_with_another_vocabulary_is_refused():
  tok, model, params, _, _ = fx.setup()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size + 5, d_model=32,
                        n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  other = mmodel.init(cfg, jax.random.key(1))
  m = methods.gkd(rollout=RolloutSpec(n=2, max_new_tokens=2))
  with pytest.raises(spec.ConfigurationError,
                     match=r"role 'teacher'.*vocab_size=%d.*vocab_size=%d"
                     % (tok.vocab_size + 5, tok.vocab_size)):
    _loop(m, {"teacher": other})


def test_teacher_with_another_tokenizer_is_refused():
  tok, model, params, _, _ = fx.setup()
  # Same size, different ids: the digits permuted.
  other_tok = char_tokenizer.CharTokenizer(alphabet="9876543210+=")
  assert other_tok.vocab_size == tok.vocab_size
  m = methods.gkd(rollout=RolloutSpec(n=2, max_new_tokens=2))
  with pytest.raises(spec.ConfigurationError, match=r"tokenizer differs.*decode"):
    _loop(m, {"teacher": (model, params, other_tok)})
  # The run's own tokenizer passes the check (no error before the loop runs).
  role_checks.check_tokenizer("teacher", tok, tok)


def test_options_are_checked():
  with pytest.raises(ValueError, match="seq_kd=False"):
    methods.gkd(seq_kd=False)
  with pytest.raises(ValueError, match="lmbda"):
    methods.gkd(lmbda=1.5)
  with pytest.raises(ValueError, match="beta"):
    methods.gkd(beta=-0.1)
  m = methods.gkd(lmbda=0.25)
  # chunked=True is the default: the term reduces hidden states, no full logits
  assert m.needs(spec.TEACHER) and not getattr(m.objective, "needs_logits", False)
  assert methods.gkd(chunked=False).objective.needs_logits
  assert isinstance(m.rollout, gkd_lib.MixedSample) and m.rollout.lmbda == 0.25


def test_on_policy_fraction_is_lambda():
  # u ~ U[0, 1) per step: the student fraction over 400 steps is λ ± 3σ.
  for lmbda in (0.0, 0.3, 1.0):
    draws = [gkd_lib.on_policy_draw(jax.random.key(i), lmbda) for i in range(400)]
    frac = float(np.mean(draws))
    sigma = np.sqrt(max(lmbda * (1 - lmbda), 1e-12) / 400)
    assert abs(frac - lmbda) <= 3 * sigma + 1e-9, (lmbda, frac)


def test_chunked_student_side_gives_the_same_first_loss():
  """gkd(chunked=True) under the loop: the same loss as the full-logits path."""
  tok, model, params, _, _ = fx.setup()
  t_model, t_params = teacher()
  v = model.config.vocab_size
  losses = []
  for chunked in (False, True):
    m = methods.gkd(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    reward_fns=(fx.first_is_digit,), lmbda=1.0, beta=0.3, k=v,
                    chunked=chunked)
    assert bool(getattr(m.objective, "needs_logits", False)) != chunked
    losses.append(_loop(m, {"teacher": (t_model, t_params)}).step()["loss_first"])
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4, atol=1e-6)
