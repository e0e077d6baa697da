"""Tests for jaxsi.rewards.verifiers and the safe expression parser."""

from fractions import Fraction

import pytest

from jaxsi.data.tasks import Task
from jaxsi.rewards import expression as E
from jaxsi.rewards import verifiers as V


# ------------------------------------------------------------- expression
@pytest.mark.parametrize("text,value", [
    ("25+3*7", 46), ("(2+3)*4-5", 15), ("8/(4/2)", 4), ("1-(2-3)", 2),
    ("10-2-3", 5), ("2*3×4", 24), ("9÷3", 3), (" ( ( 7 ) ) ", 7), ("-3*4", -12),
    ("7/2", Fraction(7, 2)),
])
def test_parse_and_evaluate(text, value):
  tree = E.parse(text)
  assert E.evaluate(tree) == value
  assert E.evaluate(E.parse(E.to_string(tree))) == value  # printing keeps meaning


@pytest.mark.parametrize("text,pattern", [
    ("", "empty"), ("1+", "expected a number"), ("(1+2", r"expected '\)'"),
    ("1+2)", r"unexpected '\)'"), ("2**3", r"unexpected '\*'"),
    ("__import__('os')", "unexpected character '_'"), ("1 2", "unexpected 2"),
    ("(" * 100 + "1" + ")" * 100, "nesting"), ("1" * 13, "digits"),
    ("1+" * 300 + "1", "longer than"),
])
def test_parse_errors(text, pattern):
  with pytest.raises(E.ExprError, match=pattern):
    E.parse(text)


def test_evaluate_constraints():
  with pytest.raises(E.ExprError, match="division by zero"):
    E.evaluate(E.parse("3/(2-2)"))
  with pytest.raises(E.ExprError, match="non-integer"):
    E.evaluate(E.parse("7/2*2"), integer_only=True)
  with pytest.raises(E.ExprError, match="negative"):
    E.evaluate(E.parse("2-3+5"), nonnegative=True)
  with pytest.raises(E.ExprError, match="unexpected '-'"):
    E.parse("-3+5", allow_unary_minus=False)
  assert E.safe_eval("1/0") is None
  assert E.check_equation("7+8+1=16") is True
  assert E.check_equation("7+8=16") is False
  assert E.check_equation("a=b") is None and E.check_equation("1=1=1") is None


# --------------------------------------------------------------- countdown
@pytest.mark.parametrize("expr,ok", [
    ("25+3*7", True), ("(25+3*7)", True), ("7*3+25", True),
    ("25+21", False),                 # 21 is not a given number
    ("25+3*7+3-3", False),            # uses 3 three times
    ("25+7*3/(3-3)", False),          # division by zero (and reuse)
    ("(25*7+3)/4", False),            # 4 not given
    ("25/2+3", False),                # non-integer intermediate
    ("25+3*", False),                 # malformed
    ("-3+49", False),                 # unary minus not allowed
    ("46", False), (None, False),
])
def test_check_countdown(expr, ok):
  assert V.check_countdown(expr, [3, 7, 25], 46) is ok


def test_check_countdown_division_and_use_all():
  assert V.check_countdown("(10-2)/4", [10, 2, 4], 2)
  assert not V.check_countdown("10/4*2", [10, 2, 4], 5)  # 10/4 non-integer
  assert V.check_countdown("6*8", [6, 8, 2], 48)
  assert not V.check_countdown("6*8", [6, 8, 2], 48, use_all=True)
  assert V.check_countdown("6*8*2/2", [6, 8, 2, 2], 48, use_all=True)


