r"""Judging formats as data: a template that asks for a judgment, and its parser.

LLM-as-a-judge (Self-Rewarding LMs, Yuan et al. 2024, arXiv:2401.10020,
§2.2 and Fig. 2: an additive 5-point rubric, "Score: <points>") prompts a
model with a question and a candidate answer and reads a score out of the
text it writes. Here a judging format is one frozen dataclass,
:class:`JudgeFormat` (gin-bindable, or picked by name from :data:`FORMATS`):

* ``kind='pointwise'``: an integer score in ``[low, high]`` (``score_1_5``,
  ``score_0_10``); the score is the number the judgment starts with (an
  optional ``Score:`` prefix is accepted).
* ``kind='verdict'``: ``yes`` / ``no`` → 1.0 / 0.0 (``verdict``).
* ``kind='pairwise'``: two candidates A and B; ``first`` → 1.0 (A better),
  ``second`` → 0.0, ``tie`` → 0.5 with status ``tie`` (``pairwise``; and
  ``meta_pairwise``, the meta-judge of Meta-Rewarding LMs, Wu et al. 2024,
  arXiv:2407.19594: A and B are two judgments of one candidate).

Every parser returns ``(score, status)``, status in :data:`STATUSES`:
``ok``; ``tie`` (a pairwise tie, score 0.5); ``unparsed`` (no judgment in
the text or a score out of range; score NaN); ``over_budget`` (unparsed and
the judgment used its whole token budget without stopping; score NaN).
Statuses are counted (:func:`count_statuses`), never raised: a judge that
writes garbage gives NaN scores that pair builders skip.

The miniature templates are terse (``{prompt}{completion}|score:``) because
a tiny character model learns them from a few thousand warm-start examples
(``jaxsi.data.judging``); the paper's long rubric is a template like any
other (``JudgeFormat(template=...)``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable, Optional, Sequence, Union

OK = "ok"
UNPARSED = "unparsed"
TIE = "tie"
OVER_BUDGET = "over_budget"
STATUSES = (OK, UNPARSED, TIE, OVER_BUDGET)
KINDS = ("pointwise", "verdict", "pairwise")

_NUMBER = re.compile(r"^\s*(?:score\s*:?\s*)?(-?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class JudgeFormat:
  """A judging template and its parser.

  Attributes:
    name: the format name (metrics, errors).
    kind: ``'pointwise'``, ``'verdict'`` or ``'pairwise'``.
    template: ``str.format`` template. Pointwise/verdict fields:
      ``{prompt}``, ``{completion}``, ``{answer}`` (the reference answer, for
      reference-guided judging; leave it out otherwise). Pairwise fields:
      ``{prompt}``, ``{completion_a}``, ``{completion_b}``, ``{answer}``.
    low, high: the pointwise score range (inclusive, integers).
    yes, no: the verdict words.
    first, second, tie: the pairwise words (A better, B better, tie).
    rationale_sep: when non-empty, a judgment is ``<rationale><sep><score>``
      (the score is parsed after the last ``sep``; no ``sep``: unparsed) and
      the warm-start judgment of a candidate is :meth:`judgment` with a
      rationale (``rationale_1_5``).
  """

  name: str
  kind: str
  template: str
  low: int = 1
  high: int = 5
  yes: str = "y"
  no: str = "n"
  first: str = "A"
  second: str = "B"
  tie: str = "="
  rationale_sep: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"JudgeFormat {self.name!r}: kind must be one of {KINDS},"
                       f" got {self.kind!r}")
    if self.kind == "pointwise" and not (int(self.low) == self.low
                                         and int(self.high) == self.high
                                         and self.low < self.high):
      raise ValueError(f"JudgeFormat {self.name!r}: low < high must be integers,"
                       f" got low={self.low!r}, high={self.high!r}")
    words = {"verdict": (self.yes, self.no),
             "pairwise": (self.first, self.second, self.tie)}.get(self.kind, ())
    if any(not w.strip() for w in words) or len(set(words)) != len(words):
      raise ValueError(f"JudgeFormat {self.name!r}: the {self.kind} words must be"
                       f" distinct and non-empty, got {words}")
    fields = (("{completion_a}", "{completion_b}") if self.kind == "pairwise"
              else ("{completion}",))
    missing = [f for f in fields if f not in self.template]
    if missing:
      raise ValueError(f"JudgeFormat {self.name!r}: template lacks {missing}")

  # -- prompts and labels
  def prompt(self, prompt: str, completion: str = "", *, answer: str = "",
             completion_b: Optional[str] = None) -> str:
    """The judging prompt of one candidate (pairwise: ``completion`` is A)."""
    if self.kind == "pairwise":
      if completion_b is None:
        raise ValueError(f"JudgeFormat {self.name!r}: a pairwise prompt needs"
                         " completion_b")
      return self.template.format(prompt=prompt, completion_a=completion,
                                  completion_b=completion_b, answer=answer)
    if completion_b is not None:
      raise ValueError(f"JudgeFormat {self.name!r}: completion_b is only for"
                       " pairwise formats")
    return self.template.format(prompt=prompt, completion=completion, answer=answer)

  def label(self, correct: bool, correct_b: Optional[bool] = None) -> str:
    """The judgment a verifier-labeled candidate should get (the SFT target).

    Pointwise: ``high`` if correct else ``low``; verdict: ``yes``/``no``;
    pairwise: ``first`` if only A is correct, ``second`` if only B, ``tie``
    if both or neither.
    """
    if self.kind == "pairwise":
      if correct_b is None:
        raise ValueError(f"JudgeFormat {self.name!r}: a pairwise label needs correct_b")
      if bool(correct) == bool(correct_b):
        return self.tie
      return self.first if correct else self.second
    if correct_b is not None:
      raise ValueError(f"JudgeFormat {self.name!r}: correct_b is only for pairwise")
    if self.kind == "verdict":
      return self.yes if correct else self.no
    return str(int(self.high if correct else self.low))

  def judgment(self, correct: bool, rationale: str = "") -> str:
    """The full warm-start judgment: :meth:`label` (non-pairwise), preceded
    by ``rationale + rationale_sep`` when the format has rationales."""
    if not self.rationale_sep:
      return self.label(correct)
    return f"{rationale}{self.rationale_sep}{self.label(correct)}"

  # -- parsing
  def parse(self, text: str, *, finished: bool = True) -> tuple[float, str]:
    """``(score, status)`` of one judgment (see the module docstring).

    Args:
      text: the judgment text (with ``rationale_sep``: the part after its
        last occurrence; none: unparsed).
      finished: whether the judge stopped before its token budget; an
        unparsed judgment that did not is ``over_budget``.
    """
    text = text if isinstance(text, str) else ""
    if self.rationale_sep:
      head, sep, text = text.rpartition(self.rationale_sep)
      if not sep:
        text = "\x00"          # no separator: nothing to parse
    score, status = _PARSERS[self.kind](self, text)
    if status == UNPARSED and not finished:
      status = OVER_BUDGET
    return score, status

  def agrees(self, score: float, correct: bool,
             correct_b: Optional[bool] = None) -> bool:
    """Whether a parsed score agrees with the verifier.

    Pointwise: judged correct iff ``score > (low + high) / 2`` (the midpoint
    itself is a disagreement either way); verdict: ``score == 1`` iff
    correct; pairwise: the :meth:`label`'s score (1, 0 or 0.5). NaN never
    agrees.
    """
    if score is None or not math.isfinite(score):
      return False
    if self.kind == "pairwise":
      want = self.label(correct, correct_b)
      return score == {self.first: 1.0, self.second: 0.0, self.tie: 0.5}[want]
    if self.kind == "verdict":
      return (score == 1.0) == bool(correct)
    mid = (self.low + self.high) / 2.0
    return (score > mid) if correct else (score < mid)


def _parse_pointwise(fmt: JudgeFormat, text: str) -> tuple[float, str]:
  m = _NUMBER.match(text)
  if m is None:
    return math.nan, UNPARSED
  value = float(m.group(1))
  if not (fmt.low <= value <= fmt.high):
    return math.nan, UNPARSED
  return value, OK


def _leading_word(text: str, words: Sequence[str]) -> Optional[str]:
  s = text.strip()
  # Longest first, so "yes" wins over "y".
  for w in sorted(words, key=len, reverse=True):
    if s.startswith(w):
      return w
  return None


def _parse_verdict(fmt: JudgeFormat, text: str) -> tuple[float, str]:
  w = _leading_word(text, (fmt.yes, fmt.no))
  if w is None:
    return math.nan, UNPARSED
  return (1.0 if w == fmt.yes else 0.0), OK


def _parse_pairwise(fmt: JudgeFormat, text: str) -> tuple[float, str]:
  w = _leading_word(text, (fmt.first, fmt.second, fmt.tie))
  if w is None:
    return math.nan, UNPARSED
  if w == fmt.tie:
    return 0.5, TIE
  return (1.0 if w == fmt.first else 0.0), OK


_PARSERS = {"pointwise": _parse_pointwise, "verdict": _parse_verdict,
            "pairwise": _parse_pairwise}


# ------------------------------------------------------------ the built-ins
SCORE_1_5 = JudgeFormat(name="score_1_5", kind="pointwise",
                        template="{prompt}{completion}|score:", low=1, high=5)
SCORE_0_10 = JudgeFormat(name="score_0_10", kind="pointwise",
                         template="{prompt}{completion}|0-10:", low=0, high=10)
VERDICT = JudgeFormat(name="verdict", kind="verdict",
                      template="{prompt}{completion}|ok?", yes="y", no="n")
PAIRWISE = JudgeFormat(name="pairwise", kind="pairwise",
                       template="{prompt}A:{completion_a};B:{completion_b}|better:",
                       first="A", second="B", tie="=")
# The meta-judge (Meta-Rewarding LMs, Wu et al. 2024, arXiv:2407.19594, §2.2):
# a pairwise format whose "prompt" is a candidate's judging prompt and whose two
# "completions" are two judgments of that candidate ("which judgment is more
# accurate"); first = judgment A, second = B, tie = neither better.
META_PAIRWISE = JudgeFormat(name="meta_pairwise", kind="pairwise",
                            template="{prompt}A:{completion_a};B:{completion_b}|meta:",
                            first="A", second="B", tie="=")
# A judgment with a rationale (Self-Rationalization, Trivedi et al. 2024,
# arXiv:2410.05495: the judge writes a rationale, then a Likert score). In
# miniature the rationale is the judge's own solution of the problem, then the
# score: "133>5" (its warm-start rationale is the task's target).
RATIONALE_1_5 = JudgeFormat(name="rationale_1_5", kind="pointwise",
                            template="{prompt}{completion}|why:", low=1, high=5,
                            rationale_sep=">")
FORMATS = {f.name: f for f in (SCORE_1_5, SCORE_0_10, VERDICT, PAIRWISE, META_PAIRWISE,
                               RATIONALE_1_5)}


def get_format(fmt: Union[str, JudgeFormat]) -> JudgeFormat:
  """A :class:`JudgeFormat` from itself or its name in :data:`FORMATS`.

  Raises:
    ValueError: an unknown name (the message lists the built-ins).
  """
  if isinstance(fmt, JudgeFormat):
    return fmt
  if isinstance(fmt, str) and fmt in FORMATS:
    return FORMATS[fmt]
  raise ValueError(f"judge format must be a JudgeFormat or one of"
                   f" {sorted(FORMATS)}, got {fmt!r}")


def count_statuses(statuses: Iterable[str], prefix: str = "judge/") -> dict:
  """``{prefix+status: count}`` for every status in :data:`STATUSES`.

  Raises:
    ValueError: a status that is not one of :data:`STATUSES`.
  """
  out = {prefix + s: 0 for s in STATUSES}
  for s in statuses:
    if s not in STATUSES:
      raise ValueError(f"count_statuses: unknown status {s!r}; one of {STATUSES}")
    out[prefix + s] += 1
  return out


__all__ = ["JudgeFormat", "FORMATS", "get_format", "count_statuses", "STATUSES",
           "OK", "UNPARSED", "TIE", "OVER_BUDGET", "SCORE_1_5", "SCORE_0_10",
           "VERDICT", "PAIRWISE", "META_PAIRWISE", "RATIONALE_1_5"]
