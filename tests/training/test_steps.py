"""Tests of jaxsi.training.steps on the real tiny decoder (single device)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import logprobs as lp_lib
from jaxsi.models import model as mmodel
from jaxsi.trajectory import Trajectory
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as ts_lib

B, T, V = 8, 8, 32


@pytest.fixture(scope="module")
def setup():
  cfg = mcfg.get_config("tiny", vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                        n_kv_heads=2, head_dim=8, d_ff=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  return model, params


def _batch(seed=0, b=B, uneven=False):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, size=(b, T))
  loss_mask = np.zeros((b, T), bool)
  loss_mask[:, T // 2:] = True
  if uneven:  # different numbers of loss tokens per row
    for i in range(b):
      loss_mask[i, : T - 1 - (i % 4)] = False
  return Trajectory.create(tokens, loss_mask=loss_mask)


def _opt(**kw):
  kw = {"learning_rate": 1e-2, "schedule": "constant", **kw}
  return opt_lib.make_optimizer(**kw)


def _state(params, tx):
  # A copy: the update step donates the state, which would delete the fixture.
  return ts_lib.create_train_state(jax.tree.map(jnp.copy, params), tx, jax.random.key(1))


def test_sft_step_trains_and_reports_metrics(setup):
  model, params = setup
  tx = _opt()
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=steps_lib.sft_objective(agg="token-mean"))
  state = _state(params, tx)
  traj = _batch(0)
  losses = []
  for _ in range(4):
    state, m = update(state, traj)
    losses.append(float(m["loss"]))
  assert int(state.step) == 4
  assert losses[-1] < losses[0]
  assert {"loss", "grad_norm", "learning_rate", "tokens", "input_tokens",
          "skipped_nonfinite", "nll", "ppl"} <= set(m)
  assert float(m["tokens"]) == B * T / 2
  assert float(m["input_tokens"]) == B * T
  assert float(m["learning_rate"]) == pytest.approx(1e-2)
  assert float(m["skipped_nonfinite"]) == 0.0
  # The first loss is the NLL of the initial params (hand-checked through logprobs).
  lp, _ = lp_lib.token_logprobs(model, params, traj.tokens, traj.positions)
  want = -np.sum(np.asarray(lp) * np.asarray(traj.loss_mask)) / (B * T / 2)
  assert losses[0] == pytest.approx(want, rel=1e-5)


def test_compiles_once_over_steps(setup):
  model, params = setup
  tx = _opt()
  update = steps_lib.make_update_step(model=model, optimizer=tx,
                                      objective=steps_lib.sft_objective())
  state = _state(params, tx)
  for i in range(3):
    state, _ = update(state, _batch(i))
  assert update.trace_count() == 1


def test_nonfinite_step_is_skipped(setup):
  model, params = setup
  tx = _opt()
  nll = steps_lib.sft_objective()

  def objective(outputs, traj):
    loss, m = nll(outputs, traj)
    poison = traj.extras["poison"][0]  # NaN in the loss when poison is set
    return loss + jnp.where(poison > 0, jnp.nan, 0.0), m

  update = steps_lib.make_update_step(model=model, optimizer=tx, objective=objective,
                                      donate=False)
  state = _state(params, tx)
  good = _batch(0).replace(extras={"poison": jnp.zeros((B,))})
  bad = good.replace(extras={"poison": jnp.ones((B,))})
  state, _ = update(state, good)
  before = state
  state, m = update(state, bad)
  assert float(m["skipped_nonfinite"]) == 1.0
  assert int(state.step) == 2
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, b)
  state, m = update(state, good)  # training continues normally afterwards
  assert float(m["skipped_nonfinite"]) == 0.0 and int(state.step) == 3
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params))]
  assert any(changed)


def test_grad_accumulation_global_equals_full_batch(setup):
  model, params = setup
  out_fn = steps_lib.model_outputs_fn(model)
  obj = steps_lib.sft_objective(agg="token-mean")
  traj = _batch(3, uneven=True)
  full = steps_lib.make_loss_and_grad(outputs_fn=out_fn, objective=obj)
  acc = steps_lib.make_loss_and_grad(outputs_fn=out_fn, objective=obj,
                                     grad_accum_steps=4, accum_normalization="global")
  mean = steps_lib.make_loss_and_grad(outputs_fn=out_fn, objective=obj,
                                      grad_accum_steps=4, accum_normalization="mean")
  l1, _, g1 = jax.jit(full)(params, traj)
  l4, m4, g4 = jax.jit(acc)(params, traj)
  lm, _, gm = jax.jit(mean)(params, traj)
  np.testing.assert_allclose(l4, l1, rtol=1e-5)
  assert float(m4["loss"]) == pytest.approx(float(l1), rel=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # Uneven token counts: the mean of micro-batch token-means is not the full mean.
  assert abs(float(lm) - float(l1)) > 1e-3
  with pytest.raises(ValueError, match="divide"):
    jax.jit(acc)(params, _batch(0, b=6))


def test_accumulating_update_step_matches_full_batch_step(setup):
  model, params = setup
  tx = _opt(eps=1.0)  # eps=1 so the Adam step is sensitive to gradient scale
  obj = steps_lib.sft_objective()
  traj = _batch(4, uneven=True)
  s1, m1 = steps_lib.make_update_step(model=model, optimizer=tx, objective=obj)(
      _state(params, tx), traj)
  s2, m2 = steps_lib.make_update_step(model=model, optimizer=tx, objective=obj,
                                      grad_accum_steps=2)(_state(params, tx), traj)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(m2["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=1e-4)


def test_eval_logprobs_step(setup):
  model, params = setup
  traj = _batch(5)
  ev = steps_lib.make_eval_logprobs_step(model=model, objective=steps_lib.sft_objective(),
                                         with_entropy=True)
  outputs, m = ev(params, traj)
  lp, ent = lp_lib.token_logprobs(model, params, traj.tokens, traj.positions,
                                  with_entropy=True)
  np.testing.assert_allclose(outputs.logprobs, lp, rtol=1e-6)
  np.testing.assert_allclose(outputs.entropy, ent, rtol=1e-6)
  want = -np.sum(np.asarray(lp) * np.asarray(traj.loss_mask)) / np.sum(traj.loss_mask)
  assert float(m["nll"]) == pytest.approx(want, rel=1e-5)
  assert float(m["loss"]) == pytest.approx(want, rel=1e-5)
