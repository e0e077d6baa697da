"""Bad-input corpus for the data readers (jsonl.py, math_datasets.py, tokenizers).

Every case writes a small fixture into tmp_path, asserts the exact error class,
that the message names the file, the line and the field where there is one,
and that nothing was written or lost: every file under tmp_path (the input
included) is byte-for-byte what it was before the call, and no file appeared.
"""

import json
import os
import re

import pytest

from jaxsi.data import jsonl
from jaxsi.data import math_datasets as md
from jaxsi.data.char_tokenizer import CharTokenizer
from jaxsi.data.registry import Task

Q = '{"question": "q", "answer": "1"}'


def _snapshot(root):
  out = {}
  for dirpath, _, names in os.walk(root):
    for n in names:
      p = os.path.join(dirpath, n)
      with open(p, "rb") as f:
        out[p] = f.read()
  return out


def _expect(root, cls, pattern, fn, *args, **kwargs):
  before = _snapshot(root)
  with pytest.raises(cls) as info:
    fn(*args, **kwargs)
  assert type(info.value) is cls, (type(info.value), info.value)
  assert re.search(pattern, str(info.value)), (pattern, str(info.value))
  assert _snapshot(root) == before  # nothing written, nothing lost
  return info.value


def _write(tmp_path, name, data):
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
  return path


def _at(path, line):
  return re.escape(f"{path}:{line}:")


# ------------------------------------------------------- load_jsonl_tasks
LOAD_CASES = [
    # (name, file bytes, kwargs, line (None: no line), message after 'path:line: ')
    ("empty", b"", {}, None, r"no tasks in .*empty\.jsonl"),
    ("blank", b"\n   \n\t\n", {}, None, r"no tasks in .*blank\.jsonl"),
    ("float_difficulty", '{"question": "q", "answer": "1", "lvl": 2.7}\n',
     {"difficulty_field": "lvl"}, 1, r"field 'lvl' must be an integer, got 2\.7"),
    ("bool_difficulty", '{"question": "q", "answer": "1", "lvl": 1}\n'
     '{"question": "q", "answer": "1", "lvl": true}\n',
     {"difficulty_field": "lvl"}, 2, r"field 'lvl' must be an integer, got True"),
    ("inf_difficulty", '{"question": "q", "answer": "1", "lvl": 1e400}\n',
     {"difficulty_field": "lvl"}, 1, r"field 'lvl' must be an integer, got inf"),
    ("str_float_difficulty", '{"question": "q", "answer": "1", "lvl": "2.7"}\n',
     {"difficulty_field": "lvl"}, 1, r"field 'lvl' must be an integer, got '2\.7'"),
    ("list_difficulty", '{"question": "q", "answer": "1", "lvl": [2]}\n',
     {"difficulty_field": "lvl"}, 1, r"field 'lvl' must be an integer"),
    ("not_utf8", (Q + "\n").encode() + b'{"question": "caf\xe9", "answer": "1"}\n',
     {}, 2, r"not valid UTF-8 \(byte 0xe9 at column 18\)"),
    ("truncated_last_line", Q + '\n{"question": "q2", "ans', {}, 2,
     r"malformed JSON"),
    ("huge_integer", '{"question": "q", "answer": %s}\n' % ("9" * 5000), {}, 1,
     r"malformed JSON \(Exceeds the limit"),
    ("deep_nesting", Q + "\n" + "[" * 100000 + "\n", {}, 2,
     r"malformed JSON \(nested too deeply\)"),
    ("missing_field", Q + '\n\n{"answer": "3"}\n', {}, 3,
     r"missing field 'question'"),
    ("null_field", '{"question": null, "answer": "3"}\n', {}, 1,
     r"field 'question' is null"),
    ("wrong_type", '{"question": "q", "answer": {"v": 1}}\n', {}, 1,
     r"field 'answer' must be a string or number, got dict"),
    ("non_object", Q + '\n"just a string"\n', {}, 2, r"expected a JSON object"),
    ("duplicate_id", '{"question": "q", "answer": "1", "id": 7}\n'
     '{"question": "r", "answer": "2", "id": "7"}\n', {"id_field": "id"}, 2,
     r"duplicate id '7' \(field 'id'; first on line 1\)"),
]


