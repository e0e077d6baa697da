"""Sample and token filters.

A sample filter clears ``traj.valid[b]`` (the sample stays in the batch so
shapes are fixed, but contributes nothing to losses or statistics); a token
filter clears ``traj.loss_mask`` entries — or, with ``extras_key=...``, writes
its boolean mask to ``traj.extras[extras_key]`` and leaves ``loss_mask`` alone,
for objectives that multiply the per-token loss by the mask but keep the
original aggregation denominator (TRL's behaviour for the entropy and
off-policy masks).

Data read from ``traj.extras`` (documented contract with the sampler/scorer):

* ``extras['finished']`` bool[B]: the sample ended with a stop token (EOS /
  turn end) rather than by hitting the length limit.
* ``extras['entropy']`` f32[B, T]: entropy of the next-token distribution that
  produced token t (aligned like logprobs), e.g. from
  ``importance.old_logprobs(entropy_key='entropy')``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, group_count, sequence_mean
from jaxsi.transforms.advantages import (_mean, _rank_in_group,
                                         frac_zero_std_groups, group_range,
                                         scorable, sequence_rewards)
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array


# --------------------------------------------------------------- helpers
def masked_quantile(x: Array, mask: Array, q: float) -> Array:
  """Scalar ``torch.quantile(x[mask], q)`` (linear interpolation), jit-safe.

  Fixed shapes: masked-out entries are sorted to the end. Returns +inf when
  the mask is empty.
  """
  flat = jnp.where(mask, x, jnp.inf).reshape(-1)
  n = jnp.sum(mask.astype(jnp.int32))
  srt = jnp.sort(flat)
  pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = pos - lo.astype(jnp.float32)
  a, b = srt[lo], srt[hi]
  val = a + (b - a) * frac
  val = jnp.where(frac == 0, a, val)  # avoids inf·0 when hi is padding
  return jnp.where(n > 0, val, jnp.inf)


def _apply_token_mask(traj: Trajectory, keep: Array,
                      extras_key: Optional[str]) -> Trajectory:
  if extras_key is None:
    return traj.replace(loss_mask=traj.loss_mask & keep)
  extras = dict(traj.extras)
  extras[extras_key] = keep & traj.loss_mask
  return traj.replace(extras=extras)


def _apply_sample_mask(traj: Trajectory, keep: Array,
                       extras_key: Optional[str]) -> Trajectory:
  if extras_key is None:
    return traj.replace(valid=traj.valid & keep)
  extras = dict(traj.extras)
  extras[extras_key] = keep
  return traj.replace(extras=extras)


def _frac(x: Array, mask: Array) -> Array:
  return _mean(x.astype(jnp.float32), mask)


# ---------------------------------------------------------- sample filters
def drop_zero_variance_groups(*, reward_weights: Optional[Sequence[float]] = None,
                              atol: float = 0.0) -> TrajectoryTransform:
  r"""DAPO dynamic-sampling filter: drop groups whose rewards are all equal.

  Yu et al. 2025 (DAPO, arXiv:2503.14476, Eq. 11 constraint
  0 < |{o_i correct}| < G); verl ``filter_groups`` keeps a group when
  ``std(metric) > 0`` or it has one member (formulas.md §3.7). Here a group is
  dropped (``valid = False`` for all its members) when it has ≥ 2 valid,
  scorable samples and max − min ≤ ``atol`` (exactly "std == 0" for
  ``atol=0``). Singleton groups are kept. Unscorable (NaN) samples are ignored
  by the statistic but are dropped with the rest of their group.
  Refilling the batch with new groups is the training loop's job.

  Metrics: 'filter/frac_zero_std_groups' (fraction of groups with ≥ 1 valid
  member whose rewards are all equal, singletons counted as zero-std, as in
  the advantage metrics), 'filter/frac_dropped' (fraction of valid samples
  dropped).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    lo, hi = group_range(scores, traj.group_ids, ok)
    n = group_count(traj.group_ids, ok)
    drop = (n >= 2) & (hi - lo <= atol)
    metrics = {
        "filter/frac_zero_std_groups": frac_zero_std_groups(
            scores, traj.group_ids, ok),
        "filter/frac_dropped": _frac(drop, traj.valid),
    }
    return traj.replace(valid=traj.valid & ~drop), metrics

  return stateless(fn)


