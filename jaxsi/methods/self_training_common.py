"""Filters, pair builders and samplers shared by the self-training methods.

Everything here is host-side (JSON records of sampled candidates, see
``Samples.records`` of the round context) and pure: the same records give the
same examples, whatever the order chunks were generated in. Each filter names
the paper it comes from. Nothing here imports ``jaxsi.training``: sampling
and scoring go through the round context ``ctx`` a callback receives
(``ctx.sample``: the on-policy loop's rollout and reward stages; ``ctx.sequence_logprobs``).
"""

from __future__ import annotations

import collections
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.rewards import voting
from jaxsi.sampling import rollouts

Record = dict      # one sampled candidate (JSON): task_id, prompt, completion, ...
Example = dict     # one training example: prompt, completion, task_id


def group_by_task(records: Sequence[Record]) -> dict[str, list[Record]]:
  """Records grouped by task id, in first-appearance order."""
  groups: dict[str, list[Record]] = {}
  for r in records:
    groups.setdefault(r["task_id"], []).append(r)
  return groups


def task_examples(tasks: Sequence[Any]) -> list[Example]:
  """Supervised examples (prompt → target) of labeled tasks."""
  return [dict(prompt=t.prompt, completion=t.target, task_id=t.id) for t in tasks]


def check_rollout(method: str, rollout: Any) -> spec_lib.RolloutSpec:
  """``rollout`` if it is a :class:`~jaxsi.spec.RolloutSpec` (a factory's
  shared sampling settings), else a TypeError naming ``method``."""
  if not isinstance(rollout, spec_lib.RolloutSpec):
    raise TypeError(f"{method}: rollout must be a jaxsi.spec.RolloutSpec, got"
                    f" {type(rollout).__name__} {rollout!r}")
  return rollout


GREEDY = spec_lib.RolloutSpec(n=1, temperature=0.0)


def sample(ctx: Any, tasks: Sequence[Any], rollout: spec_lib.RolloutSpec, *,
           params: Any = None, rng: Any = None, keep_cache: bool = False) -> Any:
  """``ctx.sample``: ``rollout.n`` graded samples per task under the strategy of
  ``rollout`` (``rollouts.strategy_of``: greedy at temperature 0). Its
  ``max_new_tokens`` is not used: a rounds run has one completion budget,
  ``RoundsConfig.max_new_tokens``. ``rng`` defaults to ``ctx.rng``;
  ``keep_cache`` keeps the KV caches for ``ctx.continue_samples``."""
  extra = {"keep_cache": True} if keep_cache else {}
  return ctx.sample(tasks, n=int(rollout.n), temperature=float(rollout.temperature),
                    strategy=rollouts.strategy_of(rollout), params=params, rng=rng,
                    **extra)


def sample_records(ctx: Any, tasks: Sequence[Any], rollout: spec_lib.RolloutSpec, *,
                   with_logprob: bool = False, params: Any = None, rng: Any = None,
                   **extra) -> list[Record]:
  """The records of :func:`sample` (optionally with log π(y|x)).

  ``logprob`` is the sequence log-likelihood under the sampling model at
  temperature 1, ``logprob_mean`` its per-token mean; ``extra`` fields are
  added to every record.
  """
  if not tasks:
    return []
  ro = sample(ctx, tasks, rollout, params=params, rng=rng)
  fields = dict(extra)
  if with_logprob:
    total = ctx.sequence_logprobs(ro.traj, params=params)
    mean = ctx.sequence_logprobs(ro.traj, params=params, normalize=True)
    fields.update(logprob=[float(x) for x in total],
                  logprob_mean=[float(x) for x in mean])
  return ro.records(**fields)


# ---------------------------------------------------------------- filters
def keep_correct(records: Sequence[Record], *, max_per_prompt: Optional[int] = None,
                 distinct: bool = True, key: str = "correct") -> list[Example]:
  """Rejection sampling: keep verified samples, distinct per problem, capped.

  The filter of STaR (Zelikman et al. 2022, Alg. 1 line 6: keep ŷ = y), RFT
  (Yuan et al. 2023, §3.3: distinct reasoning paths per question) and
  ReST-EM (Singh et al. 2023, §3: binary reward, at most K solutions per
  problem). Samples are taken in record order.

  Args:
    records: candidate records (``task_id``, ``prompt``, ``completion``, and
      the boolean field ``key``).
    max_per_prompt: at most this many kept per problem (None: all).
    distinct: drop repeated completion texts of one problem.
    key: the acceptance field.

  Returns:
    Training examples ``{'prompt', 'completion', 'task_id'}``.
  """
  out, seen, count = [], set(), collections.Counter()
  for r in records:
    if not r[key]:
      continue
    tid = r["task_id"]
    if max_per_prompt is not None and count[tid] >= max_per_prompt:
      continue
    if distinct:
      k = (tid, r["completion"])
      if k in seen:
        continue
      seen.add(k)
    count[tid] += 1
    out.append(dict(prompt=r["prompt"], completion=r["completion"], task_id=tid))
  return out


