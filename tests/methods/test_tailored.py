"""Tailored learning: the teacher is shown the student's own mistakes and corrects them."""

import dataclasses
from typing import Any

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import tailored
from jaxsi.training import round_context


@dataclasses.dataclass
class FakeCtx:
  """A round context whose "models" are answer tables.

  ``model`` names who samples ('student' or a teacher name). The student
  answers ``student[task_id]`` (default: the target). The teacher answers the
  target when its prompt ends with '|' (it was shown something), else
  ``teacher_plain`` (default the target). Every call is logged.
  """

  model: Any = "student"
  params: Any = "student_params"
  generated: list = dataclasses.field(default_factory=list)
  rng: Any = dataclasses.field(default_factory=lambda: jax.random.key(0))
  student: dict = dataclasses.field(default_factory=dict)
  teacher_plain: dict = dataclasses.field(default_factory=dict)
  calls: list = dataclasses.field(default_factory=list)

  def sample(self, tasks, *, n, temperature=None, strategy=None, params=None, rng=None):
    self.calls.append((self.model, self.params, [t.prompt for t in tasks], n))
    texts = []
    for t in tasks:
      if self.model == "student":
        out = self.student.get(t.id, t.target)
      elif t.prompt.endswith("|"):
        out = t.target
      else:
        out = self.teacher_plain.get(t.id, t.target)
      texts += [out] * n
    correct = np.asarray([tasks[i // n].verify(x) >= 1 for i, x in enumerate(texts)])
    return round_context.Samples(traj=None, rewards=correct[:, None].astype(np.float32),
                                 reward_names=("correct",), texts=texts, correct=correct,
                                 answers=texts, tasks=list(tasks), n=n)


def _tasks():
  # reverse=True: the target is the answer written least-significant digit first.
  return tasks_lib.make_tasks("addition", 3, difficulty=2, seed=0, reverse=True)


def _wrong(target):
  return ("1" if target[0] != "1" else "2") + target[1:]


def test_correction_prompt_and_perturb():
  assert tailored.correction_prompt("12+34=", "64") == "12+34=64|"
  assert tailored.correction_prompt("12+34=", "64", answer="46") == "12+34=64|46|"
  rng = np.random.default_rng(0)
  for target in ("46", "901", "7"):
    for _ in range(20):
      w = tailored.perturb(target, rng)
      # exactly one digit differs, lengths equal
      assert len(w) == len(target)
      assert sum(a != b for a, b in zip(w, target)) == 1
  assert tailored.perturb("ab", rng) == "ab0"


def test_teacher_examples_layout():
  ex = [dict(prompt="12+34=", completion="64", task_id="t0")]
  out = tailored.teacher_examples(ex, seed=3, corrections_per_example=2)
  assert out[0] == dict(prompt="12+34=", completion="64", task_id="t0")
  assert [e["task_id"] for e in out[1:]] == ["t0/correction0", "t0/correction1"]
  for e in out[1:]:
    # prompt = question + a one-digit-wrong attempt + '|', completion = the target
    assert e["prompt"].startswith("12+34=") and e["prompt"].endswith("|")
    wrong = e["prompt"][len("12+34="):-1]
    assert wrong != "64" and len(wrong) == 2 and e["completion"] == "64"
  shown = tailored.teacher_examples(ex, seed=3, show_answer=True)
  assert shown[1]["prompt"].endswith("|64|")
  with pytest.raises(ValueError, match="corrections_per_example"):
    tailored.teacher_examples(ex, corrections_per_example=-1)


def test_teacher_sees_only_the_mistakes_and_student_trains_on_plain_prompt():
  a, b, c = _tasks()
  ctx = FakeCtx(student={b.id: _wrong(b.target), c.id: _wrong(c.target)})
  m = tailored.tailored(teacher=("teacher_model", "teacher_params"))
  records = m.sample_chunk(ctx, [a, b, c], {})
  # call 1: the student's exam on all three; call 2: the teacher on b and c only,
  # each prompt = question + the student's wrong attempt + '|'.
  assert ctx.calls[0][:3] == ("student", "student_params", [a.prompt, b.prompt, c.prompt])
  assert ctx.calls[1][:3] == ("teacher_model", "teacher_params",
                              [b.prompt + _wrong(b.target) + "|",
                               c.prompt + _wrong(c.target) + "|"])
  corr = [r for r in records if r["kind"] == "correction"]
  assert [r["prompt"] for r in corr] == [b.prompt, c.prompt]
  assert [r["mistake"] for r in corr] == [_wrong(b.target), _wrong(c.target)]
  examples, pairs, metrics = m.select(records, {}, None)
  assert examples == [dict(prompt=b.prompt, completion=b.target, task_id=b.id),
                      dict(prompt=c.prompt, completion=c.target, task_id=c.id)]
  assert pairs == []
  # 1 of 3 attempts right; 2 mistakes, 2 queries, both corrections verify.
  assert metrics["sample_accuracy"] == pytest.approx(1 / 3)
  assert (metrics["mistakes"], metrics["teacher_queries"], metrics["kept"]) == (2, 2, 2)
  assert metrics["correction_success"] == pytest.approx(1.0)
  # the teacher's samples are not the chunk's stored trajectories
  assert ctx.generated == []


def test_no_mistakes_no_teacher_call():
  ctx = FakeCtx()
  m = tailored.tailored(teacher=("t", "p"))
  records = m.sample_chunk(ctx, _tasks(), {})
  assert len(ctx.calls) == 1 and all(r["kind"] == "attempt" for r in records)
  assert m.select(records, {}, None)[0] == []


def test_select_hand_records_verify_and_cpo_pairs():
  recs = [
      dict(kind="attempt", task_id="a", prompt="pa", completion="12", correct=False),
      dict(kind="attempt", task_id="b", prompt="pb", completion="77", correct=True),
      dict(kind="attempt", task_id="c", prompt="pc", completion="30", correct=False),
      dict(kind="correction", task_id="a", prompt="pa", completion="46", correct=True,
           mistake="12"),
      dict(kind="correction", task_id="a", prompt="pa", completion="46", correct=True,
           mistake="12"),                                     # duplicate: kept once
      dict(kind="correction", task_id="c", prompt="pc", completion="31", correct=False,
           mistake="30"),                                     # wrong correction
  ]
  ex, pairs, m = tailored.select_tailored(recs)
  assert ex == [dict(prompt="pa", completion="46", task_id="a")] and pairs == []
  # 3 queries, 2 of them verify -> 2/3; accuracy 1/3; two mistakes
  assert m["correction_success"] == pytest.approx(2 / 3)
  assert m["sample_accuracy"] == pytest.approx(1 / 3) and m["mistakes"] == 2
  ex, _, _ = tailored.select_tailored(recs, verify_corrections=False)
  assert [e["completion"] for e in ex] == ["46", "31"]
  ex, pairs, m = tailored.select_tailored(recs, reflection="cpo")
  assert ex == [] and pairs == [dict(prompt="pa", task_id="a", chosen="46",
                                     rejected="12", weight=1.0)]
  ex, _, _ = tailored.select_tailored(recs, keep_correct_attempts=True)
  assert [e["completion"] for e in ex] == ["46", "77"]


def test_untailored_control_same_number_of_plain_queries():
  tasks = tasks_lib.make_tasks("addition", 6, difficulty=2, seed=1, reverse=True)
  wrong = {t.id: _wrong(t.target) for t in tasks[:2]}
  ctx = FakeCtx(student=wrong)
  m = tailored.tailored(teacher=("t", "p"), focus="random", teacher_prompt="plain")
  records = m.sample_chunk(ctx, tasks, {})
  asked = ctx.calls[1][2]
  # as many questions as mistakes (2), plain prompts (no '|'), distinct tasks
  assert len(asked) == 2 and len(set(asked)) == 2
  assert all(not p.endswith("|") and p in [t.prompt for t in tasks] for p in asked)
  assert all(r["mistake"] is None for r in records if r["kind"] == "correction")
  # failures asked without their attempts
  ctx = FakeCtx(student=wrong)
  tailored.tailored(teacher=("t", "p"), teacher_prompt="plain").sample_chunk(ctx, tasks, {})
  assert ctx.calls[1][2] == [tasks[0].prompt, tasks[1].prompt]


def test_show_answer_and_max_mistakes():
  a, = _tasks()[:1]
  ctx = FakeCtx(student={a.id: _wrong(a.target)})
  # n = 2 identical wrong attempts -> one distinct mistake -> one query
  m = tailored.tailored(teacher=("t", "p"), show_answer=True,
                        rollout=spec.RolloutSpec(n=2, temperature=1.0), max_mistakes=2)
  m.sample_chunk(ctx, [a], {})
  assert ctx.calls[1][2] == [a.prompt + _wrong(a.target) + "|" + a.answer + "|"]


def test_cpo_method_objective():
  m = tailored.tailored(reflection="cpo", cpo_beta=0.2)
  assert m.pairwise and m.objective == "cpo"
  assert m.objective_settings == dict(beta=0.2, cpo_alpha=1.0)
  assert tailored.tailored().objective == spec.SFT and tailored.tailored().train_from == "current"


@pytest.mark.parametrize("kw, match", [
    (dict(focus="all"), "focus"),
    (dict(teacher_prompt="x"), "teacher_prompt"),
    (dict(reflection="triplet"), "reflection"),
    (dict(teacher_data="none"), "teacher_data"),
    (dict(focus="random"), "focus='random'"),
    (dict(show_answer=True, teacher_prompt="plain"), "show_answer"),
    (dict(reflection="cpo", teacher_prompt="plain"), "reflection='cpo'"),
    (dict(keep_correct_attempts=True, reflection="cpo"), "keep_correct_attempts"),
    (dict(max_mistakes=0), "max_mistakes"),
    (dict(teacher_steps=0), "teacher_steps"),
    (dict(teacher="model"), "teacher must be"),
])
def test_bad_options(kw, match):
  with pytest.raises(ValueError, match=match):
    tailored.tailored(**kw)
