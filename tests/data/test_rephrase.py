"""Equivalent rephrasings of synthetic problems (Co-Reward's q')."""

from __future__ import annotations

import pytest

from jaxsi.data import rephrase
from jaxsi.data import tasks as tasks_lib


def test_addition_swaps_operands_and_keeps_the_answer():
  (t,) = tasks_lib.make_tasks("addition", 1, difficulty=2, seed=0)
  a, b = t.meta["operands"]
  assert t.prompt == f"{a}+{b}="
  assert rephrase.rephrase_prompt(t) == f"{b}+{a}="
  r = rephrase.rephrase(t)
  assert r.answer == t.answer and r.target == t.target and r.verify(t.target) == 1.0
  (p,) = tasks_lib.make_tasks("addition", 1, difficulty=3, seed=0, pad=True,
                              exact_digits=False, reverse_operands=True)
  a, b = p.meta["operands"]
  assert rephrase.rephrase_prompt(p) == f"{b:03d}"[::-1] + "+" + f"{a:03d}"[::-1] + "="


def test_other_categories():
  (m,) = tasks_lib.make_tasks("multiplication", 1, difficulty=2, seed=0, digits_b=1)
  a, b = m.meta["operands"]
  assert rephrase.rephrase_prompt(m) == f"{b}*{a}="
  (c,) = tasks_lib.make_tasks("countdown", 1, difficulty=3, seed=0)
  nums = c.meta["numbers"]
  assert rephrase.rephrase_prompt(c) == (",".join(map(str, nums[::-1]))
                                         + f"->{c.meta['target']}:")
  (s,) = tasks_lib.make_tasks("pair_sum", 1, difficulty=4, seed=0)
  out = rephrase.rephrase_prompt(s)
  assert out.split(":")[0] == s.prompt.split(":")[0]
  assert out.split(":")[1].rstrip("=") == s.prompt.split(":")[1].rstrip("=")[::-1]
  assert s.verify(s.target) == 1.0


def test_no_rephrasing_is_refused_by_name():
  (e,) = tasks_lib.make_tasks("expression", 1, difficulty=1, seed=0)
  with pytest.raises(ValueError, match="no rephrasing for category 'expression'"):
    rephrase.rephrase_prompt(e)
  (t,) = tasks_lib.make_tasks("addition", 1, difficulty=1, seed=0)
  with pytest.raises(ValueError, match="operands"):
    rephrase.rephrase_prompt(t.replace(meta={}))

