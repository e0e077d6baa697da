"""A small, safe arithmetic-expression parser and evaluator (never ``eval``).

Grammar (integers only, exact rational arithmetic with ``fractions.Fraction``)::

  expr   := term (('+' | '-') term)*
  term   := factor (('*' | '/') factor)*
  factor := NUMBER | '(' expr ')' | '-' factor        (unary minus: optional)

``×``/``x`` are accepted for ``*`` and ``÷`` for ``/``; whitespace is ignored.
Inputs are bounded (length and nesting depth) so hostile completions cannot make
the verifier slow or overflow the stack. Used by the countdown verifier, the
expression task generator and the per-step arithmetic checks of scratchpads.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Optional, Union

MAX_LENGTH = 512
MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 12

_OPS = {"+": "+", "-": "-", "*": "*", "/": "/", "×": "*", "x": "*", "÷": "/"}
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


class ExprError(ValueError):
  """A malformed or non-evaluable expression (message names the position)."""


@dataclasses.dataclass(frozen=True)
class Num:
  value: int
  pos: int = 0


@dataclasses.dataclass(frozen=True)
class Neg:
  operand: "Node"
  pos: int = 0


@dataclasses.dataclass(frozen=True)
class BinOp:
  op: str
  left: "Node"
  right: "Node"
  pos: int = 0


Node = Union[Num, Neg, BinOp]


def _tokenize(text: str) -> list[tuple[str, object, int]]:
  if len(text) > MAX_LENGTH:
    raise ExprError(f"expression longer than {MAX_LENGTH} characters")
  tokens, i, n = [], 0, len(text)
  while i < n:
    c = text[i]
    if c.isspace():
      i += 1
    elif c.isdigit():
      j = i
      while j < n and text[j].isdigit():
        j += 1
      digits = text[i:j]
      if len(digits) > MAX_NUMBER_DIGITS:
        raise ExprError(f"number at position {i} has more than "
                        f"{MAX_NUMBER_DIGITS} digits")
      if not digits.isascii():
        raise ExprError(f"non-ASCII digit at position {i}")
      tokens.append(("num", int(digits), i))
      i = j
    elif c in _OPS:
      tokens.append(("op", _OPS[c], i))
      i += 1
    elif c in "()":
      tokens.append((c, c, i))
      i += 1
    else:
      raise ExprError(f"unexpected character {c!r} at position {i}")
  return tokens


class _Parser:

  def __init__(self, text: str, allow_unary_minus: bool):
    self.tokens = _tokenize(text)
    self.k = 0
    self.allow_unary_minus = allow_unary_minus
    self.text_len = len(text)

  def peek(self):
    return self.tokens[self.k] if self.k < len(self.tokens) else None

  def where(self) -> str:
    t = self.peek()
    return f"position {t[2]}" if t else f"end of input (position {self.text_len})"

  def expr(self, depth: int) -> Node:
    if depth > MAX_DEPTH:
      raise ExprError(f"nesting deeper than {MAX_DEPTH}")
    node = self.term(depth)
    while (t := self.peek()) and t[0] == "op" and t[1] in "+-":
      self.k += 1
      node = BinOp(t[1], node, self.term(depth), t[2])
    return node

  def term(self, depth: int) -> Node:
    node = self.factor(depth)
    while (t := self.peek()) and t[0] == "op" and t[1] in "*/":
      self.k += 1
      node = BinOp(t[1], node, self.factor(depth), t[2])
    return node

  def factor(self, depth: int) -> Node:
    t = self.peek()
    if t is None:
      raise ExprError(f"expected a number or '(' at {self.where()}")
    if t[0] == "num":
      self.k += 1
      return Num(t[1], t[2])
    if t[0] == "(":
      self.k += 1
      node = self.expr(depth + 1)
      close = self.peek()
      if close is None or close[0] != ")":
        raise ExprError(f"expected ')' at {self.where()} (opened at position "
                        f"{t[2]})")
      self.k += 1
      return node
    if t[0] == "op" and t[1] == "-" and self.allow_unary_minus:
      self.k += 1
      if depth > MAX_DEPTH:
        raise ExprError(f"nesting deeper than {MAX_DEPTH}")
      return Neg(self.factor(depth + 1), t[2])
    raise ExprError(f"unexpected {t[1]!r} at position {t[2]}")


def parse(text: str, *, allow_unary_minus: bool = True) -> Node:
  """Parses ``text`` into an expression tree.

  Raises:
    ExprError: malformed input (the message names the position).
  """
  p = _Parser(text, allow_unary_minus)
  if not p.tokens:
    raise ExprError("empty expression")
  node = p.expr(0)
  if p.peek() is not None:
    raise ExprError(f"unexpected {p.peek()[1]!r} at {p.where()}")
  return node


def evaluate(node: Node, *, integer_only: bool = False,
             nonnegative: bool = False) -> Fraction:
  """Evaluates a tree exactly.

  Args:
    node: the tree.
    integer_only: every intermediate result must be an integer (countdown
      rules); a non-exact division raises.
    nonnegative: every intermediate result must be >= 0.

  Raises:
    ExprError: division by zero, or a violated constraint.
  """
  if isinstance(node, Num):
    return Fraction(node.value)
  if isinstance(node, Neg):
    v = -evaluate(node.operand, integer_only=integer_only,
                  nonnegative=nonnegative)
    if nonnegative and v < 0:
      raise ExprError(f"negative intermediate result at position {node.pos}")
    return v
  a = evaluate(node.left, integer_only=integer_only, nonnegative=nonnegative)
  b = evaluate(node.right, integer_only=integer_only, nonnegative=nonnegative)
  v = _apply(node.op, a, b, node.pos)
  if integer_only and v.denominator != 1:
    raise ExprError(f"non-integer intermediate result {v} at position "
                    f"{node.pos}")
  if nonnegative and v < 0:
    raise ExprError(f"negative intermediate result {v} at position {node.pos}")
  return v


def _apply(op: str, a: Fraction, b: Fraction, pos: int) -> Fraction:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if b == 0:
    raise ExprError(f"division by zero at position {pos}")
  return a / b


def numbers(node: Node) -> list[int]:
  """The literal numbers of a tree, left to right."""
  if isinstance(node, Num):
    return [node.value]
  if isinstance(node, Neg):
    return numbers(node.operand)
  return numbers(node.left) + numbers(node.right)


def safe_eval(text: str, *, integer_only: bool = False,
              allow_unary_minus: bool = True) -> Optional[Fraction]:
  """``evaluate(parse(text))``, or ``None`` for any malformed input."""
  try:
    return evaluate(parse(text, allow_unary_minus=allow_unary_minus),
                    integer_only=integer_only)
  except ExprError:
    return None


def to_string(node: Node) -> str:
  """Renders a tree with the fewest parentheses that keep its meaning."""
  if isinstance(node, Num):
    return str(node.value)
  if isinstance(node, Neg):
    inner = to_string(node.operand)
    return f"-{inner}" if isinstance(node.operand, Num) else f"-({inner})"
  p = _PREC[node.op]
  left, right = to_string(node.left), to_string(node.right)
  if isinstance(node.left, BinOp) and _PREC[node.left.op] < p:
    left = f"({left})"
  if isinstance(node.right, BinOp):
    rp = _PREC[node.right.op]
    # a-(b+c), a-(b-c), a/(b*c), a/(b/c), a*(b/c) keep their parentheses.
    if rp < p or (rp == p and node.op in "-/") or (
        node.op == "*" and node.right.op == "/"):
      right = f"({right})"
  elif isinstance(node.right, Neg):
    right = f"({right})"
  return f"{left}{node.op}{right}"


def steps(node: Node) -> list[tuple[Fraction, str, Fraction, Fraction]]:
  """Post-order evaluation steps ``(a, op, b, result)`` of every BinOp.

  Raises:
    ExprError: division by zero.
  """
  out = []

  def go(n: Node) -> Fraction:
    if isinstance(n, Num):
      return Fraction(n.value)
    if isinstance(n, Neg):
      return -go(n.operand)
    a, b = go(n.left), go(n.right)
    v = _apply(n.op, a, b, n.pos)
    out.append((a, n.op, b, v))
    return v

  go(node)
  return out


def format_number(v: Fraction) -> str:
  """``'12'`` for integers, ``'-3/4'`` for other rationals."""
  return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def check_equation(text: str) -> Optional[bool]:
  """Checks one ``lhs=rhs`` arithmetic step, e.g. ``'7+8+1=16'``.

  Returns:
    True/False for a well-formed equation whose two sides are (not) equal;
    None when ``text`` is not an equation of two parseable expressions.
  """
  if text.count("=") != 1:
    return None
  lhs, rhs = text.split("=")
  try:
    return evaluate(parse(lhs)) == evaluate(parse(rhs))
  except ExprError:
    return None