@pytest.mark.parametrize("name,data,kwargs,line,message", LOAD_CASES,
                         ids=[c[0] for c in LOAD_CASES])
def test_load_jsonl_tasks_bad_input(tmp_path, name, data, kwargs, line, message):
  path = _write(tmp_path, f"{name}.jsonl", data)
  prefix = "" if line is None else _at(path, line) + " "
  _expect(tmp_path, ValueError, prefix + message, jsonl.load_jsonl_tasks, path,
          **kwargs)


def test_load_jsonl_tasks_accepts_integral_difficulties(tmp_path):
  path = _write(tmp_path, "d.jsonl", "\n".join(
      json.dumps({"question": f"q{k}", "answer": "1", "lvl": v})
      for k, v in enumerate([3, 3.0, "3", " 4 ", -1])) + "\n")
  ts = jsonl.load_jsonl_tasks(path, difficulty_field="lvl")
  assert [t.difficulty for t in ts] == [3, 3, 3, 4, -1]
  assert all(type(t.difficulty) is int for t in ts)


def test_byte_order_mark_and_crlf_are_read(tmp_path):
  data = b"\xef\xbb\xbf" + (Q + "\r\n" + Q.replace('"1"', '"2"') + "\r\n").encode()
  path = _write(tmp_path, "train.jsonl", data)
  assert [t.answer for t in jsonl.load_jsonl_tasks(path)] == ["1", "2"]
  assert len(md.read_records(path)) == 2
  path = _write(tmp_path, "t.jsonl", b"\xef\xbb\xbf" + json.dumps(RECORD).encode())
  assert len(jsonl.read_task_records(path)) == 1


def test_load_jsonl_tasks_limit(tmp_path):
  path = _write(tmp_path, "d.jsonl", Q + "\n")
  assert jsonl.load_jsonl_tasks(path, limit=0) == []  # asked for none
  _expect(tmp_path, ValueError, "limit must be None or >= 0",
          jsonl.load_jsonl_tasks, path, limit=-1)


# ------------------------------------------------------ read_task_records
RECORD = {"id": "a", "prompt": "p", "answer": "1", "category": "c",
          "difficulty": 2, "target": "t", "meta": {}}
RECORD_CASES = [
    ("id", 1, r"field 'id' must be a string, got 1"),
    ("difficulty", 2.7, r"field 'difficulty' must be an integer, got 2\.7"),
    ("difficulty", True, r"field 'difficulty' must be an integer, got True"),
    ("difficulty", "2", r"field 'difficulty' must be an integer, got '2'"),
    ("prompt", None, r"field 'prompt' is null"),
    ("meta", [1], r"field 'meta' must be an object, got list"),
]


@pytest.mark.parametrize("field,value,message", RECORD_CASES)
def test_read_task_records_bad_fields(tmp_path, field, value, message):
  rec = dict(RECORD, **{field: value})
  path = _write(tmp_path, "t.jsonl", json.dumps(RECORD) + "\n" + json.dumps(rec) + "\n")
  _expect(tmp_path, ValueError, _at(path, 2) + " " + message,
          jsonl.read_task_records, path)


def test_read_task_records_bad_bytes_and_missing(tmp_path):
  path = _write(tmp_path, "t.jsonl", b"\xfe\xff\n")
  _expect(tmp_path, ValueError, _at(path, 1) + r" not valid UTF-8 \(byte 0xfe",
          jsonl.read_task_records, path)
  rec = {k: v for k, v in RECORD.items() if k != "target"}
  path = _write(tmp_path, "m.jsonl", json.dumps(rec) + "\n")
  _expect(tmp_path, ValueError, _at(path, 1) + " missing field 'target'",
          jsonl.read_task_records, path)
  path = _write(tmp_path, "e.jsonl", "")
  assert jsonl.read_task_records(path) == []  # save_jsonl_tasks([]) round trip


