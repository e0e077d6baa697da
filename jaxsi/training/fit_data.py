r"""Data for one supervised fit (``jaxsi.training.fit``): fixed-shape host rows.

:class:`FitData` holds numpy rows of one kind; the constructors build them:

* :func:`sft_data` / :func:`sft_examples` / :meth:`FitData.sft`: supervised
  rows (``batching.sft_arrays`` layout: BOS + prompt + completion + EOS, loss
  on the completion);
* :func:`preference_data`: (chosen, rejected) pairs laid out as
  ``preference.halves_pairing`` halves, with reference log-probs
  (:func:`reference_logprobs`) and optional per-pair margins;
* :func:`score_data`: sequences with a scalar target (pointwise reward models).

``fit`` re-exports every name here, so ``fit.sft_data`` etc. keep working.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.data import batching
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.trajectory import Trajectory, positions_from_mask
from jaxsi.transforms import preference as preference_lib
from jaxsi.transforms import value as value_lib

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
# 'pairs' arrays '<side>/context_logprobs/<name>' f32[N, T]: the completion's
# token log-probs after another prompt (``preference_data(contexts=...)``),
# aligned to the row; a batch carries them as traj.extras['<name>_logprobs'].
CONTEXT_PREFIX = "context_logprobs/"


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
  extras = {preference_lib.IS_CHOSEN_KEY: jnp.asarray(is_chosen)}
  for k in chosen:
    if k.startswith(CONTEXT_PREFIX):
      extras[k[len(CONTEXT_PREFIX):] + "_logprobs"] = jnp.asarray(cat(k), jnp.float32)
  return Trajectory.create(cat("tokens"), input_mask=cat("input_mask"),
                           loss_mask=cat("loss_mask"), pair_ids=pair_ids,
                           extras=extras, **optional)


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


def context_logprobs(tokenizer: Any, model: Any, params: Any,
                     rows: Mapping[str, np.ndarray], context_prompts: Sequence[str],
                     completions: Sequence[str], *, max_len: int,
                     batch: int = 64) -> np.ndarray:
  """f32[N, T]: each completion's token log-probs after another prompt, aligned to ``rows``.

  Re-scoring under another context (``transforms.rescoring``' contract) for
  ``sft_arrays`` rows: row i's completion (+ EOS) is laid out after
  ``context_prompts[i]`` (its own padded length, at least ``max_len``),
  scored with :func:`reference_logprobs` under ``params`` and written back
  at the loss positions of ``rows`` (the k-th completion token to the k-th);
  0 elsewhere.

  Raises:
    ValueError: the counts differ, or a row's completion tokens differ
      between the layouts.
  """
  if not len(context_prompts) == len(completions) == rows["tokens"].shape[0]:
    raise ValueError(f"context_logprobs: {len(context_prompts)} context prompts,"
                     f" {len(completions)} completions, {rows['tokens'].shape[0]} rows")
  need = max([sequence_length(tokenizer, p, c)
              for p, c in zip(context_prompts, completions)] + [max_len])
  length = -(-need // 8) * 8        # a few shapes only: the forward compiles once each
  other = batching.sft_arrays(tokenizer, list(context_prompts), list(completions),
                              max_len=length)
  lp = reference_logprobs(model, params, other, batch=batch)
  out = np.zeros(rows["tokens"].shape, np.float32)
  for i in range(out.shape[0]):
    src = np.flatnonzero(other["loss_mask"][i])
    dst = np.flatnonzero(rows["loss_mask"][i])
    if len(src) != len(dst) or np.any(other["tokens"][i, src] != rows["tokens"][i, dst]):
      raise ValueError(f"context_logprobs: row {i}'s completion tokens differ after the"
                       " context prompt (a tokenizer that merges across the boundary?)")
    out[i, dst] = lp[i, src]
  return out


def preference_data(tokenizer: Any, prompts: Sequence[str], chosen: Sequence[str],
                    rejected: Sequence[str], *, max_len: int,
                    reference: Optional[tuple[Any, Any]] = None,
                    reference_batch: int = 64,
                    margins: Optional[Sequence[float]] = None,
                    contexts: Optional[Mapping[str, Sequence[str]]] = None) -> FitData:
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
    contexts: ``{name: one prompt per pair}``: both completions of pair i are
      also scored by the reference after ``contexts[name][i]``
      (:func:`context_logprobs`; a batch carries them as
      ``traj.extras[name + '_logprobs']``), e.g. T-REG's contrastive
      "better"/"worse" prompts (``token_reward_regularization``). Needs
      ``reference``.

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
  if contexts:
    if reference is None:
      raise ValueError("preference_data: contexts are scored by the reference model;"
                       " give reference=(model, params)")
    for name, ctx_prompts in contexts.items():
      if len(ctx_prompts) != len(prompts):
        raise ValueError(f"preference_data: contexts[{name!r}] has {len(ctx_prompts)}"
                         f" prompts for {len(prompts)} pairs")
      for side, texts in (("chosen", chosen), ("rejected", rejected)):
        sides[side][CONTEXT_PREFIX + name] = context_logprobs(
            tokenizer, model, params, sides[side], ctx_prompts, texts, max_len=max_len,
            batch=reference_batch)
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
