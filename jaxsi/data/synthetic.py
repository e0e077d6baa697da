"""Deterministic synthetic verifiable tasks with a difficulty knob.

Formats are compact so tiny character-level models can learn them. Shared
conventions (see ``jaxsi.rewards.answers``):

* plain: ``'12+34='`` → ``'46'``;
* ``scratchpad=True``: one step per line wrapped in ``<s>…</s>``, then the
  answer line ``'#### 46'``. Every step is a checkable equation
  (``verifiers.step_correctness``), e.g. the addition column
  ``'<s>7+8+1=16</s>'`` = digit 6, carry 1;
* ``reverse=True``: the answer is written least-significant digit first
  (``'64'`` for 46): the model emits digits in the order it computes them, a
  known trick for length generalisation (``Task.answer`` stays canonical;
  ``meta['reverse']`` tells the verifier);
* ``pad=True``: operands are zero-padded to the difficulty width and the
  answer to its maximal width, so every prompt of one difficulty has the same
  length and digit positions align.

Generators: ``addition`` (difficulty = digits per operand), ``multiplication``
(digits), ``expression`` (number of operations), ``countdown`` (how many
numbers), ``pair_sum`` (list length). Same arguments and seed → the same tasks.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxsi.data.registry import Task, register_task
from jaxsi.rewards import answers
from jaxsi.rewards import expression as expr_lib

_SALT = {"addition": 1, "multiplication": 2, "expression": 3, "countdown": 4,
         "pair_sum": 5}


def _rng(name: str, difficulty: int, seed: int) -> np.random.Generator:
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(difficulty), _SALT[name]])


def _check(name: str, difficulty: int, lo: int, hi: int) -> None:
  if not isinstance(difficulty, (int, np.integer)) or not lo <= difficulty <= hi:
    raise ValueError(
        f"{name}: difficulty must be an int in [{lo}, {hi}], got {difficulty!r}")


def _rand_digits(rng: np.random.Generator, d: int, *, exact: bool) -> int:
  """A random integer with exactly ``d`` digits (``exact``) or in [0, 10**d)."""
  digits = rng.integers(0, 10, size=d)
  if exact and d > 1 and digits[0] == 0:
    digits[0] = rng.integers(1, 10)
  return int("".join(str(x) for x in digits))


def _render(steps: list[str], answer_text: str, *, marker: bool) -> str:
  lines = [f"{answers.STEP_OPEN}{s}{answers.STEP_CLOSE}" for s in steps]
  lines.append(answers.format_answer(answer_text) if marker else answer_text)
  return "\n".join(lines)


def _show(value: int, *, width: int, pad: bool, reverse: bool) -> str:
  s = str(value).zfill(width) if pad else str(value)
  return s[::-1] if reverse else s


def _fmt_meta(scratchpad, reverse, pad, marker):
  return {"format": "scratchpad" if scratchpad else "plain",
          "reverse": bool(reverse), "pad": bool(pad), "marker": bool(marker)}


# --------------------------------------------------------------- addition
def addition_text(a: int, b: int, *, width: int, scratchpad: bool = False,
                  reverse: bool = False, pad: bool = False,
                  marker: bool = False, reverse_operands: bool = False
                  ) -> tuple[str, str]:
  """``(prompt, target)`` of ``a+b`` in the addition format (see ``addition``)."""
  sa, sb = (f"{x:0{width}d}" if pad else str(x) for x in (a, b))
  if reverse_operands:
    sa, sb = sa[::-1], sb[::-1]
  prompt = f"{sa}+{sb}="
  steps, carry = [], 0
  if scratchpad:
    sa, sb = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    for k in range(max(len(sa), len(sb))):
      da, db = sa[k] if k < len(sa) else "0", sb[k] if k < len(sb) else "0"
      s = int(da) + int(db) + carry
      steps.append(f"{da}+{db}+{carry}={s}")
      carry = s // 10
  shown = _show(a + b, width=width + 1, pad=pad, reverse=reverse)
  return prompt, _render(steps, shown, marker=marker)


def addition(n: int, *, difficulty: int, seed: int = 0, scratchpad: bool = False,
             reverse: bool = False, pad: bool = False,
             marker: Optional[bool] = None, exact_digits: bool = True,
             reverse_operands: bool = False) -> list[Task]:
  """``a+b=`` with ``difficulty``-digit operands.

  For length generalisation (train on ≤ d digits, then d + 1), use
  ``reverse=True`` (optionally with ``pad``/``reverse_operands``): the answer is
  produced least-significant digit first, so every output digit depends only on
  one column and the incoming carry, the same computation at every length
  (Lee et al. 2023, "Teaching Arithmetic to Small Transformers"; Lee et al.
  2025, "Self-Improving Transformers Overcome Easy-to-Hard and Length
  Generalization Challenges"). ``scratchpad=True`` makes the carry explicit.

  Args:
    n: number of tasks.
    difficulty: digits per operand (1..30).
    seed: random seed.
    scratchpad: column-by-column steps ``'<s>a_i+b_i+carry=s</s>'`` (least
      significant column first), then ``'#### sum'``.
    reverse: write the answer digits reversed.
    pad: zero-pad operands to ``difficulty`` digits and the sum to
      ``difficulty + 1``.
    marker: put ``'#### '`` before the answer (default: only with scratchpad).
    exact_digits: operands have exactly ``difficulty`` digits (else uniform in
      ``[0, 10**difficulty)``).
    reverse_operands: write the operands least-significant digit first too
      (the prompt then lines up digit k of both operands with answer digit k).

  Returns:
    ``n`` tasks of category ``'addition'``.
  """
  _check("addition", difficulty, 1, 30)
  marker = scratchpad if marker is None else marker
  rng, d, out = _rng("addition", difficulty, seed), difficulty, []
  for i in range(n):
    a, b = (_rand_digits(rng, d, exact=exact_digits) for _ in range(2))
    prompt, target = addition_text(a, b, width=d, scratchpad=scratchpad,
                                   reverse=reverse, pad=pad, marker=marker,
                                   reverse_operands=reverse_operands)
    out.append(Task(
        id=f"addition/d{d}/s{seed}/{i}", prompt=prompt, answer=str(a + b),
        category="addition", difficulty=d, target=target,
        meta={"operands": [a, b], "reverse_operands": bool(reverse_operands),
              **_fmt_meta(scratchpad, reverse, pad, marker)}))
  return out


# ---------------------------------------------------------- multiplication
def multiplication_text(a: int, b: int, *, widths: tuple[int, int],
                        scratchpad: bool = False, reverse: bool = False,
                        pad: bool = False, marker: bool = False
                        ) -> tuple[str, str]:
  """``(prompt, target)`` of ``a*b`` in the multiplication format."""
  da, db = widths
  prompt = f"{a:0{da}d}*{b:0{db}d}=" if pad else f"{a}*{b}="
  steps = []
  if scratchpad:
    partials = []
    for k, digit in enumerate(reversed(str(b))):
      m = int(digit) * 10 ** k
      partials.append(a * m)
      steps.append(f"{a}*{m}={a * m}")
    acc = partials[0]
    for p in partials[1:]:
      steps.append(f"{acc}+{p}={acc + p}")
      acc += p
  shown = _show(a * b, width=da + db, pad=pad, reverse=reverse)
  return prompt, _render(steps, shown, marker=marker)


def multiplication(n: int, *, difficulty: int, seed: int = 0,
                   digits_b: Optional[int] = None, scratchpad: bool = False,
                   reverse: bool = False, pad: bool = False,
                   marker: Optional[bool] = None) -> list[Task]:
  """``a*b=`` with a ``difficulty``-digit ``a`` and a ``digits_b``-digit ``b``.

  Args:
    n: number of tasks.
    difficulty: digits of ``a`` (1..20); also of ``b`` unless ``digits_b``.
    seed: random seed.
    digits_b: digits of ``b`` (default ``difficulty``).
    scratchpad: one partial product per digit of ``b``
      (``'<s>123*40=4920</s>'``), then running sums (``'<s>615+4920=5535</s>'``),
      then ``'#### product'``.
    reverse: write the answer digits reversed.
    pad: zero-pad operands and the product (to ``da + db`` digits).
    marker: ``'#### '`` before the answer (default: only with scratchpad).

  Returns:
    ``n`` tasks of category ``'multiplication'``.
  """
  _check("multiplication", difficulty, 1, 20)
  db = difficulty if digits_b is None else digits_b
  _check("multiplication (digits_b)", db, 1, 20)
  marker = scratchpad if marker is None else marker
  rng, da, out = _rng("multiplication", difficulty * 100 + db, seed), difficulty, []
  for i in range(n):
    a, b = _rand_digits(rng, da, exact=True), _rand_digits(rng, db, exact=True)
    prompt, target = multiplication_text(
        a, b, widths=(da, db), scratchpad=scratchpad, reverse=reverse, pad=pad,
        marker=marker)
    out.append(Task(
        id=f"multiplication/d{da}x{db}/s{seed}/{i}", prompt=prompt,
        answer=str(a * b), category="multiplication", difficulty=da,
        target=target,
        meta={"operands": [a, b], **_fmt_meta(scratchpad, reverse, pad, marker)}))
  return out


# --------------------------------------------------------------- expression
def _combine(rng, ops: str, left, right, lv: int, rv: int, max_value: int):
  """Picks an op for (left, right) keeping results non-negative integers."""
  op = ops[rng.integers(0, len(ops))]
  if op == "/" and not (rv != 0 and lv % rv == 0):
    op = next((o for o in "+*-" if o in ops), "+")
  if op == "*" and lv * rv > max_value and ("+" in ops or "-" in ops):
    op = "+" if "+" in ops else "-"
  if op == "-" and lv < rv:
    left, right, lv, rv = right, left, rv, lv
  value = {"+": lv + rv, "-": lv - rv, "*": lv * rv}.get(op)
  if op == "/":
    value = lv // rv
  return expr_lib.BinOp(op, left, right), value


def expression(n: int, *, difficulty: int, seed: int = 0, ops: str = "+-*",
               max_operand: int = 9, max_value: int = 999,
               scratchpad: bool = False, marker: Optional[bool] = None
               ) -> list[Task]:
  """Multi-step integer expressions with parentheses: ``'(2+3)*4-5='``.

  Random binary trees with ``difficulty`` operations over operands in
  ``[1, max_operand]``; every intermediate result is a non-negative integer
  (``-`` swaps its operands if needed, ``/`` is used only when exact, ``*``
  only while the product stays ``<= max_value``). The prompt uses the fewest
  parentheses that keep the tree.

  Args:
    n: number of tasks.
    difficulty: number of operations (1..20).
    seed: random seed.
    ops: allowed operators, a subset of ``'+-*/'`` with at least one of
      ``'+-*'``.
    max_operand: largest literal.
    max_value: products are avoided above this.
    scratchpad: one step per operation in evaluation order
      (``'<s>2+3=5</s>'``), then ``'#### value'``.
    marker: ``'#### '`` before the answer (default: only with scratchpad).

  Returns:
    ``n`` tasks of category ``'expression'``.
  """
  _check("expression", difficulty, 1, 20)
  if not ops or set(ops) - set("+-*/") or not set(ops) & set("+-*"):
    raise ValueError(f"expression: ops must be a subset of '+-*/' with one of "
                     f"'+-*', got {ops!r}")
  if max_operand < 1:
    raise ValueError(f"expression: max_operand must be >= 1, got {max_operand}")
  marker = scratchpad if marker is None else marker
  rng, out = _rng("expression", difficulty, seed), []

  def build(k: int):
    if k == 0:
      v = int(rng.integers(1, max_operand + 1))
      return expr_lib.Num(v), v
    left_ops = int(rng.integers(0, k))
    left, lv = build(left_ops)
    right, rv = build(k - 1 - left_ops)
    return _combine(rng, ops, left, right, lv, rv, max_value)

  for i in range(n):
    tree, value = build(difficulty)
    text = expr_lib.to_string(tree)
    tree = expr_lib.parse(text)  # steps follow the printed expression
    steps = [f"{expr_lib.format_number(a)}{op}{expr_lib.format_number(b)}="
             f"{expr_lib.format_number(v)}"
             for a, op, b, v in expr_lib.steps(tree)] if scratchpad else []
    out.append(Task(
        id=f"expression/d{difficulty}/s{seed}/{i}", prompt=text + "=",
        answer=str(value), category="expression", difficulty=difficulty,
        target=_render(steps, str(value), marker=marker),
        meta={"expression": text, **_fmt_meta(scratchpad, False, False, marker)}))
  return out


# ---------------------------------------------------------------- countdown
def countdown(n: int, *, difficulty: int, seed: int = 0, max_number: int = 20,
              max_target: int = 999, scratchpad: bool = False,
              require_all: bool = False) -> list[Task]:
  """Countdown: reach a target from given numbers with ``+ - * /``.

  Prompt ``'3,7,25->46:'``; target completion ``'25+3*7'`` (or with
  ``scratchpad``: steps ``'<s>3*7=21</s>'`` … then ``'#### 25+3*7'``).
  Solvable by construction: the target is the value of a random expression
  over all given numbers with positive integer intermediate results, and that
  expression is ``Task.answer`` (one solution of possibly many). The verifier
  parses the model's expression (no ``eval``) and accepts any expression that
  uses each given number at most once (exactly once if ``require_all``).

  Args:
    n: number of tasks.
    difficulty: how many numbers are given (2..8).
    seed: random seed.
    max_number: numbers are drawn from ``[1, max_number]``.
    max_target: products are avoided above this.
    scratchpad: show the evaluation steps of the solution.
    require_all: the verifier demands every number be used.

  Returns:
    ``n`` tasks of category ``'countdown'``.
  """
  _check("countdown", difficulty, 2, 8)
  if max_number < 1:
    raise ValueError(f"countdown: max_number must be >= 1, got {max_number}")
  rng, out = _rng("countdown", difficulty, seed), []

  def build(leaves: list[int]):
    if len(leaves) == 1:
      return expr_lib.Num(leaves[0]), leaves[0]
    k = int(rng.integers(1, len(leaves)))
    left, lv = build(leaves[:k])
    right, rv = build(leaves[k:])
    if lv < rv:
      left, right, lv, rv = right, left, rv, lv
    choices = ["+"]
    if lv * rv <= max_target:
      choices.append("*")
    if lv > rv:
      choices.append("-")
    if rv > 1 and lv % rv == 0:
      choices.append("/")
    op = choices[int(rng.integers(0, len(choices)))]
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv,
             "/": lv // rv if rv else 0}[op]
    return expr_lib.BinOp(op, left, right), value

  for i in range(n):
    nums = [int(x) for x in rng.integers(1, max_number + 1, size=difficulty)]
    tree, target = build(nums)
    solution = expr_lib.to_string(tree)
    shown = [nums[j] for j in rng.permutation(difficulty)]
    prompt = ",".join(str(x) for x in shown) + f"->{target}:"
    steps = []
    if scratchpad:
      steps = [f"{expr_lib.format_number(a)}{op}{expr_lib.format_number(b)}="
               f"{expr_lib.format_number(v)}"
               for a, op, b, v in expr_lib.steps(expr_lib.parse(solution))]
    out.append(Task(
        id=f"countdown/d{difficulty}/s{seed}/{i}", prompt=prompt,
        answer=solution, category="countdown", difficulty=difficulty,
        target=_render(steps, solution, marker=scratchpad),
        meta={"numbers": shown, "target": int(target),
              "use_all": bool(require_all),
              "format": "scratchpad" if scratchpad else "plain",
              "marker": bool(scratchpad)}))
  return out


def pair_sum(n: int, *, difficulty: int, seed: int = 0) -> list[Task]:
  """Two-sum: which two of the listed digits add up to the target?

  Prompt ``'13:27495='`` (target, colon, ``difficulty`` distinct digits);
  target completion ``'49'`` (the pair in list order). Exactly one pair of the
  list sums to the target (rejection sampling), so a completion is right iff
  it names that pair, in either order. A search task whose answers are cheap
  to *check* (one addition) but costly to *find* (all pairs): the
  self-correction testbed where a second attempt that sees the first can do
  better than the first (``experiments/self_correction_bench.py --task
  pair_sum``). Verified by ``jaxsi.rewards.verifiers.verify_pair_sum``.

  Args:
    n: number of tasks.
    difficulty: list length (3..10).
    seed: random seed.

  Returns:
    ``n`` tasks of category ``'pair_sum'`` with ``meta['numbers']`` and
    ``meta['target']``.
  """
  _check("pair_sum", difficulty, 3, 10)
  rng, out = _rng("pair_sum", difficulty, seed), []
  while len(out) < n:
    digits = [int(x) for x in rng.permutation(10)[:difficulty]]
    i, j = sorted(int(x) for x in rng.choice(difficulty, size=2, replace=False))
    target = digits[i] + digits[j]
    sums = [digits[a] + digits[b] for a in range(difficulty)
            for b in range(a + 1, difficulty)]
    if sums.count(target) != 1:
      continue
    shown = "".join(str(d) for d in digits)
    out.append(Task(
        id=f"pair_sum/d{difficulty}/s{seed}/{len(out)}",
        prompt=f"{target}:{shown}=", answer=f"{digits[i]}{digits[j]}",
        category="pair_sum", difficulty=difficulty,
        target=f"{digits[i]}{digits[j]}",
        meta={"numbers": digits, "target": int(target)}))
  return out


register_task("addition", addition, aliases=("add",))
register_task("multiplication", multiplication, aliases=("mul", "multiply"))
register_task("expression", expression, aliases=("expr", "arithmetic"))
register_task("countdown", countdown)
register_task("pair_sum", pair_sum, aliases=("two_sum",))

__all__ = ["addition", "addition_text", "multiplication", "multiplication_text",
           "expression", "countdown", "pair_sum"]
