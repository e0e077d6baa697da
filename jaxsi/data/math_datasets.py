"""GSM8K- and MATH-format datasets from local JSONL / parquet files.

Nothing is downloaded: point the loaders at local files (a missing file raises
``FileNotFoundError`` saying what to put where).

* GSM8K (Cobbe et al., 2021): records ``{"question", "answer"}`` whose answer
  is a worked solution ending in ``#### 72``. ``Task.answer`` is the text after
  the last ``####`` (commas removed), ``Task.target`` the solution with the
  ``<<48/2=24>>`` calculator annotations removed.
* MATH (Hendrycks et al., 2021): records ``{"problem", "solution", "level",
  "type"}`` with the answer in the solution's last ``\\boxed{}``; MATH-500
  style records carry ``answer`` / ``subject`` / integer ``level`` directly.
  ``difficulty`` = the level (1..5, 0 if unknown).

Accepted files: ``.jsonl`` (one JSON object per line) and ``.parquet`` (the
Hugging Face dataset layout, read with pyarrow). A directory is searched for
the split: ``{split}.jsonl``, ``{split}.parquet``, ``{split}-*.parquet``,
``main/{split}-*.parquet`` (GSM8K on the Hub) or ``data/{split}-*.parquet``.

Tasks are verified with math-verify (``meta['verifier'] = 'math_verify'``,
``jaxsi.rewards.math_verify_reward``). ``grain_dataset`` streams them through
a deterministic, checkpointable grain pipeline (shuffle per epoch, batches of
prompts).
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from jaxsi.data import chat_templates as ct
from jaxsi.data import jsonl
from jaxsi.data.registry import Task
from jaxsi.rewards import answers
from jaxsi.rewards import math_verify_reward  # registers 'math_verify'

PathLike = Union[str, os.PathLike]

BOXED_INSTRUCTION = ("Please reason step by step, and put your final answer "
                     "within \\boxed{}.")
GSM8K_TEMPLATE = "{question}\n" + BOXED_INSTRUCTION
MATH_TEMPLATE = "{problem}\n" + BOXED_INSTRUCTION

_CALC_RE = re.compile(r"<<[^<>]*>>")
_LEVEL_RE = re.compile(r"\d+(?:\.\d+)?")

_HINT = {
    "gsm8k": ("GSM8K: put train.jsonl / test.jsonl there (one "
              '{"question": ..., "answer": "... #### 72"} per line) or the '
              "Hugging Face parquet files (main/train-00000-of-00001.parquet, "
              "main/test-00000-of-00001.parquet)"),
    "math": ("MATH: put train.jsonl / test.jsonl there (one "
             '{"problem": ..., "solution": "... \\\\boxed{...}", "level": '
             '"Level 3", "type": ...} per line; MATH-500 records with '
             '"answer" also work) or the Hugging Face parquet files '
             "(data/test-*.parquet)"),
}


def read_records(path: PathLike) -> list:
  """Records (dicts) of one ``.jsonl`` or ``.parquet`` file.

  Raises:
    FileNotFoundError: no such file.
    ValueError: an unparsable line, bytes that are not UTF-8 or a line that is
      not a JSON object (file:line named), an unreadable parquet file (file
      named) or an unknown suffix.
  """
  return [rec for _, rec in _numbered_records(path)]


def _numbered_records(path: PathLike) -> list:
  """``(where, record)`` pairs: ``where`` is ``'<file>:record <k>'``, plus the
  line for JSONL (``'<file>:record 3 (line 5)'``)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no data file {path!r}")
  if path.endswith(".parquet"):
    try:
      import pyarrow  # pylint: disable=g-import-not-at-top
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from e
    try:
      rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
      raise ValueError(f"{path}: not a readable parquet file ({e})") from e
    return [(f"{path}:record {k}", r) for k, r in enumerate(rows)]
  if path.endswith((".jsonl", ".json")):
    records = []
    for lineno, line in jsonl.iter_lines(path):
      if not line.strip():
        continue
      rec = jsonl.parse_line(line, path, lineno)
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got "
                         f"{type(rec).__name__}")
      records.append((f"{path}:record {len(records)} (line {lineno})", rec))
    return records
  raise ValueError(f"{path!r}: unsupported file type (use .jsonl or .parquet)")


