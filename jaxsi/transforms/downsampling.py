"""D³S: Dynamic Dual-level Down-Sampling (sample level + token level).

"Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for
Efficient Policy Optimization" (arXiv:2509.22115). What the abstract states:
(1) sample level — select a subset of each group's rollouts that maximises the
advantage variance Var(A) (shown to relate to an upper bound of the
policy-gradient norm); (2) token level — prioritise tokens with a high
|A_{i,t}|·H_{i,t} (advantage magnitude × policy entropy); (3) a dynamic
schedule: aggressive down-sampling early, relaxed later.

Our reading (GK — details not checked against the paper's equations):

* Sample level, per group: keep m of the group's n eligible samples (valid,
  finite score) so that the variance of the kept scores is maximal. For
  scalars the maximum-variance m-subset always consists of the j lowest and
  the m − j highest values for some j (an extreme-points property; the tests
  check it against brute-force enumeration), so all m + 1 candidates are
  evaluated exactly. Ties between candidates go to the most balanced one
  (|2j − m| smallest), then to the smallest j; equal scores are ordered by
  batch index (the lower index ranks lower). Deterministic, fixed shapes.
* The score is the sequence advantage (mean of ``traj.advantages`` over the
  sample's loss tokens; chain after an advantage transform, advantages are
  NOT recomputed on the subset) or, with ``source='rewards'``, the weighted
  reward. For group-normalised advantages both give the same subset.
* Token level: keep the loss tokens whose |A_{i,t}|·H_{i,t} is at least the
  (1 − ρ)-quantile over loss tokens of valid samples (batch-level, like TRL's
  high-entropy mask); H from ``traj.extras['entropy']``.
* Schedule: every keep ratio may be a callable ``step -> ratio`` (e.g. an
  optax schedule or :func:`linear_keep_schedule`), evaluated at ``ctx.step``.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, group_count, sequence_mean
from jaxsi.transforms.advantages import (_mean, _rank_in_group, scorable,
                                         sequence_rewards)
from jaxsi.transforms.base import Context, TrajectoryTransform, chain, stateless
from jaxsi.transforms.filters import _apply_token_mask, masked_quantile

Array = jax.Array
Ratio = Union[float, Callable[[Array], Array]]


def linear_keep_schedule(*, start: float, end: float, transition_steps: int
                         ) -> Callable[[Array], Array]:
  """Keep ratio moving linearly from ``start`` to ``end`` over the steps.

  D³S relaxes down-sampling over training: ``start`` < ``end``.
  """
  def schedule(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(transition_steps, 1),
                    0.0, 1.0)
    return start + (end - start) * frac
  return schedule


def _ratio(value: Ratio, step) -> Array:
  return jnp.asarray(value(step) if callable(value) else value, jnp.float32)


def max_variance_subset(x: Array, group_ids: Array, mask: Array,
                        m: Array, max_m: int) -> Array:
  """bool[B]: per group, the size-m subset of ``x[mask]`` of maximal variance.

  Args:
    x: f32[B] values.
    group_ids: int32[B].
    mask: bool[B] eligible samples.
    m: int32[B] subset size for the sample's group (clipped to [0, n_g]).
    max_m: static upper bound on m (the number of candidates is max_m + 1).

  Returns:
    The selection (subset of ``mask``); see the module docstring for the
    rule and the tie-breaking.
  """
  b = x.shape[0]
  n = group_count(group_ids, mask).astype(jnp.int32)
  m = jnp.clip(m, 0, n)
  rank = _rank_in_group(x, group_ids, mask)
  xs = jnp.where(mask, x, 0.0)
  mean = (jax.ops.segment_sum(xs, group_ids, num_segments=b)[group_ids]
          / jnp.maximum(n, 1))
  xc = jnp.where(mask, x - mean, 0.0)  # centred: numerically stable variance
  j = jnp.arange(max_m + 1)[None, :]                                  # [1, J]
  kept = mask[:, None] & ((rank[:, None] < j)
                          | (rank[:, None] >= (n - m)[:, None] + j))  # [B, J]
  kf = kept.astype(jnp.float32)
  s1 = jax.ops.segment_sum(kf * xc[:, None], group_ids, num_segments=b)
  s2 = jax.ops.segment_sum(kf * (xc * xc)[:, None], group_ids, num_segments=b)
  s1, s2 = s1[group_ids], s2[group_ids]                               # [B, J]
  mf = jnp.maximum(m, 1).astype(jnp.float32)[:, None]
  var = s2 / mf - (s1 / mf) ** 2
  possible = j <= m[:, None]
  var = jnp.where(possible, var, -jnp.inf)
  vmax = jnp.max(var, axis=1, keepdims=True)
  near = possible & (var >= vmax - 1e-6 * (1.0 + jnp.abs(vmax)))
  cost = jnp.abs(2 * j - m[:, None]) * (max_m + 2) + j
  best = jnp.argmin(jnp.where(near, cost, jnp.iinfo(jnp.int32).max), axis=1)
  return jnp.take_along_axis(kept, best[:, None], axis=1)[:, 0] & mask


def d3s_sample_selection(*, keep: Union[int, Ratio],
                         source: Literal["advantages", "rewards"] = "advantages",
                         reward_weights: Optional[Sequence[float]] = None
                         ) -> TrajectoryTransform:
  r"""D³S sample-level down-sampling: per group, the max-variance subset.

  Keeps ``m_g`` samples of each group (``valid ← valid ∧ selected``):
  ``keep`` int → m_g = min(keep, n_g); float or schedule (ratio ρ ∈ (0, 1]) →
  m_g = clip(⌈ρ·n_g⌉, 1, n_g). Among the size-m_g subsets, the one with the
  largest Var(score) is kept (see module docstring; GK reading of
  arXiv:2509.22115). Ineligible samples (invalid, or non-finite score) are
  dropped.

  Metrics: 'd3s/frac_samples_kept' (of valid samples), 'd3s/keep_ratio'.
  """
  if source not in ("advantages", "rewards"):
    raise ValueError(f"source={source!r}; expected 'advantages' or 'rewards'")
  if isinstance(keep, int) and not isinstance(keep, bool) and keep < 1:
    raise ValueError(f"keep must be ≥ 1, got {keep}")

  def fn(traj: Trajectory, ctx: Context):
    if source == "advantages":
      if traj.advantages is None:
        raise ValueError("d3s_sample_selection(source='advantages') needs "
                         "traj.advantages; chain it after an advantage "
                         "transform or use source='rewards'")
      scores = sequence_mean(traj.advantages, traj)
      ok = traj.valid & jnp.isfinite(scores)
    else:
      scores = sequence_rewards(traj, reward_weights)
      ok = scorable(traj, scores)
    n = group_count(traj.group_ids, ok)
    if isinstance(keep, int):
      m = jnp.full(n.shape, keep, jnp.int32)
      max_m = keep
      ratio = jnp.asarray(keep, jnp.float32)
    else:
      ratio = _ratio(keep, ctx.step)
      m = jnp.clip(jnp.ceil(ratio * n), 1, jnp.maximum(n, 1)).astype(jnp.int32)
      max_m = traj.batch_size
    sel = max_variance_subset(jnp.where(ok, scores, 0.0), traj.group_ids, ok,
                              m, max_m)
    return (traj.replace(valid=traj.valid & sel),
            {"d3s/frac_samples_kept": _mean(sel.astype(jnp.float32),
                                            traj.valid),
             "d3s/keep_ratio": ratio})

  return stateless(fn)


def d3s_token_selection(*, keep: Ratio, entropy_key: str = "entropy",
                        extras_key: Optional[str] = None
                        ) -> TrajectoryTransform:
  r"""D³S token-level down-sampling by |A_{i,t}|·H_{i,t}.

  ``s_{i,t} = |A_{i,t}|·H_{i,t}``; keep loss tokens with
  ``s ≥ quantile({s over loss tokens of valid samples}, 1 − ρ)`` (linear
  interpolation), ρ = ``keep`` (a ratio or a schedule of ``ctx.step``).
  H from ``traj.extras[entropy_key]`` f32[B, T]. The mask is ANDed into
  ``loss_mask``, or written to ``traj.extras[extras_key]`` if given.

  Metrics: 'd3s/frac_tokens_kept', 'd3s/token_threshold'.
  """

  def fn(traj: Trajectory, ctx: Context):
    if traj.advantages is None or entropy_key not in traj.extras:
      raise ValueError("d3s_token_selection needs traj.advantages and "
                       f"traj.extras[{entropy_key!r}]")
    score = jnp.abs(traj.advantages) * jnp.asarray(traj.extras[entropy_key],
                                                   jnp.float32)
    tokens = traj.sample_mask > 0
    rho = jnp.clip(_ratio(keep, ctx.step), 0.0, 1.0)
    tau = masked_quantile(score, tokens, 1.0 - rho)
    sel = (score >= tau) & traj.loss_mask
    return (_apply_token_mask(traj, sel, extras_key),
            {"d3s/frac_tokens_kept": _mean(sel.astype(jnp.float32), tokens),
             "d3s/token_threshold": tau})

  return stateless(fn)


def d3s(*, sample_keep: Union[int, Ratio], token_keep: Ratio,
        entropy_key: str = "entropy",
        source: Literal["advantages", "rewards"] = "advantages"
        ) -> TrajectoryTransform:
  """Both D³S levels: sample selection, then token selection on the kept."""
  return chain(d3s_sample_selection(keep=sample_keep, source=source),
               d3s_token_selection(keep=token_keep, entropy_key=entropy_key))


__all__ = ["linear_keep_schedule", "max_variance_subset",
           "d3s_sample_selection", "d3s_token_selection", "d3s"]
