r"""SPCT: a generative reward model trained by rule-based RL, voted at test time.

Liu et al. 2025, "Inference-Time Scaling for Generalist Reward Modeling"
(DeepSeek-GRM, arXiv:2504.02495). A *pointwise generative reward model*
(GRM) reads a query and candidate response(s) and writes text — principles,
a critique — ending in a score per response; the scores are parsed out of
the text. **Self-Principled Critique Tuning** trains it in two phases
(abstract: "rejective fine-tuning and rule-based online RL"; the details
below marked GK are general knowledge, checked against the paper's abstract
and the seed catalog, ``catalog_03.md`` [27], not its equations):

* **Cold start.** GK: rejective fine-tuning — SFT on the GRM's own sampled
  judgments whose scores agree with the label. Here: SFT on the
  verifier-labeled judgments of the labeled judging tasks (``rl_run``'s warm
  start on their targets, ``jaxsi.data.judging.judge_tasks``); *not* the
  paper's rejection step (the tiny model has no judgments to reject yet).
* **Rule-based online RL** (GK: GRPO): the GRM samples G judgments of a
  judging task; reward (GK: ±1) r = +1 if the parsed score agrees with the
  label ("the extracted pointwise scores rank the ground-truth best response
  highest"; for one response, the score matches its rating), else −1;
  an unparsed judgment gets ``unparsed_reward`` (the format penalty, −1 by
  default, i.e. the paper's rule, which rewards only a correct ranking).
  GRPO (Shao et al. 2024, arXiv:2402.03300, Eq. 3) with the k3 KL to the
  cold-start model (β = 0.04 here; the paper's β is not in the abstract).
* **Inference-time scaling** (§ abstract, "parallel sampling … voting"):
  sample k judgments of each candidate and **sum** their pointwise scores,
  S_i = Σ_{j ≤ k} S_{i,j} (GK: the paper's voting sums the scores); the
  candidate with the highest summed score is chosen (best-of-N).

The miniature (synthetic tasks, a character model) differs from the paper in
three ways, refused or documented rather than approximated:

* **One response per judging task** (pointwise, or a yes/no verdict), so the
  "rank the best of n responses highest" rule is the agreement of one
  score with the verifier's label (:meth:`JudgeFormat.agrees`: above the
  midpoint iff correct), or, with ``exact=True``, the score equal to the
  label's rating (``high`` / ``low``). Pairwise formats are refused.
* **No principles or critique text**: the parser reads the number the
  judgment starts with (``jaxsi.rewards.judging``), so what a tiny model
  writes is a score. The machinery is the paper's; the behaviour is not.
* **No meta RM.** The paper's meta RM (a scalar RM trained to predict
  whether a sampled judgment is correct, keeping the top k_meta judgments
  before voting) is not implemented; :func:`vote` sums every parsed
  judgment.

Voting: :func:`grm_scores` samples k judgments of every (problem, candidate)
with ``test_time.generate`` (one batched call per chunk), :func:`vote` sums
the first k parsed scores (unparsed judgments add nothing; a candidate with
no parsed judgment is NaN, never chosen while another has a vote — not in
the paper, which does not say), and :func:`add_votes` stores ``genrm_vote@k``
in a ``test_time.Candidates`` so ``test_time.best_of_n('genrm_vote@k')``
(the existing selector) is the GRM's best-of-N.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from jaxsi.data import judging as data_judging
from jaxsi.methods.grpo import grpo as grpo_method
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import judging
from jaxsi.sampling import test_time


def grm_reward(*, agree_reward: float = 1.0, disagree_reward: float = -1.0,
               unparsed_reward: float = -1.0, exact: bool = False) -> Callable:
  """SPCT's rule reward of sampled judgments of judging tasks.

  Args:
    agree_reward: reward of a parsed judgment that agrees with the label.
    disagree_reward: reward of a parsed judgment that does not.
    unparsed_reward: reward of a judgment with no score (format penalty).
    exact: a pointwise score must equal the label's rating (``high`` for a
      correct candidate, ``low`` for a wrong one) instead of only lying on
      the right side of the midpoint.

  Returns:
    ``fn(tasks, completions) -> f32[B]`` (``names = ('grm',)``) over
    judging tasks (``jaxsi.data.judging.judging_tasks``: ``meta['format']``,
    ``meta['correct']``).

  Raises:
    ValueError: (of the returned fn) a task that is not a judging task, or
      a pairwise format.
  """
  for name, v in (("agree_reward", agree_reward), ("disagree_reward", disagree_reward),
                  ("unparsed_reward", unparsed_reward)):
    if not np.isfinite(v):
      raise ValueError(f"grm_reward: {name} must be finite, got {v!r}")
  if not agree_reward > disagree_reward:
    raise ValueError(f"grm_reward: agree_reward ({agree_reward!r}) must exceed"
                     f" disagree_reward ({disagree_reward!r})")

  def reward(tasks: Sequence[Any], completions: Sequence[str]) -> np.ndarray:
    if len(tasks) != len(completions):
      raise ValueError(f"grm_reward: {len(tasks)} tasks for {len(completions)}"
                       " completions")
    out = np.empty((len(tasks),), np.float32)
    for i, (t, c) in enumerate(zip(tasks, completions)):
      meta = t.meta or {}
      if t.category != data_judging.CATEGORY or "correct" not in meta:
        raise ValueError(f"grm_reward: task {t.id!r} (category {t.category!r}) is not"
                         " a judging task (jaxsi.data.judging.judging_tasks, or"
                         " rl_run.run.task = 'judge')")
      fmt = judging.get_format(meta["format"])
      if fmt.kind == "pairwise":
        raise ValueError(f"grm_reward: format {fmt.name!r} is pairwise; SPCT here"
                         " judges one response per task (pointwise or verdict)")
      score, status = fmt.parse(c)
      correct = bool(meta["correct"])
      if status not in (judging.OK, judging.TIE):
        out[i] = unparsed_reward
      elif exact and fmt.kind == "pointwise":
        out[i] = agree_reward if score == float(fmt.label(correct)) else disagree_reward
      else:
        out[i] = agree_reward if fmt.agrees(score, correct) else disagree_reward
    return out

  reward.names = ("grm",)
  return reward


def spct(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=4, temperature=1.0),
         optim: OptimSpec = OptimSpec(), agree_reward: float = 1.0,
         disagree_reward: float = -1.0, unparsed_reward: float = -1.0,
         exact: bool = False, eps_low: float = 0.2, eps_high: float = 0.2,
         kl_coef: float = 0.04, kl_estimator: str = "k3",
         agg: str = "seq-mean-token-mean", drop_zero_variance: bool = True,
         extra_transforms: Sequence[Any] = (), name: str = "spct"):
  r"""SPCT's rule-based online RL of a generative RM (Liu et al. 2025,
  arXiv:2504.02495; see the module docstring for what is GK).

  GRPO (``jaxsi.methods.grpo.grpo``) whose tasks are judging tasks (the
  run's task set: ``rl_run.run.task = 'judge'``, built from synthetic tasks
  with verifier labels by ``jaxsi.data.judging.judge_tasks``) and whose
  reward is :func:`grm_reward` of each sampled judgment.

  Args:
    rollout: G judgments per judging task, their token budget, temperature.
    optim: epochs × minibatches.
    agree_reward, disagree_reward, unparsed_reward, exact: :func:`grm_reward`.
    eps_low, eps_high, kl_coef, kl_estimator, agg, drop_zero_variance,
      extra_transforms: as :func:`jaxsi.methods.grpo.grpo`.
    name: method name.

  Returns:
    The on-policy ``spec.Method``.
  """
  return grpo_method(
      rollout=rollout, optim=optim,
      reward_fns=(grm_reward(agree_reward=agree_reward, disagree_reward=disagree_reward,
                             unparsed_reward=unparsed_reward, exact=exact),),
      eps_low=eps_low, eps_high=eps_high, kl_coef=kl_coef, kl_estimator=kl_estimator,
      scale="group", agg=agg, drop_zero_variance=drop_zero_variance,
      extra_transforms=extra_transforms, name=name)


# ------------------------------------------------------------ test-time voting
def grm_scores(model: Any, params: Any, tokenizer: Any, tasks: Sequence[Any],
               candidates: Sequence[Sequence[str]], *, k: int,
               judge_format: Union[str, judging.JudgeFormat], max_new_tokens: int,
               strategy: Any, rng: Any, batch_size: int = 256) -> np.ndarray:
  """f32[P, N, k]: k sampled judgments of each of N candidates of P problems.

  Every (problem, candidate) becomes a judging task
  (``data_judging.judging_tasks``); ``test_time.generate`` samples ``k``
  judgments of each (batched); each is parsed by ``judge_format`` (NaN:
  unparsed, or over budget).

  Raises:
    ValueError: ragged candidates, k < 1, or a pairwise format.
  """
  fmt = judging.get_format(judge_format)
  if fmt.kind == "pairwise":
    raise ValueError(f"grm_scores: {fmt.name!r} is pairwise; the GRM here is pointwise")
  if int(k) != k or k < 1:
    raise ValueError(f"grm_scores: k must be an integer >= 1, got {k!r}")
  if len(tasks) != len(candidates):
    raise ValueError(f"grm_scores: {len(tasks)} tasks for {len(candidates)} candidate lists")
  n = len(candidates[0]) if candidates else 0
  if any(len(c) != n for c in candidates) or n < 1:
    raise ValueError("grm_scores: every problem needs the same number (>= 1) of candidates")
  flat_t = [t for t, cs in zip(tasks, candidates) for _ in cs]
  flat_c = [c for cs in candidates for c in cs]
  jt = data_judging.judging_tasks(flat_t, flat_c, fmt)
  got = test_time.generate(model, params, tokenizer, jt, n=int(k),
                           max_new_tokens=int(max_new_tokens), strategy=strategy,
                           rng=rng, batch_size=batch_size, scores=())
  out = np.full((len(jt), int(k)), np.nan, np.float32)
  for i, row in enumerate(got.texts):
    for j, text in enumerate(row):
      score, _ = fmt.parse(text, finished=bool(got.lengths[i, j] < max_new_tokens))
      out[i, j] = score
  return out.reshape(len(tasks), n, int(k))


def vote(scores: np.ndarray, k: Optional[int] = None) -> np.ndarray:
  """f32[P, N]: the sum of the first ``k`` parsed scores of every candidate.

  SPCT's voting (GK: S_i = Σ_j S_{i,j}). Unparsed (NaN) judgments add
  nothing; a candidate without any parsed judgment among its first k is NaN.

  Raises:
    ValueError: not a [P, N, K] array, or k outside [1, K].
  """
  s = np.asarray(scores, np.float64)
  if s.ndim != 3:
    raise ValueError(f"vote: scores must be f32[P, N, K], got shape {s.shape}")
  k = s.shape[2] if k is None else k
  if int(k) != k or not 1 <= k <= s.shape[2]:
    raise ValueError(f"vote: k must be an integer in [1, {s.shape[2]}], got {k!r}")
  s = s[:, :, :int(k)]
  parsed = np.isfinite(s)
  total = np.where(parsed, s, 0.0).sum(axis=2)
  return np.where(parsed.any(axis=2), total, np.nan).astype(np.float32)


def add_votes(c: test_time.Candidates, scores: np.ndarray, ks: Sequence[int]
              ) -> dict:
  """Adds ``c.scores['genrm_vote@k'] = vote(scores, k)`` for each k, and
  returns ``{'genrm_vote@k': test_time.best_of_n('genrm_vote@k')}`` (the
  GRM's best-of-N selectors, for ``test_time.sweep``).

  Raises:
    ValueError: ``scores`` not of shape [P, N, K] matching ``c``.
  """
  s = np.asarray(scores)
  if s.ndim != 3 or s.shape[:2] != (c.num_problems, c.n):
    raise ValueError(f"add_votes: scores of shape {s.shape} for {c.num_problems}"
                     f" problems × {c.n} candidates")
  out = {}
  for k in ks:
    key = f"genrm_vote@{int(k)}"
    c.scores[key] = vote(s, k)
    out[key] = test_time.best_of_n(key)
  return out


__all__ = ["add_votes", "grm_reward", "grm_scores", "spct", "vote"]
