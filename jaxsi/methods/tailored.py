r"""Tailored learning: a teacher corrects the student's own mistakes, in rounds.

Wang et al. 2023, "Democratizing Reasoning Ability: Tailored Learning from
Large Language Model" (arXiv:2310.13332; seeds catalog_00 [12], "Learn to
Reason"). Multi-round distillation in which the data is tailored to the
student's current state: each round the student takes an "exam" on the
training questions, the verifier finds its mistakes, the (black-box) teacher
is shown each question *with the student's wrong attempt* and writes a
correction, and the student is fine-tuned on the corrections (question →
corrected solution). A self-reflection term makes the student learn from its
own mistakes as negatives. One round r::

  attempts  y_i ~ π_{r−1}(· | x_i)                      (student exam, n per x)
  mistakes  M_r = {(x_i, y_i) : verify(x_i, y_i) = 0}   (≤ max_mistakes per x)
  teacher   c_i ~ π_T(· | x_i ⊕ y_i ⊕ '|')             (the mistake in context)
  keep      C_r = {(x_i, c_i, y_i) : verify(x_i, c_i) = 1}   (verify_corrections)
  M-step    reflection='none':  min  −Σ_{C_r} log π(c_i | x_i)  [+ labelled NLL]
            reflection='cpo':   min  Σ_{C_r} [ −log σ(β(log π(c_i|x_i) − log π(y_i|x_i)))
                                               − α log π(c_i | x_i) ] / |C_r|
                                (``transforms.preference.cpo``, token-mean NLL)

What is checked and what is not (GK = general knowledge, not read from the
paper's equations; the seeds entry says the self-reflection loss is not in the
abstract): the multi-round exam → mistakes → teacher-with-mistake → SFT loop is
the abstract's description. (GK) The paper's teacher prompt also carries the
gold answer, and its self-reflection learning is a *contrastive* objective that
pulls the student towards the teacher's correct rationale and away from its
own wrong one (as we recall it, a triplet/margin loss on sequence
representations next to the LM loss); its exact form is unverified. Here the
self-reflection term is the likelihood-space contrastive loss of CPO
(reference-free, correction ≻ own mistake, plus the correction's NLL):
a substitute with the same roles (positive = teacher correction, negative =
own mistake), not the paper's equation. ``show_answer=True`` gives the teacher
the gold answer as well (the GK prompt).

Baselines in the same schedule (same teacher generations per round):
``focus='random'`` with ``teacher_prompt='plain'`` asks the teacher the same
number of questions drawn at random from the chunk, without the student's
attempts (untailored distillation); ``teacher_prompt='plain'`` with
``focus='mistakes'`` asks about the student's failures without showing them.

The teacher is a role: ``teacher=(model, params)`` (any model on the same
tokenizer, e.g. a larger one warm-started on the task and on the correction
format, :func:`teacher_examples`), or ``None``: the method trains one itself
once (the student's architecture, fresh init, ``teacher_steps`` SFT steps (default 2 × the warm start's) on
:func:`teacher_examples` of the warm-start examples and, with
``teacher_data='all'``, of the unlabelled problems' targets too — a teacher
that knows more than the student, the stand-in for the black-box LLM), pooled
in ``workdir/tailored_teacher`` so a resumed run reuses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import rollouts

SEP = "|"
FOCUS = ("mistakes", "random")
TEACHER_PROMPTS = ("mistake", "plain")
REFLECTIONS = ("none", "cpo")
TEACHER_DATA = ("labeled", "all")
TEACHER_POOL = "tailored_teacher"
_DIGITS = "0123456789"


def correction_prompt(prompt: str, attempt: str, *, answer: Optional[str] = None) -> str:
  """The teacher's tailored prompt: ``prompt + attempt + '|'`` (+ ``answer + '|'``).

  E.g. ``correction_prompt('12+34=', '64')`` is ``'12+34=64|'``; with
  ``answer='46'`` it is ``'12+34=64|46|'``.
  """
  text = f"{prompt}{attempt}{SEP}"
  return text + f"{answer}{SEP}" if answer is not None else text


def perturb(target: str, rng: np.random.Generator) -> str:
  """A wrong attempt for teacher training: one digit of ``target`` changed.

  The position is uniform over the digit characters, the new digit uniform
  over the nine others; a target without digits gets ``'0'`` appended.
  """
  pos = [i for i, ch in enumerate(target) if ch in _DIGITS]
  if not pos:
    return target + "0"
  i = pos[int(rng.integers(len(pos)))]
  others = [d for d in _DIGITS if d != target[i]]
  return target[:i] + others[int(rng.integers(len(others)))] + target[i + 1:]


def teacher_examples(examples: Sequence[dict], *, seed: int = 0,
                     corrections_per_example: int = 1,
                     show_answer: bool = False) -> list[dict]:
  """SFT data of a teacher that solves and corrects: each (prompt → completion)
  plus ``corrections_per_example`` copies of (correction_prompt(prompt, wrong)
  → completion) with ``wrong = perturb(completion)``.

  Args:
    examples: dicts with ``prompt``, ``completion`` (and ``task_id``).
    seed: seed of the perturbations.
    corrections_per_example: correction examples per example (>= 0).
    show_answer: the correction prompts carry the answer (``correction_prompt``).

  Raises:
    ValueError: corrections_per_example < 0.
  """
  if corrections_per_example < 0:
    raise ValueError("teacher_examples: corrections_per_example must be >= 0, got"
                     f" {corrections_per_example!r}")
  rng = np.random.default_rng(seed)
  out = []
  for ex in examples:
    out.append(dict(prompt=ex["prompt"], completion=ex["completion"],
                    task_id=ex.get("task_id", "")))
    answer = ex["completion"].split("\n")[-1] if show_answer else None
    for j in range(corrections_per_example):
      wrong = perturb(ex["completion"], rng)
      out.append(dict(prompt=correction_prompt(ex["prompt"], wrong, answer=answer),
                      completion=ex["completion"],
                      task_id=f"{ex.get('task_id', '')}/correction{j}"))
  return out


def teacher_context(ctx: Any, model: Any, params: Any) -> Any:
  """The round context with the teacher's model and parameters (a fresh
  ``generated`` list: the teacher's samples are not the chunk's stored
  trajectories)."""
  return dataclasses.replace(ctx, model=model, params=params, generated=[])


def select_tailored(records: Sequence[dict], *, reflection: str = "none",
                    verify_corrections: bool = True,
                    keep_correct_attempts: bool = False) -> tuple[list, list, dict]:
  """Round data from the records of :func:`tailored`'s ``sample_chunk``.

  Records with ``kind='attempt'`` are the student's, ``kind='correction'`` the
  teacher's (``prompt`` = the plain question, ``mistake`` = the attempt shown,
  or None for a plain teacher prompt).

  Returns:
    ``(examples, pairs, metrics)``: SFT examples (question → correction, one
    per distinct (task, correction)), or with ``reflection='cpo'`` pairs
    (chosen = correction, rejected = the mistake it corrects; corrections of
    a plain prompt have no mistake and give no pair). Metrics:
    ``sample_accuracy`` (student), ``mistakes``, ``teacher_queries``,
    ``correction_success`` (fraction of teacher outputs that verify),
    ``kept``, ``pairs``.
  """
  attempts = [r for r in records if r.get("kind") == "attempt"]
  corrections = [r for r in records if r.get("kind") == "correction"]
  good = [r for r in corrections if r["correct"] or not verify_corrections]
  seen, examples, pairs = set(), [], []
  for r in good:
    key = (r["task_id"], r["completion"], r.get("mistake"))
    if key in seen:
      continue
    seen.add(key)
    if reflection == "cpo":
      if r.get("mistake") is not None and r["mistake"] != r["completion"]:
        pairs.append(dict(prompt=r["prompt"], task_id=r["task_id"],
                          chosen=r["completion"], rejected=r["mistake"], weight=1.0))
    else:
      examples.append(dict(prompt=r["prompt"], completion=r["completion"],
                           task_id=r["task_id"]))
  if keep_correct_attempts and reflection == "none":
    examples += common.keep_correct(attempts, max_per_prompt=1)
  stats = common.sample_stats(attempts) if attempts else {}
  stats.update(mistakes=sum(1 for r in attempts if not r["correct"]),
               teacher_queries=len(corrections),
               correction_success=float(sum(r["correct"] for r in corrections)
                                        / max(1, len(corrections))),
               kept=len(examples), pairs=len(pairs))
  return examples, pairs, stats


def tailored(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=1, temperature=0.0),
             teacher_rollout: spec.RolloutSpec = spec.RolloutSpec(n=1, temperature=0.0),
             teacher: Optional[tuple] = None, teacher_steps: Optional[int] = None,
             teacher_data: str = "all", teacher_seed: int = 7919,
             focus: str = "mistakes", teacher_prompt: str = "mistake",
             show_answer: bool = False, max_mistakes: int = 1,
             verify_corrections: bool = True, reflection: str = "none",
             cpo_beta: float = 0.1, cpo_alpha: float = 1.0,
             keep_correct_attempts: bool = False, include_labeled: bool = True,
             train_from: str = "current", accumulate: bool = False,
             name: str = "tailored") -> spec.RoundsMethod:
  """Tailored learning (module docstring) as a ``RoundsMethod``.

  Args:
    rollout: the student's exam: ``n`` attempts per question at
      ``temperature`` (0: greedy).
    teacher_rollout: the teacher's corrections per query (``n``, temperature).
    teacher: ``(model, params)`` of the teacher role (same tokenizer), or
      None: trained by the method once (``teacher_steps``, ``teacher_data``).
    teacher_steps: SFT steps of the self-built teacher (>= 1; None: twice
      the run's ``RoundsConfig.warm_start_steps``, as ``rl_run``'s teacher).
    teacher_data: the self-built teacher's data: 'labeled' (the warm-start
      examples) or 'all' (also the unlabelled problems' targets).
    teacher_seed: init and perturbation seed of the self-built teacher.
    focus: 'mistakes' (query the teacher on the student's failures) or
      'random' (as many questions of the chunk at random: untailored).
    teacher_prompt: 'mistake' (the attempt in the prompt,
      :func:`correction_prompt`) or 'plain' (the question only).
    show_answer: the tailored prompt also carries the gold answer (GK: the
      paper's teacher prompt); 'mistake' prompts only.
    max_mistakes: distinct wrong attempts per question sent to the teacher.
    verify_corrections: keep only corrections the verifier accepts.
    reflection: 'none' (SFT on corrections) or 'cpo' (pairs correction ≻ own
      mistake, ``transforms.preference.cpo``: the self-reflection stand-in).
    cpo_beta, cpo_alpha: β and the NLL weight of the 'cpo' M-step.
    keep_correct_attempts: also train on the student's own correct attempts
      ('none' only).
    include_labeled: add the labelled examples to every SFT M-step.
    train_from: 'current' (continue the student: the data is tailored to
      it) or 'base'.
    accumulate: train on the corrections of rounds 1..r.
    name: method name.

  Returns:
    The method (``sample_chunk``, ``select``; ``objective='cpo'`` when
    ``reflection='cpo'``).

  Raises:
    ValueError: an option out of range or an inconsistent combination (named).
  """
  common.check_rollout(name, rollout)
  common.check_rollout(name, teacher_rollout)
  for field, value, allowed in (("focus", focus, FOCUS),
                                ("teacher_prompt", teacher_prompt, TEACHER_PROMPTS),
                                ("reflection", reflection, REFLECTIONS),
                                ("teacher_data", teacher_data, TEACHER_DATA)):
    if value not in allowed:
      raise ValueError(f"{name}: {field} must be one of {allowed}, got {value!r}")
  if focus == "random" and teacher_prompt == "mistake":
    raise ValueError(f"{name}: focus='random' asks about questions the student may"
                     " have solved, so there is no mistake to show; use"
                     " teacher_prompt='plain'")
  if show_answer and teacher_prompt != "mistake":
    raise ValueError(f"{name}: show_answer is read only with teacher_prompt='mistake'")
  if reflection == "cpo" and teacher_prompt != "mistake":
    raise ValueError(f"{name}: reflection='cpo' pairs each correction with the"
                     " mistake it corrects; it needs teacher_prompt='mistake'")
  if keep_correct_attempts and reflection != "none":
    raise ValueError(f"{name}: keep_correct_attempts needs reflection='none'")
  if int(max_mistakes) != max_mistakes or max_mistakes < 1:
    raise ValueError(f"{name}: max_mistakes must be an integer >= 1, got {max_mistakes!r}")
  if teacher_steps is not None and (int(teacher_steps) != teacher_steps
                                    or teacher_steps < 1):
    raise ValueError(f"{name}: teacher_steps must be an integer >= 1, got {teacher_steps!r}")
  if teacher is not None and (not isinstance(teacher, (tuple, list)) or len(teacher) != 2):
    raise ValueError(f"{name}: teacher must be (model, params) or None, got"
                     f" {type(teacher).__name__}")

  def resolve_teacher(ctx):
    if teacher is not None:
      return teacher[0], teacher[1]
    pool = ctx.open_pool(TEACHER_POOL)
    try:
      if 0 in pool:
        return ctx.model, pool.params(0, like=ctx.params)
      data = list(ctx.labeled_examples)
      if teacher_data == "all":
        data += common.task_examples(ctx.unlabeled)
      params = ctx.fit_sft(params=ctx.init_params(teacher_seed),
                           examples=teacher_examples(data, seed=teacher_seed,
                                                     show_answer=show_answer),
                           steps=int(teacher_steps or
                                     2 * max(1, ctx.config.warm_start_steps)),
                           ckpt_dir=None, seed=teacher_seed,
                           desc="tailored_teacher")
      pool.save(0, params)
      return ctx.model, params
    finally:
      pool.close()

  def sample_chunk(ctx, tasks, plan):
    del plan
    recs = common.sample_records(ctx, tasks, rollout, kind="attempt", mistake=None)
    by_id = {t.id: t for t in tasks}
    queries = []   # (task, mistake or None)
    if focus == "mistakes":
      for t in tasks:
        wrong = []
        for r in recs:
          if (r["task_id"] == t.id and not r["correct"] and r["completion"] not in wrong
              and len(wrong) < max_mistakes):
            wrong.append(r["completion"])
        queries += [(t, w) for w in wrong]
      if teacher_prompt == "plain":   # the failures, not the attempts
        queries = list({t.id: (t, None) for t, _ in queries}.values())
    else:
      failed = {r["task_id"] for r in recs if not r["correct"]}
      pick = np.asarray(jax.random.permutation(jax.random.fold_in(ctx.rng, 0x7a11),
                                               len(tasks)))[:len(failed)]
      queries = [(tasks[int(i)], None) for i in sorted(pick)]
    if not queries:
      return recs
    t_model, t_params = resolve_teacher(ctx)
    tctx = teacher_context(ctx, t_model, t_params)
    shown = [t.replace(prompt=correction_prompt(
        t.prompt, m, answer=t.answer if show_answer else None))
             if m is not None else t for t, m in queries]
    trecs = common.sample_records(tctx, shown, teacher_rollout, kind="correction")
    k = int(teacher_rollout.n)
    for i, r in enumerate(trecs):
      task, mistake = queries[i // k]
      r["teacher_prompt"] = r["prompt"]
      r["prompt"] = by_id[task.id].prompt        # trained on the plain question
      r["mistake"] = mistake
    return recs + trecs

  def select(records, plan, ctx):
    del plan, ctx
    return select_tailored(records, reflection=reflection,
                           verify_corrections=verify_corrections,
                           keep_correct_attempts=keep_correct_attempts)

  pairwise = reflection == "cpo"
  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), sample_chunk=sample_chunk,
      select=select, objective="cpo" if pairwise else spec.SFT,
      objective_settings=(dict(beta=float(cpo_beta), cpo_alpha=float(cpo_alpha))
                          if pairwise else {}),
      train_from=train_from, accumulate=accumulate,
      include_labeled=include_labeled)


__all__ = ["correction_prompt", "perturb", "select_tailored", "tailored",
           "teacher_context", "teacher_examples"]
