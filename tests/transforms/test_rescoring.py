"""Tests for jaxsi.transforms.rescoring with a fake, context-dependent scorer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import rescoring as rs
from jaxsi.transforms.base import Context, ModelOutputs


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tiny programs compile faster without XLA's heavy optimisations."""
  prev = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", prev)


def fake_scorer(params, traj):
  """lp[t] = −s·(0.1·tok_t + 0.01·Σ_{u<t} real tok_u): depends on the prefix."""
  tok = traj.tokens.astype(jnp.float32) * traj.input_mask
  prefix = jnp.cumsum(tok, axis=1) - tok
  lp = -params["scale"] * (0.1 * tok + 0.01 * prefix) * traj.input_mask
  return ModelOutputs(logprobs=lp, entropy=jnp.abs(lp))


def np_fake(tokens, input_mask, scale):
  tok = tokens.astype(np.float64) * input_mask
  prefix = np.cumsum(tok, 1) - tok
  return -scale * (0.1 * tok + 0.01 * prefix) * input_mask


def ctx_for(**scales):
  return Context(params={k: {"scale": jnp.float32(v)} for k, v in scales.items()},
                 scorers=(("policy", fake_scorer),))


def layout(prompts, completions, p_len, c_len):
  """[left-padded prompt bucket | right-padded completion bucket]."""
  b = len(prompts)
  tokens = np.zeros((b, p_len + c_len), np.int32)
  imask = np.zeros_like(tokens, bool)
  lmask = np.zeros_like(tokens, bool)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    tokens[i, p_len - len(p):p_len] = p
    imask[i, p_len - len(p):p_len] = True
    tokens[i, p_len:p_len + len(c)] = c
    imask[i, p_len:p_len + len(c)] = True
    lmask[i, p_len:p_len + len(c)] = True
  return tokens, imask, lmask


PROMPTS = [[5, 6], [7, 8, 9]]
COMPLETIONS = [[11, 12, 13], [14, 15]]


def run(transform, traj, ctx):
  out, _, metrics = jax.jit(transform.update)(traj, transform.init(), ctx)
  return out, metrics


def test_ref_and_teacher_logprobs():
  tokens, imask, lmask = layout(PROMPTS, COMPLETIONS, 3, 4)
  traj = Trajectory.create(tokens, input_mask=imask, loss_mask=lmask)
  ctx = ctx_for(policy=1.0, reference=2.0, teacher=3.0)
  out, m = run(rs.ref_logprobs(), traj, ctx)
  np.testing.assert_allclose(out.ref_logprobs, np_fake(tokens, imask, 2.0),
                             rtol=1e-6)
  want_mean = np_fake(tokens, imask, 2.0)[lmask].mean()
  np.testing.assert_allclose(m["ref_logprobs/mean"], want_mean, rtol=1e-6)
  out, _ = run(rs.teacher_logprobs(entropy_key="teacher_entropy"), out, ctx)
  np.testing.assert_allclose(out.teacher_logprobs, np_fake(tokens, imask, 3.0),
                             rtol=1e-6)
  np.testing.assert_allclose(out.extras["teacher_entropy"],
                             np.abs(np_fake(tokens, imask, 3.0)), rtol=1e-6)
  assert out.ref_logprobs is not None  # earlier field kept
  out, _ = run(rs.score_logprobs(field="my_lp", params="teacher"), traj, ctx)
  np.testing.assert_allclose(out.extras["my_lp"], np_fake(tokens, imask, 3.0),
                             rtol=1e-6)
  with pytest.raises(KeyError):
    rs.ref_logprobs().update(traj, (), ctx_for(policy=1.0))


def test_ref_logprobs_stop_gradient():
  tokens, imask, lmask = layout(PROMPTS, COMPLETIONS, 3, 4)
  traj = Trajectory.create(tokens, input_mask=imask, loss_mask=lmask)

  def f(scale):
    ctx = Context(params={"reference": {"scale": scale}},
                  scorers=(("policy", fake_scorer),))
    out, _, _ = rs.ref_logprobs().update(traj, (), ctx)
    return jnp.sum(out.ref_logprobs)

  assert float(jax.grad(f)(jnp.float32(1.0))) == 0.0


