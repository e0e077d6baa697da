"""topk_jsd(chunked=True): the student's full distribution chunk by chunk over T.

Same loss and gradient as the full-logits path, and no [B, T, V] array in the
compiled step (XLA's own memory analysis of the gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import distillation as dist
from jaxsi.transforms import teacher_logits as tl
from jaxsi.transforms.base import objective


def _setup(vocab, b, t, k, seed=0):
  cfg = mcfg.get_config("tiny", vocab_size=vocab, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, size=(b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)
  mask[1, t - 2:] = False
  loss = mask.copy()
  loss[:, :2] = False
  teacher = jnp.asarray(rng.normal(size=(b, t, vocab)) * 2.0, jnp.float32)
  ids, lps, tail = tl.topk_of_logits(teacher, k)
  traj = Trajectory.create(jnp.asarray(tokens), input_mask=jnp.asarray(mask),
                           loss_mask=jnp.asarray(loss), extras={
                               dist.TOPK_IDS_KEY: ids, dist.TOPK_LOGPROBS_KEY: lps,
                               dist.TOPK_TAIL_KEY: tail})
  return model, params, traj


def _losses(model, params, traj, beta, chunk_size, temperature=1.0):
  full = dist.topk_jsd(beta=beta)
  chunked = dist.topk_jsd(beta=beta, chunked=True)
  f_full = logprobs_lib.score_fn(model, with_logits=True, temperature=temperature)
  f_chunk = logprobs_lib.score_fn(model, logits_reducer=chunked.logits_reducer,
                                  chunk_size=chunk_size, temperature=temperature)
  lf = lambda p: full(f_full(p, traj), traj)[0]
  lc = lambda p: chunked(f_chunk(p, traj), traj)[0]
  return lf, lc


@pytest.mark.parametrize("beta, chunk_size", [(0.5, 3), (1.0, 4), (0.0, 100)])
def test_chunked_equals_full_value_and_gradient(beta, chunk_size):
  model, params, traj = _setup(vocab=19, b=2, t=9, k=5)
  lf, lc = _losses(model, params, traj, beta, chunk_size, temperature=0.7)
  np.testing.assert_allclose(lc(params), lf(params), rtol=1e-5, atol=1e-6)
  gf, gc = jax.grad(lf)(params), jax.grad(lc)(params)
  for a, c in zip(jax.tree.leaves(gf), jax.tree.leaves(gc)):
    np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-6)
  assert float(lf(params)) > 0.0


def test_no_full_logits_in_the_compiled_gradient():
  """One f32 [B, T, V] array is 2·256·4096·4 B = 8 MiB. The full path's
  gradient holds more than 3 of them in temporaries (logits, softmax,
  cotangents: 37 MB measured); the chunked path's whole temporary memory is
  less than one (4.7 MB measured: 8-step chunks, activations, gradients)."""
  vocab, b, t = 4096, 2, 256
  model, params, traj = _setup(vocab=vocab, b=b, t=t, k=8)
  lf, lc = _losses(model, params, traj, 0.5, chunk_size=8)
  temp = lambda f: jax.jit(jax.grad(f)).lower(params).compile().memory_analysis(
      ).temp_size_in_bytes
  full_bytes, chunk_bytes = temp(lf), temp(lc)
  logits_bytes = b * t * vocab * 4
  assert full_bytes >= 3 * logits_bytes, (full_bytes, logits_bytes)
  assert chunk_bytes < logits_bytes, (chunk_bytes, logits_bytes)


def test_marks_and_errors():
  chunked = dist.topk_jsd(chunked=True)
  assert not getattr(chunked, "needs_logits", False)
  assert dist.topk_jsd(beta=0.3, chunked=True).logits_reducer is \
      dist.topk_jsd(beta=0.3, chunked=True).logits_reducer      # one step per setting
  assert objective((1.0, chunked, "kd")).logits_reducer is chunked.logits_reducer
  with pytest.raises(ValueError, match="different logits_reducer"):
    objective((1.0, chunked, "a"), (1.0, dist.topk_jsd(beta=0.1, chunked=True), "b"))
  model, params, traj = _setup(vocab=19, b=2, t=9, k=5)
  out = logprobs_lib.score_fn(model)(params, traj)
  with pytest.raises(ValueError, match="logits_reducer"):
    chunked(out, traj)
  bare = traj.replace(extras={})
  with pytest.raises(ValueError, match="lacks"):
    logprobs_lib.score_fn(model, logits_reducer=chunked.logits_reducer)(params, bare)
