"""round_store: chunk concatenation pads token-aligned extras with the token fields."""

import numpy as np
import pytest

from jaxsi.training import round_store
from jaxsi.trajectory import Trajectory


def _chunk(b, t, extras, *, pair_ids=None, task="t"):
  tokens = np.arange(1, b * t + 1, dtype=np.int32).reshape(b, t)
  traj = Trajectory.create(tokens, group_ids=np.zeros((b,), np.int32),
                           prompt_ids=np.zeros((b,), np.int32),
                           rewards=np.ones((b, 1), np.float32), extras=extras)
  if pair_ids is not None:
    traj = traj.replace(pair_ids=np.asarray(pair_ids, np.int32))
  return round_store.StoredChunk(traj=traj, reward_names=("correct",),
                                 task_ids=[task], prompt_texts=["p"])


def test_concat_pads_token_aligned_extras_and_keeps_row_extras(tmp_path):
  # Chunk 0: B=2, T=3; chunk 1: B=1, T=5. 'topk' is [B, T, 2] (token-aligned),
  # 'score' is [B] and 'vec' [B, 4] (row extras, the same per-row shape).
  topk0 = np.arange(12, dtype=np.float32).reshape(2, 3, 2) + 1.0
  topk1 = np.full((1, 5, 2), 7.0, np.float32)
  c0 = _chunk(2, 3, {"topk": topk0, "score": np.array([0.5, 1.5], np.float32),
                     "vec": np.ones((2, 4), np.float32)}, pair_ids=[1, -1])
  c1 = _chunk(1, 5, {"topk": topk1, "score": np.array([2.5], np.float32),
                     "vec": np.zeros((1, 4), np.float32)}, pair_ids=[-1], task="u")
  out = round_store.concat_chunks([c0, c1])
  t = out.traj
  assert t.tokens.shape == (3, 5)
  np.testing.assert_array_equal(t.tokens[0], [1, 2, 3, 0, 0])
  assert t.extras["topk"].shape == (3, 5, 2)
  # Chunk 0's rows are right-padded with zeros after position 2.
  np.testing.assert_array_equal(t.extras["topk"][:2, :3], topk0)
  np.testing.assert_array_equal(t.extras["topk"][:2, 3:], 0.0)
  np.testing.assert_array_equal(t.extras["topk"][2], topk1[0])
  np.testing.assert_array_equal(t.extras["score"], [0.5, 1.5, 2.5])
  assert t.extras["vec"].shape == (3, 4)
  # Pair links and prompt ids are offset into the concatenated batch.
  np.testing.assert_array_equal(t.pair_ids, [1, -1, -1])
  np.testing.assert_array_equal(t.prompt_ids, [0, 0, 1])
  assert out.task_ids == ["t", "u"]
  # The padded chunk survives a save / load round trip.
  path = str(tmp_path / "c.npz")
  round_store.save_trajectory(path, out)
  back = round_store.load_trajectory(path)
  np.testing.assert_array_equal(back.traj.extras["topk"], t.extras["topk"])


def test_concat_equal_lengths_leaves_extras_alone():
  # Same T: nothing is padded even where an extra's axis 1 equals T.
  e = {"x": np.ones((2, 3), np.float32)}
  out = round_store.concat_chunks([_chunk(2, 3, e), _chunk(2, 3, dict(e))])
  assert out.traj.extras["x"].shape == (4, 3)


def test_concat_refuses_misaligned_extra():
  # 'ctx' (a privileged prompt's own tokens) is [B, 4] in one chunk and
  # [B, 6] in the other, following neither chunk's T (3, 5).
  c0 = _chunk(1, 3, {"ctx": np.ones((1, 4), np.int32)})
  c1 = _chunk(1, 5, {"ctx": np.ones((1, 6), np.int32)})
  with pytest.raises(ValueError, match=r"extras\['ctx'\]"):
    round_store.concat_chunks([c0, c1])


def test_concat_refuses_different_extras_keys():
  c0 = _chunk(1, 3, {"a": np.ones((1,), np.float32)})
  c1 = _chunk(1, 3, {"b": np.ones((1,), np.float32)})
  with pytest.raises(ValueError, match="different extras"):
    round_store.concat_chunks([c0, c1])
