"""The tokenizer interface shared by every jaxsi tokenizer.

Every tokenizer maps text to integer ids and back, and owns three control ids
(``pad_id``, ``bos_id``, ``eos_id``) plus one id per chat *turn marker*:

* ``<|system|>``, ``<|user|>``, ``<|assistant|>`` open a turn of that role;
* ``<|end|>`` closes a turn (``turn_end_id``; also a natural stop token).

Conventions (identical for ``CharTokenizer`` and ``SentencePieceTokenizer``):

* ``encode`` recognises the literal marker strings in the text (``'<|user|>'``
  becomes the single user id), so prompts written with markers round-trip.
* ``decode(ids, skip_special=True)`` drops the control ids (pad/bos/eos) and
  renders turn markers as their strings; ``skip_special=False`` renders the
  control ids as ``<pad>``, ``<bos>``, ``<eos>``. Decoding never stops early: it
  decodes every id it is given (cutting at a stop token is the sampler's job).
"""

from __future__ import annotations

import abc
from typing import Mapping, Protocol, Sequence, runtime_checkable

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
# Turn markers in id order (after pad, bos, eos in every tokenizer we build).
TURN_MARKERS = (SYSTEM, USER, ASSISTANT, END)
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CONTROL_PIECES = ("<pad>", "<bos>", "<eos>")


@runtime_checkable
class TokenizerProtocol(Protocol):
  """What the rest of jaxsi may rely on (sampler, rollout, data pipeline)."""

  @property
  def vocab_size(self) -> int: ...

  @property
  def pad_id(self) -> int: ...

  @property
  def bos_id(self) -> int: ...

  @property
  def eos_id(self) -> int: ...

  @property
  def turn_end_id(self) -> int: ...

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]: ...

  def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str: ...

  def turn_start_id(self, role: str) -> int:
    """The single id opening a turn of ``role`` (see ``turn_marker``)."""
    return self.turn_marker(role)[0]

  def char_offsets(self, ids: Sequence[int], *, skip_special: bool = True
                   ) -> list[int]:
    """Start offset of every token in ``decode(ids, skip_special=...)``.

    ``offsets[i] = len(decode(ids[:i]))``, so token ``i`` covers characters
    ``[offsets[i], offsets[i + 1])`` (empty for skipped specials). Used to map
    character spans (e.g. scratchpad steps) to token spans for any tokenizer.
    """
    ids = [int(i) for i in ids]
    return [len(self.decode(ids[:i], skip_special=skip_special))
            for i in range(len(ids))]

  def turn_marker(self, role: str) -> list[int]: ...


