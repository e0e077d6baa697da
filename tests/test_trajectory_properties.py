"""Property-based tests (hypothesis) of ``Trajectory.validate``
(jaxsi/trajectory.py): every well-formed random trajectory is accepted, and
each single corrupted field is rejected with a TrajectoryError naming the
field (and, for shape errors, the shapes)."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import trajectory as T

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
OPTIONAL_TOKEN = ("segment_ids", "turn_ids", "span_ids", "behaviour_logprobs",
                  "old_logprobs", "ref_logprobs", "teacher_logprobs",
                  "token_rewards", "advantages", "returns", "values")


@st.composite
def trajectories(draw):
  b = draw(st.integers(1, 5))
  t = draw(st.integers(1, 6))
  seed = draw(st.integers(0, 2**32 - 1))
  rng = np.random.default_rng(seed)
  input_mask = rng.random((b, t)) < draw(st.sampled_from([0.0, 0.5, 1.0]))
  loss_mask = input_mask & (rng.random((b, t)) < 0.5)
  optional = {}
  for name in draw(st.sets(st.sampled_from(OPTIONAL_TOKEN))):
    if name.endswith("_ids"):
      optional[name] = rng.integers(-3, 4, (b, t)).astype(np.int32)
    else:
      x = rng.normal(size=(b, t)).astype(np.float32)
      if name.endswith("logprobs"):
        x = -np.abs(x) * input_mask  # 0 where undefined
      optional[name] = x
  if draw(st.booleans()):
    optional["rewards"] = rng.normal(size=(b, draw(st.integers(1, 3)))).astype(
        np.float32)
  traj = T.Trajectory.create(
      rng.integers(0, 100, (b, t)), input_mask=input_mask, loss_mask=loss_mask,
      group_ids=rng.integers(0, b, (b,)), prompt_ids=rng.integers(0, 50, (b,)),
      pair_ids=rng.integers(-1, b, (b,)),
      weights=rng.random(b).astype(np.float32), valid=rng.random(b) < 0.8,
      extras={"finished": rng.random(b) < 0.5}, **optional)
  return traj, seed


def _present(traj):
  return [n for n in T.TOKEN_FIELDS + T.SAMPLE_FIELDS + T.REWARD_FIELDS
          if getattr(traj, n) is not None]


@SETTINGS
@given(trajectories())
def test_well_formed_trajectories_are_accepted(drawn):
  traj, _ = drawn
  assert T.validate(traj) is traj
  # Also with host (numpy) leaves.
  host = jax.tree.map(np.asarray, traj)
  assert T.validate(host) is host


def _corruptions(traj, rng):
  """(field, corrupted value, message regex) for every present field."""
  b, t = traj.tokens.shape
  out = []
  for name in _present(traj):
    v = np.asarray(getattr(traj, name))
    shape = v.shape
    # A wrong shape: one more row, one more column, or a dropped axis.
    if name in T.TOKEN_FIELDS:
      bad_shapes = [(b + 1, t), (b, t + 1), (b,)]
    elif name in T.SAMPLE_FIELDS:
      bad_shapes = [(b + 1,), (b, 1)]
    else:  # [B, K]
      bad_shapes = [(b + 1, shape[1]), (b,), (b, shape[1], 1)]
    for bad_shape in bad_shapes:
      if name != "tokens":
        message = (rf"Trajectory\.{name} has shape {re.escape(str(bad_shape))}, "
                   rf"expected .*\(from tokens {re.escape(str((b, t)))}\)")
      elif len(bad_shape) == 2:  # the other fields now disagree with tokens
        message = rf"has shape .*\(from tokens {re.escape(str(bad_shape))}\)"
      else:
        message = (rf"Trajectory\.tokens must be \[B, T\], got shape "
                   rf"{re.escape(str(bad_shape))}")
      out.append((name, np.zeros(bad_shape, v.dtype), message))
    # A wrong dtype.
    kind = v.dtype.kind
    bad = {"i": np.float32, "b": np.int32, "f": np.int32}[kind]
    want = {"i": "integer", "b": "bool", "f": "floating"}[kind]
    out.append((name, v.astype(bad), rf"Trajectory\.{name} must be {want}"))
    # Not an array at all.
    out.append((name, v.tolist(), rf"Trajectory\.{name} must be an array"))
  i, j = int(rng.integers(b)), int(rng.integers(t))
  g = np.asarray(traj.group_ids).copy()
  g[i] = rng.choice([b, -1, b + 7])
  out.append(("group_ids", g, rf"Trajectory\.group_ids must be in \[0, B\) = "
              rf"\[0, {b}\).*first at \[{i}\]"))
  # loss_mask outside input_mask: a padding position marked for training.
  im = np.asarray(traj.input_mask).copy()
  lm = np.asarray(traj.loss_mask).copy()
  im[i, j], lm[i, j] = False, True
  out.append((("input_mask", "loss_mask"), (im, lm),
              rf"Trajectory\.loss_mask is True outside input_mask .*first at "
              rf"\[{i}, {j}\].*loss_mask \({b}, {t}\), input_mask \({b}, {t}\)"))
  for name in T.LOGPROB_FIELDS:
    if getattr(traj, name) is not None:
      x = np.asarray(getattr(traj, name)).copy()
      x[i, j] = np.nan
      out.append((name, x, rf"Trajectory\.{name} has NaN at 1 entry, first at "
                  rf"\[{i}, {j}\].*shape \({b}, {t}\)"))
  return out


@SETTINGS
@given(trajectories())
def test_each_single_corruption_is_rejected(drawn):
  traj, seed = drawn
  rng = np.random.default_rng(seed + 1)
  for field, value, message in _corruptions(traj, rng):
    if isinstance(field, tuple):
      bad = traj.replace(**dict(zip(field, value)))
    else:
      bad = traj.replace(**{field: value})
    with pytest.raises(T.TrajectoryError, match=message):
      T.validate(bad)


def test_hand_examples():
  tr = T.Trajectory.create(np.zeros((2, 3), np.int32))
  with pytest.raises(T.TrajectoryError, match=r"group_ids must be in \[0, B\) = "
                     r"\[0, 2\); 1 entry, first at \[1\] \(value 2"):
    T.Trajectory.create(np.zeros((2, 3), np.int32), group_ids=[0, 2])
  with pytest.raises(T.TrajectoryError, match=r"loss_mask is True outside "
                     r"input_mask .*2 entries, first at \[0, 0\]"):
    T.Trajectory.create(np.zeros((2, 3), np.int32),
                        input_mask=[[0, 1, 1], [1, 1, 0]],
                        loss_mask=[[1, 1, 1], [0, 0, 1]])
  with pytest.raises(T.TrajectoryError, match=r"ref_logprobs has NaN"):
    T.validate(tr.replace(ref_logprobs=jnp.array([[0.0, np.nan, 0.0]] * 2)))
  # Non-finite but not NaN log-probs (-inf: a token the model rules out) pass.
  T.validate(tr.replace(ref_logprobs=jnp.array([[0.0, -np.inf, 0.0]] * 2)))
  # Under jit only shapes and dtypes are checked (values are tracers).
  jax.eval_shape(T.validate, tr.replace(group_ids=jnp.array([0, 9])))
  # Abstract arrays: shapes and dtypes only.
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tr)
  T.validate(abstract.replace(group_ids=jax.ShapeDtypeStruct((2,), jnp.int32)))
  with pytest.raises(T.TrajectoryError, match=r"weights has shape \(3,\)"):
    T.validate(abstract.replace(weights=jax.ShapeDtypeStruct((3,), jnp.float32)))
