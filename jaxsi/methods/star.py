"""STaR: Self-Taught Reasoner, with rationalisation (Zelikman et al. 2022).

"STaR: Bootstrapping Reasoning With Reasoning" (arXiv:2203.14465), Alg. 1.
Each outer iteration n:

1. generate a rationale + answer (r̂_i, ŷ_i) for every problem x_i with the
   current model M_{n-1} (greedy decoding in the paper);
2. rationalisation: for every problem answered wrongly, generate again with
   the correct answer y_i given as a hint, (r̂ʳ_i, ŷʳ_i) ← M_{n-1}(x_i + hint);
3. keep D_n = {(x_i, r̂_i, y_i) : ŷ_i = y_i} ∪ {(x_i, r̂ʳ_i, y_i) : ŷ_i ≠ y_i ∧
   ŷʳ_i = y_i} — the rationalised ones are trained **without the hint**
   (as if generated from x_i alone);
4. M_n ← fine-tune the **original** model M on D_n (line 7), with 20% more
   training steps each iteration (§3.3).

Hints: the paper shows the answer in the few-shot prompt; a model trained
from scratch must first learn to read a hint, so ``hint_warm_start`` adds a
hinted copy of each labeled example to the warm start (the analogue of the
hinted few-shot exemplars). The default hint is ``' (answer 46)'`` appended to
the prompt; for reversed-digit formats the hint shows the target as written.

As a composition: ``greedy sample → verifier → (failures: hinted sample →
verifier) → keep_correct → SFT from base (steps × 1.2^n)``.
"""

from __future__ import annotations

from typing import Any, Callable

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts


def answer_hint(task: Any) -> str:
  """The default rationalisation hint: the target as the model should write it."""
  shown = (task.target or task.answer).split("\n")[-1]
  return f"[{shown}]"


def hinted_prompt(task: Any, hint_fn: Callable[[Any], str]) -> str:
  """The prompt with the hint inserted before its final ``=``/``:`` (or appended)."""
  p = task.prompt
  if p and p[-1] in "=:":
    return p[:-1] + hint_fn(task) + p[-1]
  return p + hint_fn(task)


def star(*, rationalize: bool = True,
         rollout: spec.RolloutSpec = spec.RolloutSpec(n=1, temperature=0.0),
         hint_fn: Callable[[Any], str] = answer_hint,
         hint_warm_start: bool = True, steps_growth: float = 1.2,
         include_labeled: bool = True, max_per_prompt: int = 1,
         name: str = "star") -> spec.RoundsMethod:
  """STaR (Zelikman et al. 2022, Alg. 1) as a ``RoundsMethod``.

  Args:
    rationalize: regenerate failures with the answer as a hint (Alg. 1
      lines 4–6); off = "STaR without rationalisation".
    rollout: the shared sampling settings of both generations: ``n``
      samples per problem at ``temperature`` (paper: 1, greedy = temperature
      0); the completion budget is ``RoundsConfig.max_new_tokens``.
    hint_fn: task → hint text inserted into the prompt.
    hint_warm_start: add hinted copies of the labeled examples to the warm
      start so the model can use hints (see module docstring).
    steps_growth: M-step length grows by this factor per round (paper: 1.2).
    include_labeled: add the labeled examples to each M-step.
    max_per_prompt: kept rationales per problem.
    name: method name.

  Returns:
    The method: base restart, no accumulation.
  """
  common.check_rollout("star", rollout)

  def warm_start(labeled):
    ex = common.task_examples(labeled)
    if rationalize and hint_warm_start:
      ex += [dict(prompt=hinted_prompt(t, hint_fn), completion=t.target,
                  task_id=f"{t.id}/hinted") for t in labeled]
    return ex

  def sample_chunk(ctx, tasks, plan):
    del plan
    recs = common.sample_records(ctx, tasks, rollout, rationalized=False)
    if not rationalize:
      return recs
    failed = [t for t in tasks
              if not any(r["correct"] for r in recs if r["task_id"] == t.id)]
    if not failed:
      return recs
    hinted = [t.replace(prompt=hinted_prompt(t, hint_fn)) for t in failed]
    hrecs = common.sample_records(ctx, hinted, rollout, rationalized=True)
    plain = {t.id: t.prompt for t in failed}
    for r in hrecs:
      r["hinted_prompt"] = r["prompt"]
      r["prompt"] = plain[r["task_id"]]     # trained without the hint
    return recs + hrecs

  def select(records, plan, ctx):
    del plan, ctx
    direct = [r for r in records if not r["rationalized"]]
    examples = common.keep_correct(records, max_per_prompt=max_per_prompt)
    direct_ok = {(r["task_id"], r["completion"]) for r in direct if r["correct"]}
    n_rat = sum(1 for e in examples if (e["task_id"], e["completion"]) not in direct_ok)
    return examples, [], dict(common.sample_stats(direct), kept=len(examples),
                              kept_rationalized=n_rat,
                              rationalization_success=float(
                                  sum(r["correct"] for r in records if r["rationalized"])
                                  / max(1, sum(1 for r in records if r["rationalized"]))))

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), sample_chunk=sample_chunk,
      select=select, warm_start=warm_start,
      train_from="base", accumulate=False, include_labeled=include_labeled,
      steps_growth=steps_growth)
