"""Lazy safetensors reading/writing and sharded parameter placement.

Hugging Face checkpoints come as one ``model.safetensors`` file or as shards
``model-0000k-of-0000n.safetensors`` listed in ``model.safetensors.index.json``
(``{"weight_map": {tensor name: file name}}``). :class:`SafetensorsCheckpoint`
opens either layout without reading any tensor data: every file is
memory-mapped and :meth:`SafetensorsCheckpoint.get` returns a zero-copy NumPy
view (bfloat16 and float8 through ``ml_dtypes``; the format is an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape,
data_offsets}}`` and the raw row-major bytes).

:func:`place` turns such a view into a ``jax.Array`` on a ``NamedSharding`` with
``jax.make_array_from_callback``: each addressable device receives only its
slice, read from the memory map and cast on the host, so a large model is never
copied whole into host memory (the peak is one device slice per tensor).

:func:`write_checkpoint` writes tensors one at a time into shards of at most
``max_shard_bytes`` (plus the index when there is more than one), gathering
each sharded ``jax.Array`` to the host only while it is written.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple

import jax
import ml_dtypes
import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _read_header(path: str) -> Tuple[dict, int]:
  """(header dict, byte offset of the data section) of a safetensors file."""
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    if n > 100_000_000:
      raise ValueError(f"{path}: not a safetensors file (header size {n})")
    header = json.loads(f.read(n))
  return header, 8 + n


class SafetensorsCheckpoint:
  """Read-only, lazy view of the safetensors files of a local directory.

  Args:
    directory: a local directory holding ``model.safetensors.index.json`` and
      the shards it lists, or one or more ``*.safetensors`` files.

  Raises:
    FileNotFoundError: no safetensors file (the message says what to put
      where), or a shard listed in the index is missing.
  """

  def __init__(self, directory: str):
    self.directory = os.fspath(directory)
    index = os.path.join(self.directory, INDEX_FILE)
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(n for n in os.listdir(self.directory)
                     if n.endswith(".safetensors")) if os.path.isdir(
                         self.directory) else []
      weight_map = None
    if not files:
      raise FileNotFoundError(
          f"No safetensors checkpoint in {self.directory!r}: put the Hugging "
          f"Face files there ({SINGLE_FILE}, or {INDEX_FILE} with the shards "
          "it lists, plus config.json); nothing is downloaded at run time.")
    self._entries: dict = {}  # name -> (file, dtype, shape, begin, end)
    self._data_offset: dict = {}
    for name in files:
      path = os.path.join(self.directory, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{INDEX_FILE} in {self.directory!r} lists {name!r}, which is "
            "missing; copy every shard of the checkpoint there")
      header, offset = _read_header(path)
      self._data_offset[name] = offset
      for tensor, info in header.items():
        if tensor == "__metadata__":
          continue
        if weight_map is not None and weight_map.get(tensor) != name:
          continue
        if info["dtype"] not in _DTYPES:
          raise ValueError(f"{path}: tensor {tensor!r} has unsupported dtype "
                           f"{info['dtype']!r}")
        begin, end = info["data_offsets"]
        self._entries[tensor] = (name, _DTYPES[info["dtype"]],
                                 tuple(info["shape"]), begin, end)
    self._maps: dict = {}

  @property
  def names(self) -> list:
    """All tensor names, sorted."""
    return sorted(self._entries)

  @property
  def files(self) -> list:
    """The safetensors file names (relative to the directory)."""
    return sorted(self._data_offset)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def shape(self, name: str) -> tuple:
    return self._entries[name][2]

  def dtype(self, name: str) -> np.dtype:
    return self._entries[name][1]

  def get(self, name: str) -> np.ndarray:
    """Zero-copy, read-only, memory-mapped view of tensor ``name``.

    Raises:
      KeyError: unknown tensor (the message names it and the directory).
    """
    if name not in self._entries:
      raise KeyError(f"tensor {name!r} is not in the checkpoint "
                     f"{self.directory!r}")
    file, dtype, shape, begin, end = self._entries[name]
    if file not in self._maps:
      path = os.path.join(self.directory, file)
      size = os.path.getsize(path) - self._data_offset[file]
      self._maps[file] = (np.memmap(path, np.uint8, "r", self._data_offset[file],
                                    (size,)) if size else np.zeros(0, np.uint8))
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * dtype.itemsize:
      raise ValueError(f"tensor {name!r} in {file}: {end - begin} bytes for "
                       f"shape {shape} {dtype}")
    return self._maps[file][begin:end].view(dtype).reshape(shape)

  def total_bytes(self) -> int:
    return sum(e[4] - e[3] for e in self._entries.values())


def place(value: np.ndarray, *, dtype: Any,
          sharding: Optional[jax.sharding.Sharding] = None) -> jax.Array:
  """A jax.Array of ``value`` cast to ``dtype``, placed on ``sharding``.

  With a sharding, each addressable device's slice is read from ``value``
  (e.g. a memory-mapped, transposed view) and cast alone, so the whole tensor
  is never materialised on the host. Without one, the array goes to the
  default device.
  """
  dtype = np.dtype(dtype)
  if sharding is None:
    return jax.device_put(np.asarray(value, dtype))
  return jax.make_array_from_callback(
      tuple(value.shape), sharding,
      lambda index: np.ascontiguousarray(value[index], dtype))


def host_value(x: Any) -> np.ndarray:
  """Host NumPy copy of one (possibly sharded, multi-process) array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def plan_shards(sizes: Sequence[Tuple[str, int]], max_shard_bytes: int
                ) -> list:
  """Groups ``(name, nbytes)`` in order into shards of <= max_shard_bytes.

  A tensor larger than the limit gets a shard of its own.
  """
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be > 0, got {max_shard_bytes}")
  shards, current, used = [], [], 0
  for name, nbytes in sizes:
    if current and used + nbytes > max_shard_bytes:
      shards.append(current)
      current, used = [], 0
    current.append(name)
    used += nbytes
  if current:
    shards.append(current)
  return shards


