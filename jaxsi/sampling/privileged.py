r"""Privileged-context layout: each sampled completion re-laid after a second prompt.

Self-distillation under privileged information (OPSD, Zhao et al. 2026,
arXiv:2601.18734; π-Distill; Skill-SD) scores the student's own completion
``y`` twice with the same model: under the plain prompt ``x`` (the student,
trained) and under a privileged prompt ``c(x)`` (the teacher: ``x`` plus the
answer, a worked solution, a skill description or a critique; stop-gradient).
This module builds the teacher's input. Per task the privileged prompt is a
gin-bindable ``context_fn(task) -> str`` (:func:`answer_context`,
:func:`solution_context`, :func:`skill_context`), encoded ONCE per run by the
loop (a context variant of the stage, :meth:`Privileged.context_variants`);
after sampling, every row's completion is placed after its privileged prompt
in the layout ``transforms.rescoring.rescore(context=name)`` reads::

    traj.tokens                 [ pad pad  x x x x | y y y y pad ]   T = P + G
    extras[name + '_tokens']    [ pad c c c c c c c c c | y y y y pad ]   T' = P' + G

the privileged prompt left-padded to its own bucket P' (the bucket of the
longest privileged prompt over the run's tasks: fixed, so the jitted
rescoring pass compiles once), the completion bucket copied unchanged (so the
completion is right-aligned: ``tokens[b, j]`` sits at ``j + (T' − T)``),
``'_input_mask'`` the real tokens and ``'_positions'`` positions counted over
real tokens (BOS at 0, the completion continuing after the privileged prompt).
The plain prompt bucket P is NOT widened to P' (sampling cost is unchanged):
the loop excludes context variants from the sampling bucket.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import rollouts
from jaxsi.trajectory import positions_from_mask

DEFAULT_NAME = "privileged"
# The separator between the prompt and the privileged information. '|' is in
# the default character alphabet (jaxsi.data.char_tokenizer).
SEP = "|"


# ------------------------------------------------------------ context fns
def answer_context(task) -> str:
  """``prompt + '|' + answer + '|'``: the gold final answer as privileged info."""
  return f"{task.prompt}{SEP}{task.answer}{SEP}"


def solution_context(task) -> str:
  """``prompt + '|' + target + '|'``: the full supervised target (a worked
  solution / verified trace; the answer when the task has no target)."""
  return f"{task.prompt}{SEP}{task.target or task.answer}{SEP}"


# A skill description per task category, in the character alphabet. For the
# synthetic tasks a "skill" is the procedure the category needs (Skill-SD's
# natural-language skills, in a form a tiny model can condition on).
SKILLS = {
    "addition": "add digit by digit, carry 1",
    "countdown": "combine the numbers to reach the target",
}


def skill_context(task, skills: Optional[Mapping[str, str]] = None) -> str:
  """``skill + '|' + prompt``: the category's skill description before the
  prompt (:data:`SKILLS`, or ``skills``).

  Raises:
    KeyError: no skill for the task's category (names it).
  """
  table = SKILLS if skills is None else skills
  if task.category not in table:
    raise KeyError(f"skill_context: no skill for category {task.category!r}"
                   f" (known: {sorted(table)}); pass skills={{...}}")
  return f"{table[task.category]}{SEP}{task.prompt}"


# ------------------------------------------------------------------ layout
def privileged_layout(context_tokens: np.ndarray, context_mask: np.ndarray,
                      completion_tokens: np.ndarray,
                      completion_mask: np.ndarray):
  """(tokens int32[B, P'+G], input_mask bool[B, P'+G], positions int32[B, P'+G]).

  Args:
    context_tokens: int32[B, P'] left-padded privileged prompts.
    context_mask: bool[B, P'] their real tokens.
    completion_tokens: int32[B, G] the completion bucket of the trajectory
      (``traj.tokens[:, P:]``), right-padded.
    completion_mask: bool[B, G] its real tokens (``traj.input_mask[:, P:]``).

  Returns:
    The concatenated layout; positions count real tokens from 0 (padding
    gets the position of the last real token before it, 0 on the left).
  """
  context_tokens = np.asarray(context_tokens)
  completion_tokens = np.asarray(completion_tokens)
  if context_tokens.shape[0] != completion_tokens.shape[0]:
    raise ValueError(f"privileged_layout: {context_tokens.shape[0]} context rows"
                     f" != {completion_tokens.shape[0]} completion rows")
  tokens = np.concatenate([context_tokens, completion_tokens], axis=1).astype(np.int32)
  mask = np.concatenate([np.asarray(context_mask, bool),
                         np.asarray(completion_mask, bool)], axis=1)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, mask, positions


def context_bucket(rows: Sequence[Sequence[int]],
                   buckets: Sequence[int] = buckets_lib.DEFAULT_PROMPT_BUCKETS) -> int:
  """The privileged prompt bucket P' of a run: the bucket of its longest one."""
  if not len(rows):
    raise ValueError("context_bucket: no privileged prompts")
  return buckets_lib.bucket_size(max(len(r) for r in rows), buckets)


# ------------------------------------------------------------------- stage
@dataclasses.dataclass(frozen=True)
class Privileged(rollouts.Stage):
  """Wraps a single-turn rollout stage; adds the privileged layout to its batch.

  After ``inner`` has produced the batch, ``extras[f'{name}_tokens' |
  '_input_mask' | '_positions']`` hold every row's completion after
  ``context_fn(task)`` (module docstring), and ``extras[f'{name}_len']``
  int32[B] the privileged prompt's length. The privileged prompt conditions
  only the rescoring (``rescoring.rescore(context=name)``); it is never
  sampled from.

  Attributes:
    inner: a single-turn stage (``Sample``, ``RefillUntil``, ``HintedResample``).
    context_fn: task → the privileged prompt text (gin-bindable).
    name: the extras prefix, also the context variant's name.
    buckets: the privileged prompt buckets.
    teach: ``supervised_extras`` adds (privileged prompt, target) for every
      ``teach``-th labelled task (0: none), so a warm-started teacher has
      seen the privileged format (as Guide's hinted warm start).
  """

  inner: Any = rollouts.Sample()
  context_fn: Callable[[Any], str] = None
  name: str = DEFAULT_NAME
  buckets: tuple = buckets_lib.DEFAULT_PROMPT_BUCKETS
  teach: int = 2

  def __post_init__(self):
    if self.context_fn is None or not callable(self.context_fn):
      raise ValueError(f"Privileged: context_fn must be fn(task) -> str, got"
                       f" {self.context_fn!r}")
    if isinstance(self.inner, rollouts.Episodes):
      raise ValueError("Privileged: inner must be a single-turn stage (the"
                       " layout re-lays one completion bucket), got Episodes")
    if not self.name or not isinstance(self.name, str):
      raise ValueError(f"Privileged: name must be a non-empty str, got {self.name!r}")
    if int(self.teach) != self.teach or self.teach < 0:
      raise ValueError(f"Privileged: teach must be an integer >= 0, got {self.teach!r}")

  @property
  def spec(self):
    return self.inner.spec

  def prompt_variants(self) -> dict:
    return self.inner.prompt_variants()

  def context_variants(self) -> dict:
    """``{name: context_fn}``: prompts the loop encodes once but never samples
    from (they do not size the sampling bucket)."""
    inner = getattr(self.inner, "context_variants", None)
    return dict(inner() if inner is not None else {}, **{self.name: self.context_fn})

  def reward_names(self, names: tuple) -> tuple:
    return self.inner.reward_names(names)

  def length(self, prompt_len: int) -> int:
    return self.inner.length(prompt_len)

  def supervised_extras(self, tasks) -> list:
    out = list(self.inner.supervised_extras(tasks))
    if self.teach:
      out += [(self.context_fn(t), t.target or t.answer)
              for t in list(tasks)[::self.teach]]
    return out

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    batch = self.inner(ctx, params, rng)
    traj = batch.traj
    t = traj.tokens.shape[1]
    p = t - self.spec.max_new_tokens
    rows = ctx.prompt_variants.get(self.name)
    if rows is None:
      raise ValueError(
          f"Privileged: the schedule did not encode the context variant"
          f" {self.name!r} (known: {sorted(ctx.prompt_variants)}); run it under"
          " training.loop.Loop, which encodes Stage.context_variants()")
    bucket = context_bucket(rows, self.buckets)
    ctx_rows = [rows[int(i)] for i in np.asarray(batch.task_index)]
    c_tokens, c_mask = rollouts.left_pad(ctx_rows, bucket, ctx.pad_id)
    tokens, mask, positions = privileged_layout(
        c_tokens, c_mask, np.asarray(traj.tokens)[:, p:],
        np.asarray(traj.input_mask)[:, p:])
    extras = dict(traj.extras)
    extras[f"{self.name}_tokens"] = tokens
    extras[f"{self.name}_input_mask"] = mask
    extras[f"{self.name}_positions"] = positions
    extras[f"{self.name}_len"] = np.asarray([len(r) for r in ctx_rows], np.int32)
    return dataclasses.replace(batch, traj=traj.replace(extras=extras))


# Extras written by :class:`TeacherSample`.
STUDENT_KEY = "pi_student"   # bool[B]: the row is a teacher sample re-laid under the plain prompt
TWIN_KEY = "pi_twin"         # int32[B]: the row holding the same completion in the other layout


@dataclasses.dataclass(frozen=True)
class TeacherSample(rollouts.Stage):
  """Samples from the privileged teacher; lays every sample out twice.

  π-Distill (Penaloza et al. 2026, "Privileged Information Distillation for
  Language Models", arXiv:2602.04942, §3; GK: the sampling scheme and the
  joint objective are read from the abstract and the authors' summary, not
  checked against the equations). The same model is the teacher
  π(· | x, I) and the student π(· | x); completions are sampled from the
  TEACHER (the privileged prompt ``context_fn(task)``, a prompt variant that
  sizes the sampling bucket). For each prompt the batch holds ``n // 2``
  teacher samples and the same ``n // 2`` completions under the plain prompt
  (the student rows; same bucket, same completion columns, so the two
  layouts are aligned column for column)::

      rows of prompt i:  [ c(x_i) | y_1 ] … [ c(x_i) | y_m ] [ x_i | y_1 ] … [ x_i | y_m ]
                           teacher (group 2i)                 student (group 2i + 1)

  with m = n // 2. The student rows copy their twin's rewards (graded once);
  ``extras[STUDENT_KEY]`` marks them and ``extras[TWIN_KEY]`` names each
  row's twin. Group ids 2i / 2i + 1 make the group advantages of the two
  halves identical. The joint objective (``methods.pi_distill``) trains the
  teacher on its own samples and the student on the same samples with the
  teacher's log-probs as the behaviour policy (importance ratio).

  Attributes:
    spec: the RolloutSpec (``n`` even: the rows per prompt, both layouts).
    context_fn: task → the privileged prompt text.
    name: the prompt variant's name.
    teach: ``supervised_extras`` adds (privileged prompt, target) for every
      ``teach``-th labelled task (0: none).
  """

  spec: Any = None
  context_fn: Callable[[Any], str] = None
  name: str = "teacher_context"
  teach: int = 2

  def __post_init__(self):
    if self.spec is None or self.spec.n < 2 or self.spec.n % 2:
      raise ValueError("TeacherSample: spec.n must be even and >= 2 (n // 2"
                       " teacher samples per prompt, each in both layouts), got"
                       f" {None if self.spec is None else self.spec.n!r}")
    if self.context_fn is None or not callable(self.context_fn):
      raise ValueError(f"TeacherSample: context_fn must be fn(task) -> str, got"
                       f" {self.context_fn!r}")
    if int(self.teach) != self.teach or self.teach < 0:
      raise ValueError(f"TeacherSample: teach must be an integer >= 0, got {self.teach!r}")

  def prompt_variants(self) -> dict:
    return {self.name: self.context_fn}

  def supervised_extras(self, tasks) -> list:
    if not self.teach:
      return []
    return [(self.context_fn(t), t.target or t.answer)
            for t in list(tasks)[::self.teach]]

  def __call__(self, ctx, params, rng) -> rollouts.Batch:
    m = self.spec.n // 2
    task_index = np.asarray(ctx.next_prompts())
    r = len(task_index)
    t0 = time.perf_counter()
    teacher = ctx.generate(params, task_index, jax.random.fold_in(rng, 0),
                           n=m, variant=self.name)
    t_gen = time.perf_counter() - t0
    rows = np.repeat(task_index, m)
    t0 = time.perf_counter()
    rewards, failed = ctx.rewards(teacher, rows)
    t_rew = time.perf_counter() - t0
    t = teacher.tokens.shape[1]
    p = t - self.spec.max_new_tokens
    plain, plain_mask = ctx.prompt_arrays(task_index)
    if plain.shape[1] != p:
      raise ValueError(f"TeacherSample: plain prompt bucket {plain.shape[1]} !="
                       f" the sampling bucket {p}")
    student = jax.tree.map(np.copy, teacher)
    rep = np.repeat(np.arange(r), m)
    student_tokens = np.array(student.tokens)
    student_tokens[:, :p] = plain[rep]
    student_mask = np.array(student.input_mask)
    student_mask[:, :p] = plain_mask[rep]
    student = student.replace(
        tokens=student_tokens, input_mask=student_mask,
        positions=np.asarray(positions_from_mask(student_mask)))
    # Interleave per prompt: [teacher m rows | student m rows].
    order = np.stack([np.arange(r * m).reshape(r, m),
                      r * m + np.arange(r * m).reshape(r, m)], axis=1).reshape(-1)
    both = jax.tree.map(lambda a, b: np.concatenate([a, b], axis=0)[order],
                        teacher, student)
    b = 2 * r * m
    is_student = np.zeros((b,), bool)
    is_student.reshape(r, 2, m)[:, 1] = True
    twin = np.arange(b).reshape(r, 2, m)[:, ::-1].reshape(-1).astype(np.int32)
    group = np.repeat(np.arange(2 * r), m).astype(np.int32)
    extras = dict(both.extras)
    extras[STUDENT_KEY] = is_student
    extras[TWIN_KEY] = twin
    both = both.replace(group_ids=group, extras=extras)
    rewards_both = np.concatenate([rewards, rewards], axis=0)[order]
    scores = rollouts.total_reward(rewards)
    zero = rollouts.group_zero_variance(scores, np.asarray(teacher.valid, bool), m)
    info = dict(gen_s=t_gen, reward_s=t_rew, reward_failed=failed,
                gen_tokens=int(np.asarray(teacher.loss_mask).sum()),
                frac_zero_variance_groups=float(zero.mean()), gen_batches=1,
                effective_batch_frac=float(1.0 - zero.mean()))
    metrics = {"pi_distill/teacher_reward": float(np.nanmean(scores))
               if np.isfinite(scores).any() else 0.0}
    return rollouts.Batch(traj=both, rewards=rewards_both,
                          task_index=np.repeat(task_index, 2 * m), info=info,
                          metrics=metrics)


__all__ = ["DEFAULT_NAME", "SEP", "SKILLS", "STUDENT_KEY", "TWIN_KEY",
           "Privileged", "TeacherSample", "answer_context",
           "context_bucket", "privileged_layout", "skill_context",
           "solution_context"]
