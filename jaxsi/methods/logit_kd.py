r"""Offline logit KD: the teacher's top-k log-probs stored once, then a supervised fit.

Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"
(arXiv:1503.02531), token-level for sequence models as in Kim & Rush 2016
("Sequence-Level Knowledge Distillation", arXiv:1606.07947, Eq. word-level
KD): the student minimises, over the supervised (prompt, completion) tokens,

  L = Σ_t KL(p_T(· | y_<t) ‖ p_θ(· | y_<t))  (+ α · NLL(y_t), optional)

with the teacher's distribution kept as its top-k ids and log-probs plus the
exact log-mass of the other ids (``distillation.topk_jsd`` with β = 0: the
forward KL over K + 1 buckets; k = V is the full-vocabulary KL). β ∈ (0, 1]
gives the generalised JSD of GKD (arXiv:2306.13649) on the same fixed data —
GKD's λ = 0, ``seq_kd=False`` case.

Two steps, so the teacher runs once, not every epoch:

1. :func:`teacher_topk_arrays` scores the rows with the teacher (row chunks
   of ``batch_size``; one chunk's [b, T, V] logits alive) and
   :func:`write_topk_file` stores ``tokens``/``input_mask``/``loss_mask`` and
   the top-k arrays in one ``.npz`` with the teacher's ``vocab_size``;
2. :func:`read_topk_file` returns the arrays for the one supervised fit
   (``jaxsi.training.fit``: ``FitData('sft', arrays)`` carries the
   ``extras/…`` arrays into ``traj.extras``) with :func:`kd_objective`'s term;
   a file written with another vocabulary is refused.

The stored log-probs are at temperature 1 (the fit's forward pass is at
τ = 1); other temperatures are refused.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import distillation, sft
from jaxsi.transforms import teacher_logits
from jaxsi.transforms.base import objective

ROW_KEYS = ("tokens", "input_mask", "loss_mask")
EXTRAS_PREFIX = "extras/"        # = jaxsi.training.fit.EXTRAS_PREFIX
IDS = EXTRAS_PREFIX + distillation.TOPK_IDS_KEY
LOGPROBS = EXTRAS_PREFIX + distillation.TOPK_LOGPROBS_KEY
TAIL = EXTRAS_PREFIX + distillation.TOPK_TAIL_KEY
FORMAT = "jaxsi.logit_kd.v1"


@functools.lru_cache(maxsize=None)
def _topk_fn(model, k: int):
  score = logprobs_lib.score_fn(model, with_logits=True)

  def fn(params, tokens, input_mask):
    traj = Trajectory.create(tokens, input_mask=input_mask, loss_mask=input_mask)
    return teacher_logits.topk_of_logits(score(params, traj).logits, k)

  return jax.jit(fn)


def teacher_topk_arrays(model, params, arrays: Mapping[str, np.ndarray], *,
                        k: int, batch_size: int = 8) -> dict:
  """The teacher's top-k of every row (``batching.sft_arrays`` layout).

  Args:
    model: the teacher's static Model.
    params: its params.
    arrays: ``tokens``/``input_mask``/``loss_mask`` [N, T].
    k: ids kept per position (1 <= k <= V).
    batch_size: rows per teacher pass (the last chunk is padded).

  Returns:
    ``arrays`` plus ``extras/teacher_topk_ids`` int32[N, T, K],
    ``…_logprobs`` f32[N, T, K], ``…_tail_logprob`` f32[N, T] (aligned like
    log-probs: entry t is the distribution that predicts token t; zeros /
    floor where undefined).
  """
  v = int(model.config.vocab_size)
  if int(k) != k or not 1 <= k <= v:
    raise ValueError(f"teacher_topk_arrays: k must be an integer in [1, V={v}], got {k!r}")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"teacher_topk_arrays: batch_size must be >= 1, got {batch_size!r}")
  tokens = np.asarray(arrays["tokens"], np.int32)
  mask = np.asarray(arrays["input_mask"], bool)
  n, t = tokens.shape
  fn = _topk_fn(model, int(k))
  ids = np.zeros((n, t, k), np.int32)
  lps = np.full((n, t, k), teacher_logits.LOGPROB_FLOOR, np.float32)
  tail = np.full((n, t), teacher_logits.LOGPROB_FLOOR, np.float32)
  for start in range(0, n, batch_size):
    rows = slice(start, min(n, start + batch_size))
    tok, m = tokens[rows], mask[rows]
    pad = batch_size - tok.shape[0]
    if pad:
      tok = np.concatenate([tok, np.zeros((pad, t), np.int32)])
      m = np.concatenate([m, np.zeros((pad, t), bool)])
      m[-pad:, 0] = True   # a dummy real token per padded row
    i, l, r = (np.asarray(x) for x in fn(params, tok, m))
    size = rows.stop - rows.start
    valid = logprobs_lib.prediction_mask(jnp.asarray(m))[:size]
    valid = np.asarray(valid)
    ids[rows] = np.where(valid[..., None], i[:size], 0)
    lps[rows] = np.where(valid[..., None], l[:size], teacher_logits.LOGPROB_FLOOR)
    tail[rows] = np.where(valid, r[:size], teacher_logits.LOGPROB_FLOOR)
  out = {key: np.asarray(arrays[key]) for key in ROW_KEYS}
  out.update({IDS: ids, LOGPROBS: lps, TAIL: tail})
  return out


def write_topk_file(path: str, arrays: Mapping[str, np.ndarray], *,
                    vocab_size: int) -> None:
  """Stores :func:`teacher_topk_arrays` output with the teacher's vocab size."""
  missing = [key for key in (*ROW_KEYS, IDS, LOGPROBS, TAIL) if key not in arrays]
  if missing:
    raise ValueError(f"write_topk_file: missing arrays {missing}")
  payload = {key.replace("/", "__"): np.asarray(v) for key, v in arrays.items()}
  with open(path, "wb") as f:
    np.savez(f, __format__=np.asarray(FORMAT),
             __vocab_size__=np.asarray(int(vocab_size)), **payload)


