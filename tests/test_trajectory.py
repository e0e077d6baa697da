"""Tests of the Trajectory pytree and its helpers (jaxsi/trajectory.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import trajectory as T


def _traj(b=4, t=5, **kw):
  tokens = np.arange(b * t, dtype=np.int32).reshape(b, t)
  return T.Trajectory.create(tokens, **kw)


def test_create_defaults_and_left_padding_positions():
  mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  tr = T.Trajectory.create(np.ones((2, 5), np.int32), input_mask=mask)
  np.testing.assert_array_equal(tr.positions, [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(tr.group_ids, [0, 1])
  np.testing.assert_array_equal(tr.pair_ids, [-1, -1])
  np.testing.assert_array_equal(tr.weights, [1.0, 1.0])
  assert tr.valid.all() and not tr.loss_mask.any()
  assert tr.rewards is None and tr.advantages is None


def test_masked_and_sequence_reductions():
  x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  m = jnp.array([[1, 1, 0], [0, 0, 0]], bool)
  np.testing.assert_allclose(T.masked_sum(x, m), [3.0, 0.0])
  np.testing.assert_allclose(T.masked_mean(x, m), [1.5, 0.0])  # empty mask → 0, no NaN
  tr = T.Trajectory.create(jnp.zeros((2, 3), jnp.int32), loss_mask=m)
  np.testing.assert_allclose(T.sequence_mean(x, tr), [1.5, 0.0])
  np.testing.assert_array_equal(tr.completion_lengths, [2, 0])


def test_group_helpers_any_layout():
  gids = jnp.array([0, 2, 0, 2, 4])
  x = jnp.array([1.0, 10.0, 3.0, 20.0, 7.0])
  np.testing.assert_allclose(T.group_sum(x, gids), [4, 30, 4, 30, 7])
  np.testing.assert_allclose(T.group_count(gids), [2, 2, 2, 2, 1])
  mask = jnp.array([True, True, False, True, True])
  np.testing.assert_allclose(T.group_sum(x, gids, mask), [1, 30, 1, 30, 7])
  np.testing.assert_allclose(T.group_count(gids, mask), [1, 2, 1, 2, 1])
  g = T.group_reshape(jnp.arange(6), 3)
  assert g.shape == (2, 3)
  np.testing.assert_array_equal(T.group_flatten(g), np.arange(6))
  with pytest.raises(T.TrajectoryError, match="multiple of group size"):
    T.group_reshape(jnp.arange(5), 2)


def test_select_concat_and_pad():
  a = _traj(b=2, t=3, group_ids=[0, 0], rewards=jnp.ones((2, 1)))
  b = _traj(b=2, t=3, group_ids=[0, 1], rewards=jnp.zeros((2, 1)))
  c = T.concat([a, b])
  assert c.batch_size == 4
  np.testing.assert_array_equal(c.group_ids, [0, 0, 2, 3])  # offset keeps groups distinct
  np.testing.assert_array_equal(c.rewards[:, 0], [1, 1, 0, 0])
  s = T.select(c, jnp.array([3, 0]))
  np.testing.assert_array_equal(s.tokens, np.stack([b.tokens[1], a.tokens[0]]))
  p = T.pad_length(a, 5)
  assert p.tokens.shape == (2, 5) and not p.input_mask[:, 3:].any()
  with pytest.raises(T.TrajectoryError, match="different fields"):
    T.concat([a, _traj(b=2, t=3)])  # rewards missing in the second
  with pytest.raises(T.TrajectoryError, match="lengths differ"):
    T.concat([a, _traj(b=2, t=4, rewards=jnp.ones((2, 1)))])


@pytest.mark.parametrize("field, value, message", [
    ("loss_mask", np.ones((4, 4), bool), r"loss_mask has shape \(4, 4\), expected \[B, T\] = \(4, 5\)"),
    ("weights", np.ones((3,), np.float32), r"weights has shape \(3,\), expected \[B\]"),
    ("rewards", np.ones((4,), np.float32), r"rewards has shape \(4,\), expected \[B, K\]"),
    ("advantages", np.ones((4, 5), np.int32), r"advantages must be floating"),
    ("group_ids", np.ones((4,), np.float32), r"group_ids must be integer"),
])
def test_validation_names_field_and_shapes(field, value, message):
  tr = _traj()
  bad = tr.replace(**{field: jnp.asarray(value)})
  with pytest.raises(T.TrajectoryError, match=message):
    T.validate(bad)


def test_validation_of_extras_and_rank():
  with pytest.raises(T.TrajectoryError, match=r"extras\['finished'\]"):
    T.validate(_traj().replace(extras={"finished": jnp.ones((3,), bool)}))
  with pytest.raises(T.TrajectoryError, match=r"must be \[B, T\]"):
    T.Trajectory.create(np.ones((5,), np.int32))


def test_is_a_pytree_under_jit():
  tr = _traj(rewards=jnp.ones((4, 2)), extras={"x": jnp.ones((4, 3))})

  @jax.jit
  def f(t):
    return t.replace(advantages=jnp.broadcast_to(t.rewards[:, :1], t.tokens.shape))

  out = f(tr)
  assert out.advantages.shape == (4, 5)
  assert out.extras["x"].shape == (4, 3)
  # Absent optional fields stay None (static structure, no data-dependent branching).
  assert out.ref_logprobs is None


def test_model_outputs_is_a_pytree_and_re_exported_by_transforms():
  from jaxsi.transforms import base  # pylint: disable=g-import-not-at-top
  assert base.ModelOutputs is T.ModelOutputs and base.ScoreFn is T.ScoreFn
  out = T.ModelOutputs(logprobs=jnp.zeros((2, 3)), extras={"k": jnp.ones((2,))})
  doubled = jax.jit(lambda o: jax.tree.map(lambda x: x + 1, o))(out)
  assert doubled.entropy is None and doubled.values is None
  np.testing.assert_allclose(doubled.logprobs, 1.0)
  np.testing.assert_allclose(doubled.extras["k"], 2.0)
