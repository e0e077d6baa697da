"""Pretrained tokenizers (HF ``tokenizer.json`` or sentencepiece ``.model``)
behind the jaxsi tokenizer interface, with the family's chat template.

``load_tokenizer(path)`` reads, from a local directory (nothing is
downloaded):

* ``tokenizer.json`` through the ``tokenizers`` library, or else
  ``tokenizer.model`` (or a ``.model`` path) through ``sentencepiece``;
* ``tokenizer_config.json`` (optional): ``bos_token``, ``eos_token``,
  ``pad_token`` and the Jinja ``chat_template`` (also read from
  ``chat_template.jinja``, where transformers v5 writes it);
* ``config.json`` (optional): ``model_type`` picks the chat template family
  (``jaxsi.data.chat_templates``); otherwise it is guessed from the special
  tokens.

Interface conventions (as ``jaxsi.data.tokenizer``): ``encode`` splits the
family's special tokens (``<|im_start|>``…) out of the text as single ids and
never adds BOS/EOS unless asked; ``decode(ids, skip_special=True)`` drops only
the control ids (pad/bos/eos) and renders every other special token as its
string; ``turn_marker(role)`` is the id sequence opening a turn (e.g.
``<|im_start|>user\\n``), ``turn_end_id`` the token closing it and
``stop_ids`` = (eos, turn end).

Families without a BOS token (Qwen) use their document separator
(``<|endoftext|>``) as ``bos_id``; pass ``add_bos=False`` where a prompt
should start without it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

from jaxsi.data import chat_templates as ct
from jaxsi.data import tokenizer as tok


class _TokenizersCodec:
  """Plain text <-> ids through a ``tokenizers.Tokenizer``."""

  def __init__(self, tokenizer):
    self.tk = tokenizer
    self.vocab = tokenizer.get_vocab(with_added_tokens=True)
    self.size = tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list:
    return list(self.tk.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    return self.tk.decode(list(ids), skip_special_tokens=False)


class _SentencePieceCodec:
  """Plain text <-> ids through a sentencepiece processor; ``specials``
  (strings that are pieces of the model) are matched in the text first."""

  def __init__(self, processor, specials: Sequence[str]):
    self.sp = processor
    self.size = processor.get_piece_size()
    self.vocab = {processor.id_to_piece(i): i for i in range(self.size)}
    unk = processor.unk_id()
    self.specials = {s: processor.piece_to_id(s) for s in specials
                     if processor.piece_to_id(s) != unk}
    self.special_of = {i: s for s, i in self.specials.items()}

  def encode(self, text: str) -> list:
    ids = []
    for _, piece, is_special in tok._split_markers(text, self.specials):  # pylint: disable=protected-access
      if is_special:
        ids.append(self.specials[piece])
      elif piece:
        ids.extend(self.sp.encode(piece))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    out, run = [], []
    for i in ids:
      if i in self.special_of:
        if run:
          out.append(self.sp.decode(run))
          run = []
        out.append(self.special_of[i])
      else:
        run.append(int(i))
    if run:
      out.append(self.sp.decode(run))
    return "".join(out)


class HFTokenizer(tok.Tokenizer):
  """A pretrained tokenizer with a chat template (see the module doc).

  Build one with :func:`load_tokenizer` or the constructor.

  Args:
    codec: the plain codec (internal; use ``from_tokenizers`` /
      ``from_sentencepiece`` / ``load_tokenizer``).
    template: the family's ChatTemplate, or None (then turns cannot be
      marked and ``turn_end_id`` is ``eos_id``).
    bos_token, eos_token, pad_token: token strings (default: the template's).
    jinja_template: the checkpoint's own Jinja chat template (used by
      ``apply_chat_template`` when present).
    path: where it was loaded from (messages only).

  Raises:
    ValueError: a control token that is not in the vocabulary.
  """

  def __init__(self, codec, *, template: Optional[ct.ChatTemplate] = None,
               bos_token: Optional[str] = None,
               eos_token: Optional[str] = None,
               pad_token: Optional[str] = None,
               jinja_template: Optional[str] = None,
               path: Optional[str] = None):
    self._codec = codec
    self.template = template
    self.jinja_template = jinja_template
    self.path = path
    t = template
    self.bos_token = bos_token or (t.bos_token if t else None)
    self.eos_token = eos_token or (t.eos_token if t else None)
    self.pad_token = pad_token or (t.pad_token if t else None) or self.eos_token
    self._bos_id = self._id(self.bos_token, "bos_token")
    self._eos_id = self._id(self.eos_token, "eos_token")
    self._pad_id = self._id(self.pad_token, "pad_token")
    self._turn_end_id = (self._id(t.turn_end_token, "turn end token") if t
                         else self._eos_id)
    specials = t.special_tokens if t else ()
    self._special_ids = {s: codec.vocab[s] for s in specials if s in codec.vocab}

  def _id(self, token: Optional[str], what: str) -> int:
    where = f" ({self.path})" if self.path else ""
    if token is None:
      raise ValueError(f"HFTokenizer{where}: no {what}; pass {what}=... or a "
                       "chat template family")
    if token not in self._codec.vocab:
      raise ValueError(f"HFTokenizer{where}: {what} {token!r} is not in the "
                       "vocabulary")
    return int(self._codec.vocab[token])

  # ------------------------------------------------------------ builders
  @classmethod
  def from_tokenizers(cls, tokenizer, **kwargs) -> "HFTokenizer":
    """Wraps a ``tokenizers.Tokenizer`` (kwargs as the constructor)."""
    return cls(_TokenizersCodec(tokenizer), **kwargs)

  @classmethod
  def from_sentencepiece(cls, processor, **kwargs) -> "HFTokenizer":
    """Wraps a ``sentencepiece.SentencePieceProcessor``; the template's
    special tokens (and the control tokens) are matched in the text."""
    template = kwargs.get("template")
    specials = list(template.special_tokens) if template else []
    specials += [kwargs[k] for k in ("bos_token", "eos_token", "pad_token")
                 if kwargs.get(k)]
    return cls(_SentencePieceCodec(processor, specials), **kwargs)

  # ----------------------------------------------------------------- ids
  @property
  def vocab_size(self) -> int:
    return self._codec.size

  @property
  def turn_end_id(self) -> int:
    return self._turn_end_id

  @property
  def stop_ids(self) -> tuple:
    """``(eos_id, turn_end_id)`` without duplicates."""
    return tuple(dict.fromkeys((self.eos_id, self.turn_end_id)))

  def token_to_id(self, token: str) -> Optional[int]:
    return self._codec.vocab.get(token)

  def _marker_error(self, role):
    raise ValueError(f"HFTokenizer: no chat template, so no marker for "
                     f"role {role!r}; load with family=...")

  @property
  def system_id(self) -> int:
    return self.turn_start_id("system")

  @property
  def user_id(self) -> int:
    return self.turn_start_id("user")

  @property
  def assistant_id(self) -> int:
    return self.turn_start_id("assistant")

  def turn_marker(self, role: str) -> list[int]:
    """Ids opening a turn of ``role`` (``'end'``: ``[turn_end_id]``).

    E.g. Qwen ``<|im_start|>user\\n``, Llama 3
    ``<|start_header_id|>user<|end_header_id|>\\n\\n``, Gemma
    ``<start_of_turn>model\\n`` for the assistant.
    """
    if role == "end":
      return [self.turn_end_id]
    if self.template is None:
      self._marker_error(role)
    return self._codec.encode(self.template.turn_prefix(role))

  # ------------------------------------------------------------ codec
  def _encode_plain(self, text: str, *, start: int = 0) -> list[int]:
    del start
    return self._codec.encode(text)

  def _decode_plain(self, ids: Sequence[int]) -> str:
    return self._codec.decode(ids)

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]:
    """Ids of ``text``; special token strings in it become their ids.

    Args:
      text: the text.
      add_bos: prepend ``bos_id``.
      add_eos: append ``eos_id``.
    """
    if not isinstance(text, str):
      raise TypeError(f"encode: expected str, got {type(text).__name__}")
    ids = self._codec.encode(text)
    return ([self.bos_id] if add_bos else []) + ids + (
        [self.eos_id] if add_eos else [])

  def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
    """Text of every id; ``skip_special`` drops pad/bos/eos ids only.

    Raises:
      ValueError: an id outside ``[0, vocab_size)``.
    """
    ids = [int(i) for i in ids]
    for i in ids:
      if not 0 <= i < self.vocab_size:
        raise ValueError(f"HFTokenizer.decode: id {i} is outside the "
                         f"vocabulary [0, {self.vocab_size})")
    if skip_special:
      control = set(self.control_ids)
      ids = [i for i in ids if i not in control]
    return self._codec.decode(ids)

  # ------------------------------------------------------------- chat
  def apply_chat_template(self, messages: Sequence[Mapping[str, str]], *,
                          add_generation_prompt: bool = False,
                          add_bos: bool = True, use_jinja: bool = True,
                          **kwargs) -> str:
    """The conversation as text.

    Uses the checkpoint's Jinja template when there is one (and
    ``use_jinja``), rendered like transformers does; otherwise the built-in
    family template (``jaxsi.data.chat_templates``).

    Args:
      messages: ``[{'role': ..., 'content': ...}, ...]``.
      add_generation_prompt: end with the opening of an assistant turn.
      add_bos: keep the leading BOS text (set False when the caller adds
        ``bos_id`` itself).
      use_jinja: prefer the checkpoint's Jinja template.
      **kwargs: template variables (``enable_thinking``, ``date_string``).
    """
    if use_jinja and self.jinja_template:
      text = render_jinja(self.jinja_template, messages,
                          add_generation_prompt=add_generation_prompt,
                          bos_token=self.bos_token or "",
                          eos_token=self.eos_token or "", **kwargs)
      bos = self.bos_token or ""
      if not add_bos and bos and text.startswith(bos):
        text = text[len(bos):]
      return text
    if self.template is None:
      self._marker_error("system/user/assistant")
    return self.template.render(messages,
                                add_generation_prompt=add_generation_prompt,
                                add_bos=add_bos, **kwargs)

  def encode_chat(self, messages: Sequence[Mapping[str, str]], *,
                  add_bos: bool = True,
                  add_generation_prompt: bool = False,
                  **kwargs) -> list[int]:
    """Ids of ``apply_chat_template(messages, ...)``.

    ``add_bos`` keeps the family's BOS (Llama, Gemma); Qwen templates have
    none, so nothing is prepended for them.
    """
    return self.encode(self.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt,
        add_bos=add_bos, **kwargs))

  def __repr__(self) -> str:
    family = self.template.name if self.template else None
    return (f"HFTokenizer(vocab_size={self.vocab_size}, family={family!r}, "
            f"path={self.path!r})")


def render_jinja(template: str, messages: Sequence[Mapping[str, Any]], *,
                 add_generation_prompt: bool = False, **variables) -> str:
  """Renders a Hugging Face Jinja chat template as transformers does.

  Sandboxed environment with ``trim_blocks``/``lstrip_blocks``, the
  ``raise_exception`` and ``strftime_now`` helpers and a ``tojson`` filter.
  """
  import jinja2  # pylint: disable=g-import-not-at-top
  from jinja2 import ext, sandbox  # pylint: disable=g-import-not-at-top

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None,
             sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)

  env = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True,
      extensions=[ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
  return env.from_string(template).render(
      messages=[dict(m) for m in messages],
      add_generation_prompt=add_generation_prompt, **variables)


def _token_str(value) -> Optional[str]:
  if isinstance(value, Mapping):
    return value.get("content")
  return value


def load_tokenizer(path: Union[str, os.PathLike], *,
                   family: Optional[str] = None,
                   eos_token: Optional[str] = None,
                   pad_token: Optional[str] = None,
                   bos_token: Optional[str] = None) -> HFTokenizer:
  """Loads a local pretrained tokenizer (see the module doc).

  Args:
    path: a directory (``tokenizer.json`` or ``tokenizer.model``, optional
      ``tokenizer_config.json``, ``chat_template.jinja``, ``config.json``), a
      ``tokenizer.json`` file or a sentencepiece ``.model`` file.
    family: chat template family (``chat_templates.FAMILIES``); default from
      ``config.json``'s model_type or the special tokens.
    eos_token, pad_token, bos_token: override tokenizer_config.json (e.g.
      ``eos_token='<|im_end|>'`` to stop Qwen base models at the turn end).

  Returns:
    The HFTokenizer.

  Raises:
    FileNotFoundError: nothing loadable at ``path`` (says what to put where).
  """
  path = os.fspath(path)
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  candidates = ([os.path.join(path, "tokenizer.json"),
                 os.path.join(path, "tokenizer.model")]
                if os.path.isdir(path) else [path])
  file = next((f for f in candidates if os.path.isfile(f)), None)
  if file is None:
    raise FileNotFoundError(
        f"No tokenizer at {path!r}: put the model's tokenizer.json (Hugging "
        "Face) or tokenizer.model (sentencepiece) there, with its "
        "tokenizer_config.json; nothing is downloaded at run time.")

  def read_json(name):
    f = os.path.join(directory, name)
    if os.path.isfile(f):
      with open(f) as fh:
        return json.load(fh)
    return {}

  tk_config = read_json("tokenizer_config.json")
  jinja = tk_config.get("chat_template")
  if isinstance(jinja, list):  # [{'name': 'default', 'template': ...}, ...]
    jinja = next((t["template"] for t in jinja if t.get("name") == "default"),
                 None)
  jinja_file = os.path.join(directory, "chat_template.jinja")
  if jinja is None and os.path.isfile(jinja_file):
    with open(jinja_file) as fh:
      jinja = fh.read()

  if file.endswith(".model"):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    processor = spm.SentencePieceProcessor()
    processor.Load(file)
    vocab = {processor.id_to_piece(i): i
             for i in range(processor.get_piece_size())}
  else:
    import tokenizers  # pylint: disable=g-import-not-at-top
    processor = tokenizers.Tokenizer.from_file(file)
    vocab = processor.get_vocab(with_added_tokens=True)
  if family is None:
    model_type = read_json("config.json").get("model_type")
    if model_type is not None:
      try:
        family = ct.family_for_model_type(model_type)
      except ValueError:
        family = None
    if family is None:
      family = ct.detect_family(vocab)
  template = ct.get_template(family) if family else None
  kwargs = dict(
      template=template, jinja_template=jinja, path=path,
      bos_token=bos_token or _token_str(tk_config.get("bos_token")),
      eos_token=eos_token or _token_str(tk_config.get("eos_token")),
      pad_token=pad_token or _token_str(tk_config.get("pad_token")))
  if file.endswith(".model"):
    return HFTokenizer.from_sentencepiece(processor, **kwargs)
  return HFTokenizer.from_tokenizers(processor, **kwargs)
