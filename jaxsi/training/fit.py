r"""One resumable supervised fit: SFT, DPO-family pairs, reward-model regression.

``fit(objective=..., data=...)`` runs ``steps`` updates of the jitted
``steps.make_update_step`` over fixed-shape host rows and returns the new
parameters. The pieces are pure and separate (optax / T5X style):

* **data** — a :class:`FitData` of numpy rows, built by a constructor:

  - :func:`sft_data` / :func:`sft_examples` / :meth:`FitData.sft`: supervised
    rows (``batching.sft_arrays`` layout: BOS + prompt + completion + EOS,
    loss on the completion);
  - :func:`preference_data`: (chosen, rejected) pairs; a batch lays out P
    pairs as rows [0:P] chosen, [P:2P] rejected with ``pair_ids`` and
    ``extras['is_chosen']`` (``preference.halves_pairing``), the convention
    every DPO-family term of ``jaxsi.transforms.preference`` reads, and
    reference log-probs in ``traj.ref_logprobs`` (:func:`reference_logprobs`);
    a pair never straddles two batches;
  - :func:`score_data`: sequences with a scalar target (``traj.rewards[:, 0]``)
    for pointwise reward-model regression (:func:`score_regression`);
    Bradley–Terry pairwise reward modelling trains on :func:`preference_data`
    pairs (optionally with per-pair ``margins``), both through
    :func:`reward_model`.

* **objective** — an :class:`Objective`: the term plus the hashable key that
  names it (:func:`sft`, :func:`preference`, :func:`score_regression`,
  :func:`reward_model`);
* **optimizer** — an :class:`OptimizerSpec` (``optimizer.make_optimizer``
  settings) or any ``optax.GradientTransformation``.

The update step is cached per (model, objective key, optimizer, schedule
length): a second fit with equal settings reuses the compiled step.

Order and resume: batch k is ``EpochIterator(len(data), items, seed).indices(k)``
(a pure function of the seed and k; a dataset smaller than one batch is first
tiled with :func:`tile_to`), the PRNG key of the TrainState is
``jax.random.key(seed)``. With ``ckpt_dir`` a ``Checkpointer`` saves the
TrainState and the data position every ``save_every`` steps (not the final
state: that is returned); a call that finds a checkpoint restores it and
replays exactly the remaining batches, so an interrupted fit (e.g. a
``callback`` that raises) resumed with the same arguments gives the
uninterrupted result bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsi.data import batching
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.trajectory import Trajectory, positions_from_mask
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import progress as progress_lib
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as train_state_lib
from jaxsi.transforms import preference as preference_lib
from jaxsi.transforms import value as value_lib
from jaxsi.transforms.base import ObjectiveTerm

KINDS = ("sft", "pairs", "scores")
ROW_KEYS = ("tokens", "input_mask", "loss_mask")
REF_KEY = "ref_logprobs"
SCORE_KEY = "scores"
# A per-pair margin f32[N] of 'pairs' data (Bradley–Terry reward models):
# traj.extras['margin'] on the chosen rows (value.bradley_terry).
MARGIN_KEY = value_lib.MARGIN_KEY
ITEM_KEYS = (SCORE_KEY, MARGIN_KEY)   # one value per item, not [N, T]
REWARD_MODEL_KINDS = ("pointwise", "bradley_terry")
# 'sft' arrays named 'extras/<key>' ([N, T, ...]) go to traj.extras[<key>]
# (e.g. stored top-k teacher logits of offline logit KD, jaxsi.methods.logit_kd).
EXTRAS_PREFIX = "extras/"
# Terms of jaxsi.transforms.preference that read chosen/rejected pairs
# (DPO's loss_type covers IPO, hinge, robust, APO, …; cpo covers SimPO/AlphaPO).
PAIRWISE_TERMS = ("dpo", "orpo", "cpo")


# ---------------------------------------------------------------------- data
def tile_to(n_rows: int, size: int) -> np.ndarray:
  """Row indices repeating ``range(n_rows)`` until at least ``size`` rows."""
  if n_rows < 1:
    raise ValueError("tile_to: empty dataset")
  reps = -(-size // n_rows)
  return np.tile(np.arange(n_rows), reps)[:max(size, n_rows)]


@dataclasses.dataclass(frozen=True, eq=False)
class FitData:
  """Fixed-shape host rows for :func:`fit`; one *item* is one training unit.

  Attributes:
    kind: 'sft' (one row per item), 'pairs' (a chosen and a rejected row) or
      'scores' (one row with a scalar target).
    arrays: numpy arrays with the items on the leading axis. 'sft':
      ``tokens``/``input_mask``/``loss_mask`` [N, T]; 'scores': the same plus
      ``scores`` f32[N]; 'pairs': ``chosen/<key>`` and ``rejected/<key>`` for
      those keys, optionally ``chosen/ref_logprobs``/``rejected/ref_logprobs``
      f32[N, T] and a per-pair ``margin`` f32[N].
  """

  kind: str
  arrays: Mapping[str, np.ndarray]

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"FitData: kind must be one of {KINDS}, got {self.kind!r}")
    sides = ("chosen/", "rejected/") if self.kind == "pairs" else ("",)
    need = [s + k for s in sides for k in ROW_KEYS]
    if self.kind == "scores":
      need.append(SCORE_KEY)
    missing = [k for k in need if k not in self.arrays]
    if missing:
      raise ValueError(f"FitData({self.kind}): missing arrays {missing}")
    n = {np.shape(v)[0] for v in self.arrays.values()}
    if len(n) != 1:
      raise ValueError(f"FitData({self.kind}): arrays disagree on the number of"
                       f" items: { {k: np.shape(v) for k, v in self.arrays.items()} }")
    shape = np.shape(self.arrays[sides[0] + "tokens"])
    for k, v in self.arrays.items():
      if k.startswith(EXTRAS_PREFIX):
        if self.kind != "sft" or np.shape(v)[:2] != shape:
          raise ValueError(f"FitData({self.kind}): {k} has shape {np.shape(v)};"
                           f" extras arrays are for 'sft' data and need [N, T]"
                           f" = {shape} leading dims")
        continue
      if k in ITEM_KEYS:
        if np.ndim(v) != 1:
          raise ValueError(f"FitData({self.kind}): {k} has shape {np.shape(v)};"
                           " expected one value per item [N]")
        continue
      if np.shape(v) != shape:
        raise ValueError(f"FitData({self.kind}): {k} has shape {np.shape(v)},"
                         f" expected {shape}")
    if self.kind == "pairs":
      refs = [s + REF_KEY in self.arrays for s in sides]
      if refs[0] != refs[1]:
        raise ValueError("FitData(pairs): give reference log-probs for both sides or"
                         " neither")

  @classmethod
  def sft(cls, arrays: Mapping[str, np.ndarray]) -> "FitData":
    """SFT rows from prepared ``tokens``/``input_mask``/``loss_mask`` arrays."""
    return cls("sft", {k: np.asarray(arrays[k]) for k in ROW_KEYS})

  def __len__(self) -> int:
    return int(np.shape(next(iter(self.arrays.values())))[0])

  @property
  def rows_per_item(self) -> int:
    """Batch rows one item fills (2 for a pair)."""
    return 2 if self.kind == "pairs" else 1

  @property
  def length(self) -> int:
    """Padded sequence length T."""
    key = "chosen/tokens" if self.kind == "pairs" else "tokens"
    return int(np.shape(self.arrays[key])[1])

  def take(self, index: np.ndarray) -> "FitData":
    """The items ``index`` (e.g. :func:`tile_to` indices)."""
    return FitData(self.kind, {k: v[index] for k, v in self.arrays.items()})

  def batch(self, index: np.ndarray) -> Trajectory:
    """The Trajectory of items ``index`` (``rows_per_item · len(index)`` rows)."""
    a = self.arrays
    if self.kind == "sft":
      traj = batching.sft_trajectory({k: a[k] for k in ROW_KEYS}, index)
      extras = {k[len(EXTRAS_PREFIX):]: jnp.asarray(v[index])
                for k, v in a.items() if k.startswith(EXTRAS_PREFIX)}
      return traj.replace(extras={**traj.extras, **extras}) if extras else traj
    if self.kind == "scores":
      return Trajectory.create(
          a["tokens"][index], input_mask=a["input_mask"][index],
          loss_mask=a["loss_mask"][index],
          rewards=jnp.asarray(a[SCORE_KEY][index], jnp.float32)[:, None])
    traj = pair_batch({k[len("chosen/"):]: v for k, v in a.items()
                       if k.startswith("chosen/")},
                      {k[len("rejected/"):]: v for k, v in a.items()
                       if k.startswith("rejected/")}, index)
    if MARGIN_KEY in a:
      m = np.asarray(a[MARGIN_KEY], np.float32)[index]
      traj = traj.replace(extras={**traj.extras,
                                  MARGIN_KEY: jnp.asarray(np.concatenate([m, m]))})
    return traj


def pair_batch(chosen: Mapping[str, np.ndarray], rejected: Mapping[str, np.ndarray],
               index: np.ndarray) -> Trajectory:
  """A preference batch: rows [0:P] chosen, [P:2P] their rejected partners.

  ``chosen``/``rejected`` are ``sft_arrays`` dicts (row i of both is pair i),
  optionally with ``'ref_logprobs'`` (reference token log-probs, f32[N, T]);
  pairs are linked with ``preference.halves_pairing``.
  """
  p = len(index)
  pair_ids, is_chosen = preference_lib.halves_pairing(p)

  def cat(k):
    return np.concatenate([chosen[k][index], rejected[k][index]])

  optional = {}
  if REF_KEY in chosen:
    optional["ref_logprobs"] = jnp.asarray(cat(REF_KEY), jnp.float32)
  return Trajectory.create(cat("tokens"), input_mask=cat("input_mask"),
                           loss_mask=cat("loss_mask"), pair_ids=pair_ids,
                           extras={preference_lib.IS_CHOSEN_KEY: jnp.asarray(is_chosen)},
                           **optional)


def sequence_length(tokenizer: Any, prompt: str, completion: str) -> int:
  """Tokens of a (prompt, completion) row as ``sft_arrays`` lays it out (BOS, EOS)."""
  return len(tokenizer.encode(prompt)) + len(tokenizer.encode(completion)) + 2


def sft_data(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *,
             max_len: int, ids: Optional[Sequence[str]] = None) -> FitData:
  """SFT rows of (prompt, completion) pairs (``batching.sft_arrays``).

  Raises:
    ValueError: a pair longer than ``max_len`` (named by ``ids``).
  """
  return FitData.sft(batching.sft_arrays(tokenizer, list(prompts), list(completions),
                                         max_len=max_len, ids=ids))


def sft_examples(tokenizer: Any, examples: Sequence[Mapping[str, str]], *,
                 max_len: int, drop_too_long: bool = False,
                 desc: str = "sft") -> FitData:
  """SFT rows of ``{'prompt', 'completion'[, 'task_id']}`` examples.

  Args:
    tokenizer: the tokenizer.
    examples: the examples.
    max_len: padded length.
    drop_too_long: drop (and report) examples longer than ``max_len`` instead
      of raising — self-generated completions of a model that does not stop.
    desc: label of the report and of errors.

  Raises:
    ValueError: no examples, or (without ``drop_too_long``) an example longer
      than ``max_len``, or (with it) every example longer.
  """
  if not examples:
    raise ValueError(f"sft_examples({desc}): no training examples")
  if drop_too_long:
    fits = [e for e in examples
            if sequence_length(tokenizer, e["prompt"], e["completion"]) <= max_len]
    if len(fits) < len(examples):
      print(f"[jaxsi.fit] {desc}: dropped {len(examples) - len(fits)} examples longer"
            f" than max_len={max_len}", flush=True)
      if not fits:
        raise ValueError(f"sft_examples({desc}): every example is longer than max_len")
    examples = fits
  return sft_data(tokenizer, [e["prompt"] for e in examples],
                  [e["completion"] for e in examples], max_len=max_len,
                  ids=[e.get("task_id", str(i)) for i, e in enumerate(examples)])


_REF_CACHE: dict = {}


def reference_logprobs(model: Any, params: Any, arrays: Mapping[str, np.ndarray], *,
                       batch: int) -> np.ndarray:
  """Token log-probs f32[N, T] of ``sft_arrays`` rows under ``params``.

  Rows are scored in fixed batches of ``batch`` (the last one wraps around to
  the first rows), so the jitted forward compiles once per model and shape.
  """
  fn = _REF_CACHE.get(model)
  if fn is None:
    def f(p, tokens, mask):
      lp, _ = logprobs_lib.token_logprobs(model, p, tokens, positions_from_mask(mask),
                                          input_mask=mask)
      return lp
    fn = _REF_CACHE[model] = jax.jit(f)
  n = arrays["tokens"].shape[0]
  out = []
  for s in range(0, n, batch):
    idx = np.arange(s, s + batch) % n
    out.append(np.asarray(fn(params, arrays["tokens"][idx], arrays["input_mask"][idx])))
  return np.concatenate(out)[:n]


def preference_data(tokenizer: Any, prompts: Sequence[str], chosen: Sequence[str],
                    rejected: Sequence[str], *, max_len: int,
                    reference: Optional[tuple[Any, Any]] = None,
                    reference_batch: int = 64,
                    margins: Optional[Sequence[float]] = None) -> FitData:
  """Preference pairs (prompt, chosen ≻ rejected) for the DPO-family terms.

  Args:
    tokenizer: the tokenizer.
    prompts, chosen, rejected: pair i is (prompts[i], chosen[i], rejected[i]).
    max_len: padded length of every row.
    reference: ``(model, params)`` of the frozen reference policy; its token
      log-probs become ``traj.ref_logprobs`` (None: no reference, for
      reference-free terms such as SimPO/ORPO).
    reference_batch: rows per reference forward pass.
    margins: per-pair margins m_i (``traj.extras['margin']``, read by
      :func:`reward_model` ``('bradley_terry')``; the DPO-family terms ignore
      them, so they are refused with a reference).

  Raises:
    ValueError: lengths differ, a row is longer than ``max_len``, margins
      of another length or non-finite, or margins with a reference.
  """
  if not len(prompts) == len(chosen) == len(rejected):
    raise ValueError(f"preference_data: {len(prompts)} prompts, {len(chosen)} chosen,"
                     f" {len(rejected)} rejected")
  if margins is not None:
    margins = np.asarray(margins, np.float32).reshape(-1)
    if len(margins) != len(prompts) or not np.all(np.isfinite(margins)):
      raise ValueError(f"preference_data: margins must be {len(prompts)} finite"
                       f" numbers, got {len(margins)} ({margins[:4]}...)")
    if reference is not None:
      raise ValueError("preference_data: margins are read by the Bradley–Terry"
                       " reward-model term only; the DPO-family terms (which use"
                       " a reference) would ignore them")
  sides = {"chosen": batching.sft_arrays(tokenizer, list(prompts), list(chosen),
                                         max_len=max_len),
           "rejected": batching.sft_arrays(tokenizer, list(prompts), list(rejected),
                                           max_len=max_len)}
  if reference is not None and len(prompts):
    model, params = reference
    for arr in sides.values():
      arr[REF_KEY] = reference_logprobs(model, params, arr, batch=reference_batch)
  arrays = {f"{s}/{k}": v for s, arr in sides.items() for k, v in arr.items()}
  if margins is not None:
    arrays[MARGIN_KEY] = margins
  return FitData("pairs", arrays)


def score_data(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
               scores: Sequence[float], *, max_len: int) -> FitData:
  """Sequences with a scalar target each, for :func:`score_regression`."""
  if len(scores) != len(prompts):
    raise ValueError(f"score_data: {len(prompts)} prompts but {len(scores)} scores")
  arrays = batching.sft_arrays(tokenizer, list(prompts), list(completions),
                               max_len=max_len)
  arrays[SCORE_KEY] = np.asarray(scores, np.float32).reshape(-1)
  return FitData("scores", arrays)


# ----------------------------------------------------------------- objective
@dataclasses.dataclass(frozen=True)
class Objective:
  """An objective term and the hashable key naming it (for the step cache).

  Attributes:
    key: equal keys must mean equal terms (same factory, same settings).
    term: ``(outputs, traj) -> (loss, metrics)``.
    with_values: the term reads ``outputs.values`` (the model's value head).
  """

  key: Hashable
  term: ObjectiveTerm = dataclasses.field(compare=False, hash=False, repr=False)
  with_values: bool = False


def sft(*, agg: str = "token-mean", mask: str = "loss") -> Objective:
  """Supervised NLL (``steps.sft_objective``)."""
  return Objective(("sft", agg, mask), steps_lib.sft_objective(agg=agg, mask=mask))


def preference(name: str = "dpo", **settings) -> Objective:
  """A pairwise term of ``jaxsi.transforms.preference`` (``dpo``, ``orpo``, ``cpo``).

  E.g. ``preference('dpo', beta=0.1)`` is Rafailov et al. 2023, Eq. 7:
  L = −log σ(β·((logπ(y⁺) − logπ_ref(y⁺)) − (logπ(y⁻) − logπ_ref(y⁻)))).
  ``settings`` are the factory's keyword arguments (hashable values).
  """
  if name not in PAIRWISE_TERMS:
    raise ValueError(f"preference: {name!r} is not a pairwise term of"
                     f" jaxsi.transforms.preference; expected one of {PAIRWISE_TERMS}")
  factory = getattr(preference_lib, name)
  key = ("preference", name, tuple(sorted(settings.items())))
  return Objective(key, factory(**settings))


def score_regression() -> Objective:
  """Pointwise reward-model regression on the value head (``value.score_regression``).

  Needs a model built with ``ModelConfig.value_head=True`` and :func:`score_data`.
  """
  return Objective(("score_regression",), value_lib.score_regression(),
                   with_values=True)


def reward_model(kind: str = "bradley_terry", **settings) -> Objective:
  """An outcome reward-model objective on the value head, either kind.

  * ``'pointwise'``: :func:`score_regression` on :func:`score_data` rows
    (e.g. verifier grades 1/0); no settings.
  * ``'bradley_terry'``: ``value.bradley_terry`` (Ouyang et al. 2022,
    arXiv:2203.02155, Eq. 1; TRL ``RewardTrainer``) on :func:`preference_data`
    pairs (no reference); settings ``margin``, ``center_rewards_coefficient``.

  Needs a model built with ``ModelConfig.value_head=True``; both kinds train
  through :func:`fit`.

  Raises:
    ValueError: an unknown kind, or settings the kind does not read.
  """
  if kind not in REWARD_MODEL_KINDS:
    raise ValueError(f"reward_model: kind must be one of {REWARD_MODEL_KINDS},"
                     f" got {kind!r}")
  if kind == "pointwise":
    if settings:
      raise ValueError(f"reward_model('pointwise') takes no settings, got"
                       f" {sorted(settings)}")
    return score_regression()
  unknown = set(settings) - {"margin", "center_rewards_coefficient"}
  if unknown:
    raise ValueError(f"reward_model('bradley_terry'): unknown settings"
                     f" {sorted(unknown)}; expected margin,"
                     " center_rewards_coefficient")
  key = ("reward_model", kind, tuple(sorted(settings.items())))
  return Objective(key, value_lib.bradley_terry(**settings), with_values=True)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """Settings of ``optimizer.make_optimizer`` (AdamW, warmup + schedule, clipping).

  ``total_steps=None`` means ``max(steps, warmup_steps + 1)`` of the fit.
  """

  learning_rate: float
  schedule: str = "constant"
  warmup_steps: int = 0
  total_steps: Optional[int] = None
  end_lr_ratio: float = 0.0
  weight_decay: float = 0.0
  max_grad_norm: Optional[float] = 1.0

  def resolve(self, steps: int) -> "OptimizerSpec":
    if self.total_steps is not None:
      return self
    return dataclasses.replace(self, total_steps=max(int(steps), self.warmup_steps + 1))

  def build(self) -> optax.GradientTransformation:
    return optimizer_lib.make_optimizer(**dataclasses.asdict(self))


_STEP_CACHE: dict = {}


def cached_update_step(*, model: Any, objective: Objective,
                       optimizer: Union[OptimizerSpec, optax.GradientTransformation],
                       steps: int, compiler_options: Optional[Mapping[str, Any]] = None
                       ) -> tuple[optax.GradientTransformation, Callable]:
  """``(optimizer, update)`` reused across fits with equal settings.

  Re-creating ``make_update_step`` per fit would recompile; the key is
  (model, objective key, optimizer settings incl. schedule length, compiler
  options). A raw optax transformation is keyed by identity.
  """
  if isinstance(optimizer, OptimizerSpec):
    optimizer = optimizer.resolve(steps)
    opt_key = optimizer
  else:
    opt_key = ("optax", id(optimizer))
  key = (model, objective.key, objective.with_values, opt_key,
         tuple(sorted((compiler_options or {}).items())))
  if key not in _STEP_CACHE:
    opt = optimizer.build() if isinstance(optimizer, OptimizerSpec) else optimizer
    _STEP_CACHE[key] = (opt, steps_lib.make_update_step(
        model=model, optimizer=opt, objective=objective.term,
        with_values=objective.with_values,
        # Full-vocabulary distillation terms mark themselves ``needs_logits``.
        with_logits=bool(getattr(objective.term, "needs_logits", False)),
        compiler_options=None if compiler_options is None else dict(compiler_options)))
  return _STEP_CACHE[key]


# ----------------------------------------------------------------------- fit
@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns.

  Attributes:
    params: the trained parameters.
    state: the final TrainState.
    metrics: mean metrics of the last logging interval (python floats; empty
      when no step ran in this call).
    history: per-step host metrics (numpy scalars) of the steps of this call.
    position: batches consumed (= ``steps``).
    start_position: the position this call started from (> 0: resumed).
    skipped_nonfinite: updates skipped for a non-finite loss/gradient.
  """

  params: Any
  state: Any
  metrics: dict
  history: list
  position: int
  start_position: int
  skipped_nonfinite: int


def fit(*, model: Any, params: Any, objective: Objective, data: FitData,
        optimizer: Union[OptimizerSpec, optax.GradientTransformation], steps: int,
        batch_size: int, seed: int, ckpt_dir: Optional[str] = None,
        save_every: int = 50, writer: Optional[metrics_lib.MetricWriter] = None,
        desc: str = "fit", step_offset: int = 0,
        callback: Optional[Callable[[int, dict], None]] = None, log_every: int = 50,
        compiler_options: Optional[Mapping[str, Any]] = None) -> FitResult:
  """``steps`` updates of ``objective`` on ``data`` from ``params`` (resumable).

  Args:
    model: the static model.
    params: starting parameters (copied: the caller's stay valid).
    objective: the :class:`Objective`.
    data: the :class:`FitData`.
    optimizer: :class:`OptimizerSpec` or an optax transformation.
    steps: total updates of the fit (a resumed call runs the rest).
    batch_size: rows per update; a preference batch holds ``batch_size // 2``
      pairs. A dataset with fewer items than one batch is tiled.
    seed: seed of the batch order and of the TrainState's PRNG key.
    ckpt_dir: checkpoint directory (None: not resumable).
    save_every: checkpoint interval in steps.
    writer: metric writer; scalars ``{desc}/{name}`` every ``log_every``
      steps at global step ``step_offset + position``.
    desc: progress-bar and metrics label.
    step_offset: added to the position for the writer.
    callback: ``fn(position, metrics)`` after every step (and its
      checkpoint); raising from it interrupts the fit.
    log_every: metrics are fetched from the device (and averaged) every this
      many steps, counted from position 0.
    compiler_options: XLA options of the update step (e.g.
      ``steps.FAST_COMPILE``).

  Returns:
    A :class:`FitResult`.

  Raises:
    ValueError: empty data, a batch size that would split a preference pair,
      or a checkpoint beyond ``steps`` in ``ckpt_dir``.
  """
  if len(data) == 0:
    raise ValueError(f"fit({desc}): no training data")
  if steps < 0:
    raise ValueError(f"fit({desc}): steps={steps} must be >= 0")
  if batch_size < 1 or batch_size % data.rows_per_item:
    raise ValueError(
        f"fit({desc}): batch_size={batch_size} would split a preference pair across"
        f" batches; use a positive multiple of {data.rows_per_item} rows")
  items = batch_size // data.rows_per_item
  if len(data) < items:
    data = data.take(tile_to(len(data), items))
  n = len(data)
  opt, update = cached_update_step(model=model, objective=objective,
                                   optimizer=optimizer, steps=steps,
                                   compiler_options=compiler_options)
  # The update donates its state: train a copy (``params`` may be shared).
  state = train_state_lib.create_train_state(jax.tree.map(jnp.copy, params), opt,
                                             jax.random.key(seed))
  ckpt = None
  position = 0
  if ckpt_dir is not None:
    ckpt = checkpoint_lib.Checkpointer(ckpt_dir, keep=1, save_every=save_every,
                                       async_save=False)
  try:
    acc_restored = []
    if ckpt is not None and ckpt.latest_step() is not None:
      state, extra = ckpt.restore(state)
      position = int(extra["data_position"])
      # The steps since the last logged row (so that row averages the same
      # steps as in an uninterrupted fit) and no rows past the checkpoint.
      acc_restored = [{k: np.float32(v) for k, v in m.items()}   # as fetched
                      for m in extra.get("log_acc", [])]
      if position > steps:
        raise ValueError(f"fit({desc}): {ckpt_dir} holds a checkpoint at step {position}"
                         f" > steps={steps} (a longer run's); use a fresh directory")
      if extra.get("data_size", n) != n:
        raise ValueError(f"fit({desc}): {ckpt_dir} holds a checkpoint of a fit over"
                         f" {extra['data_size']} items, not {n}; use a fresh directory")
    if ckpt is not None and writer is not None:
      writer.rewind(step_offset + position)   # no rows past the checkpoint
    start = position
    it = batching.EpochIterator(n, items, seed=seed)
    history, acc, last, skipped = [], acc_restored, {}, 0
    log_every = max(1, int(log_every))
    remaining = steps - start
    with progress_lib.ProgressBar(max(remaining, 0), desc, keys=("loss", "grad_norm"),
                                 log_every=max(1, min(log_every, remaining))) as bar:
      while position < steps:
        state, m = update(state, data.batch(it.indices(position)))
        position += 1
        acc.append(m)
        bar.update(position - start, m)
        # Log before the checkpoint (and flush with it): a row is on disk
        # before the state after it, and replayed steps are rewound.
        if position % log_every == 0 or position == steps:
          host = jax.device_get(acc)
          history.extend(host)
          last = {k: float(np.mean([h[k] for h in host])) for k in host[-1]}
          skipped += int(sum(h.get("skipped_nonfinite", 0.0) for h in host))
          acc = []
          if writer is not None:
            writer.write_scalars(step_offset + position,
                                 {f"{desc}/{k}": v for k, v in last.items()})
        if ckpt is not None and position < steps and ckpt.should_save(position):
          if writer is not None:
            writer.flush()
          pending = [{k: float(v) for k, v in h.items()} for h in jax.device_get(acc)]
          ckpt.save(position, state, extra={"data_position": position, "data_size": n,
                                            "log_acc": pending})
        if callback is not None:
          callback(position, m)
    if writer is not None:
      # The last rows are durable before the caller persists the result
      # (a rounds pool entry): a kill after that would never replay them.
      writer.flush()
  finally:
    if ckpt is not None:
      ckpt.close()
  return FitResult(params=state.params, state=state, metrics=last, history=history,
                   position=position, start_position=start, skipped_nonfinite=skipped)


def fit_sft(*, model: Any, params: Any, tokenizer: Any,
            examples: Sequence[Mapping[str, str]], max_len: int,
            drop_too_long: bool = False, desc: str = "sft", **settings) -> FitResult:
  """The one SFT path: :func:`fit` of :func:`sft` on :func:`sft_examples` rows.

  The RL warm starts and teachers, the rounds M-step and the benches call it;
  ``settings`` are :func:`fit`'s (optimizer, steps, batch_size, seed, …).
  """
  data = sft_examples(tokenizer, examples, max_len=max_len,
                      drop_too_long=drop_too_long, desc=desc)
  return fit(model=model, params=params, objective=sft(), data=data, desc=desc,
             **settings)


def tail_mean(history: Sequence[Mapping[str, Any]], count: int) -> dict:
  """Mean of every metric over the last ``count`` entries of a fit history."""
  tail = list(history[-max(1, int(count)):])
  if not tail:
    return {}
  return {k: float(np.mean([t[k] for t in tail])) for k in tail[-1]}
