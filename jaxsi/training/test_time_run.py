r"""Launcher: test-time selection and early-stopping policies on a checkpoint.

``MAIN = @test_time_run.run`` (``gin_configs/experiments/test_time_addition.gin``)::

  jaxsi run --gin_file=experiments/test_time_addition.gin --workdir=/tmp/tt \
      --gin.test_time_run.run.hf_checkpoint="'/path/to/hf_dir'"

Two measurements from one checkpoint on one task source:

* fixed-N selectors (``jaxsi.sampling.test_time``: first, majority,
  self-certainty best-of-N, Borda, likelihood, oracle) at every N of ``ns``,
  from a single batched generation of max(ns) samples per problem;
* windowed policies (``jaxsi.sampling.adaptive``: ESC, Adaptive-Consistency,
  DSC, fixed) that really generate window by window for the active problems
  only, capped at max(ns) samples, each reported with its mean samples and
  tokens per problem, sampler calls and rows generated;
* iterative deepening (``jaxsi.sampling.deepening``, s1 budget forcing /
  ID-Sampling): max(ns) samples per problem, each continued from its KV
  cache after a ``trigger`` for max(deepening) rounds; every depth d of
  ``deepening`` is reported at every N (first sample, and majority over the
  deepened samples' final answers) at its generated tokens per problem, with
  the injected trigger tokens and how often the answer changed.

Writes ``test_time.md``, ``test_time.json`` and ``test_time.png`` (accuracy
versus tokens per problem, all three measurements on the same axes) in the workdir. The params come from a local HF
checkpoint (``hf_checkpoint``; tokenizer from the same directory), a jaxsi
checkpoint directory (``params_dir``: a run's ``warm_start``, ``ckpt`` or
``pool``, newest step, params only — ``jaxsi.training.run_workdir``; the
model from ``model`` + ``model_overrides``, character tokenizer), or a
random init (tests only). ``jaxsi test-time --run=WORKDIR`` fills these
from a run's workdir.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import jax
import numpy as np

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.rewards import judging as judging_lib
from jaxsi.sampling import adaptive
from jaxsi.sampling import deepening as deepening_lib
from jaxsi.sampling import judge_scores
from jaxsi.sampling import refine as refine_lib
from jaxsi.sampling import strategies
from jaxsi.sampling import test_time as tt
from jaxsi.training import arguments
from jaxsi.training import progress as progress_lib
from jaxsi.training import run_workdir

WHERE = "test_time_run.run"


def load_tasks(source: str, *, n: int, difficulty: int, seed: int,
               task_format: Optional[dict] = None, chat_template=None):
  """Tasks of ``source``: ``synthetic:NAME``, ``gsm8k:DIR``, ``math:DIR`` or
  ``jsonl:FILE`` (first ``n``)."""
  kind, _, rest = source.partition(":")
  if kind == "synthetic":
    return tasks_lib.make_tasks(rest, n, difficulty=difficulty, seed=seed,
                                **dict(task_format or {}))
  if kind in ("gsm8k", "math"):
    from jaxsi.data import math_datasets  # pylint: disable=g-import-not-at-top
    loader = math_datasets.load_gsm8k if kind == "gsm8k" else math_datasets.load_math
    return loader(rest, split="test", chat_template=chat_template, limit=n)
  if kind == "jsonl":
    from jaxsi.data import jsonl  # pylint: disable=g-import-not-at-top
    return jsonl.load_jsonl_tasks(rest, limit=n)
  raise arguments.ArgumentError(
      f"{WHERE}.tasks = {source!r}: expected synthetic:NAME, gsm8k:DIR,"
      " math:DIR or jsonl:FILE")


def _load_model(hf_checkpoint, params_dir, model, model_overrides, seed):
  if hf_checkpoint and params_dir:
    raise arguments.ArgumentError(
        f"{WHERE}: bind hf_checkpoint or params_dir, not both")
  if hf_checkpoint:
    from jaxsi.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
    from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
    tok = hf_tokenizer.load_tokenizer(hf_checkpoint)
    mdl, params = hf.load_pretrained(hf_checkpoint)
    return tok, mdl, params
  tok = char_tokenizer.CharTokenizer()
  cfg = model_config.get_config(model, vocab_size=tok.vocab_size,
                                **dict(model_overrides or {}))
  mdl, params = model_lib.init(cfg, jax.random.key(seed))
  if params_dir:
    try:
      params, _ = run_workdir.restore_params(run_workdir.params_source(params_dir),
                                             params)
    except run_workdir.NoCheckpointError:
      raise arguments.ArgumentError(
          f"{WHERE}.params_dir = {params_dir!r}: no checkpoint there") from None
  return tok, mdl, params


def run(*, workdir: str, tasks: str = "synthetic:addition", n_tasks: int = 64,
        difficulty: int = 2, task_format: Optional[dict] = None,
        hf_checkpoint: Optional[str] = None, params_dir: Optional[str] = None,
        model: str = "tiny", model_overrides: Optional[dict] = None,
        ns: Sequence[int] = (1, 2, 4, 8),
        selectors: Sequence[str] = ("first", "majority", "self_certainty",
                                    "borda_self_certainty", "likelihood", "oracle"),
        policies: Sequence[str] = ("esc", "adaptive_consistency", "dsc"),
        window: int = 2, temperature: float = 1.0, max_new_tokens: int = 8,
        batch_size: int = 256, seed: int = 0, plot: bool = True,
        deepening: Sequence[int] = (),
        trigger: str = deepening_lib.DEFAULT_TRIGGER,
        refine: Sequence[str] = (), refine_turns: int = 3,
        reward_model_dir: Optional[str] = None,
        judge_format: Optional[str] = None, judge_max_new_tokens: int = 4) -> dict:
  """Runs the selectors at every N and the windowed policies; writes reports.

  Args:
    workdir: output directory.
    tasks: task source (:func:`load_tasks`); ``n_tasks`` problems,
      ``difficulty`` / ``task_format`` for synthetic tasks.
    hf_checkpoint: local HF model directory (config.json, safetensors,
      tokenizer).
    params_dir: a jaxsi checkpoint directory (``run_workdir.params_source``:
      params, a pool or a Loop TrainState; the model is ``model`` with
      ``model_overrides``).
    model, model_overrides: preset and fields (without a checkpoint: random
      init, for tests).
    ns: sample budgets N (one generation of max(ns) samples).
    selectors: names of ``test_time.DEFAULT_SELECTORS``.
    policies: names of ``adaptive.POLICIES`` (windowed, cap max(ns)).
    window: samples per window of the policies (divides max(ns)).
    temperature: sampling temperature (> 0).
    max_new_tokens: completion budget per sample.
    batch_size: rows per sampler call (both drivers).
    seed: task, init and sampling seed.
    plot: also write test_time.png.
    deepening: depths d (rounds of trigger injection, 0 = plain sampling) of
      iterative deepening to report; empty: none. One generation of
      max(deepening) rounds serves every depth.
    trigger: the text injected before every deepening round (must be
      encodable by the tokenizer).
    refine: self-refine loops to report (``refine.METHODS``: 'self_refine',
      'iort', 'progco'; 'progco_model' = ProgCo with the model as the
      program executor), each a multi-turn episode of up to
      ``refine_turns`` answer turns, greedy; rows for every turn budget.
    refine_turns: answer turns K of the refine loops (>= 1).
    reward_model_dir: a reward model saved by ``training.reward_model.save``:
      adds the selector 'reward_model' (best-of-N by its score).
    judge_format: a pointwise or verdict ``rewards.judging`` format name: the
      model judges each of its candidates (``sampling.judge_scores``, no
      reference answer) and the selector 'judge' is best-of-N by the
      judgment; its rows' tokens include the judgment tokens of the k
      candidates judged.
    judge_max_new_tokens: the judgment budget.

  Returns:
    ``{'fixed': rows, 'policies': rows, 'deepening': rows, 'refine': rows,
    ...}`` (also ``test_time.json``).
  """
  A = arguments
  A.check(WHERE, locals(), dict(
      n_tasks=A.integer(1), difficulty=A.integer(0), ns=A.integers(1),
      window=A.integer(1), temperature=A.number(0, open_low=True),
      max_new_tokens=A.integer(1), batch_size=A.integer(1), seed=A.integer(0),
      plot=A.flag(), deepening=A.integers(0) if deepening else None,
      refine_turns=A.integer(1), judge_max_new_tokens=A.integer(1)))
  if judge_format is not None:
    try:
      fmt = judging_lib.get_format(judge_format)
    except (KeyError, ValueError) as e:
      raise A.ArgumentError(f"{WHERE}.judge_format: {e}") from None
    if fmt.kind == "pairwise":
      raise A.ArgumentError(f"{WHERE}.judge_format = {judge_format!r}: pairwise;"
                            " best-of-N needs a pointwise or verdict format")
  refine_known = refine_lib.METHODS + ("progco_model",)
  for name in refine:
    if name not in refine_known:
      raise A.ArgumentError(f"{WHERE}.refine: unknown method {name!r};"
                            f" expected some of {list(refine_known)}")
  for name in selectors:
    if name not in tt.DEFAULT_SELECTORS:
      raise A.ArgumentError(f"{WHERE}.selectors: unknown selector {name!r};"
                            f" expected some of {sorted(tt.DEFAULT_SELECTORS)}")
  try:
    pols = {p: adaptive.get_policy(p, f"{WHERE}.policies") for p in policies}
  except ValueError as e:
    raise A.ArgumentError(str(e)) from None
  n_max = max(ns)
  if n_max % window:
    raise A.ArgumentError(f"{WHERE}.window = {window}: must divide max(ns) ="
                          f" {n_max}")
  if batch_size < n_max:
    raise A.ArgumentError(f"{WHERE}.batch_size = {batch_size}: must be >="
                          f" max(ns) = {n_max}")
  os.makedirs(workdir, exist_ok=True)
  tok, mdl, params = _load_model(hf_checkpoint, params_dir, model,
                                 model_overrides, seed)
  problems = load_tasks(tasks, n=n_tasks, difficulty=difficulty, seed=seed,
                        task_format=task_format,
                        chat_template=getattr(tok, "template", None))
  if deepening:
    try:
      deepening_lib.trigger_ids(tok, trigger)
    except ValueError as e:
      raise A.ArgumentError(f"{WHERE}.trigger: {e}") from None
  strategy = strategies.Sampling(temperature=temperature)
  rng = jax.random.key(seed + 1)
  # One step per phase: the fixed-N generation, then each windowed policy.
  rm = None
  if reward_model_dir is not None:
    from jaxsi.training import reward_model as rm_lib  # pylint: disable=g-import-not-at-top
    try:
      rm = rm_lib.load(reward_model_dir)[:2]
    except (FileNotFoundError, run_workdir.NoCheckpointError) as e:
      raise A.ArgumentError(f"{WHERE}.reward_model_dir = {reward_model_dir!r}:"
                            f" {e}") from None
    if rm[0].config.vocab_size != tok.vocab_size:
      raise A.ArgumentError(
          f"{WHERE}.reward_model_dir = {reward_model_dir!r}: the reward model's"
          f" vocabulary ({rm[0].config.vocab_size}) is not the generator"
          f" tokenizer's ({tok.vocab_size})")
  bar = progress_lib.ProgressBar(
      1 + len(pols) + bool(deepening) + len(refine), "test_time",
      keys=("accuracy", "tokens/problem"),
      log_every=1, min_line_seconds=progress_lib.PHASE_LINE_SECONDS)
  cands = tt.generate(mdl, params, tok, problems, n=n_max,
                      max_new_tokens=max_new_tokens, strategy=strategy,
                      rng=rng, batch_size=batch_size,
                      score_temperature=temperature)
  chosen = {s: tt.DEFAULT_SELECTORS[s] for s in selectors}
  if rm is not None:
    rm_lib.fill_scores(cands, rm[0], rm[1], tok)
    chosen = rm_lib.selectors_with_rm(chosen)
  judge_info = None
  if judge_format is not None:
    judge_info = judge_scores.fill_scores(
        cands, mdl, params, tok, format=judge_format,
        max_new_tokens=judge_max_new_tokens, batch_size=batch_size)
    chosen[judge_scores.NAME] = tt.best_of_n(judge_scores.NAME)
  fixed_rows = tt.sweep(cands, ks=sorted(set(ns)), selectors=chosen)
  if judge_info is not None:
    for r in fixed_rows:   # the judge spent tokens on the k candidates it read
      if r["selector"] == judge_scores.NAME:
        r["tokens_per_problem"] += judge_info["judge_tokens_per_problem"] * r["k"] / n_max
  bar.update(1, {"tokens/problem": float(np.mean(np.sum(cands.lengths, axis=1)))})
  policy_rows = []
  for i, (name, pol) in enumerate(pols.items()):
    draw = adaptive.SamplerDraw(mdl, params, tok, problems, strategy=strategy,
                                max_new_tokens=max_new_tokens,
                                rng=jax.random.fold_in(rng, 1000 + i),
                                rows=batch_size)
    res = adaptive.run(draw, len(problems), policy=pol, window=window,
                       max_samples=n_max)
    policy_rows.append(dict(policy=name, window=window, max_samples=n_max,
                            seconds=res.seconds, **res.summary()))
    bar.update(2 + i, {"accuracy": policy_rows[-1]["accuracy"],
                       "tokens/problem": policy_rows[-1]["tokens_per_problem"]})
  deep_rows, deep_text = [], ""
  if deepening:
    deep = deepening_lib.deepen(
        mdl, params, tok, problems, rounds=max(deepening), n=n_max,
        trigger=trigger, max_new_tokens=max_new_tokens, strategy=strategy,
        rng=jax.random.fold_in(rng, 2000), batch_size=batch_size)
    deep_rows = deepening_lib.sweep(deep, depths=sorted(set(deepening)),
                                    ks=sorted(set(ns)))
    bar.update(2 + len(pols), {"tokens/problem": deep.summary()[
        "gen_tokens_per_problem"]})
    deep_text = (f"\n\nIterative deepening (trigger {trigger!r} after every"
                 f" turn, continued from the KV cache; {max(deepening)} rounds,"
                 f" {deep.calls} sampler calls, {deep.seconds:.1f}s):\n\n"
                 + deepening_lib.markdown(deep_rows))
  refine_rows = []
  for i, name in enumerate(refine):
    method, executor = (("progco", "model") if name == "progco_model"
                        else (name, "tool"))
    rows = refine_lib.run(mdl, params, tok, problems, method=method,
                          max_turns=refine_turns,
                          rng=jax.random.fold_in(rng, 3000 + i),
                          max_new_tokens=max_new_tokens, batch_size=batch_size,
                          executor=executor)
    for r in rows:
      r["method"] = name
    refine_rows += rows
    bar.update(2 + len(pols) + bool(deepening) + i,
               {"accuracy": rows[-1]["accuracy"],
                "tokens/problem": rows[-1]["tokens_per_problem"]})
  refine_text = ""
  if refine_rows:
    refine_text = ("\n\nSelf-refine loops (greedy multi-turn episodes, one KV"
                   " cache; tokens = model tokens, + injected):\n\n"
                   "| method | answer turns | tokens / problem | injected / problem"
                   " | accuracy | wrong→right | right→wrong |\n"
                   "|---|---|---|---|---|---|---|\n"
                   + "".join(f"| {r['method']} | {r['turns']} |"
                             f" {r['tokens_per_problem']:.1f} |"
                             f" {r['injected_tokens_per_problem']:.1f} |"
                             f" {r['accuracy']:.3f} | {r['wrong_to_right']:.3f} |"
                             f" {r['right_to_wrong']:.3f} |\n" for r in refine_rows))
  bar.close()
  out = dict(tasks=tasks, n_tasks=len(problems), ns=sorted(set(ns)),
             temperature=temperature, generation_seconds=cands.seconds,
             fixed=fixed_rows, policies=policy_rows, deepening=deep_rows,
             refine=refine_rows, judge=judge_info)
  text = (f"Test-time selection on {len(problems)} problems of {tasks},"
          f" N = {sorted(set(ns))} at T = {temperature} (one generation of"
          f" {n_max} per problem).\n\n" + tt.markdown(fixed_rows)
          + ("" if judge_info is None else
             f"\n\nJudge ({judge_format}, greedy, {judge_max_new_tokens} tokens):"
             f" {judge_info['judge/ok']} judgments parsed,"
             f" {judge_info['judge/unparsed']} unparsed,"
             f" {judge_info['judge/over_budget']} over budget;"
             f" {judge_info['judge_tokens_per_problem']:.1f} judgment tokens per"
             " problem for all N (the 'judge' rows count k/N of them).")
          + "\n\nWindowed policies (window "
          f"{window}, cap {n_max}), generated window by window:\n\n"
          "| policy | samples / problem | tokens / problem | accuracy |"
          " sampler calls | rows |\n|---|---|---|---|---|---|\n"
          + "".join(f"| {r['policy']} | {r['samples_per_problem']:.2f} |"
                    f" {r['tokens_per_problem']:.1f} | {r['accuracy']:.3f} |"
                    f" {r['calls']} | {r['rows']} |\n" for r in policy_rows)
          + deep_text + refine_text)
  print(text, flush=True)
  with open(os.path.join(workdir, "test_time.md"), "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(workdir, "test_time.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1, default=float)
  if plot:
    curve = list(fixed_rows) + list(deep_rows) + [
        dict(selector=r["method"], k=r["turns"], accuracy=r["accuracy"],
             tokens_per_problem=max(r["total_tokens_per_problem"], 1e-9))
        for r in refine_rows] + [
        dict(selector=r["policy"], k=r["samples_per_problem"],
             accuracy=r["accuracy"], tokens_per_problem=max(
                 r["tokens_per_problem"], 1e-9)) for r in policy_rows]
    tt.plot(curve, os.path.join(workdir, "test_time.png"),
            title=f"{tasks}, T={temperature}")
  return out


__all__ = ["load_tasks", "run"]
