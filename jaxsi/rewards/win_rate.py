r"""Win rate inside a group under a pairwise preference (SPO).

SPO, Self-Play Preference Optimization (Swamy et al. 2024, "A Minimaximalist
Approach to Reinforcement Learning from Human Feedback", arXiv:2401.04056,
§4, Algorithm 1): sample N completions y_1..y_N of a prompt from the policy,
ask a preference oracle P to compare them, and reward each by its win rate
against the others::

    r(y_i) = 1/(N−1) · Σ_{j≠i} P(y_i ≻ y_j)                          (SPO reward)

then run any policy-gradient update on r. The paper's oracle is a rater or
preference model; here it is one of

* :func:`oracle_preferences` — the verifier as a *perfect rater*:
  P(y_i ≻ y_j) = 1 if score_i > score_j, ½ if equal, 0 if less. With a 0/1
  verifier and k correct samples in a group of N the win rate is
  r = (N − k + (k−1)/2)/(N−1) for a correct sample and (N−k−1)/(2(N−1)) for
  a wrong one: an **affine** function a + b·correct of the verifier reward
  with b = N / (2(N−1)) > 0, so a group-normalised advantage (GRPO) of the
  win rate equals that of the verifier reward exactly.
* :class:`PairwiseJudgeWinRate` — a model role (the policy itself, or a
  frozen judge) asked "which is better, A or B?" in a pairwise
  ``judging.JudgeFormat`` (``first`` → 1, ``second`` → 0, ``tie`` → ½,
  anything else unparsed → NaN). With ``position_swap`` every pair is judged
  in both orders and P(y_i ≻ y_j) = ½ (s(i, j) + 1 − s(j, i)) (the mean of
  the parsed ones), which cancels a judge's bias for a position; without
  it each unordered pair is judged once (i < j as A) and
  P(y_j ≻ y_i) = 1 − P(y_i ≻ y_j).

Unparsed judgments (NaN entries of P, :func:`win_rates`): ``'tie'`` counts
them as ½ (a judge that says nothing says "equal"), ``'skip'`` averages over
the parsed opponents only (½ when none parsed). A group of one sample has no
opponent: its win rate is ½ (the minimax value of a symmetric game; its
group advantage is 0 anyway). The paper's P may be intransitive or
stochastic; nothing here assumes transitivity.

Checked against the paper (GK, from general knowledge of arXiv:2401.04056,
not re-read here): the reward is the win proportion over the *other*
samples of the same policy (the 1/(N−1) normaliser and j ≠ i), and the
paper's experiments are continuous control with PPO/SAC; the GRPO update
used here (``jaxsi.methods.spo``) is this library's choice ("any RL
algorithm"). The position-swap option is not in the paper (LLM-as-a-judge
practice); ties as ½ follow P(y ≻ y') + P(y' ≻ y) = 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from jaxsi.rewards import judging
from jaxsi.rewards import label_free
from jaxsi.rewards import stages

UNPARSED_MODES = ("tie", "skip")


# ------------------------------------------------------------ pure math
def win_rates(prefs: np.ndarray, *, unparsed: str = "tie") -> np.ndarray:
  r"""f32[N]: r_i = 1/(N−1) Σ_{j≠i} P[i, j] (SPO, arXiv:2401.04056).

  Args:
    prefs: f[N, N], ``P[i, j]`` = P(y_i ≻ y_j) in [0, 1]; the diagonal is
      ignored; NaN = no judgment of that pair.
    unparsed: ``'tie'`` (NaN counts ½) or ``'skip'`` (average over the
      finite entries; ½ for a row without any).

  Returns:
    The win rates; ½ for N = 1.

  Raises:
    ValueError: not a square matrix, entries outside [0, 1], or an unknown
      ``unparsed`` mode.
  """
  if unparsed not in UNPARSED_MODES:
    raise ValueError(f"win_rates: unparsed must be one of {UNPARSED_MODES}, got"
                     f" {unparsed!r}")
  p = np.asarray(prefs, np.float64)
  if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 1:
    raise ValueError(f"win_rates: prefs must be a square [N, N] matrix (N >= 1),"
                     f" got shape {p.shape}")
  n = p.shape[0]
  off = ~np.eye(n, dtype=bool)
  finite = np.isfinite(p) & off
  if np.any((p[finite] < 0) | (p[finite] > 1)):
    raise ValueError("win_rates: preferences must lie in [0, 1]")
  if n == 1:
    return np.full((1,), 0.5, np.float32)
  if unparsed == "tie":
    filled = np.where(finite, p, 0.5)
    return (np.where(off, filled, 0.0).sum(1) / (n - 1)).astype(np.float32)
  count = finite.sum(1)
  total = np.where(finite, p, 0.0).sum(1)
  return np.where(count > 0, total / np.maximum(count, 1), 0.5).astype(np.float32)


def oracle_preferences(scores: Sequence[float]) -> np.ndarray:
  """f32[N, N]: the perfect rater of a scored group.

  P[i, j] = 1 if s_i > s_j, ½ if s_i = s_j, 0 if s_i < s_j; rows or columns
  of a NaN score (a failed verifier) are NaN; the diagonal is ½.
  """
  s = np.asarray(scores, np.float64).reshape(-1)
  p = 0.5 + 0.5 * np.sign(s[:, None] - s[None, :])
  return p.astype(np.float32)


def judged_pairs(n: int, *, position_swap: bool) -> np.ndarray:
  """int[M, 2]: the (A, B) index pairs a judge is asked about in a group of n.

  Every unordered pair i < j as (i, j); with ``position_swap`` also (j, i)
  (right after it). M = n(n−1)/2, or n(n−1) with the swap.
  """
  if int(n) != n or n < 1:
    raise ValueError(f"judged_pairs: n must be an integer >= 1, got {n!r}")
  out = []
  for i in range(int(n)):
    for j in range(i + 1, int(n)):
      out.append((i, j))
      if position_swap:
        out.append((j, i))
  return np.asarray(out, np.int64).reshape(-1, 2)


def preference_matrix(n: int, pairs: np.ndarray, scores: Sequence[float]
                      ) -> np.ndarray:
  r"""f32[N, N] P from judgments ``scores[m]`` = s(A = pairs[m, 0], B = pairs[m, 1]).

  s ∈ [0, 1] (1: A better, 0: B better, ½ tie; NaN unparsed). Each judgment
  s(a, b) is a vote s for P(a ≻ b) and 1 − s for P(b ≻ a); P[i, j] is the
  mean of the finite votes about the pair (both orders with a position
  swap: ½ (s(i, j) + 1 − s(j, i))), NaN when none. The diagonal is ½.

  Raises:
    ValueError: a pair out of range or on the diagonal, or lengths differ.
  """
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  s = np.asarray(scores, np.float64).reshape(-1)
  if len(s) != len(pairs):
    raise ValueError(f"preference_matrix: {len(pairs)} pairs, {len(s)} scores")
  if pairs.size and (pairs.min() < 0 or pairs.max() >= n
                     or np.any(pairs[:, 0] == pairs[:, 1])):
    raise ValueError(f"preference_matrix: pairs must index two different samples"
                     f" of a group of {n}")
  total = np.zeros((n, n))
  count = np.zeros((n, n))
  for (a, b), v in zip(pairs, s):
    if not math.isfinite(v):
      continue
    total[a, b] += v
    count[a, b] += 1
    total[b, a] += 1.0 - v
    count[b, a] += 1
  p = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  np.fill_diagonal(p, 0.5)
  return p.astype(np.float32)


def position_consistency(pairs: np.ndarray, scores: Sequence[float]) -> float:
  """Fraction of swapped pairs whose two judgments agree (s(i,j) = 1 − s(j,i)),
  over pairs with both judgments parsed; NaN if there is none."""
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  s = np.asarray(scores, np.float64).reshape(-1)
  seen = {}
  agree = total = 0
  for (a, b), v in zip(pairs, s):
    key = (min(a, b), max(a, b))
    if key in seen and math.isfinite(v) and math.isfinite(seen[key]):
      total += 1
      agree += int(abs(seen[key] - (1.0 - v)) < 1e-6)
    seen[key] = v
  return float(agree / total) if total else float("nan")


# ------------------------------------------------------------ reward stages
def _groups(group_ids: np.ndarray):
  g = np.asarray(group_ids)
  return [np.flatnonzero(g == k) for k in np.unique(g)]


def verifier_win_rate(*, group_size: Optional[int] = None, unparsed: str = "tie",
                      name: str = "win_rate"):
  r"""SPO's reward under the verifier as a perfect rater (:func:`oracle_preferences`).

  r_i = 1/(N−1) Σ_{j≠i} P(y_i ≻ y_j), P from ``task.verify`` scores. A row
  whose verifier fails (NaN) is a NaN column of P (``unparsed`` decides).

  Args:
    group_size: N; a batch with a partial group is refused (a win rate over
      part of a group would be another reward). None: no check (groups of
      any sizes, each taken as complete).
    unparsed: :func:`win_rates`'s mode.
    name: the column name.

  Returns:
    A ``stages.batch_reward`` function ``fn(RewardInputs) -> f32[B']``.
  """
  if unparsed not in UNPARSED_MODES:
    raise ValueError(f"verifier_win_rate: unparsed must be one of {UNPARSED_MODES},"
                     f" got {unparsed!r}")

  def fn(inputs: stages.RewardInputs) -> np.ndarray:
    if group_size is not None:
      label_free.check_complete_groups(inputs.group_ids, group_size, who=name)
    correct = np.asarray([t.verify(c) for t, c in zip(inputs.tasks, inputs.completions)],
                         np.float64)
    out = np.zeros((len(inputs),), np.float32)
    for rows in _groups(inputs.group_ids):
      out[rows] = win_rates(oracle_preferences(correct[rows]), unparsed=unparsed)
    return out

  fn.__name__ = name
  return stages.batch_reward(fn, name)


@dataclasses.dataclass(frozen=True, eq=False)
class PairwiseJudgeWinRate(stages.Scorer):
  r"""SPO's reward under a model judge: win rate over pairwise judgments.

  For every group (complete groups only), every pair of its completions is
  put to the ``role`` in the pairwise ``format`` (``{prompt}``, A, B),
  greedily (``ctx.generate_text``); the parsed judgments (:meth:`JudgeFormat
  .parse`) build P (:func:`preference_matrix`) and each row gets its win
  rate (:func:`win_rates`). The verifier is not read; ``info`` holds
  monitors (judgment statuses, ``spo/position_consistency``) and, when the
  tasks have verifiers, ``spo/judge_agreement`` — the fraction of parsed
  judgments equal to the perfect rater's (``JudgeFormat.agrees``).

  Attributes:
    role: the judging role (``'policy'``: the current policy judges its own
      samples; ``'judge'``: a frozen or separate judge).
    format: a pairwise ``JudgeFormat`` or its name (default ``'pairwise'``).
    position_swap: judge both orders of every pair.
    unparsed: :func:`win_rates`'s mode (``'tie'`` or ``'skip'``).
    max_new_tokens: judgment budget.
    group_size: N (a partial group is refused); None: no check.
    name: the column name.
  """

  role: str = "policy"
  format: Union[str, judging.JudgeFormat] = "pairwise"
  position_swap: bool = True
  unparsed: str = "tie"
  max_new_tokens: int = 2
  group_size: Optional[int] = None
  name: str = "judge_win_rate"

  def __post_init__(self):
    fmt = judging.get_format(self.format)
    if fmt.kind != "pairwise":
      raise ValueError(f"PairwiseJudgeWinRate.format: {fmt.name!r} is {fmt.kind};"
                       " SPO's judge compares two completions (a pairwise format)")
    if self.unparsed not in UNPARSED_MODES:
      raise ValueError(f"PairwiseJudgeWinRate.unparsed must be one of"
                       f" {UNPARSED_MODES}, got {self.unparsed!r}")
    if int(self.max_new_tokens) != self.max_new_tokens or self.max_new_tokens < 1:
      raise ValueError("PairwiseJudgeWinRate.max_new_tokens must be an integer"
                       f" >= 1, got {self.max_new_tokens!r}")

  @property
  def names(self):  # pylint: disable=invalid-overridden-method
    return (self.name,)

  @property
  def roles(self):  # pylint: disable=invalid-overridden-method
    return (self.role,)

  def __call__(self, ctx: Any, inputs: stages.RewardInputs):
    fmt = judging.get_format(self.format)
    if self.group_size is not None:
      label_free.check_complete_groups(inputs.group_ids, self.group_size,
                                       who=self.name)
    groups = _groups(inputs.group_ids)
    prompts, where = [], []
    for gi, rows in enumerate(groups):
      pairs = judged_pairs(len(rows), position_swap=self.position_swap)
      for a, b in pairs:
        ra, rb = rows[a], rows[b]
        task = inputs.tasks[ra]
        prompts.append(fmt.prompt(task.prompt, inputs.completions[ra],
                                  completion_b=inputs.completions[rb]))
        where.append((gi, a, b))
    texts = ctx.generate_text(self.role, prompts, max_new_tokens=self.max_new_tokens)
    tok = getattr(ctx, "tokenizer", None)
    scores, statuses = [], []
    for text in texts:
      finished = tok is None or len(tok.encode(text)) < int(self.max_new_tokens)
      v, status = fmt.parse(text, finished=finished)
      scores.append(v)
      statuses.append(status)
    scores = np.asarray(scores, np.float64)
    out = np.zeros((len(inputs), 1), np.float32)
    consistency, agree, parsed = [], 0, 0
    cursor = 0
    for gi, rows in enumerate(groups):
      pairs = judged_pairs(len(rows), position_swap=self.position_swap)
      s = scores[cursor:cursor + len(pairs)]
      cursor += len(pairs)
      out[rows, 0] = win_rates(preference_matrix(len(rows), pairs, s),
                               unparsed=self.unparsed)
      if self.position_swap and len(pairs):
        c = position_consistency(pairs, s)
        if math.isfinite(c):
          consistency.append(c)
      for (a, b), v in zip(pairs, s):
        task = inputs.tasks[rows[a]]
        if not math.isfinite(v) or not hasattr(task, "verify"):
          continue
        parsed += 1
        agree += int(fmt.agrees(v, task.verify(inputs.completions[rows[a]]) >= 1.0,
                                task.verify(inputs.completions[rows[b]]) >= 1.0))
    counts = judging.count_statuses(statuses)
    info = dict(counts, judgments=texts, judge_statuses=statuses,
                judge_unparsed=counts["judge/unparsed"] + counts["judge/over_budget"])
    info["spo/judge_agreement"] = agree / parsed if parsed else float("nan")
    info["spo/position_consistency"] = (float(np.mean(consistency)) if consistency
                                        else float("nan"))
    return out, info

  def __hash__(self):
    return id(self)


__all__ = ["PairwiseJudgeWinRate", "UNPARSED_MODES", "judged_pairs",
           "oracle_preferences", "position_consistency", "preference_matrix",
           "verifier_win_rate", "win_rates"]
