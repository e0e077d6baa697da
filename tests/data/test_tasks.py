"""Tests for jaxsi.data.registry, jaxsi.data.tasks and jaxsi.data.synthetic."""

import dataclasses

import pytest

from jaxsi.data import registry
from jaxsi.data import synthetic
from jaxsi.data import tasks as tasks_lib
from jaxsi.data.tasks import Task, make_tasks, make_train_test, split_tasks
from jaxsi.rewards import answers, verifiers
from jaxsi.rewards import expression as expr_lib

FORMATS = {
    "addition": [{}, {"scratchpad": True}, {"reverse": True},
                 {"reverse": True, "pad": True, "scratchpad": True},
                 {"pad": True}, {"exact_digits": False, "marker": True},
                 {"reverse": True, "reverse_operands": True, "pad": True}],
    "multiplication": [{}, {"scratchpad": True}, {"reverse": True, "pad": True},
                       {"digits_b": 1, "scratchpad": True}],
    "expression": [{}, {"scratchpad": True}, {"ops": "+-*/"}],
    "countdown": [{}, {"scratchpad": True}, {"require_all": True}],
}
CASES = [(name, fmt) for name, fmts in FORMATS.items() for fmt in fmts]


@pytest.mark.parametrize("name,fmt", CASES)
def test_targets_verify_and_generation_is_deterministic(name, fmt):
  for difficulty in (2, 4):
    a = make_tasks(name, 40, difficulty=difficulty, seed=3, **fmt)
    b = make_tasks(name, 40, difficulty=difficulty, seed=3, **fmt)
    c = make_tasks(name, 40, difficulty=difficulty, seed=4, **fmt)
    assert a == b
    assert [t.prompt for t in a] != [t.prompt for t in c]
    assert len({t.id for t in a}) == 40
    for t in a:
      assert t.category == name and t.difficulty == difficulty
      assert t.verify(t.target) == 1.0, t
      assert t.verify("") == 0.0
      if fmt.get("scratchpad"):
        steps = answers.split_steps(t.target)
        assert steps and all(verifiers.step_correctness(t.target)), t.target
        assert answers.extract_marked(t.target) is not None


def test_addition_formats_hand_checked():
  t = make_tasks("addition", 1, difficulty=3, seed=0)[0]
  a, b = t.meta["operands"]
  assert t.prompt == f"{a}+{b}=" and t.target == str(a + b) == t.answer
  plain = Task("x", "123+456=", "579", "addition", 3, "579")
  assert plain.verify("579") == 1.0 and plain.verify("578") == 0.0
  # Scratchpad: column steps with carries, least significant first.
  t = make_tasks("addition", 1, difficulty=3, seed=0, scratchpad=True)[0]
  a, b = t.meta["operands"]
  lines = t.target.split("\n")
  assert len(lines) == 4 and lines[-1] == f"#### {a + b}"
  assert lines[0].startswith(f"<s>{a % 10}+{b % 10}+0=")
  # Reversed + padded: '0046' written as '6400'.
  t = make_tasks("addition", 1, difficulty=2, seed=0, reverse=True, pad=True)[0]
  a, b = t.meta["operands"]
  assert t.target == str(a + b).zfill(3)[::-1]
  assert t.meta["reverse"] and t.answer == str(a + b)
  assert t.verify(str(a + b)) == float(str(a + b) == str(a + b)[::-1])


def test_multiplication_and_addition_text_hand_checked():
  prompt, target = synthetic.multiplication_text(123, 45, widths=(3, 2),
                                                 scratchpad=True, marker=True)
  assert prompt == "123*45="
  assert target == ("<s>123*5=615</s>\n<s>123*40=4920</s>\n"
                    "<s>615+4920=5535</s>\n#### 5535")
  t = Task("m", prompt, "5535", "multiplication", 3, target)
  assert t.verify(target) == 1.0 and t.verify(target.replace("5535", "5536")) == 0.0
  prompt, target = synthetic.addition_text(58, 7, width=2, scratchpad=True,
                                           reverse=True, pad=True, marker=True)
  assert prompt == "58+07="
  assert target == "<s>8+7+0=15</s>\n<s>5+0+1=6</s>\n#### 560"
  t = Task("a", prompt, "65", "addition", 2, target, meta={"reverse": True})
  assert t.verify(target) == 1.0 and t.verify("#### 65") == 0.0
  assert t.verify("560") == 1.0 and t.verify("56") == 1.0  # '65' reversed
  prompt, target = synthetic.addition_text(58, 7, width=2, reverse=True,
                                           pad=True, reverse_operands=True)
  assert (prompt, target) == ("85+70=", "560")


def test_expression_prompt_evaluates_to_answer():
  for t in make_tasks("expression", 50, difficulty=5, seed=1, ops="+-*/"):
    value = expr_lib.evaluate(expr_lib.parse(t.prompt[:-1]), integer_only=True,
                              nonnegative=True)
    assert str(value) == t.answer
    assert sum(t.prompt.count(o) for o in "+-*/") == 5


def test_countdown_instances_solvable_and_prompt_consistent():
  for t in make_tasks("countdown", 50, difficulty=4, seed=2):
    parsed = verifiers.parse_countdown_prompt(t.prompt)
    assert parsed == (t.meta["numbers"], t.meta["target"])
    assert sorted(expr_lib.numbers(expr_lib.parse(t.answer))) == sorted(
        t.meta["numbers"])
    # The verifier also works from the prompt alone (e.g. JSONL tasks).
    bare = dataclasses.replace(t, meta={})
    assert bare.verify(t.target) == 1.0