# -------------------------------------------------------- save_jsonl_tasks
def test_save_jsonl_tasks_failure_keeps_the_old_file(tmp_path):
  path = _write(tmp_path, "t.jsonl", json.dumps(RECORD) + "\n")
  bad = [Task("ok", "p", "1", "c"), Task("bad/1", "p", "1", "c",
                                         meta={"x": object()})]
  err = _expect(tmp_path, TypeError, r"task 1 \(id 'bad/1'\).*not JSON serializable",
                jsonl.save_jsonl_tasks, bad, path)
  assert err is not None
  assert os.listdir(tmp_path) == ["t.jsonl"]  # no temporary file left behind


def test_save_jsonl_tasks_lone_surrogates_round_trip(tmp_path):
  # A lone surrogate cannot be UTF-8: before, the write raised half-way and
  # left the file truncated to the tasks before it.
  ts = [Task("a", "p", "1", "c"), Task("b\ud800", "x\udfffy", "é", "c",
                                         meta={"k": "\ud83d"})]
  path = tmp_path / "t.jsonl"
  jsonl.save_jsonl_tasks(ts, path)
  assert jsonl.read_task_records(path) == ts
  assert [t.meta for t in jsonl.read_task_records(path)] == [{}, {"k": "\ud83d"}]
  assert "é" in path.read_text(encoding="utf-8")  # still human-readable


# ------------------------------------------------------------ math datasets
GSM = {"question": "q", "answer": "so\n#### 5"}
MATH = {"problem": "p", "solution": "\\boxed{2}", "level": "Level 2",
        "type": "Algebra"}


def _lines(*records):
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                 for r in records)


MATH_CASES = [
    # (loader, file name, bytes, line, message after 'path:'; None line: no ':line')
    (md.load_gsm8k, "train.jsonl", b"", None, r"no tasks in .*train\.jsonl"),
    (md.load_gsm8k, "train.jsonl", b"\n\n", None, r"no tasks in"),
    (md.load_math, "test.jsonl", _lines(MATH, "", dict(MATH, level=2.7)), 3,
     r"field 'level' must be an integer or 'Level <n>', got 2\.7"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, level=True)), 1,
     r"field 'level'.*got True"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, level="Level 2.5")), 1,
     r"field 'level'.*got 'Level 2\.5'"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, level=[3])), 1,
     r"field 'level'"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, solution=["x"])), 1,
     r"field 'solution' must be text, got list"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, type={"a": 1})), 1,
     r"field 'type' must be text, got dict"),
    (md.load_math, "test.jsonl", _lines({"solution": "\\boxed{1}"}), 1,
     r"field 'problem' missing or not text"),
    (md.load_math, "test.jsonl", _lines(dict(MATH, solution="no box")), 1,
     r"no 'answer' field and no \\boxed\{\}"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM, {"question": "q"}), 2,
     r"field 'answer' missing or not text"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM, {"question": 1.5, "answer": [1]}), 2,
     r"field 'answer' missing or not text"),
    (md.load_gsm8k, "train.jsonl", _lines(dict(GSM, answer="7")), 1,
     r"field 'answer' \(GSM8K\) has no '#### <answer>' line"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM).encode() + b'{"question": "\x80"}\n',
     2, r"not valid UTF-8 \(byte 0x80 at column 15\)"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM) + '{"question": "q", "ans', 2,
     r"malformed JSON"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM, "{\"a\": " * 100000), 2,
     r"malformed JSON \(nested too deeply\)"),
    (md.load_gsm8k, "train.jsonl", _lines(GSM, "[1, 2]"), 2,
     r"expected a JSON object, got list"),
    (md.load_gsm8k, "train.jsonl", _lines("null"), 1,
     r"expected a JSON object, got NoneType"),
]


@pytest.mark.parametrize("loader,name,data,line,message", MATH_CASES)
def test_math_loaders_bad_input(tmp_path, loader, name, data, line, message):
  path = _write(tmp_path, name, data)
  # Record errors say 'path:record <k> (line <n>): ', line errors 'path:<n>: '.
  prefix = "" if line is None else (
      re.escape(str(path)) + rf":(record \d+ \(line {line}\)|{line}): ")
  for target in (path, tmp_path):  # the file itself, or the split directory
    _expect(tmp_path, ValueError, prefix + message, loader, target)


