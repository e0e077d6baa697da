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


# ------------------------------------ in-sequence self-verification format
from jaxsi.data import spans as sv  # noqa: E402
from jaxsi.data import tasks as tasks_lib  # noqa: E402

FMT2 = sv.VerdictFormat(max_attempts=2)


def test_parse_attempts_and_verdicts():
  p = sv.parse_self_verification("74[wrong]64[correct]", FMT2)
  assert [(a.text, a.verdict) for a in p.attempts] == [("74", False),
                                                       ("64", True)]
  a1, a2 = p.attempts
  assert (a1.start, a1.end, a1.verdict_start, a1.verdict_end) == (0, 2, 2, 9)
  assert (a2.start, a2.end, a2.verdict_start, a2.verdict_end) == (9, 11, 11, 20)
  assert p.extra is None and p.final_answer == "64"


@pytest.mark.parametrize("text,attempts,extra,final", [
    ("64", [("64", None)], None, "64"),                         # no verdict
    ("", [("", None)], None, None),                             # empty
    ("6[corr", [("6[corr", None)], None, "6[corr"),             # truncated
    ("64[wrong]", [("64", False), ("", None)], None, "64"),     # no revision
    ("1[wrong]2[wrong]3[correct]", [("1", False), ("2", False)],
     (16, 26), "2"),                                            # > M attempts
    ("[correct]", [("", True)], None, None),                    # no attempt
    ("6[correct]5", [("6", True), ("5", None)], None, "5"),     # went on
])
def test_parse_special_cases(text, attempts, extra, final):
  p = sv.parse_self_verification(text, FMT2)
  assert [(a.text, a.verdict) for a in p.attempts] == attempts
  assert p.extra == extra
  assert p.final_answer == final


def test_parse_m1_wrong_then_stop_adds_no_revision():
  p = sv.parse_self_verification("64[wrong]", sv.VerdictFormat(max_attempts=1))
  assert [(a.text, a.verdict) for a in p.attempts] == [("64", False)]


def test_verdict_format_validation_and_render():
  assert FMT2.num_spans == 5 and FMT2.shared_prefix == 1
  assert sv.VerdictFormat(correct="<ok>", wrong="!no").shared_prefix == 0
  assert sv.span_roles(2) == (0, 1, 0, 1, 0)
  assert FMT2.render(["74", "64"], [False, True]) == "74[wrong]64[correct]"
  with pytest.raises(ValueError, match="overlap"):
    sv.VerdictFormat(correct="ab", wrong="bc")
  with pytest.raises(ValueError, match="overlap"):
    sv.VerdictFormat(correct="<ok>", wrong="<ok>!")
  with pytest.raises(ValueError, match="max_attempts"):
    sv.VerdictFormat(max_attempts=0)


def test_self_verification_span_ids_char_hand():
  t = CharTokenizer()
  ids = t.encode("74[wrong]64[correct]") + [t.eos_id, t.pad_id]
  got = sv.self_verification_span_ids(t, ids, FMT2)
  # The shared marker prefix '[' ends the attempt: it belongs to the attempt.
  want = [1, 1, 1] + [2] * 6 + [3, 3, 3] + [4] * 8 + [4, 0]
  np.testing.assert_array_equal(got, want)
  # No verdict: the stop token stands for the missing verdict (span 2).
  np.testing.assert_array_equal(
      sv.self_verification_span_ids(t, t.encode("64") + [t.eos_id], FMT2),
      [1, 1, 2])
  # Negative verdict then stop with attempts left: the missing revision (3).
  np.testing.assert_array_equal(
      sv.self_verification_span_ids(t, t.encode("6[wrong]") + [t.eos_id],
                                    FMT2), [1, 1] + [2] * 6 + [3])
  # Truncated (no stop token) and extra text after the M-th verdict.
  np.testing.assert_array_equal(
      sv.self_verification_span_ids(t, t.encode("1[wrong]2[wrong]3"), FMT2),
      [1, 1] + [2] * 6 + [3, 3] + [4] * 6 + [5])
  # Rejected (negative-verdict) attempts for SFT masking.
  np.testing.assert_array_equal(
      sv.rejected_attempt_mask(t, ids, FMT2),
      [True, True, True] + [False] * 19)


def test_self_verification_span_ids_sentencepiece_roundtrip():
  corpus = ["74[wrong]64[correct]", "531[correct]", "9[wrong]901[correct]",
            "hello world"] * 20
  t = SentencePieceTokenizer.train(corpus, vocab_size=60)
  ids = t.encode("74[wrong]64[correct]") + [t.eos_id]
  spans = sv.self_verification_span_ids(t, ids, FMT2)
  text_of = lambda k: t.decode([i for i, s in zip(ids, spans) if s == k])
  assert text_of(1) + text_of(2) + text_of(3) + text_of(4) == (
      "74[wrong]64[correct]")
  assert set(spans.tolist()) == {1, 2, 3, 4}
  assert list(spans) == sorted(spans)          # spans are contiguous, in order
  assert "wrong" in text_of(2) and "correct" in text_of(4)
  assert spans[-1] == 4                        # stop after a positive verdict


def test_addition_self_verify_task():
  ts = tasks_lib.make_tasks("addition_self_verify", 40, difficulty=2, seed=3,
                            p_wrong=0.5, max_attempts=3)
  assert {t.meta["injected_wrong"] for t in ts} >= {0, 1}
  for t in ts:
    p = sv.parse_self_verification(t.target, sv.VerdictFormat(max_attempts=3))
    assert len(p.attempts) == t.meta["injected_wrong"] + 1 <= 3
    assert [a.verdict for a in p.attempts][-1] is True
    assert all(v is False for v in p.verdicts[:-1])
    assert t.verify(t.target) == 1.0            # final attempt correct
    assert p.attempts[-1].text == t.answer[::-1]
    for a in p.attempts[:-1]:                    # injected attempts are wrong
      assert tasks_lib.attempt_correct(t, a.text) == 0.0
  t = ts[0]
  wrong = tasks_lib.wrong_answer(int(t.answer), np.random.default_rng(0))
  assert t.verify(f"{t.answer[::-1]}[correct]") == 1.0
  assert t.verify(f"{t.answer[::-1]}[wrong]{str(wrong)[::-1]}[correct]") == 0.0
  assert t.verify("") == 0.0
  # Same problems as the plain reversed addition generator.
  plain = tasks_lib.make_tasks("addition", 40, difficulty=2, seed=3,
                               reverse=True)
  assert [x.prompt for x in plain] == [x.prompt for x in ts]
