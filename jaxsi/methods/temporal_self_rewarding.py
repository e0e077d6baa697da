r"""Temporal Self-Rewarding LMs (Wang et al. 2025, arXiv:2508.06026).

Self-Rewarding (``methods.self_rewarding``, Yuan et al. 2024): the model
judges its own samples and trains by iterative DPO on best ≻ worst pairs.
Wang et al. observe that chosen and rejected improve together, so their gap
(and DPO's gradient) shrinks; they decouple them in time, per iteration t
with the current model M_t:

1. **Anchored Rejection.** The rejected response is drawn from the *past*
   model — the initial (warm-started, SFT) model M_0, round 0 of the
   checkpoint pool (``ctx.pool``) — : N samples per prompt from M_0, judged
   by M_t (LLM-as-a-judge, as Self-Rewarding), the lowest-scored is the
   rejected y_l. The chosen candidate is the highest-scored of N samples of
   M_t. A pair needs score(y_w) − score(y_l) > ``margin``.
2. **Future-Guided Chosen.** A temporary "next-generation" model M̃_{t+1} is
   trained by DPO from M_t (reference M_t) on those anchored pairs; it
   samples ``future_n`` responses per prompt, judged by M_t; the best of them
   replaces the chosen response when its score is at least the current
   chosen's. M̃_{t+1} is then discarded (kept in its own checkpoint pool,
   ``<workdir>/temporal_future``, so a killed selection resumes without
   retraining it).
3. M_{t+1} = DPO from M_t with reference M_t on the final pairs (y_w, y_l)
   (Rafailov et al. 2023, Eq. 7; β = 0.1), as Self-Rewarding.

What was checked (GK): the two phases and their roles (rejected from the
initial SFT model, chosen curated with a temporary future model obtained by
DPO on the current anchored pairs; the judge is the current model) follow the
paper's abstract and introduction and its authors' summary. UNVERIFIED
against the paper's algorithm box: whether the future model's best response
always replaces the chosen (here: only if its judge score is ≥ the current
chosen's), the number of future samples, the future model's training length
(here ``future_steps``, default the round's M-step length) and whether the
anchored rejected set is re-judged each iteration (here: re-sampled from M_0
and re-judged by M_t every iteration).

Gold labels: used only in the warm start (as Self-Rewarding) and in the
reward-hacking metrics (``select/*``: chosen/rejected correctness, judge
accuracy); the selection reads judge scores only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_rewarding
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import judging
from jaxsi.sampling import continuation

CURRENT, PAST, FUTURE = "current", "past", "future"
FUTURE_POOL = "temporal_future"


def _score(r) -> float:
  return -np.inf if r.get("judge_score") is None else float(r["judge_score"])


def anchored_pairs(records: Sequence[dict], *, margin: float = 0.0
                   ) -> list[dict]:
  """Anchored-rejection pairs: best current sample ≻ worst past sample per task.

  Args:
    records: sample records with ``task_id``, ``prompt``, ``completion``,
      ``judge_score`` (None: unparsed, never paired), ``correct`` and
      ``source`` ('current' or 'past').
    margin: a pair needs score(chosen) − score(rejected) > ``margin``.

  Returns:
    Pairs ``{prompt, task_id, chosen, rejected, chosen_score,
    rejected_score, chosen_correct, rejected_correct, chosen_source}``, in
    task order of first appearance; ties pick the first record.
  """
  out = []
  for tid, group in common.group_by_task(records).items():
    cur = [r for r in group if r["source"] == CURRENT and r["judge_score"] is not None]
    past = [r for r in group if r["source"] == PAST and r["judge_score"] is not None]
    if not cur or not past:
      continue
    best = max(cur, key=_score)          # max/min return the first of ties
    worst = min(past, key=_score)
    if not _score(best) - _score(worst) > margin:
      continue
    out.append(dict(prompt=best["prompt"], task_id=tid, chosen=best["completion"],
                    rejected=worst["completion"], chosen_score=_score(best),
                    rejected_score=_score(worst), chosen_correct=bool(best["correct"]),
                    rejected_correct=bool(worst["correct"]), chosen_source=CURRENT))
  return out


def future_guided(pairs: Sequence[dict], future_records: Sequence[dict]) -> list[dict]:
  """The pairs with each chosen replaced by its task's best future sample
  when that one's judge score is ≥ the current chosen's (unparsed: never)."""
  best = {}
  for r in future_records:
    if r.get("judge_score") is None:
      continue
    if r["task_id"] not in best or _score(r) > _score(best[r["task_id"]]):
      best[r["task_id"]] = r
  out = []
  for p in pairs:
    f = best.get(p["task_id"])
    if f is not None and _score(f) >= p["chosen_score"]:
      p = dict(p, chosen=f["completion"], chosen_score=_score(f),
               chosen_correct=bool(f["correct"]), chosen_source=FUTURE)
    out.append(p)
  return out


def pair_metrics(pairs: Sequence[dict]) -> dict:
  """Self-Rewarding's ``pairs/*`` metrics over final pairs (for comparisons):
  count, margin_mean (judge-score gap), chosen/rejected length (characters),
  self_preferred_wrong, correct_over_wrong, and ``pairs/future_chosen`` (the
  share whose chosen came from the future model)."""
  if not pairs:
    return {"pairs/count": 0.0}
  c = np.asarray([p["chosen_correct"] for p in pairs], bool)
  w = np.asarray([p["rejected_correct"] for p in pairs], bool)
  return {
      "pairs/count": float(len(pairs)),
      "pairs/margin_mean": float(np.mean([p["chosen_score"] - p["rejected_score"]
                                          for p in pairs])),
      "pairs/chosen_len": float(np.mean([len(p["chosen"]) for p in pairs])),
      "pairs/rejected_len": float(np.mean([len(p["rejected"]) for p in pairs])),
      "pairs/self_preferred_wrong": float(np.mean(~c)),
      "pairs/correct_over_wrong": float(np.mean(c & ~w)),
      "pairs/future_chosen": float(np.mean([p["chosen_source"] == FUTURE for p in pairs])),
  }


def temporal_self_rewarding(
    *, rollout: spec.RolloutSpec = spec.RolloutSpec(n=4, temperature=1.0),
    past_n: Optional[int] = None, future_n: Optional[int] = None,
    future_steps: Optional[int] = None,
    judge_format: Union[str, judging.JudgeFormat] = "score_1_5",
    margin: float = 0.0, beta: float = 0.1, judge_wrong_per_task: int = 1,
    eval_judge_n: int = 4, eval_temperature: float = 1.0, seed: int = 0,
    name: str = "temporal_self_rewarding") -> spec.RoundsMethod:
  """Temporal Self-Rewarding (arXiv:2508.06026) as a ``RoundsMethod``.

  Args:
    rollout: N chosen candidates per prompt from the current model
      (``n``) at ``temperature``.
    past_n: rejected candidates per prompt from the initial model (default n).
    future_n: samples per prompt of the temporary future model (default n;
      0 turns Future-Guided Chosen off: anchored rejection only).
    future_steps: DPO steps of the future model (default: the round's
      M-step length, ``ctx.round_steps(r)``).
    judge_format: the LLM-as-a-judge format (pointwise or verdict).
    margin: pair only if the chosen and rejected scores differ by more.
    beta: DPO β (future model and M-step).
    judge_wrong_per_task, eval_judge_n, eval_temperature, seed: as
      ``self_rewarding.self_rewarding`` (its warm start and evaluation are
      reused).
    name: method name.

  Returns:
    The RoundsMethod.
  """
  sr = self_rewarding.self_rewarding(
      rollout=rollout, judge_format=judge_format, margin=margin, beta=beta,
      judge_wrong_per_task=judge_wrong_per_task, eval_judge_n=eval_judge_n,
      eval_temperature=eval_temperature, seed=seed, name=name)   # validates them
  fmt = judging.get_format(judge_format)
  for label, v in (("past_n", past_n), ("future_n", future_n)):
    if v is not None and (int(v) != v or v < (1 if label == "past_n" else 0)):
      raise ValueError(f"{name}: {label} must be an integer >= "
                       f"{1 if label == 'past_n' else 0}, got {v!r}")
  if future_steps is not None and (int(future_steps) != future_steps or future_steps < 1):
    raise ValueError(f"{name}: future_steps must be an integer >= 1, got {future_steps!r}")
  past_spec = dataclasses.replace(rollout, n=int(rollout.n if past_n is None else past_n))
  n_future = int(rollout.n if future_n is None else future_n)
  reuse_cache = continuation.suffix_of(fmt.template) is not None

  def judged(ctx, tasks, ro, source, cache):
    per = [tasks[i // ro.n] for i in range(len(ro.texts))]
    s, st, texts, _ = self_rewarding.self_judge(ctx, per, ro.texts, fmt,
                                                samples=ro if cache else None)
    return ro.records(judge_score=s, judge_status=st, judgment=texts, source=source)

  def sample_chunk(ctx, tasks, plan):
    del plan
    # Chosen candidates: the current model M_t (judged from its KV cache).
    cur = common.sample(ctx, tasks, rollout, keep_cache=reuse_cache)
    recs = judged(ctx, tasks, cur, CURRENT, reuse_cache)
    # Anchored rejection: the initial model M_0 (pool round 0), judged by M_t
    # (encoded from scratch: the cache is M_0's).
    past_params = ctx.pool.params(0, like=ctx.params)
    past = common.sample(ctx, tasks, past_spec, params=past_params,
                         rng=jax.random.fold_in(ctx.rng, 1))
    return recs + judged(ctx, tasks, past, PAST, False)

  def future_params(ctx, pairs):
    pool = ctx.open_pool(FUTURE_POOL)
    try:
      if ctx.round in pool:
        return pool.params(ctx.round, like=ctx.params)
      steps = int(future_steps or ctx.round_steps(ctx.round))
      params, _ = ctx.fit_pairs(params=ctx.params, reference=ctx.params,
                                pairs=[{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                       for p in pairs],
                                steps=steps, seed=ctx.config.seed * 7919 + ctx.round,
                                objective="dpo", desc=f"round{ctx.round}/future",
                                beta=float(beta))
      pool.save(ctx.round, params)
      return params
    finally:
      pool.close()

  def select(records, plan, ctx):
    del plan
    pairs = anchored_pairs(records, margin=margin)
    m = {"pairs/anchored": float(len(pairs))}
    m.update({f"anchored/{k.split('/', 1)[1]}": v
              for k, v in pair_metrics(pairs).items() if k != "pairs/future_chosen"})
    if pairs and n_future:
      tasks = {t.id: t for t in ctx.unlabeled}
      todo = [tasks[p["task_id"]] for p in pairs]
      fut = common.sample(ctx, todo, dataclasses.replace(rollout, n=n_future),
                          params=future_params(ctx, pairs),
                          rng=jax.random.fold_in(ctx.rng, 2))
      frecs = judged(ctx, todo, fut, FUTURE, False)
      pairs = future_guided(pairs, frecs)
      m["future/sample_accuracy"] = float(np.mean([r["correct"] for r in frecs]))
      m["future/tokens"] = float(fut.tokens_generated)
    m.update(pair_metrics(pairs))
    for source in (CURRENT, PAST):
      part = [r for r in records if r["source"] == source]
      if part:
        s = [np.nan if r["judge_score"] is None else r["judge_score"] for r in part]
        jm = data_judging.judge_metrics(fmt, s, [r["judge_status"] for r in part],
                                        [r["correct"] for r in part])
        m.update({f"{source}/{k}": v for k, v in jm.items()})
        m[f"{source}/sample_accuracy"] = float(np.mean([r["correct"] for r in part]))
    cur = [r for r in records if r["source"] == CURRENT]
    s = [np.nan if r["judge_score"] is None else r["judge_score"] for r in cur]
    m.update(data_judging.judge_metrics(fmt, s, [r["judge_status"] for r in cur],
                                        [r["correct"] for r in cur]))
    m.update(common.sample_stats(records))
    m.update(pairs=len(pairs))
    out = [{k: p[k] for k in ("prompt", "task_id", "chosen", "rejected")} for p in pairs]
    return [], out, m

  return dataclasses.replace(sr, sample_chunk=sample_chunk, select=select)


__all__ = ["temporal_self_rewarding", "anchored_pairs", "future_guided", "pair_metrics"]
