"""Verifiers: does a completion answer a task correctly? (1.0 / 0.0, never raises)

A verifier is ``fn(task, completion) -> float``. ``Task.verify`` looks one up by
``task.meta['verifier']`` if set, else by ``task.category``, else falls back to
``'auto'`` (numeric match when the gold answer is a number, normalised exact
match otherwise). Register new ones with ``register_verifier``.

Task meta keys read here: ``reverse`` (answer digits are written reversed),
``rel_tol``/``abs_tol`` (numeric tolerance), ``numbers``/``target``/``use_all``
(countdown).
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from typing import Any, Callable, Dict, Optional, Sequence

from jaxsi.rewards import answers
from jaxsi.rewards import expression as expr_lib

Verifier = Callable[[Any, str], float]

_VERIFIERS: Dict[str, Verifier] = {}


# ------------------------------------------------------------- primitives
def normalize_text(s: Optional[str]) -> str:
  """Lower-cases, strips ``$``/``\\text{}``/spaces/trailing period for exact match.

  Idempotent: repeated until nothing changes, so nested ``\\text{\\text{a}}``
  and ``'a . .'`` normalise fully (``'a'``).
  """
  if s is None:
    return ""
  while True:
    before = s
    s = s.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    s = s.lower()
    if s == before:
      return s


def exact_match(pred: Optional[str], gold: str) -> bool:
  """Normalised string equality (``normalize_text``); None never matches."""
  if pred is None:
    return False
  return normalize_text(pred) == normalize_text(gold)


def numbers_close(pred: Fraction, gold: Fraction, *, rel_tol: float = 1e-6,
                  abs_tol: float = 1e-9) -> bool:
  """Exact equality for integers; tolerance when either side is not integral.

  Integers are compared exactly so that 10_000_001 never matches 10_000_000.
  """
  if pred == gold:
    return True
  if pred.denominator == 1 and gold.denominator == 1:
    return False
  return abs(float(pred) - float(gold)) <= max(abs_tol, rel_tol * abs(float(gold)))


def numeric_match(pred: Optional[str], gold: str, *, reverse: bool = False,
                  rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
  """Numeric equality of two answer strings (commas, zeros, signs, fractions).

  Args:
    pred: predicted answer string (None → False).
    gold: gold answer string (canonical order, never reversed).
    reverse: ``pred`` is written with its digits reversed (``'64'`` for 46);
      it must then be a plain (optionally signed) digit string.
    rel_tol: relative tolerance for non-integers.
    abs_tol: absolute tolerance for non-integers.

  Returns:
    Whether they denote the same number. False for anything unparseable.
  """
  if pred is None:
    return False
  if reverse:
    pred = answers.reverse_digits(pred)
    if pred is None:
      return False
  p, g = answers.parse_number(pred), answers.parse_number(gold)
  if p is None or g is None:
    return False
  return numbers_close(p, g, rel_tol=rel_tol, abs_tol=abs_tol)


# --------------------------------------------------------------- verifiers
def verify_numeric(task, completion: str) -> float:
  """Final answer (``extract_answer``) numerically equals ``task.answer``."""
  meta = task.meta or {}
  pred = answers.extract_answer(completion)
  ok = numeric_match(pred, task.answer, reverse=bool(meta.get("reverse", False)),
                     rel_tol=float(meta.get("rel_tol", 1e-6)),
                     abs_tol=float(meta.get("abs_tol", 1e-9)))
  return 1.0 if ok else 0.0


def verify_exact(task, completion: str) -> float:
  """Final answer string equals ``task.answer`` after ``normalize_text``."""
  pred = answers.extract_answer(completion, fallback_last_number=False)
  if pred is None:
    pred = completion.strip().split("\n")[-1] if completion.strip() else None
  return 1.0 if exact_match(pred, task.answer) else 0.0


def verify_auto(task, completion: str) -> float:
  """Numeric match if the gold answer is a number, else exact match."""
  if answers.parse_number(task.answer) is not None:
    return verify_numeric(task, completion)
  return verify_exact(task, completion)


_COUNTDOWN_PROMPT_RE = re.compile(r"^\s*([\d\s,]+?)\s*->\s*(\d+)\s*:?\s*$")


def parse_countdown_prompt(prompt: str) -> Optional[tuple[list[int], int]]:
  """``'3,7,25->46:'`` → ``([3, 7, 25], 46)``; None if not in that format."""
  m = _COUNTDOWN_PROMPT_RE.match(prompt)
  if not m:
    return None
  nums = [int(x) for x in re.split(r"[\s,]+", m.group(1).strip()) if x]
  return (nums, int(m.group(2))) if nums else None


def extract_countdown_expression(completion: str) -> Optional[str]:
  """The expression of a countdown completion.

  After the last ``####`` if present, else the last non-empty line; a trailing
  ``=<number>`` is dropped (``'25+3*7=46'`` → ``'25+3*7'``).
  """
  if not isinstance(completion, str):
    return None
  text = answers.extract_marked(completion)
  if text is None:
    lines = [l for l in completion.split("\n") if l.strip()]
    if not lines:
      return None
    text = lines[-1]
  text = text.split(answers.STEP_OPEN)[-1].replace(answers.STEP_CLOSE, "")
  if "=" in text:
    text = text.split("=")[0]
  return text.strip() or None


def check_countdown(expression: Optional[str], numbers: Sequence[int],
                    target: int, *, use_all: bool = False) -> bool:
  """Whether ``expression`` reaches ``target`` under countdown rules.

  Rules: only ``+ - * /`` and parentheses, no unary minus, each given number
  used at most once (exactly once if ``use_all``), every intermediate result
  an integer (division must be exact), no division by zero. Parsed by
  ``jaxsi.rewards.expression`` (never ``eval``).
  """
  if expression is None:
    return False
  try:
    tree = expr_lib.parse(expression, allow_unary_minus=False)
    used = Counter(expr_lib.numbers(tree))
    avail = Counter(int(n) for n in numbers)
    if any(used[k] > avail[k] for k in used):
      return False
    if use_all and used != avail:
      return False
    return expr_lib.evaluate(tree, integer_only=True) == target
  except expr_lib.ExprError:
    return False


def verify_countdown(task, completion: str) -> float:
  """Countdown: numbers/target from ``task.meta`` (or parsed from the prompt)."""
  meta = task.meta or {}
  if "numbers" in meta and "target" in meta:
    nums, target = list(meta["numbers"]), int(meta["target"])
  else:
    parsed = parse_countdown_prompt(task.prompt)
    if parsed is None:
      return 0.0
    nums, target = parsed
  ok = check_countdown(extract_countdown_expression(completion), nums, target,
                       use_all=bool(meta.get("use_all", False)))
  return 1.0 if ok else 0.0


def pair_sum_pair(completion: str) -> Optional[tuple[int, int]]:
  """The two digits a pair-sum completion names (``'49'`` → (4, 9)), else None."""
  text = completion.strip()
  if len(text) != 2 or not text.isdigit() or not text.isascii():  # not '0²'
    return None
  return int(text[0]), int(text[1])


def verify_pair_sum(task, completion: str) -> float:
  """Pair-sum: two distinct listed digits summing to the target, either order.

  Numbers and target come from ``task.meta`` (``synthetic.pair_sum``).
  Anything but exactly two digits scores 0.
  """
  meta = task.meta or {}
  pair = pair_sum_pair(completion)
  if pair is None or "numbers" not in meta:
    return 0.0
  a, b = pair
  nums = list(meta["numbers"])
  ok = (a != b and a in nums and b in nums and a + b == int(meta["target"]))
  return 1.0 if ok else 0.0


def step_correctness(completion: str) -> list[Optional[bool]]:
  """Per ``<s>…</s>`` step: is its arithmetic equation right (None: no equation).

  For process rewards on scratchpads (``'7+8+1=16'`` → True).
  """
  return [expr_lib.check_equation(s) for s in answers.split_steps(completion)]


def canonical_answer(task, completion: str) -> Optional[str]:
  """A hashable canonical form of a completion's final answer, for voting.

  Equal strings mean "same answer" (majority vote / self-consistency /
  label-free rewards): numbers become exact rationals (``'1,000'``,
  ``'1000.0'`` → ``'1000'``; reversed-format answers are un-reversed), countdown
  expressions their normalised text, anything else ``normalize_text``. None
  when no answer can be extracted.
  """
  if not isinstance(completion, str):
    return None
  completion = answers.strip_special(completion)
  meta = task.meta or {}
  if task.category == "countdown" and "verifier" not in meta:
    expr = extract_countdown_expression(completion)
    return expr.replace(" ", "") if expr else None
  if task.category == "pair_sum" and "verifier" not in meta:
    pair = pair_sum_pair(completion)
    return None if pair is None else "".join(str(d) for d in sorted(pair))
  pred = answers.extract_answer(completion)
  if pred is None:
    return None
  if meta.get("reverse", False):
    pred = answers.reverse_digits(pred)
    if pred is None:
      return None
  value = answers.parse_number(pred)
  if value is not None:
    return expr_lib.format_number(value)
  return normalize_text(pred) or None


# ---------------------------------------------------------------- registry
def register_verifier(name: str, fn: Verifier, *, overwrite: bool = False) -> None:
  """Registers ``fn(task, completion) -> float`` under ``name``."""
  if name in _VERIFIERS and not overwrite:
    raise ValueError(f"register_verifier: {name!r} is already registered")
  _VERIFIERS[name] = fn


def get_verifier(name: str) -> Verifier:
  """The verifier registered as ``name``.

  Raises:
    KeyError: unknown name (the message lists the registered names).
  """
  try:
    return _VERIFIERS[name]
  except KeyError:
    raise KeyError(f"no verifier {name!r}; registered: "
                   f"{sorted(_VERIFIERS)}") from None


def verifier_names() -> list[str]:
  return sorted(_VERIFIERS)


def verify_task(task, completion: str) -> float:
  """Dispatches to ``meta['verifier']``, the category's verifier, or ``'auto'``."""
  meta = task.meta or {}
  name = meta.get("verifier")
  if name is not None:
    fn = get_verifier(name)
  else:
    fn = _VERIFIERS.get(task.category, verify_auto)
  if not isinstance(completion, str):
    return 0.0
  return float(fn(task, answers.strip_special(completion)))


for _name, _fn in (("numeric", verify_numeric), ("exact", verify_exact),
                   ("auto", verify_auto), ("countdown", verify_countdown),
                   ("pair_sum", verify_pair_sum),
                   ("addition", verify_numeric),
                   ("multiplication", verify_numeric),
                   ("expression", verify_numeric), ("gsm8k", verify_numeric),
                   ("math", verify_auto)):
  register_verifier(_name, _fn)
