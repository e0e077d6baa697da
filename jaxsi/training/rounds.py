"""Self-training in rounds: generate → filter → store → train → evaluate → record.

The outer loop shared by the rejection-sampling self-training family
(METHODS.md family 1): STaR (Zelikman et al. 2022), RFT (Yuan et al. 2023),
ReST-EM (Singh et al. 2023), B-STaR (Zeng et al. 2024), V-STaR (Hosseini et
al. 2024), SFT-Sharpening (Huang et al. 2024) and easy-to-hard
self-improvement (Lee et al. 2025). A method is a :class:`RoundsMethod`: which
problems a round uses, how it samples them (``sample_chunk``), how it turns
the round's candidates into training examples (``select``), where training
starts (``train_from``) and whether data accumulates. This module runs any of
them with one schedule::

  round 0: warm start (SFT on the labeled set) → pool[0], eval, record
  round r ≥ 1:
    plan      = method.plan(ctx, problems)              → round_r/plan.json
    for chunk c of problems (fixed size, own PRNG key):
      records = method.sample_chunk(ctx, chunk, plan)   → round_r/chunks/c.json
    examples, pairs, metrics = method.select(all records of the round)
                                                        → round_r/selected.json
    train set = [labeled] + (selected of rounds 1..r if accumulate else r)
    params    = SFT from pool[0] ('base') or pool[r-1] ('current')  → pool[r]
    method.after_round(...)   (e.g. V-STaR's verifier)
    eval → rounds.json

Resumability: every artefact is written atomically (temp file + rename) and
each step is skipped when its artefact exists, so an interrupted run restarts
where it stopped — a chunk is either on disk complete or regenerated with the
same key (no data lost or duplicated). The M-step is ``jaxsi.training.fit.fit``:
it checkpoints its TrainState with the batch position and replays the same
batches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.models import logprobs as logprobs_lib
from jaxsi.sampling import strategies
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import metrics as metrics_lib

Record = dict      # one sampled candidate (JSON): task_id, prompt, completion, ...
Example = dict     # one training example: prompt, completion, task_id


# ------------------------------------------------------------------- storage
def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to ``path`` atomically (temp file, fsync, rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


class RoundStore:
  """The on-disk layout of a rounds run (see module docstring).

  ``workdir/rounds.json`` (records of finished rounds), ``workdir/round_{r:03d}/``
  with ``plan.json``, ``chunks/chunk_{c:05d}.json`` and ``selected.json``,
  ``workdir/train/round_{r:03d}`` (M-step checkpoints, removed when the round's
  parameters are in the pool) and ``workdir/pool`` (:class:`CheckpointPool`).
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)

  def round_dir(self, r: int) -> str:
    return os.path.join(self.workdir, f"round_{int(r):03d}")

  def chunk_path(self, r: int, c: int) -> str:
    return os.path.join(self.round_dir(r), "chunks", f"chunk_{int(c):05d}.json")

  def has_chunk(self, r: int, c: int) -> bool:
    return os.path.exists(self.chunk_path(r, c))

  def write_chunk(self, r: int, c: int, records: Sequence[Record]) -> None:
    write_json_atomic(self.chunk_path(r, c), {"chunk": int(c), "records": list(records)})

  def read_chunks(self, r: int, num_chunks: int) -> list[Record]:
    """All candidate records of round ``r`` in chunk order.

    Raises:
      FileNotFoundError: a chunk is missing.
    """
    out = []
    for c in range(num_chunks):
      out.extend(read_json(self.chunk_path(r, c))["records"])
    return out

  def _path(self, r: int, name: str) -> str:
    return os.path.join(self.round_dir(r), name)

  def load(self, r: int, name: str) -> Optional[Any]:
    p = self._path(r, name)
    return read_json(p) if os.path.exists(p) else None

  def save(self, r: int, name: str, obj: Any) -> None:
    write_json_atomic(self._path(r, name), obj)

  def train_dir(self, r: int, tag: str = "policy") -> str:
    return os.path.join(self.workdir, "train", f"{tag}_round_{int(r):03d}")

  @property
  def pool_dir(self) -> str:
    """The :class:`CheckpointPool` directory (round r's parameters)."""
    return os.path.join(self.workdir, "pool")

  @property
  def records_path(self) -> str:
    return os.path.join(self.workdir, "rounds.json")

  def records(self) -> list[dict]:
    """Records of finished rounds, by round."""
    if not os.path.exists(self.records_path):
      return []
    return read_json(self.records_path)

  def add_record(self, record: Mapping[str, Any]) -> None:
    """Appends a round record (atomically rewrites ``rounds.json``).

    Raises:
      ValueError: that round already has a record.
    """
    recs = self.records()
    if any(x["round"] == record["round"] for x in recs):
      raise ValueError(f"RoundStore: round {record['round']} already recorded")
    write_json_atomic(self.records_path, recs + [dict(record)])


