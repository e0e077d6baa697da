"""Tests for jaxsi.rewards.answers (extraction and number parsing)."""

from fractions import Fraction

import pytest

from jaxsi.rewards import answers


@pytest.mark.parametrize("text,expected", [
    ("<s>3+6+0=9</s>\n#### 579", "579"),
    ("#### 12\nthen #### 13", "13"),  # last marker wins
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),  # GSM8K
    ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
    ("\\boxed{ {a}+{b} }", "{a}+{b}"),  # nested braces
    ("The answer is 42.", "42"),
    ("Answer: -7", "-7"),
    ("A: 5", "5"),
    ("we get 3 then 1,234 total", "1,234"),  # last-number fallback
    ("34-12", "12"),  # '-' after an operand is not a sign
    ("x = -5", "-5"),
    ("nothing here", None),
    ("#### ", None),
    ("\\boxed{", None),
    ("", None),
])
def test_extract_answer(text, expected):
  assert answers.extract_answer(text) == expected


def test_extract_answer_options_and_non_str():
  assert answers.extract_answer("7 8", fallback_last_number=False) is None
  assert answers.extract_answer(None) is None  # type: ignore[arg-type]
  assert answers.extract_answer("ANS: 5", marker="ANS:") == "5"
  assert answers.extract_boxed("\\fbox{3}") == "3"
  assert answers.extract_last_number("-.5 and 2.25") == "2.25"


@pytest.mark.parametrize("text,expected", [
    ("007", Fraction(7)), ("-5", Fraction(-5)), ("+5", Fraction(5)),
    ("−5", Fraction(-5)), ("1,234", Fraction(1234)), ("1,234.5", Fraction(2469, 2)),
    ("3.50", Fraction(7, 2)), (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)),
    ("\\frac{3}{4}", Fraction(3, 4)), ("-\\dfrac{1}{2}", Fraction(-1, 2)),
    ("1e3", Fraction(1000)), ("$12", Fraction(12)), ("50%", Fraction(50)),
    ("12.", Fraction(12)), (" 8 ", Fraction(8)),
    ("1,23", None), ("abc", None), ("1/0", None), ("--5", None), ("", None),
    (None, None), ("1/2/3", None), ("5 apples", None), ("9" * 100, None),
])
def test_parse_number(text, expected):
  assert answers.parse_number(text) == expected


def test_reverse_digits_and_steps():
  assert answers.reverse_digits("6400") == "0046"
  assert answers.reverse_digits("-12") == "-21"
  assert answers.reverse_digits("1.5") is None
  assert answers.reverse_digits("") is None
  text = "<s>3+6+0=9</s>\n<s>2+5+0=7</s>\n#### 79"
  assert answers.split_steps(text) == ["3+6+0=9", "2+5+0=7"]
  spans = answers.step_spans(text)
  assert spans == [(0, 14), (15, 29)]
  assert [text[a:b] for a, b in spans] == ["<s>3+6+0=9</s>", "<s>2+5+0=7</s>"]
  assert answers.format_answer("5") == "#### 5"


def test_strip_special():
  assert answers.strip_special("46<|end|><eos><pad>") == "46"
  assert answers.strip_special("<|user|>a<b>c") == "a<b>c"