@pytest.mark.parametrize("other_p_len", [5, 2])
def test_rescore_under_another_prompt(other_p_len):
  tokens, imask, lmask = layout(PROMPTS, COMPLETIONS, 3, 4)
  hints = [[1, 2, 3, 4, 5], [9, 9]] if other_p_len == 5 else [[3, 4], [2]]
  alt_tok, alt_im, alt_lm = layout(hints, COMPLETIONS, other_p_len, 4)
  traj = Trajectory.create(tokens, input_mask=imask, loss_mask=lmask,
                           extras={"hint_tokens": jnp.asarray(alt_tok),
                                   "hint_input_mask": jnp.asarray(alt_im)})
  t = rs.rescore(context="hint", field="teacher_logprobs", params="policy")
  out, m = run(t, traj, ctx_for(policy=1.0))
  # expected: completion log-probs under the hint, computed on the hint layout
  alt_lp = np_fake(alt_tok, alt_im, 1.0)
  want = np.zeros(tokens.shape)
  want[lmask] = alt_lp[alt_lm]
  np.testing.assert_allclose(out.teacher_logprobs, want, rtol=1e-6, atol=1e-7)
  # by hand for sample 0, first completion token (11) after hint 1..5
  if other_p_len == 5:
    assert float(out.teacher_logprobs[0, 3]) == pytest.approx(
        -(0.1 * 11 + 0.01 * 15))
  assert float(m["rescore/token_mismatch"]) == 0.0
  # the same completion under its own prompt differs (the prefix matters)
  own = np_fake(tokens, imask, 1.0)
  assert not np.allclose(np.asarray(out.teacher_logprobs)[lmask], own[lmask])


def test_rescore_contract_violation_is_reported_and_identity_case():
  tokens, imask, lmask = layout(PROMPTS, COMPLETIONS, 3, 4)
  # identity: the "other" layout is the trajectory itself
  traj = Trajectory.create(tokens, input_mask=imask, loss_mask=lmask,
                           extras={"rescore_tokens": jnp.asarray(tokens),
                                   "rescore_input_mask": jnp.asarray(imask)})
  out, m = run(rs.rescore(field="old_logprobs"), traj, ctx_for(policy=1.0))
  np.testing.assert_allclose(out.old_logprobs,
                             np_fake(tokens, imask, 1.0) * lmask, rtol=1e-6)
  assert float(m["rescore/token_mismatch"]) == 0.0
  # left-aligned completion (wrong layout): the mismatch metric catches it
  bad = np.zeros((2, 9), np.int32)
  bad[:, :7] = tokens
  traj_bad = traj.replace(extras={"rescore_tokens": jnp.asarray(bad)})
  _, m = run(rs.rescore(), traj_bad, ctx_for(policy=1.0))
  assert float(m["rescore/token_mismatch"]) > 0.5
  with pytest.raises(KeyError):
    rs.rescore(context="nope").update(traj, (), ctx_for(policy=1.0))


def test_rescore_jit_matches_eager():
  tokens, imask, lmask = layout(PROMPTS, COMPLETIONS, 3, 4)
  alt_tok, alt_im, _ = layout([[1, 2, 3, 4], [6]], COMPLETIONS, 4, 4)
  traj = Trajectory.create(tokens, input_mask=imask, loss_mask=lmask,
                           extras={"rescore_tokens": jnp.asarray(alt_tok),
                                   "rescore_input_mask": jnp.asarray(alt_im)})
  t = rs.rescore()
  ctx = ctx_for(policy=1.5)
  e_out, _, _ = t.update(traj, (), ctx)
  j_out, _, _ = jax.jit(t.update)(traj, (), ctx)
  np.testing.assert_allclose(e_out.teacher_logprobs, j_out.teacher_logprobs,
                             rtol=1e-6)