# ---------------------------------------------------------------- the method
@dataclasses.dataclass(frozen=True)
class RoundsMethod:
  """A self-training method as data (what :func:`run_rounds` runs).

  Attributes:
    name: method name.
    sample_chunk: ``fn(ctx, tasks, plan) -> list[Record]``; candidates for a
      chunk of problems (must be deterministic given ``ctx.rng``).
    select: ``fn(records, plan, ctx) -> (examples, pairs, metrics)``; the
      filters over all candidates of the round. ``examples`` are
      ``{'prompt', 'completion', 'task_id'}`` dicts, ``pairs`` are
      ``{'prompt', 'chosen', 'rejected', 'task_id'}`` dicts (may be empty).
    plan: ``fn(ctx, tasks) -> dict`` run once per round before sampling
      (e.g. B-STaR's choice of temperature and threshold), or None.
    problems: ``fn(round, unlabeled) -> tasks`` of round ``round`` (default:
      all unlabeled problems).
    warm_start: ``fn(labeled) -> examples`` of the warm start (default: each
      labeled task's prompt → target).
    train_from: 'base' (restart from the warm start every round) or
      'current' (continue from the previous round).
    accumulate: train on the selected data of all rounds so far (else only
      the latest round's).
    include_labeled: add the labeled warm-start examples to every round.
    steps_growth: the round-r M-step runs ``steps · growth^(r-1)`` steps
      (STaR: 1.2).
    after_round: ``fn(ctx, store) -> metrics`` after the M-step (V-STaR's
      verifier; must be resumable itself), or None.
    evaluate: ``fn(ctx, test) -> metrics`` extra evaluation, or None.
  """

  name: str
  sample_chunk: Callable[..., list]
  select: Callable[..., tuple]
  plan: Optional[Callable[..., dict]] = None
  problems: Optional[Callable[[int, Sequence[Any]], Sequence[Any]]] = None
  warm_start: Optional[Callable[[Sequence[Any]], list]] = None
  train_from: str = "current"
  accumulate: bool = False
  include_labeled: bool = True
  steps_growth: float = 1.0
  after_round: Optional[Callable[..., dict]] = None
  evaluate: Optional[Callable[..., dict]] = None

  def __post_init__(self):
    if self.train_from not in ("base", "current"):
      raise ValueError(f"RoundsMethod {self.name}: train_from must be 'base' or"
                       f" 'current', got {self.train_from!r}")
    if self.steps_growth <= 0:
      raise ValueError(f"RoundsMethod {self.name}: steps_growth must be > 0")


def labeled_only(method: RoundsMethod) -> RoundsMethod:
  """The no-self-training control of ``method``: its schedule, no generated data.

  Every round samples nothing and selects nothing, so the M-step runs the
  same number of steps (``train_from``, ``steps_growth``) on the labeled
  warm-start examples only. Comparing ``method`` with this control separates
  the effect of the self-generated data from that of the extra steps.

  Raises:
    ValueError: ``method`` does not train on the labeled set.
  """
  if not method.include_labeled:
    raise ValueError(f"labeled_only({method.name}): the method trains without the"
                     " labeled set, so its control would have no data")
  return dataclasses.replace(
      method, name=f"{method.name}_labeled_only", problems=lambda r, unlabeled: [],
      sample_chunk=lambda ctx, tasks, plan: [],
      select=lambda records, plan, ctx: ([], [], {}), plan=None,
      after_round=None, evaluate=None)


def round_train_set(method: "RoundsMethod", labeled_examples: Sequence[Example],
                    store: "RoundStore", r: int) -> list[Example]:
  """The M-step data of round ``r``: [labeled] + selected of 1..r (accumulate) or r."""
  train = list(labeled_examples) if method.include_labeled else []
  for q in (range(1, r + 1) if method.accumulate else [r]):
    train.extend(store.load(q, "selected.json")["examples"])
  return train


def round_steps(method: "RoundsMethod", config: "RoundsConfig", r: int) -> int:
  """M-step steps of round ``r`` (``steps_per_round · steps_growth^(r-1)``)."""
  return int(round(config.steps_per_round * method.steps_growth ** (r - 1)))


