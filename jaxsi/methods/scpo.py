r"""ScPO: Self-Consistency Preference Optimization (Prasad et al. 2024).

"Self-Consistency Preference Optimization" (arXiv:2411.04109), §2: each
iteration samples k responses per *unlabeled* problem from the current model
M_t and counts the votes V(y) of every final answer (self-consistency). The
preference pair is a response of the most-voted answer y⁺ ≻ one of the
least-voted answer y⁻; problems whose top answer is not consistent enough are
dropped. M_{t+1} is trained from M_t with M_t as the DPO reference on a
vote-margin-weighted DPO loss plus an NLL term on the chosen response
(GK, unchecked against the paper's equation; catalog_02 [47])::

  w(x) = (V(y⁺) − V(y⁻)) / k
  L = w(x)·[−log σ(β log π(y⁺|x)/π_t(y⁺|x) − β log π(y⁻|x)/π_t(y⁻|x))
            − α log π(y⁺|x)/|y⁺|]

No gold label is read: the verifier column of the batch is only monitored.

As a composition (``jaxsi.spec.RoundsMethod``): rollout ``Sample(k)`` ·
reward stages (verifier — monitoring only —, :func:`vote_count_reward`) ·
select ``pairs.most_vs_least_voted`` (pair + weight w on the chosen row) ·
M-step ``dpo(loss_type=('sigmoid', 'sft'), loss_weights=(1, α))`` on the
weighted pairs (``round_fit.fit_pairs`` applies w to both terms), reference
= previous iterate, training from the current model.

Differences from the paper (kept visible): the NLL term is the token-mean
over the batch's chosen tokens, each row scaled by w (−Σ_i w_i Σ_t ℓp /
Σ_i |y_i⁺|), not the per-sequence length-normalised mean; no synthetic
problems are generated (the run's unlabeled problems are used).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import label_free
from jaxsi.rewards import reward_fn
from jaxsi.rewards import stages
from jaxsi.sampling import rollouts
from jaxsi.transforms import pairs

VOTE_COLUMN = 1   # column 0: the verifier (monitoring only); column 1: votes


def vote_counts(answers, group_ids) -> np.ndarray:
  """f32[B]: V_i = rows of row i's group with the same answer (None → 0)."""
  g = np.asarray(group_ids)
  out = np.zeros(len(answers), np.float32)
  for k in np.unique(g):
    rows = np.flatnonzero(g == k)
    counts: dict = {}
    for r in rows:
      if answers[r] is not None:
        counts[answers[r]] = counts.get(answers[r], 0) + 1
    for r in rows:
      out[r] = counts.get(answers[r], 0) if answers[r] is not None else 0.0
  return out


def vote_count_reward(*, group_size: Optional[int] = None, name: str = "votes"):
  """A batch reward: V_i, the votes of row i's canonical answer in its group.

  Answers are canonicalised like the majority-vote rewards
  (``label_free.canonical_answers``); unparseable answers get 0 and count for
  nothing. A batch with a partial group is refused (a vote needs the whole
  group). No gold label is read.
  """

  def fn(inputs: stages.RewardInputs) -> np.ndarray:
    label_free.check_complete_groups(inputs.group_ids, group_size, who=name)
    answers = label_free.canonical_answers(inputs.tasks, inputs.completions)
    return vote_counts(answers, inputs.group_ids)

  fn.__name__ = name
  return stages.batch_reward(fn, name)


def scpo(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
         beta: float = 0.1, nll_coef: float = 1.0, min_top_votes: float = 0.0,
         min_margin: float = 0.0, weighted: bool = True,
         name: str = "scpo") -> spec.RoundsMethod:
  """ScPO (arXiv:2411.04109) as a ``RoundsMethod``; see the module docstring.

  Args:
    rollout: k = ``rollout.n`` votes per problem at ``temperature``.
    beta: DPO β.
    nll_coef: α, the weight of the chosen NLL (0: DPO only).
    min_top_votes: the consistency filter τ: a problem yields a pair only if
      V(y⁺) ≥ τ (votes, not a fraction).
    min_margin: pairs need V(y⁺) − V(y⁻) > ``min_margin``.
    weighted: weight pairs by w = (V(y⁺) − V(y⁻))/k (False: unweighted DPO,
      the ablation).
    name: method name.

  Returns:
    The RoundsMethod (reference = previous iterate, train from current).
  """
  common.check_rollout("scpo", rollout)
  if rollout.n < 2:
    raise ValueError(f"scpo: rollout.n must be >= 2 (votes per problem), got {rollout.n}")
  if nll_coef < 0:
    raise ValueError(f"scpo: nll_coef must be >= 0, got {nll_coef}")
  settings = dict(beta=float(beta))
  if nll_coef:
    settings.update(loss_type=("sigmoid", "sft"), loss_weights=(1.0, float(nll_coef)))
  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout),
      rewards=(reward_fn.correctness_reward, vote_count_reward(group_size=rollout.n)),
      select=pairs.most_vs_least_voted(vote_column=VOTE_COLUMN, min_margin=min_margin,
                                       min_top_votes=min_top_votes, weighted=weighted),
      objective="dpo", objective_settings=settings, reference="previous",
      train_from="current", accumulate=False, include_labeled=False)


__all__ = ["scpo", "vote_count_reward", "vote_counts"]
