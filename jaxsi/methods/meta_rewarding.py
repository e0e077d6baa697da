r"""Meta-Rewarding LMs (Wu et al. 2024, arXiv:2407.19594): actor, judge, meta-judge.

One model plays three roles each iteration t (the paper's Fig. 1 and §2):

* **Actor**: N responses y^1..y^N per prompt x from M_t (``rollout``).
* **Judge**: each response is judged k times (``judge_samples``, sampled at
  ``judge_temperature``) with the LLM-as-a-judge prompt of Self-Rewarding
  LMs (Yuan et al. 2024, arXiv:2401.10020 §2.2; ``jaxsi.rewards.judging``);
  its score is the mean of the parsed judgments
  (``self_rewarding.average_judgments``).
* **Actor pairs with length control** (§2.3; the paper's idea, confirmed by
  a public summary of the paper: "shorter responses are chosen when scores
  are close"; the exact rule is GK, unchecked): with S_max / S_min the
  highest / lowest score of a prompt's responses, the responses scoring at
  least (1 − ρ)·S_max + ρ·S_min form the top tier and the *shortest* of
  them is chosen; the rejected one is the first lowest-scored response; no
  pair when S_max − S_min ≤ ``margin``. ρ = ``length_rho`` (None: no length
  control, i.e. the first best-scored response, Self-Rewarding's pair).
* **Meta-judge** (§2.2): the same model compares two judgments of one
  response, "which judgment is more accurate" (``rewards.judging``
  ``META_PAIRWISE``: ``{judging prompt}A:{judgment};B:{judgment}|meta:`` →
  ``A`` / ``B`` / ``=``), each pair of distinct judgments in **both orders**
  (position swap). GK (unchecked): the paper fills a battle matrix over the
  k judgments, weights wins by position to counter position bias and ranks
  the judgments by Elo. Here every pair of distinct judgments plays one
  battle whose outcome for A is the mean over the parsed orders of
  [s(A,B), 1 − s(B,A)] (s = 1: first better, 0: second, ½: tie); a
  judgment's strength is its win rate (:func:`battle_scores`). For a
  complete round robin the Bradley–Terry/Elo maximum-likelihood ranking is
  the ranking by total wins (Zermelo 1929; Ford 1957), so the ranking is the
  Elo one whenever all battles parse; the position weights are not applied.
* **Judge pairs**: per response, the highest-win-rate judgment ≻ the
  lowest (first on ties), when their win rates differ by more than
  ``meta_margin``; prompt = the response's judging prompt.
* **Training** (§2.4): both pair sets are trained together with DPO
  (Rafailov et al. 2023, Eq. 7) from M_t with reference M_t (the previous
  iterate); iterate.

Miniature differences (documented, not faked): the seed model is SFT'd
on targets, verifier-labeled judging examples and verifier-labeled
**meta-judging** examples (``data.judging.meta_judging_examples``: two
judgments of one candidate, labeled by which one agrees with the verifier)
— the paper's seed (Llama-3-8B-Instruct + EFT data) can meta-judge from
its instruction tuning, a tiny model must be taught the task once; that is
the last use of gold labels. Judgments are bare scores (``5``), not
rationales, so two judgments of one response differ only in their score;
there is no rubric text, and "length control" acts on answers of 2–4
characters. After the warm start no label reaches the selection: the
verifier's verdicts (``correct``, ``judgment_agrees``) are stored with the
samples for the metrics only (tested by flipping them).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_rewarding as sr
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import judging
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts


# ------------------------------------------------------------------ pieces
def length_controlled_pair(recs: Sequence[dict], *, rho: Optional[float] = 0.0,
                           margin: float = 0.0) -> Optional[tuple[dict, dict]]:
  """The actor pair of one prompt's records, or None (module docstring).

  Args:
    recs: one prompt's records with ``judge_score`` (None: unscored, never
      paired) and ``completion``.
    rho: the top tier is s ≥ (1 − ρ)·S_max + ρ·S_min, its shortest member
      (first on ties) is chosen; None: the first best-scored record.
    margin: pair only if S_max − S_min > margin.

  Returns:
    (chosen record, rejected record) or None.
  """
  scored = [r for r in recs if r["judge_score"] is not None]
  if len(scored) < 2:
    return None
  s = [float(r["judge_score"]) for r in scored]
  hi, lo = max(s), min(s)
  if not hi - lo > margin:
    return None
  rejected = scored[s.index(lo)]
  if rho is None:
    chosen = scored[s.index(hi)]
  else:
    threshold = (1.0 - rho) * hi + rho * lo
    top = [r for r, x in zip(scored, s) if x >= threshold - 1e-9 and r is not rejected]
    chosen = min(top, key=lambda r: len(r["completion"]))   # first shortest
  return chosen, rejected


def actor_pairs(records: Sequence[dict], *, rho: Optional[float] = 0.0,
                margin: float = 0.0) -> tuple[list[dict], dict]:
  """Length-controlled actor pairs per task (:func:`length_controlled_pair`).

  Returns:
    (pairs ``{prompt, task_id, chosen, rejected, kind='actor'}``, metrics
    ``pairs/count``, ``pairs/chosen_len``, ``pairs/rejected_len``,
    ``pairs/self_preferred_wrong``, ``pairs/correct_over_wrong`` — the last
    two read ``correct``, for metrics only).
  """
  pairs, rows = [], []
  for tid, recs in common.group_by_task(records).items():
    pr = length_controlled_pair(recs, rho=rho, margin=margin)
    if pr is None:
      continue
    c, w = pr
    rows.append((c, w))
    pairs.append(dict(prompt=c["prompt"], task_id=tid, chosen=c["completion"],
                      rejected=w["completion"], kind="actor"))

  def mean(x):
    return float(np.mean(x)) if len(x) else float("nan")

  ok_c = np.asarray([c["correct"] for c, _ in rows], bool)
  ok_w = np.asarray([w["correct"] for _, w in rows], bool)
  return pairs, {"pairs/count": float(len(pairs)),
                 "pairs/chosen_len": mean([len(c["completion"]) for c, _ in rows]),
                 "pairs/rejected_len": mean([len(w["completion"]) for _, w in rows]),
                 "pairs/self_preferred_wrong": mean(~ok_c),
                 "pairs/correct_over_wrong": mean(ok_c & ~ok_w)}


def battle_pairs(judgments: Sequence[str]) -> list[tuple[int, int]]:
  """The (i, j), i < j, of distinct judgment texts (equal texts tie by
  construction and are not meta-judged)."""
  return [(i, j) for i, j in itertools.combinations(range(len(judgments)), 2)
          if judgments[i] != judgments[j]]


def battle_scores(k: int, outcomes: Sequence[tuple[int, int, float, float]]
                  ) -> tuple[list[float], list[int]]:
  """Wins and battles of k judgments from position-swapped meta-judgments.

  Args:
    k: number of judgments.
    outcomes: ``(i, j, s_ij, s_ji)``: the parsed meta-judgment with i as A and
      j as B (1: A better, 0: B better, ½: tie, NaN: unparsed), and with j as
      A and i as B.

  Returns:
    (wins per judgment, battles per judgment). A battle's outcome for i is
    the mean over its parsed orders of [s_ij, 1 − s_ji] (j gets 1 minus it);
    with neither order parsed there is no battle.
  """
  wins, battles = [0.0] * k, [0] * k
  for i, j, s_ij, s_ji in outcomes:
    votes = [x for x in (s_ij, None if s_ji is None else 1.0 - s_ji)
             if x is not None and math.isfinite(x)]
    if not votes:
      continue
    w = float(np.mean(votes))
    wins[i] += w
    wins[j] += 1.0 - w
    battles[i] += 1
    battles[j] += 1
  return wins, battles


def judge_pairs(records: Sequence[dict], fmt: judging.JudgeFormat, *,
                meta_margin: float = 0.0) -> tuple[list[dict], dict]:
  """Per response: the best ≻ the worst of its judgments by meta-judge win rate.

  Args:
    records: records with ``prompt``, ``completion``, ``judgments`` (k
      texts), ``meta_wins`` / ``meta_battles`` (:func:`battle_scores`), and
      for metrics only ``judgment_agrees`` (per judgment: agrees with the
      verifier).
    fmt: the judging format (the pair's prompt is the response's judging
      prompt).
    meta_margin: pair only if the win rates differ by more.

  Returns:
    (pairs ``{prompt, task_id, chosen, rejected, kind='judge'}``, metrics
    ``judge_pairs/count``, ``judge_pairs/chosen_agrees`` (share of pairs whose
    chosen judgment agrees with the verifier), ``judge_pairs/correct_over_wrong``
    (chosen agrees, rejected does not), ``judge_pairs/wrong_over_correct``).
  """
  pairs, rows = [], []
  for r in records:
    rates = [w / b if b else None for w, b in zip(r["meta_wins"], r["meta_battles"])]
    idx = [i for i, x in enumerate(rates) if x is not None]
    if len(idx) < 2:
      continue
    best = max(idx, key=lambda i: (rates[i], -i))
    worst = min(idx, key=lambda i: (rates[i], i))
    if not rates[best] - rates[worst] > meta_margin:
      continue
    if r["judgments"][best] == r["judgments"][worst]:
      continue
    pairs.append(dict(prompt=fmt.prompt(r["prompt"], r["completion"]),
                      task_id=r["task_id"], chosen=r["judgments"][best],
                      rejected=r["judgments"][worst], kind="judge"))
    agrees = r.get("judgment_agrees") or [False] * len(r["judgments"])
    rows.append((bool(agrees[best]), bool(agrees[worst])))

  def mean(x):
    return float(np.mean(x)) if len(x) else float("nan")

  c = np.asarray([a for a, _ in rows], bool)
  w = np.asarray([b for _, b in rows], bool)
  return pairs, {"judge_pairs/count": float(len(pairs)),
                 "judge_pairs/chosen_agrees": mean(c),
                 "judge_pairs/correct_over_wrong": mean(c & ~w),
                 "judge_pairs/wrong_over_correct": mean(~c & w)}


def meta_accuracy(records: Sequence[dict], prefix: str = "meta/") -> dict:
  """How often the meta-judge prefers the judgment that agrees with the
  verifier, over the battles where exactly one of the two does (from each
  record's ``meta_outcomes`` ``(i, j, s_ij, s_ji)`` and ``judgment_agrees``;
  metrics only). ``accuracy`` counts a battle's outcome for the right
  judgment (½ for a tie), ``position_consistency`` the share of battles
  whose two orders (both parsed) pick the same judgment, ``battles`` the
  count."""
  right, consistent, count = [], [], 0
  for r in records:
    agrees = r["judgment_agrees"]
    for i, j, s_ij, s_ji in r["meta_outcomes"]:
      both = [x for x in (s_ij, s_ji) if x is not None and math.isfinite(x)]
      if len(both) == 2:
        consistent.append(float(s_ij + s_ji == 1.0))
      if bool(agrees[i]) == bool(agrees[j]):
        continue
      wins, battles = battle_scores(2, [(0, 1, s_ij, s_ji)])
      if not battles[0]:
        continue
      count += 1
      right.append(wins[0] if agrees[i] else wins[1])
  return {prefix + "accuracy": float(np.mean(right)) if right else float("nan"),
          prefix + "position_consistency": (float(np.mean(consistent)) if consistent
                                            else float("nan")),
          prefix + "battles": count}


def meta_judge(ctx: Any, tasks: Sequence[Any], completions: Sequence[str],
               judgments: Sequence[Sequence[str]], fmt: judging.JudgeFormat,
               meta_fmt: judging.JudgeFormat, *, params: Any = None) -> list[list]:
  """Position-swapped meta-judgments of every pair of distinct judgments.

  Args:
    tasks, completions: the judged responses.
    judgments: per response, its k judgment texts.
    fmt, meta_fmt: the judging and the (pairwise) meta-judging formats.

  Returns:
    Per response, ``[(i, j, s_ij, s_ji)]`` over :func:`battle_pairs` (parsed
    greedy meta-judgments; NaN: unparsed), sampled by the round's model from
    the meta-judging prompts encoded from scratch
    (``self_rewarding.sample_unstored``: one sampler batch per call, not
    stored with the chunk).
  """
  rows, per_t, per_c, ja, jb = [], [], [], [], []
  for r, (t, c, js) in enumerate(zip(tasks, completions, judgments)):
    for i, j in battle_pairs(js):
      for a, b in ((i, j), (j, i)):
        rows.append((r, i, j))
        per_t.append(t)
        per_c.append(c)
        ja.append(js[a])
        jb.append(js[b])
  out = [[] for _ in completions]
  if not rows:
    return out
  mt = data_judging.meta_judging_tasks(per_t, per_c, ja, jb, fmt, meta_fmt)
  texts = sr.sample_unstored(ctx, mt, common.GREEDY, params=params)
  scores = [meta_fmt.parse(t)[0] for t in texts]
  for q in range(0, len(rows), 2):
    r, i, j = rows[q]
    out[r].append((i, j, float(scores[q]), float(scores[q + 1])))
  return out


def _check(name, *, judge_samples, judge_temperature, length_rho, margin, meta_margin,
           beta, actor, judge, fmt, meta_fmt, rollout):
  if fmt.kind != "pointwise":
    raise ValueError(f"{name}: judge_format {fmt.name!r} is {fmt.kind}; the judge scores"
                     " each response (pointwise)")
  if meta_fmt.kind != "pairwise":
    raise ValueError(f"{name}: meta_format {meta_fmt.name!r} must be pairwise (two"
                     " judgments compared)")
  sr.check_judge_samples(name, fmt, judge_samples, judge_temperature)
  if judge and judge_samples < 2:
    raise ValueError(f"{name}: train_judge needs judge_samples >= 2 (judgments to"
                     f" compare), got {judge_samples!r}")
  if not (actor or judge):
    raise ValueError(f"{name}: train_actor and train_judge are both False (no pairs)")
  if length_rho is not None and not 0.0 <= length_rho <= 1.0:
    raise ValueError(f"{name}: length_rho must be in [0, 1] or None, got {length_rho!r}")
  if not margin >= 0:
    raise ValueError(f"{name}: margin must be >= 0, got {margin!r}")
  if not meta_margin >= 0:
    raise ValueError(f"{name}: meta_margin must be >= 0, got {meta_margin!r}")
  if not beta > 0:
    raise ValueError(f"{name}: beta must be > 0, got {beta!r}")
  if rollout.n < 2:
    raise ValueError(f"{name}: rollout.n must be >= 2 to form actor pairs, got"
                     f" {rollout.n}")


# ------------------------------------------------------------------ factory
def meta_rewarding(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=4, temperature=1.0),
                   judge_format: Union[str, judging.JudgeFormat] = "score_1_5",
                   meta_format: Union[str, judging.JudgeFormat] = "meta_pairwise",
                   judge_samples: int = 3, judge_temperature: float = 1.0,
                   length_rho: Optional[float] = 0.0, margin: float = 0.0,
                   meta_margin: float = 0.0, train_actor: bool = True,
                   train_judge: bool = True, beta: float = 0.1,
                   judge_wrong_per_task: int = 1, meta_wrong_per_task: int = 1,
                   eval_judge_n: int = 4, eval_temperature: float = 1.0,
                   seed: int = 0, name: str = "meta_rewarding") -> spec.RoundsMethod:
  """Meta-Rewarding LM (Wu et al. 2024, arXiv:2407.19594; module docstring).

  Args:
    rollout: N responses per prompt (``n``) at ``temperature``.
    judge_format: the (pointwise) LLM-as-a-judge format.
    meta_format: the (pairwise) meta-judge format over two judgments.
    judge_samples: k judgments per response (averaged; the meta-judge
      compares them).
    judge_temperature: their temperature.
    length_rho: the length-control ρ (None: off).
    margin: actor pairs need S_max − S_min > margin.
    meta_margin: judge pairs need a win-rate gap > meta_margin.
    train_actor: train the actor pairs.
    train_judge: train the judge pairs (False with ``length_rho=None``:
      Self-Rewarding with averaged judgments, under the same generation).
    beta: DPO β.
    judge_wrong_per_task: corruptions per labeled task in the warm start's
      judging examples.
    meta_wrong_per_task: corruptions per labeled task in its meta-judging
      examples.
    eval_judge_n: held-out samples per test problem judged by ``evaluate``.
    eval_temperature: their temperature.
    seed: seed of the warm start's corruptions and orders.
    name: method name.

  Returns:
    The method: DPO from the current model on actor + judge pairs,
    reference = the previous iterate.

  Raises:
    ValueError: bad settings (each names its argument).
  """
  common.check_rollout(name, rollout)
  fmt, meta_fmt = judging.get_format(judge_format), judging.get_format(meta_format)
  _check(name, judge_samples=judge_samples, judge_temperature=judge_temperature,
         length_rho=length_rho, margin=margin, meta_margin=meta_margin, beta=beta,
         actor=train_actor, judge=train_judge, fmt=fmt, meta_fmt=meta_fmt,
         rollout=rollout)
  if int(eval_judge_n) != eval_judge_n or eval_judge_n < 0:
    raise ValueError(f"{name}: eval_judge_n must be an integer >= 0, got {eval_judge_n!r}")
  reuse_cache = continuation.suffix_of(fmt.template) is not None
  k = int(judge_samples)

  def warm_start(labeled):
    return (common.task_examples(labeled)
            + data_judging.judging_examples(labeled, fmt, wrong_per_task=judge_wrong_per_task,
                                            seed=seed)
            + data_judging.meta_judging_examples(labeled, fmt, meta_fmt,
                                                 wrong_per_task=meta_wrong_per_task,
                                                 seed=seed + 1))

  def judge_and_meta(ctx, tasks, ro, params=None):
    """Per sample of ``ro``: score, status, k judgments, their parsed scores,
    and the meta-judge's battles."""
    per = [tasks[i // ro.n] for i in range(len(ro.texts))]
    judged, jt = sr.sample_judgments(ctx, per, ro.texts, fmt, k=k,
                                     temperature=judge_temperature, params=params,
                                     samples=ro)
    budget = int(ctx.config.max_new_tokens)
    scores, statuses, per_scores = [], [], []
    for group in judged:
      s, st, ps = sr.average_judgments(
          fmt, group, [len(ctx.tokenizer.encode(t)) < budget for t in group])
      scores.append(s)
      statuses.append(st)
      per_scores.append(ps)
    outcomes = meta_judge(ctx, per, ro.texts, judged, fmt, meta_fmt, params=params)
    wins, battles = zip(*[battle_scores(k, o) for o in outcomes]) if outcomes else ((), ())
    agrees = [[data_judging.judgment_agrees(fmt, j, t.meta["correct"]) for j in group]
              for group, t in zip(judged, jt)]
    return dict(judge_score=scores, judge_status=statuses, judgments=judged,
                judgment_scores=per_scores, meta_outcomes=outcomes,
                meta_wins=list(wins), meta_battles=list(battles),
                judgment_agrees=agrees)

  def sample_chunk(ctx, tasks, plan):
    del plan
    ro = common.sample(ctx, tasks, rollout, keep_cache=reuse_cache)
    return ro.records(**judge_and_meta(ctx, tasks, ro))

  def select(records, plan, ctx):
    del plan, ctx
    pairs, m = [], {}
    if train_actor:
      ap, am = actor_pairs(records, rho=length_rho, margin=margin)
      pairs += ap
      m.update(am)
    if train_judge:
      jp, jm = judge_pairs(records, fmt, meta_margin=meta_margin)
      pairs += jp
      m.update(jm)
    scores = [np.nan if r["judge_score"] is None else r["judge_score"] for r in records]
    correct = [r["correct"] for r in records]
    m.update(data_judging.judge_metrics(fmt, scores, [r["judge_status"] for r in records],
                                        correct))
    m.update(meta_accuracy(records))
    m.update(common.sample_stats(records))
    m.update(pairs=len(pairs))
    return [], pairs, m

  def evaluate(ctx, test):
    if not eval_judge_n:
      return {}
    out, ro = sr.judge_eval(ctx, test, fmt, n=eval_judge_n, temperature=eval_temperature,
                            judge_samples=k, judge_temperature=judge_temperature,
                            keep_cache=reuse_cache)
    # The meta-judge on held-out samples: the right vs the wrong label judgment
    # of each sample, in both orders (labels read for this metric only).
    per = [test[i // ro.n] for i in range(len(ro.texts))]
    pairs = [[fmt.judgment(bool(c), rationale=t.target or ""),
              fmt.judgment(not bool(c), rationale=t.target or "")]
             for c, t in zip(ro.correct, per)]
    outcomes = meta_judge(ctx, per, ro.texts, pairs, fmt, meta_fmt)
    recs = [dict(judgment_agrees=[True, False], meta_outcomes=o) for o in outcomes]
    out.update(meta_accuracy(recs, prefix="eval_meta/"))
    return out

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select,
      sample_chunk=sample_chunk, warm_start=warm_start, objective="dpo",
      objective_settings={"beta": float(beta)}, reference="previous",
      train_from="current", accumulate=False, include_labeled=False,
      evaluate=evaluate)


__all__ = ["actor_pairs", "battle_pairs", "battle_scores", "judge_pairs",
           "length_controlled_pair", "meta_accuracy", "meta_judge", "meta_rewarding"]