def write_checkpoint(directory: str,
                     tensors: Iterable[Tuple[str, Tuple[int, ...], Any,
                                             Callable[[], Any]]],
                     *, max_shard_bytes: int = 5 * 2**30,
                     metadata: Optional[Mapping[str, str]] = None) -> list:
  """Writes tensors as Hugging Face safetensors shards (+ index if > 1).

  Args:
    directory: output directory (created).
    tensors: ``(name, shape, dtype, produce)`` in write order; ``produce()``
      returns the array (called once, just before the tensor is written, so
      only one tensor is on the host at a time).
    max_shard_bytes: largest shard size; one shard is written as
      ``model.safetensors``, several as ``model-0000k-of-0000n.safetensors``
      with ``model.safetensors.index.json``.
    metadata: extra ``__metadata__`` strings (``format: pt`` is always set,
      transformers requires it).

  Returns:
    The written file names.
  """
  os.makedirs(directory, exist_ok=True)
  items = [(n, tuple(int(s) for s in shape), np.dtype(dt), fn)
           for n, shape, dt, fn in tensors]
  for n, _, dt, _ in items:
    if dt not in _NAMES:
      raise ValueError(f"write_checkpoint: tensor {n!r} has unsupported dtype {dt}")
  by_name = {n: (shape, dt, fn) for n, shape, dt, fn in items}
  sizes = [(n, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
           for n, shape, dt, _ in items]
  shards = plan_shards(sizes, max_shard_bytes)
  if len(shards) == 1:
    names = [SINGLE_FILE]
  else:
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
             for k in range(len(shards))]
  for old in os.listdir(directory):  # stale files of an earlier save
    stale = old == SINGLE_FILE or re.fullmatch(
        r"model-\d{5}-of-\d{5}\.safetensors", old)
    if stale and old not in names:
      os.remove(os.path.join(directory, old))
  meta = {"format": "pt", **dict(metadata or {})}
  weight_map, total = {}, 0
  for file, shard in zip(names, shards):
    header, offset = {"__metadata__": meta}, 0
    for n in shard:
      shape, dt, _ = by_name[n]
      nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
      header[n] = {"dtype": _NAMES[dt], "shape": list(shape),
                   "data_offsets": [offset, offset + nbytes]}
      offset += nbytes
      weight_map[n] = file
    total += offset
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # 8-byte aligned data (safetensors spec)
    with open(os.path.join(directory, file), "wb") as f:
      f.write(struct.pack("<Q", len(blob)))
      f.write(blob)
      for n in shard:
        shape, dt, fn = by_name[n]
        value = np.ascontiguousarray(host_value(fn()), dt)
        if value.shape != shape:
          raise ValueError(f"write_checkpoint: {n!r} produced shape "
                           f"{value.shape}, declared {shape}")
        f.write(value.tobytes())
        del value
  index = os.path.join(directory, INDEX_FILE)
  if len(names) > 1:
    with open(index, "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                f, indent=2, sort_keys=True)
  elif os.path.exists(index):
    os.remove(index)
  return names
