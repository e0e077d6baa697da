"""Tests of jaxsi.training.optimizer: schedules, AdamW, clipping, decay mask, MultiSteps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsi.training import optimizer as opt_lib


@pytest.mark.parametrize("schedule,expected", [
    # lr=1, warmup 2, total 6, end ratio 0.1.
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi / 4)), 0.55,
                0.1 + 0.45 * (1 + math.cos(3 * math.pi / 4)), 0.1, 0.1]),
    ("linear", [0.0, 0.5, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1]),
])
def test_schedule_values(schedule, expected):
  fn = opt_lib.make_schedule(learning_rate=1.0, schedule=schedule, warmup_steps=2,
                             total_steps=6, end_lr_ratio=0.1)
  got = [float(fn(s)) for s in range(8)]
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_schedule_without_warmup_and_errors():
  fn = opt_lib.make_schedule(learning_rate=2.0, schedule="linear", warmup_steps=0,
                             total_steps=4, end_lr_ratio=0.0)
  np.testing.assert_allclose([float(fn(s)) for s in range(5)], [2.0, 1.5, 1.0, 0.5, 0.0])
  with pytest.raises(ValueError, match="schedule"):
    opt_lib.make_schedule(learning_rate=1.0, schedule="step")
  with pytest.raises(ValueError, match="total_steps"):
    opt_lib.make_schedule(learning_rate=1.0, schedule="cosine", warmup_steps=5, total_steps=5)


def _params():
  return {"w": jnp.array([[1.0, -2.0], [0.5, 4.0]]), "b": jnp.array([1.0, -1.0])}


def test_adamw_first_step_hand_computed():
  # First Adam step: m̂ = g, v̂ = g² → u = g / (|g| + eps); decoupled decay on w only.
  lr, wd, eps = 0.1, 0.5, 1.0
  tx = opt_lib.make_optimizer(learning_rate=lr, schedule="constant", weight_decay=wd,
                              eps=eps, max_grad_norm=None)
  params = _params()
  grads = {"w": jnp.array([[1.0, 0.0], [-3.0, 2.0]]), "b": jnp.array([2.0, -1.0])}
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  g_w, g_b = np.asarray(grads["w"]), np.asarray(grads["b"])
  want_w = np.asarray(params["w"]) - lr * (g_w / (np.abs(g_w) + eps) + wd * np.asarray(params["w"]))
  want_b = np.asarray(params["b"]) - lr * (g_b / (np.abs(g_b) + eps))
  np.testing.assert_allclose(new["w"], want_w, rtol=1e-6)
  np.testing.assert_allclose(new["b"], want_b, rtol=1e-6)
  assert float(opt_lib.learning_rate(state)) == pytest.approx(lr)


def test_global_norm_clipping():
  # g = [3, 4] (norm 5) clipped to norm 1 → [0.6, 0.8]; eps=1 makes Adam scale-sensitive.
  tx = opt_lib.make_optimizer(learning_rate=1.0, schedule="constant", eps=1.0,
                              max_grad_norm=1.0)
  params = {"v": jnp.zeros(2)}
  updates, _ = tx.update({"v": jnp.array([3.0, 4.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates["v"], [-0.6 / 1.6, -0.8 / 1.8], rtol=1e-5)


def test_weight_decay_mask_default_excludes_vectors():
  tx = opt_lib.make_optimizer(learning_rate=0.1, schedule="constant", weight_decay=0.5)
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.asarray(params["w"]), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"], np.zeros(2))


def test_decay_mask_from_logical_axes():
  axes = {"norm": ("layers", "norm"), "w": ("layers", "embed", "mlp"),
          "vec": ("layers", "embed"), "head": ("embed", None), "bias": (None,),
          "emb": ("vocab", "embed")}
  mask = opt_lib.decay_mask_from_logical_axes(axes)
  assert mask == {"norm": False, "w": True, "vec": False, "head": True, "bias": False,
                  "emb": True}


def test_learning_rate_follows_schedule_over_updates():
  tx = opt_lib.make_optimizer(learning_rate=1.0, schedule="linear", warmup_steps=2,
                              total_steps=6, end_lr_ratio=0.1)
  params = {"v": jnp.ones(3)}
  state = tx.init(params)
  lrs = []
  for _ in range(4):
    _, state = tx.update({"v": jnp.ones(3)}, state, params)
    lrs.append(float(opt_lib.learning_rate(state)))
  np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.775], atol=1e-6)
  with pytest.raises(ValueError, match="learning_rate"):
    opt_lib.learning_rate(optax.sgd(0.1).init(params))


def test_multisteps_accumulates_mean_of_k_grads():
  kw = dict(learning_rate=0.1, schedule="constant", eps=1.0, max_grad_norm=None)
  tx2 = opt_lib.make_optimizer(grad_accum_steps=2, **kw)
  tx1 = opt_lib.make_optimizer(**kw)
  params = {"v": jnp.array([1.0, 2.0])}
  g1, g2 = {"v": jnp.array([1.0, -4.0])}, {"v": jnp.array([3.0, 2.0])}
  s = tx2.init(params)
  u, s = tx2.update(g1, s, params)
  np.testing.assert_array_equal(u["v"], [0.0, 0.0])  # no update mid-accumulation
  u, s = tx2.update(g2, s, params)
  u_ref, _ = tx1.update({"v": jnp.array([2.0, -1.0])}, tx1.init(params), params)
  np.testing.assert_allclose(u["v"], u_ref["v"], rtol=1e-6)
  assert float(opt_lib.learning_rate(s)) == pytest.approx(0.1)
