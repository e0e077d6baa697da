"""Tests for jaxsi.data.jsonl."""

import json

import pytest

from jaxsi.data import make_tasks
from jaxsi.data.jsonl import load_jsonl_tasks, read_task_records, save_jsonl_tasks


def _write(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_gsm8k_style_file(tmp_path):
  path = _write(tmp_path / "gsm.jsonl", [
      json.dumps({"question": "Tom has 3+4 apples?",
                  "answer": "He has 3+4=7.\n#### 7", "level": "2"}),
      "",
      "   ",
      json.dumps({"question": "Big?", "answer": "Sum.\n#### 1,234"}),
      json.dumps({"question": "Plain?", "answer": 42}),
  ])
  ts = load_jsonl_tasks(path)
  assert [t.id for t in ts] == ["gsm.jsonl:1", "gsm.jsonl:4", "gsm.jsonl:5"]
  assert [t.answer for t in ts] == ["7", "1,234", "42"]
  assert ts[0].target == "He has 3+4=7.\n#### 7"
  assert ts[2].target == "#### 42"
  assert ts[0].meta == {"level": "2", "source": str(path), "line": 1}
  assert ts[0].category == "gsm8k"
  for t in ts:
    assert t.verify(t.target) == 1.0
  assert ts[1].verify("so #### 1234") == 1.0
  assert ts[1].verify("so #### 1235") == 0.0
  assert ts[0].verify("no idea") == 0.0
  ts = load_jsonl_tasks(path, difficulty_field="level", limit=1,
                        prompt_template="Q: {prompt}\nA:")
  assert len(ts) == 1 and ts[0].difficulty == 2
  assert ts[0].prompt == "Q: Tom has 3+4 apples?\nA:"


def test_custom_fields(tmp_path):
  path = _write(tmp_path / "d.jsonl", [
      json.dumps({"uid": "a", "problem": "Capital of France?", "sol": "Paris",
                  "kind": "trivia"})])
  (t,) = load_jsonl_tasks(path, prompt_field="problem", answer_field="sol",
                          id_field="uid", category_field="kind")
  assert (t.id, t.prompt, t.answer, t.category) == (
      "a", "Capital of France?", "Paris", "trivia")
  assert t.verify("The answer is paris.") == 1.0  # auto → exact (normalised)
  assert t.verify("London") == 0.0


@pytest.mark.parametrize("lines,pattern", [
    (['{"question": "q", "answer": "1"}', '{"question": "q2", "answer": '],
     r"bad\.jsonl:2: malformed JSON"),
    (['{"question": "q"}'], r"bad\.jsonl:1: missing field 'answer'"),
    (['', '{"answer": "3"}'], r"bad\.jsonl:2: missing field 'question'"),
    (['[1, 2]'], r"bad\.jsonl:1: expected a JSON object"),
    (['{"question": ["q"], "answer": "1"}'],
     r"bad\.jsonl:1: field 'question' must be a string"),
    (['{"question": "q", "answer": null}'], r"bad\.jsonl:1: field 'answer' is null"),
    (['{"question": "q", "answer": "x ####   "}'],
     r"bad\.jsonl:1: field 'answer' has an empty answer"),
])
def test_errors_name_file_line_field(tmp_path, lines, pattern):
  path = _write(tmp_path / "bad.jsonl", lines)
  with pytest.raises(ValueError, match=pattern):
    load_jsonl_tasks(path)


def test_more_errors(tmp_path):
  path = _write(tmp_path / "d.jsonl", [
      '{"question": "q", "answer": "1", "id": "x", "lvl": "hard"}',
      '{"question": "q", "answer": "1", "id": "x", "lvl": 1}'])
  with pytest.raises(ValueError, match=r"d\.jsonl:1: field 'lvl' must be an integer"):
    load_jsonl_tasks(path, difficulty_field="lvl")
  with pytest.raises(ValueError, match=r"d\.jsonl:2: duplicate id 'x'.*line 1"):
    load_jsonl_tasks(path, id_field="id")
  with pytest.raises(ValueError, match="no such file"):
    load_jsonl_tasks(tmp_path / "missing.jsonl")


def test_save_and_read_round_trip(tmp_path):
  ts = make_tasks("countdown", 5, difficulty=3, seed=0, scratchpad=True)
  save_jsonl_tasks(ts, tmp_path / "t.jsonl")
  assert read_task_records(tmp_path / "t.jsonl") == ts
