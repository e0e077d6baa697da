"""Tests for jaxsi.data tokenizers (char and sentencepiece)."""

import random

import numpy as np
import pytest

from jaxsi.data import tokenizer as tok
from jaxsi.data.char_tokenizer import CharTokenizer
from jaxsi.data.sentencepiece_tokenizer import SentencePieceTokenizer
from jaxsi.data.synthetic import addition, countdown, expression

TEXTS = [
    "12+34=",
    "<s>3+6+0=9</s>\n<s>2+5+0=7</s>\n#### 579",
    "(2+3)*4-5=15",
    "3,7,25->46:",
    "  two  spaces\n\nand a tab\tend ",
    "What is 5? Answer: \"7\"; ok! {x} [y] $z% @ ^ ~ ` | _ # \\",
]


# ---------------------------------------------------------------- char
def test_char_ids_and_vocab():
  t = CharTokenizer()
  assert (t.pad_id, t.bos_id, t.eos_id) == (0, 1, 2)
  assert t.special_ids == {tok.SYSTEM: 3, tok.USER: 4, tok.ASSISTANT: 5,
                           tok.END: 6}
  assert t.vocab_size == 104 <= 128
  assert t.encode("0123456789") == list(range(7, 17))
  assert t.turn_marker("user") == [4]
  assert t.turn_marker("assistant") == [5]
  assert t.turn_marker("end") == [6] == [t.turn_end_id]
  assert t.stop_ids == (2, 6)
  ids = t.encode("ab", add_bos=True, add_eos=True)
  assert ids[0] == 1 and ids[-1] == 2 and len(ids) == 4
  assert max(t.encode("".join(t.alphabet))) == t.vocab_size - 1
  assert isinstance(t, tok.TokenizerProtocol)


@pytest.mark.parametrize("text", TEXTS)
def test_char_round_trip(text):
  t = CharTokenizer()
  ids = t.encode(text, add_bos=True, add_eos=True)
  assert len(ids) == len(text) + 2  # one id per character
  assert t.decode(ids) == text
  assert t.decode(np.asarray(ids)) == text
  assert t.decode(ids, skip_special=False) == "<bos>" + text + "<eos>"


def test_char_markers_in_text_and_chat():
  t = CharTokenizer()
  ids = t.encode("<|user|>1+2=<|end|><|assistant|>")
  assert ids == [4, t.char_id("1"), t.char_id("+"), t.char_id("2"),
                 t.char_id("="), 6, 5]
  assert t.decode(ids) == "<|user|>1+2=<|end|><|assistant|>"
  # '<' alone (not a marker) is an ordinary character.
  assert t.decode(t.encode("<s>a<b</s>")) == "<s>a<b</s>"
  chat = t.encode_chat([{"role": "user", "content": "1+2="}],
                       add_generation_prompt=True)
  assert chat == [1, 4] + t.encode("1+2=") + [6, 5]
  assert t.decode([0, 0] + t.encode("7") + [2, 0]) == "7"  # pads dropped


def test_char_unknown_char_error_names_char_and_position():
  t = CharTokenizer()
  with pytest.raises(ValueError, match=r"'é'.*position 11"):
    t.encode("<|user|>abcé")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    t.decode([t.vocab_size])
  with pytest.raises(ValueError, match="unknown role"):
    t.turn_marker("judge")
  with pytest.raises(ValueError, match="repeats"):
    CharTokenizer(alphabet="abca")


def test_char_encodes_all_generated_tasks():
  t = CharTokenizer()
  tasks = (addition(20, difficulty=3, seed=0, scratchpad=True)
           + expression(20, difficulty=3, seed=0, scratchpad=True)
           + countdown(20, difficulty=4, seed=0, scratchpad=True))
  for task in tasks:
    for text in (task.prompt, task.target):
      assert t.decode(t.encode(text)) == text


# -------------------------------------------------------- sentencepiece
def _corpus():
  r = random.Random(0)
  out = []
  for _ in range(200):
    a, b = r.randrange(1000), r.randrange(1000)
    out.append(f"<|user|>{a}+{b}=<|end|><|assistant|>#### {a + b}<|end|>")
    out.append(f"What is {a} plus {b}? The answer is {a + b}.\nGood.")
  return out + TEXTS


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  prefix = tmp_path_factory.mktemp("sp") / "tok"
  t = SentencePieceTokenizer.train(_corpus(), vocab_size=120,
                                   model_prefix=prefix)
  return t, str(prefix) + ".model"


def test_sp_special_ids(sp_model):
  t, _ = sp_model
  assert (t.pad_id, t.bos_id, t.eos_id, t.unk_id) == (0, 1, 2, 3)
  assert t.special_ids == {tok.SYSTEM: 4, tok.USER: 5, tok.ASSISTANT: 6,
                           tok.END: 7}
  assert t.turn_marker("system") == [4]
  assert t.encode("<|assistant|>") == [6]
  assert t.vocab_size <= 120
  # Digits are single pieces.
  assert [t.id_to_piece(i) for i in t.encode("579")] == ["5", "7", "9"]


@pytest.mark.parametrize("text", TEXTS + ["<|user|>1+2=<|end|>"])
def test_sp_round_trip(sp_model, text):
  t, _ = sp_model
  ids = t.encode(text, add_bos=True, add_eos=True)
  assert ids[0] == 1 and ids[-1] == 2
  assert t.decode(ids) == text


def test_sp_load_matches_trained(sp_model):
  t, path = sp_model
  loaded = SentencePieceTokenizer.load(path)
  for text in TEXTS:
    assert loaded.encode(text) == t.encode(text)
  assert loaded.special_ids == t.special_ids


def test_sp_unknown_chars_and_errors(sp_model, tmp_path):
  t, _ = sp_model
  ids = t.encode("é")
  assert t.unk_id in ids  # unseen char → <unk>, no byte fallback by default
  with pytest.raises(ValueError, match="no file"):
    SentencePieceTokenizer.load(tmp_path / "missing.model")
  with pytest.raises(ValueError, match="empty"):
    SentencePieceTokenizer.train([], vocab_size=50)


def test_sp_byte_fallback_round_trips_unseen(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(_corpus()), encoding="utf-8")
  t = SentencePieceTokenizer.train(corpus, vocab_size=400, model_type="bpe",
                                   byte_fallback=True)
  assert t.decode(t.encode("héllo ∑ 12")) == "héllo ∑ 12"
