r"""Token → scalar loss aggregation (the place where loss types really differ).

Every objective term builds a per-token loss ``ℓ[b, t]`` and reduces it with
:func:`aggregate` under an explicit ``mode``. With ``m`` the (float) mask,
``L_i = Σ_t m[i, t]`` the number of loss tokens of row i, ``N`` the number of
sequences and ``N_tok`` the number of tokens:

=========================== ============================================ =================================
mode                        value                                        reference
=========================== ============================================ =================================
``token-mean``              Σ m ℓ / N_tok                                TRL bnpo (local N_tok), TRL dapo /
                                                                         verl token-mean (global N_tok)
``token-sum``               Σ m ℓ                                        verl token-sum
``seq-mean-token-mean``     Σ_i [Σ_t m ℓ / max(1, L_i)] / N              TRL grpo/sapo, verl
                                                                         seq-mean-token-mean
``seq-mean-token-sum``      Σ_i Σ_t m ℓ / N                              verl seq-mean-token-sum
``seq-mean-token-sum-norm`` Σ m ℓ / (N · L_max)                          TRL dr_grpo, verl (new, ≥ 2026-08)
                                                                         seq-mean-token-sum-norm
``length-weighted``         (1/N) Σ_i L_i · (Σ_t m ℓ / max(1, L_i))      TRL luspo (LUSPO)
=========================== ============================================ =================================

Defaults of the denominators (local, i.e. this micro-batch):
``N_tok = max(1, Σ m)``, ``N = B`` (number of rows, like TRL's ``.mean()`` over
the batch and verl's ``global_batch_size``; terms that read a Trajectory pass
the number of *valid* rows instead, see :func:`aggregate_trajectory`),
``L_max = T`` (the padded length; pass ``max_len=max_completion_length`` to
match TRL dr_grpo exactly).

Micro-batching / data parallelism: pass the **global** ``num_tokens`` (token-mean)
or ``num_sequences`` (seq-mean modes, Dr.GRPO) and the per-micro-batch losses
*sum* to the full-batch loss (verl ``batch_num_tokens`` / ``global_batch_size``
and TRL ``num_items_in_batch``). ``length-weighted`` equals
``seq-mean-token-sum`` mathematically (a sequence-constant ℓ_i contributes
ℓ_i·L_i); it is kept as its own name for LUSPO configs. TRL's luspo with
token-level ratios (``(ℓ·L).mean()`` over all B·T entries, padding included) is
not reproduced; TRL itself recommends the sequence-level ratio for luspo.

The verl Jan-2026 variant of ``seq-mean-token-sum-norm`` (Σ m ℓ / T, no division
by B) is ``aggregate(..., mode='token-sum') / T``.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory

Array = jax.Array
Number = Union[float, int, Array]

MODES = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "length-weighted",
)
# Friendly aliases (paper / trainer names) → canonical mode.
ALIASES = {
    "dr_grpo": "seq-mean-token-sum-norm",
    "constant-length": "seq-mean-token-sum-norm",
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dapo": "token-mean",
    "luspo": "length-weighted",
}

# Keys in ``Trajectory.extras`` (f32[B], the same value in every row) that a
# training loop may set to give global denominators to every term.
NUM_TOKENS_KEY = "agg_num_tokens"
NUM_SEQUENCES_KEY = "agg_num_sequences"


def canonical_mode(mode: str) -> str:
  """Returns the canonical aggregation mode name for ``mode`` or an alias."""
  mode = ALIASES.get(mode, mode)
  if mode not in MODES:
    raise ValueError(
        f"Unknown aggregation mode {mode!r}; expected one of {MODES} "
        f"or an alias in {sorted(ALIASES)}")
  return mode


def aggregate(
    loss_bt: Array,
    mask_bt: Array,
    *,
    mode: str,
    max_len: Optional[Number] = None,
    num_tokens: Optional[Number] = None,
    num_sequences: Optional[Number] = None,
) -> Array:
  """Reduces a per-token loss f32[B, T] to a scalar.

  See the module docstring for the equation of each mode.

  Args:
    loss_bt: f32[B, T] per-token loss ℓ.
    mask_bt: bool/float[B, T] tokens that count (m).
    mode: one of ``MODES`` (or an alias in ``ALIASES``).
    max_len: L_max of ``seq-mean-token-sum-norm`` (default T).
    num_tokens: N_tok of ``token-mean`` (default: local Σ m, at least 1).
    num_sequences: N of the seq-mean modes (default: B).

  Returns:
    f32[] the aggregated loss.
  """
  mode = canonical_mode(mode)
  if loss_bt.ndim != 2 or mask_bt.shape != loss_bt.shape:
    raise ValueError(
        f"aggregate: expected loss [B, T] and mask of the same shape, got "
        f"{loss_bt.shape} and {mask_bt.shape}")
  b, t = loss_bt.shape
  m = mask_bt.astype(loss_bt.dtype)
  # where (not multiply) so that inf/nan on masked-out entries cannot leak.
  lm = jnp.where(m > 0, loss_bt * m, jnp.zeros_like(loss_bt))
  n_seq = jnp.asarray(b if num_sequences is None else num_sequences, loss_bt.dtype)
  n_seq = jnp.maximum(n_seq, 1.0)
  if mode == "token-mean":
    n_tok = jnp.sum(m) if num_tokens is None else jnp.asarray(num_tokens, loss_bt.dtype)
    return jnp.sum(lm) / jnp.maximum(n_tok, 1.0)
  if mode == "token-sum":
    return jnp.sum(lm)
  lengths = jnp.sum(m, axis=-1)
  seq_sum = jnp.sum(lm, axis=-1)
  if mode == "seq-mean-token-mean":
    return jnp.sum(seq_sum / jnp.maximum(lengths, 1.0)) / n_seq
  if mode in ("seq-mean-token-sum", "length-weighted"):
    if mode == "length-weighted":
      seq_sum = lengths * (seq_sum / jnp.maximum(lengths, 1.0))
    return jnp.sum(seq_sum) / n_seq
  # seq-mean-token-sum-norm (Dr.GRPO constant normaliser).
  l_max = jnp.asarray(t if max_len is None else max_len, loss_bt.dtype)
  return jnp.sum(seq_sum) / (n_seq * l_max)


def aggregate_trajectory(
    loss_bt: Array,
    traj: Trajectory,
    *,
    mode: str,
    mask: Optional[Array] = None,
    max_len: Optional[Number] = None,
    num_tokens: Optional[Number] = None,
    num_sequences: Optional[Number] = None,
    use_weights: bool = True,
) -> Array:
  """Aggregates a per-token loss over a Trajectory, respecting valid/weights.

  * mask: ``traj.loss_mask & traj.valid`` (or ``mask & traj.valid``);
  * sample weights: ℓ[b, t] ← w_b · ℓ[b, t] (``traj.weights``; they scale the
    numerator only, denominators count tokens/sequences);
  * denominators: the explicit ``num_tokens``/``num_sequences`` arguments win;
    else ``traj.extras['agg_num_tokens'|'agg_num_sequences']`` (f32[B], same
    value in every row, set by a loop that splits a batch into micro-batches);
    else local: N_tok = Σ mask, N = number of valid rows (filtered-out rows
    are treated as removed, as in TRL/verl where filtering drops them).

  Args:
    loss_bt: f32[B, T] per-token loss.
    traj: the Trajectory.
    mode: aggregation mode (see :func:`aggregate`).
    mask: optional bool[B, T] mask replacing ``traj.loss_mask``.
    max_len: L_max for ``seq-mean-token-sum-norm``.
    num_tokens: global token count for ``token-mean``.
    num_sequences: global sequence count for the seq-mean modes.
    use_weights: multiply by ``traj.weights``.

  Returns:
    f32[] loss.
  """
  base = traj.loss_mask if mask is None else mask
  m = jnp.logical_and(base.astype(bool), traj.valid[:, None])
  if use_weights:
    loss_bt = loss_bt * traj.weights[:, None].astype(loss_bt.dtype)
  if num_tokens is None and NUM_TOKENS_KEY in traj.extras:
    num_tokens = traj.extras[NUM_TOKENS_KEY][0]
  if num_sequences is None:
    if NUM_SEQUENCES_KEY in traj.extras:
      num_sequences = traj.extras[NUM_SEQUENCES_KEY][0]
    else:
      num_sequences = jnp.sum(traj.valid.astype(loss_bt.dtype))
  return aggregate(loss_bt, m, mode=mode, max_len=max_len,
                   num_tokens=num_tokens, num_sequences=num_sequences)


def masked_token_mean(x: Array, traj: Trajectory, mask: Optional[Array] = None) -> Array:
  """Token mean of x over (loss_mask or mask) & valid — for metrics."""
  base = traj.loss_mask if mask is None else mask
  m = jnp.logical_and(base.astype(bool), traj.valid[:, None]).astype(jnp.float32)
  x = jnp.where(m > 0, x, 0.0)
  return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_token_max(x: Array, traj: Trajectory, mask: Optional[Array] = None) -> Array:
  """Max of x over (loss_mask or mask) & valid (−inf → 0 when empty) — for metrics."""
  base = traj.loss_mask if mask is None else mask
  m = jnp.logical_and(base.astype(bool), traj.valid[:, None])
  out = jnp.max(jnp.where(m, x, -jnp.inf))
  return jnp.where(jnp.any(m), out, 0.0)
