"""Token-level span ids for scratchpad steps (process rewards, ``span_ids``).

A completion in the jaxsi scratchpad format wraps each step in ``<s>…</s>``
(``jaxsi.rewards.answers``). ``step_span_ids`` labels every completion token
with the 1-based index of the step it belongs to (0 outside steps), for any
tokenizer, by mapping the character spans of the decoded text back to tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsi.rewards import answers


def char_spans_to_token_spans(offsets: Sequence[int], text_len: int,
                              spans: Sequence[tuple[int, int]]
                              ) -> list[tuple[int, int]]:
  """Maps character spans ``[a, b)`` to token spans ``[i, j)``.

  A token belongs to a span if any of its characters does.

  Args:
    offsets: start character of each token (``Tokenizer.char_offsets``).
    text_len: length of the decoded text.
    spans: character spans.

  Returns:
    Token spans, one per character span (empty ``(i, i)`` if no token overlaps).
  """
  offsets = list(offsets)
  ends = offsets[1:] + [text_len]
  out = []
  for a, b in spans:
    toks = [k for k, (s, e) in enumerate(zip(offsets, ends))
            if e > s and s < b and e > a]
    out.append((toks[0], toks[-1] + 1) if toks else (0, 0))
  return out


def step_span_ids(tokenizer, ids: Sequence[int]) -> np.ndarray:
  """``int32[len(ids)]``: k for tokens of the k-th ``<s>…</s>`` step, else 0.

  Args:
    tokenizer: a jaxsi tokenizer (``decode``, ``char_offsets``).
    ids: completion token ids.

  Returns:
    The step index of every token (markers included in their step).
  """
  text = tokenizer.decode(ids)
  offsets = tokenizer.char_offsets(ids)
  out = np.zeros((len(ids),), np.int32)
  spans = char_spans_to_token_spans(offsets, len(text), answers.step_spans(text))
  for k, (i, j) in enumerate(spans, 1):
    out[i:j] = k
  return out
