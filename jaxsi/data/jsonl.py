"""Tasks from JSON-lines files (GSM8K/MATH-style datasets) and back.

One JSON object per line; blank lines are skipped. GSM8K answers
(``'…reasoning…\\n#### 72'``) are understood: ``Task.answer`` becomes the text
after ``####`` and ``Task.target`` the full solution. Every error names the
file, the line number and the field.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional, Sequence, Union

from jaxsi.data.registry import Task
from jaxsi.rewards import answers

PathLike = Union[str, os.PathLike]


def _field(record: dict, name: str, path: str, lineno: int) -> Any:
  if name not in record:
    raise ValueError(
        f"{path}:{lineno}: missing field {name!r} (fields present: "
        f"{sorted(record)})")
  value = record[name]
  if value is None:
    raise ValueError(f"{path}:{lineno}: field {name!r} is null")
  return value


def _text(value: Any, name: str, path: str, lineno: int) -> str:
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise ValueError(
        f"{path}:{lineno}: field {name!r} must be a string or number, got "
        f"{type(value).__name__}")
  return value if isinstance(value, str) else str(value)


def load_jsonl_tasks(
    path: PathLike,
    *,
    prompt_field: str = "question",
    answer_field: str = "answer",
    id_field: Optional[str] = None,
    category: str = "gsm8k",
    category_field: Optional[str] = None,
    difficulty_field: Optional[str] = None,
    target_field: Optional[str] = None,
    prompt_template: str = "{prompt}",
    limit: Optional[int] = None,
) -> list[Task]:
  """Loads tasks from a JSONL file.

  Args:
    path: the file.
    prompt_field: field holding the problem text.
    answer_field: field holding the answer; if it contains ``'####'`` (GSM8K),
      the text after the last marker is the answer and the whole field the
      default target.
    id_field: field holding a unique id (default ``'<file name>:<line>'``).
    category: category of every task (selects the verifier; ``'gsm8k'`` =
      numeric match; unknown categories use the auto verifier).
    category_field: or a per-record category field.
    difficulty_field: integer difficulty field (default 0).
    target_field: field holding the supervised completion (default: the
      answer field text if it has ``'####'``, else ``'#### <answer>'``).
    prompt_template: ``str.format`` template with ``{prompt}``.
    limit: read at most this many tasks.

  Returns:
    The tasks in file order; all other record fields go to ``Task.meta``
    (plus ``source`` and ``line``).

  Raises:
    ValueError: missing file, malformed JSON, a non-object line, a missing or
      mistyped field, a duplicate id — naming file, line and field.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"load_jsonl_tasks: no such file {path!r}")
  used = {prompt_field, answer_field, id_field, category_field,
          difficulty_field, target_field} - {None}
  tasks, ids = [], {}
  base = os.path.basename(path)
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if limit is not None and len(tasks) >= limit:
        break
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})"
        ) from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got "
                         f"{type(record).__name__}")
      prompt = _text(_field(record, prompt_field, path, lineno), prompt_field,
                     path, lineno)
      raw = _text(_field(record, answer_field, path, lineno), answer_field,
                  path, lineno)
      if answers.ANSWER_MARKER in raw:
        answer = answers.extract_marked(raw)
        if answer is None:
          raise ValueError(f"{path}:{lineno}: field {answer_field!r} has an "
                           f"empty answer after '{answers.ANSWER_MARKER}'")
        default_target = raw
      else:
        answer = raw.strip()
        default_target = answers.format_answer(answer)
      if target_field is not None:
        target = _text(_field(record, target_field, path, lineno), target_field,
                       path, lineno)
      else:
        target = default_target
      if id_field is not None:
        tid = _text(_field(record, id_field, path, lineno), id_field, path, lineno)
      else:
        tid = f"{base}:{lineno}"
      if tid in ids:
        raise ValueError(f"{path}:{lineno}: duplicate id {tid!r} (field "
                         f"{id_field!r}; first on line {ids[tid]})")
      ids[tid] = lineno
      difficulty = 0
      if difficulty_field is not None:
        dv = _field(record, difficulty_field, path, lineno)
        try:
          difficulty = int(dv)
        except (TypeError, ValueError):
          raise ValueError(f"{path}:{lineno}: field {difficulty_field!r} must "
                           f"be an integer, got {dv!r}") from None
      cat = category
      if category_field is not None:
        cat = _text(_field(record, category_field, path, lineno),
                    category_field, path, lineno)
      meta = {k: v for k, v in record.items() if k not in used}
      meta.update(source=path, line=lineno)
      try:
        prompt_text = prompt_template.format(prompt=prompt)
      except (KeyError, IndexError) as e:
        raise ValueError(f"load_jsonl_tasks: prompt_template {prompt_template!r}"
                         f" may only use {{prompt}} ({e})") from None
      tasks.append(Task(id=tid, prompt=prompt_text, answer=answer, category=cat,
                        difficulty=difficulty, target=target, meta=meta))
  return tasks


def save_jsonl_tasks(tasks: Iterable[Task], path: PathLike) -> None:
  """Writes tasks as JSONL (fields ``id, prompt, answer, category, difficulty,
  target, meta``); read back with ``read_task_records``."""
  with open(os.fspath(path), "w", encoding="utf-8") as f:
    for t in tasks:
      f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")


def read_task_records(path: PathLike) -> list[Task]:
  """Reads a file written by ``save_jsonl_tasks`` (exact round trip)."""
  path = os.fspath(path)
  fields: Sequence[str] = ("id", "prompt", "answer", "category", "difficulty",
                           "target")
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column "
                         f"{e.colno})") from None
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object")
      for k in fields:
        _field(rec, k, path, lineno)
      out.append(Task(**{k: rec[k] for k in fields}, meta=rec.get("meta", {})))
  return out
