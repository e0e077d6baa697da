"""Tests for jaxsi.transforms.distillation (formulas.md §2.7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import distillation as dist
from jaxsi.transforms.base import ModelOutputs

B, T, V = 8, 6, 5

RNG = np.random.default_rng(0)
STUDENT = RNG.normal(0, 1.5, size=(B, T, V)).astype(np.float32)
TEACHER = RNG.normal(0, 1.5, size=(B, T, V)).astype(np.float32)
MASK = RNG.random((B, T)) < 0.6
MASK[0, 0] = True


# ------------------------------------------------ independent numpy reference
def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl_div(input_logp, target_logp):
  """torch F.kl_div(input, target, reduction='none', log_target=True).sum(-1)."""
  return (np.exp(target_logp) * (target_logp - input_logp)).sum(-1)


def np_trl_generalized_jsd(student_logits, teacher_logits, beta, temperature=1.0):
  """TRL 1.10 GKDTrainer.generalized_jsd_loss, reduction='none' summed over V."""
  s = _log_softmax(student_logits.astype(np.float64) / temperature)
  t = _log_softmax(teacher_logits.astype(np.float64) / temperature)
  if beta == 0:
    return _kl_div(s, t)
  if beta == 1:
    return _kl_div(t, s)
  mix = np.logaddexp(s + np.log(1 - beta), t + np.log(beta))
  return beta * _kl_div(mix, t) + (1 - beta) * _kl_div(mix, s)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_matches_trl(beta, temperature):
  ours = dist.generalized_jsd(jnp.asarray(STUDENT), jnp.asarray(TEACHER), beta=beta,
                              temperature=temperature)
  np.testing.assert_allclose(ours, np_trl_generalized_jsd(STUDENT, TEACHER, beta, temperature),
                             rtol=1e-4, atol=1e-6)


def test_generalized_jsd_hand_numbers():
  # V = 2, student uniform, teacher (0.75, 0.25):
  # KL(t‖s) = 0.75·log 1.5 + 0.25·log 0.5; KL(s‖t) = 0.5·log(0.5/0.75) + 0.5·log 2.
  s = jnp.zeros((1, 2))
  t = jnp.log(jnp.array([[0.75, 0.25]]))
  fwd = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  rev = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(2.0)
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=0.0), [fwd], rtol=1e-5)
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=1.0), [rev], rtol=1e-5)
  m = np.array([0.625, 0.375])  # ½(student + teacher)
  jsd = 0.5 * (0.75 * np.log(0.75 / m[0]) + 0.25 * np.log(0.25 / m[1])) + 0.5 * (
      0.5 * np.log(0.5 / m[0]) + 0.5 * np.log(0.5 / m[1]))
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=0.5), [jsd], rtol=1e-5)


def test_generalized_jsd_special_cases():
  s, t = jnp.asarray(STUDENT), jnp.asarray(TEACHER)
  ls, lt = _log_softmax(STUDENT.astype(np.float64)), _log_softmax(TEACHER.astype(np.float64))
  fwd = (np.exp(lt) * (lt - ls)).sum(-1)   # KL(teacher ‖ student)
  rev = (np.exp(ls) * (ls - lt)).sum(-1)   # KL(student ‖ teacher)
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=0.0), fwd, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=1.0), rev, rtol=1e-4, atol=1e-6)
  # Continuous limits: JSD_β/β → KL(teacher‖student) (β→0), JSD_β/(1−β) → KL(student‖teacher) (β→1).
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=1e-3) / 1e-3, fwd, rtol=2e-2,
                             atol=1e-3)
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=1 - 1e-3) / 1e-3, rev, rtol=2e-2,
                             atol=1e-3)
  # Symmetric at β = 0.5, zero for identical inputs, non-negative.
  np.testing.assert_allclose(dist.generalized_jsd(s, t, beta=0.5),
                             dist.generalized_jsd(t, s, beta=0.5), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(dist.generalized_jsd(s, s, beta=0.3), 0.0, atol=1e-6)
  assert np.all(np.asarray(dist.generalized_jsd(s, t, beta=0.3)) >= -1e-7)
  # JSD_0.5 ≤ log 2.
  assert np.all(np.asarray(dist.generalized_jsd(s, t, beta=0.5)) <= np.log(2) + 1e-6)
  with pytest.raises(ValueError):
    dist.generalized_jsd(s, t, beta=1.5)


def _traj(extras, valid=None, teacher_logprobs=None):
  return Trajectory.create(np.zeros((B, T), np.int32), loss_mask=MASK, valid=valid,
                           extras=extras, teacher_logprobs=teacher_logprobs)


def test_token_divergence_term_batchmean_and_gradients():
  traj = _traj({"teacher_logits": TEACHER})
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), logits=jnp.asarray(STUDENT))
  for kind, beta in (("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.5)):
    loss, m = dist.token_divergence(kind=kind, beta=0.5)(out, traj)
    per = np_trl_generalized_jsd(STUDENT, TEACHER, beta)
    np.testing.assert_allclose(loss, (per * MASK).sum() / MASK.sum(), rtol=1e-4)  # batchmean
    np.testing.assert_allclose(m["divergence"], loss, rtol=1e-5)
  term = dist.token_divergence(kind="jsd", beta=0.5, temperature=2.0)
  f = lambda z: term(ModelOutputs(logprobs=jnp.zeros((B, T)), logits=z), traj)[0]
  check_grads(f, (jnp.asarray(STUDENT),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2,
              eps=1e-2)
  # The teacher gets no gradient.
  g_t = jax.grad(lambda zt: dist.token_divergence(kind="jsd")(
      out, _traj({"teacher_logits": zt}))[0])(jnp.asarray(TEACHER))
  np.testing.assert_allclose(g_t, 0.0)
  np.testing.assert_allclose(jax.jit(term)(out, traj)[0], term(out, traj)[0], rtol=1e-6)
  with pytest.raises(ValueError, match="kind"):
    dist.token_divergence(kind="tvd")


def test_invalid_rows_excluded():
  valid = np.arange(B) < 4
  traj = _traj({"teacher_logits": TEACHER}, valid=valid)
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), logits=jnp.asarray(STUDENT))
  loss, _ = dist.token_divergence(kind="forward_kl")(out, traj)
  per = np_trl_generalized_jsd(STUDENT, TEACHER, 0.0)
  m = MASK & valid[:, None]
  np.testing.assert_allclose(loss, (per * m).sum() / m.sum(), rtol=1e-4)


def test_topk_distillation():
  # K = V with renormalisation is exactly forward KL(teacher ‖ student).
  t_logp = _log_softmax(TEACHER.astype(np.float64)).astype(np.float32)
  ids = np.argsort(-t_logp, axis=-1).astype(np.int32)
  top = np.take_along_axis(t_logp, ids, axis=-1)
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), logits=jnp.asarray(STUDENT))
  traj = _traj({"teacher_topk_ids": ids, "teacher_topk_logprobs": top})
  loss, _ = dist.topk_distillation()(out, traj)
  fwd, _ = dist.token_divergence(kind="forward_kl")(out, _traj({"teacher_logits": TEACHER}))
  np.testing.assert_allclose(loss, fwd, rtol=1e-5)
  # K = 2, hand formula: q = softmax(top2), Σ q (log q − log p_s[id]).
  k = 2
  traj2 = _traj({"teacher_topk_ids": ids[..., :k], "teacher_topk_logprobs": top[..., :k]})
  loss2, _ = dist.topk_distillation()(out, traj2)
  q = _log_softmax(top[..., :k].astype(np.float64))
  ps = np.take_along_axis(_log_softmax(STUDENT.astype(np.float64)), ids[..., :k], axis=-1)
  per = (np.exp(q) * (q - ps)).sum(-1)
  np.testing.assert_allclose(loss2, (per * MASK).sum() / MASK.sum(), rtol=1e-5)
  # Without renormalisation the teacher's own top-k probabilities are used.
  loss3, _ = dist.topk_distillation(renormalize=False)(out, traj2)
  qn = top[..., :k].astype(np.float64)
  per3 = (np.exp(qn) * (qn - ps)).sum(-1)
  np.testing.assert_allclose(loss3, (per3 * MASK).sum() / MASK.sum(), rtol=1e-5)
  with pytest.raises(ValueError):
    dist.topk_distillation(renormalize=False, temperature=2.0)


def test_sampled_reverse_kl():
  rng = np.random.default_rng(1)
  lp = rng.normal(-2, 0.5, size=(B, T)).astype(np.float32)
  tlp = rng.normal(-2, 0.5, size=(B, T)).astype(np.float32)
  traj = _traj({}, teacher_logprobs=jnp.asarray(tlp))
  n = MASK.sum()
  d = (lp - tlp) * MASK
  f = lambda x, est="pg": dist.sampled_reverse_kl(estimator=est)(
      ModelOutputs(logprobs=x), traj)[0]
  np.testing.assert_allclose(f(jnp.asarray(lp)), d.sum() / n, rtol=1e-5)   # value = k1
  g_pg = jax.grad(f)(jnp.asarray(lp))
  np.testing.assert_allclose(g_pg, d / n, rtol=1e-5, atol=1e-8)            # d·∇ℓp
  g_k2 = jax.grad(lambda x: f(x, "k2"))(jnp.asarray(lp))
  np.testing.assert_allclose(g_k2, g_pg, rtol=1e-5, atol=1e-8)             # k2 path-wise
  g_k1 = jax.grad(lambda x: f(x, "k1"))(jnp.asarray(lp))
  np.testing.assert_allclose(g_k1, MASK / n, rtol=1e-6)
  _, m = dist.sampled_reverse_kl()(ModelOutputs(logprobs=jnp.asarray(lp)), traj)
  np.testing.assert_allclose(m["reverse_kl"], d.sum() / n, rtol=1e-5)
  with pytest.raises(ValueError, match="teacher_logprobs"):
    dist.sampled_reverse_kl()(ModelOutputs(logprobs=jnp.asarray(lp)), _traj({}))


# ------------------------------------------ top-k teacher: generalised JSD
def test_topk_jsd_hand_numbers():
  # V = 3, teacher (0.5, 0.3, 0.2), K = 1 keeps id 0: teacher buckets
  # (0.5, tail 0.5); student uniform: buckets (1/3, tail 2/3).
  #   β = 0: KL(t‖s) = 0.5·log(0.5·3) + 0.5·log(0.5·1.5) = 0.5 log 1.5 + 0.5 log 0.75
  #   β = 1: KL(s‖t) = (1/3)·log(2/3) + (2/3)·log(4/3)
  #   tail=False: both renormalise to (1,) over the one id → 0.
  s_logits = jnp.zeros((1, 2, 3))
  ids = jnp.zeros((1, 2, 1), jnp.int32)
  t_lp = jnp.full((1, 2, 1), np.log(0.5), jnp.float32)
  traj = Trajectory.create(jnp.zeros((1, 2), jnp.int32),
                           loss_mask=jnp.array([[False, True]]))
  traj = traj.replace(extras={dist.TOPK_IDS_KEY: ids,
                              dist.TOPK_LOGPROBS_KEY: t_lp})
  out = ModelOutputs(logprobs=jnp.zeros((1, 2)), logits=s_logits)
  fwd = 0.5 * np.log(1.5) + 0.5 * np.log(0.75)
  rev = (1 / 3) * np.log(2 / 3) + (2 / 3) * np.log(4 / 3)
  for beta, want in ((0.0, fwd), (1.0, rev)):
    loss, m = dist.topk_jsd(beta=beta)(out, traj)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(m["topk_mass"]), 1 / 3, rtol=1e-5)
  # β = 0.5: M = ((1/3+1/2)/2, (2/3+1/2)/2) = (5/12, 7/12);
  # JSD = 0.5·KL(t‖M) + 0.5·KL(s‖M).
  mix = np.array([5 / 12, 7 / 12])
  t, s = np.array([0.5, 0.5]), np.array([1 / 3, 2 / 3])
  jsd = 0.5 * np.sum(t * np.log(t / mix)) + 0.5 * np.sum(s * np.log(s / mix))
  loss, _ = dist.topk_jsd(beta=0.5)(out, traj)
  np.testing.assert_allclose(float(loss), jsd, rtol=1e-5)
  loss, _ = dist.topk_jsd(beta=0.5, tail=False)(out, traj)
  np.testing.assert_allclose(float(loss), 0.0, atol=1e-7)
  # A stored exact teacher tail log(0.5) gives the same numbers.
  stored = traj.replace(extras={**traj.extras,
                                dist.TOPK_TAIL_KEY: jnp.full((1, 2), np.log(0.5))})
  loss, _ = dist.topk_jsd(beta=0.0)(out, stored)
  np.testing.assert_allclose(float(loss), fwd, rtol=1e-5)
  assert dist.topk_jsd().needs_logits and dist.token_divergence().needs_logits


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_topk_jsd_with_k_equal_v_is_the_full_jsd(beta):
  # K = V (all ids, any order): the tail bucket is empty and the loss is the
  # full-vocabulary generalised JSD (TRL's loss), value and gradient.
  from jaxsi.transforms import teacher_logits as tl
  ids, lps, tail = tl.topk_of_logits(jnp.asarray(TEACHER), V)
  assert (np.asarray(tail) == tl.LOGPROB_FLOOR).all()   # empty tail
  traj = Trajectory.create(jnp.zeros((B, T), jnp.int32), loss_mask=jnp.asarray(MASK))
  traj = traj.replace(extras={dist.TOPK_IDS_KEY: ids, dist.TOPK_LOGPROBS_KEY: lps,
                              dist.TOPK_TAIL_KEY: tail})
  full = traj.replace(extras={dist.TEACHER_LOGITS_KEY: jnp.asarray(TEACHER)})

  def loss(fn, tr):
    return lambda z: fn(ModelOutputs(logprobs=jnp.zeros((B, T)), logits=z), tr)[0]

  a = loss(dist.topk_jsd(beta=beta), traj)
  b = loss(dist.token_divergence(kind="jsd", beta=beta), full)
  z = jnp.asarray(STUDENT)
  np.testing.assert_allclose(float(a(z)), float(b(z)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.grad(a)(z), jax.grad(b)(z), rtol=1e-4, atol=1e-6)


def test_topk_jsd_is_a_lower_bound_with_small_k():
  # Merging the non-top-k ids into one bucket cannot increase the divergence.
  from jaxsi.transforms import teacher_logits as tl
  traj = Trajectory.create(jnp.zeros((B, T), jnp.int32), loss_mask=jnp.asarray(MASK))
  full = traj.replace(extras={dist.TEACHER_LOGITS_KEY: jnp.asarray(TEACHER)})
  out = ModelOutputs(logprobs=jnp.zeros((B, T)), logits=jnp.asarray(STUDENT))
  ref = float(dist.token_divergence(kind="jsd", beta=0.5)(out, full)[0])
  prev = 0.0
  for k in (1, 2, 4, V):
    ids, lps, tail = tl.topk_of_logits(jnp.asarray(TEACHER), k)
    tk = traj.replace(extras={dist.TOPK_IDS_KEY: ids, dist.TOPK_LOGPROBS_KEY: lps,
                              dist.TOPK_TAIL_KEY: tail})
    got = float(dist.topk_jsd(beta=0.5)(out, tk)[0])
    assert prev - 1e-6 <= got <= ref + 1e-6
    prev = got
  np.testing.assert_allclose(prev, ref, rtol=1e-5)


def test_sampled_reverse_kl_importance_weight():
  """ρ = exp(lp − old): value and gradient ρ·d·∇lp; ρ = 1 equals 'pg'."""
  lp = jnp.array([[0.0, -1.0, -2.0]])
  tlp = jnp.array([[0.0, -0.5, -3.0]])
  old = jnp.array([[0.0, -1.5, -2.0]])      # ρ = (·, e^{0.5}, 1)
  loss_mask = np.array([[0, 1, 1]], bool)
  traj = Trajectory.create(np.ones((1, 3), np.int32), loss_mask=loss_mask,
                           teacher_logprobs=tlp, old_logprobs=old)
  term = dist.sampled_reverse_kl(importance=True)
  f = lambda x: term(ModelOutputs(logprobs=x), traj)[0]
  # d = (−0.5, 1); ρd = (−0.5·e^{0.5}, 1); token mean over 2 tokens.
  rho = np.exp(0.5)
  np.testing.assert_allclose(f(lp), (-0.5 * rho + 1.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(lp), [[0.0, -0.5 * rho / 2, 0.5]], rtol=1e-6)
  same = traj.replace(old_logprobs=lp)
  g_pg = jax.grad(lambda x: dist.sampled_reverse_kl()(ModelOutputs(logprobs=x), same)[0])(lp)
  g_is = jax.grad(lambda x: term(ModelOutputs(logprobs=x), same)[0])(lp)
  np.testing.assert_allclose(g_is, g_pg, rtol=1e-6)
  with pytest.raises(ValueError, match="estimator='pg'"):
    dist.sampled_reverse_kl(estimator="k2", importance=True)
  with pytest.raises(ValueError, match="old_logprobs"):
    term(ModelOutputs(logprobs=lp), traj.replace(old_logprobs=None))