class Tokenizer(abc.ABC):
  """Base class: markers, decoding and chat helpers over two plain codecs.

  Subclasses set ``self._special_ids`` (marker string → id) and the control ids
  (``_pad_id``, ``_bos_id``, ``_eos_id``), and implement ``vocab_size``,
  ``_encode_plain(text)`` (text without markers) and ``_decode_plain(ids)``
  (ids without control or marker ids).
  """

  _pad_id: int
  _bos_id: int
  _eos_id: int
  _special_ids: Mapping[str, int]

  # ---------------------------------------------------------------- ids
  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (every id is in ``[0, vocab_size)``)."""

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def bos_id(self) -> int:
    return self._bos_id

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def special_ids(self) -> dict[str, int]:
    """Turn-marker string → id (``<|system|>``, ``<|user|>``, …, ``<|end|>``)."""
    return dict(self._special_ids)

  @property
  def system_id(self) -> int:
    return self._special_ids[SYSTEM]

  @property
  def user_id(self) -> int:
    return self._special_ids[USER]

  @property
  def assistant_id(self) -> int:
    return self._special_ids[ASSISTANT]

  @property
  def turn_end_id(self) -> int:
    """Id of ``<|end|>``, which closes every turn."""
    return self._special_ids[END]

  @property
  def stop_ids(self) -> tuple[int, int]:
    """Ids that end a model turn: ``(eos_id, turn_end_id)``."""
    return (self.eos_id, self.turn_end_id)

  @property
  def control_ids(self) -> tuple[int, ...]:
    return (self.pad_id, self.bos_id, self.eos_id)

  def turn_start_id(self, role: str) -> int:
    """The single id opening a turn of ``role`` (see ``turn_marker``)."""
    return self.turn_marker(role)[0]

  def char_offsets(self, ids: Sequence[int], *, skip_special: bool = True
                   ) -> list[int]:
    """Start offset of every token in ``decode(ids, skip_special=...)``.

    ``offsets[i] = len(decode(ids[:i]))``, so token ``i`` covers characters
    ``[offsets[i], offsets[i + 1])`` (empty for skipped specials). Used to map
    character spans (e.g. scratchpad steps) to token spans for any tokenizer.
    """
    ids = [int(i) for i in ids]
    return [len(self.decode(ids[:i], skip_special=skip_special))
            for i in range(len(ids))]

  def turn_marker(self, role: str) -> list[int]:
    """Ids opening a turn of ``role`` (``'system'``, ``'user'``, ``'assistant'``).

    ``'end'`` gives the turn-closing marker.

    Raises:
      ValueError: unknown role.
    """
    if role == "end":
      return [self.turn_end_id]
    if role not in ROLES:
      raise ValueError(
          f"turn_marker: unknown role {role!r}; expected one of "
          f"{sorted(ROLES) + ['end']}")
    return [self._special_ids[ROLES[role]]]

  # ------------------------------------------------------------- encoding
  @abc.abstractmethod
  def _encode_plain(self, text: str, *, start: int = 0) -> list[int]:
    """Encodes text without marker strings (``start``: its offset, for errors)."""

  @abc.abstractmethod
  def _decode_plain(self, ids: Sequence[int]) -> str:
    """Decodes ids that contain no control or marker ids."""

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]:
    """Encodes ``text`` (turn-marker strings become their single ids).

    Args:
      text: the text.
      add_bos: prepend ``bos_id``.
      add_eos: append ``eos_id``.

    Returns:
      The list of ids.
    """
    if not isinstance(text, str):
      raise TypeError(f"encode: expected str, got {type(text).__name__}")
    ids = [self.bos_id] if add_bos else []
    for start, piece, is_marker in _split_markers(text, self._special_ids):
      if is_marker:
        ids.append(self._special_ids[piece])
      elif piece:
        ids.extend(self._encode_plain(piece, start=start))
    if add_eos:
      ids.append(self.eos_id)
    return ids

  def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
    """Decodes every id (never stops early).

    Args:
      ids: token ids (list, tuple or 1-D integer array).
      skip_special: drop pad/bos/eos; otherwise render them as ``<pad>``,
        ``<bos>``, ``<eos>``. Turn markers are always rendered as strings.

    Returns:
      The text.
    """
    id_to_marker = {v: k for k, v in self._special_ids.items()}
    control = dict(zip(self.control_ids, CONTROL_PIECES))
    out, run = [], []
    for i in ids:
      i = int(i)
      if i in control or i in id_to_marker:
        if run:
          out.append(self._decode_plain(run))
          run = []
        if i in id_to_marker:
          out.append(id_to_marker[i])
        elif not skip_special:
          out.append(control[i])
      else:
        run.append(i)
    if run:
      out.append(self._decode_plain(run))
    return "".join(out)

  def encode_chat(self, messages: Sequence[Mapping[str, str]], *,
                  add_bos: bool = True,
                  add_generation_prompt: bool = False) -> list[int]:
    """Encodes ``[{'role': ..., 'content': ...}, ...]`` with turn markers.

    Each message becomes ``marker(role) + encode(content) + [turn_end_id]``.

    Args:
      messages: the conversation.
      add_bos: prepend ``bos_id``.
      add_generation_prompt: append the assistant marker (the model writes next).

    Returns:
      The list of ids.
    """
    ids = [self.bos_id] if add_bos else []
    for n, m in enumerate(messages):
      if "role" not in m or "content" not in m:
        raise ValueError(
            f"encode_chat: message {n} needs 'role' and 'content', got "
            f"{sorted(m)}")
      ids += self.turn_marker(m["role"])
      ids += self.encode(m["content"])
      ids.append(self.turn_end_id)
    if add_generation_prompt:
      ids += self.turn_marker("assistant")
    return ids


def _split_markers(text: str, markers: Mapping[str, int]):
  """Yields ``(start, piece, is_marker)`` splitting ``text`` at markers."""
  i, start, n = 0, 0, len(text)
  while i < n:
    if text[i] == "<":
      for m in markers:
        if text.startswith(m, i):
          yield start, text[start:i], False
          yield i, m, True
          i += len(m)
          start = i
          break
      else:
        i += 1
    else:
      i += 1
  yield start, text[start:], False
