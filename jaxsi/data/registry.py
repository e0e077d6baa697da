"""The Task record and the task-generator registry.

A ``Task`` is one verifiable problem: the ``prompt`` the model sees, the gold
``answer``, and the ``target`` completion used for supervised training (for a
scratchpad format: the steps plus the answer line). ``Task.verify(completion)``
scores a model completion with the category's verifier
(``jaxsi.rewards.verifiers``).

Generators register themselves here by name when their module is imported
(``jaxsi.data.synthetic``: ``addition``, ``multiplication``, ``expression``,
``countdown``, ``pair_sum``; ``jaxsi.data.tasks``: ``addition_self_verify``);
``import jaxsi.data`` imports both. This module imports no generator, so any
generator module can import it. ``jaxsi.data.tasks`` re-exports everything here
and builds task sets on top (``make_tasks``, splits).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, Mapping

from jaxsi.rewards import verifiers


@dataclasses.dataclass(frozen=True)
class Task:
  """One verifiable problem.

  Attributes:
    id: unique id (e.g. ``'addition/d3/s0/17'`` or ``'gsm8k.jsonl:12'``).
    prompt: the text the model is conditioned on (e.g. ``'12+34='``).
    answer: the gold final answer in canonical form (e.g. ``'46'``; never
      reversed or padded).
    category: selects the verifier (``'addition'``, ``'countdown'``, …).
    difficulty: integer difficulty (digits, operations, numbers, …).
    target: the full supervised completion (e.g. ``'46'`` or scratchpad steps
      plus ``'#### 46'``); ``verify(target) == 1.0`` for generated tasks.
    meta: free-form extra data (format flags, countdown numbers, source line…);
      excluded from hashing.
  """

  id: str
  prompt: str
  answer: str
  category: str
  difficulty: int = 0
  target: str = ""
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

  def verify(self, completion: str) -> float:
    """1.0 if ``completion`` answers this task correctly, else 0.0.

    Malformed completions score 0.0; this never raises for bad model output.
    """
    return verifiers.verify_task(self, completion)

  @property
  def key(self) -> tuple[str, str]:
    """Problem identity for de-duplication and splits: ``(category, prompt)``."""
    return problem_key(self)

  def replace(self, **changes) -> "Task":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    """JSON-friendly dict (``meta`` must hold JSON-friendly values)."""
    return dataclasses.asdict(self)


def problem_key(task: Task) -> tuple[str, str]:
  """``(category, prompt)``: two tasks with equal keys are the same problem."""
  return (task.category, task.prompt)


# ---------------------------------------------------------------- registry
Generator = Callable[..., list]
_GENERATORS: Dict[str, Generator] = {}
_ALIASES: Dict[str, str] = {}


def register_task(name: str, generator: Generator, *,
                  aliases: Iterable[str] = (), overwrite: bool = False) -> None:
  """Registers ``generator(n, *, difficulty, seed, **fmt) -> list[Task]``."""
  for key in (name, *aliases):
    if (key in _GENERATORS or key in _ALIASES) and not overwrite:
      raise ValueError(f"register_task: {key!r} is already registered")
  _GENERATORS[name] = generator
  for a in aliases:
    _ALIASES[a] = name


def task_names() -> list[str]:
  """Registered task names (aliases not included)."""
  return sorted(_GENERATORS)


def get_generator(name: str) -> Generator:
  """The generator for ``name`` (or an alias).

  Raises:
    ValueError: unknown name (lists the registered ones).
  """
  name = _ALIASES.get(name, name)
  if name not in _GENERATORS:
    raise ValueError(
        f"make_tasks: unknown task {name!r}; registered: {sorted(_GENERATORS)}"
        f" (aliases: {sorted(_ALIASES)})")
  return _GENERATORS[name]
