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
  and Fig. 2; ``jaxsi.rewards.judging``). With ``judge_samples`` = 1 the
  judgment is greedy; with k > 1 (GK, not checked against the paper's text:
  the paper samples 3 judgments per response and averages their scores) k
  judgments are sampled at ``judge_temperature`` and the parsed scores
  averaged (:func:`average_judgments`: unparsed judgments are skipped, a
  candidate with no parsed judgment is unscored and never paired).
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
from typing import Any, Optional, Sequence, Union

import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import judging
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts
from jaxsi.sampling import strategies
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import base as transforms_base
from jaxsi.transforms import pairs as pairs_lib


def average_judgments(fmt: judging.JudgeFormat, texts: Sequence[str],
                      finished: Sequence[bool]) -> tuple[Optional[float], str, list]:
  """One candidate's score from its k judgments: the mean of the parsed ones.

  Self-Rewarding LMs (Yuan et al. 2024, §3.1) and Meta-Rewarding LMs (Wu et
  al. 2024, arXiv:2407.19594, §2.1) sample several judgments per response
  and average their scores. An unparsed judgment is skipped (not counted as
  a low score); with none parsed the candidate is unscored.

  Args:
    fmt: the (pointwise) format of the judgments.
    texts: the k judgment texts.
    finished: per judgment, whether it stopped before its token budget.

  Returns:
    (mean parsed score or None, status — ``ok`` if any judgment parsed, else
    ``over_budget`` if any ran out of budget, else ``unparsed`` — and the k
    parsed scores, None where unparsed).
  """
  if len(texts) != len(finished):
    raise ValueError(f"average_judgments: {len(texts)} judgments, {len(finished)} flags")
  per, statuses = [], []
  for text, fin in zip(texts, finished):
    sc, st = fmt.parse(text, finished=bool(fin))
    per.append(float(sc) if math.isfinite(sc) else None)
    statuses.append(st)
  parsed = [x for x in per if x is not None]
  if parsed:
    return float(np.mean(parsed)), judging.OK, per
  status = judging.OVER_BUDGET if judging.OVER_BUDGET in statuses else judging.UNPARSED
  return None, status, per


