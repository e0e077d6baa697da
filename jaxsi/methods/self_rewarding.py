r"""Self-Rewarding Language Models (Yuan et al. 2024, arXiv:2401.10020).

The model is its own reward model. §2 of the paper:

* **Seed** (M_1): SFT on instruction data (IFT) *and* LLM-as-a-judge
  evaluation data (EFT), so the model can both answer and judge. Here:
  the labeled tasks' targets plus judging examples of them
  (``jaxsi.data.judging.judging_examples``: the target and corrupted
  candidates, labeled by the task verifier) — the last use of gold labels.
* **Self-instruction creation** (§2.2) for iteration t: sample N candidate
  responses y^1..y^N per prompt x from M_t, then the *same* model M_t
  judges each one with the LLM-as-a-judge prompt (a score out of 5, §2.2
  and Fig. 2; ``jaxsi.rewards.judging``), greedily here (the paper samples
  3 judgments and averages; ``judge_samples`` is refused > 1 below rather
  than faked).
* **Preference pairs** (§2.3): "the highest and lowest scoring responses"
  of a prompt form (y_w, y_l), dropped "if their scores are the same"
  — ``jaxsi.transforms.pairs.best_vs_worst`` with ``margin`` (0: any
  difference), over the parsed scores (unparsed judgments are skipped).
* **Iterative DPO** (§2.3, §3.2): M_{t+1} = DPO from M_t on the pairs of
  iteration t with reference M_t (the previous iterate): loss
  −log σ(β [log π(y_w|x)/π_{M_t}(y_w|x) − log π(y_l|x)/π_{M_t}(y_l|x)])
  (Rafailov et al. 2023, Eq. 7; ``jaxsi.transforms.preference``),
  β = 0.1 in the paper.

No gold label reaches the selection after the warm start: the verifier's
verdicts are stored next to the samples only for the reward-hacking metrics
of the selection step (``select/*``): judge accuracy against the verifier,
mean judge score on correct vs wrong samples, chosen vs rejected length,
and the share of pairs whose *chosen* answer is wrong (self-preferred wrong
answers). ``evaluate`` measures the judge on held-out problems: N samples
per test problem at temperature 1, judged by the round's model: judge
accuracy, balanced accuracy, and best-of-N by judge score vs random choice.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Union

import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import judging
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import base as transforms_base
from jaxsi.transforms import pairs as pairs_lib


def self_judge(ctx: Any, tasks: Sequence[Any], texts: Sequence[str],
                  fmt: judging.JudgeFormat, *, params: Any = None,
                  samples: Any = None) -> tuple[list, list, list, list]:
  """The round's model judges ``texts`` (answers to ``tasks``), greedily.

  The judgments are sampled through ``ctx.sample`` (the run's rollout
  stage, jitted and batched) on ``data_judging.judging_tasks``; their budget
  is the run's completion budget ``config.max_new_tokens`` (a judgment that
  uses all of it and does not parse is ``over_budget``).

  Given ``samples`` (the ``ctx.sample(keep_cache=True)`` result whose texts
  are ``texts``), a continuation template (``{prompt}{completion}<suffix>``,
  ``jaxsi.sampling.continuation.suffix_of``) and the sampling parameters,
  the judgments are decoded from the generation's KV cache
  (``ctx.continue_samples``: only the suffix and the judgment run through the
  model) — the same judgments up to float rounding, at a fraction of the
  cost; otherwise the judging prompts are encoded from scratch.

  Returns:
    (scores (None: unparsed), statuses, judgment texts, verifier verdicts
    of the judged texts — for metrics only).
  """
  jt = data_judging.judging_tasks(list(tasks), list(texts), fmt)
  if not jt:
    return [], [], [], []
  judged = None
  suffix = continuation.suffix_of(fmt.template)
  if (samples is not None and suffix and getattr(samples, "caches", None)
      and list(samples.texts) == list(texts)):
    judged = ctx.continue_samples(samples, suffix, params=params)
  if samples is not None:
    samples.caches = samples.cache_params = None   # release the device memory
  if judged is None:
    ro = common.sample(ctx, jt, common.GREEDY, params=params)
    # The judgments are not stored as a trajectory part of the chunk (their
    # texts are in the records): a chunk's stored parts must share one length,
    # and round_store.concat_chunks does not pad [B, T] extras.
    if ctx.generated and ctx.generated[-1] is ro:
      ctx.generated.pop()
    judged = list(ro.texts)
  budget = int(ctx.config.max_new_tokens)
  scores, statuses = [], []
  for text in judged:
    finished = len(ctx.tokenizer.encode(text)) < budget
    s, status = fmt.parse(text, finished=finished)
    scores.append(None if not math.isfinite(s) else float(s))
    statuses.append(status)
  return scores, statuses, judged, [bool(t.meta["correct"]) for t in jt]


def pairs_from_scores(records: Sequence[dict], *, margin: float = 0.0
                      ) -> tuple[list[dict], dict]:
  """Best-vs-worst pairs by ``judge_score`` per task (``pairs.best_vs_worst``).

  Args:
    records: sample records with ``task_id``, ``prompt``, ``completion``,
      ``judge_score`` (None: unparsed, never paired) and ``correct`` (the
      verifier; only for the metrics).
    margin: pairs need ``score_chosen − score_rejected > margin``.

  Returns:
    (pairs ``{prompt, task_id, chosen, rejected}``, metrics: the builder's
    ``pairs/*`` plus ``pairs/chosen_len``, ``pairs/rejected_len`` (mean
    characters), ``pairs/self_preferred_wrong`` (share of pairs whose chosen
    answer is wrong), ``pairs/correct_over_wrong`` (share with a correct
    chosen and a wrong rejected)).
  """
  if not records:
    return [], {"pairs/count": 0.0}
  order = {tid: g for g, tid in enumerate(common.group_by_task(records))}
  gid = np.asarray([order[r["task_id"]] for r in records], np.int32)
  s = np.asarray([np.nan if r["judge_score"] is None else r["judge_score"]
                  for r in records], np.float32)
  traj = Trajectory.create(np.zeros((len(records), 1), np.int32), group_ids=gid,
                           rewards=s[:, None])
  builder = pairs_lib.best_vs_worst(margin=float(margin))
  out, _, m = builder.update(traj, builder.init(), transforms_base.Context())
  link = np.asarray(out.pair_ids)
  chosen = np.flatnonzero(link >= 0)
  pairs = [dict(prompt=records[i]["prompt"], task_id=records[i]["task_id"],
                chosen=records[i]["completion"],
                rejected=records[link[i]]["completion"]) for i in chosen]
  metrics = {k: float(v) for k, v in jax.device_get(m).items()}

  def mean(x):
    return float(np.mean(x)) if len(x) else float("nan")

  ok_c = np.asarray([records[i]["correct"] for i in chosen], bool)
  ok_r = np.asarray([records[link[i]]["correct"] for i in chosen], bool)
  metrics.update({
      "pairs/chosen_len": mean([len(records[i]["completion"]) for i in chosen]),
      "pairs/rejected_len": mean([len(records[link[i]]["completion"]) for i in chosen]),
      "pairs/self_preferred_wrong": mean(~ok_c),
      "pairs/correct_over_wrong": mean(ok_c & ~ok_r),
  })
  return pairs, metrics


def self_rewarding(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=4, temperature=1.0),
                   judge_format: Union[str, judging.JudgeFormat] = "score_1_5",
                   margin: float = 0.0, beta: float = 0.1,
                   judge_wrong_per_task: int = 1, judge_samples: int = 1,
                   eval_judge_n: int = 4, eval_temperature: float = 1.0,
                   seed: int = 0, name: str = "self_rewarding") -> spec.RoundsMethod:
  """Self-Rewarding LM (Yuan et al. 2024, §2) as a ``RoundsMethod``.

  Args:
    rollout: N candidates per prompt (``n``) at ``temperature``; the budget
      is the run's ``RoundsConfig.max_new_tokens``.
    judge_format: the LLM-as-a-judge format (pointwise or verdict; a name in
      ``jaxsi.rewards.judging.FORMATS`` or a ``JudgeFormat``).
    margin: pair only if the best and worst scores differ by more.
    beta: DPO β.
    judge_wrong_per_task: corrupted candidates per labeled task in the
      warm start's judging data (besides the correct target).
    judge_samples: judgments per candidate; only 1 (greedy) is supported.
    eval_judge_n: held-out samples per test problem judged by ``evaluate``.
    eval_temperature: their temperature.
    seed: seed of the warm start's corruptions.
    name: method name.

  Returns:
    The method: warm start on targets + judging data, rounds of sample →
    self-judge → best-vs-worst pairs → DPO from the current model with
    reference = previous iterate.
  """
  common.check_rollout(name, rollout)
  fmt = judging.get_format(judge_format)
  if fmt.kind == "pairwise":
    raise ValueError(f"{name}: judge_format {fmt.name!r} is pairwise; Self-Rewarding"
                     " scores each response (pointwise or verdict)")
  if judge_samples != 1:
    raise ValueError(f"{name}: judge_samples={judge_samples!r} is not supported (the"
                     " paper averages 3 sampled judgments; here one greedy judgment)")
  if rollout.n < 2:
    raise ValueError(f"{name}: rollout.n must be >= 2 to form pairs, got {rollout.n}")
  if not beta > 0:
    raise ValueError(f"{name}: beta must be > 0, got {beta!r}")
  if not margin >= 0:
    raise ValueError(f"{name}: margin must be >= 0, got {margin!r}")
  if int(eval_judge_n) != eval_judge_n or eval_judge_n < 0:
    raise ValueError(f"{name}: eval_judge_n must be an integer >= 0, got {eval_judge_n!r}")

  # The judge continues the generation's KV cache when its template is a
  # continuation of the candidate (jaxsi.sampling.continuation).
  reuse_cache = continuation.suffix_of(fmt.template) is not None

  def warm_start(labeled):
    return (common.task_examples(labeled)
            + data_judging.judging_examples(labeled, fmt, wrong_per_task=judge_wrong_per_task,
                                            seed=seed))

  def sample_chunk(ctx, tasks, plan):
    del plan
    ro = common.sample(ctx, tasks, rollout, keep_cache=reuse_cache)
    per = [tasks[i // ro.n] for i in range(len(ro.texts))]
    scores, statuses, texts, _ = self_judge(ctx, per, ro.texts, fmt, samples=ro)
    return ro.records(judge_score=scores, judge_status=statuses, judgment=texts)

  def select(records, plan, ctx):
    del plan, ctx
    pairs, m = pairs_from_scores(records, margin=margin)
    scores = [np.nan if r["judge_score"] is None else r["judge_score"] for r in records]
    m.update(data_judging.judge_metrics(fmt, scores, [r["judge_status"] for r in records],
                                        [r["correct"] for r in records]))
    m.update(common.sample_stats(records))
    m.update(pairs=len(pairs))
    return [], pairs, m

  def evaluate(ctx, test):
    if not eval_judge_n:
      return {}
    ro = common.sample(ctx, list(test), spec.RolloutSpec(n=eval_judge_n,
                                                          temperature=eval_temperature),
                       rng=jax.random.key(ctx.config.seed + 4242), keep_cache=reuse_cache)
    per = [test[i // ro.n] for i in range(len(ro.texts))]
    scores, statuses, _, _ = self_judge(ctx, per, ro.texts, fmt, samples=ro)
    correct = np.asarray(ro.correct, bool)
    s = np.asarray([np.nan if x is None else x for x in scores], np.float64)
    out = data_judging.judge_metrics(fmt, s, statuses, correct)
    out.update({
        "judge/random_choice": float(correct.mean()),
        "judge/best_of_n": common.best_of_n_accuracy(np.nan_to_num(s, nan=-np.inf),
                                                     correct, ro.n),
        "judge/pair_accuracy": common.pair_ranking_accuracy(
            np.nan_to_num(s, nan=-np.inf), correct, ro.n)})
    return out

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select,
      sample_chunk=sample_chunk, warm_start=warm_start, objective="dpo",
      objective_settings={"beta": float(beta)}, reference="previous",
      train_from="current", accumulate=False, include_labeled=False,
      evaluate=evaluate)


