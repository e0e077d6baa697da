"""Tasks from JSON-lines files (GSM8K/MATH-style datasets) and back.

One JSON object per line; blank lines are skipped. GSM8K answers
(``'…reasoning…\\n#### 72'``) are understood: ``Task.answer`` becomes the text
after ``####`` and ``Task.target`` the full solution. Every error names the
file, the line number and the field (bytes that are not UTF-8 included); a file
without a single task is an error (``no tasks in <path>``), never an empty list.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from typing import Any, Iterable, Optional, Union

from jaxsi.data.registry import Task
from jaxsi.rewards import answers

PathLike = Union[str, os.PathLike]


_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def iter_lines(path: str) -> Iterable[tuple[int, str]]:
  """``(line number, text)`` of every line of a UTF-8 text file (a leading
  byte-order mark, as Windows tools write, is skipped).

  Raises:
    ValueError: a line with bytes that are not UTF-8, naming file, line,
      column and the byte (not Python's bare ``UnicodeDecodeError``).
  """
  with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
    for lineno, line in enumerate(f, 1):
      if not line.isascii():
        bad = _UNDECODABLE_RE.search(line)
        if bad is not None:
          raise ValueError(
              f"{path}:{lineno}: not valid UTF-8 (byte "
              f"0x{ord(bad.group()) - 0xDC00:02x} at column {bad.start() + 1})")
      yield lineno, line


def parse_line(line: str, path: str, lineno: int) -> Any:
  """``json.loads(line)``; every failure is a ValueError naming file and line.

  Besides malformed JSON this covers what ``json`` raises otherwise: an
  integer of more than 4300 digits (a bare ValueError) and nesting deep enough
  to hit the recursion limit (RecursionError).
  """
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column "
                     f"{e.colno})") from None
  except RecursionError:
    raise ValueError(f"{path}:{lineno}: malformed JSON (nested too deeply)"
                     ) from None
  except ValueError as e:
    raise ValueError(f"{path}:{lineno}: malformed JSON ({e})") from None


def _int(value: Any, name: str, path: str, lineno: int) -> int:
  """An integer field: ints, integral floats (``2.0``) and integer strings
  (``'2'``); ``2.7``, ``true``, ``'2.7'``, ``1e400`` are refused, never truncated."""
  if isinstance(value, bool):
    ok = False
  elif isinstance(value, int):
    return value
  elif isinstance(value, float):
    ok = math.isfinite(value) and value.is_integer()
  elif isinstance(value, str):
    try:
      return int(value.strip())
    except ValueError:
      ok = False
  else:
    ok = False
  if not ok:
    raise ValueError(f"{path}:{lineno}: field {name!r} must be an integer, got "
                     f"{value!r}")
  return int(value)


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
    ValueError: missing file, a file with no task (empty or blank lines only),
      bytes that are not UTF-8, malformed JSON, a non-object line, a missing
      or mistyped field (a non-integer difficulty such as ``2.7`` or
      ``true``), a duplicate id — naming file, line and field.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"load_jsonl_tasks: no such file {path!r}")
  if limit is not None and (isinstance(limit, bool) or limit < 0):
    raise ValueError(f"load_jsonl_tasks: limit must be None or >= 0, got "
                     f"{limit!r}")
  used = {prompt_field, answer_field, id_field, category_field,
          difficulty_field, target_field} - {None}
  tasks, ids = [], {}
  base = os.path.basename(path)
  for lineno, line in iter_lines(path):
    if limit is not None and len(tasks) >= limit:
      break
    if not line.strip():
      continue
    record = parse_line(line, path, lineno)
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
      difficulty = _int(_field(record, difficulty_field, path, lineno),
                        difficulty_field, path, lineno)
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
  if not tasks and limit != 0:
    raise ValueError(f"no tasks in {path} (the file has no JSON lines)")
  return tasks


def json_line(record: Any) -> str:
  """One JSONL line (UTF-8 text; lone surrogates, which UTF-8 cannot hold, as
  JSON escapes)."""
  line = json.dumps(record, ensure_ascii=False)
  if not line.isascii():  # lone surrogates (not UTF-8) become JSON escapes
    line = _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
  return line + "\n"


def write_lines_atomically(path: str, lines: Iterable[str]) -> None:
  """Writes ``lines`` to ``path`` through a temporary file and a rename: on
  any failure an existing file at ``path`` is left as it was."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                             prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.writelines(lines)
    os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path)
             else 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _task_line(task: Task, k: int) -> str:
  try:
    return json_line(task.to_dict())
  except (TypeError, ValueError) as e:
    raise type(e)(f"save_jsonl_tasks: task {k} (id {task.id!r}): {e}") from e


def save_jsonl_tasks(tasks: Iterable[Task], path: PathLike) -> None:
  """Writes tasks as JSONL (fields ``id, prompt, answer, category, difficulty,
  target, meta``); read back with ``read_task_records``.

  The file is replaced atomically: when a task cannot be written (a ``meta``
  value that is not JSON) the error names it and an existing file at ``path``
  is left as it was. Text that UTF-8 cannot hold (lone surrogates) is written
  as JSON escapes, so it reads back unchanged (but for a high surrogate
  followed by a low one, which JSON reads as the one character they encode).
  """
  path = os.fspath(path)
  write_lines_atomically(path, [_task_line(t, k) for k, t in enumerate(tasks)])


_RECORD_TYPES = (("id", str), ("prompt", str), ("answer", str),
                 ("category", str), ("difficulty", int), ("target", str))


def read_task_records(path: PathLike) -> list[Task]:
  """Reads a file written by ``save_jsonl_tasks`` (exact round trip; an empty
  file is ``[]``, as written for no tasks).

  Raises:
    ValueError: bytes that are not UTF-8, malformed JSON, a non-object line, a
      missing, null or mistyped field (``difficulty`` must be an integer,
      ``meta`` an object) — naming file, line and field.
  """
  path = os.fspath(path)
  out = []
  for lineno, line in iter_lines(path):
    if not line.strip():
      continue
    rec = parse_line(line, path, lineno)
    if not isinstance(rec, dict):
      raise ValueError(f"{path}:{lineno}: expected a JSON object")
    for k, kind in _RECORD_TYPES:
      value = _field(rec, k, path, lineno)
      if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{path}:{lineno}: field {k!r} must be "
                         f"{'an integer' if kind is int else 'a string'}, got "
                         f"{value!r}")
    meta = rec.get("meta", {})
    if not isinstance(meta, dict):
      raise ValueError(f"{path}:{lineno}: field 'meta' must be an object, got "
                       f"{type(meta).__name__}")
    out.append(Task(**{k: rec[k] for k, _ in _RECORD_TYPES}, meta=meta))
  return out
