"""Property-based tests (hypothesis) of answer extraction, canonicalisation and
number parsing (jaxsi/rewards/answers.py, verifiers.canonical_answer /
normalize_text) and of majority voting (jaxsi/rewards/voting.py)."""

from fractions import Fraction
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from jaxsi.data.registry import Task
from jaxsi.rewards import answers
from jaxsi.rewards import expression
from jaxsi.rewards import verifiers
from jaxsi.rewards import voting

SETTINGS = settings(max_examples=100, deadline=None)

ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates too
# Text built from the pieces the parsers look for, so the interesting branches
# (markers, boxes, signs, commas, fractions, specials) are actually reached.
PIECES = st.sampled_from([
    "####", "#### ", "\\boxed{", "\\fbox{", "{", "}", "answer is", "Answer:",
    "A:", "\n", " ", ".", "..", "$", "\\$", "%", "-", "−", "+", ",", "/", "e",
    "\\frac{", "\\dfrac{", "\\text{", "\\!", "\\,", "<s>", "</s>", "<|end|>",
    "<|user|>", "<eos>", "<pad>", "<", ">", "|", "0", "1", "7", "12", "1,234",
    "3.5", ".5", "007", "٣", "²", "x", "Paris", "İ", "ß"])
texts = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=12).map("".join))

TASKS = [
    Task("n", "p", "12", "gsm8k"),
    Task("t", "p", "Paris", "trivia"),
    Task("r", "p", "46", "addition", meta={"reverse": True}),
    Task("c", "3,7,25->46:", "25+3*7", "countdown"),
    Task("s", "p", "49", "pair_sum", meta={"numbers": [4, 9], "target": 13}),
]


@SETTINGS
@given(texts)
def test_parsers_never_raise(text):
  for marker in (answers.ANSWER_MARKER, "ANS:"):
    out = answers.extract_answer(text, marker=marker)
    assert out is None or (isinstance(out, str) and out and out == out.strip())
    answers.extract_answer(text, marker=marker, fallback_last_number=False)
    answers.extract_marked(text, marker=marker)
  for fn in (answers.extract_boxed, answers.extract_last_number,
             answers.parse_number, answers.reverse_digits, answers.split_steps,
             answers.step_spans, answers.strip_special, verifiers.normalize_text):
    fn(text)
  for task in TASKS:
    c = verifiers.canonical_answer(task, text)
    assert c is None or (isinstance(c, str) and c)
    assert verifiers.verify_task(task, text) in (0.0, 1.0)


@SETTINGS
@given(texts)
def test_cleaning_and_normalising_are_idempotent(text):
  n = verifiers.normalize_text(text)
  assert verifiers.normalize_text(n) == n
  s = answers.strip_special(text)
  assert answers.strip_special(s) == s
  # An extracted answer, written again in the answer format, extracts to itself.
  a = answers.extract_answer(text)
  if a is not None and "\n" not in a and "####" not in a:
    assert answers.extract_answer(answers.format_answer(a)) == a


@SETTINGS
@given(texts)
def test_canonical_answer_is_a_fixed_point(text):
  for task in TASKS[:2]:
    c = verifiers.canonical_answer(task, text)
    if c is None:
      continue
    if answers.parse_number(c) is not None:  # numbers canonicalise to themselves
      assert verifiers.canonical_answer(task, c) == c
      assert verifiers.canonical_answer(task, answers.format_answer(c)) == c
    else:  # text answers are normalize_text fixed points
      assert verifiers.normalize_text(c) == c


@SETTINGS
@given(st.fractions(max_denominator=10**6),
       st.sampled_from(["{}", "#### {}", "so the answer is {}.", "\\boxed{{{}}}",
                        "$ {} $", "we get {}"]))
def test_numbers_round_trip_through_text(value, template):
  s = expression.format_number(value)
  assert answers.parse_number(s) == value
  assert verifiers.canonical_answer(TASKS[0], template.format(s)) == s
  assert verifiers.numeric_match(template.format(s), s) or template != "{}"


@SETTINGS
@given(st.integers(-10**20, 10**20))
def test_integer_spellings_parse_to_the_same_number(n):
  plain = str(n)
  commas = f"{n:,}"
  for s in (plain, commas, plain + ".0", "+" + plain if n >= 0 else plain,
            plain.replace("-", "−"), f"${plain}", f"{plain}.", f" {plain} ",
            f"\\frac{{{plain}}}{{1}}"):
    assert answers.parse_number(s) == n, s
  c = verifiers.canonical_answer(TASKS[0], f"#### {commas}")
  assert c == plain


