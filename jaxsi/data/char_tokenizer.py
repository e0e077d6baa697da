"""A fixed-alphabet character tokenizer for the synthetic tasks.

Ids: ``0 = pad``, ``1 = bos``, ``2 = eos``, ``3..6`` = turn markers
(``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``), then one id per
character of the alphabet. The default alphabet is printable ASCII plus newline
and tab, digits first (so ``id('d') = 7 + d``): 97 characters, vocab size 104.

Unknown characters raise ``ValueError`` naming the character and its position
(no silent ``unk`` id: a character a tiny model can never emit is a data bug).
"""

from __future__ import annotations

import string
from typing import Optional, Sequence

from jaxsi.data import tokenizer as tok

DEFAULT_ALPHABET = (
    string.digits
    + "+-*/=()"
    + " \n"
    + string.ascii_lowercase
    + string.ascii_uppercase
    + ",.:;?!'\"<>|_"
    + "#{}\\[]$%&@^~`"
    + "\t"
)
assert len(set(DEFAULT_ALPHABET)) == len(DEFAULT_ALPHABET) == 97


class CharTokenizer(tok.Tokenizer):
  """One id per character of a fixed alphabet.

  Args:
    alphabet: the characters, in id order (default ``DEFAULT_ALPHABET``). Must
      not repeat a character.
  """

  def __init__(self, *, alphabet: Optional[str] = None):
    alphabet = DEFAULT_ALPHABET if alphabet is None else alphabet
    if len(set(alphabet)) != len(alphabet):
      dup = sorted({c for c in alphabet if alphabet.count(c) > 1})
      raise ValueError(f"CharTokenizer: alphabet repeats characters {dup!r}")
    if not alphabet:
      raise ValueError("CharTokenizer: empty alphabet")
    self._pad_id, self._bos_id, self._eos_id = 0, 1, 2
    self._special_ids = {m: 3 + k for k, m in enumerate(tok.TURN_MARKERS)}
    self._offset = 3 + len(tok.TURN_MARKERS)
    self.alphabet = alphabet
    self._char_to_id = {c: self._offset + k for k, c in enumerate(alphabet)}

  @property
  def vocab_size(self) -> int:
    return self._offset + len(self.alphabet)

  def char_id(self, char: str) -> int:
    """The id of one alphabet character."""
    try:
      return self._char_to_id[char]
    except KeyError:
      raise ValueError(
          f"CharTokenizer: character {char!r} is not in the alphabet") from None

  def _encode_plain(self, text: str, *, start: int = 0) -> list[int]:
    try:
      return [self._char_to_id[c] for c in text]
    except KeyError:
      for pos, c in enumerate(text):
        if c not in self._char_to_id:
          raise ValueError(
              f"CharTokenizer.encode: unknown character {c!r} (U+{ord(c):04X}) "
              f"at position {start + pos} of the text "
              f"(context {text[max(0, pos - 20):pos + 20]!r})") from None
      raise  # pragma: no cover - unreachable

  def char_offsets(self, ids: Sequence[int], *, skip_special: bool = True
                   ) -> list[int]:
    """Start offset of every token in the decoded text (linear time)."""
    width = {self.pad_id: 5, self.bos_id: 5, self.eos_id: 5}
    out, pos = [], 0
    for i in ids:
      i = int(i)
      out.append(pos)
      if i in width:
        pos += 0 if skip_special else width[i]
      elif i < self._offset:
        pos += len(tok.TURN_MARKERS[i - 3])
      else:
        pos += 1
    return out

  def _decode_plain(self, ids: Sequence[int]) -> str:
    out = []
    for i in ids:
      k = i - self._offset
      if not 0 <= k < len(self.alphabet):
        raise ValueError(
            f"CharTokenizer.decode: id {i} is outside the vocabulary "
            f"[0, {self.vocab_size})")
      out.append(self.alphabet[k])
    return "".join(out)

  def __repr__(self) -> str:
    return f"CharTokenizer(vocab_size={self.vocab_size})"
