"""Token-level span ids inside one completion (``Trajectory.span_ids``).

Two formats:

* scratchpad steps (process rewards): a completion in the jaxsi scratchpad
  format wraps each step in ``<s>…</s>`` (``jaxsi.rewards.answers``).
  ``step_span_ids`` labels every completion token with the 1-based index of
  the step it belongs to (0 outside steps);
* in-sequence self-verification (SPOC, arXiv:2506.06923; self-rewarding
  correction, arXiv:2502.19613): ``attempt [verdict] (revision [verdict])*``.
  ``parse_self_verification`` splits the text, ``self_verification_span_ids``
  labels tokens with attempt/verdict span ids (the device version is
  ``jaxsi.transforms.spans.verdict_span_ids``).

Both work for any tokenizer by mapping character spans of the decoded text
back to tokens (``Tokenizer.char_offsets``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from jaxsi.rewards import answers


def char_spans_to_token_spans(offsets: Sequence[int], text_len: int,
                              spans: Sequence[tuple[int, int]]
                              ) -> list[tuple[int, int]]:
  """Maps character spans ``[a, b)`` to token spans ``[i, j)``.

  A token belongs to a span if any of its characters does.

  Args:
    offsets: start character of each token (``Tokenizer.char_offsets``).
    text_len: length of the decoded text.
    spans: character spans.

  Returns:
    Token spans, one per character span (empty ``(i, i)`` if no token overlaps).
  """
  offsets = list(offsets)
  ends = offsets[1:] + [text_len]
  out = []
  for a, b in spans:
    toks = [k for k, (s, e) in enumerate(zip(offsets, ends))
            if e > s and s < b and e > a]
    out.append((toks[0], toks[-1] + 1) if toks else (0, 0))
  return out


def step_span_ids(tokenizer, ids: Sequence[int]) -> np.ndarray:
  """``int32[len(ids)]``: k for tokens of the k-th ``<s>…</s>`` step, else 0.

  Args:
    tokenizer: a jaxsi tokenizer (``decode``, ``char_offsets``).
    ids: completion token ids.

  Returns:
    The step index of every token (markers included in their step).
  """
  text = tokenizer.decode(ids)
  offsets = tokenizer.char_offsets(ids)
  out = np.zeros((len(ids),), np.int32)
  spans = char_spans_to_token_spans(offsets, len(text), answers.step_spans(text))
  for k, (i, j) in enumerate(spans, 1):
    out[i:j] = k
  return out


# ===================================================================
# In-sequence self-verification: attempt → verdict → (revision → verdict)*
# ===================================================================
# Span ids of one completion in this format (``Trajectory.span_ids``):
#   0        not a completion token (prompt, padding, after the stop token)
#   2k − 1   the k-th attempt (k = 1: "solve", k ≥ 2: "correct" = revision)
#   2k       its self-verdict ("verify")
#   2M + 1   anything after the M-th verdict ("extra": more attempts than
#            allowed), M = ``max_attempts``
# Roles: odd ids are solution spans, even ids verdict spans; the extra span
# counts as a solution span (an answer that should not have been written).
SOLUTION_ROLE = 0
VERDICT_ROLE = 1


@dataclasses.dataclass(frozen=True)
class VerdictFormat:
  """The in-sequence self-verification format (SPOC / self-rewarding correction).

  A completion is ``attempt verdict (attempt verdict)*``: each attempt is an
  answer text, each verdict one of two marker strings. Generation should stop
  after a positive verdict or after ``max_attempts`` verdicts (Zhao et al.
  2025, SPOC, arXiv:2506.06923, "dynamic termination"; Xiong et al. 2025,
  arXiv:2502.19613, "[VERIFY] correct/wrong").

  Attributes:
    correct: marker of a positive verdict.
    wrong: marker of a negative verdict.
    max_attempts: M, the number of attempts (and verdicts) allowed.
  """

  correct: str = "[correct]"
  wrong: str = "[wrong]"
  max_attempts: int = 3

  def __post_init__(self):
    if self.max_attempts < 1:
      raise ValueError(f"VerdictFormat: max_attempts must be >= 1, got "
                       f"{self.max_attempts}")
    if not self.correct or not self.wrong or self.correct == self.wrong:
      raise ValueError("VerdictFormat: markers must be distinct, non-empty")
    for a, b in ((self.correct, self.wrong), (self.wrong, self.correct),
                 (self.correct, self.correct), (self.wrong, self.wrong)):
      if _overlaps(a, b):
        raise ValueError(f"VerdictFormat: markers {a!r} and {b!r} can overlap "
                         "(a proper suffix of one is a prefix of the other, or"
                         " one contains the other); matching would be ambiguous")

  @property
  def shared_prefix(self) -> int:
    """Characters both markers start with (they end the attempt, see below)."""
    n = 0
    for x, y in zip(self.correct, self.wrong):
      if x != y:
        break
      n += 1
    return n

  @property
  def num_spans(self) -> int:
    """S = 2M + 1 span ids (1..S) a completion can use."""
    return 2 * self.max_attempts + 1

  def render(self, attempts: Sequence[str], verdicts: Sequence[bool]) -> str:
    """``attempts[0] + marker(verdicts[0]) + attempts[1] + …`` (a target)."""
    if len(attempts) != len(verdicts):
      raise ValueError("render: one verdict per attempt")
    return "".join(a + (self.correct if v else self.wrong)
                   for a, v in zip(attempts, verdicts))


def _overlaps(a: str, b: str) -> bool:
  """Whether an occurrence of ``a`` and one of ``b`` can overlap in a text."""
  if a != b and (a in b or b in a):
    return True
  return any(a.endswith(b[:i]) for i in range(1, len(b)))


def solution_span(k: int) -> int:
  """Span id of the k-th attempt (1-based)."""
  return 2 * k - 1


def verdict_span(k: int) -> int:
  """Span id of the k-th verdict (1-based)."""
  return 2 * k


def span_roles(max_attempts: int) -> tuple[int, ...]:
  """Role of span ids 1..2M+1: solution (0) for odd ids, verdict (1) for even."""
  return tuple(SOLUTION_ROLE if s % 2 else VERDICT_ROLE
               for s in range(1, 2 * max_attempts + 2))


@dataclasses.dataclass(frozen=True)
class Attempt:
  """One attempt of a parsed completion (character coordinates).

  Attributes:
    text: the attempt's text (the answer, possibly empty or malformed).
    start: first character of the attempt.
    end: one past its last character.
    verdict: True ("correct" marker), False ("wrong"), None (no verdict).
    verdict_start: first character of the verdict marker (= ``end``).
    verdict_end: one past the marker (= ``end`` when there is none).
  """

  text: str
  start: int
  end: int
  verdict: Optional[bool]
  verdict_start: int
  verdict_end: int


@dataclasses.dataclass(frozen=True)
class ParsedCompletion:
  """A completion split into attempts and verdicts.

  Attributes:
    attempts: at most M attempts, in order. The last one may have no verdict
      (truncated or malformed completion) and, after a negative verdict, an
      empty verdict-less attempt stands for the missing revision.
    extra: ``(start, end)`` of the text after the M-th verdict, or None.
  """

  attempts: tuple[Attempt, ...]
  extra: Optional[tuple[int, int]]

  @property
  def final_answer(self) -> Optional[str]:
    """The text of the last non-empty attempt (None if there is none)."""
    for a in reversed(self.attempts):
      if a.text.strip():
        return a.text
    return None

  @property
  def verdicts(self) -> tuple[Optional[bool], ...]:
    return tuple(a.verdict for a in self.attempts)


def find_markers(text: str, fmt: VerdictFormat) -> list[tuple[int, int, bool]]:
  """Non-overlapping verdict markers, left to right: ``(start, end, positive)``."""
  out, i = [], 0
  while True:
    hits = [(text.find(m, i), m, pos) for m, pos in
            ((fmt.correct, True), (fmt.wrong, False))]
    hits = [h for h in hits if h[0] >= 0]
    if not hits:
      return out
    s, m, pos = min(hits)
    out.append((s, s + len(m), pos))
    i = s + len(m)


def parse_self_verification(text: str, fmt: VerdictFormat = VerdictFormat()
                            ) -> ParsedCompletion:
  """Splits a completion into attempts and verdicts.

  The grammar is ``A_1 V_1 A_2 V_2 … A_M V_M [extra]``: the text between two
  verdict markers is an attempt; text after the last marker is an attempt
  without a verdict (truncated / malformed) — or, after the M-th marker, the
  ``extra`` text. A negative verdict with attempts left and nothing after it
  adds an empty attempt (the missing revision) so that rewards can score it.

  Args:
    text: the decoded completion (special tokens stripped).
    fmt: the markers and M.

  Returns:
    The parsed completion.
  """
  m = fmt.max_attempts
  attempts, pos, extra = [], 0, None
  for s, e, positive in find_markers(text, fmt):
    if len(attempts) == m:
      break
    attempts.append(Attempt(text[pos:s], pos, s, positive, s, e))
    pos = e
  rest = text[pos:]
  if len(attempts) == m:
    if rest:
      extra = (pos, len(text))
  elif rest or not attempts or attempts[-1].verdict is False:
    attempts.append(Attempt(rest, pos, len(text), None, len(text), len(text)))
  return ParsedCompletion(tuple(attempts), extra)


def self_verification_span_ids(tokenizer, ids: Sequence[int],
                               fmt: VerdictFormat = VerdictFormat(), *,
                               stop_ids: Optional[Sequence[int]] = None
                               ) -> np.ndarray:
  """``int32[len(ids)]`` span ids of a completion in the verdict format (host).

  Maps the character spans of :func:`parse_self_verification` to tokens; a
  token that straddles two spans goes to the later one. The characters both
  markers start with (``'['``) belong to the attempt: they end it, whichever
  verdict follows. The stop token (the
  first of ``stop_ids``, default the tokenizer's EOS) takes the span the
  format expects at its position: after a positive verdict or the M-th
  verdict it ends that verdict (same span); after a negative verdict with
  attempts left it is the (missing) revision 2j + 1; after attempt text it is
  the (missing) verdict of that attempt; after extra text it is extra; as the
  first token it is attempt 1. Tokens after the stop token get 0.
  :func:`jaxsi.transforms.spans.verdict_span_ids` computes the same ids on
  device from token ids (token in, token out); the tests check they agree.

  Args:
    tokenizer: a jaxsi tokenizer (``decode``, ``char_offsets``, ``eos_id``).
    ids: completion token ids (may end with a stop token and padding).
    fmt: the format.
    stop_ids: ids that end a completion (default ``(tokenizer.eos_id,)``).

  Returns:
    The span id of every token (see the module notes above).
  """
  stop_ids = (tokenizer.eos_id,) if stop_ids is None else tuple(stop_ids)
  ids = list(ids)
  stop = next((i for i, t in enumerate(ids) if t in stop_ids), None)
  body = ids if stop is None else ids[:stop]
  out = np.zeros((len(ids),), np.int32)
  if body:
    text = tokenizer.decode(body)
    offsets = tokenizer.char_offsets(body)
    ends = list(offsets[1:]) + [len(text)]
    parsed = parse_self_verification(text, fmt)
    char_span = np.full((len(text),), fmt.num_spans, np.int32)
    for k, a in enumerate(parsed.attempts, 1):
      cut = a.verdict_start + (fmt.shared_prefix if a.verdict is not None
                               else 0)
      char_span[a.start:cut] = solution_span(k)
      char_span[cut:a.verdict_end] = verdict_span(k)
    for i, (s, e) in enumerate(zip(offsets, ends)):
      if e > s:
        out[i] = char_span[e - 1]
      else:  # a token without characters joins the previous span
        out[i] = out[i - 1] if i else solution_span(1)
  if stop is not None:
    out[stop] = _stop_span(parsed if body else None, fmt)
  return out


def _stop_span(parsed: Optional[ParsedCompletion], fmt: VerdictFormat) -> int:
  """The span of the stop token given the parse of the text before it."""
  m = fmt.max_attempts
  if parsed is None:
    return solution_span(1)
  if parsed.extra is not None:
    return fmt.num_spans
  last = parsed.attempts[-1]
  k = len(parsed.attempts)
  if last.verdict is None:
    if last.text:                    # attempt text, no verdict yet
      return verdict_span(k)
    return solution_span(k)          # empty revision after a negative verdict
  if last.verdict is False and k < m:
    return solution_span(k + 1)      # (unreachable: parse adds the revision)
  return verdict_span(k)             # stop after a verdict


def rejected_attempt_mask(tokenizer, ids: Sequence[int],
                          fmt: VerdictFormat = VerdictFormat(), *,
                          stop_ids: Optional[Sequence[int]] = None
                          ) -> np.ndarray:
  """``bool[len(ids)]``: tokens of attempts that are followed by a negative verdict.

  For SFT on synthetic self-correction traces (SPOC's warm start, Zhao et al.
  2025, arXiv:2506.06923) whose wrong attempts were injected: dropping these
  tokens from the loss teaches the model to *catch and fix* a mistake
  (verdict + revision stay trained) without teaching it to *make* one.
  """
  spans = self_verification_span_ids(tokenizer, ids, fmt, stop_ids=stop_ids)
  stop_ids = (tokenizer.eos_id,) if stop_ids is None else tuple(stop_ids)
  ids = list(ids)
  stop = next((i for i, t in enumerate(ids) if t in stop_ids), len(ids))
  parsed = parse_self_verification(tokenizer.decode(ids[:stop]), fmt)
  out = np.zeros((len(ids),), bool)
  for k, a in enumerate(parsed.attempts, 1):
    if a.verdict is False:
      out |= spans == solution_span(k)
  return out
