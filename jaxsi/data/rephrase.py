"""Equivalent rephrasings of synthetic problems (same answer, other prompt).

Co-Reward (Zhang et al. 2025, arXiv:2508.00410, §3) pairs every problem q
with an analogous rephrasing q' whose answer is the same; with real data an
LLM paraphrases, on the synthetic tasks the rephrasing is exact:

* ``addition``: ``a+b=`` → ``b+a=`` (same width / padding / operand order
  flags as the task's own prompt);
* ``multiplication``: ``a*b=`` → ``b*a=``;
* ``countdown``: the numbers listed in reverse order;
* ``pair_sum``: the digits listed in reverse order.

Deterministic and purely additive: it reads the task (``meta``) and draws no
random numbers, so no generator's outputs or random stream change.
"""

from __future__ import annotations

from jaxsi.data import synthetic
from jaxsi.data.registry import Task

REPHRASABLE = ("addition", "multiplication", "countdown", "pair_sum")


def _operands(task: Task):
  ops = (task.meta or {}).get("operands")
  if not ops or len(ops) != 2:
    raise ValueError(f"rephrase_prompt: task {task.id!r} ({task.category}) has"
                     " no meta['operands'] = [a, b]")
  return int(ops[0]), int(ops[1])


def rephrase_prompt(task: Task) -> str:
  """The prompt of an equivalent problem (see the module docstring).

  Raises:
    ValueError: a category without a rephrasing, or a task whose ``meta``
      lacks what the rephrasing reads (naming the task id).
  """
  meta = task.meta or {}
  pad = bool(meta.get("pad", False))
  if task.category == "addition":
    a, b = _operands(task)
    prompt, _ = synthetic.addition_text(
        b, a, width=int(task.difficulty), pad=pad,
        reverse_operands=bool(meta.get("reverse_operands", False)))
    return prompt
  if task.category == "multiplication":
    a, b = _operands(task)
    da, db = len(task.prompt.split("*")[0]), len(task.prompt.split("*")[1].rstrip("="))
    prompt, _ = synthetic.multiplication_text(b, a, widths=(db, da), pad=pad)
    return prompt
  if task.category == "countdown":
    if "numbers" not in meta or "target" not in meta:
      raise ValueError(f"rephrase_prompt: countdown task {task.id!r} has no"
                       " meta['numbers'] / meta['target']")
    nums = list(meta["numbers"])[::-1]
    return ",".join(str(x) for x in nums) + f"->{int(meta['target'])}:"
  if task.category == "pair_sum":
    if "numbers" not in meta or "target" not in meta:
      raise ValueError(f"rephrase_prompt: pair_sum task {task.id!r} has no"
                       " meta['numbers'] / meta['target']")
    shown = "".join(str(d) for d in list(meta["numbers"])[::-1])
    return f"{int(meta['target'])}:{shown}="
  raise ValueError(f"rephrase_prompt: no rephrasing for category"
                   f" {task.category!r} (task {task.id!r}); rephrasable:"
                   f" {REPHRASABLE}")


def rephrase(task: Task) -> Task:
  """``task`` with its prompt rephrased (same answer, target and verifier)."""
  return task.replace(id=task.id + "/rephrased", prompt=rephrase_prompt(task))


__all__ = ["REPHRASABLE", "rephrase", "rephrase_prompt"]
