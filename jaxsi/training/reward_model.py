r"""Learned outcome reward models: train on verified samples, then score.

An outcome reward model (ORM) is a decoder with a value head whose output at
the last completion token (``value.sequence_scores``) scores a whole
(prompt, completion). Two kinds, both trained by the one ``fit.fit``
(``fit.reward_model``):

* ``'pointwise'`` — regression on the verifier's grade, correct → 1, wrong
  → 0 (``value.score_regression``; the outcome-supervised reward model of
  Cobbe et al. 2021, arXiv:2110.14168 §4, with a squared instead of a
  cross-entropy loss);
* ``'bradley_terry'`` — pairs (correct ≻ wrong) of the same prompt
  (``value.bradley_terry``: Ouyang et al. 2022, arXiv:2203.02155, Eq. 1;
  the pair builder is V-STaR's, ``self_training_common.build_pairs``).

The reward model starts from a generator's parameters (:func:`init_from`:
the same backbone, a fresh value head) and scores any batch in one jitted
forward pass per chunk of rows (:func:`score`, :func:`score_texts`). It is
used three ways:

* a **reward stage** (:class:`RewardModelScorer`, a ``stages.Scorer``) that
  reads the ``'reward_model'`` role's model and parameters through the
  stage context, so a Method can train on RM scores;
* a **filter**: :func:`keep_mask` / :func:`filter_records` on the host (the
  rounds' select step), :func:`filter_transform` on a batch's RM column
  (``filters.threshold_filter`` / ``filters.top_k_per_group``);
* a **best-of-N selector**: :func:`fill_scores` writes
  ``Candidates.scores['reward_model']`` and :func:`selectors_with_rm` adds
  ``test_time.best_of_n('reward_model')`` to the default selectors.

:func:`save` / :func:`load` keep a trained RM as a params checkpoint
(``run_workdir.params_source`` reads ``<dir>/params`` like a warm start)
next to ``reward_model.json`` (its model config and kind).

The module lives in ``jaxsi.training`` (not ``jaxsi.rewards``, layer 1 of
``tests/test_layering.py``) because it trains through ``fit`` and reads
models, transforms and the test-time candidates; ``jaxsi.sampling.confidence``
is the same kind of device reward stage one layer lower.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.data import batching
from jaxsi.models import config as config_lib
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.methods import self_training_common as common
from jaxsi.models import model as model_lib
from jaxsi.rewards import stages
from jaxsi.sampling import test_time
from jaxsi.trajectory import positions_from_mask
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import run_workdir
from jaxsi.transforms import filters
from jaxsi.transforms import value as value_lib
from jaxsi.transforms.base import stateless

KINDS = fit_lib.REWARD_MODEL_KINDS
ROLE = "reward_model"
NAME = "reward_model"
META_FILE = "reward_model.json"
PARAMS_SUBDIR = "params"
DEFAULT_CHUNK = 256


# ------------------------------------------------------------------ model
def init_from(model: Any, params: Any, rng: jax.Array) -> tuple[Any, Any]:
  """A reward model initialised from a generator: its backbone, a fresh head.

  Args:
    model: the generator's static Model.
    params: its parameters (copied; a value head already there is kept).
    rng: key of the fresh value head.

  Returns:
    ``(reward model, params)``; the model is ``model.config`` with
    ``value_head=True``.
  """
  cfg = dataclasses.replace(model.config, value_head=True)
  rm_model = model_lib.build(cfg)
  out = dict(jax.tree.map(jnp.copy, dict(params)))
  if "value_head" not in out:
    out["value_head"] = rm_model.init_params(rng)["value_head"]
  return rm_model, out


# ------------------------------------------------------------------- data
def records_from_candidates(candidates: Any) -> list[dict]:
  """``{'prompt', 'completion', 'correct', 'task_id', 'sample'}`` per sample
  of ``test_time.Candidates`` (the verifier's grade ≥ 1 is correct)."""
  out = []
  for p, task in enumerate(candidates.tasks):
    for i, text in enumerate(candidates.texts[p]):
      out.append(dict(prompt=task.prompt, completion=text,
                      correct=bool(candidates.correct[p, i] >= 1.0),
                      task_id=str(getattr(task, "id", p)), sample=i))
  return out


def max_length(tokenizer: Any, records: Sequence[Mapping[str, str]]) -> int:
  """The padded length that fits every record (BOS + prompt + completion + EOS)."""
  return max((fit_lib.sequence_length(tokenizer, r["prompt"], r["completion"])
              for r in records), default=2)


def training_data(kind: str, tokenizer: Any, records: Sequence[Mapping[str, Any]], *,
                  max_len: int, max_pairs_per_problem: int = 4,
                  all_pairs: bool = False) -> fit_lib.FitData:
  """RM training rows from verifier-labelled samples.

  Args:
    kind: ``'pointwise'`` (every sample, target 1.0 if correct else 0.0) or
      ``'bradley_terry'`` (correct ≻ wrong pairs of the same ``task_id``:
      ``self_training_common.build_pairs``; prompts with only correct or
      only wrong samples give no pair).
    tokenizer: the tokenizer.
    records: ``{'prompt', 'completion', 'correct', 'task_id'}`` dicts.
    max_len: padded row length.
    max_pairs_per_problem, all_pairs: the pair builder's settings.

  Raises:
    ValueError: an unknown kind, no records, or (BT) no prompt with both a
      correct and a wrong sample.
  """
  if kind not in KINDS:
    raise ValueError(f"reward_model.training_data: kind must be one of {KINDS},"
                     f" got {kind!r}")
  if not records:
    raise ValueError("reward_model.training_data: no records")
  if kind == "pointwise":
    return fit_lib.score_data(tokenizer, [r["prompt"] for r in records],
                              [r["completion"] for r in records],
                              [1.0 if r["correct"] else 0.0 for r in records],
                              max_len=max_len)
  pairs = common.build_pairs(records, max_pairs_per_problem=max_pairs_per_problem,
                             all_pairs=all_pairs)
  if not pairs:
    raise ValueError("reward_model.training_data('bradley_terry'): no prompt has"
                     " both a correct and a wrong sample, so there is no pair")
  return fit_lib.preference_data(tokenizer, [q["prompt"] for q in pairs],
                                 [q["chosen"] for q in pairs],
                                 [q["rejected"] for q in pairs], max_len=max_len)


def train(*, model: Any, params: Any, kind: str, data: fit_lib.FitData, steps: int,
          learning_rate: float, batch_size: int, seed: int,
          desc: str = "reward_model", **settings) -> fit_lib.FitResult:
  """``fit.fit`` of ``fit.reward_model(kind, **settings)`` (cosine schedule,
  warmup ``min(20, steps // 4)``); ``data`` must be :func:`training_data` of
  the same kind.

  Raises:
    ValueError: ``data`` of the other kind.
  """
  want = "scores" if kind == "pointwise" else "pairs"
  if kind in KINDS and data.kind != want:
    raise ValueError(f"reward_model.train: kind={kind!r} trains on {want!r} data,"
                     f" got {data.kind!r} (build it with training_data({kind!r}, …))")
  objective = fit_lib.reward_model(kind, **settings)
  opt = fit_lib.OptimizerSpec(learning_rate=learning_rate, schedule="cosine",
                              warmup_steps=min(20, steps // 4),
                              total_steps=max(steps, 1))
  return fit_lib.fit(model=model, params=params, objective=objective, data=data,
                     optimizer=opt, steps=steps, batch_size=batch_size, seed=seed,
                     desc=desc, log_every=max(1, steps // 4))


# ---------------------------------------------------------------- scoring
@functools.lru_cache(maxsize=None)
def _score_jit(model: Any):

  def fn(params, tokens, positions, input_mask, loss_mask):
    hidden, _ = model.apply(params, tokens, positions, input_mask=input_mask,
                            return_hidden=True)
    values = logprobs_lib.values_from_hidden(model, params, hidden, input_mask)
    v, has_loss = value_lib.sequence_scores(values, _Rows(tokens, loss_mask))
    return jnp.where(has_loss, v, jnp.nan)

  return jax.jit(fn)


@dataclasses.dataclass(frozen=True)
class _Rows:
  """The two fields ``value.sequence_scores`` reads."""

  tokens: Any
  loss_mask: Any


def score(model: Any, params: Any, traj: Any, *, chunk: int = DEFAULT_CHUNK
          ) -> np.ndarray:
  """f32[B] reward-model score of every row of ``traj`` (host or device).

  One jitted forward pass per chunk of ``chunk`` rows (fewer rows than a
  chunk are padded to the next power of two, so a handful of shapes
  compile); the score is ``value.sequence_scores`` — the read the training
  terms use. Rows without a loss token score NaN.

  Args:
    model: the reward model (``config.value_head``).
    params: its parameters.
    traj: ``tokens``, ``input_mask``, ``loss_mask`` and ``positions`` (or
      None: counted over ``input_mask``).
    chunk: rows per forward pass.

  Raises:
    ValueError: a model without a value head, or chunk < 1.
  """
  if not model.config.value_head:
    raise ValueError("reward_model.score: the model has no value head (build it"
                     " with init_from or ModelConfig.value_head=True)")
  if chunk < 1:
    raise ValueError(f"reward_model.score: chunk must be >= 1, got {chunk}")
  tokens = np.asarray(traj.tokens)
  b = tokens.shape[0]
  if b == 0:
    return np.zeros((0,), np.float32)
  input_mask = np.asarray(traj.input_mask, bool)
  positions = getattr(traj, "positions", None)
  positions = (np.asarray(positions_from_mask(input_mask)) if positions is None
               else np.asarray(positions))
  loss_mask = np.asarray(traj.loss_mask, bool)
  size = min(int(chunk), 1 << max(0, int(b - 1).bit_length()))
  fn = _score_jit(model)
  out = []
  for s in range(0, b, size):
    idx = np.arange(s, s + size) % b       # the last chunk wraps around
    out.append(np.asarray(fn(params, tokens[idx], positions[idx], input_mask[idx],
                             loss_mask[idx])))
  return np.concatenate(out)[:b].astype(np.float32)


def score_texts(model: Any, params: Any, tokenizer: Any, prompts: Sequence[str],
                completions: Sequence[str], *, max_len: Optional[int] = None,
                chunk: int = DEFAULT_CHUNK) -> np.ndarray:
  """f32[N] scores of (prompt, completion) texts laid out as training rows
  (``batching.sft_arrays``: BOS + prompt + completion + EOS)."""
  if len(prompts) != len(completions):
    raise ValueError(f"reward_model.score_texts: {len(prompts)} prompts,"
                     f" {len(completions)} completions")
  if not prompts:
    return np.zeros((0,), np.float32)
  if max_len is None:
    max_len = max(fit_lib.sequence_length(tokenizer, p, c)
                  for p, c in zip(prompts, completions))
  arrays = batching.sft_arrays(tokenizer, list(prompts), list(completions),
                               max_len=max_len)
  return score(model, params, _Rows3(arrays["tokens"], arrays["input_mask"],
                                     arrays["loss_mask"]), chunk=chunk)


@dataclasses.dataclass(frozen=True)
class _Rows3:
  tokens: Any
  input_mask: Any
  loss_mask: Any
  positions: Any = None


# ------------------------------------------------------------ reward stage
@dataclasses.dataclass(frozen=True, eq=False)
class RewardModelScorer(stages.Scorer):
  """A device reward stage: the ``role``'s reward-model score of every graded row.

  Reads ``ctx.role_model_params(role)`` (the loop's roles: pass the trained
  RM as ``roles={'reward_model': params}`` with its own model) and scores the
  graded rows' own tokens (``inputs.traj``) with :func:`score`.

  Attributes:
    role: the reward-model role.
    name: the reward column name.
    chunk: rows per forward pass.
  """

  role: str = ROLE
  name: str = NAME
  chunk: int = DEFAULT_CHUNK

  @property
  def names(self):  # pylint: disable=invalid-overridden-method
    return (self.name,)

  @property
  def roles(self):  # pylint: disable=invalid-overridden-method
    return (self.role,)

  def __call__(self, ctx: Any, inputs: stages.RewardInputs):
    if inputs.traj is None:
      raise ValueError(f"RewardModelScorer {self.name!r}: the graded rows carry no"
                       " trajectory")
    getter = getattr(ctx, "role_model_params", None)
    if not callable(getter):
      raise TypeError(f"RewardModelScorer {self.name!r}: the stage context"
                      f" {type(ctx).__name__} has no role_model_params(role)")
    model, params = getter(self.role)
    s = score(model, params, inputs.traj, chunk=self.chunk)
    return s[:, None], {"reward_model/mean": float(np.nanmean(s)) if len(s) else 0.0}

  def __hash__(self):
    return id(self)


# ----------------------------------------------------------------- filters
def keep_mask(scores: np.ndarray, group_ids: np.ndarray, *,
              threshold: Optional[float] = None, top_k: Optional[int] = None
              ) -> np.ndarray:
  """bool[B]: samples with score ≥ ``threshold`` and among the ``top_k`` of
  their group (ties → lower index; NaN scores are never kept).

  Raises:
    ValueError: neither setting, top_k < 1, or lengths differ.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  group_ids = np.asarray(group_ids).reshape(-1)
  if threshold is None and top_k is None:
    raise ValueError("reward_model.keep_mask: give threshold and/or top_k")
  if top_k is not None and int(top_k) < 1:
    raise ValueError(f"reward_model.keep_mask: top_k must be >= 1, got {top_k}")
  if scores.shape != group_ids.shape:
    raise ValueError(f"reward_model.keep_mask: {scores.shape[0]} scores,"
                     f" {group_ids.shape[0]} group ids")
  keep = np.isfinite(scores)
  if threshold is not None:
    keep &= np.where(keep, scores, -np.inf) >= float(threshold)
  if top_k is not None:
    ranked = np.zeros_like(keep)
    for g in np.unique(group_ids):
      rows = np.flatnonzero((group_ids == g) & keep)
      order = rows[np.argsort(-scores[rows], kind="stable")]
      ranked[order[:int(top_k)]] = True
    keep &= ranked
  return keep


def filter_records(records: Sequence[Mapping[str, Any]], scores: np.ndarray, *,
                   threshold: Optional[float] = None, top_k: Optional[int] = None
                   ) -> list:
  """The records kept by :func:`keep_mask` (groups = ``task_id``), in order —
  a rounds ``select`` step that trusts the RM instead of the verifier."""
  if len(records) != len(scores):
    raise ValueError(f"reward_model.filter_records: {len(records)} records,"
                     f" {len(scores)} scores")
  ids = {}
  groups = np.asarray([ids.setdefault(r["task_id"], len(ids)) for r in records])
  keep = keep_mask(scores, groups, threshold=threshold, top_k=top_k)
  return [r for r, k in zip(records, keep) if k]


def filter_transform(names: Sequence[str], *, column: str = NAME,
                     threshold: Optional[float] = None, top_k: Optional[int] = None):
  """A batch filter on the RM reward column alone (device, jit-able).

  ``filters.threshold_filter`` (score ≥ threshold) and/or
  ``filters.top_k_per_group`` over ``traj.rewards[:, names.index(column)]``
  (the other columns are not summed in; NaN RM scores are dropped). Metrics:
  ``filter/frac_kept`` of the last filter applied.

  Raises:
    ValueError: ``column`` not in ``names`` or neither setting.
  """
  names = tuple(names)
  if column not in names:
    raise ValueError(f"reward_model.filter_transform: column {column!r} is not a"
                     f" reward column ({names})")
  if threshold is None and top_k is None:
    raise ValueError("reward_model.filter_transform: give threshold and/or top_k")
  i = names.index(column)
  inner = []
  if threshold is not None:
    inner.append(filters.threshold_filter(threshold=float(threshold)))
  if top_k is not None:
    inner.append(filters.top_k_per_group(k=int(top_k)))

  def fn(traj, ctx):
    sub = traj.replace(rewards=jnp.asarray(traj.rewards)[:, i:i + 1])
    metrics = {}
    for t in inner:
      sub, _, metrics = t.update(sub, t.init(), ctx)
    return traj.replace(valid=sub.valid), metrics

  return stateless(fn)


# ---------------------------------------------------------------- selector
def fill_scores(candidates: Any, model: Any, params: Any, tokenizer: Any, *,
                name: str = NAME, chunk: int = DEFAULT_CHUNK,
                max_len: Optional[int] = None) -> Any:
  """Writes ``candidates.scores[name]`` f32[P, N] (the RM's score of every
  candidate, :func:`score_texts`; ``max_len`` default: the longest) and
  returns the candidates."""
  p, n = candidates.correct.shape
  prompts = [t.prompt for t in candidates.tasks for _ in range(n)]
  texts = [x for row in candidates.texts for x in row]
  s = score_texts(model, params, tokenizer, prompts, texts, chunk=chunk,
                  max_len=max_len)
  candidates.scores[name] = s.reshape(p, n)
  return candidates


def selectors_with_rm(selectors: Optional[Mapping[str, Any]] = None, *,
                      name: str = NAME) -> dict:
  """``selectors`` (default ``test_time.DEFAULT_SELECTORS``) plus
  ``name: test_time.best_of_n(name)`` — best-of-N by the reward model."""
  out = dict(test_time.DEFAULT_SELECTORS if selectors is None else selectors)
  out[name] = test_time.best_of_n(name)
  return out


# -------------------------------------------------------------- checkpoint
def save(directory: str, model: Any, params: Any, *, kind: str,
         meta: Optional[Mapping[str, Any]] = None) -> str:
  """Saves a trained RM: ``<directory>/params`` (an Orbax params checkpoint,
  step 0) and ``<directory>/reward_model.json`` (config, kind, ``meta``).

  Raises:
    ValueError: an unknown kind, or a directory that already holds one.
  """
  if kind not in KINDS:
    raise ValueError(f"reward_model.save: kind must be one of {KINDS}, got {kind!r}")
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(os.path.join(directory, META_FILE)):
    raise ValueError(f"reward_model.save: {directory} already holds a reward model")
  os.makedirs(directory, exist_ok=True)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(directory, PARAMS_SUBDIR), keep=1,
                                     async_save=False)
  try:
    ckpt.save(0, params, force=True)
  finally:
    ckpt.close()
  info = dict(kind=kind, config=dataclasses.asdict(model.config), **dict(meta or {}))
  with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  return directory


def load(directory: str) -> tuple[Any, Any, dict]:
  """``(model, params, info)`` of an RM written by :func:`save`.

  Raises:
    FileNotFoundError: no ``reward_model.json`` there.
    run_workdir.NoCheckpointError / checkpoint.CheckpointError: no params.
  """
  directory = os.path.abspath(os.fspath(directory))
  path = os.path.join(directory, META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"reward_model.load: {path} not found (not a reward"
                            " model saved by reward_model.save)")
  with open(path, encoding="utf-8") as f:
    info = json.load(f)
  cfg = dict(info["config"])
  if cfg.get("rope_scaling") is not None:
    cfg["rope_scaling"] = tuple(cfg["rope_scaling"])
  model = model_lib.build(config_lib.ModelConfig(**cfg))
  source = run_workdir.params_source(os.path.join(directory, PARAMS_SUBDIR))
  params, _ = run_workdir.restore_params(source, model.abstract_params())
  return model, params, info


__all__ = ["KINDS", "NAME", "ROLE", "RewardModelScorer", "fill_scores",
           "filter_records", "filter_transform", "init_from", "keep_mask", "load",
           "max_length", "records_from_candidates", "save", "score", "score_texts",
           "selectors_with_rm", "train", "training_data"]
