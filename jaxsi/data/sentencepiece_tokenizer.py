"""SentencePiece tokenizer: train on a corpus or load a ``.model`` file.

Ids are fixed at training time: ``0 = <pad>``, ``1 = <bos>``, ``2 = <eos>``,
``3 = <unk>``, then the turn markers ``<|system|>``, ``<|user|>``,
``<|assistant|>``, ``<|end|>`` (user-defined symbols: always one piece, also
when they occur in the text), then ``'\\n'`` as its own piece, then the learned
pieces.

Training uses the identity normaliser, keeps whitespace as is and adds no dummy
prefix, so ``decode(encode(text)) == text`` for every text made of characters
seen in training. Unseen characters become ``<unk>`` (decoded as ``' ⁇ '``)
unless ``byte_fallback=True`` (needs ``vocab_size >= 256 + #chars``; then every
UTF-8 text round-trips). Digits are split into single-digit pieces by default
(``split_digits=True``), which arithmetic tasks need.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Optional, Sequence, Union

import sentencepiece as spm

from jaxsi.data import tokenizer as tok


class SentencePieceTokenizer(tok.Tokenizer):
  """Wraps a ``sentencepiece.SentencePieceProcessor`` in the jaxsi interface.

  Build one with ``SentencePieceTokenizer.train(...)`` or
  ``SentencePieceTokenizer.load(path)``.

  Args:
    processor: a loaded processor whose model has ``<pad>``, ``<bos>``,
      ``<eos>`` and the four turn markers as pieces.
    path: where the model came from (for messages), optional.
  """

  def __init__(self, processor: spm.SentencePieceProcessor, *,
               path: Optional[str] = None):
    self._sp = processor
    self.path = path
    where = f" ({path})" if path else ""
    ids = {}
    for name, fn in (("pad", processor.pad_id), ("bos", processor.bos_id),
                     ("eos", processor.eos_id)):
      i = fn()
      if i < 0:
        raise ValueError(
            f"SentencePieceTokenizer: model{where} has no {name} id; train it "
            f"with SentencePieceTokenizer.train or set {name}_id in the trainer")
      ids[name] = i
    self._pad_id, self._bos_id, self._eos_id = ids["pad"], ids["bos"], ids["eos"]
    self._special_ids = {}
    for m in tok.TURN_MARKERS:
      i = processor.piece_to_id(m)
      if i == processor.unk_id() or processor.id_to_piece(i) != m:
        raise ValueError(
            f"SentencePieceTokenizer: model{where} lacks the turn marker {m!r} "
            f"as a piece; train with user_defined_symbols={list(tok.TURN_MARKERS)}")
      self._special_ids[m] = i

  # ------------------------------------------------------------ building
  @classmethod
  def train(
      cls,
      corpus: Union[str, os.PathLike, Iterable[str]],
      *,
      vocab_size: int,
      model_prefix: Optional[Union[str, os.PathLike]] = None,
      model_type: str = "unigram",
      character_coverage: float = 1.0,
      split_digits: bool = True,
      byte_fallback: bool = False,
      hard_vocab_limit: bool = False,
      extra_symbols: Sequence[str] = (),
      num_threads: int = 1,
      seed_sentencepiece_size: int = 100_000,
      max_sentence_length: int = 16384,
  ) -> "SentencePieceTokenizer":
    """Trains a model with sentencepiece's trainer.

    Args:
      corpus: a path to a text file (one sentence per line) or an iterable of
        texts (each text one sentence; it may contain newlines).
      vocab_size: requested vocabulary size (an upper bound unless
        ``hard_vocab_limit``).
      model_prefix: write ``<prefix>.model`` and ``<prefix>.vocab``; ``None``
        keeps the model in memory only.
      model_type: ``'unigram'``, ``'bpe'``, ``'char'`` or ``'word'``.
      character_coverage: fraction of characters covered by the vocabulary.
      split_digits: one piece per digit.
      byte_fallback: unseen characters become UTF-8 byte pieces (adds 256 ids).
      hard_vocab_limit: fail unless exactly ``vocab_size`` pieces are learned.
      extra_symbols: more user-defined symbols (after the turn markers).
      num_threads: trainer threads.
      seed_sentencepiece_size: unigram seed size.
      max_sentence_length: longest sentence in bytes.

    Returns:
      The trained tokenizer.

    Raises:
      ValueError: an empty corpus or a missing corpus file.
    """
    kwargs = {}
    if isinstance(corpus, (str, os.PathLike)):
      if not os.path.isfile(corpus):
        raise ValueError(
            f"SentencePieceTokenizer.train: corpus file {os.fspath(corpus)!r} "
            "does not exist")
      kwargs["input"] = os.fspath(corpus)
    else:
      texts = [t for t in corpus if t]
      if not texts:
        raise ValueError("SentencePieceTokenizer.train: the corpus is empty")
      bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
      if bad:
        raise ValueError(
            f"SentencePieceTokenizer.train: corpus item {bad[0]} is a "
            f"{type(texts[bad[0]]).__name__}, expected str")
      kwargs["sentence_iterator"] = iter(texts)
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        model_writer=writer,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="<pad>", bos_piece="<bos>", eos_piece="<eos>",
        unk_piece="<unk>",
        user_defined_symbols=list(tok.TURN_MARKERS) + ["\n"]
        + list(extra_symbols),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=split_digits,
        byte_fallback=byte_fallback,
        character_coverage=character_coverage,
        hard_vocab_limit=hard_vocab_limit,
        num_threads=num_threads,
        seed_sentencepiece_size=seed_sentencepiece_size,
        max_sentence_length=max_sentence_length,
        minloglevel=2,
        **kwargs,
    )
    proto = writer.getvalue()
    path = None
    if model_prefix is not None:
      path = os.fspath(model_prefix) + ".model"
      with open(path, "wb") as f:
        f.write(proto)
      processor = spm.SentencePieceProcessor(model_proto=proto)
      with open(os.fspath(model_prefix) + ".vocab", "w", encoding="utf-8") as f:
        for i in range(processor.get_piece_size()):
          f.write(f"{processor.id_to_piece(i)}\t{processor.get_score(i)}\n")
    return cls(spm.SentencePieceProcessor(model_proto=proto), path=path)

  @classmethod
  def load(cls, path: Union[str, os.PathLike]) -> "SentencePieceTokenizer":
    """Loads a ``.model`` file.

    Raises:
      ValueError: missing file, or a model without the jaxsi special pieces.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise ValueError(f"SentencePieceTokenizer.load: no file {path!r}")
    processor = spm.SentencePieceProcessor()
    try:
      processor.Load(path)
    except (OSError, RuntimeError) as e:
      raise ValueError(
          f"SentencePieceTokenizer.load: {path!r} is not a sentencepiece "
          f"model: {e}") from e
    return cls(processor, path=path)

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    return self._sp

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  # ---------------------------------------------------------- plain codec
  def _encode_plain(self, text: str, *, start: int = 0) -> list[int]:
    del start  # unseen characters become <unk> (or bytes), never an error
    return list(self._sp.encode(text))

  def _decode_plain(self, ids: Sequence[int]) -> str:
    n = self.vocab_size
    for i in ids:
      if not 0 <= i < n:
        raise ValueError(
            f"SentencePieceTokenizer.decode: id {i} is outside the vocabulary "
            f"[0, {n})")
    return self._sp.decode([int(i) for i in ids])

  def __repr__(self) -> str:
    return (f"SentencePieceTokenizer(vocab_size={self.vocab_size}, "
            f"path={self.path!r})")
