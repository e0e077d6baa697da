"""Shape buckets and host-side padding for the sampler.

Jitted code compiles once per input shape. The sampler therefore rounds every
variable size (prompt length, generation length, number of prompts, length of an
injected turn) up to a *bucket* from a fixed tuple, so calls whose sizes fall in
the same buckets reuse one compilation.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

DEFAULT_PROMPT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_INJECT_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024)
# Powers of two: at most 2x wasted rows.
POW2_BATCH_BUCKETS = tuple(2 ** i for i in range(16))


def bucket_size(size: int, buckets: Optional[Sequence[int]]) -> int:
  """The smallest bucket >= ``size``.

  Args:
    size: the size to cover (>= 0).
    buckets: increasing positive bucket sizes, or None for no bucketing.

  Returns:
    ``size`` itself if ``buckets`` is None or empty; else the smallest bucket
    >= ``size``; beyond the largest bucket, ``size`` rounded up to a multiple
    of the largest bucket (so every size stays bucketed).

  Raises:
    ValueError: negative size or non-increasing / non-positive buckets.
  """
  if size < 0:
    raise ValueError(f"bucket_size: size must be >= 0, got {size}")
  if not buckets:
    return int(size)
  buckets = tuple(int(b) for b in buckets)
  if any(b <= 0 for b in buckets) or any(
      b2 <= b1 for b1, b2 in zip(buckets, buckets[1:])):
    raise ValueError(
        f"bucket_size: buckets must be positive and increasing, got {buckets}")
  for b in buckets:
    if b >= size:
      return b
  top = buckets[-1]
  return -(-size // top) * top


def left_pad(sequences: Sequence[Sequence[int]], *, length: int, pad_id: int,
             num_rows: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into a ``[num_rows, length]`` array.

  Args:
    sequences: token id lists, each of length <= ``length``.
    length: padded length.
    pad_id: id written into padding slots.
    num_rows: total rows (>= len(sequences)); extra rows are all padding.

  Returns:
    (int32[num_rows, length] tokens, bool[num_rows, length] real-token mask).

  Raises:
    ValueError: a sequence longer than ``length`` or too few rows.
  """
  n = len(sequences) if num_rows is None else num_rows
  if n < len(sequences):
    raise ValueError(f"left_pad: num_rows={n} < {len(sequences)} sequences")
  tokens = np.full((n, length), pad_id, np.int32)
  mask = np.zeros((n, length), bool)
  for i, seq in enumerate(sequences):
    seq = np.asarray(seq, np.int64).reshape(-1)
    if len(seq) > length:
      raise ValueError(f"left_pad: sequence {i} has {len(seq)} tokens > length {length}")
    if len(seq):
      tokens[i, length - len(seq):] = seq
      mask[i, length - len(seq):] = True
  return tokens, mask
