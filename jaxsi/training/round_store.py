"""The on-disk store of a rounds run: trajectories per chunk, records, selections.

Layout under ``workdir``::

  rounds.json                      records of finished rounds (the history)
  round_{r:03d}/plan.json          the round's plan (B-STaR's choice …)
  round_{r:03d}/chunks/chunk_{c:05d}.npz   the chunk's Trajectory (+ decode data)
  round_{r:03d}/chunks/chunk_{c:05d}.json  the chunk's JSON records (commit marker)
  round_{r:03d}/selected.json      selected examples / pairs and metrics
  train/policy_round_{r:03d}       M-step checkpoints (removed once pooled)
  pool/                            CheckpointPool: round r's parameters

Every file is written atomically (temp file, fsync, rename), so after a kill
at any instant a file is either complete or absent. A chunk counts as done
when its JSON exists; the trajectory is written first, so a done chunk always
has both. A chunk's Trajectory is a numpy pytree saved field by field: every
present Trajectory field (tokens, masks, rewards f32[B, K], group_ids,
prompt_ids, pair_ids …) and every extra, plus ``reward_names`` (the column
names) and ``task_ids`` / ``prompt_texts`` indexed by ``prompt_ids`` (what
turns a row back into an example without the task list). Every filter and
pair builder of ``jaxsi.transforms`` runs on :meth:`RoundStore.trajectory`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from jaxsi import trajectory as traj_lib
from jaxsi.trajectory import Trajectory

_FIELD, _EXTRA, _META = "field/", "extra/", "meta/"


# ------------------------------------------------------------------ atomic io
def _write_atomic(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  fd = os.open(os.path.dirname(path), os.O_RDONLY)
  try:
    os.fsync(fd)   # the rename itself survives a crash
  finally:
    os.close(fd)


def write_json_atomic(path: str, obj: Any, indent: Optional[int] = None) -> None:
  """Writes JSON to ``path`` atomically (temp file, fsync, rename)."""
  _write_atomic(path, json.dumps(obj, indent=indent).encode())


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


# --------------------------------------------------------------- trajectories
@dataclasses.dataclass
class StoredChunk:
  """A chunk's Trajectory (numpy) with what decodes it.

  Attributes:
    traj: the Trajectory; ``prompt_ids`` index ``task_ids``/``prompt_texts``.
    reward_names: names of the ``traj.rewards`` columns.
    task_ids: the task id of every prompt.
    prompt_texts: the prompt text every row was sampled under.
  """

  traj: Trajectory
  reward_names: tuple
  task_ids: list
  prompt_texts: list


def save_trajectory(path: str, chunk: StoredChunk) -> None:
  """Writes a chunk's Trajectory atomically as one ``.npz`` file."""
  arrays = {}
  for f in dataclasses.fields(Trajectory):
    v = getattr(chunk.traj, f.name)
    if f.name == "extras":
      arrays.update({_EXTRA + k: np.asarray(x) for k, x in v.items()})
    elif v is not None:
      arrays[_FIELD + f.name] = np.asarray(v)
  arrays[_META + "reward_names"] = np.asarray(list(chunk.reward_names), dtype=str)
  arrays[_META + "task_ids"] = np.asarray(list(chunk.task_ids), dtype=str)
  arrays[_META + "prompt_texts"] = np.asarray(list(chunk.prompt_texts), dtype=str)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  _write_atomic(path, buf.getvalue())


def load_trajectory(path: str) -> StoredChunk:
  """Reads a chunk written by :func:`save_trajectory`."""
  with np.load(path, allow_pickle=False) as z:
    fields = {k[len(_FIELD):]: z[k] for k in z.files if k.startswith(_FIELD)}
    extras = {k[len(_EXTRA):]: z[k] for k in z.files if k.startswith(_EXTRA)}
    meta = {k[len(_META):]: z[k].tolist() for k in z.files if k.startswith(_META)}
  return StoredChunk(traj=Trajectory(**fields, extras=extras),
                     reward_names=tuple(meta["reward_names"]),
                     task_ids=list(meta["task_ids"]),
                     prompt_texts=list(meta["prompt_texts"]))


def _token_aligned_extras(chunks: Sequence[StoredChunk]) -> set[str]:
  """Extras keys to right-pad with the [B, T] fields when chunk lengths differ.

  An extra is token-aligned when its axis 1 equals its chunk's length T in
  every chunk (top-k teacher log-probs [B, T, k], per-token entropies …);
  those are padded with zeros like the token fields. An extra whose axis 1
  differs between chunks without following T (a privileged prompt's own
  tokens [B, T'], say) cannot be concatenated: a ValueError names it.
  """
  lengths = {c.traj.length for c in chunks}
  if len(lengths) == 1:
    return set()
  aligned = set()
  for key in chunks[0].traj.extras:
    shapes = [np.shape(c.traj.extras[key]) for c in chunks]
    if all(len(s) >= 2 and s[1] == c.traj.length for s, c in zip(shapes, chunks)):
      aligned.add(key)
    elif len({s[1:] for s in shapes}) != 1:
      raise ValueError(
          f"concat_chunks: extras[{key!r}] has per-row shapes"
          f" {sorted({s[1:] for s in shapes})} across chunks of lengths"
          f" {[c.traj.length for c in chunks]}: its axis 1 neither matches every"
          " chunk's length T (token-aligned, padded) nor is the same in every chunk")
  return aligned


def _pad_chunk(traj: Trajectory, length: int, aligned: set[str]) -> Trajectory:
  t = traj_lib.pad_length(traj, length)
  if not aligned:
    return t
  extras = dict(t.extras)
  for key in aligned:
    v = np.asarray(extras[key])
    width = [(0, 0)] * v.ndim
    width[1] = (0, length - v.shape[1])
    extras[key] = np.pad(v, width)
  return t.replace(extras=extras)


