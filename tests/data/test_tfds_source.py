"""TFDS task sources: field mapping, errors, the grain pipeline, the 'tfds' task.

Each test reads a tiny dataset that ``_tfds_fixture.build`` prepares in a tmp
dir with TFDS's own writer (array_record; no TensorFlow, no downloads).
"""

import os
import sys

import pytest

from jaxsi.data import math_datasets
from jaxsi.data import tasks as tasks_lib
from jaxsi.data import tfds_source

EXAMPLES = [
    {"uid": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2),
     "solution": f"{i} plus 2 is {i + 2}\n#### {i + 2}", "level": i % 3,
     "kind": "add", "extra": {"hint": f"count {i}"}}
    for i in range(24)
]


@pytest.fixture(name="tfds", scope="module")
def _tfds():
  return pytest.importorskip(
      "tensorflow_datasets",
      reason="TFDS sources need the [tfds] extra (tensorflow-datasets)")


@pytest.fixture(name="data_dir", scope="module")
def _data_dir(tfds, tmp_path_factory):
  del tfds
  from tests.data import _tfds_fixture  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("tfds_data"))
  _tfds_fixture.build(root, "jaxsi_tiny_qa", {
      "train": EXAMPLES,
      "test": [dict(EXAMPLES[0], uid="t0", question="What is 40 + 2?",
                    answer="42", solution="#### 42")],
      "dup": [dict(EXAMPLES[0]), dict(EXAMPLES[0], question="other")],
      "bad_level": [dict(EXAMPLES[0], kind="k", level=1)],
  })
  return root


def _by_uid(tasks):
  return {t.meta["uid"] if "uid" in t.meta else t.id: t for t in tasks}


def test_fields_map_to_tasks(data_dir):
  tasks = tfds_source.load_tfds_tasks("jaxsi_tiny_qa", data_dir=data_dir,
                                      split="train", id_field="uid",
                                      difficulty_field="level")
  assert len(tasks) == 24
  t = {t.id: t for t in tasks}["q5"]
  assert t.prompt == "What is 5 + 2?"
  assert t.answer == "7" and t.target == "#### 7"  # plain answer
  assert t.difficulty == 2 and t.category == "jaxsi_tiny_qa"
  # Unused features go to meta, text decoded from TFDS's bytes.
  assert t.meta["solution"] == "5 plus 2 is 7\n#### 7"
  assert t.meta["extra"] == {"hint": "count 5"}
  assert t.meta["source"] == "tfds jaxsi_tiny_qa:train"
  assert t.verify("7") == 1.0 and t.verify("8") == 0.0


def test_gsm8k_answer_field_nested_field_template_verifier(data_dir):
  tasks = tfds_source.load_tfds_tasks(
      "jaxsi_tiny_qa", data_dir=data_dir, split="train",
      question_field="extra/hint", answer_field="solution",
      category_field="kind", verifier="numeric",
      prompt_template="Q: {prompt}\nA:")
  t = _by_uid(tasks)["q3"]
  assert t.prompt == "Q: count 3\nA:"
  assert t.answer == "5"  # after '####'
  assert t.target == "3 plus 2 is 5\n#### 5"  # the whole field
  assert t.category == "add" and t.meta["verifier"] == "numeric"
  assert t.id == f"jaxsi_tiny_qa:train:{t.meta['record']}"
  target = tfds_source.load_tfds_tasks(
      "jaxsi_tiny_qa", data_dir=data_dir, split="train", target_field="solution",
      id_field="uid")
  assert {t.id: t for t in target}["q3"].target == "3 plus 2 is 5\n#### 5"


def test_prepared_directory_slices_limit_and_sequence(data_dir):
  path = os.path.join(data_dir, "jaxsi_tiny_qa", "1.0.0")
  source = tfds_source.TfdsTasks(path=path, split="train[:10]", id_field="uid")
  assert len(source) == 10
  assert source[-1].id == source[9].id
  assert [t.id for t in source[2:4]] == [source[2].id, source[3].id]
  with pytest.raises(IndexError, match=r"record 10 out of range \(10 records\)"):
    source[10]  # pylint: disable=pointless-statement
  test = tfds_source.load_tfds_tasks(path=path, split="test")
  assert [(t.prompt, t.answer) for t in test] == [("What is 40 + 2?", "42")]
  assert len(tfds_source.load_tfds_tasks(path=path, limit=3)) == 3
  assert tfds_source.load_tfds_tasks(path=path, limit=0) == []


def test_grain_pipeline_over_the_source(data_dir):
  pytest.importorskip("grain")
  source = tfds_source.TfdsTasks("jaxsi_tiny_qa", data_dir=data_dir,
                                 id_field="uid")
  ds = math_datasets.grain_dataset(source, batch_size=5, seed=3)
  batches = [ds[k] for k in range(len(ds))]
  assert len(batches) == 4 and all(len(b) == 5 for b in batches)  # 24 // 5
  ids = [t.id for b in batches for t in b]
  assert len(set(ids)) == 20 and set(ids) <= {f"q{i}" for i in range(24)}
  again = math_datasets.grain_dataset(source, batch_size=5, seed=3)
  assert [t.id for t in again[2]] == [t.id for t in batches[2]]


