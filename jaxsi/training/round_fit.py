"""The M-step of a round: ``fit`` on selected examples (SFT) or pairs (DPO family).

Both are ``jaxsi.training.fit.fit`` with the run's optimiser settings
(``RoundsConfig``): AdamW, linear warmup then constant, clipping, restarted
every M-step; resumable through ``ckpt_dir`` (the batch order is a function
of ``seed``, so a resumed fit replays the same batches).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from jaxsi.training import fit as fit_lib
from jaxsi.training import metrics as metrics_lib


def optimizer_spec(config: Any) -> fit_lib.OptimizerSpec:
  """The M-step optimizer of a ``RoundsConfig``: AdamW, warmup then constant.

  The schedule length is the M-step's (``max(steps, warmup_steps + 1)``).
  """
  return fit_lib.OptimizerSpec(
      learning_rate=config.learning_rate, schedule="constant",
      warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
      max_grad_norm=config.max_grad_norm)


def _step_callback(callback, desc):
  if callback is None:
    return None

  def step_callback(position, metrics):
    del metrics
    callback("train_step", tag=desc, position=position)

  return step_callback


def fit_sft(*, model: Any, params: Any, tokenizer: Any, examples: Sequence[dict],
            steps: int, config: Any, ckpt_dir: Optional[str], seed: int,
            writer: Optional[metrics_lib.MetricWriter] = None, desc: str = "sft",
            step_offset: int = 0, callback: Optional[Callable[..., None]] = None
            ) -> tuple[Any, dict]:
  """Resumable SFT of ``params`` on ``examples`` for ``steps`` updates.

  Examples longer than ``config.max_len`` (self-generated completions of a
  model that does not stop) are dropped and counted; a dataset smaller than
  ``config.batch_size`` is tiled. ``callback('train_step', tag=desc,
  position=p)`` runs after every step.

  Returns:
    ``(params, last_metrics)``.
  """
  res = fit_lib.fit_sft(model=model, params=params, tokenizer=tokenizer, examples=examples,
                        max_len=config.max_len, drop_too_long=True, desc=desc,
                        optimizer=optimizer_spec(config), steps=steps,
                        batch_size=config.batch_size, seed=seed, ckpt_dir=ckpt_dir,
                        save_every=config.save_every, writer=writer,
                        step_offset=step_offset, callback=_step_callback(callback, desc),
                        log_every=max(1, min(50, steps)))
  return res.params, res.metrics


PAIR_WEIGHT_KEY = "weight"
# A pair's optional {name: prompt}: its completions are also scored by the
# reference after each prompt (fit_data.preference_data(contexts=...)), e.g.
# T-REG's contrastive prompts (jaxsi.methods.treg).
CONTEXTS_KEY = "contexts"


@dataclasses.dataclass(frozen=True, eq=False)
class WeightedPairs:
  """Preference pairs with a weight per pair, for :func:`fit_lib.fit`.

  Wraps a ``FitData('pairs')``; a batch is ``data.batch(index)`` with the
  sample weight of pair p on both its rows (the pairwise terms read the chosen
  row's: ``jaxsi.transforms.preference``).
  """

  data: fit_lib.FitData
  weights: np.ndarray

  def __post_init__(self):
    if self.data.kind != "pairs":
      raise ValueError(f"WeightedPairs: data.kind must be 'pairs', got {self.data.kind!r}")
    if np.shape(self.weights) != (len(self.data),):
      raise ValueError(f"WeightedPairs: {np.shape(self.weights)} weights for"
                       f" {len(self.data)} pairs")

  kind = "pairs"
  rows_per_item = 2

  def __len__(self) -> int:
    return len(self.data)

  @property
  def length(self) -> int:
    return self.data.length

  def take(self, index: np.ndarray) -> "WeightedPairs":
    return WeightedPairs(self.data.take(index), self.weights[index])

  def batch(self, index: np.ndarray):
    w = np.asarray(self.weights[index], np.float32)
    traj = self.data.batch(index)
    return traj.replace(weights=jnp.asarray(np.concatenate([w, w])))


def pair_weights(pairs: Sequence[dict], desc: str = "pairs") -> Optional[np.ndarray]:
  """f32[N] of the pairs' ``'weight'`` entries (default 1); None if all are 1.

  Raises:
    ValueError: a weight that is not a finite number ≥ 0 (names the pair).
  """
  w = []
  for i, p in enumerate(pairs):
    x = p.get(PAIR_WEIGHT_KEY, 1.0)
    try:
      x = float(x)
    except (TypeError, ValueError):
      x = float("nan")
    if not math.isfinite(x) or x < 0:
      raise ValueError(f"fit_pairs({desc}): pair {i} (task {p.get('task_id')!r}) has"
                       f" weight {p.get(PAIR_WEIGHT_KEY)!r}; a pair weight must be a"
                       " finite number >= 0")
    w.append(x)
  w = np.asarray(w, np.float32)
  return None if np.all(w == 1.0) else w


def pair_contexts(pairs: Sequence[dict], desc: str = "pairs") -> Optional[dict]:
  """``{name: [prompt per pair]}`` of the pairs' optional ``'contexts'`` dicts.

  Raises:
    ValueError: some pairs carry contexts and others do not, or other names.
  """
  names = [tuple(sorted(p.get(CONTEXTS_KEY) or ())) for p in pairs]
  if not any(names):
    return None
  if len(set(names)) != 1:
    bad = next(i for i, n in enumerate(names) if n != names[0])
    raise ValueError(f"fit_pairs({desc}): pair {bad} has contexts {list(names[bad])},"
                     f" pair 0 has {list(names[0])}; every pair needs the same ones")
  return {k: [p[CONTEXTS_KEY][k] for p in pairs] for k in names[0]}


def fit_pairs(*, model: Any, params: Any, reference: Any, tokenizer: Any,
              pairs: Sequence[dict], steps: int, config: Any, seed: int,
              objective: str = "dpo", pairs_per_batch: Optional[int] = None,
              ckpt_dir: Optional[str] = None,
              writer: Optional[metrics_lib.MetricWriter] = None, desc: str = "pairs",
              step_offset: int = 0, callback: Optional[Callable[..., None]] = None,
              **settings) -> tuple[Any, dict]:
  """A pairwise M-step: ``fit.preference(objective, **settings)`` on ``pairs``.

  E.g. DPO (Rafailov et al. 2023, Eq. 7) with the frozen ``reference``
  parameters (the previous iterate in iterative DPO / Self-Rewarding LMs,
  Yuan et al. 2024 §2.3; the SFT base in V-STaR, Hosseini et al. 2024 Eq. 2):
  L = −log σ(β·((log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻)))).
  ``reference=None`` for reference-free terms (ORPO, CPO).

  A pair's optional ``'contexts'`` ``{name: prompt}`` are scored by the
  reference too (:func:`pair_contexts`, ``traj.extras[name + '_logprobs']``).
  A pair's optional ``'weight'`` (e.g. ScPO's vote margin, written by a
  pair-building select transform) is its sample weight: every pairwise term
  scales that pair's loss by it (the ``sft``/NLL parts too).

  Args:
    pairs: ``{'prompt', 'chosen', 'rejected'[, 'weight']}`` dicts.
    pairs_per_batch: pairs per update (default ``config.batch_size // 2``);
      fewer pairs are tiled.

  Returns:
    (params, metrics averaged over the last fifth of the steps).

  Raises:
    ValueError: no pairs.
  """
  if not pairs:
    raise ValueError(f"fit_pairs({desc}): no preference pairs")
  per = int(pairs_per_batch or max(1, config.batch_size // 2))
  data = fit_lib.preference_data(
      tokenizer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs],
      [p["rejected"] for p in pairs], max_len=config.max_len,
      reference=None if reference is None else (model, reference),
      reference_batch=2 * per, contexts=pair_contexts(pairs, desc))
  weights = pair_weights(pairs, desc)
  if weights is not None:
    data = WeightedPairs(data, weights)
  tail = max(1, steps // 5)
  res = fit_lib.fit(model=model, params=params,
                    objective=fit_lib.preference(objective, **settings), data=data,
                    optimizer=optimizer_spec(config), steps=steps, batch_size=2 * per,
                    seed=seed, ckpt_dir=ckpt_dir, save_every=config.save_every,
                    writer=writer, desc=desc, step_offset=step_offset,
                    callback=_step_callback(callback, desc), log_every=tail)
  return res.params, fit_lib.tail_mean(res.history, tail)


def round_steps(method: Any, config: Any, r: int) -> int:
  """M-step steps of round ``r`` (``steps_per_round · steps_growth^(r-1)``)."""
  return int(round(config.steps_per_round * method.steps_growth ** (r - 1)))
