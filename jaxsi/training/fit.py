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
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import progress as progress_lib
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training import steps as steps_lib
from jaxsi.training import train_state as train_state_lib
from jaxsi.transforms import preference as preference_lib
from jaxsi.transforms import token_reward_regularization as treg_lib
from jaxsi.transforms import value as value_lib
from jaxsi.transforms.base import ObjectiveTerm
# The data half lives in fit_data; its names are part of this module's API.
from jaxsi.training.fit_data import (  # pylint: disable=unused-import
    EXTRAS_PREFIX, ITEM_KEYS, KINDS, MARGIN_KEY, REF_KEY, REWARD_MODEL_KINDS,
    ROW_KEYS, SCORE_KEY, FitData, pair_batch, preference_data,
    reference_logprobs, score_data, sequence_length, sft_data, sft_examples,
    tile_to)

# Terms of jaxsi.transforms.preference that read chosen/rejected pairs
# (DPO's loss_type covers IPO, hinge, robust, APO, …; cpo covers SimPO/AlphaPO).
PAIRWISE_TERMS = ("dpo", "orpo", "cpo", "treg")
# T-REG (arXiv:2412.02685) reads the pairs' contrastive log-probs
# (``preference_data(contexts=...)``); its term lives in its own module.
_PAIRWISE_FACTORIES = {"treg": treg_lib.treg}


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
  """A pairwise term of ``jaxsi.transforms.preference`` (``dpo``, ``orpo``, ``cpo``)
  or ``treg`` (``jaxsi.transforms.token_reward_regularization``).

  E.g. ``preference('dpo', beta=0.1)`` is Rafailov et al. 2023, Eq. 7:
  L = −log σ(β·((logπ(y⁺) − logπ_ref(y⁺)) − (logπ(y⁻) − logπ_ref(y⁻)))).
  ``settings`` are the factory's keyword arguments (hashable values).
  """
  if name not in PAIRWISE_TERMS:
    raise ValueError(f"preference: {name!r} is not a pairwise term of"
                     f" jaxsi.transforms.preference; expected one of {PAIRWISE_TERMS}")
  factory = _PAIRWISE_FACTORIES.get(name) or getattr(preference_lib, name)
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
        logits_reducer=getattr(objective.term, "logits_reducer", None),
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
