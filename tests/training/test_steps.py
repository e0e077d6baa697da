"""Tests of jaxsi.training.steps (single device).

Compiles are the cost on a shared 2-core CPU, so one update step (module
fixture) serves most tests; accumulation normalisation is checked exactly on a
toy linear "model" that compiles in well under a second.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import logprobs as lp_lib
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.transforms.base import ModelOutputs
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib

B, T, V = 8, 8, 32


def _batch(seed=0, b=B, uneven=False):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, size=(b, T))
  loss_mask = np.zeros((b, T), bool)
  loss_mask[:, T // 2:] = True
  if uneven:  # different numbers of loss tokens per row
    for i in range(b):
      loss_mask[i, : T - 1 - (i % 4)] = False
  return Trajectory.create(tokens, loss_mask=loss_mask)


def _state(params, tx):
  # A copy: the update step donates the state, which would delete the fixture.
  return ts_lib.create_train_state(jax.tree.map(jnp.copy, params), tx, jax.random.key(1))


@pytest.fixture(scope="module")
def setup():
  cfg = mcfg.get_config("tiny", vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                        n_kv_heads=2, head_dim=8, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  # eps=1 makes the Adam step sensitive to the gradient scale (not sign-like).
  tx = opt_lib.make_optimizer(learning_rate=1e-2, schedule="constant", eps=1.0)
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=steps_lib.sft_objective(agg="token-mean"),
                                      compiler_options=steps_lib.FAST_COMPILE)
  return model, params, tx, update


def test_sft_step_trains_compiles_once_and_reports_metrics(setup):
  model, params, tx, update = setup
  state = _state(params, tx)
  traj = _batch(0)
  losses = []
  for _ in range(4):
    state, m = update(state, traj)
    losses.append(float(m["loss"]))
  state, m = update(state, _batch(1))  # new data, same shapes: no retrace
  assert update.trace_count() == 1
  assert int(state.step) == 5
  assert losses[-1] < losses[0]
  assert {"loss", "grad_norm", "learning_rate", "tokens", "input_tokens",
          "skipped_nonfinite", "nll", "ppl"} <= set(m)
  assert float(m["tokens"]) == B * T / 2
  assert float(m["input_tokens"]) == B * T
  assert float(m["learning_rate"]) == pytest.approx(1e-2)
  assert float(m["skipped_nonfinite"]) == 0.0
  # The first loss is the token-mean NLL of the initial params.
  lp, _ = lp_lib.token_logprobs(model, params, traj.tokens, traj.positions)
  want = -np.sum(np.asarray(lp) * np.asarray(traj.loss_mask)) / (B * T / 2)
  assert losses[0] == pytest.approx(want, rel=1e-5)


def test_state_is_donated(setup):
  _, params, tx, update = setup
  state = _state(params, tx)
  leaf = jax.tree.leaves(state.params)[0]
  new_state, _ = update(state, _batch(0))
  assert leaf.is_deleted()
  assert not jax.tree.leaves(new_state.params)[0].is_deleted()


def test_nonfinite_step_is_skipped(setup):
  _, params, tx, update = setup
  state = _state(params, tx)
  good = _batch(0)
  bad = good.replace(weights=jnp.full((B,), jnp.nan, jnp.float32))  # NaN loss, grads
  state, _ = update(state, good)
  before = jax.tree.map(np.asarray, (state.params, state.opt_state))
  state, m = update(state, bad)
  assert float(m["skipped_nonfinite"]) == 1.0
  assert not np.isfinite(float(m["loss"]))
  assert int(state.step) == 2
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, b)
  state, m = update(state, good)  # training continues normally afterwards
  assert float(m["skipped_nonfinite"]) == 0.0 and int(state.step) == 3
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before[0]), jax.tree.leaves(state.params))]
  assert all(changed)
  assert update.trace_count() == 1


def test_accumulating_update_step_matches_full_batch_step(setup):
  model, params, tx, update = setup
  traj = _batch(4, uneven=True)
  s1, m1 = update(_state(params, tx), traj)
  acc = steps_lib.make_update_step(model=model, optimizer=tx,
                                   objective=steps_lib.sft_objective(agg="token-mean"),
                                   grad_accum_steps=2,
                                   compiler_options=steps_lib.FAST_COMPILE)
  s2, m2 = acc(_state(params, tx), traj)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
  assert float(m2["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=1e-4)


def _toy_outputs(params, traj):
  """A linear 'model': logprobs[b, t] = -softplus(w · onehot(token) + c)."""
  x = jax.nn.one_hot(traj.tokens, V) @ params["w"] + params["c"]
  return ModelOutputs(logprobs=-jax.nn.softplus(x))


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm"])
def test_accumulation_normalisation_is_exact(agg):
  params = {"w": jnp.linspace(-1.0, 1.0, V), "c": jnp.float32(0.3)}
  traj = _batch(3, uneven=True).replace(valid=jnp.array([1, 1, 0, 1, 1, 1, 1, 0], bool))
  obj = steps_lib.sft_objective(agg=agg)
  full = jax.jit(steps_lib.make_loss_and_grad(outputs_fn=_toy_outputs, objective=obj))
  acc = jax.jit(steps_lib.make_loss_and_grad(outputs_fn=_toy_outputs, objective=obj,
                                             grad_accum_steps=4))
  l1, _, g1 = full(params, traj)
  l4, m4, g4 = acc(params, traj)
  np.testing.assert_allclose(l4, l1, rtol=1e-6)
  assert float(m4["loss"]) == pytest.approx(float(l1), rel=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_mean_normalisation_is_mean_of_microbatch_losses():
  params = {"w": jnp.linspace(-1.0, 1.0, V), "c": jnp.float32(0.3)}
  traj = _batch(3, uneven=True)
  obj = steps_lib.sft_objective(agg="token-mean")
  mean = jax.jit(steps_lib.make_loss_and_grad(outputs_fn=_toy_outputs, objective=obj,
                                              grad_accum_steps=2, accum_normalization="mean"))
  lm, _, _ = mean(params, traj)
  # Micro-batch j holds rows j::2; each gets its own token mean.
  lp = np.asarray(_toy_outputs(params, traj).logprobs)
  m = np.asarray(traj.loss_mask, np.float64)
  parts = [-(lp[j::2] * m[j::2]).sum() / m[j::2].sum() for j in range(2)]
  assert float(lm) == pytest.approx(np.mean(parts), rel=1e-5)
  full_mean = -(lp * m).sum() / m.sum()
  assert abs(float(lm) - full_mean) > 1e-3  # uneven counts: differs from the full mean
  with pytest.raises(ValueError, match="divide"):
    mean(params, _batch(0, b=5))
  with pytest.raises(ValueError, match="accum_normalization"):
    steps_lib.make_loss_and_grad(outputs_fn=_toy_outputs, objective=obj,
                                 grad_accum_steps=2, accum_normalization="sum")


def test_eval_logprobs_step(setup):
  model, params, _, _ = setup
  traj = _batch(5)
  ev = steps_lib.make_eval_logprobs_step(model=model, objective=steps_lib.sft_objective(),
                                         with_entropy=True)
  outputs, m = ev(params, traj)
  lp, ent = lp_lib.token_logprobs(model, params, traj.tokens, traj.positions,
                                  with_entropy=True)
  np.testing.assert_allclose(outputs.logprobs, lp, rtol=1e-6)
  np.testing.assert_allclose(outputs.entropy, ent, rtol=1e-6)
  want = float(-np.sum(np.asarray(lp) * np.asarray(traj.loss_mask))
               / np.sum(np.asarray(traj.loss_mask)))
  assert float(m["nll"]) == pytest.approx(want, rel=1e-5)
  assert float(m["loss"]) == pytest.approx(want, rel=1e-5)


# FLOP accounting of the step (jaxsi/training/flops.py) -----------------------
def test_analytic_flops_hand_computed():
  from jaxsi.training import flops as flops_lib  # pylint: disable=import-outside-toplevel
  cfg = mcfg.get_config("tiny", vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                        n_kv_heads=2, head_dim=8, d_ff=64)
  # q,o: 32·4·8 each; k,v: 32·2·8 each; mlp: 3·32·64; unembedding 32·32.
  n = (2 * 1024 + 2 * 512 + 3 * 2048) + 1024
  assert flops_lib.matmul_params(cfg) == n
  # Everything but the norms (2·32 per layer + 32 final) is a matmul parameter.
  assert mcfg.num_params(cfg) - n == 2 * 32 + 32
  assert flops_lib.train_flops_per_token(cfg, seq_len=T) == 6 * n + 12 * 1 * 4 * 8 * T
  assert flops_lib.train_step_flops(cfg, batch_size=B, seq_len=T) == (
      (6 * n + 12 * 4 * 8 * T) * B * T)
  assert flops_lib.mfu(flops_per_step=4e9, step_time_s=2.0, peak_gflops=10.0) == 0.2
  with pytest.raises(ValueError):
    flops_lib.mfu(flops_per_step=1.0, step_time_s=0.0, peak_gflops=1.0)


def test_xla_flops_and_matmul_peak():
  from jaxsi.training import flops as flops_lib  # pylint: disable=import-outside-toplevel
  a = jnp.ones((64, 32)), jnp.ones((32, 16))
  got = flops_lib.xla_flops(jnp.matmul, *a)
  assert got == pytest.approx(2 * 64 * 32 * 16, rel=0.01)  # XLA CPU reports flops
  peak = flops_lib.measure_matmul_peak(n=256, repeats=2)
  assert 0.01 < peak < 1e5  # GFLOP/s of a real, finished matmul
