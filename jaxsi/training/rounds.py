"""Self-training in rounds: a schedule of generate → store → filter → fit → evaluate.

The outer loop of the rejection-sampling self-training family (METHODS.md
family 1: STaR, Zelikman et al. 2022; RFT, Yuan et al. 2023; ReST-EM, Singh
et al. 2023; B-STaR, Zeng et al. 2024; V-STaR, Hosseini et al. 2024;
SFT-Sharpening, Huang et al. 2024; easy-to-hard, Lee et al. 2025) and of
iterative preference optimisation (DPO on pairs built from the model's own
samples, reference = the previous iterate). A method is data,
``jaxsi.spec.RoundsMethod``; this module runs any of them::

  round 0: warm start (SFT on the labeled set) → pool[0], eval, record
  round r ≥ 1:
    plan     = method.plan(ctx, problems)                 → round_r/plan.json
    for chunk c of problems (fixed size, key fold_in(round_key, c)):
      rollout stage + reward stages (RoundContext.sample)  → chunk_c.npz (Trajectory)
      records (or method.sample_chunk)                     → chunk_c.json
    select: a jaxsi.transforms filter / pair builder over the round's stored
      trajectories, or fn(records) → examples, pairs        → round_r/selected.json
    fit: SFT on [labeled] + selected (of 1..r if accumulate), or a DPO-family
      term on the pairs with reference = pool[r-1] or pool[0],
      from pool[0] ('base') or pool[r-1] ('current')       → pool[r]
    method.after_round(...)   (e.g. V-STaR's verifier)
    eval → rounds.json

The pieces live in their own modules: the store (``round_store``), the
callbacks' context and the sampling through rollout/reward stages
(``round_context``), the M-step (``round_fit``). Resumability: every artefact
is written atomically and each step is skipped when its artefact exists, so
a killed run restarts where it stopped; the M-step's ``fit`` checkpoints its
TrainState with the batch position and replays the same batches.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.methods import self_training_common as common
from jaxsi.sampling import strategies
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import progress as progress_lib
from jaxsi.training import round_context
from jaxsi.training import round_fit
from jaxsi.training import round_store
from jaxsi.transforms import base as transforms_base
from jaxsi.transforms.preference import IS_CHOSEN_KEY

# --------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RoundsConfig:
  """Schedule and optimisation settings of :func:`run_rounds`.

  Attributes:
    rounds: self-training rounds after the warm start.
    warm_start_steps: SFT steps of round 0.
    steps_per_round: M-step steps of round 1 (see ``steps_growth``).
    batch_size: M-step batch size in rows (a pair is two rows; smaller
      datasets are tiled to fill it).
    max_len: padded M-step length.
    learning_rate, warmup_steps, weight_decay, max_grad_norm: AdamW (constant
      learning rate after warmup, restarted each M-step).
    max_new_tokens: completion budget (of rollout stages without their own).
    rollout_batch: sampler rows per call.
    chunk_size: problems per stored generation chunk (the resume granularity).
    save_every: M-step checkpoint interval in steps.
    eval_n: greedy evaluation uses 1 sample; this is the N of extra
      evaluations that sample (e.g. best-of-N).
    reward_timeout_s: seconds per host reward call (``rewards.stages``).
    seed: global seed.
  """

  rounds: int = 3
  warm_start_steps: int = 200
  steps_per_round: int = 200
  batch_size: int = 64
  max_len: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 20
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  max_new_tokens: int = 8
  rollout_batch: int = 512
  chunk_size: int = 256
  save_every: int = 50
  eval_n: int = 8
  reward_timeout_s: float = 60.0
  seed: int = 0


# ------------------------------------------------------------ method helpers
def labeled_only(method: spec_lib.RoundsMethod) -> spec_lib.RoundsMethod:
  """The no-self-training control of ``method``: its schedule, no generated data.

  Every round samples nothing and selects nothing, so the M-step runs the
  same number of steps (``train_from``, ``steps_growth``) on the labeled
  warm-start examples only. Comparing ``method`` with this control separates
  the effect of the self-generated data from that of the extra steps.

  Raises:
    ValueError: ``method`` does not train on the labeled set.
  """
  if not method.include_labeled or method.pairwise:
    raise ValueError(f"labeled_only({method.name}): the method trains without the"
                     " labeled set, so its control would have no data")
  return dataclasses.replace(
      method, name=f"{method.name}_labeled_only", problems=lambda r, unlabeled: [],
      sample_chunk=lambda ctx, tasks, plan: [],
      select=lambda records, plan, ctx: ([], [], {}), plan=None,
      after_round=None, evaluate=None)


def check_method(method: Any, where: str) -> spec_lib.RoundsMethod:
  """``method`` if it is a ``spec.RoundsMethod``.

  Raises:
    spec.ConfigurationError: naming ``where`` and, for an on-policy
      ``spec.Method``, its launcher (``rl_run.run``).
  """
  if isinstance(method, spec_lib.RoundsMethod):
    return method
  kind = (" an on-policy method (jaxsi.spec.Method): use the RL launcher, MAIN ="
          " @rl_run.run (jaxsi.training.rl_run.run)" if isinstance(method, spec_lib.Method)
          else f" a {type(method).__name__}")
  raise spec_lib.ConfigurationError(
      f"{where} runs rounds methods (jaxsi.spec.RoundsMethod);"
      f" {getattr(method, 'name', method)!r} is{kind}")


def select_with_transform(transform: Any, stored: Optional[round_store.StoredChunk],
                          tokenizer: Any) -> tuple[list, list, dict]:
  """Runs a ``jaxsi.transforms`` filter / pair builder over a round's trajectories.

  Rows left ``valid`` become SFT examples; ``pair_ids[i] = j`` (a pair
  builder's links) becomes the pair (row i chosen ≻ row j rejected) with
  ``weight`` = the chosen row's ``weights[i]`` (ScPO's vote margin; the
  pairwise M-step applies it). Texts are read from the transform's output,
  so a builder may return a new batch (``pairs.all_pairs``).

  Returns:
    ``(examples, pairs, metrics)`` (the transform's metrics, plus
    ``sample_accuracy`` — first reward column ≥ 1 — and counts).
  """
  if stored is None:
    return [], [], {}
  traj = stored.traj
  out, _, metrics = transform.update(jax.tree.map(jnp.asarray, traj), transform.init(),
                                     transforms_base.Context())
  valid = np.asarray(out.valid, bool)
  pair = np.asarray(out.pair_ids)
  weights = np.asarray(out.weights, np.float64)
  chosen = (np.asarray(out.extras[IS_CHOSEN_KEY], bool) if IS_CHOSEN_KEY in out.extras
            else np.ones(pair.shape, bool))
  tokens, loss_mask = np.asarray(out.tokens), np.asarray(out.loss_mask, bool)
  texts = [tokenizer.decode(row[m].tolist()) for row, m in zip(tokens, loss_mask)]
  pid = np.asarray(out.prompt_ids)

  def base(i):
    return dict(prompt=stored.prompt_texts[pid[i]], task_id=stored.task_ids[pid[i]])

  examples = [dict(base(i), completion=texts[i]) for i in np.flatnonzero(valid)]
  # A counted pair: chosen row i valid, its partner valid (preference.pair_index).
  linked = np.flatnonzero((pair >= 0) & chosen & valid)
  pairs = [dict(base(i), chosen=texts[i], rejected=texts[pair[i]],
                weight=float(weights[i]))
           for i in linked if valid[pair[i]]]
  first = np.nan_to_num(np.asarray(traj.rewards)[:, 0], nan=0.0)
  m = {k: float(v) for k, v in jax.device_get(metrics).items()}
  m.update(sample_accuracy=float(np.mean(first >= 1.0)), kept=len(examples),
           pairs=len(pairs))
  return examples, pairs, m


# ----------------------------------------------------------------- the loop
def run_rounds(
    *,
    method: spec_lib.RoundsMethod,
    model: Any,
    init_params: Any,
    tokenizer: Any,
    labeled: Sequence[Any],
    unlabeled: Sequence[Any],
    test: Sequence[Any],
    workdir: str,
    config: RoundsConfig = RoundsConfig(),
    callback: Optional[Callable[..., None]] = None,
    verbose: bool = True,
    warm_params: Any = None,
) -> list[dict]:
  """Runs (or resumes) warm start + ``config.rounds`` rounds of ``method``.

  Args:
    method: the ``spec.RoundsMethod``.
    model: static model.
    init_params: parameters before the warm start (also the restore template).
    tokenizer: the tokenizer.
    labeled: supervised warm-start tasks (their ``target`` is trained on).
    unlabeled: problems for self-training (answers only reach the rewards).
    test: held-out problems (greedy pass@1 each round).
    workdir: run directory (see ``round_store.RoundStore``); rerun with the
      same arguments to resume.
    config: schedule and optimiser settings.
    callback: ``fn(event, **info)`` called after every stored chunk
      (``'chunk'``, round, chunk) and every M-step step (``'train_step'``,
      tag, position); raising from it interrupts the run (tests use this).
    verbose: print one line per round.
    warm_params: use these as round 0 instead of training the warm start
      (e.g. one warm start shared by several methods being compared).

  Returns:
    The round records (round 0 = warm start): held-out pass@1 (overall and
    per difficulty), selection metrics, dataset sizes, time.

  Raises:
    spec.ConfigurationError: ``method`` is not a RoundsMethod.
  """
  check_method(method, "run_rounds")
  store = round_store.RoundStore(workdir)
  pool = pool_lib.CheckpointPool(store.pool_dir)
  pool.check(like=init_params)   # a damaged round is recomputed, not fatal later
  writer = metrics_lib.MetricWriter(store.workdir)
  writer.rewind()   # one row per step, no torn line (a killed earlier run)
  like = init_params
  t0 = time.time()
  done = {r["round"] for r in store.records()}
  seed = config.seed
  labeled_examples = (method.warm_start or common.task_examples)(labeled)

  def record(r, params, ctx, scalars, **fields):
    """Greedy held-out pass@1 of round r, its log row, then the record that
    marks it done (a rerun after a kill in between writes the row again;
    rewind() keeps one); returns the pass@1."""
    by_difficulty = evaluate_lib.pass_at_1(
        model, params, tokenizer, test, strategy=strategies.Greedy(), n=1,
        max_new_tokens=config.max_new_tokens, seed=seed + 10_000 + r,
        batch_size=config.rollout_batch, desc=f"round{r}/eval")
    p1 = by_difficulty.pop("all")
    rec = dict(round=r, test_pass1=p1, test_by_difficulty=by_difficulty, **fields,
               seconds=round(time.time() - t0, 1))
    if method.evaluate is not None:
      rec["eval"] = method.evaluate(ctx, test)
    writer.write_scalars(r * 100_000, {"eval/test_pass@1": p1, **scalars})
    writer.flush()
    store.add_record(rec)
    return p1

  def log(msg):
    if verbose:
      print(f"[jaxsi.rounds:{method.name}] {msg}", flush=True)

  def pooled(r, train):
    """Round r's parameters: from the pool, or ``train()`` then pooled."""
    if r in pool:
      shutil.rmtree(store.train_dir(r), ignore_errors=True)   # killed before
      return pool.params(r, like=like)
    params = train()
    pool.save(r, params)
    shutil.rmtree(store.train_dir(r), ignore_errors=True)
    return params

  def sft(r, start, examples, steps, tag, log=True):
    return pooled(r, lambda: round_fit.fit_sft(
        model=model, params=start, tokenizer=tokenizer, examples=examples, steps=steps,
        config=config, ckpt_dir=store.train_dir(r), seed=seed * 1009 + r,
        writer=writer if log else None,
        desc=tag, step_offset=r * 100_000, callback=callback)[0])

  def ctx_for(r, params, base, rng):
    return round_context.RoundContext(
        round=r, model=model, params=params, base_params=base, tokenizer=tokenizer,
        rng=rng, pool=pool, config=config, workdir=store.workdir,
        labeled_examples=labeled_examples, unlabeled=tuple(unlabeled), method=method)

  # Round 0: warm start.
  if warm_params is not None and 0 not in pool:
    pool.save(0, warm_params)
  base = sft(0, init_params, labeled_examples, config.warm_start_steps, "warm_start",
             log=0 not in done)
  if 0 not in done:
    p1 = record(0, base, ctx_for(0, base, base, jax.random.key(seed + 20_000)), {},
                train_size=len(labeled_examples))
    log(f"warm start: held-out pass@1 {p1:.3f}")

  for r in range(1, config.rounds + 1):
    if r in done and r in pool:
      continue
    # A recorded round whose pool entry was damaged (moved aside by
    # pool.check) recomputes its parameters from its stored data; its record
    # and log rows stand.
    recompute = r in done
    current = pool.params(r - 1, like=like)
    problems = list(method.problems(r, unlabeled) if method.problems else unlabeled)
    round_key = jax.random.fold_in(jax.random.key(seed), r)
    # 1. Plan (once per round).
    plan = store.load(r, "plan.json")
    if plan is None:
      plan = (method.plan(ctx_for(r, current, base, jax.random.fold_in(round_key, 10**6)),
                          problems) if method.plan else {})
      plan = dict(plan, num_problems=len(problems))
      store.save(r, "plan.json", plan)
    # 2. E-step in resumable chunks: the trajectories, then the records.
    cs = config.chunk_size
    num_chunks = -(-len(problems) // cs)
    stored = [c for c in range(num_chunks) if store.has_chunk(r, c)]
    bar = progress_lib.ProgressBar(
        num_chunks, f"round{r}/generate", keys=(), initial=len(stored),
        min_line_seconds=progress_lib.PHASE_LINE_SECONDS)
    for c in range(num_chunks):
      if c in stored:
        continue
      ctx = ctx_for(r, current, base, jax.random.fold_in(round_key, c))
      tasks = problems[c * cs:(c + 1) * cs]
      if method.sample_chunk is not None:
        recs = method.sample_chunk(ctx, tasks, plan)
      else:
        recs = ctx.sample(tasks).records()
      store.write_chunk(r, c, recs, round_store.concat_chunks(
          [g.stored() for g in ctx.generated]))
      stored.append(c)
      bar.update(len(stored))
      if callback is not None:
        callback("chunk", round=r, chunk=c)
    bar.close()
    # 3. Filters over the whole round.
    selected = store.load(r, "selected.json")
    if selected is None:
      records = store.read_chunks(r, num_chunks)
      if method.select_is_transform:
        examples, pairs, sel_metrics = select_with_transform(
            method.select, store.trajectory(r, num_chunks), tokenizer)
      else:
        examples, pairs, sel_metrics = method.select(records, plan,
                                                     ctx_for(r, current, base, round_key))
      selected = dict(examples=list(examples), pairs=list(pairs),
                      metrics=dict(sel_metrics), num_records=len(records))
      store.save(r, "selected.json", selected)
    # 4. M-step: SFT on examples, or a pairwise term on pairs.
    key = "pairs" if method.pairwise else "examples"
    train = round_store.round_train_set(method, labeled_examples, store, r, key)
    steps = round_fit.round_steps(method, config, r)
    start = base if method.train_from == "base" else current
    if not train:
      log(f"round {r}: empty training set; the model is carried over")
      params = pooled(r, lambda: start)
    elif method.pairwise:
      reference = current if method.reference == "previous" else base
      params = pooled(r, lambda: round_fit.fit_pairs(
          model=model, params=start, reference=reference, tokenizer=tokenizer,
          pairs=train, steps=steps, config=config, seed=seed * 1009 + r,
          objective=method.objective, ckpt_dir=store.train_dir(r),
          writer=None if recompute else writer,
          desc=f"round{r}", step_offset=r * 100_000, callback=callback,
          **method.objective_settings)[0])
    else:
      params = sft(r, start, train, steps, f"round{r}", log=not recompute)
    if recompute:
      log(f"round {r}: parameters recomputed (the pool entry was damaged)")
      continue
    ctx = ctx_for(r, params, base, jax.random.fold_in(round_key, 10**6 + 1))
    extra = method.after_round(ctx, store) if method.after_round else {}
    # 5. Evaluate and record.
    p1 = record(r, params, ctx, {"rounds/selected": len(selected["examples"])},
                selected=len(selected["examples"]), pairs=len(selected["pairs"]),
                candidates=selected["num_records"], train_size=len(train),
                train_steps=steps, plan={k: v for k, v in plan.items()
                                         if k != "candidates"},
                select=selected["metrics"], after_round=extra)
    log(f"round {r}: selected {len(selected['examples'])}/{selected['num_records']}"
        f" candidates, train {len(train)} x {steps} steps, held-out pass@1 {p1:.3f}")
  writer.close()
  pool.close()
  return store.records()


def history_table(records: Sequence[Mapping[str, Any]], *,
                  extra: Sequence[tuple[str, Callable[[Mapping], Any]]] = ()) -> str:
  """A markdown table of round records (plus ``extra`` (header, fn) columns)."""
  heads = ["round", "held-out pass@1", "by difficulty", "selected", "train size"]
  heads += [h for h, _ in extra]
  lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
  for rec in records:
    bd = " ".join(f"d{k}:{v:.2f}" for k, v in rec.get("test_by_difficulty", {}).items())
    cells = [str(rec["round"]) if rec["round"] else "warm start",
             f"{rec['test_pass1']:.3f}", bd, str(rec.get("selected", "-")),
             str(rec.get("train_size", "-"))]
    for _, fn in extra:
      try:
        v = fn(rec)
      except (KeyError, TypeError):
        v = "-"
      cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