def test_countdown_task_verify_formats():
  t = Task("c", "3,7,25->46:", "25+3*7", "countdown", 3, "25+3*7",
           meta={"numbers": [3, 7, 25], "target": 46})
  for good in ("25+3*7", "25+3*7=46", "<s>3*7=21</s>\n#### 7*3+25",
               "think\n(3*7)+25", "<s>25+3*7</s>"):
    assert t.verify(good) == 1.0, good
  for bad in ("", "25+21", "#### 25+3*", "46", "25+3*7=46\nnope", "x" * 5000):
    assert t.verify(bad) == 0.0, bad
  assert t.verify("25+3*7<|end|>") == 1.0  # decoded stop marker is ignored
  assert V.parse_countdown_prompt("3, 7 ,25 -> 46") == ([3, 7, 25], 46)
  assert V.parse_countdown_prompt("hello") is None


# ------------------------------------------------------------------ numeric
@pytest.mark.parametrize("pred,gold,kw,ok", [
    ("46", "46", {}, True), ("046", "46", {}, True), ("46.0", "46", {}, True),
    ("1,234", "1234", {}, True), ("-5", "-5", {}, True), ("5", "-5", {}, False),
    ("0.5", "1/2", {}, True), ("0.3333333", "1/3", {}, True),
    ("0.33", "1/3", {}, False), ("10000001", "10000000", {}, False),
    ("64", "46", {"reverse": True}, True), ("6400", "46", {"reverse": True}, True),
    ("46", "46", {"reverse": True}, False), ("6.4", "46", {"reverse": True}, False),
    (None, "1", {}, False), ("abc", "1", {}, False), ("1", "abc", {}, False),
])
def test_numeric_match(pred, gold, kw, ok):
  assert V.numeric_match(pred, gold, **kw) is ok


def test_exact_match_and_registry():
  assert V.exact_match(" Paris. ", "paris")
  assert V.exact_match("\\text{Paris}", "Paris")
  assert not V.exact_match(None, "x")
  assert V.get_verifier("countdown") is V.verify_countdown
  with pytest.raises(KeyError, match="no verifier 'nope'"):
    V.get_verifier("nope")
  with pytest.raises(ValueError, match="already registered"):
    V.register_verifier("numeric", V.verify_exact)
  t = Task("x", "q", "yes", "custom-category", 0, "#### yes",
           meta={"verifier": "exact"})
  assert t.verify("#### Yes") == 1.0 and t.verify("#### no") == 0.0
  t = Task("x", "q", "12", "other", 0, "")
  assert t.verify("about 12") == 1.0  # unknown category → auto (numeric)
  assert t.verify(None) == 0.0  # type: ignore[arg-type]


def test_malformed_completions_score_zero():
  t = Task("a", "1+2=", "3", "addition", 1, "3", meta={"reverse": False})
  for bad in ("", "\\boxed{", "#### ####", "3/0", "\x00\xff", "9" * 10_000,
              "((((((", "#### 1,23"):
    assert t.verify(bad) == 0.0, bad


def test_step_correctness():
  text = "<s>7+8+1=16</s>\n<s>2+2=5</s>\n<s>carry one</s>\n#### 56"
  assert V.step_correctness(text) == [True, False, None]


def test_canonical_answer_for_voting():
  t = Task("a", "1+2=", "1000", "gsm8k", 0, "")
  forms = ["#### 1,000", "so 1000.0", "\\boxed{1000}", "The answer is 01000."]
  assert {V.canonical_answer(t, c) for c in forms} == {"1000"}
  assert V.canonical_answer(t, "nothing") is None
  assert V.canonical_answer(t, "#### 1/2") == "1/2"
  rev = Task("a", "1+2=", "46", "addition", 2, "64", meta={"reverse": True})
  assert V.canonical_answer(rev, "64") == "46"
  assert V.canonical_answer(rev, "6.4") is None
  cd = Task("c", "3,7,25->46:", "25+3*7", "countdown", 3, "")
  assert V.canonical_answer(cd, "#### 25 + 3*7") == "25+3*7"
  txt = Task("t", "q", "Paris", "trivia", 0, "")
  assert V.canonical_answer(txt, "Answer: PARIS.") == "paris"