def build_pairs(records: Sequence[Record], *, max_pairs_per_problem: int = 4,
                key: str = "correct", all_pairs: bool = False) -> list[dict]:
  """Preference pairs correct ≻ incorrect within each problem (V-STaR).

  V-STaR (Hosseini et al. 2024, §3, Eq. 2): the verifier's DPO data are all
  pairs (y⁺, y⁻) of correct and incorrect solutions of the same problem. We
  take distinct completions, pair the i-th correct with the i-th incorrect
  (cycling the shorter list) up to ``max(#correct, #incorrect)`` pairs,
  capped at ``max_pairs_per_problem`` — every solution appears, the count
  stays linear. With ``all_pairs`` every distinct (correct, incorrect)
  combination is taken instead (correct-major order), up to the same cap —
  the paper's "all correct × incorrect pairs of a problem".

  Returns:
    ``{'prompt', 'chosen', 'rejected', 'task_id'}`` dicts.
  """
  out = []
  for tid, recs in group_by_task(records).items():
    pos, neg = [], []
    for r in recs:
      lst = pos if r[key] else neg
      if r["completion"] not in lst:
        lst.append(r["completion"])
    if not pos or not neg:
      continue
    if all_pairs:
      combos = [(c, w) for c in pos for w in neg][:max_pairs_per_problem]
    else:
      num = min(max(len(pos), len(neg)), max_pairs_per_problem)
      combos = [(pos[i % len(pos)], neg[i % len(neg)]) for i in range(num)]
    for c, w in combos:
      out.append(dict(prompt=recs[0]["prompt"], chosen=c, rejected=w, task_id=tid))
  return out


def best_of_n(records: Sequence[Record], *, score: str) -> list[Record]:
  """The highest-``score`` record of every problem (first on ties)."""
  out = []
  for recs in group_by_task(records).values():
    out.append(max(recs, key=lambda r: (r[score], -r["sample"])))
  return out


def answer_agreement(records: Sequence[Record]) -> list[float]:
  """Per record: fraction of its problem's samples with the same answer.

  The self-consistency score (Wang et al. 2022); a label-free reward. An
  unparseable answer (None) scores 0.
  """
  groups = group_by_task(records)
  counts = {tid: collections.Counter(r["answer"] for r in recs if r["answer"] is not None)
            for tid, recs in groups.items()}
  sizes = {tid: len(recs) for tid, recs in groups.items()}
  return [0.0 if r["answer"] is None else counts[r["task_id"]][r["answer"]] / sizes[r["task_id"]]
          for r in records]