def task_examples(tasks: Sequence[Any]) -> list[Example]:
  """Supervised examples (prompt → target) of labeled tasks."""
  return [dict(prompt=t.prompt, completion=t.target, task_id=t.id) for t in tasks]


# ------------------------------------------------------------------- context
_SEQ_LOGPROB_CACHE: dict = {}


def sequence_logprobs(model: Any, params: Any, traj: Any, *,
                      normalize: bool = False) -> np.ndarray:
  """f32[B]: log π(y | x) = Σ_t loss_mask·log p(y_t | ·) (mean if ``normalize``).

  Scored at temperature 1 (the model's own likelihood, as in SFT-Sharpening,
  Huang et al. 2024, Eq. 3).
  """
  fn = _SEQ_LOGPROB_CACHE.get(model)
  if fn is None:
    def f(p, tokens, positions, input_mask, loss_mask):
      lp, _ = logprobs_lib.token_logprobs(model, p, tokens, positions,
                                          input_mask=input_mask)
      m = loss_mask.astype(jnp.float32)
      return jnp.sum(lp * m, axis=-1), jnp.sum(m, axis=-1)
    fn = _SEQ_LOGPROB_CACHE[model] = jax.jit(f)
  total, count = jax.device_get(fn(params, traj.tokens, traj.positions,
                                   traj.input_mask, traj.loss_mask))
  total, count = np.asarray(total), np.asarray(count)
  return total / np.maximum(count, 1.0) if normalize else total


@dataclasses.dataclass
class RoundContext:
  """What a method's callbacks may use in round ``round``.

  Attributes:
    round: the round number (1-based; 0 = warm start).
    model: the static model.
    params: parameters of the model that generates this round (round r-1).
    base_params: the warm-started parameters (round 0).
    tokenizer: the tokenizer.
    rng: this callback's PRNG key (per chunk for ``sample_chunk``).
    pool: the :class:`CheckpointPool` (any past round's model).
    config: the run's :class:`RoundsConfig`.
    workdir: the run directory (methods may keep their own artefacts there).
    labeled_examples: the warm-start examples (``method.warm_start`` of the
      labeled tasks), e.g. for methods that train extra models.
    unlabeled: the run's unlabeled tasks (e.g. V-STaR's verifier samples).
  """

  round: int
  model: Any
  params: Any
  base_params: Any
  tokenizer: Any
  rng: jax.Array
  pool: pool_lib.CheckpointPool
  config: "RoundsConfig"
  workdir: str
  labeled_examples: Sequence[Example] = ()
  unlabeled: Sequence[Any] = ()

  def rollout(self, tasks: Sequence[Any], *, strategy: Any, n: int,
              rng: Optional[jax.Array] = None, params: Any = None
              ) -> evaluate_lib.Rollout:
    """``n`` completions per task from the round's model (verified)."""
    return evaluate_lib.rollout(
        model=self.model, params=self.params if params is None else params,
        tokenizer=self.tokenizer, tasks=tasks,
        rng=self.rng if rng is None else rng, strategy=strategy, n=n,
        max_new_tokens=self.config.max_new_tokens,
        batch_size=self.config.rollout_batch)

  def sequence_logprobs(self, traj: Any, *, params: Any = None,
                        normalize: bool = False) -> np.ndarray:
    return sequence_logprobs(self.model, self.params if params is None else params,
                             traj, normalize=normalize)


