"""Property-based tests (hypothesis) of the JSONL task readers and writers.

* ``save_jsonl_tasks`` → ``read_task_records`` is an exact round trip, and
  ``load_jsonl_tasks`` (fields mapped to the saved names) reads back the same
  ids, prompts, answers, categories, difficulties and targets, for arbitrary
  unicode text (lone surrogates included for the exact reader).
* Arbitrary bytes / lines either load or raise ValueError naming
  ``<path>:<line>`` (or ``no tasks in <path>``), never another exception.
"""

import json
import re
import tempfile
import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxsi.data import jsonl
from jaxsi.data import math_datasets as md
from jaxsi.data.registry import Task

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Any code point, lone surrogates included (st.text() leaves them out).
ANY_CHAR = st.characters(exclude_categories=())
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() |
    st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) |
    st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


def _tasks(text):
  return st.lists(st.builds(
      Task, id=text, prompt=text, answer=text, category=text,
      difficulty=st.integers(-10**30, 10**30), target=text,
      meta=st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
      max_size=5, unique_by=lambda t: t.id)


def _tmpdir():
  return tempfile.TemporaryDirectory()


@SETTINGS
@given(_tasks(st.text(ANY_CHAR, max_size=20)))
def test_save_then_read_task_records_is_exact(tasks):
  # A high surrogate followed by a low one reads back as the character they
  # encode (JSON semantics); every other string, lone surrogates included,
  # round-trips exactly.
  for t in tasks:
    assume(not any(_PAIR.search(s) for s in (t.id, t.prompt, t.answer,
                                             t.category, t.target)))
    assume(not _PAIR.search(json.dumps(t.meta, ensure_ascii=False)))
  with _tmpdir() as d:
    path = os.path.join(d, "t.jsonl")
    jsonl.save_jsonl_tasks(tasks, path)
    back = jsonl.read_task_records(path)
  assert back == tasks
  assert [t.meta for t in back] == [t.meta for t in tasks]


@SETTINGS
@given(_tasks(st.text(max_size=20)))
def test_save_then_load_jsonl_tasks(tasks):
  # load_jsonl_tasks is the dataset reader: it strips answers and reads the
  # text after '####' as the answer, so answers here are stripped and unmarked.
  tasks = [t.replace(answer=t.answer.replace("####", "").strip()) for t in tasks]
  with _tmpdir() as d:
    path = os.path.join(d, "t.jsonl")
    jsonl.save_jsonl_tasks(tasks, path)
    if not tasks:
      try:
        jsonl.load_jsonl_tasks(path)
      except ValueError as e:
        assert str(e).startswith(f"no tasks in {path}")
      else:
        raise AssertionError("an empty file must not load")
      return
    back = jsonl.load_jsonl_tasks(
        path, prompt_field="prompt", answer_field="answer", id_field="id",
        category_field="category", difficulty_field="difficulty",
        target_field="target")
  fields = ("id", "prompt", "answer", "category", "difficulty", "target")
  assert [[getattr(t, f) for f in fields] for t in back] == [
      [getattr(t, f) for f in fields] for t in tasks]
  assert [t.meta["meta"] for t in back] == [t.meta for t in tasks]
  assert [t.meta["line"] for t in back] == list(range(1, len(tasks) + 1))


def _record_line():
  field = st.one_of(st.text(max_size=8), st.integers(), st.floats(),
                    st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
  rec = st.fixed_dictionaries(
      {}, optional={"question": field, "answer": field, "id": field,
                    "lvl": field, "problem": field, "solution": field,
                    "level": field, "type": field})
  return st.one_of(
      rec.map(lambda r: json.dumps(r).encode()),
      json_values.map(lambda v: json.dumps(v).encode()),
      st.binary(max_size=30),
      st.text(max_size=30).map(lambda s: s.encode("utf-8")),
      st.just(b'{"question": "q", "answer": "x\\n#### 7"}'),
      st.just(b'{"problem": "p", "solution": "\\\\boxed{2}"}'))


garbage = st.tuples(
    st.lists(_record_line(), max_size=6),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans()).map(lambda x: x[1].join(x[0]) + (x[1] if x[2] else b""))

_READERS = [
    ("load_jsonl_tasks", lambda p: jsonl.load_jsonl_tasks(p)),
    ("load_jsonl_tasks(fields)", lambda p: jsonl.load_jsonl_tasks(
        p, id_field="id", difficulty_field="lvl")),
    ("read_task_records", jsonl.read_task_records),
    ("load_gsm8k", md.load_gsm8k),
    ("load_math", md.load_math),
    ("read_records", md.read_records),
]


@SETTINGS
@given(garbage)
def test_garbage_loads_or_raises_value_error_naming_path_and_line(data):
  with _tmpdir() as d:
    path = os.path.join(d, "g.jsonl")
    with open(path, "wb") as f:
      f.write(data)
    for name, read in _READERS:
      try:
        out = read(path)
      except ValueError as e:
        msg = str(e)
        assert (re.match(re.escape(path) + r":(\d+|record \d+ \(line \d+\)): ",
                         msg) or msg.startswith(f"no tasks in {path}")), (name, msg)
      else:
        assert isinstance(out, list), name
        if name != "read_task_records" and name != "read_records":
          assert out, name  # a loader never returns an empty task list
      with open(path, "rb") as f:
        assert f.read() == data  # reading never changes the input
