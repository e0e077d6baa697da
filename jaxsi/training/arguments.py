"""Up-front checks of launcher arguments, each error naming the binding.

A launcher (``rl_run.run``, ``rounds_run.run``) is configured from gin files
and ``--gin.NAME=VALUE`` flags, where a typo such as ``steps="10"`` or
``prompts_per_step=8.5`` used to surface minutes later (after the warm start)
as a TypeError, or not at all (8.5 silently ran as 8). :func:`check` validates
every argument's type and range before any work and raises
:class:`ArgumentError` naming ``launcher.argument``, the value and what was
expected, all problems at once.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Optional, Sequence, Tuple, Union


class ArgumentError(ValueError):
  """A launcher argument of the wrong type or out of range."""


Rule = Tuple[str, Optional[float], Optional[float]]   # kind, low, high


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Rule:
  return ("int", low, high)


def number(low: Optional[float] = None, high: Optional[float] = None, *,
           open_low: bool = False) -> Rule:
  return ("float>" if open_low else "float", low, high)


def flag() -> Rule:
  return ("bool", None, None)


def integers(low: Optional[int] = None) -> Rule:
  return ("ints", low, None)


def _problem(value: Any, rule: Rule) -> Optional[str]:
  kind, low, high = rule
  if kind == "bool":
    return None if isinstance(value, bool) else "True or False"
  if kind == "ints":
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
      return "a non-empty list of integers"
    for v in value:
      p = _problem(v, ("int", low, None))
      if p:
        return f"a list of integers ({p} each)"
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return "an integer" if kind == "int" else "a number"
  if kind == "int" and not isinstance(value, numbers.Integral):
    return "an integer"
  if not math.isfinite(float(value)):
    return "a finite number"
  if low is not None and (value <= low if kind == "float>" else value < low):
    return f"{'>' if kind == 'float>' else '>='} {low}"
  if high is not None and value > high:
    return f"<= {high}"
  return None


def check(where: str, values: Mapping[str, Any], rules: Mapping[str, Union[Rule, None]]
          ) -> None:
  """Checks ``values[name]`` against ``rules[name]`` (None values are skipped).

  Raises:
    ArgumentError: naming every offending ``where.name``, its value and the
      expectation, e.g. ``rl_run.run.prompts_per_step = 8.5: expected an
      integer``.
  """
  problems = []
  for name, rule in rules.items():
    value = values.get(name)
    if value is None or rule is None:
      continue
    p = _problem(value, rule)
    if p:
      problems.append(f"{where}.{name} = {value!r}: expected {p}")
  if problems:
    raise ArgumentError("invalid arguments (nothing was run):\n  " + "\n  ".join(problems))