def majority_filter(records: Sequence[Record], *, min_agreement: float = 0.5,
                    length_filter: bool = True, length_tolerance: int = 0
                    ) -> tuple[list[Record], dict]:
  """Self-labelling by majority vote, then a length filter (Lee et al. 2025).

  "Self-Improving Transformers Overcome Easy-to-Hard and Length
  Generalization Challenges" (Lee et al. 2025, §3.2): the model's own
  answers on problems one level harder become training labels, kept only
  when (i) a majority of the samples agree (self-consistency voting) and
  (ii) the output length is what the round's outputs usually have (length
  filtering drops truncated/overlong answers, the dominant error mode of
  length generalisation).

  Per problem the majority answer ``a*`` (ties: earliest) is kept iff its
  vote share ≥ ``min_agreement``; the label is the first completion giving
  ``a*``. With ``length_filter`` the completion length must be within
  ``length_tolerance`` characters of the modal length of the problem's
  difficulty level among the majority-kept labels.

  Returns:
    (kept records, metrics: problems, voted, kept, label_accuracy of kept
    against gold, and of the unfiltered majority labels).
  """
  groups = group_by_task(records)
  voted = []
  for recs in groups.values():
    answers = [r["answer"] for r in recs if r["answer"] is not None]
    if not answers:
      continue
    counts = collections.Counter(answers)
    top = max(counts.values())
    winner = next(a for a in answers if counts[a] == top)
    label = next(r for r in recs if r["answer"] == winner)
    voted.append((label, top / len(recs)))
  all_majority = [lab for lab, _ in voted]
  kept = [lab for lab, share in voted if share >= min_agreement]
  if length_filter and kept:
    modal = {}
    for d in sorted({r["difficulty"] for r in kept}):
      lens = collections.Counter(len(r["completion"]) for r in kept if r["difficulty"] == d)
      modal[d] = max(lens.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    kept = [r for r in kept
            if abs(len(r["completion"]) - modal[r["difficulty"]]) <= length_tolerance]
  metrics = dict(problems=len(groups), voted=len(all_majority), kept=len(kept),
                 label_accuracy=float(np.mean([r["correct"] for r in kept])) if kept else 0.0,
                 unfiltered_label_accuracy=(float(np.mean([r["correct"] for r in all_majority]))
                                            if all_majority else 0.0))
  return kept, metrics


def to_examples(records: Sequence[Record]) -> list[Example]:
  return [dict(prompt=r["prompt"], completion=r["completion"], task_id=r["task_id"])
          for r in records]


def sample_stats(records: Sequence[Record]) -> dict:
  """Sample accuracy, pass@n (any correct per problem), distinct correct/problem."""
  if not records:
    return dict(sample_accuracy=0.0, pass_at_n=0.0, distinct_correct=0.0)
  groups = group_by_task(records)
  return dict(
      sample_accuracy=float(np.mean([r["correct"] for r in records])),
      pass_at_n=float(np.mean([any(r["correct"] for r in g) for g in groups.values()])),
      distinct_correct=float(np.mean([len({r["completion"] for r in g if r["correct"]})
                                      for g in groups.values()])))


# ------------------------------------------------------- best-of-N evaluation
def best_of_n_accuracy(scores: np.ndarray, correct: np.ndarray, n: int) -> float:
  """Accuracy of picking the top-scored of each group of ``n`` (first on ties)."""
  s, c = np.asarray(scores).reshape(-1, n), np.asarray(correct).reshape(-1, n)
  return float(np.mean(c[np.arange(len(c)), np.argmax(s, axis=1)]))


def majority_accuracy(answers: Sequence[Any], correct: np.ndarray, n: int) -> float:
  """maj@n: accuracy of the majority answer of each group of ``n``."""
  votes = []
  for i in range(len(correct) // n):
    _, idx = voting.majority_vote(answers[i * n:(i + 1) * n])
    votes.append(bool(correct[i * n + idx]) if idx is not None else False)
  return float(np.mean(votes)) if votes else 0.0


def pair_ranking_accuracy(scores: np.ndarray, correct: np.ndarray, n: int) -> float:
  """Over all (correct, incorrect) pairs within a group of ``n``: fraction the
  score ranks correct above incorrect (ties count 1/2). NaN without pairs.

  The held-out analogue of DPO's training pair accuracy: does the score
  separate right from wrong samples of the *same* problem?
  """
  s, c = np.asarray(scores).reshape(-1, n), np.asarray(correct).reshape(-1, n)
  wins, total = 0.0, 0
  for si, ci in zip(s, c):
    pos, neg = si[ci], si[~ci]
    if len(pos) and len(neg):
      diff = pos[:, None] - neg[None, :]
      wins += float(np.sum(diff > 0) + 0.5 * np.sum(diff == 0))
      total += diff.size
  return wins / total if total else float("nan")


def sampled_eval(ctx: Any, tasks: Sequence[Any], *, n: int,
                 temperature: float, seed_offset: int = 777, params: Any = None
                 ) -> tuple[dict, Any, np.ndarray]:
  """``n`` samples per held-out task at ``temperature`` and the selectors on them.

  Metrics: ``random_choice`` (mean sample accuracy = expected accuracy of a
  random pick = sampling pass@1), ``majority`` (maj@n), ``pass_at_n`` (the
  oracle: any sample correct), ``likelihood_best_of_n`` (pick the sample
  with the highest log π(y|x) under the sampling model: the target of
  SFT-Sharpening, Huang et al. 2024), ``likelihood_pair_accuracy``.
  The samples are :func:`sample` (a rollout stage and the reward stages) with a
  key fixed per run (``config.seed + seed_offset``), so every round is
  evaluated on equally drawn samples. ``params`` (default: the
  round's model) samples and scores.

  Returns:
    (metrics, the rollout, f32[len(tasks)·n] log π(y|x)).
  """
  ro = sample(ctx, tasks, spec_lib.RolloutSpec(n=n, temperature=temperature),
              params=params, rng=jax.random.key(ctx.config.seed + seed_offset))
  correct = np.asarray(ro.correct, bool)
  logp = ctx.sequence_logprobs(ro.traj, params=params)
  out = dict(n=n, temperature=float(temperature), random_choice=float(correct.mean()),
             pass_at_n=float(correct.reshape(-1, n).any(axis=1).mean()),
             majority=majority_accuracy(ro.answers, correct, n),
             likelihood_best_of_n=best_of_n_accuracy(logp, correct, n),
             likelihood_pair_accuracy=pair_ranking_accuracy(logp, correct, n))
  return out, ro, logp