def mask_truncated_completions(*, finished_key: str = "finished",
                               invalidate: bool = False) -> TrajectoryTransform:
  r"""TRL ``mask_truncated_completions``: no loss on truncated completions.

  A completion that did not end with a stop token (``traj.extras[
  finished_key]`` bool[B] is False; the sampler provides it) gets its whole
  ``loss_mask`` cleared, as TRL sets the completion mask to 0 (formulas.md
  §1.1). Its reward still counts in group statistics computed before this
  transform. With ``invalidate=True`` the sample is also marked invalid.

  Metric: 'filter/frac_truncated' (over valid samples).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if finished_key not in traj.extras:
      raise KeyError(f"mask_truncated_completions needs traj.extras"
                     f"[{finished_key!r}] (bool[B], True = ended with a stop "
                     "token)")
    finished = jnp.asarray(traj.extras[finished_key], bool)
    metrics = {"filter/frac_truncated": _frac(~finished, traj.valid)}
    traj = traj.replace(loss_mask=traj.loss_mask & finished[:, None])
    if invalidate:
      traj = traj.replace(valid=traj.valid & finished)
    return traj, metrics

  return stateless(fn)


def mask_stop_token(*, finished_key: str = "finished") -> TrajectoryTransform:
  r"""No loss on the stop token: clears ``loss_mask`` at the last loss token of
  every finished row (the EOS / stop token the sampler emitted).

  For distillation from a privileged teacher (OPSD): a teacher that knows the
  answer puts low probability on stopping after a WRONG answer (it signals
  correctness through the stop token), so a reverse KL on the stop token
  teaches a student that cannot tell right from wrong to never stop
  (``docs/distillation.md``). Rows that did not finish (truncated) keep their
  mask. Metric: 'filter/stop_tokens_masked' (fraction of valid rows).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if finished_key not in traj.extras:
      raise KeyError(f"mask_stop_token needs traj.extras[{finished_key!r}]"
                     " (bool[B], True = ended with a stop token)")
    finished = jnp.asarray(traj.extras[finished_key], bool)
    lm = traj.loss_mask
    t = lm.shape[1]
    last = t - 1 - jnp.argmax(lm[:, ::-1], axis=-1)
    hit = finished & jnp.any(lm, axis=-1)
    drop = (jnp.arange(t)[None, :] == last[:, None]) & hit[:, None]
    metrics = {"filter/stop_tokens_masked": _frac(hit, traj.valid)}
    return traj.replace(loss_mask=lm & ~drop), metrics

  return stateless(fn)


def threshold_filter(*, threshold: float,
                     reward_weights: Optional[Sequence[float]] = None,
                     inclusive: bool = True) -> TrajectoryTransform:
  r"""Keep samples whose reward is ≥ τ (``inclusive``) or > τ.

  ``valid_i ← valid_i ∧ (R_i ≥ τ)`` with ``R_i = nansum_k w_k r_{i,k}``;
  unscorable (NaN) samples are dropped. Rejection-sampling fine-tuning
  (STaR, Zelikman et al. 2022; RFT; ReST-EM) keeps the verified-correct
  samples with ``threshold=1``.

  Metric: 'filter/frac_kept' (over previously valid samples).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    keep = (scores >= threshold) if inclusive else (scores > threshold)
    keep = keep & jnp.isfinite(scores)
    return (traj.replace(valid=traj.valid & keep),
            {"filter/frac_kept": _frac(keep, traj.valid)})

  return stateless(fn)


def top_k_per_group(*, k: int, largest: bool = True,
                    reward_weights: Optional[Sequence[float]] = None
                    ) -> TrajectoryTransform:
  r"""Keep the k best (``largest=True``) or worst samples of each group.

  Best-of-n (k = 1), worst-of-n, or the top-k of a group of n. Ranks are taken
  over valid, scorable samples; ties go to the lower batch index, so the
  result is deterministic. Groups with ≤ k eligible samples keep all of them;
  unscorable samples are dropped. Uses an O(B²) comparison matrix.

  Metric: 'filter/frac_kept'.
  """
  if k < 1:
    raise ValueError(f"k must be ≥ 1, got {k}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    scores = sequence_rewards(traj, reward_weights)
    ok = scorable(traj, scores)
    rank = _rank_in_group(-scores if largest else scores, traj.group_ids, ok)
    keep = ok & (rank < k)
    return (traj.replace(valid=traj.valid & keep),
            {"filter/frac_kept": _frac(keep, traj.valid)})

  return stateless(fn)


def distinct_per_group() -> TrajectoryTransform:
  r"""Keep the first of the valid samples of a group with the same completion.

  RFT (Yuan et al. 2023, §3.3) trains on the *distinct* reasoning paths of a
  question; ReST-EM (Singh et al. 2023) caps distinct solutions per problem.
  Sample i is dropped iff a valid sample j < i of its group has the same
  completion tokens (``tokens`` where ``loss_mask``; the samples of a group
  share their prompt row). A lexicographic sort of (group, completion, row)
  makes duplicates adjacent: O(B log B · T), no B² matrix.

  Metric: 'filter/frac_kept'.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    b = traj.batch_size
    comp = jnp.where(traj.loss_mask, traj.tokens, -1).astype(jnp.int32)
    invalid = (~traj.valid).astype(jnp.int32)
    key = jnp.concatenate([traj.group_ids[:, None], invalid[:, None], comp], axis=1)
    row = jnp.arange(b, dtype=jnp.int32)
    order = jnp.lexsort((row,) + tuple(key[:, j] for j in range(key.shape[1] - 1, -1, -1)))
    ordered = key[order]
    dup = jnp.concatenate([jnp.zeros((1,), bool),
                           jnp.all(ordered[1:] == ordered[:-1], axis=1)])
    keep = ~jnp.zeros((b,), bool).at[order].set(dup)
    return (traj.replace(valid=traj.valid & keep),
            {"filter/frac_kept": _frac(keep, traj.valid)})

  return stateless(fn)