def test_difficulty_changes_problem_size():
  small = make_tasks("addition", 10, difficulty=2, seed=0)
  big = make_tasks("addition", 10, difficulty=6, seed=0)
  assert all(len(t.prompt) == 6 for t in small)
  assert all(len(t.prompt) == 14 for t in big)
  mixed = make_tasks("addition", 30, difficulty=[1, 3], seed=0)
  assert {t.difficulty for t in mixed} == {1, 3}
  assert mixed == make_tasks("addition", 30, difficulty=[1, 3], seed=0)


def test_registry_errors():
  with pytest.raises(ValueError, match="unknown task 'nope'.*addition"):
    make_tasks("nope", 3, difficulty=1)
  with pytest.raises(ValueError, match=r"unknown format option\(s\) \['bogus'\]"):
    make_tasks("addition", 3, difficulty=1, bogus=True)
  with pytest.raises(ValueError, match="difficulty must be an int in"):
    make_tasks("countdown", 3, difficulty=1)
  with pytest.raises(ValueError, match="n must be"):
    make_tasks("add", -1, difficulty=1)
  with pytest.raises(ValueError, match="already registered"):
    tasks_lib.register_task("addition", lambda n, **k: [])
  assert make_tasks("add", 2, difficulty=1) == make_tasks("addition", 2,
                                                          difficulty=1)


def test_registry_is_re_exported_and_holds_the_built_ins():
  for name in ("Task", "problem_key", "register_task", "task_names",
               "get_generator"):
    assert getattr(tasks_lib, name) is getattr(registry, name), name
  assert set(registry.task_names()) >= {
      "addition", "multiplication", "expression", "countdown", "pair_sum",
      "addition_self_verify"}
  assert registry.get_generator("add") is synthetic.addition
  assert registry.get_generator("add_sv") is tasks_lib.addition_self_verify


def test_unique_and_small_spaces():
  ts = make_tasks("addition", 50, difficulty=1, seed=0, unique=True)
  assert len({t.key for t in ts}) == 50 and len({t.id for t in ts}) == 50
  with pytest.raises(ValueError, match="distinct problems"):
    make_tasks("addition", 101, difficulty=1, seed=0, unique=True)


def test_split_tasks_disjoint_with_duplicates():
  ts = make_tasks("addition", 200, difficulty=1, seed=0)  # many duplicates
  train, test = split_tasks(ts, test_fraction=0.3, seed=0)
  assert len(train) + len(test) == 200
  assert not {t.key for t in train} & {t.key for t in test}
  assert split_tasks(ts, test_fraction=0.3, seed=0) == (train, test)
  with pytest.raises(ValueError, match="exactly one"):
    split_tasks(ts)
  with pytest.raises(ValueError, match="distinct problems"):
    split_tasks(ts, n_test=10_000)


def test_make_train_test_disjoint():
  train, test = make_train_test("addition", n_train=80, n_test=20,
                                difficulty=1, seed=0)
  assert len(train) == 80 and len(test) == 20
  assert not {t.key for t in train} & {t.key for t in test}
  assert len({t.key for t in test}) == 20
  assert len({t.id for t in train}) == 80
  # Length generalisation split: train on 2 digits, test on 3.
  train, test = make_train_test("addition", n_train=10, n_test=10,
                                difficulty=2, test_difficulty=3, seed=0)
  assert {t.difficulty for t in train} == {2} and {t.difficulty for t in test} == {3}


def test_task_is_hashable_and_frozen():
  t = make_tasks("countdown", 1, difficulty=3, seed=0)[0]
  assert hash(t) == hash(dataclasses.replace(t))
  with pytest.raises(dataclasses.FrozenInstanceError):
    t.prompt = "x"  # type: ignore[misc]
  assert Task(**t.to_dict()) == t


def test_pair_sum_unique_pair_and_verifier_hand_checked():
  ts = make_tasks("pair_sum", 60, difficulty=5, seed=1)
  assert ts == make_tasks("two_sum", 60, difficulty=5, seed=1)
  for t in ts:
    nums, target = t.meta["numbers"], t.meta["target"]
    assert len(nums) == 5 == len(set(nums))
    assert t.prompt == f"{target}:{''.join(map(str, nums))}="
    pairs = [(a, b) for i, a in enumerate(nums) for b in nums[i + 1:]
             if a + b == target]
    assert pairs == [(int(t.target[0]), int(t.target[1]))]
    assert t.verify(t.target) == 1.0 and t.verify(t.target[::-1]) == 1.0
  hand = tasks_lib.Task(id="h", prompt="13:27495=", answer="49",
                        category="pair_sum", difficulty=5, target="49",
                        meta={"numbers": [2, 7, 4, 9, 5], "target": 13})
  for text, want in (("49", 1.0), ("94", 1.0), (" 49\n", 1.0), ("27", 0.0),
                     ("58", 0.0), ("76", 0.0), ("4", 0.0), ("499", 0.0),
                     ("4+9", 0.0), ("", 0.0)):
    assert hand.verify(text) == want, text
  # "58" sums to 13 but 8 is not listed; "76" sums to 13 with 6 not listed.
  twice = hand.replace(meta={"numbers": [6, 1, 3], "target": 12})
  assert twice.verify("66") == 0.0  # one listed 6 cannot be used twice
  assert verifiers.canonical_answer(hand, "94") == "49"
  assert verifiers.canonical_answer(hand, "x") is None
  with pytest.raises(ValueError, match="difficulty must be an int in"):
    make_tasks("pair_sum", 3, difficulty=2)