def test_math_record_index_and_line_both_named(tmp_path):
  path = _write(tmp_path, "test.jsonl", _lines(MATH, "", "", dict(MATH, level=True)))
  _expect(tmp_path, ValueError,
          re.escape(f"{path}:record 1 (line 4): field 'level'"), md.load_math, path)


def test_math_directory_without_the_split(tmp_path):
  _write(tmp_path, "d/test.jsonl", _lines(GSM))
  _write(tmp_path, "d/notes.txt", "hello")
  err = _expect(tmp_path, FileNotFoundError, r"No gsm8k data for split 'train' in "
                + re.escape(repr(str(tmp_path / "d"))), md.load_gsm8k,
                tmp_path / "d", split="train")
  assert "train.jsonl" in str(err)  # says what to put there
  _expect(tmp_path, FileNotFoundError, r"No math data for split 'test'",
          md.load_math, tmp_path / "empty_dir_does_not_exist", split="test")


def test_math_filters_that_keep_nothing_and_limits(tmp_path):
  path = _write(tmp_path, "test.jsonl", _lines(MATH, dict(MATH, level=3)))
  _expect(tmp_path, ValueError, r"no tasks in .*none of the 2 records has "
          r"levels=\[5\]", md.load_math, path, levels=[5])
  assert md.load_math(path, limit=0) == []
  assert len(md.load_math(path, limit=1)) == 1
  _expect(tmp_path, ValueError, r"limit must be None or >= 0",
          md.load_math, path, limit=-2)
  # Integral numbers and 'Level ?' (MATH has it) are fine.
  path = _write(tmp_path, "ok.jsonl", _lines(dict(MATH, level=4.0),
                                             dict(MATH, level="Level ?"),
                                             dict(MATH, level=None)))
  assert [t.difficulty for t in md.load_math(path)] == [4, 0, 0]
  # A numeric answer field (MATH-500 style) is the answer; a null solution is ''.
  path = _write(tmp_path, "num.jsonl", _lines({"problem": "p", "answer": 5,
                                               "solution": None}))
  (t,) = md.load_math(path)
  assert (t.answer, t.target) == ("5", "")


def test_math_parquet_bad_and_empty(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  path = _write(tmp_path, "train.parquet", b"PAR1 not really a parquet file")
  _expect(tmp_path, ValueError, re.escape(str(path)) +
          r": not a readable parquet file", md.load_gsm8k, path)
  (tmp_path / "e").mkdir()
  pq.write_table(pa.Table.from_pylist([GSM]).slice(0, 0),
                 tmp_path / "e" / "train-00000-of-00001.parquet")
  _expect(tmp_path, ValueError, r"no tasks in .*train-00000-of-00001\.parquet",
          md.load_gsm8k, tmp_path / "e", split="train")
  pq.write_table(pa.Table.from_pylist([GSM, {"question": None, "answer": "x"}]),
                 tmp_path / "e" / "train-00000-of-00001.parquet")
  _expect(tmp_path, ValueError, r"train-00000-of-00001\.parquet:record 1: "
          r"field 'question' missing or not text", md.load_gsm8k,
          tmp_path / "e", split="train")


def test_math_unsupported_suffix(tmp_path):
  path = _write(tmp_path, "train.csv", "question,answer\n")
  _expect(tmp_path, ValueError, r"unsupported file type", md.load_gsm8k, path)


# ---------------------------------------------------------------- tokenizers
def test_char_tokenizer_names_unknown_character_and_position():
  t = CharTokenizer()
  with pytest.raises(ValueError, match=r"unknown character 'é' \(U\+00E9\) at "
                     r"position 3 of the text"):
    t.encode("abcé")
  # Positions count the whole text, markers included.
  with pytest.raises(ValueError, match=r"'€' \(U\+20AC\) at position 10"):
    t.encode("<|user|>ab€<|end|>")
  with pytest.raises(ValueError, match=r"'\\x00' \(U\+0000\) at position 0"):
    t.encode("\x00")
  with pytest.raises(ValueError, match=r"id 999 is outside the vocabulary \[0, 104\)"):
    t.decode([7, 999])
  with pytest.raises(TypeError, match="expected str, got bytes"):
    t.encode(b"12")  # type: ignore[arg-type]
