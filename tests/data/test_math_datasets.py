"""GSM8K / MATH loaders on fixture files written by the test (JSONL, parquet)."""

import json

import pytest

from jaxsi.data import chat_templates as ct
from jaxsi.data import math_datasets as md

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then "
                 "she sold half as many clips in May. How many clips did she "
                 "sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold "
               "48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
               "#### 72"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?",
     "answer": "1,200*2 = <<1200*2=2400>>2,400\n#### 2,400"},
]
MATH = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?",
     "solution": "We get $\\frac{3}{6} + \\frac{2}{6} = \\boxed{\\frac{5}{6}}$.",
     "level": "Level 2", "type": "Prealgebra"},
    {"problem": "Solve $x^2 = 4$ for $x > 0$.",
     "solution": "So $x = \\boxed{2}$.", "level": "Level 1",
     "type": "Algebra"},
    {"problem": "Find the set $\\{x : x^2 = 1\\}$.",
     "solution": "It is $\\boxed{\\{-1, 1\\}}$.", "answer": "\\{-1,1\\}",
     "subject": "Algebra", "level": 4, "unique_id": "test/algebra/7.json"},
]


def _write(tmp_path, name, records):
  md.write_jsonl(records, tmp_path / name)
  return tmp_path / name


def test_gsm8k_jsonl(tmp_path):
  _write(tmp_path, "train.jsonl", GSM8K)
  tasks = md.load_gsm8k(tmp_path, split="train")
  assert [t.answer for t in tasks] == ["72", "2400"]
  t = tasks[0]
  assert t.category == "gsm8k" and t.meta["verifier"] == "math_verify"
  assert t.prompt == GSM8K[0]["question"] + "\n" + md.BOXED_INSTRUCTION
  assert "<<" not in t.target and t.target.endswith("#### 72")
  assert t.id == "gsm8k/train.jsonl:0"
  assert t.verify("... so the answer is \\boxed{72}.") == 1.0
  assert t.verify("#### 72") == 1.0
  assert t.verify("\\boxed{71}") == 0.0
  assert tasks[1].verify("They sell \\boxed{2400} pens.") == 1.0
  assert md.load_gsm8k(tmp_path / "train.jsonl", limit=1) == tasks[:1]


def test_gsm8k_parquet_hub_layout_and_chat_prompt(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  (tmp_path / "main").mkdir()
  pq.write_table(pa.Table.from_pylist(GSM8K),
                 tmp_path / "main" / "test-00000-of-00001.parquet")
  tasks = md.load_gsm8k(tmp_path, split="test", chat_template="qwen2.5",
                        system_prompt="Be exact.")
  assert [t.answer for t in tasks] == ["72", "2400"]
  assert tasks[0].prompt == ct.get_template("qwen2.5").render(
      [{"role": "system", "content": "Be exact."},
       {"role": "user", "content": GSM8K[0]["question"] + "\n" +
        md.BOXED_INSTRUCTION}], add_generation_prompt=True)
  assert tasks[0].prompt.endswith("<|im_start|>assistant\n")


def test_math_jsonl_levels_and_answers(tmp_path):
  _write(tmp_path, "test.jsonl", MATH)
  tasks = md.load_math(tmp_path)
  assert [t.answer for t in tasks] == ["\\frac{5}{6}", "2", "\\{-1,1\\}"]
  assert [t.difficulty for t in tasks] == [2, 1, 4]
  assert tasks[2].id == "test/algebra/7.json"
  assert tasks[0].verify("The sum is \\boxed{5/6}.") == 1.0
  assert tasks[0].verify("The sum is \\boxed{0.8333}.") == 0.0
  assert tasks[2].verify("\\boxed{\\{1, -1\\}}") == 1.0
  assert [t.answer for t in md.load_math(tmp_path, levels=[1, 2])] == [
      "\\frac{5}{6}", "2"]
  assert len(md.load_math(tmp_path, subjects=["Algebra"])) == 2


def test_missing_and_malformed_files_are_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match="main/train-00000-of-00001.parquet"):
    md.load_gsm8k(tmp_path / "nowhere", split="train")
  with pytest.raises(FileNotFoundError, match="MATH: put train.jsonl"):
    md.load_math(tmp_path, split="test")
  _write(tmp_path, "train.jsonl", [{"question": "q", "answer": "no marker"}])
  with pytest.raises(ValueError, match="train.jsonl:record 0.*####"):
    md.load_gsm8k(tmp_path)
  (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n{oops\n')
  with pytest.raises(ValueError, match="bad.jsonl:2"):
    md.read_records(tmp_path / "bad.jsonl")
  _write(tmp_path, "x.jsonl", [{"question": "q"}])
  with pytest.raises(ValueError, match="'answer'"):
    md.load_gsm8k(tmp_path / "x.jsonl")


def test_grain_pipeline_is_deterministic_and_reshuffles(tmp_path):
  pytest.importorskip("grain")
  _write(tmp_path, "test.jsonl", MATH * 3)  # 9 tasks
  tasks = md.load_math(tmp_path)
  ds = md.grain_dataset(tasks, batch_size=4, seed=3, num_epochs=2,
                        transform=lambda t: t.id)
  assert len(ds) == 4  # 2 full batches per epoch, tail dropped
  batches = [ds[i] for i in range(len(ds))]
  assert all(len(b) == 4 for b in batches)
  again = md.grain_dataset(tasks, batch_size=4, seed=3, num_epochs=2,
                           transform=lambda t: t.id)
  assert [again[i] for i in range(4)] == batches  # resumable by index
  plain = md.grain_dataset(tasks, batch_size=4, shuffle=False, num_epochs=1)
  assert [t.id for t in plain[0]] == [t.id for t in tasks[:4]]
  assert sorted(batches[0] + batches[1]) != sorted(batches[2] + batches[3]) or (
      batches[:2] != batches[2:])
  with pytest.raises(ValueError, match="batch_size"):
    md.grain_dataset(tasks, batch_size=10)
  json.dumps(batches)  # plain strings
