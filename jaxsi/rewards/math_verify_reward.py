"""Answer rewards with Hugging Face ``math-verify`` (symbolic equivalence).

``math_verify.parse`` extracts the final answer of a completion (``\\boxed{}``
first, then LaTeX / plain expressions) into SymPy; ``math_verify.verify``
compares it with the gold answer up to mathematical equivalence (``1/2`` ==
``0.5`` == ``\\frac{1}{2}``, ``\\{1,2\\}`` == ``\\{2,1\\}``, intervals,
matrices, units stripped…). A completion in the jaxsi ``#### answer`` format
has its marked answer parsed instead.

math-verify bounds its work with ``signal.alarm``, which only works in the
main thread; elsewhere (e.g. inside ``jaxsi.rewards.reward_fn.safe_rewards``,
which runs reward fns in worker threads with its own timeout) the internal
timeout is turned off.

Registers the verifier ``'math_verify'`` (``Task.meta['verifier']``) on
import; ``math_verify`` itself is imported on first use.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

import numpy as np

from jaxsi.rewards import answers
from jaxsi.rewards import verifiers


def _math_verify():
  try:
    import math_verify  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "jaxsi.rewards.math_verify_reward needs the math-verify package: "
        "pip install 'math-verify>=0.9'") from e
  return math_verify


def _timeout(timeout_s: Optional[int]) -> Optional[int]:
  if threading.current_thread() is not threading.main_thread():
    return None
  return timeout_s


def parse_gold(answer: str, *, timeout_s: Optional[int] = 5) -> list:
  """Parsed gold answer (a LaTeX or plain expression, e.g. ``'\\frac{1}{2}'``,
  ``'72'``, ``'1,234'``); empty list if nothing parses."""
  mv = _math_verify()
  text = answer.strip()
  if text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit():
    text = text.replace(",", "")  # GSM8K thousands separators
  t = _timeout(timeout_s)
  gold = mv.parse(f"${text}$", parsing_timeout=t)
  if not gold:
    gold = mv.parse(text, parsing_timeout=t)
  return gold


def parse_completion(completion: str, *, timeout_s: Optional[int] = 5) -> list:
  """Parsed final answer of a model completion (empty list if none)."""
  mv = _math_verify()
  text = answers.strip_special(completion)
  t = _timeout(timeout_s)
  marked = answers.extract_marked(text)
  if marked is not None and answers.extract_boxed(text) is None:
    return parse_gold(marked, timeout_s=timeout_s)
  return mv.parse(text, parsing_timeout=t)


def math_verify_match(gold: str, completion: str, *,
                      timeout_s: Optional[int] = 5) -> bool:
  """True if the completion's final answer equals ``gold`` mathematically.

  Never raises for bad model output (unparsable text, timeouts → False).
  """
  if not isinstance(completion, str) or not isinstance(gold, str):
    return False
  mv = _math_verify()
  try:
    g = parse_gold(gold, timeout_s=timeout_s)
    p = parse_completion(completion, timeout_s=timeout_s)
    if not g or not p:
      return False
    return bool(mv.verify(g, p, timeout_seconds=_timeout(timeout_s)))
  except Exception:  # pylint: disable=broad-except
    return False


def verify_math(task: Any, completion: str) -> float:
  """Verifier ``'math_verify'``: 1.0 if ``completion`` matches ``task.answer``."""
  return float(math_verify_match(task.answer, completion))


def math_verify_reward(tasks: Sequence[Any], completions: Sequence[str]
                       ) -> np.ndarray:
  """``float32[B]``: 1.0 where the completion's answer equals the task's
  answer mathematically (math-verify), else 0.0."""
  if len(tasks) != len(completions):
    raise ValueError(f"math_verify_reward: {len(tasks)} tasks but "
                     f"{len(completions)} completions")
  return np.asarray([verify_math(t, c) for t, c in zip(tasks, completions)],
                    np.float32)


math_verify_reward.names = ("math_verify",)

if "math_verify" not in verifiers.verifier_names():
  verifiers.register_verifier("math_verify", verify_math)