def concat_chunks(chunks: Sequence[StoredChunk]) -> Optional[StoredChunk]:
  """One StoredChunk of several (padded to one length; group and prompt ids
  offset so groups and prompts stay distinct).

  The [B, T] Trajectory fields and the token-aligned extras (axis 1 = the
  chunk's T in every chunk) are right-padded with zeros to the longest chunk;
  any other extra must have the same per-row shape in every chunk.
  """
  chunks = [c for c in chunks if c.traj.batch_size]
  if not chunks:
    return None
  names = {c.reward_names for c in chunks}
  if len(names) != 1:
    raise ValueError(f"concat_chunks: reward columns differ {sorted(names)}")
  keys = {tuple(sorted(c.traj.extras)) for c in chunks}
  if len(keys) != 1:
    raise ValueError(f"concat_chunks: chunks carry different extras {sorted(keys)}")
  aligned = _token_aligned_extras(chunks)
  length = max(c.traj.length for c in chunks)
  parts, task_ids, texts = [], [], []
  for c in chunks:
    t = _pad_chunk(c.traj, length, aligned)
    off = len(task_ids)
    pair = np.asarray(t.pair_ids)
    rows = sum(p.batch_size for p in parts)
    parts.append(t.replace(prompt_ids=np.asarray(t.prompt_ids) + off,
                           pair_ids=np.where(pair >= 0, pair + rows, -1).astype(np.int32)))
    task_ids += c.task_ids
    texts += c.prompt_texts
  traj = jax.tree.map(np.asarray, traj_lib.concat(parts))
  return StoredChunk(traj=traj, reward_names=chunks[0].reward_names,
                     task_ids=task_ids, prompt_texts=texts)


# ----------------------------------------------------------------- the store
class RoundStore:
  """The on-disk layout of a rounds run (see the module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)

  def round_dir(self, r: int) -> str:
    return os.path.join(self.workdir, f"round_{int(r):03d}")

  def chunk_path(self, r: int, c: int, ext: str = "json") -> str:
    return os.path.join(self.round_dir(r), "chunks", f"chunk_{int(c):05d}.{ext}")

  def has_chunk(self, r: int, c: int) -> bool:
    return os.path.exists(self.chunk_path(r, c))

  def write_chunk(self, r: int, c: int, records: Sequence[dict],
                  chunk: Optional[StoredChunk] = None) -> None:
    """Stores chunk ``c`` of round ``r``: its Trajectory first, then its records
    (the JSON is the chunk's commit marker)."""
    if chunk is not None:
      save_trajectory(self.chunk_path(r, c, "npz"), chunk)
    write_json_atomic(self.chunk_path(r, c), {"chunk": int(c), "records": list(records)})

  def read_chunks(self, r: int, num_chunks: int) -> list[dict]:
    """All candidate records of round ``r`` in chunk order.

    Raises:
      FileNotFoundError: a chunk is missing.
    """
    out = []
    for c in range(num_chunks):
      out.extend(read_json(self.chunk_path(r, c))["records"])
    return out

  def chunk_trajectory(self, r: int, c: int) -> Optional[StoredChunk]:
    """Chunk ``c``'s stored Trajectory, or None (a chunk without samples)."""
    p = self.chunk_path(r, c, "npz")
    return load_trajectory(p) if os.path.exists(p) else None

  def trajectory(self, r: int, num_chunks: int) -> Optional[StoredChunk]:
    """Round ``r``'s trajectories, all chunks concatenated in chunk order."""
    chunks = [self.chunk_trajectory(r, c) for c in range(num_chunks)]
    return concat_chunks([c for c in chunks if c is not None])

  def _path(self, r: int, name: str) -> str:
    return os.path.join(self.round_dir(r), name)

  def load(self, r: int, name: str) -> Optional[Any]:
    p = self._path(r, name)
    return read_json(p) if os.path.exists(p) else None

  def save(self, r: int, name: str, obj: Any) -> None:
    write_json_atomic(self._path(r, name), obj)

  def train_dir(self, r: int, tag: str = "policy") -> str:
    return os.path.join(self.workdir, "train", f"{tag}_round_{int(r):03d}")

  @property
  def pool_dir(self) -> str:
    """The :class:`CheckpointPool` directory (round r's parameters)."""
    return os.path.join(self.workdir, "pool")

  @property
  def records_path(self) -> str:
    return os.path.join(self.workdir, "rounds.json")

  def records(self) -> list[dict]:
    """Records of finished rounds, by round."""
    if not os.path.exists(self.records_path):
      return []
    return read_json(self.records_path)

  def add_record(self, record: Mapping[str, Any]) -> None:
    """Appends a round record (atomically rewrites ``rounds.json``).

    Raises:
      ValueError: that round already has a record.
    """
    recs = self.records()
    if any(x["round"] == record["round"] for x in recs):
      raise ValueError(f"RoundStore: round {record['round']} already recorded")
    write_json_atomic(self.records_path, recs + [dict(record)])


def round_train_set(method: Any, labeled_examples: Sequence[dict],
                    store: "RoundStore", r: int, key: str = "examples") -> list[dict]:
  """M-step data of round ``r``: [labeled] + selected ``key`` of 1..r
  (accumulate) or of r. Pairs (``key='pairs'``) come without the labeled set."""
  train = list(labeled_examples) if (method.include_labeled and key == "examples") else []
  for q in (range(1, r + 1) if method.accumulate else [r]):
    train.extend(store.load(q, "selected.json")[key])
  return train
