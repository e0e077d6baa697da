"""From tasks to token arrays: SFT batches, prompt lists, resumable iteration.

Token in, token out: text is encoded once here; ``jaxsi.training.fit`` and the
samplers move int32 arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from jaxsi.trajectory import Trajectory


def encode_prompt(tokenizer, prompt: str, *, add_bos: bool = True) -> list[int]:
  """Prompt ids (BOS + text) as the sampler consumes them."""
  ids = tokenizer.encode(prompt)
  return ([tokenizer.bos_id] if add_bos else []) + list(ids)


def encode_prompts(tokenizer, tasks: Sequence, *, add_bos: bool = True) -> list[list[int]]:
  """Prompt ids of every task."""
  return [encode_prompt(tokenizer, t.prompt, add_bos=add_bos) for t in tasks]


def sft_arrays(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    max_len: int,
    add_bos: bool = True,
    add_eos: bool = True,
    ids: Optional[Sequence[str]] = None,
) -> dict[str, np.ndarray]:
  """Encodes (prompt, completion) pairs into right-padded numpy arrays.

  Args:
    tokenizer: a jaxsi tokenizer (encode, pad_id, bos_id, eos_id).
    prompts: prompt texts.
    completions: supervised completion texts (trained on).
    max_len: padded length T.
    add_bos: prepend BOS to the prompt.
    add_eos: append EOS to the completion (trained on, so the model learns to stop).
    ids: names used in error messages (e.g. task ids).

  Returns:
    dict with tokens int32[N, T], input_mask bool[N, T], loss_mask bool[N, T].

  Raises:
    ValueError: a pair longer than ``max_len`` (names the pair and both lengths).
  """
  if len(prompts) != len(completions):
    raise ValueError(f"sft_arrays: {len(prompts)} prompts but {len(completions)} completions")
  n = len(prompts)
  tokens = np.full((n, max_len), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((n, max_len), bool)
  loss_mask = np.zeros((n, max_len), bool)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    p_ids = encode_prompt(tokenizer, p, add_bos=add_bos)
    c_ids = list(tokenizer.encode(c)) + ([tokenizer.eos_id] if add_eos else [])
    total = len(p_ids) + len(c_ids)
    if total > max_len:
      name = ids[i] if ids is not None else f"#{i}"
      raise ValueError(
          f"sft_arrays: example {name} has {total} tokens (prompt {len(p_ids)} +"
          f" completion {len(c_ids)}) > max_len={max_len}; raise max_len")
    tokens[i, :total] = p_ids + c_ids
    input_mask[i, :total] = True
    loss_mask[i, len(p_ids):total] = True
  return dict(tokens=tokens, input_mask=input_mask, loss_mask=loss_mask)


def sft_trajectory(arrays: dict[str, np.ndarray], index: Optional[np.ndarray] = None
                   ) -> Trajectory:
  """A Trajectory of the rows ``index`` of ``sft_arrays`` output."""
  if index is not None:
    arrays = {k: v[index] for k, v in arrays.items()}
  return Trajectory.create(arrays["tokens"], input_mask=arrays["input_mask"],
                           loss_mask=arrays["loss_mask"])


@dataclasses.dataclass(frozen=True)
class EpochIterator:
  """Deterministic, resumable minibatch order over a dataset of ``size`` rows.

  Batch ``k`` is a pure function of (seed, k): epoch ``e`` uses the permutation
  ``rng(seed, e)``; batches never straddle epochs (the tail of an epoch that
  does not fill a batch is dropped). Resuming from a saved position ``k``
  replays exactly the batches an uninterrupted run would have seen.
  """

  size: int
  batch_size: int
  seed: int = 0

  def __post_init__(self):
    if self.size < self.batch_size:
      raise ValueError(
          f"EpochIterator: dataset has {self.size} rows < batch_size {self.batch_size}")

  @property
  def batches_per_epoch(self) -> int:
    return self.size // self.batch_size

  def indices(self, position: int) -> np.ndarray:
    """Row indices of batch number ``position`` (0-based, global)."""
    epoch, k = divmod(position, self.batches_per_epoch)
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
    return perm[k * self.batch_size:(k + 1) * self.batch_size]