@pytest.mark.parametrize("text,expected", [
    ("\\text{\\text{Paris}}", "paris"),  # nested \text{} fully removed
    ("Paris . .", "paris"),  # every trailing period
    ("\\te$xt{a}", "a"),
    ("  New   York.\n", "new york"),
])
def test_normalize_text_hand_examples(text, expected):
  assert verifiers.normalize_text(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("#### 5. .", "5"),
    ("#### $5.$", "5"),
    ("#### 5...", "5..."),  # an ellipsis is kept
    ("\\boxed{$x$.}", "x"),
])
def test_extract_answer_clean_hand_examples(text, expected):
  assert answers.extract_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("<<|end|>|end|>46", "46"),
    ("4<eo<eos>s>6", "46"),
])
def test_strip_special_hand_examples(text, expected):
  assert answers.strip_special(text) == expected


@pytest.mark.parametrize("text", ["--\\frac{1}{2}", "-−5", "--.5"])
def test_parse_number_double_sign_is_not_a_number(text):
  assert answers.parse_number(text) is None


# ----------------------------------------------------------------- voting
votes = st.lists(st.one_of(st.none(), st.sampled_from(["", " ", "\n"]),
                           st.sampled_from(["a", "b", "c", "42", "42.0"])),
                 max_size=12)


def _parseable(a):
  return a is not None and a.strip() != ""


@SETTINGS
@given(votes)
def test_majority_vote_winner_has_maximal_count_and_earliest_tie(xs):
  winner, index = voting.majority_vote(xs)
  ok = [a for a in xs if _parseable(a)]
  if not ok:
    assert (winner, index) == (None, None)
    return
  counts = {a: ok.count(a) for a in ok}
  best = max(counts.values())
  assert counts[winner] == best
  assert index == xs.index(winner) and xs[index] == winner
  tied = [a for a in counts if counts[a] == best]
  assert xs.index(winner) == min(xs.index(a) for a in tied)  # earliest wins


@settings(max_examples=50, deadline=None)
@given(votes, st.randoms(use_true_random=False))
def test_majority_vote_under_permutation(xs, rnd):
  ys = list(xs)
  rnd.shuffle(ys)
  w1, _ = voting.majority_vote(xs)
  w2, i2 = voting.majority_vote(ys)
  if w1 is None:
    assert w2 is None
    return
  assert xs.count(w1) == ys.count(w2)  # the winning count never changes
  counts = {a: xs.count(a) for a in xs if _parseable(a)}
  best = max(counts.values())
  if sum(1 for c in counts.values() if c == best) == 1:
    assert w2 == w1  # a unique majority is permutation invariant
  else:  # a tie goes to the tied answer the permuted list shows first
    assert ys.index(w2) == min(ys.index(a) for a in counts if counts[a] == best)
  assert ys[i2] == w2


def test_majority_vote_hand_examples():
  assert voting.majority_vote(["b", None, "a", "a", "b"]) == ("b", 0)
  assert voting.majority_vote(["", "c", "d", "d"]) == ("d", 2)
  for perm in itertools.permutations(["x", "x", "y"]):
    assert voting.majority_vote(list(perm))[0] == "x"


@pytest.mark.parametrize("completion", ["0²", "²³", "٣4"])
def test_pair_sum_non_ascii_digits_score_zero(completion):
  # '²'.isdigit() is True but int('²') raises: the verifier raised on model output.
  task = TASKS[4]
  assert verifiers.verify_task(task, completion) == 0.0
  assert verifiers.canonical_answer(task, completion) is None


EXPR_PIECES = st.sampled_from(list("0123456789+-*/()x×÷ =") +
                              ["12", "999999999999", "/0", "²", "٣", "(("])
expr_texts = st.lists(EXPR_PIECES, max_size=30).map("".join) | texts


@SETTINGS
@given(expr_texts, st.booleans(), st.booleans())
def test_expression_parser_raises_only_expr_error(text, unary, integer_only):
  try:
    tree = expression.parse(text, allow_unary_minus=unary)
    expression.numbers(tree)
    expression.evaluate(tree, integer_only=integer_only)
  except expression.ExprError:
    pass
  assert expression.check_equation(text) in (None, True, False)
  assert verifiers.check_countdown(text, [1, 2, 3, 12], 24) in (True, False)