def find_split_files(path: PathLike, split: Optional[str], *,
                     dataset: str) -> list:
  """The data files of ``split`` under ``path`` (or ``[path]`` for a file).

  Raises:
    FileNotFoundError: nothing found (says what to put where).
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    return [path]
  files = []
  if os.path.isdir(path) and split:
    for pattern in (f"{split}.jsonl", f"{split}.parquet", f"{split}-*.parquet",
                    f"main/{split}-*.parquet", f"data/{split}-*.parquet"):
      files = sorted(glob.glob(os.path.join(path, pattern)))
      if files:
        break
  if not files:
    what = f"split {split!r} in " if split else ""
    raise FileNotFoundError(
        f"No {dataset} data for {what}{path!r}. {_HINT[dataset]}. Nothing is "
        "downloaded at run time.")
  return files


def _text(record: Mapping[str, Any], name: str, where: str) -> str:
  value = record.get(name)
  if not isinstance(value, (str, int, float)) or isinstance(value, bool):
    raise ValueError(f"{where}: field {name!r} missing or not text (fields: "
                     f"{sorted(record)})")
  return str(value)


def gsm8k_answer(solution: str) -> Optional[str]:
  """Final answer of a GSM8K solution: after the last ``####``, no commas."""
  marked = answers.extract_marked(solution)
  return None if marked is None else marked.replace(",", "").strip()


def math_answer(record: Mapping[str, Any]) -> Optional[str]:
  """The ``answer`` field (text or a number), else the last ``\\boxed{}`` of
  ``solution``."""
  value = record.get("answer")
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    value = str(value)
  if isinstance(value, str) and value.strip():
    return value.strip()
  solution = record.get("solution")
  return answers.extract_boxed(solution) if isinstance(solution, str) else None


def _optional_text(record: Mapping[str, Any], name: str, where: str) -> str:
  """A text field that may be absent or null (``''``)."""
  value = record.get(name)
  if value is None:
    return ""
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise ValueError(f"{where}: field {name!r} must be text, got "
                     f"{type(value).__name__}")
  return str(value)


def _level(value: Any, where: str) -> int:
  """``3``, ``3.0``, ``'Level 3'`` → 3; absent or ``'Level ?'`` → 0.

  Raises:
    ValueError: ``true``, ``2.7``, ``'Level 2.5'``, a list… (never truncated).
  """
  if value is None:
    return 0
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, float) and math.isfinite(value) and value.is_integer():
    return int(value)
  m = _LEVEL_RE.search(value) if isinstance(value, str) else None
  if isinstance(value, str) and m is None:
    return 0
  if m is not None and float(m.group()).is_integer():
    return int(m.group().split(".")[0])
  raise ValueError(f"{where}: field 'level' must be an integer or 'Level <n>', "
                   f"got {value!r}")


def _render(prompt: str, chat: Optional[ct.ChatTemplate],
            system: Optional[str]) -> str:
  if chat is None:
    return prompt
  messages = ([{"role": "system", "content": system}] if system else [])
  messages.append({"role": "user", "content": prompt})
  return chat.render(messages, add_generation_prompt=True, add_bos=False)


def load_gsm8k(path: PathLike, *, split: Optional[str] = "train",
               prompt_template: str = GSM8K_TEMPLATE,
               chat_template: Optional[Union[str, ct.ChatTemplate]] = None,
               system_prompt: Optional[str] = None,
               limit: Optional[int] = None) -> list[Task]:
  """GSM8K tasks from local JSONL/parquet files.

  Args:
    path: a file, or a directory holding the split (see the module doc).
    split: 'train' or 'test' (ignored when ``path`` is a file).
    prompt_template: text in which ``{question}`` is replaced (other braces
      are literal, e.g. ``\\boxed{}``).
    chat_template: a family name or ChatTemplate: the prompt becomes the
      rendered user turn plus the assistant generation prompt (no BOS text;
      the trainer prepends ``bos_id``).
    system_prompt: optional system message (with ``chat_template``).
    limit: keep the first ``limit`` tasks.

  Returns:
    Tasks with category ``'gsm8k'`` and the math-verify verifier.

  Raises:
    FileNotFoundError: missing data (what to put where).
    ValueError: a malformed record (file, record index, line and field
      named), or no task at all (``no tasks in <path>``).
  """
  chat = ct.get_template(chat_template) if isinstance(chat_template, str) else chat_template
  _check_limit(limit)
  tasks = []
  if limit == 0:
    return tasks
  files = find_split_files(path, split, dataset="gsm8k")
  for file in files:
    for k, (where, rec) in enumerate(_numbered_records(file)):
      question = _text(rec, "question", where)
      solution = _text(rec, "answer", where)
      answer = gsm8k_answer(solution)
      if not answer:
        raise ValueError(f"{where}: field 'answer' (GSM8K) has no "
                         "'#### <answer>' line")
      target = _CALC_RE.sub("", solution)
      prompt = _render(prompt_template.replace("{question}", question), chat,
                       system_prompt)
      tasks.append(Task(
          id=f"gsm8k/{os.path.basename(file)}:{k}", prompt=prompt,
          answer=answer, category="gsm8k", difficulty=0, target=target,
          meta={"verifier": "math_verify", "question": question}))
      if limit is not None and len(tasks) >= limit:
        return tasks
  if not tasks:
    raise ValueError(f"no tasks in {', '.join(files)} (no records)")
  return tasks


def _check_limit(limit: Optional[int]) -> None:
  if limit is not None and (isinstance(limit, bool) or limit < 0):
    raise ValueError(f"limit must be None or >= 0, got {limit!r}")


