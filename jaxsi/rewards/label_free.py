r"""Majority-vote pseudo-label rewards (no gold labels): TTRL, SRT, Co-Reward.

Every completion's final answer is canonicalised
(``verifiers.canonical_answer``: numbers as exact rationals, reversed-format
digits un-reversed, …) and each group votes (``voting.majority_vote``: the
most frequent parseable answer; ties go to the answer seen first;
unparseable answers never win). The vote's winner ŷ_g is the group's
pseudo-label.

* **Agreement with the own group** (TTRL, Zuo et al. 2025, arXiv:2504.16084,
  §2, "label estimation by majority voting" and the rule-based reward
  r(y_i, ŷ) = 1 if y_i = ŷ else 0; SRT, Shafayat et al. 2025,
  arXiv:2505.21444, §3, the same self-consistency reward):
  ``r_i = 1[a_i = ŷ_{g(i)}]``.
* **Agreement across a rephrasing** (Co-Reward, Zhang et al. 2025,
  arXiv:2508.00410, §3, contrastive agreement): every problem q is paired
  with an equivalent rephrasing q'; the rollouts of q are rewarded for
  agreeing with the majority answer of q' and vice versa:
  ``r_i = 1[a_i = ŷ_{pair(g(i))}]``. The pairing is ``traj.pair_ids[i]`` =
  the group id of the partner group (``sampling.label_free.Rephrased``
  writes it).

A group vote needs the whole group: both rewards refuse a batch in which a
group (or, for Co-Reward, its partner) has fewer than ``group_size`` rows
(``ValueError``; the reward stage then marks those rows failed, NaN, never a
vote over part of a group). Unparseable answers get 0; a group whose answers
are all unparseable has no label and every row gets 0.

The gold label is never read by the rewards; :func:`pseudo_label_stats`
compares the pseudo-labels with the verifier for monitoring only.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from jaxsi.rewards import stages
from jaxsi.rewards import verifiers
from jaxsi.rewards import voting


def canonical_answers(tasks: Sequence[Any], completions: Sequence[str]
                      ) -> list:
  """The canonical final answer of every completion (None: unparseable)."""
  if len(tasks) != len(completions):
    raise ValueError(f"canonical_answers: {len(tasks)} tasks but"
                     f" {len(completions)} completions")
  return [verifiers.canonical_answer(t, c) for t, c in zip(tasks, completions)]


def check_complete_groups(group_ids: np.ndarray, group_size: Optional[int], *,
                          who: str, required: Optional[np.ndarray] = None
                          ) -> None:
  """Raises unless every group in ``group_ids`` has ``group_size`` rows.

  Args:
    group_ids: int[B'] group of every graded row.
    group_size: the expected size (None: only all groups of equal size).
    who: the caller, for the message.
    required: group ids that must be present too (Co-Reward's partners).

  Raises:
    ValueError: a partial group or a missing required group, naming it.
  """
  g = np.asarray(group_ids)
  ids, counts = np.unique(g, return_counts=True)
  if group_size is None and counts.size:
    group_size = int(counts.max())
  bad = ids[counts != group_size]
  if bad.size:
    k = int(bad[0])
    raise ValueError(
        f"{who}: group {k} has {int(counts[ids == k][0])} of {group_size}"
        " samples; a vote over the group needs all of them (a partial group"
        " reached a group reward: grade whole groups)")
  if required is not None:
    missing = np.setdiff1d(np.asarray(required), ids)
    if missing.size:
      raise ValueError(f"{who}: partner group {int(missing[0])} is not in the"
                       " batch; Co-Reward needs both groups of a pair")


def group_labels(answers: Sequence[Any], group_ids: np.ndarray
                 ) -> dict:
  """``{group id: (label or None, row of its first vote or None)}``.

  The label is ``voting.majority_vote`` over the group's answers (in row
  order); the row indexes ``answers``.
  """
  g = np.asarray(group_ids)
  out = {}
  for k in np.unique(g):
    rows = np.flatnonzero(g == k)
    label, first = voting.majority_vote([answers[r] for r in rows])
    out[int(k)] = (label, None if first is None else int(rows[first]))
  return out


def agreement(answers: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
  """f32[B]: 1 where the answer is parseable and equals the row's label."""
  return np.asarray([1.0 if (a is not None and l is not None and a == l) else 0.0
                     for a, l in zip(answers, labels)], np.float32)


def majority_vote_reward(*, group_size: Optional[int] = None,
                         name: str = "majority"):
  r"""TTRL / SRT reward: agreement with the own group's majority answer.

  r_i = 1[a_i = ŷ_{g(i)}] (TTRL arXiv:2504.16084 §2; SRT arXiv:2505.21444
  §3), see the module docstring.

  Args:
    group_size: samples per group N (the vote's size); a batch with a
      partial group is refused. None: groups need only be of equal size.
    name: the column name.

  Returns:
    A :func:`stages.batch_reward` function ``fn(RewardInputs) -> f32[B']``.
  """

  def fn(inputs: stages.RewardInputs) -> np.ndarray:
    check_complete_groups(inputs.group_ids, group_size, who=name)
    answers = canonical_answers(inputs.tasks, inputs.completions)
    labels = group_labels(answers, inputs.group_ids)
    per_row = [labels[int(k)][0] for k in inputs.group_ids]
    return agreement(answers, per_row)

  fn.__name__ = name
  return stages.batch_reward(fn, name)


def partner_groups(inputs: stages.RewardInputs) -> np.ndarray:
  """int[B']: the partner group id of every row (``traj.pair_ids``)."""
  traj = inputs.traj
  pair = None if traj is None else getattr(traj, "pair_ids", None)
  if pair is None:
    raise ValueError("co_reward: the batch has no pair_ids (sample it with"
                     " sampling.label_free.Rephrased, which pairs every group"
                     " with its rephrasing's group)")
  return np.asarray(pair)


def cross_agreement_reward(*, group_size: Optional[int] = None,
                           name: str = "co_reward"):
  r"""Co-Reward: agreement with the majority answer of the paired group.

  r_i = 1[a_i = ŷ_{pair(g(i))}] (arXiv:2508.00410 §3): a rollout of q is
  rewarded by the vote of q' and a rollout of q' by the vote of q, with
  ``pair(g)`` read from ``traj.pair_ids`` (see the module docstring).

  Args:
    group_size: samples per group (a partial group or a missing partner is
      refused).
    name: the column name.

  Returns:
    A :func:`stages.batch_reward` function.
  """

  def fn(inputs: stages.RewardInputs) -> np.ndarray:
    partner = partner_groups(inputs)
    check_complete_groups(inputs.group_ids, group_size, who=name,
                          required=np.unique(partner))
    answers = canonical_answers(inputs.tasks, inputs.completions)
    labels = group_labels(answers, inputs.group_ids)
    per_row = [labels[int(p)][0] for p in partner]
    return agreement(answers, per_row)

  fn.__name__ = name
  return stages.batch_reward(fn, name)


def pseudo_label_stats(tasks: Sequence[Any], completions: Sequence[str],
                       group_ids: np.ndarray,
                       label_groups: Optional[np.ndarray] = None) -> dict:
  """Monitoring: how good are the pseudo-labels (reads the gold verifier).

  Args:
    tasks: task of every row.
    completions: completion text of every row.
    group_ids: int[B'] group of every row.
    label_groups: int[B'] the group whose vote labels each row (default the
      row's own group; Co-Reward: the partner group).

  Returns:
    ``pseudo_label_acc`` (fraction of groups whose label — the vote of
    ``label_groups`` — is correct by the verifier; a group without a label
    counts as wrong), ``agreement`` (mean of the rows' agreement with their
    label: the training reward), ``no_label_frac`` (groups whose label
    group had no parseable answer), ``unparseable_frac`` (rows) and
    ``sample_acc`` (verifier accuracy of the rows).
  """
  g = np.asarray(group_ids)
  src = g if label_groups is None else np.asarray(label_groups)
  if not len(g):
    return dict(pseudo_label_acc=0.0, agreement=0.0, no_label_frac=0.0,
                unparseable_frac=0.0, sample_acc=0.0)
  answers = canonical_answers(tasks, completions)
  labels = group_labels(answers, g)
  correct = np.asarray([t.verify(c) for t, c in zip(tasks, completions)],
                       np.float32)
  per_row = [labels.get(int(k), (None, None))[0] for k in src]
  group_ok, no_label = [], 0
  for k in np.unique(g):
    rows = np.flatnonzero(g == k)
    label, winner = labels.get(int(src[rows[0]]), (None, None))
    if label is None:
      no_label += 1
      group_ok.append(0.0)
    else:  # the label's first voter is graded for this group's task
      group_ok.append(float(tasks[rows[0]].verify(completions[winner])))
  n_groups = len(group_ok)
  return dict(pseudo_label_acc=float(np.mean(group_ok)),
              agreement=float(agreement(answers, per_row).mean()),
              no_label_frac=no_label / n_groups,
              unparseable_frac=float(np.mean([a is None for a in answers])),
              sample_acc=float(correct.mean()))


__all__ = ["agreement", "canonical_answers", "check_complete_groups",
           "cross_agreement_reward", "group_labels", "majority_vote_reward",
           "partner_groups", "pseudo_label_stats"]
