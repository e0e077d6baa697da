"""jaxsi.training.roles.build_roles, called directly (the Loop's use of it is
tests/training/test_loop_roles.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import methods
from jaxsi import spec
from jaxsi.spec import RolloutSpec
from jaxsi.training import roles
from tests.methods import rl_fixtures as fx


def _build(method, given=None, **kw):
  tok, model, params, _, opt = fx.setup()
  return params, roles.build_roles(
      methods=(method,), model=model, params=params, given=given or {},
      tokenizer=tok, optimizer=opt, prompts_per_step=fx.PROMPTS, seed=0, **kw)


def _grpo(**kw):
  return methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                      reward_fns=(lambda tasks, texts: [0.0] * len(texts),), **kw)


def test_reference_from_initial_is_a_real_copy_and_params_stay_valid():
  params, r = _build(_grpo(kl_coef=0.1))
  assert r.trained == ("policy",)
  assert set(r.frozen) == {"reference"} and set(r.states) == {"policy"}
  leaves = jax.tree.leaves(params)
  ref = jax.tree.leaves(r.frozen["reference"])
  pol = jax.tree.leaves(r.states["policy"].params)
  for a, b, c in zip(leaves, ref, pol):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  # Three distinct buffers: the policy's are donated to the update step.
  assert all(b.unsafe_buffer_pointer() != c.unsafe_buffer_pointer()
             for b, c in zip(ref, pol))
  assert not any(leaf.is_deleted() for leaf in leaves)   # copy_params=True
  assert r.lora_reference == {} and r.param_shardings == {}


def test_no_reference_without_kl_and_aliases_resolve():
  _, r = _build(_grpo(kl_coef=0.0), given={"judge": "policy"})
  assert r.frozen == {} and r.aliases == {"judge": "policy"}


def test_refusals_name_the_role():
  with pytest.raises(spec.ConfigurationError, match="'judge' shares role 'critic'"):
    _build(_grpo(kl_coef=0.0), given={"judge": "critic"})
  with pytest.raises(spec.ConfigurationError, match="divisible by minibatches=3"):
    _build(_grpo(kl_coef=0.0, optim=spec.OptimSpec(minibatches=3)))