def test_missing_and_mistyped_fields_name_dataset_split_record_field(data_dir):
  kw = dict(data_dir=data_dir, split="train")
  with pytest.raises(ValueError, match=(
      r"^tfds jaxsi_tiny_qa:train\[record 0\]: missing field 'problem' "
      r"\(fields present: \['answer', 'extra', 'kind', 'level', 'question', "
      r"'solution', 'uid'\]\)")):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", question_field="problem", **kw)
  with pytest.raises(ValueError, match=(
      r"\[record 0\]: missing field 'extra/tip' \(fields present in 'extra': "
      r"\['hint'\]\)")):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", question_field="extra/tip", **kw)
  with pytest.raises(ValueError, match=(
      r"\[record 0\]: field 'extra' must be text or a number, got dict")):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", answer_field="extra", **kw)
  with pytest.raises(ValueError, match=(
      r"^tfds jaxsi_tiny_qa:bad_level\[record 0\]: field 'kind' must be an "
      r"integer, got 'k'")):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", data_dir=data_dir,
                                split="bad_level", difficulty_field="kind")
  with pytest.raises(ValueError, match=(
      r"^tfds jaxsi_tiny_qa:dup\[record 1\]: duplicate id 'q0' \(field 'uid'; "
      r"first in record 0\)")):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", data_dir=data_dir,
                                split="dup", id_field="uid")


def test_bad_sources_say_what_to_do(data_dir, tmp_path):
  with pytest.raises(ValueError, match=r"tfds jaxsi_tiny_qa:validation: Unknown "
                     r"split 'validation'"):
    tfds_source.TfdsTasks("jaxsi_tiny_qa", data_dir=data_dir, split="validation")
  with pytest.raises(FileNotFoundError, match=r"no dataset 'no_such_ds'"):
    tfds_source.TfdsTasks("no_such_ds", data_dir=data_dir)
  # A registered TFDS builder that was never prepared: nothing is downloaded.
  with pytest.raises(FileNotFoundError, match=(
      r"'math_dataset/arithmetic__add_or_sub' is not prepared in .*tfds build "
      r"math_dataset/arithmetic__add_or_sub --data_dir=.* "
      r"--file_format=array_record.*nothing is downloaded")):
    tfds_source.TfdsTasks("math_dataset/arithmetic__add_or_sub",
                          data_dir=str(tmp_path))
  assert not os.listdir(tmp_path) or not any(
      f.endswith(".array_record-00000-of-00001")
      for _, _, fs in os.walk(tmp_path) for f in fs)
  with pytest.raises(FileNotFoundError, match=r"no dataset_info.json"):
    tfds_source.TfdsTasks(path=str(tmp_path))
  with pytest.raises(ValueError, match=r"exactly one of dataset"):
    tfds_source.TfdsTasks()
  with pytest.raises(ValueError, match=r"exactly one of dataset"):
    tfds_source.TfdsTasks("jaxsi_tiny_qa", path=str(tmp_path))
  with pytest.raises(ValueError, match=r"prompt_template 'Q: \{question\}' may "
                     r"only use \{prompt\}"):
    tfds_source.TfdsTasks("jaxsi_tiny_qa", data_dir=data_dir,
                          prompt_template="Q: {question}")
  with pytest.raises(ValueError, match=r"limit must be None or >= 0"):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", data_dir=data_dir, limit=-1)
  with pytest.raises(ValueError, match=r"no tasks in tfds jaxsi_tiny_qa:"
                     r"train\[:0\]"):
    tfds_source.load_tfds_tasks("jaxsi_tiny_qa", data_dir=data_dir,
                                split="train[:0]")


def test_missing_tfds_is_a_clear_import_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"pip install 'jaxsi\[tfds\]'"):
    tfds_source.TfdsTasks("anything")


def test_tfds_task_generator_draws_and_splits(data_dir):
  fmt = dict(dataset="jaxsi_tiny_qa", data_dir=data_dir, id_field="uid")
  a = tasks_lib.make_tasks("tfds", 6, difficulty=0, seed=1, **fmt)
  b = tasks_lib.make_tasks("tfds", 6, difficulty=0, seed=1, **fmt)
  c = tasks_lib.make_tasks("tfds", 6, difficulty=0, seed=2, **fmt)
  assert [t.id for t in a] == [t.id for t in b]  # deterministic in seed
  assert len({t.id for t in a}) == 6  # without replacement
  assert [t.id for t in a] != [t.id for t in c]
  assert len(tasks_lib.make_tasks("tfds", 24, difficulty=0, seed=0, **fmt)) == 24
  # With a difficulty feature, a level draws only its records (i % 3 == 1).
  ones = tasks_lib.make_tasks("tfds", 8, difficulty=1, seed=0,
                              difficulty_field="level", **fmt)
  assert sorted(int(t.id[1:]) for t in ones) == [1, 4, 7, 10, 13, 16, 19, 22]
  with pytest.raises(ValueError, match=r"9 tasks requested but tfds "
                     r"jaxsi_tiny_qa:train has 8 records of difficulty 1"):
    tasks_lib.make_tasks("tfds", 9, difficulty=1, seed=0,
                         difficulty_field="level", **fmt)
  with pytest.raises(ValueError, match=r"task 'tfds': name the split in its "
                     r"format options.*\(got \['split'\]\)"):
    tasks_lib.make_tasks("tfds", 2, difficulty=0, split="train")
  train, test = tasks_lib.make_train_test("tfds", n_train=16, n_test=4,
                                          difficulty=[0], seed=0, **fmt)
  assert len(train) == 16 and len(test) == 4
  assert not {t.key for t in train} & {t.key for t in test}