def rollout_records(tasks: Sequence[Any], ro: evaluate_lib.Rollout, **extra_fields
                    ) -> list[Record]:
  """One JSON record per sample of a rollout (``ro.n`` per task, in order).

  Fields: task_id, prompt, answer_gold, difficulty, sample (index within
  the task), completion, answer (extracted, canonical), correct, plus
  ``extra_fields`` (each a per-sample sequence or a scalar).
  """
  out = []
  for i, text in enumerate(ro.texts):
    task = tasks[i // ro.n]
    rec = dict(task_id=task.id, prompt=task.prompt, answer_gold=task.answer,
               difficulty=int(task.difficulty), sample=i % ro.n, completion=text,
               answer=ro.answers[i], correct=bool(ro.correct[i]))
    for k, v in extra_fields.items():
      rec[k] = v[i] if isinstance(v, (list, tuple, np.ndarray)) else v
      if isinstance(rec[k], np.generic):
        rec[k] = rec[k].item()
    out.append(rec)
  return out


def group_by_task(records: Sequence[Record]) -> dict[str, list[Record]]:
  """Records grouped by task id, in first-appearance order."""
  groups: dict[str, list[Record]] = {}
  for r in records:
    groups.setdefault(r["task_id"], []).append(r)
  return groups


# --------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RoundsConfig:
  """Schedule and optimisation settings of :func:`run_rounds`.

  Attributes:
    rounds: self-training rounds after the warm start.
    warm_start_steps: SFT steps of round 0.
    steps_per_round: M-step SFT steps of round 1 (see ``steps_growth``).
    batch_size: SFT batch size (smaller datasets are tiled to fill it).
    max_len: padded SFT length.
    learning_rate, warmup_steps, weight_decay, max_grad_norm: AdamW (constant
      learning rate after warmup, restarted each M-step).
    max_new_tokens: completion budget.
    rollout_batch: sampler rows per call.
    chunk_size: problems per stored generation chunk (the resume granularity).
    save_every: M-step checkpoint interval in steps.
    eval_n: greedy evaluation uses 1 sample; this is the N of extra
      evaluations that sample (e.g. best-of-N).
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
  seed: int = 0


# ------------------------------------------------------------------- training
def optimizer_spec(config: RoundsConfig) -> fit_lib.OptimizerSpec:
  """The M-step optimizer: AdamW, linear warmup then constant, clipping.

  The schedule length is the M-step's (``max(steps, warmup_steps + 1)``).
  """
  return fit_lib.OptimizerSpec(
      learning_rate=config.learning_rate, schedule="constant",
      warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
      max_grad_norm=config.max_grad_norm)


def fit_sft(*, model: Any, params: Any, tokenizer: Any,
            examples: Sequence[Example], steps: int, config: RoundsConfig,
            ckpt_dir: str, seed: int, writer: Optional[metrics_lib.MetricWriter] = None,
            desc: str = "sft", step_offset: int = 0,
            callback: Optional[Callable[..., None]] = None) -> tuple[Any, dict]:
  """Resumable SFT of ``params`` on ``examples`` for ``steps`` updates (``fit``).

  Examples longer than ``config.max_len`` (self-generated completions of a
  model that does not stop) are dropped and counted; a dataset smaller than
  ``config.batch_size`` is tiled. ``ckpt_dir`` holds the resumable
  checkpoints (every ``config.save_every`` steps); ``callback`` is called as
  ``callback('train_step', tag=desc, position=p)`` after every step.

  Returns:
    ``(params, last_metrics)``.
  """
  data = fit_lib.sft_examples(tokenizer, examples, max_len=config.max_len,
                              drop_too_long=True, desc=desc)
  step_callback = None
  if callback is not None:
    def step_callback(position, metrics):
      del metrics
      callback("train_step", tag=desc, position=position)
  res = fit_lib.fit(model=model, params=params, objective=fit_lib.sft(), data=data,
                    optimizer=optimizer_spec(config), steps=steps,
                    batch_size=config.batch_size, seed=seed, ckpt_dir=ckpt_dir,
                    save_every=config.save_every, writer=writer, desc=desc,
                    step_offset=step_offset, callback=step_callback,
                    log_every=max(1, min(50, steps)))
  return res.params, res.metrics


# ----------------------------------------------------------------- the loop
def run_rounds(
    *,
    method: RoundsMethod,
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
    method: the :class:`RoundsMethod`.
    model: static model.
    init_params: parameters before the warm start (also the restore template).
    tokenizer: the tokenizer.
    labeled: supervised warm-start tasks (their ``target`` is trained on).
    unlabeled: problems for self-training (answers only reach the verifier).
    test: held-out problems (greedy pass@1 each round).
    workdir: run directory (see :class:`RoundStore`); rerun with the same
      arguments to resume.
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
  """
  store = RoundStore(workdir)
  pool = pool_lib.CheckpointPool(store.pool_dir)
  writer = metrics_lib.MetricWriter(store.workdir)
  like = init_params
  t0 = time.time()
  done = {r["round"] for r in store.records()}
  seed = config.seed
  labeled_examples = (method.warm_start or task_examples)(labeled)

  def held_out(params, eval_seed):
    """Greedy pass@1 on ``test`` (overall, per difficulty)."""
    res = evaluate_lib.evaluate_policy(
        model, params, tokenizer, test, strategy=strategies.Greedy(), n=1,
        max_new_tokens=config.max_new_tokens, seed=eval_seed,
        batch_size=config.rollout_batch, ks=(1,), maj_ks=())
    return {"pass@1": res["overall"]["pass@1"],
            "by_difficulty": {k: v["pass@1"] for k, v in res["by_difficulty"].items()}}

  def log(msg):
    if verbose:
      print(f"[jaxsi.rounds:{method.name}] {msg}", flush=True)

  def finish_params(r, start, examples, steps, tag):
    if r in pool:
      return pool.params(r, like=like)
    params, m = fit_sft(model=model, params=start, tokenizer=tokenizer,
                        examples=examples, steps=steps, config=config,
                        ckpt_dir=store.train_dir(r), seed=seed * 1009 + r,
                        writer=writer, desc=tag, step_offset=r * 100_000,
                        callback=callback)
    pool.save(r, params)
    shutil.rmtree(store.train_dir(r), ignore_errors=True)
    return params

  def ctx_for(r, params, base, rng):
    return RoundContext(round=r, model=model, params=params, base_params=base,
                        tokenizer=tokenizer, rng=rng, pool=pool, config=config,
                        workdir=store.workdir, labeled_examples=labeled_examples,
                        unlabeled=tuple(unlabeled))

  # Round 0: warm start.
  if warm_params is not None and 0 not in pool:
    pool.save(0, warm_params)
  base = finish_params(0, init_params, labeled_examples, config.warm_start_steps,
                       "warm_start")
  if 0 not in done:
    ev = held_out(base, seed + 10_000)
    rec = dict(round=0, test_pass1=ev["pass@1"], test_by_difficulty=ev["by_difficulty"],
               train_size=len(labeled_examples), seconds=round(time.time() - t0, 1))
    if method.evaluate is not None:
      rec["eval"] = method.evaluate(ctx_for(0, base, base, jax.random.key(seed + 20_000)), test)
    store.add_record(rec)
    writer.write_scalars(0, {"eval/test_pass@1": ev["pass@1"]})
    log(f"warm start: held-out pass@1 {ev['pass@1']:.3f}")

  for r in range(1, config.rounds + 1):
    if r in done:
      continue
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
    # 2. E-step in resumable chunks.
    cs = config.chunk_size
    num_chunks = -(-len(problems) // cs)
    for c in range(num_chunks):
      if store.has_chunk(r, c):
        continue
      recs = method.sample_chunk(ctx_for(r, current, base, jax.random.fold_in(round_key, c)),
                                 problems[c * cs:(c + 1) * cs], plan)
      store.write_chunk(r, c, recs)
      if callback is not None:
        callback("chunk", round=r, chunk=c)
    # 3. Filters over the whole round.
    selected = store.load(r, "selected.json")
    if selected is None:
      records = store.read_chunks(r, num_chunks)
      examples, pairs, sel_metrics = method.select(records, plan,
                                                   ctx_for(r, current, base, round_key))
      selected = dict(examples=list(examples), pairs=list(pairs),
                      metrics=dict(sel_metrics), num_records=len(records))
      store.save(r, "selected.json", selected)
    # 4. M-step.
    train = round_train_set(method, labeled_examples, store, r)
    steps = round_steps(method, config, r)
    start = base if method.train_from == "base" else current
    if train:
      params = finish_params(r, start, train, steps, f"round{r}")
    else:
      log(f"round {r}: empty training set; the model is carried over")
      if r not in pool:
        pool.save(r, start)
      params = pool.params(r, like=like)
    ctx = ctx_for(r, params, base, jax.random.fold_in(round_key, 10**6 + 1))
    extra = method.after_round(ctx, store) if method.after_round else {}
    # 5. Evaluate and record.
    ev = held_out(params, seed + 10_000 + r)
    rec = dict(round=r, test_pass1=ev["pass@1"], test_by_difficulty=ev["by_difficulty"],
               selected=len(selected["examples"]), pairs=len(selected["pairs"]),
               candidates=selected["num_records"], train_size=len(train),
               train_steps=steps, plan={k: v for k, v in plan.items()
                                        if k != "candidates"},
               select=selected["metrics"], after_round=extra,
               seconds=round(time.time() - t0, 1))
    if method.evaluate is not None:
      rec["eval"] = method.evaluate(ctx, test)
    store.add_record(rec)
    writer.write_scalars(r * 100_000, {"eval/test_pass@1": ev["pass@1"],
                                       "rounds/selected": len(selected["examples"])})
    log(f"round {r}: selected {len(selected['examples'])}/{selected['num_records']}"
        f" candidates, train {len(train)} x {steps} steps, held-out pass@1"
        f" {ev['pass@1']:.3f}")
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
