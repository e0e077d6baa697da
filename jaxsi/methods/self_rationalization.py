r"""Self-Rationalization (Trivedi et al. 2024, arXiv:2410.05495): a judge that
improves by DPO on preference pairs curated from its own rationales.

From the abstract (checked): the judge "generate[s] multiple judgments with
rationales for the same input, curat[es] a preference pair dataset from its
own judgements, and iteratively fine-tun[es] the judge via DPO"; two
iterations; the baseline is SFT on rationales. Here, per round t:

* **Inputs**: the judging inputs are the round's problems with candidate
  answers written by the model itself (``rollout``: n per problem), each
  with its gold label — the task verifier's verdict, i.e. the gold Likert
  score ``fmt.label(correct)`` (``high`` if correct, ``low`` if not). The
  paper's inputs are a labeled judging set with human Likert scores; this
  method *is* supervised by those labels (unlike Self-/Meta-Rewarding).
* **Judgments**: k = ``judge_samples`` (rationale, score) judgments per input
  from M_t at ``judge_temperature`` (``self_rewarding.sample_judgments``:
  decoded from the answer's KV cache when the template is a continuation).
  The miniature rationale (``rewards.judging.RATIONALE_1_5``) is the judge's
  own solution of the problem followed by the score, ``133>5``.
* **Curation** (GK, unchecked against the paper's equations: "chosen =
  judgments whose score matches the gold score, rejected = the others"):
  per input, the distinct judgments whose parsed score matches the gold
  score (``match='exact'``: equal; ``'agree'``: on the gold side of the
  scale's midpoint, ``JudgeFormat.agrees``) are chosen, the distinct
  others (wrong score or unparsed) rejected; the i-th chosen is paired with
  the i-th rejected (cycling the shorter list), at most
  ``max_pairs_per_input`` pairs (:func:`curate_pairs`). Inputs whose
  judgments all match, or none, give no pair. Not implemented (GK,
  unverified): any tie-break among several matching rationales by rationale
  quality (the OpenReview keywords mention a meta-judge).
* **Training**: DPO (Rafailov et al. 2023, Eq. 7) on the judging prompt
  x_j = ``fmt.prompt(x, y)`` with y_w / y_l the chosen / rejected judgment,
  from M_t with reference M_t (the previous iterate); two rounds in the
  paper (``RoundsConfig.rounds``).

Seed: SFT on the labeled targets and rationale judging examples
(``data.judging.judging_examples``: the judgment of a candidate is the
task's target as rationale, then the gold score) — the paper's "SFT on
rationale" seed. The answers themselves are not trained on: only the judge
learns (so held-out pass@1 changes only through the shared weights).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_rewarding as sr
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import judging
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts

MATCHES = ("exact", "agree")


def matches_gold(fmt: judging.JudgeFormat, score: Any, correct: bool, *,
                 match: str = "exact") -> bool:
  """Whether a parsed judgment score matches the gold label of its input.

  ``'exact'``: ``score == float(fmt.label(correct))`` (the gold Likert
  score: ``high`` if correct, ``low`` if not); ``'agree'``: on the gold side
  of the midpoint (``fmt.agrees``). None / NaN never match.
  """
  if match not in MATCHES:
    raise ValueError(f"matches_gold: match must be one of {MATCHES}, got {match!r}")
  if score is None or not np.isfinite(score):
    return False
  if match == "exact":
    return float(score) == float(fmt.label(bool(correct)))
  return bool(fmt.agrees(float(score), bool(correct)))


def curate_pairs(records: Sequence[dict], fmt: judging.JudgeFormat, *,
                 match: str = "exact", max_pairs_per_input: int = 1
                 ) -> tuple[list[dict], dict]:
  """Judge preference pairs from each input's own judgments (module docstring).

  Args:
    records: per judged input ``prompt``, ``completion``, ``task_id``,
      ``correct`` (the gold label), ``judgments`` (k texts) and
      ``judgment_scores`` (their parsed scores, None: unparsed).
    fmt: the judging format (the pair's prompt is ``fmt.prompt(x, y)``).
    match: ``'exact'`` or ``'agree'`` (:func:`matches_gold`).
    max_pairs_per_input: at most this many pairs per input.

  Returns:
    (pairs ``{prompt, task_id, chosen, rejected}``, metrics
    ``pairs/count``, ``pairs/inputs_paired`` (share of inputs with a pair),
    ``pairs/all_match`` / ``pairs/none_match`` (share of inputs whose
    judgments all / none match the gold score), ``pairs/chosen_len`` /
    ``pairs/rejected_len`` (mean characters)).
  """
  if int(max_pairs_per_input) != max_pairs_per_input or max_pairs_per_input < 1:
    raise ValueError(f"curate_pairs: max_pairs_per_input must be an integer >= 1, got"
                     f" {max_pairs_per_input!r}")
  pairs, paired, all_m, none_m = [], 0, 0, 0
  for r in records:
    good, bad = [], []
    for text, score in zip(r["judgments"], r["judgment_scores"]):
      lst = good if matches_gold(fmt, score, r["correct"], match=match) else bad
      if text not in good and text not in bad:
        lst.append(text)
    all_m += bool(good) and not bad
    none_m += not good
    if not good or not bad:
      continue
    paired += 1
    num = min(max(len(good), len(bad)), int(max_pairs_per_input))
    x = fmt.prompt(r["prompt"], r["completion"])
    for i in range(num):
      pairs.append(dict(prompt=x, task_id=r["task_id"], chosen=good[i % len(good)],
                        rejected=bad[i % len(bad)]))
  n = max(len(records), 1)

  def mean(v):
    return float(np.mean(v)) if len(v) else float("nan")

  return pairs, {"pairs/count": float(len(pairs)), "pairs/inputs_paired": paired / n,
                 "pairs/all_match": all_m / n, "pairs/none_match": none_m / n,
                 "pairs/chosen_len": mean([len(p["chosen"]) for p in pairs]),
                 "pairs/rejected_len": mean([len(p["rejected"]) for p in pairs])}


def self_rationalization(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=2,
                                                                          temperature=1.0),
                         judge_format: Union[str, judging.JudgeFormat] = "rationale_1_5",
                         judge_samples: int = 4, judge_temperature: float = 1.0,
                         match: str = "exact", max_pairs_per_input: int = 1,
                         beta: float = 0.1, judge_wrong_per_task: int = 1,
                         eval_judge_n: int = 4, eval_temperature: float = 1.0,
                         seed: int = 0,
                         name: str = "self_rationalization") -> spec.RoundsMethod:
  """Self-Rationalization (Trivedi et al. 2024, arXiv:2410.05495; module
  docstring) as a ``RoundsMethod``.

  Args:
    rollout: the candidate answers judged per problem (``n``, temperature).
    judge_format: a pointwise format (with a rationale: ``rationale_1_5``).
    judge_samples: k judgments per input (>= 2: pairs come from them).
    judge_temperature: their temperature (> 0).
    match: ``'exact'`` or ``'agree'`` (:func:`matches_gold`).
    max_pairs_per_input: cap on pairs per input.
    beta: DPO β.
    judge_wrong_per_task: corruptions per labeled task in the warm start's
      judging examples.
    eval_judge_n: held-out answers per test problem judged by ``evaluate``
      (k judgments each, averaged).
    eval_temperature: their temperature.
    seed: seed of the warm start's corruptions.
    name: method name.

  Returns:
    The method: DPO on the curated judge pairs from the current model,
    reference = the previous iterate.

  Raises:
    ValueError: bad settings (each names its argument).
  """
  common.check_rollout(name, rollout)
  fmt = judging.get_format(judge_format)
  if fmt.kind != "pointwise":
    raise ValueError(f"{name}: judge_format {fmt.name!r} is {fmt.kind}; the judge"
                     " writes a Likert score (pointwise)")
  sr.check_judge_samples(name, fmt, judge_samples, judge_temperature)
  if judge_samples < 2:
    raise ValueError(f"{name}: judge_samples must be >= 2 (pairs are curated from"
                     f" several judgments of one input), got {judge_samples!r}")
  if match not in MATCHES:
    raise ValueError(f"{name}: match must be one of {MATCHES}, got {match!r}")
  if int(max_pairs_per_input) != max_pairs_per_input or max_pairs_per_input < 1:
    raise ValueError(f"{name}: max_pairs_per_input must be an integer >= 1, got"
                     f" {max_pairs_per_input!r}")
  if not beta > 0:
    raise ValueError(f"{name}: beta must be > 0, got {beta!r}")
  if int(eval_judge_n) != eval_judge_n or eval_judge_n < 0:
    raise ValueError(f"{name}: eval_judge_n must be an integer >= 0, got {eval_judge_n!r}")
  reuse_cache = continuation.suffix_of(fmt.template) is not None
  k = int(judge_samples)

  def warm_start(labeled):
    return (common.task_examples(labeled)
            + data_judging.judging_examples(labeled, fmt, wrong_per_task=judge_wrong_per_task,
                                            seed=seed))

  def sample_chunk(ctx, tasks, plan):
    del plan
    ro = common.sample(ctx, tasks, rollout, keep_cache=reuse_cache)
    per = [tasks[i // ro.n] for i in range(len(ro.texts))]
    judged, _ = sr.sample_judgments(ctx, per, ro.texts, fmt, k=k,
                                    temperature=judge_temperature, samples=ro)
    budget = int(ctx.config.max_new_tokens)
    scores, statuses, per_scores = [], [], []
    for group in judged:
      s, st, ps = sr.average_judgments(
          fmt, group, [len(ctx.tokenizer.encode(t)) < budget for t in group])
      scores.append(s)
      statuses.append(st)
      per_scores.append(ps)
    return ro.records(judge_score=scores, judge_status=statuses, judgments=judged,
                      judgment_scores=per_scores)

  def select(records, plan, ctx):
    del plan, ctx
    pairs, m = curate_pairs(records, fmt, match=match,
                            max_pairs_per_input=max_pairs_per_input)
    scores = [np.nan if r["judge_score"] is None else r["judge_score"] for r in records]
    m.update(data_judging.judge_metrics(fmt, scores, [r["judge_status"] for r in records],
                                        [r["correct"] for r in records]))
    every = [matches_gold(fmt, s, r["correct"], match=match)
             for r in records for s in r["judgment_scores"]]
    m["judge/judgment_match_rate"] = float(np.mean(every)) if every else float("nan")
    m.update(common.sample_stats(records))
    m.update(pairs=len(pairs))
    return [], pairs, m

  def evaluate(ctx, test):
    if not eval_judge_n:
      return {}
    out, _ = sr.judge_eval(ctx, test, fmt, n=eval_judge_n, temperature=eval_temperature,
                           judge_samples=k, judge_temperature=judge_temperature,
                           keep_cache=reuse_cache)
    return out

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select,
      sample_chunk=sample_chunk, warm_start=warm_start, objective="dpo",
      objective_settings={"beta": float(beta)}, reference="previous",
      train_from="current", accumulate=False, include_labeled=False,
      evaluate=evaluate)


__all__ = ["MATCHES", "curate_pairs", "matches_gold", "self_rationalization"]