# ----------------------------------------------------------- token filters
def high_entropy_token_mask(*, top_fraction: float = 0.2,
                            entropy_key: str = "entropy",
                            extras_key: Optional[str] = None
                            ) -> TrajectoryTransform:
  r"""Train only on the highest-entropy tokens ("forking tokens").

  Wang et al. 2025 ("Beyond the 80/20 Rule", arXiv:2506.01939); TRL
  ``get_high_entropy_mask`` with ``top_entropy_quantile = ρ`` (formulas.md
  §1.3)::

      τ = quantile({H_{i,t} : loss tokens of valid samples}, 1 − ρ)   (linear)
      keep_{i,t} = (H_{i,t} ≥ τ) ∧ m_{i,t}

  Entropies come from ``traj.extras[entropy_key]`` f32[B, T]. ``ρ = 1`` keeps
  every token. TRL multiplies the per-token loss by this mask but keeps the
  completion-mask denominator: use ``extras_key`` (and an objective that reads
  it) for that; by default the mask is ANDed into ``loss_mask``, which also
  shrinks token-mean denominators.

  Metrics: 'filter/entropy_threshold', 'filter/frac_tokens_kept'.
  """
  if not 0.0 < top_fraction <= 1.0:
    raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if entropy_key not in traj.extras:
      raise KeyError(f"high_entropy_token_mask needs traj.extras[{entropy_key!r}]"
                     " (f32[B, T] per-token entropy)")
    ent = jnp.asarray(traj.extras[entropy_key], jnp.float32)
    tokens = traj.sample_mask > 0
    tau = masked_quantile(ent, tokens, 1.0 - top_fraction)
    keep = (ent >= tau) & traj.loss_mask
    metrics = {"filter/entropy_threshold": tau,
               "filter/frac_tokens_kept": _frac(keep, tokens)}
    return _apply_token_mask(traj, keep, extras_key), metrics

  return stateless(fn)


def off_policy_sequence_mask(*, threshold: float,
                             sampler_field: str = "behaviour_logprobs",
                             policy_field: str = "old_logprobs",
                             extras_key: Optional[str] = None
                             ) -> TrajectoryTransform:
  r"""DeepSeek-V3.2 off-policy sequence masking (OPSM; TRL formulas.md §1.3).

  ``keep_i = (A_i ≥ 0) ∨ (Σ_t m (samp − ℓp) / max(1, Σ_t m) ≤ δ)``: a sample
  with negative advantage whose sampler log-probs exceed the policy's by more
  than δ per token on average (too off-policy) is dropped. ``samp`` is
  ``traj.<sampler_field>``, ℓp is ``traj.<policy_field>`` (stop-gradient);
  TRL computes this inside the loss with the current policy, which equals
  ``old_logprobs`` on the first optimisation step of a batch. A_i is the mean
  of ``traj.advantages`` over the sample's loss tokens (the broadcast value
  for sequence-level estimators). Chain it after the advantage transform.

  By default the mask clears ``valid``; with ``extras_key`` it is written to
  ``traj.extras[extras_key]`` bool[B] instead (TRL multiplies the loss by it).

  Metric: 'filter/frac_off_policy_masked'.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    samp = getattr(traj, sampler_field)
    lp = getattr(traj, policy_field)
    if samp is None or lp is None or traj.advantages is None:
      raise ValueError(f"off_policy_sequence_mask needs traj.{sampler_field}, "
                       f"traj.{policy_field} and traj.advantages")
    kl = sequence_mean(samp - jax.lax.stop_gradient(lp), traj)
    adv = sequence_mean(traj.advantages, traj)
    keep = (adv >= 0) | (kl <= threshold)
    return (_apply_sample_mask(traj, keep, extras_key),
            {"filter/frac_off_policy_masked": _frac(~keep, traj.valid)})

  return stateless(fn)


__all__ = [
    "masked_quantile", "drop_zero_variance_groups", "mask_truncated_completions",
    "threshold_filter", "top_k_per_group", "high_entropy_token_mask",
    "off_policy_sequence_mask",
]
