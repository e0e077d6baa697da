"""Final-answer extraction and number parsing for verifiable rewards.

The jaxsi answer format (synthetic tasks and GSM8K) puts the final answer after
the marker ``'#### '`` on its own line; scratchpad steps are lines wrapped in
``<s>…</s>``::

  <s>3+6+0=9</s>
  <s>2+5+0=7</s>
  #### 579

``extract_answer`` tries, in order: the last ``#### x``; the last ``\\boxed{x}``
(balanced braces); the last ``answer is x`` / ``Answer: x``; the last number in
the text. Nothing here raises on malformed completions: failures are ``None``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

ANSWER_MARKER = "####"
STEP_OPEN = "<s>"
STEP_CLOSE = "</s>"

_MARKER_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(
    r"(?:answer\s+is|answer\s*:|^\s*A\s*:)\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
# A minus sign counts only when not preceded by an operand ('34-12' → '12').
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)])[-−])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"(?:\s*/\s*\d+)?|(?:(?<![\w)])[-−])?\.\d+")
_STEP_RE = re.compile(re.escape(STEP_OPEN) + r"(.*?)" + re.escape(STEP_CLOSE),
                      re.DOTALL)


_SPECIAL_RE = re.compile(r"<\|[A-Za-z_]+\|>|<(?:pad|bos|eos|unk)>")


def strip_special(text: str) -> str:
  """Removes turn markers (``<|end|>``…) and ``<pad>/<bos>/<eos>/<unk>`` texts.

  Completions decoded up to and including a stop token end in ``'<|end|>'``;
  verifiers strip these before reading the answer. Idempotent: pieces that
  join into a marker once the inner one is gone (``'<<|end|>|end|>'``) go too.
  """
  while True:
    stripped = _SPECIAL_RE.sub("", text)
    if stripped == text:
      return text
    text = stripped


def format_answer(answer: str) -> str:
  """The answer line of the jaxsi format: ``'#### ' + answer``."""
  return f"{ANSWER_MARKER} {answer}"


def extract_marked(text: str, *, marker: str = ANSWER_MARKER) -> Optional[str]:
  """Text after the last ``marker`` up to the end of its line (stripped).

  Returns None if the marker is absent or followed by nothing.
  """
  if marker == ANSWER_MARKER:
    found = _MARKER_RE.findall(text)
    value = found[-1].strip() if found else ""
  else:
    k = text.rfind(marker)
    value = text[k + len(marker):].split("\n", 1)[0].strip() if k >= 0 else ""
  return value or None


def extract_boxed(text: str) -> Optional[str]:
  """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
  best = None
  for name in ("\\boxed", "\\fbox"):
    k = text.rfind(name)
    if k >= 0 and (best is None or k > best[0]):
      best = (k, name)
  if best is None:
    return None
  i = best[0] + len(best[1])
  while i < len(text) and text[i] == " ":
    i += 1
  if i >= len(text) or text[i] != "{":
    return None
  depth, start = 0, i + 1
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[start:j].strip() or None
  return None


def extract_last_number(text: str) -> Optional[str]:
  """The last number-looking substring (``'-1,234.5'``, ``'3/4'``), or None."""
  found = _NUMBER_RE.findall(text)
  return found[-1].strip() if found else None


def extract_answer(text: str, *, marker: str = ANSWER_MARKER,
                   fallback_last_number: bool = True) -> Optional[str]:
  """Extracts the final answer string of a completion.

  Order: ``marker`` (default ``'####'``), ``\\boxed{}``, ``answer is`` /
  ``Answer:`` / ``A:``, then (if ``fallback_last_number``) the last number.

  Args:
    text: the completion.
    marker: the answer marker.
    fallback_last_number: use the last number when no marker is found.

  Returns:
    The answer string (stripped, trailing period removed), or None.
  """
  if not isinstance(text, str):
    return None
  for value in (extract_marked(text, marker=marker), extract_boxed(text)):
    if value is not None:
      return _clean(value)
  found = _ANSWER_IS_RE.findall(text)
  if found and found[-1].strip():
    return _clean(found[-1])
  if fallback_last_number:
    return extract_last_number(text)
  return None


def _clean(value: str) -> Optional[str]:
  """Strips spaces, a sentence-ending period (not an ellipsis) and ``$…$``
  until nothing changes (``'5. .'``, ``'$5.$'`` → ``'5'``), so that an
  answer extracted again from its own answer line is unchanged."""
  while True:
    before = value = value.strip()
    if value.endswith(".") and not value.endswith(".."):
      value = value[:-1].rstrip()
    if value.startswith("$") and value.endswith("$") and len(value) > 1:
      value = value.strip("$").strip()
    if value == before:
      return value or None


_FRAC_RE = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")


def parse_number(text: Optional[str]) -> Optional[Fraction]:
  """Parses a number string exactly; None if it is not one number.

  Accepts: integers with leading zeros (``'007'``), sign (``'-5'``, ``'+5'``,
  unicode minus), thousands commas (``'1,234'``; other commas reject),
  decimals (``'3.50'``, ``'.5'``), fractions (``'3/4'``, ``'\\frac{3}{4}'``),
  scientific notation (``'1e3'``), and surrounding ``$``, ``%`` signs (kept as
  the number itself: ``'50%'`` → 50) or a trailing period.
  """
  if text is None or not isinstance(text, str):
    return None
  s = text.strip().replace("−", "-").replace("\u2009", "").replace(" ", "")
  s = s.strip("$").rstrip(".").rstrip("%").lstrip("$")
  if s.startswith("\\$"):
    s = s[2:]
  if not s or len(s) > 64:
    return None
  m = _FRAC_RE.match(s[1:] if s.startswith("-") else s)  # one sign only
  if m:
    num, den = parse_number(m.group(1)), parse_number(m.group(2))
    if num is None or den is None or den == 0:
      return None
    value = num / den
    return -value if s.startswith("-") else value
  if "/" in s:
    parts = s.split("/")
    if len(parts) != 2:
      return None
    num, den = parse_number(parts[0]), parse_number(parts[1])
    if num is None or den is None or den == 0:
      return None
    return num / den
  if "," in s:
    if not re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
      return None
    s = s.replace(",", "")
  if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?", s):
    return None
  try:
    return Fraction(s)
  except (ValueError, ZeroDivisionError):
    return None


def reverse_digits(text: Optional[str]) -> Optional[str]:
  """Reverses the digit string of a reversed-format answer (``'6400'`` → ``'0046'``).

  A leading sign stays in front. Returns None unless ``text`` is an optional
  sign followed by digits only.
  """
  if text is None:
    return None
  s = text.strip()
  sign = ""
  if s[:1] in ("-", "+"):
    sign, s = s[0], s[1:]
  if not s or not s.isdigit() or not s.isascii():
    return None
  return sign + s[::-1]


def split_steps(text: str) -> list[str]:
  """The contents of every ``<s>…</s>`` step, in order."""
  return [m.group(1) for m in _STEP_RE.finditer(text)]


def step_spans(text: str) -> list[tuple[int, int]]:
  """Character spans ``[start, end)`` of every step, markers included.

  With the character tokenizer (one token per character) these are also token
  spans relative to the start of the completion, for ``span_ids`` and process
  rewards.
  """
  return [(m.start(), m.end()) for m in _STEP_RE.finditer(text)]
