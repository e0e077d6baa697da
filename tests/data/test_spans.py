"""Tests for jaxsi.data.spans and Tokenizer.char_offsets."""

import numpy as np
import pytest

from jaxsi.data import tokenizer as tok
from jaxsi.data.char_tokenizer import CharTokenizer
from jaxsi.data.sentencepiece_tokenizer import SentencePieceTokenizer
from jaxsi.data.spans import char_spans_to_token_spans, step_span_ids

TEXT = "<s>3+6+0=9</s>\n<s>2+5+0=7</s>\n#### 79"


def test_char_offsets_fast_path_matches_generic():
  t = CharTokenizer()
  ids = [1] + t.encode("<|user|>ab<|end|>") + [2, 0]
  for skip in (True, False):
    generic = tok.Tokenizer.char_offsets(t, ids, skip_special=skip)
    assert t.char_offsets(ids, skip_special=skip) == generic
  assert t.char_offsets(ids) == [0, 0, 8, 9, 10, 17, 17]


def test_step_span_ids_char():
  t = CharTokenizer()
  ids = t.encode(TEXT)
  spans = step_span_ids(t, ids)
  expected = np.zeros(len(TEXT), np.int32)
  expected[0:14] = 1
  expected[15:29] = 2
  np.testing.assert_array_equal(spans, expected)
  assert step_span_ids(t, t.encode("no steps")).tolist() == [0] * 8


def test_step_span_ids_sentencepiece():
  corpus = [TEXT, "<s>1+1+0=2</s>\n#### 2", "hello world"] * 20
  t = SentencePieceTokenizer.train(corpus, vocab_size=60)
  ids = t.encode(TEXT)
  spans = step_span_ids(t, ids)
  text_of = lambda k: t.decode([i for i, s in zip(ids, spans) if s == k])
  assert text_of(1) == "<s>3+6+0=9</s>"
  assert text_of(2) == "<s>2+5+0=7</s>"
  assert text_of(0) == "\n\n#### 79"


def test_char_spans_to_token_spans():
  # Tokens covering chars [0,2), [2,5), [5,6).
  assert char_spans_to_token_spans([0, 2, 5], 6, [(1, 3), (5, 6), (6, 6)]) == [
      (0, 2), (2, 3), (0, 0)]


@pytest.mark.parametrize("role,idx", [("system", 3), ("user", 4),
                                       ("assistant", 5)])
def test_turn_start_id(role, idx):
  assert CharTokenizer().turn_start_id(role) == idx
