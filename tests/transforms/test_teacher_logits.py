"""Tests for jaxsi.transforms.teacher_logits (top-k teacher, chunked over rows)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.trajectory import ModelOutputs, Trajectory
from jaxsi.transforms import distillation as dist
from jaxsi.transforms import teacher_logits as tl
from jaxsi.transforms.base import Context

B, T, V = 4, 5, 7


def fake_scorer(table, traj):
  """Logits that depend on the row's whole prefix: table[tok] summed causally."""
  e = table[traj.tokens]                       # [b, T, V]
  return ModelOutputs(logprobs=jnp.zeros(traj.tokens.shape),
                      logits=jnp.cumsum(e, axis=1))


def _traj():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
  mask = np.ones((B, T), bool)
  mask[1, 3:] = False
  return Trajectory.create(jnp.asarray(tokens), input_mask=jnp.asarray(mask),
                           loss_mask=jnp.asarray(mask))


def _ctx(table):
  return Context(params={"teacher": table},
                 scorers=(("teacher/logits", fake_scorer),))


def test_topk_of_logits_hand_numbers():
  # p = (0.5, 0.3, 0.2) → top-2 = ids (0, 1), log-probs (log .5, log .3).
  ids, lps, tail = tl.topk_of_logits(jnp.log(jnp.array([0.5, 0.3, 0.2])), 2)
  np.testing.assert_array_equal(ids, [0, 1])
  np.testing.assert_allclose(lps, np.log([0.5, 0.3]), rtol=1e-6)
  np.testing.assert_allclose(tail, np.log(0.2), rtol=1e-6)   # the rest: 0.2


@pytest.mark.parametrize("row_chunk", [1, 2, 4])
def test_chunked_equals_unchunked(row_chunk):
  table = jnp.asarray(np.random.default_rng(1).normal(size=(V, V)), jnp.float32)
  traj = _traj()
  full = fake_scorer(table, traj).logits        # [B, T, V], the unchunked pass
  want_lps, want_ids = jax.lax.top_k(jax.nn.log_softmax(full, -1), 3)
  fn = jax.jit(lambda tr, c: tl.teacher_topk(k=3, row_chunk=row_chunk).update(
      tr, (), c)[0])
  out = fn(traj, _ctx(table))
  m = np.asarray(traj.input_mask)
  got_ids = np.asarray(out.extras[tl.TOPK_IDS_KEY])
  got_lps = np.asarray(out.extras[tl.TOPK_LOGPROBS_KEY])
  np.testing.assert_array_equal(got_ids[m], np.asarray(want_ids)[m])
  np.testing.assert_allclose(got_lps[m], np.asarray(want_lps)[m], rtol=1e-6)
  # Tail = log(1 − Σ top-3 probabilities) of the unchunked pass.
  want_tail = np.log1p(-np.exp(np.asarray(want_lps, np.float64)).sum(-1))
  np.testing.assert_allclose(np.asarray(out.extras[tl.TOPK_TAIL_KEY])[m],
                             want_tail[m], rtol=1e-4, atol=1e-5)
  # Padding: ids 0 and the floor.
  assert (got_ids[~m] == 0).all() and (got_lps[~m] == tl.LOGPROB_FLOOR).all()
  assert tl.TOPK_IDS_KEY == dist.TOPK_IDS_KEY
  assert tl.TOPK_LOGPROBS_KEY == dist.TOPK_LOGPROBS_KEY


def test_one_chunk_of_logits_alive():
  # The scorer only ever sees row_chunk rows (so at most [row_chunk, T, V]).
  seen = []

  def scorer(table, traj):
    seen.append(traj.tokens.shape)
    return fake_scorer(table, traj)

  table = jnp.eye(V)
  ctx = Context(params={"teacher": table}, scorers=(("teacher/logits", scorer),))
  tl.teacher_topk(k=2, row_chunk=2).update(_traj(), (), ctx)
  assert seen and all(s == (2, T) for s in seen)


def test_mass_metric_and_errors():
  # Teacher logits log(0.5, 0.3, 0.2, 0, …) at every position → top-2 mass 0.8.
  z = np.full((V,), -1e9, np.float32)
  z[:3] = np.log([0.5, 0.3, 0.2])

  def scorer(p, traj):
    return ModelOutputs(logprobs=jnp.zeros(traj.tokens.shape),
                        logits=jnp.broadcast_to(p, traj.tokens.shape + (V,)))

  ctx = Context(params={"teacher": jnp.asarray(z)},
                scorers=(("teacher/logits", scorer),))
  _, _, m = tl.teacher_topk(k=2).update(_traj(), (), ctx)
  np.testing.assert_allclose(float(m["teacher_topk/mass"]), 0.8, rtol=1e-5)
  with pytest.raises(ValueError, match="row_chunk=3"):
    tl.teacher_topk(k=2, row_chunk=3).update(_traj(), (), ctx)
  with pytest.raises(ValueError, match="k must be"):
    tl.teacher_topk(k=0)
  no_logits = Context(params={"teacher": 0}, scorers=(
      ("teacher/logits", lambda p, tr: ModelOutputs(logprobs=jnp.zeros(tr.tokens.shape))),))
  with pytest.raises(ValueError, match="no logits"):
    tl.teacher_topk(k=2).update(_traj(), (), no_logits)


def test_topk_under_another_context_is_aligned_to_the_completion():
  """context='c': the other layout has 2 more prompt columns; the stored
  top-k at traj column j is the other layout's column j + 2, on loss tokens
  only (floor elsewhere)."""
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.normal(size=(V, V)), jnp.float32)
  tokens = np.asarray(rng.integers(0, V, size=(B, T)), np.int32)
  loss = np.zeros((B, T), bool)
  loss[:, 2:] = True
  loss[1, 4] = False
  other_tokens = np.concatenate(
      [rng.integers(0, V, size=(B, 2)).astype(np.int32), tokens], axis=1)
  traj = Trajectory.create(jnp.asarray(tokens), loss_mask=jnp.asarray(loss),
                           extras={"c_tokens": jnp.asarray(other_tokens)})
  k = V
  out, _, _ = tl.teacher_topk(k=k, context="c").update(traj, (), _ctx(table))
  full = jax.nn.log_softmax(np.cumsum(np.asarray(table)[other_tokens], axis=1), -1)
  lps = np.asarray(out.extras[tl.TOPK_LOGPROBS_KEY])
  ids = np.asarray(out.extras[tl.TOPK_IDS_KEY])
  for b in range(B):
    for j in range(T):
      if loss[b, j]:
        want = np.asarray(full[b, j + 2])
        np.testing.assert_allclose(lps[b, j], np.sort(want)[::-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ids[b, j], np.argsort(-want, kind="stable"))
      else:
        assert (lps[b, j] == tl.LOGPROB_FLOOR).all() and (ids[b, j] == 0).all()
  # jit gives the same arrays.
  jitted = jax.jit(lambda t: tl.teacher_topk(k=k, context="c").update(
      t, (), _ctx(table))[0])(traj)
  np.testing.assert_allclose(jitted.extras[tl.TOPK_LOGPROBS_KEY], lps, rtol=1e-6)
  with pytest.raises(KeyError, match="d_tokens"):
    tl.teacher_topk(k=2, context="d").update(traj, (), _ctx(table))