def sample_unstored(ctx: Any, tasks: Sequence[Any], rollout: spec.RolloutSpec, *,
                    params: Any = None, rng: Any = None) -> list[str]:
  """Texts of ``common.sample`` of ``tasks``, one sampler batch per call.

  Judging prompts vary in length (they contain the candidates, and a
  meta-judging prompt two judgments), so the batches of one ``ctx.sample``
  call can fall into different prompt buckets, whose trajectories do not
  concatenate (``trajectory.pad_length`` pads the [B, T] fields but not the
  sampler's [B, T] extras). Calling once per batch of
  ``config.rollout_batch // n`` tasks (the batches ``ctx.sample`` would cut)
  sidesteps that; the rollouts are not stored with the chunk (a chunk's
  stored parts must share one length). Batch c0 uses ``fold_in(rng, c0)``.
  """
  tasks = list(tasks)
  per = max(1, int(ctx.config.rollout_batch) // int(rollout.n))
  rng = ctx.rng if rng is None else rng
  texts = []
  for c0 in range(0, len(tasks), per):
    ro = common.sample(ctx, tasks[c0:c0 + per], rollout, params=params,
                       rng=jax.random.fold_in(rng, c0))
    if ctx.generated and ctx.generated[-1] is ro:
      ctx.generated.pop()
    texts += list(ro.texts)
  return texts


def sample_judgments(ctx: Any, tasks: Sequence[Any], texts: Sequence[str],
                     fmt: judging.JudgeFormat, *, k: int = 1, temperature: float = 1.0,
                     params: Any = None, samples: Any = None,
                     rng: Any = None) -> tuple[list, list]:
  """k judgments of each of ``texts`` (answers to ``tasks``) by the round's model.

  k = 1: greedy; k > 1: k samples at ``temperature`` (independent keys).
  Given ``samples`` (the ``ctx.sample(keep_cache=True)`` result whose texts
  are ``texts``) and a continuation template
  (``jaxsi.sampling.continuation.suffix_of``), every judgment is decoded from
  the generation's KV cache (``ctx.continue_samples``, once per judgment
  index, each call on the same caches); otherwise the judging prompts are
  encoded from scratch (``ctx.sample`` with ``n = k``). The caches are
  released afterwards either way.

  Returns:
    (per candidate the list of its k judgment texts, the judging tasks
    ``data_judging.judging_tasks`` — their ``meta['correct']`` is the
    verifier's verdict, for metrics only).
  """
  k = int(k)
  jt = data_judging.judging_tasks(list(tasks), list(texts), fmt)
  if not jt:
    return [], jt
  strategy = (strategies.Greedy() if k == 1
              else strategies.Sampling(temperature=float(temperature)))
  rng = jax.random.fold_in(ctx.rng if rng is None else rng, 0x1D6E)
  judged = None
  suffix = continuation.suffix_of(fmt.template)
  if (samples is not None and suffix and getattr(samples, "caches", None)
      and list(samples.texts) == list(texts)):
    caches, cache_params = samples.caches, samples.cache_params
    runs = []
    for j in range(k):
      samples.caches, samples.cache_params = caches, cache_params
      out = ctx.continue_samples(samples, suffix, params=params, strategy=strategy,
                                 rng=jax.random.fold_in(rng, j))
      if out is None:
        runs = None
        break
      runs.append(out)
    if runs is not None:
      judged = [[runs[j][i] for j in range(k)] for i in range(len(texts))]
  if samples is not None:
    samples.caches = samples.cache_params = None   # release the device memory
  if judged is None:
    spec_k = (common.GREEDY if k == 1
              else spec.RolloutSpec(n=k, temperature=float(temperature)))
    # The judgments are not stored as a trajectory part of the chunk (their
    # texts are in the records): a chunk's stored parts must share one length,
    # and round_store.concat_chunks does not pad [B, T] extras.
    flat = sample_unstored(ctx, jt, spec_k, params=params, rng=rng)
    judged = [list(flat[i * k:(i + 1) * k]) for i in range(len(texts))]
  return judged, jt


def self_judge(ctx: Any, tasks: Sequence[Any], texts: Sequence[str],
                  fmt: judging.JudgeFormat, *, params: Any = None,
                  samples: Any = None, judge_samples: int = 1,
                  judge_temperature: float = 1.0,
                  rng: Any = None) -> tuple[list, list, list, list]:
  """The round's model judges ``texts`` (answers to ``tasks``).

  One greedy judgment per candidate (``judge_samples`` = 1), or the mean of
  ``judge_samples`` sampled ones (:func:`sample_judgments`,
  :func:`average_judgments`). The judgments are sampled through the run's
  rollout stage (jitted and batched) on ``data_judging.judging_tasks``, or
  continued from the generation's KV cache when ``samples`` carries it
  (the same judgments up to float rounding, at a fraction of the cost);
  their budget is the run's completion budget ``config.max_new_tokens`` (a
  judgment that uses all of it and does not parse is ``over_budget``).

  Returns:
    (scores (None: unscored), statuses, judgment texts — one string per
    candidate when ``judge_samples`` = 1, else the list of its k judgments —,
    verifier verdicts of the judged texts — for metrics only).
  """
  judged, jt = sample_judgments(ctx, tasks, texts, fmt, k=judge_samples,
                                temperature=judge_temperature, params=params,
                                samples=samples, rng=rng)
  if not jt:
    return [], [], [], []
  budget = int(ctx.config.max_new_tokens)
  scores, statuses = [], []
  for group in judged:
    finished = [len(ctx.tokenizer.encode(t)) < budget for t in group]
    s, status, _ = average_judgments(fmt, group, finished)
    scores.append(s)
    statuses.append(status)
  out_texts = [g[0] for g in judged] if int(judge_samples) == 1 else judged
  return scores, statuses, out_texts, [bool(t.meta["correct"]) for t in jt]


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


def judge_eval(ctx: Any, test: Sequence[Any], fmt: judging.JudgeFormat, *, n: int,
               temperature: float = 1.0, judge_samples: int = 1,
               judge_temperature: float = 1.0, keep_cache: bool = True
               ) -> tuple[dict, Any]:
  """The round's judge on held-out problems: ``n`` samples per test problem at
  ``temperature`` (key fixed per run), each judged (:func:`self_judge`).

  Returns:
    (metrics ``judge/*``: ``data_judging.judge_metrics`` (accuracy, balanced
    accuracy, ...), ``random_choice`` (mean sample accuracy), ``best_of_n``
    (pick the top-scored sample of each problem), ``pair_accuracy``
    (``common.pair_ranking_accuracy``); the samples).
  """
  ro = common.sample(ctx, list(test), spec.RolloutSpec(n=int(n), temperature=temperature),
                     rng=jax.random.key(ctx.config.seed + 4242),
                     keep_cache=keep_cache and continuation.suffix_of(fmt.template)
                     is not None)
  per = [test[i // ro.n] for i in range(len(ro.texts))]
  scores, statuses, _, _ = self_judge(ctx, per, ro.texts, fmt, samples=ro,
                                      judge_samples=judge_samples,
                                      judge_temperature=judge_temperature,
                                      rng=jax.random.key(ctx.config.seed + 4343))
  correct = np.asarray(ro.correct, bool)
  s = np.asarray([np.nan if x is None else x for x in scores], np.float64)
  out = data_judging.judge_metrics(fmt, s, statuses, correct)
  out.update({
      "judge/random_choice": float(correct.mean()),
      "judge/best_of_n": common.best_of_n_accuracy(np.nan_to_num(s, nan=-np.inf),
                                                   correct, ro.n),
      "judge/pair_accuracy": common.pair_ranking_accuracy(
          np.nan_to_num(s, nan=-np.inf), correct, ro.n)})
  return out, ro


def check_judge_samples(name: str, fmt: judging.JudgeFormat, judge_samples: Any,
                        judge_temperature: Any) -> None:
  """Raises a ValueError naming ``judge_samples`` / ``judge_temperature`` when
  they are not a positive integer / a positive temperature, or when k > 1
  judgments of a non-pointwise format would be averaged (a mean verdict is
  not a verdict)."""
  if isinstance(judge_samples, bool) or int(judge_samples) != judge_samples \
      or judge_samples < 1:
    raise ValueError(f"{name}: judge_samples must be an integer >= 1, got"
                     f" {judge_samples!r}")
  if judge_samples > 1 and fmt.kind != "pointwise":
    raise ValueError(f"{name}: judge_samples={judge_samples} averages scores; judge_format"
                     f" {fmt.name!r} is {fmt.kind} (use a pointwise format or"
                     " judge_samples=1)")
  if judge_samples > 1 and not judge_temperature > 0:
    raise ValueError(f"{name}: judge_temperature must be > 0 for judge_samples > 1,"
                     f" got {judge_temperature!r}")


def self_rewarding(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=4, temperature=1.0),
                   judge_format: Union[str, judging.JudgeFormat] = "score_1_5",
                   margin: float = 0.0, beta: float = 0.1,
                   judge_wrong_per_task: int = 1, judge_samples: int = 1,
                   judge_temperature: float = 1.0, eval_judge_n: int = 4,
                   eval_temperature: float = 1.0,
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
    judge_samples: judgments per candidate: 1 (greedy) or k > 1 sampled at
      ``judge_temperature`` and averaged (pointwise formats only; the paper
      uses 3).
    judge_temperature: the temperature of the k > 1 judgments.
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
  check_judge_samples(name, fmt, judge_samples, judge_temperature)
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
    scores, statuses, texts, _ = self_judge(ctx, per, ro.texts, fmt, samples=ro,
                                            judge_samples=judge_samples,
                                            judge_temperature=judge_temperature)
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
    out, _ = judge_eval(ctx, test, fmt, n=eval_judge_n, temperature=eval_temperature,
                        judge_samples=judge_samples, judge_temperature=judge_temperature,
                        keep_cache=reuse_cache)
    return out

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select,
      sample_chunk=sample_chunk, warm_start=warm_start, objective="dpo",
      objective_settings={"beta": float(beta)}, reference="previous",
      train_from="current", accumulate=False, include_labeled=False,
      evaluate=evaluate)