def read_topk_file(path: str, *, vocab_size: Optional[int] = None) -> dict:
  """The arrays of a :func:`write_topk_file` file (``FitData('sft', ·)`` input).

  Raises:
    spec.ConfigurationError: the file was written with another vocabulary than
      ``vocab_size`` (the student's), or is not a logit-KD file.
  """
  with np.load(path, allow_pickle=False) as z:
    if "__format__" not in z or str(z["__format__"]) != FORMAT:
      raise spec_lib.ConfigurationError(
          f"read_topk_file: {path} is not a {FORMAT} file")
    v = int(z["__vocab_size__"])
    if vocab_size is not None and v != int(vocab_size):
      raise spec_lib.ConfigurationError(
          f"read_topk_file: {path} holds a teacher with vocab_size={v}, the"
          f" student has vocab_size={vocab_size}; the teacher must share the"
          " student's tokenizer and vocabulary")
    return {key.replace("__", "/"): np.asarray(z[key]) for key in z.files
            if not key.startswith("__")}


def kd_objective(*, beta: float = 0.0, tail: bool = True, nll_coef: float = 0.0,
                 agg: str = "token-mean"):
  """The offline KD term: JSD_β to the stored top-k (β = 0: forward KL, the
  classic logit KD) + ``nll_coef`` · NLL of the data tokens.

  Returns:
    ``(key, term)``: wrap as ``jaxsi.training.fit.Objective(key, term)``. The
    term has ``needs_logits`` (the fit's update computes ``outputs.logits``).
  """
  if nll_coef < 0:
    raise ValueError(f"kd_objective: nll_coef must be >= 0, got {nll_coef!r}")
  terms = [(1.0, distillation.topk_jsd(beta=beta, tail=tail, agg=agg), "kd")]
  if nll_coef:
    terms.append((float(nll_coef), sft.nll(agg=agg), "nll"))
  term = objective(*terms)
  term.needs_logits = True
  return ("logit_kd", float(beta), bool(tail), float(nll_coef), agg), term


__all__ = ["teacher_topk_arrays", "write_topk_file", "read_topk_file",
           "kd_objective", "IDS", "LOGPROBS", "TAIL"]
