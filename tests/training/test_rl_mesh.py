"""The RL loop on a device mesh, and LoRA with the base as the reference.

Sharded == single-device: the same two GRPO iterations on a 2×2×2 mesh of fake
CPU devices (conftest) and on one device give the same samples, losses and
params. LoRA: the reference policy is the frozen base itself (no copy), the
base never moves, and a non-freezing optimizer is refused.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import partitioning
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi import methods
from jaxsi.methods.base import REFERENCE
from jaxsi.models import lora
from jaxsi.training import optimizer as opt_lib
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

GRPO_KL = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                       reward_fns=(fx.first_is_digit,), kl_coef=0.1)


def _trainer(method, *, model=None, params=None, opt=None, **kw):
  tok, base_model, base_params, tasks, base_opt = fx.setup()
  return loop.Loop(model=model or base_model,
                      params=base_params if params is None else params,
                      method=method, tokenizer=tok, tasks=tasks,
                      optimizer=opt or base_opt, prompts_per_step=fx.PROMPTS,
                      compiler_options=loop.FAST_COMPILE, **kw)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_equals_single_device():
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  single = _trainer(GRPO_KL, seed=3)
  sharded = _trainer(GRPO_KL, seed=3, mesh=mesh)
  # Params and optimizer moments live on the rules' shardings.
  want = partitioning.param_shardings(sharded.model, mesh=mesh)
  for a, s in zip(jax.tree.leaves(sharded.state.params), jax.tree.leaves(want)):
    assert a.sharding.is_equivalent_to(s, a.ndim), (a.sharding, s)
  assert any(not s.is_fully_replicated for s in jax.tree.leaves(want))
  for _ in range(2):
    m1, m2 = single.step(), sharded.step()
    np.testing.assert_array_equal(np.asarray(single.last_traj.tokens),
                                  np.asarray(sharded.last_traj.tokens))
    for k in ("loss", "reward/mean", "kl", "pg/clipfrac"):
      np.testing.assert_allclose(m1[k], m2[k], rtol=1e-4, atol=1e-6, err_msg=k)
  # The trajectory was batch-sharded over ('data', 'fsdp').
  tok_sharding = sharded.last_traj.tokens.sharding
  assert tok_sharding.is_equivalent_to(
      partitioning.data_sharding(mesh), 2), tok_sharding
  for a, b in zip(jax.tree.leaves(single.state.params),
                  jax.tree.leaves(sharded.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-5)
  # Shardings survive the donated updates.
  for a, s in zip(jax.tree.leaves(sharded.state.params), jax.tree.leaves(want)):
    assert a.sharding.is_equivalent_to(s, a.ndim)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_resume(tmp_path):
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  first = _trainer(GRPO_KL, seed=4, mesh=mesh, workdir=str(tmp_path))
  first.step()
  first.save()
  first.close()
  resumed = _trainer(GRPO_KL, seed=4, mesh=mesh, workdir=str(tmp_path))
  assert resumed.iteration == 1
  want = partitioning.param_shardings(resumed.model, mesh=mesh)
  for a, b, s in zip(jax.tree.leaves(first.state.params),
                     jax.tree.leaves(resumed.state.params),
                     jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert b.sharding.is_equivalent_to(s, b.ndim)
  resumed.step()
  resumed.close()


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_mesh_batch_must_divide():
  mesh = partitioning.make_mesh(data=8, fsdp=1, tensor=1)
  method = methods.grpo(rollout=RolloutSpec(n=3, max_new_tokens=fx.MAX_NEW),
                        reward_fns=(fx.first_is_digit,), kl_coef=0.0)
  with pytest.raises(ValueError, match="batch shards"):
    _trainer(method, mesh=mesh)


def _lora_setup():
  tok, base_model, base_params, tasks, _ = fx.setup()
  model = lora.build(base_model.config, lora.LoraConfig(
      rank=2, alpha=4.0, targets=("q_proj", "v_proj", "up_proj")))
  params = lora.add_adapters(base_params, model.init_adapters(jax.random.key(5)))
  opt = opt_lib.make_optimizer(learning_rate=3e-2, schedule="constant",
                               weight_decay=0.1, max_grad_norm=1.0)
  return model, params, opt


def test_lora_reference_is_the_frozen_base_without_a_copy():
  model, params, opt = _lora_setup()
  base_before = fx.host_params(lora.base_params(params))
  adapters_before = fx.host_params(lora.adapter_params(params))
  trainer = _trainer(GRPO_KL, model=model, params=params,
                     opt=lora.freeze_base(opt), seed=1)
  assert trainer.phases[0].lora_reference and REFERENCE not in trainer.frozen
  first = trainer.step()
  # Adapters start at B = 0: the policy equals the reference at the first
  # minibatch, so the k3 KL of the first update is exactly 0.
  assert abs(float(first["kl"])) < 1e-7, first["kl"]
  trainer.step()
  second_kl = trainer.history[-1]["kl"]
  # The base arrays never move (weight decay 0.1 notwithstanding) ...
  for a, b in zip(jax.tree.leaves(base_before),
                  jax.tree.leaves(lora.base_params(trainer.state.params))):
    np.testing.assert_array_equal(a, np.asarray(b))
  # ... the adapters do, and the policy has left the reference.
  moved = [np.abs(np.asarray(b) - a).max() for a, b in zip(
      jax.tree.leaves(adapters_before),
      jax.tree.leaves(lora.adapter_params(trainer.state.params)))]
  assert max(moved) > 0
  assert second_kl > 0


def test_lora_reference_needs_a_frozen_base():
  model, params, opt = _lora_setup()
  assert lora.is_base_frozen(lora.freeze_base(opt), params)
  assert not lora.is_base_frozen(opt, params)
  with pytest.raises(ValueError, match="freeze_base"):
    _trainer(GRPO_KL, model=model, params=params, opt=opt)