def load_math(path: PathLike, *, split: Optional[str] = "test",
              prompt_template: str = MATH_TEMPLATE,
              chat_template: Optional[Union[str, ct.ChatTemplate]] = None,
              system_prompt: Optional[str] = None,
              levels: Optional[Sequence[int]] = None,
              subjects: Optional[Sequence[str]] = None,
              limit: Optional[int] = None) -> list[Task]:
  """MATH / MATH-500 tasks from local JSONL/parquet files.

  Args:
    path: a file, or a directory holding the split.
    split: split name (ignored when ``path`` is a file).
    prompt_template: text in which ``{problem}`` is replaced.
    chat_template: family name or ChatTemplate (as ``load_gsm8k``).
    system_prompt: optional system message (with ``chat_template``).
    levels: keep only these levels (1..5).
    subjects: keep only these subjects (``type`` / ``subject`` field).
    limit: keep the first ``limit`` tasks (after filtering).

  Returns:
    Tasks with category ``'math'``, difficulty = level, math-verify verifier.

  Raises:
    FileNotFoundError: missing data (what to put where).
    ValueError: a record without a problem or an answer, a mistyped field
      (file, record index, line and field named), or no task at all (an
      empty file, or filters that keep nothing: ``no tasks in <path>``).
  """
  chat = ct.get_template(chat_template) if isinstance(chat_template, str) else chat_template
  _check_limit(limit)
  tasks, n_records = [], 0
  if limit == 0:
    return tasks
  files = find_split_files(path, split, dataset="math")
  for file in files:
    for k, (where, rec) in enumerate(_numbered_records(file)):
      n_records += 1
      problem = _text(rec, "problem", where)
      solution = _optional_text(rec, "solution", where)
      answer = math_answer(rec)
      if not answer:
        raise ValueError(f"{where}: no 'answer' field and no \\boxed{{}} in "
                         "the solution")
      level = _level(rec.get("level"), where)
      subject = _optional_text(rec, "type" if "type" in rec else "subject",
                               where)
      if levels is not None and level not in levels:
        continue
      if subjects is not None and subject not in subjects:
        continue
      tasks.append(Task(
          id=str(rec.get("unique_id") or f"math/{os.path.basename(file)}:{k}"),
          prompt=_render(prompt_template.replace("{problem}", problem), chat,
                         system_prompt),
          answer=answer, category="math", difficulty=level,
          target=solution,
          meta={"verifier": "math_verify", "subject": subject,
                "problem": problem}))
      if limit is not None and len(tasks) >= limit:
        return tasks
  if not tasks:
    kept = (f"; none of the {n_records} records has levels={list(levels)!r}"
            f" / subjects={None if subjects is None else list(subjects)!r}"
            if n_records else " (no records)")
    raise ValueError(f"no tasks in {', '.join(files)}{kept}")
  return tasks


def grain_dataset(tasks: Sequence[Task], *, batch_size: int, seed: int = 0,
                  shuffle: bool = True, num_epochs: Optional[int] = 1,
                  transform: Optional[Callable[[Task], Any]] = None):
  """A grain ``MapDataset`` of task batches (lists of ``transform(task)``).

  Deterministic: epoch ``e`` uses its own shuffle of ``seed``; random access
  (``ds[k]`` is batch ``k``), so a run resumes from a saved batch index.

  Args:
    tasks: the tasks.
    batch_size: tasks per batch (the tail of an epoch is dropped).
    seed: shuffle seed.
    shuffle: shuffle the tasks every epoch.
    num_epochs: epochs (None: repeat forever).
    transform: per-task map (e.g. ``lambda t: tokenizer.encode(t.prompt)``).

  Raises:
    ImportError: grain is not installed (``pip install grain``).
  """
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("grain_dataset needs grain: pip install grain") from e
  if batch_size <= 0 or batch_size > len(tasks):
    raise ValueError(f"grain_dataset: batch_size {batch_size} must be in "
                     f"[1, {len(tasks)}]")
  ds = grain.MapDataset.source(list(tasks))
  if transform is not None:
    ds = ds.map(transform)
  if shuffle:
    ds = ds.shuffle(seed=seed)  # re-shuffled in every repeated epoch
  ds = ds.batch(batch_size, drop_remainder=True, batch_fn=list)
  return ds.repeat(num_epochs)


def write_jsonl(records: Iterable[Mapping[str, Any]], path: PathLike) -> None:
  """Writes records as JSON lines (for fixtures and converted datasets).

  Atomic like ``jsonl.save_jsonl_tasks``: a record that is not JSON leaves an
  existing file as it was.
  """
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  jsonl.write_lines_atomically(path, [jsonl.json_line(dict(r)) for r in records])


__all__ = ["load_gsm8k", "load_math", "read_records", "find_split_files",
           "grain_dataset", "gsm8k_answer", "math_answer", "write_jsonl"]
