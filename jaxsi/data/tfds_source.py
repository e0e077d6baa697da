"""Tasks from tensorflow-datasets (TFDS): a registered builder or a prepared directory.

Records are read with the builder's ``as_data_source`` (what ``tfds.data_source``
returns: random access over ``array_record`` or ``parquet`` files; no TensorFlow), so a split is a sequence of Tasks
that grain can shuffle and batch like any other (``TfdsTasks`` is a
``Sequence[Task]``; ``math_datasets.grain_dataset(load_tfds_tasks(...))`` or
``grain.MapDataset.source(TfdsTasks(...))``). Nothing is downloaded or built
at run time: the dataset must already be prepared in ``data_dir``
(``tfds build NAME --data_dir=DIR --file_format=array_record``), or ``path``
names a prepared version directory (``DIR/NAME/CONFIG/1.0.0``, the folder
holding ``dataset_info.json``).

A record becomes a Task as a JSONL line does (``jsonl.load_jsonl_tasks``): the
prompt and answer come from bindable fields (``question_field``,
``answer_field``; nested features as ``'a/b'``); an answer containing
``'####'`` (GSM8K) gives the text after the last marker as ``Task.answer``
and the whole field as the default target, otherwise the target is
``'#### <answer>'``. TFDS text features arrive as UTF-8 bytes and are decoded.
Every error names the dataset, the split, the record index and the field
(``tfds math_dataset/arithmetic__add_or_sub:train[record 17]: missing field
'question' (fields present: [...])``).

The ``'tfds'`` task generator (registered on import) lets the synthetic-task
launchers (``rl_run.run``, ``rounds_run.run``) train on a TFDS split with gin
only: ``task = "tfds"`` and ``task_format = {"dataset": ..., "data_dir": ...,
"question_field": ..., ...}`` (see ``gin_configs/experiments/grpo_tfds.gin``).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterator, Mapping, Optional, Sequence, Union, overload

import numpy as np

from jaxsi.data import jsonl
from jaxsi.data.registry import Task, register_task
from jaxsi.rewards import answers

PathLike = Union[str, os.PathLike]

_RANDOM_ACCESS_FORMATS = ("array_record", "parquet")
_INSTALL = "pip install 'jaxsi[tfds]' (tensorflow-datasets, array_record)"


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"TFDS task sources need tensorflow-datasets: {_INSTALL}"
                      ) from e
  return tfds


def _builder(tfds, name: Optional[str], data_dir: Optional[PathLike],
             path: Optional[PathLike]):
  """The TFDS builder of a registered/prepared name, or of a version directory.

  Raises:
    ValueError: neither or both of ``name`` (the dataset) and ``path``.
    FileNotFoundError: the dataset is not prepared there (what to run).
  """
  if (name is None) == (path is None):
    raise ValueError("TFDS task source: give exactly one of dataset (a TFDS "
                     "dataset name, e.g. 'math_dataset/arithmetic__add_or_sub')"
                     " and path (a prepared version directory)")
  if path is not None:
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
      raise FileNotFoundError(
          f"TFDS task source: {path!r} is not a prepared TFDS dataset "
          "directory (no dataset_info.json; pass the version folder, e.g. "
          "DATA_DIR/NAME/1.0.0). Nothing is downloaded at run time.")
    return tfds.builder_from_directory(path)
  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    where = data_dir or "the default TFDS data_dir"
    raise FileNotFoundError(
        f"TFDS task source: no dataset {name!r} registered or prepared in "
        f"{where} ({str(e).splitlines()[0]})") from None
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS task source: {name!r} is not prepared in {builder.data_dir!r}. "
        f"Prepare it first (tfds build {name} --data_dir="
        f"{data_dir or '~/tensorflow_datasets'} --file_format=array_record); "
        "nothing is downloaded at run time.")
  return builder


def _data_source(builder, split: str, label: str):
  fmt = builder.info.file_format
  fmt_name = getattr(fmt, "value", str(fmt))
  if fmt_name not in _RANDOM_ACCESS_FORMATS:
    raise ValueError(
        f"{label}: prepared as {fmt_name!r}, which has no random access; "
        "rebuild it with --file_format=array_record (tfds build ... "
        "--file_format=array_record) or convert it (tfds convert_format)")
  try:
    if builder.info.splits[split].num_examples == 0:
      return ()  # array_record refuses an empty selection
    return builder.as_data_source(split=split)
  except (ValueError, KeyError) as e:  # unknown split: TFDS lists the known
    raise ValueError(f"{label}: {e}") from None


def _lookup(record: Mapping[str, Any], field: str, where: str) -> Any:
  """``record[field]``; ``'a/b'`` reads a nested feature."""
  value: Any = record
  parts = field.split("/")
  for k, part in enumerate(parts):
    if not isinstance(value, Mapping) or part not in value:
      have = sorted(value) if isinstance(value, Mapping) else []
      inner = "/".join(parts[:k])
      raise ValueError(
          f"{where}: missing field {field!r} (fields present"
          f"{' in ' + repr(inner) if inner else ''}: {have})")
    value = value[part]
  if value is None:
    raise ValueError(f"{where}: field {field!r} is null")
  return value


def _scalar(value: Any) -> Any:
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  elif isinstance(value, np.generic):
    value = value.item()
  return value


def _text(value: Any, field: str, where: str) -> str:
  value = _scalar(value)
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{where}: field {field!r} is not valid UTF-8 (byte "
                       f"0x{value[e.start]:02x} at offset {e.start})") from None
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    kind = (f"array of shape {value.shape}" if isinstance(value, np.ndarray)
            else type(value).__name__)
    raise ValueError(f"{where}: field {field!r} must be text or a number, got "
                     f"{kind}")
  return value if isinstance(value, str) else str(value)


def _int(value: Any, field: str, where: str) -> int:
  value = _scalar(value)
  if isinstance(value, bytes):
    value = value.decode("utf-8", errors="replace")
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str):
    try:
      return int(value.strip())
    except ValueError:
      pass
  raise ValueError(f"{where}: field {field!r} must be an integer, got "
                   f"{value!r}")


def _meta_value(value: Any) -> Any:
  """A JSON-friendly copy of a feature value (bytes decoded, arrays listed)."""
  value = _scalar(value)
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.ndarray):
    return [_meta_value(v) for v in value]
  if isinstance(value, Mapping):
    return {k: _meta_value(v) for k, v in value.items()}
  return value


class TfdsTasks(Sequence):
  """One TFDS split as a random-access ``Sequence[Task]`` (grain-friendly).

  ``tasks[k]`` reads record ``k`` of the split and converts it; the
  conversion and its errors are those of :func:`load_tfds_tasks`.

  Args:
    dataset: a TFDS dataset name (``'mnist'``, ``'NAME/CONFIG'``,
      ``'NAME/CONFIG:1.0.0'``) registered in this process or prepared in
      ``data_dir``.
    data_dir: the TFDS data directory (default TFDS's, ``~/tensorflow_datasets``
      or ``$TFDS_DATA_DIR``).
    path: or a prepared version directory (holding ``dataset_info.json``).
    split: a TFDS split, slices included (``'train'``, ``'test[:100]'``).
    question_field: feature holding the problem text (``'a/b'`` nested).
    answer_field: feature holding the answer (GSM8K ``'####'`` understood).
    id_field: feature holding a unique id (default
      ``'<dataset>:<split>:<record index>'``).
    target_field: feature holding the supervised completion (default: the
      answer field if it has ``'####'``, else ``'#### <answer>'``).
    category: category of every task (selects the verifier, unknown ones use
      the auto verifier; default: the dataset name without config/version).
    category_field: or a per-record category feature.
    difficulty_field: integer difficulty feature (default 0).
    verifier: a registered verifier for every task (``meta['verifier']``,
      e.g. ``'math_verify'``); default: the category's.
    prompt_template: ``str.format`` template with ``{prompt}``.

  Raises:
    ImportError: tensorflow-datasets is not installed.
    FileNotFoundError: the dataset is not prepared (says what to run).
    ValueError: a split TFDS does not know, a format without random access,
      a bad ``prompt_template``.
  """

  def __init__(self, dataset: Optional[str] = None, *,
               data_dir: Optional[PathLike] = None,
               path: Optional[PathLike] = None, split: str = "train",
               question_field: str = "question", answer_field: str = "answer",
               id_field: Optional[str] = None,
               target_field: Optional[str] = None,
               category: Optional[str] = None,
               category_field: Optional[str] = None,
               difficulty_field: Optional[str] = None,
               verifier: Optional[str] = None,
               prompt_template: str = "{prompt}"):
    tfds = _import_tfds()
    builder = _builder(tfds, dataset, data_dir, path)
    self.dataset = dataset if dataset is not None else builder.info.full_name
    self.split = split
    self.label = f"tfds {self.dataset}:{split}"
    try:
      prompt_template.format(prompt="")
    except (KeyError, IndexError) as e:
      raise ValueError(f"{self.label}: prompt_template {prompt_template!r} may "
                       f"only use {{prompt}} ({e})") from None
    self._source = _data_source(builder, split, self.label)
    self.question_field, self.answer_field = question_field, answer_field
    self.id_field, self.target_field = id_field, target_field
    self.category = (category if category is not None
                     else builder.info.name)
    self.category_field, self.difficulty_field = category_field, difficulty_field
    self.verifier, self.prompt_template = verifier, prompt_template
    self._used = {f.split("/")[0] for f in (
        question_field, answer_field, id_field, target_field, category_field,
        difficulty_field) if f is not None}

  def __len__(self) -> int:
    return len(self._source)

  @overload
  def __getitem__(self, index: int) -> Task: ...

  @overload
  def __getitem__(self, index: slice) -> list[Task]: ...

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[k] for k in range(*index.indices(len(self)))]
    n = len(self)
    k = int(index) + n if int(index) < 0 else int(index)
    if not 0 <= k < n:
      raise IndexError(f"{self.label}: record {index} out of range ({n} "
                       "records)")
    return self.convert(self._source[k], k)

  def __iter__(self) -> Iterator[Task]:
    for k in range(len(self)):
      yield self[k]

  def convert(self, record: Any, k: int) -> Task:
    """Task of record ``k`` (a feature dict as the data source returns it)."""
    where = f"{self.label}[record {k}]"
    if not isinstance(record, Mapping):
      raise ValueError(f"{where}: expected a dict of features, got "
                       f"{type(record).__name__}")
    prompt = _text(_lookup(record, self.question_field, where),
                   self.question_field, where)
    raw = _text(_lookup(record, self.answer_field, where), self.answer_field,
                where)
    if answers.ANSWER_MARKER in raw:
      answer = answers.extract_marked(raw)
      if answer is None:
        raise ValueError(f"{where}: field {self.answer_field!r} has an empty "
                         f"answer after '{answers.ANSWER_MARKER}'")
      default_target = raw
    else:
      answer = raw.strip()
      if not answer:
        raise ValueError(f"{where}: field {self.answer_field!r} is empty")
      default_target = answers.format_answer(answer)
    target = default_target
    if self.target_field is not None:
      target = _text(_lookup(record, self.target_field, where),
                     self.target_field, where)
    tid = f"{self.dataset}:{self.split}:{k}"
    if self.id_field is not None:
      tid = _text(_lookup(record, self.id_field, where), self.id_field, where)
    difficulty = 0
    if self.difficulty_field is not None:
      difficulty = _int(_lookup(record, self.difficulty_field, where),
                        self.difficulty_field, where)
    category = self.category
    if self.category_field is not None:
      category = _text(_lookup(record, self.category_field, where),
                       self.category_field, where)
    meta = {key: _meta_value(v) for key, v in record.items()
            if key not in self._used}
    meta.update(source=self.label, record=k)
    if self.verifier is not None:
      meta["verifier"] = self.verifier
    return Task(id=tid, prompt=self.prompt_template.format(prompt=prompt),
                answer=answer, category=category, difficulty=difficulty,
                target=target, meta=meta)


def load_tfds_tasks(dataset: Optional[str] = None, *,
                    limit: Optional[int] = None, **kwargs) -> list[Task]:
  """Every task of one TFDS split (see :class:`TfdsTasks` for the arguments).

  Args:
    dataset: the TFDS dataset name (or ``path=`` a prepared directory).
    limit: keep the first ``limit`` records (TFDS slices such as
      ``split='train[:100]'`` do the same without reading the rest).
    **kwargs: :class:`TfdsTasks` arguments.

  Returns:
    The tasks in record order (every record converted, so a bad one fails
    here, naming dataset, split, record index and field).

  Raises:
    ValueError: a malformed record, a duplicate id, or a split without
      records (``no tasks in tfds NAME:SPLIT``); see also :class:`TfdsTasks`.
  """
  if limit is not None and (isinstance(limit, bool) or limit < 0):
    raise ValueError(f"load_tfds_tasks: limit must be None or >= 0, got "
                     f"{limit!r}")
  source = TfdsTasks(dataset, **kwargs)
  n = len(source) if limit is None else min(limit, len(source))
  tasks, ids = [], {}
  for k in range(n):
    task = source[k]
    if task.id in ids:
      raise ValueError(f"{source.label}[record {k}]: duplicate id {task.id!r} "
                       f"(field {source.id_field!r}; first in record "
                       f"{ids[task.id]})")
    ids[task.id] = k
    tasks.append(task)
  if not tasks and limit != 0:
    raise ValueError(f"no tasks in {source.label} (the split has no records)")
  return tasks


# ------------------------------------------------- the 'tfds' task generator
def _freeze(value: Any) -> Any:
  return os.fspath(value) if isinstance(value, os.PathLike) else value


@functools.lru_cache(maxsize=8)
def _cached_tasks(items: tuple) -> tuple:
  return tuple(load_tfds_tasks(**dict(items)))


def tfds_tasks(n: int, *, difficulty: int = 0, seed: int = 0,
               **source) -> list[Task]:
  """``n`` tasks drawn without replacement from a TFDS split (task ``'tfds'``).

  The generator protocol of ``jaxsi.data.tasks.make_tasks``, so the synthetic
  launchers take a TFDS split as ``task = "tfds"``, ``task_format = {...}``
  (the :class:`TfdsTasks` arguments). The split is read once per process
  (cached); draw ``seed`` is a fixed permutation of its records, so
  ``make_train_test`` keeps test problems out of training as for generated
  tasks. The split should hold well over ``n_train + n_test`` records: the
  first draw then fills the training set, whereas on a small split
  ``make_train_test``'s top-up draws may repeat training problems (as they
  may for generated tasks).

  Args:
    n: number of tasks.
    difficulty: with ``difficulty_field`` in ``source``, only records of this
      difficulty are drawn; otherwise ignored (every task has difficulty 0).
    seed: draw seed.
    **source: :class:`TfdsTasks` arguments (``dataset`` or ``path``, ``split``,
      fields ...).

  Returns:
    ``n`` Tasks.

  Raises:
    ValueError: fewer than ``n`` records (of that difficulty), or what
      :func:`load_tfds_tasks` raises.
  """
  if source.get("dataset") is None and source.get("path") is None:
    raise ValueError(
        "task 'tfds': name the split in its format options, e.g. task_format = "
        "{'dataset': 'math_dataset/arithmetic__add_or_sub', 'data_dir': DIR} or "
        f"{{'path': VERSION_DIR}} (got {sorted(source)})")
  items = tuple(sorted((k, _freeze(v)) for k, v in source.items()))
  try:
    pool = _cached_tasks(items)
  except TypeError as e:  # an unhashable argument: read without the cache
    if "unhashable" not in str(e):
      raise
    pool = tuple(load_tfds_tasks(**source))
  label = pool[0].meta["source"] if pool else "tfds"
  if source.get("difficulty_field") is not None:
    pool = tuple(t for t in pool if t.difficulty == int(difficulty))
  if n > len(pool):
    what = (f" of difficulty {difficulty}"
            if source.get("difficulty_field") is not None else "")
    raise ValueError(f"task 'tfds': {n} tasks requested but {label} has "
                     f"{len(pool)} records{what}")
  order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7FD5]).permutation(
      len(pool))
  return [pool[i] for i in order[:n]]


register_task("tfds", tfds_tasks, overwrite=True)

__all__ = ["TfdsTasks", "load_tfds_tasks", "tfds_tasks"]
