"""Tests for jaxsi.transforms.base.objective's marks (the sums are tested with every method)."""

import jax.numpy as jnp
import numpy as np

from jaxsi.trajectory import ModelOutputs, Trajectory
from jaxsi.transforms import distillation
from jaxsi.transforms.base import objective


def test_objective_carries_needs_logits_of_any_term():
  plain = lambda outputs, traj: (jnp.sum(outputs.logprobs), {})
  assert not getattr(objective(plain), "needs_logits", False)
  both = objective((1.0, plain, "a"), (0.5, distillation.topk_jsd(), "b"))
  assert both.needs_logits
  # The sum itself is unchanged by the mark: 2·Σlp with two plain terms.
  traj = Trajectory.create(np.ones((1, 2), np.int32))
  out = ModelOutputs(logprobs=jnp.array([[1.0, 2.0]]))
  loss, metrics = objective((1.0, plain), (1.0, plain))(out, traj)
  np.testing.assert_allclose(loss, 6.0)
  np.testing.assert_allclose(metrics["term0/loss"], 3.0)
