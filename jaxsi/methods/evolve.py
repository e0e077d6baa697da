r"""EVOLVE and RLRF: answer, judge, refine, and train DPO on answer + refinement.

Two self-refinement methods built from the same rounds (generate → store →
select → fit) and the Self-Rewarding pieces (``self_rewarding.self_judge``,
``self_rewarding.pairs_from_scores``):

**EVOLVE** (Zeng et al. 2025, "Evolving LLMs' Self-Refinement Capability via
Iterative Preference Optimization", arXiv:2502.05605; v2 titled "ARIES").
From the abstract: preference training alternates with self-refinement-driven
data collection; training strengthens direct answering *and* unlocks
self-refinement; at inference the model writes progressively refined
responses, which are "filtered using either Reward Model Scoring or a
simple yet effective Rule-Based Selection" (v2 abstract) into the next
round's preference data. The details below are general knowledge (GK) of
the paper's §3, not checked against its equations (the search corpus holds
only its abstract):

* GK, the objective (the paper's Eq. 5): DPO on the direct answer plus DPO
  on the refinement of the rejected answer, with the refinement prompt z,
  L = −log σ(β[log π(y_w|x)/π_ref(y_w|x) − log π(y_l|x)/π_ref(y_l|x)])
      −log σ(β[log π(y_w|x,y_l,z)/π_ref(y_w|x,y_l,z)
               − log π(y_l|x,y_l,z)/π_ref(y_l|x,y_l,z)]).
  Here each preference pair (x, y_w, y_l) gives a *direct* pair (prompt x)
  and a *refinement* pair (prompt ``refine_template(x, y_l)``, same chosen
  and rejected); the M-step's DPO averages over all pairs, i.e. the sum of
  the two terms up to a factor 1/2 (both kinds come in equal numbers).
  ``direct_pairs`` / ``refine_pairs`` switch either term off.
* GK, the SFT stage (the paper's Eq. 4: SFT on refining a suboptimal answer
  into a better one, next to direct answering): the warm start here is the
  labeled targets, plus per labeled task ``refine_template(x, c) → target``
  for c its target and ``refine_wrong_per_task`` corruptions
  (``data_judging.candidates``), plus the judge's verifier-labeled examples
  when the model judges.
* Inference-time data collection: per problem, ``rollout.n`` answers y₀;
  each refined ``refine_steps`` times, y_k = M(refine_template(x, y_{k−1})).
* Selection, ``selection='judge'`` ("Reward Model Scoring"; the reward
  model is the model itself, LLM-as-a-judge as in Self-Rewarding, Yuan et
  al. 2024, arXiv:2401.10020 §2.2): every answer and refinement is judged;
  the highest- and lowest-scored of the problem's *set of originals and
  refinements* form the pair (``pairs_from_scores``; equal scores: none).
  ``selection='rule'`` (GK: "Rule-Based Selection"): the last refinement y_K
  is preferred to its original y₀ whenever they differ — it trusts the
  trained refiner, no judge is called.
* Iterated: DPO from the current model, reference = the previous iterate.

**RLRF** (Lee et al. 2024, "Reinforcement Learning from Reflective Feedback:
Aligning and Improving LLMs via Fine-Grained Self-Reflection",
arXiv:2403.14238). From the abstract: fine-grained feedback on detailed
criteria; a self-reflection mechanism explores and refines responses; the
model is fine-tuned by an RL algorithm on the promising ones. GK (the seed
catalog, ``catalog_03.md`` [23], and a public summary; not the paper's
equations): a feedback model rates each response on several aspects
(factuality, logical correctness, …, a 3-level rubric); the top-rated
responses are refined by the policy *conditioned on that feedback*; DPO on
pairs ranked by the ratings over all n + m candidates; 2 iterations.
:func:`rlrf` is :func:`evolve` with

* ``aspects``: several judging formats (fine-grained criteria); the score
  of a candidate is Σ_a (s_a − low_a)/(high_a − low_a) (a verdict counts
  0/1), unparsed if any aspect is; one aspect keeps its raw score;
* ``feedback=True``: the refinement prompt carries the model's own
  judgment of the answer it refines (``{feedback}``: each aspect's parsed
  score, ``?`` when unparsed, comma-separated);
* ``refine_top``: only the m best-judged answers of each problem are
  refined (ties → earlier sample);
* selection by the judge over originals + refinements, direct pairs only.

Miniature differences (documented, not faked): the feedback model is the
policy itself (RLRF trains a separate one); every aspect's warm-start label
comes from the same task verifier, so the aspects differ only in their
templates — the synthetic tasks carry no per-criterion labels; the
feedback is the parsed scores, not a verbal critique (the tiny model writes
numbers); EVOLVE's refinement is one prompt template, not an instruction.

No gold label reaches the selection after the warm start: ``correct`` is
stored for the metrics only (tested by flipping it).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import jax
import numpy as np

from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import self_training_common as common
from jaxsi.methods.self_rewarding import pairs_from_scores, self_judge
from jaxsi.rewards import judging
from jaxsi.sampling import multiturn
from jaxsi.sampling import rollouts

REFINE_TEMPLATE = "{prompt}{completion}|fix:"
FEEDBACK_TEMPLATE = "{prompt}{completion}|{feedback}|fix:"
SELECTIONS = ("judge", "rule")
UNJUDGED = "unjudged"

Formats = Union[str, judging.JudgeFormat, Sequence[Union[str, judging.JudgeFormat]]]


# ------------------------------------------------------------------ pieces
def refine_prompt(template: str, prompt: str, completion: str, feedback: str = "") -> str:
  """The refinement prompt of ``completion`` (fields ``{prompt}``,
  ``{completion}``, optional ``{feedback}``)."""
  return template.format(prompt=prompt, completion=completion, feedback=feedback)


def aspect_score(formats: Sequence[judging.JudgeFormat],
                 scores: Sequence[Optional[float]]) -> Optional[float]:
  """One score of several aspects' parsed scores (None: any unparsed).

  One aspect: its score. Several: Σ_a (s_a − low_a)/(high_a − low_a) for
  pointwise aspects, s_a ∈ {0, 1} for verdicts.
  """
  if len(formats) != len(scores):
    raise ValueError(f"aspect_score: {len(formats)} formats for {len(scores)} scores")
  if any(s is None or not math.isfinite(s) for s in scores):
    return None
  if len(formats) == 1:
    return float(scores[0])
  total = 0.0
  for f, s in zip(formats, scores):
    total += (s - f.low) / (f.high - f.low) if f.kind == "pointwise" else s
  return float(total)


def feedback_text(formats: Sequence[judging.JudgeFormat],
                  scores: Sequence[Optional[float]]) -> str:
  """The feedback a refinement is conditioned on: each aspect's parsed
  score as its label text (``5``, ``y``), ``?`` when unparsed, joined by
  ``,``."""
  out = []
  for f, s in zip(formats, scores):
    if s is None or not math.isfinite(s):
      out.append("?")
    elif f.kind == "verdict":
      out.append(f.yes if s == 1.0 else f.no)
    else:
      out.append(str(int(s)) if float(s).is_integer() else str(s))
  return ",".join(out)


def refinement_pairs(records: Sequence[dict], *, selection: str = "judge",
                     template: str = REFINE_TEMPLATE, direct: bool = True,
                     refine: bool = True, margin: float = 0.0) -> tuple[list, dict]:
  """EVOLVE's preference pairs from answer + refinement records.

  Args:
    records: per candidate ``task_id``, ``prompt`` (the problem), ``completion``,
      ``stage`` (0: original answer, k: k-th refinement), ``chain`` (which
      original it refines), ``judge_score`` (None: unparsed / unjudged),
      ``feedback`` (the text its refinement is conditioned on), ``correct``
      (metrics only).
    selection: ``'judge'`` — best vs worst ``judge_score`` over each
      problem's originals and refinements (``pairs_from_scores``, ``margin``);
      ``'rule'`` — per chain, the last refinement ≻ the original when the
      texts differ.
    template: the refinement template of the refinement pairs.
    direct: emit the direct pair ``{prompt: x, chosen, rejected}``.
    refine: emit the refinement pair ``{prompt: template(x, rejected,
      feedback of rejected), chosen, rejected}``.
    margin: ``'judge'``: the scores must differ by more.

  Returns:
    (pairs with ``kind`` ``'direct'`` / ``'refine'``, metrics
    ``pairs/count`` (preference pairs, before the direct/refine split),
    ``pairs/self_preferred_wrong``, ``pairs/correct_over_wrong``,
    ``pairs/chosen_refined`` (share whose chosen is a refinement),
    ``pairs/direct``, ``pairs/refine``).
  """
  if selection not in SELECTIONS:
    raise ValueError(f"refinement_pairs: selection must be one of {SELECTIONS},"
                     f" got {selection!r}")
  if not (direct or refine):
    raise ValueError("refinement_pairs: direct and refine are both off (no pairs)")
  by_text = {}
  for r in records:
    by_text.setdefault((r["task_id"], r["completion"]), r)
  chosen_rej = []
  if selection == "judge":
    base, _ = pairs_from_scores(records, margin=margin)
    for p in base:
      chosen_rej.append((by_text[(p["task_id"], p["chosen"])],
                         by_text[(p["task_id"], p["rejected"])]))
  else:
    chains: dict = {}
    for r in records:
      chains.setdefault((r["task_id"], r["chain"]), []).append(r)
    for recs in chains.values():
      recs = sorted(recs, key=lambda r: r["stage"])
      first, last = recs[0], recs[-1]
      if first["stage"] == 0 and last["stage"] > 0 and last["completion"] != first["completion"]:
        chosen_rej.append((last, first))
  pairs = []
  for c, w in chosen_rej:
    if direct:
      pairs.append(dict(prompt=c["prompt"], chosen=c["completion"], rejected=w["completion"],
                        task_id=c["task_id"], kind="direct"))
    if refine:
      pairs.append(dict(prompt=refine_prompt(template, w["prompt"], w["completion"],
                                             w.get("feedback") or ""),
                        chosen=c["completion"], rejected=w["completion"],
                        task_id=c["task_id"], kind="refine"))

  def mean(x):
    return float(np.mean(x)) if len(x) else float("nan")

  ok_c = np.asarray([c["correct"] for c, _ in chosen_rej], bool)
  ok_w = np.asarray([w["correct"] for _, w in chosen_rej], bool)
  metrics = {"pairs/count": float(len(chosen_rej)),
             "pairs/self_preferred_wrong": mean(~ok_c),
             "pairs/correct_over_wrong": mean(ok_c & ~ok_w),
             "pairs/chosen_refined": mean([c["stage"] > 0 for c, _ in chosen_rej]),
             "pairs/direct": float(sum(p["kind"] == "direct" for p in pairs)),
             "pairs/refine": float(sum(p["kind"] == "refine" for p in pairs))}
  return pairs, metrics


def refine_stats(records: Sequence[dict], prefix: str = "refine/") -> dict:
  """Original → last refinement of every chain (SCoRe's Δ metrics,
  ``multiturn.self_correction_stats``): ``acc_t0``, ``acc_final``,
  ``wrong_to_right``, ``right_to_wrong``, ``changed`` (texts differ),
  ``chains``."""
  chains: dict = {}
  for r in records:
    chains.setdefault((r["task_id"], r["chain"]), []).append(r)
  rows, changed = [], []
  for recs in chains.values():
    recs = sorted(recs, key=lambda r: r["stage"])
    if recs[0]["stage"] != 0 or len(recs) < 2:
      continue
    rows.append([float(recs[0]["correct"]), float(recs[-1]["correct"])])
    changed.append(recs[-1]["completion"] != recs[0]["completion"])
  if not rows:
    return {prefix + "chains": 0}
  s = multiturn.self_correction_stats(np.asarray(rows, np.float32), first=1, second=2)
  return {prefix + "acc_t0": s["acc_t1"], prefix + "acc_final": s["acc_t2"],
          prefix + "wrong_to_right": s["wrong_to_right"],
          prefix + "right_to_wrong": s["right_to_wrong"],
          prefix + "changed": float(np.mean(changed)), prefix + "chains": len(rows)}


def _formats(judge_format: Formats) -> tuple:
  items = (judge_format,) if isinstance(judge_format, (str, judging.JudgeFormat)) \
      else tuple(judge_format)
  if not items:
    raise ValueError("evolve: judge_format needs at least one format")
  fmts = tuple(judging.get_format(f) for f in items)
  for f in fmts:
    if f.kind == "pairwise":
      raise ValueError(f"evolve: judge_format {f.name!r} is pairwise; each candidate"
                       " is scored on its own (pointwise or verdict)")
  if len({f.template for f in fmts}) != len(fmts):
    raise ValueError("evolve: two aspects share a judging template (the model could"
                     " not tell them apart)")
  return fmts


def _sample_unstored(ctx, tasks, rollout, *, params=None, rng=None):
  """``common.sample`` whose rollout is not stored with the chunk (its
  prompts are longer: a chunk's stored parts must share one length)."""
  ro = common.sample(ctx, tasks, rollout, params=params, rng=rng)
  if ctx.generated and ctx.generated[-1] is ro:
    ctx.generated.pop()
  return ro


# ------------------------------------------------------------------ factory
def evolve(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=2, temperature=1.0),
           refine_steps: int = 1, refine_temperature: Optional[float] = None,
           selection: str = "judge", judge_format: Formats = "score_1_5",
           direct_pairs: bool = True, refine_pairs: bool = True,
           feedback: bool = False, refine_top: Optional[int] = None,
           template: Optional[str] = None, margin: float = 0.0, beta: float = 0.1,
           judge_wrong_per_task: int = 1, refine_wrong_per_task: int = 1,
           eval_refine: bool = True, seed: int = 0,
           name: str = "evolve") -> spec.RoundsMethod:
  r"""EVOLVE (Zeng et al. 2025, arXiv:2502.05605; module docstring) as a
  ``RoundsMethod``; :func:`rlrf` sets its RLRF options.

  Args:
    rollout: ``n`` original answers per problem at ``temperature``.
    refine_steps: K refinements of each (refined) answer.
    refine_temperature: temperature of the refinements (default the
      rollout's; 0: greedy).
    selection: ``'judge'`` or ``'rule'`` (:func:`refinement_pairs`).
    judge_format: the judging format, or several (RLRF's aspects).
    direct_pairs: train the direct-answer DPO term.
    refine_pairs: train the refinement DPO term (EVOLVE's second term).
    feedback: condition refinements on the model's judgment (RLRF); the
      template then needs ``{feedback}``.
    refine_top: refine only the m best-judged originals per problem (RLRF;
      None: all).
    template: refinement template (default :data:`REFINE_TEMPLATE`, or
      :data:`FEEDBACK_TEMPLATE` with ``feedback``).
    margin: ``'judge'``: pair only if the scores differ by more.
    beta: DPO β.
    judge_wrong_per_task: corruptions per labeled task in the judging
      warm-start examples.
    refine_wrong_per_task: corruptions per labeled task in the refinement
      warm-start examples.
    eval_refine: ``evaluate`` measures greedy answer → greedy refinement on
      the test problems.
    seed: seed of the warm start's corruptions.
    name: method name.

  Returns:
    The method (DPO from the current model, reference = previous iterate).

  Raises:
    ValueError: bad settings (each names its argument).
  """
  common.check_rollout(name, rollout)
  fmts = _formats(judge_format)
  if selection not in SELECTIONS:
    raise ValueError(f"{name}: selection must be one of {SELECTIONS}, got {selection!r}")
  if int(refine_steps) != refine_steps or refine_steps < 1:
    raise ValueError(f"{name}: refine_steps must be an integer >= 1, got {refine_steps!r}")
  if not (direct_pairs or refine_pairs):
    raise ValueError(f"{name}: direct_pairs and refine_pairs are both False (no pairs)")
  if refine_top is not None and (int(refine_top) != refine_top
                                 or not 1 <= refine_top <= rollout.n):
    raise ValueError(f"{name}: refine_top must be an integer in [1, rollout.n ="
                     f" {rollout.n}] or None, got {refine_top!r}")
  if refine_top is not None and selection == "rule" and not feedback:
    raise ValueError(f"{name}: refine_top ranks answers by the judge; selection='rule'"
                     " without feedback does not judge")
  if not beta > 0:
    raise ValueError(f"{name}: beta must be > 0, got {beta!r}")
  if not margin >= 0:
    raise ValueError(f"{name}: margin must be >= 0, got {margin!r}")
  if refine_temperature is not None and not refine_temperature >= 0:
    raise ValueError(f"{name}: refine_temperature must be >= 0, got {refine_temperature!r}")
  template = template or (FEEDBACK_TEMPLATE if feedback else REFINE_TEMPLATE)
  for field in ("{prompt}", "{completion}"):
    if field not in template:
      raise ValueError(f"{name}: template {template!r} lacks {field}")
  if feedback != ("{feedback}" in template):
    raise ValueError(f"{name}: template {template!r} must contain {{feedback}} iff"
                     f" feedback=True (feedback={feedback!r})")
  judged = selection == "judge" or feedback
  refine_spec = spec.RolloutSpec(
      n=1, temperature=rollout.temperature if refine_temperature is None
      else float(refine_temperature))

  def label_feedback(correct: bool) -> str:
    return ",".join(f.label(correct) for f in fmts) if feedback else ""

  def warm_start(labeled):
    out = common.task_examples(labeled)
    if judged:
      for f in fmts:
        out += data_judging.judging_examples(labeled, f, wrong_per_task=judge_wrong_per_task,
                                             seed=seed)
    for t, c in data_judging.candidates(labeled, wrong_per_task=refine_wrong_per_task,
                                        seed=seed + 1):
      out.append(dict(prompt=refine_prompt(template, t.prompt, c,
                                           label_feedback(t.verify(c) >= 1.0)),
                      completion=t.target, task_id=f"{t.id}/refine"))
    return out

  def judge(ctx, recs, per_tasks, params=None):
    """Fills judge_score / judge_status / judgment / feedback of ``recs``."""
    if not recs:
      return
    texts = [r["completion"] for r in recs]
    per_aspect = [self_judge(ctx, per_tasks, texts, f, params=params) for f in fmts]
    for i, r in enumerate(recs):
      scores = [a[0][i] for a in per_aspect]
      statuses = [a[1][i] for a in per_aspect]
      r["judge_score"] = aspect_score(fmts, scores)
      r["judge_status"] = next((s for s in statuses if s != judging.OK), judging.OK)
      r["judgment"] = "|".join(a[2][i] for a in per_aspect)
      r["aspect_scores"] = scores
      r["aspect_statuses"] = statuses
      r["feedback"] = feedback_text(fmts, scores) if feedback else ""

  def unjudged(recs):
    for r in recs:
      r.update(judge_score=None, judge_status=UNJUDGED, judgment="", aspect_scores=[],
               aspect_statuses=[], feedback="")

  def collect(ctx, tasks, first_spec, second_spec, rng=None, params=None):
    """Originals + refinement chains of ``tasks`` (records)."""
    ro = common.sample(ctx, tasks, first_spec, params=params, rng=rng)
    n = ro.n
    recs = ro.records(stage=0, chain=[i % n for i in range(len(ro.texts))],
                      parent=None)
    task_of = {t.id: t for t in tasks}
    (judge(ctx, recs, [tasks[i // n] for i in range(len(recs))], params=params)
     if judged else unjudged(recs))
    heads = list(recs)
    if refine_top is not None:
      keep = []
      for group in common.group_by_task(heads).values():
        order = sorted(group, key=lambda r: (-(r["judge_score"] if r["judge_score"]
                                               is not None else -np.inf), r["chain"]))
        keep += sorted(order[:int(refine_top)], key=lambda r: r["chain"])
      heads = keep
    out = list(recs)
    for k in range(1, int(refine_steps) + 1):
      if not heads:
        break
      rtasks = [task_of[h["task_id"]].replace(
          id=f"{h['task_id']}/refine{k}/{h['chain']}",
          prompt=refine_prompt(template, h["prompt"], h["completion"], h["feedback"]))
          for h in heads]
      rro = _sample_unstored(ctx, rtasks, second_spec, params=params,
                             rng=None if rng is None else jax.random.fold_in(rng, k))
      new = []
      for j, h in enumerate(heads):
        new.append(dict(task_id=h["task_id"], prompt=h["prompt"],
                        answer_gold=h["answer_gold"], difficulty=h["difficulty"],
                        sample=h["sample"], completion=rro.texts[j],
                        answer=rro.answers[j], correct=bool(rro.correct[j]), stage=k,
                        chain=h["chain"], parent=h["completion"]))
      (judge(ctx, new, [task_of[h["task_id"]] for h in heads], params=params)
       if judged else unjudged(new))
      out += new
      heads = new
    return out

  def sample_chunk(ctx, tasks, plan):
    del plan
    return collect(ctx, tasks, rollout, refine_spec)

  def select(records, plan, ctx):
    del plan, ctx
    pairs, m = refinement_pairs(records, selection=selection, template=template,
                                direct=direct_pairs, refine=refine_pairs, margin=margin)
    if judged:
      # Judge accuracy against the verifier, per aspect (the first aspect's
      # under judge/, the others' under judge/<format>/).
      correct = [r["correct"] for r in records]
      for a, f in enumerate(fmts):
        sc = [np.nan if r["aspect_scores"][a] is None else r["aspect_scores"][a]
              for r in records]
        m.update(data_judging.judge_metrics(
            f, sc, [r["aspect_statuses"][a] for r in records], correct,
            prefix="judge/" if a == 0 else f"judge/{f.name}/"))
    m.update(refine_stats(records))
    m.update(common.sample_stats([r for r in records if r["stage"] == 0]))
    m.update(pairs=len(pairs))
    return [], pairs, m

  def evaluate(ctx, test):
    if not eval_refine:
      return {}
    recs = collect(ctx, list(test), common.GREEDY, common.GREEDY,
                   rng=jax.random.key(ctx.config.seed + 4243))
    return refine_stats(recs, prefix="eval_refine/")

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout), select=select,
      sample_chunk=sample_chunk, warm_start=warm_start, objective="dpo",
      objective_settings={"beta": float(beta)}, reference="previous",
      train_from="current", accumulate=False, include_labeled=False,
      evaluate=evaluate)


def rlrf(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=4, temperature=1.0),
         aspects: Formats = ("score_1_5", "verdict"), refine_top: Optional[int] = 2,
         refine_steps: int = 1, refine_temperature: Optional[float] = None,
         refine_pairs: bool = False, margin: float = 0.0, beta: float = 0.1,
         judge_wrong_per_task: int = 1, refine_wrong_per_task: int = 1,
         eval_refine: bool = True, seed: int = 0,
         name: str = "rlrf") -> spec.RoundsMethod:
  r"""RLRF (Lee et al. 2024, arXiv:2403.14238; module docstring): fine-grained
  self-judging on ``aspects``, feedback-conditioned refinement of the
  ``refine_top`` best answers, DPO on best vs worst of originals +
  refinements (direct pairs; ``refine_pairs`` adds EVOLVE's refinement term,
  not in RLRF).

  Args: as :func:`evolve` (``aspects`` is its ``judge_format``).

  Returns:
    The method.
  """
  return evolve(rollout=rollout, refine_steps=refine_steps,
                refine_temperature=refine_temperature, selection="judge",
                judge_format=aspects, direct_pairs=True, refine_pairs=refine_pairs,
                feedback=True, refine_top=refine_top, margin=margin, beta=beta,
                judge_wrong_per_task=judge_wrong_per_task,
                refine_wrong_per_task=refine_wrong_per_task, eval_refine=eval_refine,
                seed=seed, name=name)


__all__ = ["FEEDBACK_TEMPLATE", "REFINE_TEMPLATE", "SELECTIONS", "aspect_score", "evolve",
           "feedback_text", "refine_prompt", "refine_stats", "refinement_pairs", "rlrf"]
