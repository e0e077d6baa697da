"""Reward composition and shaping transforms.

These transforms rewrite ``traj.rewards`` f32[B, K] (sequence-level reward
components) or ``traj.token_rewards`` f32[B, T] (dense rewards, for PPO/GAE):

* :func:`compose_rewards` — weighted sum of the K components into one column.
* :func:`shape_turn_rewards` / :func:`progress_bonus` — any function of the
  reward columns (e.g. SCoRe's r1 + r2 + α(r2 − r1)).
* :func:`overlong_penalty` — DAPO soft overlong punishment, in tokens.
* :func:`score_at_eos` — a sequence reward placed on the last loss token.
* :func:`kl_in_reward` — KL to the reference folded into the reward, per token
  (verl ``apply_kl_penalty``) or summed per sequence (TRL RLOO), with a fixed or
  an adaptive (Ziegler et al. 2019) coefficient kept as transform state.

Sequence-level adjustments (overlong, sequence KL) act on one column of
``rewards``: ``column=None`` requires K = 1 (compose first), an int selects the
column. NaN rewards (unscorable samples) stay NaN.
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory
from jaxsi.transforms.advantages import (place_at_last_token, sequence_rewards,
                                         _mean)
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless
from jaxsi.transforms import kl as kl_lib

Array = jax.Array
KLEstimator = Literal["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"]


# ------------------------------------------------------------ composition
def compose_rewards(*, weights: Optional[Sequence[float]] = None,
                    keep_components: bool = False) -> TrajectoryTransform:
  r"""Weighted composition of the K reward components.

  ``R_i = nansum_k w_k r_{i,k}`` (NaN when every component is NaN, TRL's
  unscorable rows); ``rewards`` becomes f32[B, 1]. With
  ``keep_components=True`` the K columns are kept, each scaled by its weight
  (``rewards[:, k] = w_k r_{:, k}``), so a later normalise-then-sum
  aggregation still sees them.

  Metrics: 'reward/mean' (over valid, scorable samples) and
  'reward/component_{k}/mean' for each input column.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = jnp.asarray(traj.rewards, jnp.float32)
    k = r.shape[1]
    w = (jnp.ones((k,), jnp.float32) if weights is None
         else jnp.asarray(weights, jnp.float32))
    if w.shape != (k,):
      raise ValueError(f"weights has shape {w.shape}; rewards have K={k}")
    total = sequence_rewards(traj, w)
    metrics = {"reward/mean": _mean(total, traj.valid & jnp.isfinite(total))}
    for j in range(k):
      col = r[:, j]
      metrics[f"reward/component_{j}/mean"] = _mean(
          col, traj.valid & jnp.isfinite(col))
    new = r * w if keep_components else total[:, None]
    return traj.replace(rewards=new), metrics

  return stateless(fn)


def shape_turn_rewards(fn: Callable[..., Union[Array, Sequence[Array]]], *,
                       columns: Optional[Sequence[int]] = None
                       ) -> TrajectoryTransform:
  r"""Rewrites the reward columns with any function of them.

  ``fn(r_a, r_b, …)`` receives the selected columns as f32[B] arrays (all K
  columns by default, in order) and returns f32[B] (→ ``rewards`` f32[B, 1])
  or a tuple of f32[B] (→ f32[B, len]). Typical use: per-turn rewards of a
  two-attempt rollout (SCoRe, Kumar et al. 2024, arXiv:2409.12917, stage II)
  ``shape_turn_rewards(lambda r1, r2: r1 + r2 + alpha * (r2 - r1))``.
  """

  def update(traj: Trajectory, ctx: Context):
    del ctx
    r = jnp.asarray(traj.rewards, jnp.float32)
    cols = range(r.shape[1]) if columns is None else columns
    out = fn(*[r[:, c] for c in cols])
    if isinstance(out, (tuple, list)):
      new = jnp.stack([jnp.asarray(o, jnp.float32) for o in out], axis=1)
    else:
      new = jnp.asarray(out, jnp.float32)[:, None]
    if new.shape[0] != r.shape[0] or new.ndim != 2:
      raise ValueError(f"shape_turn_rewards: fn returned shape {new.shape[:-1]}"
                       f" per column; expected ({r.shape[0]},)")
    return traj.replace(rewards=new), {
        "reward/mean": _mean(new[:, 0], traj.valid & jnp.isfinite(new[:, 0]))}

  return stateless(update)


def progress_bonus(*, alpha: float, first: int = 0, second: int = 1
                   ) -> TrajectoryTransform:
  r"""SCoRe stage-II reward: ``r1 + r2 + α (r2 − r1)`` from two turn columns.

  Kumar et al. 2024 ("Training Language Models to Self-Correct via
  Reinforcement Learning", arXiv:2409.12917): the bonus α(r2 − r1) rewards
  flipping a wrong first attempt into a correct second one.
  """
  return shape_turn_rewards(lambda r1, r2: r1 + r2 + alpha * (r2 - r1),
                            columns=(first, second))


def _column(traj: Trajectory, column: Optional[int]) -> int:
  k = traj.rewards.shape[1]
  if column is None:
    if k != 1:
      raise ValueError(f"rewards has K={k} columns; compose them first "
                       "(compose_rewards) or pass column=")
    return 0
  if not -k <= column < k:
    raise ValueError(f"column {column} out of range for K={k}")
  return column % k


# --------------------------------------------------------------- overlong
def overlong_penalty(*, max_length: int, buffer_length: int,
                     penalty_factor: float = 1.0,
                     column: Optional[int] = None) -> TrajectoryTransform:
  r"""DAPO soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, Eq. 13).

  ``r += min(−(L − (L_max − L_buf)) / L_buf · factor, 0)`` with L the number of
  completion tokens (``traj.completion_lengths``, i.e. loss tokens; in a
  multi-turn sample that excludes injected observation tokens), as verl's
  ``DAPORewardManager`` (formulas.md §3.7). Lengths are in TOKENS, never
  characters. A length ≤ L_max − L_buf is not penalised; the penalty reaches
  −factor at L = L_max and keeps growing linearly beyond.

  Args:
    max_length: L_max, the maximum completion length in tokens.
    buffer_length: L_buf > 0, the soft-punishment interval.
    penalty_factor: scale of the penalty (verl ``penalty_factor``, 1.0).
    column: reward column to shape (None requires K = 1).

  Returns:
    A stateless transform; metrics 'overlong/frac_penalized',
    'overlong/mean_penalty'.
  """
  if buffer_length <= 0:
    raise ValueError(f"buffer_length must be > 0, got {buffer_length}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    c = _column(traj, column)
    length = traj.completion_lengths.astype(jnp.float32)
    expected = float(max_length - buffer_length)
    penalty = jnp.minimum(-(length - expected) / buffer_length * penalty_factor,
                          0.0)
    rewards = traj.rewards.at[:, c].add(penalty)
    return traj.replace(rewards=rewards), {
        "overlong/frac_penalized": _mean((penalty < 0).astype(jnp.float32),
                                         traj.valid),
        "overlong/mean_penalty": _mean(penalty, traj.valid)}

  return stateless(fn)


# ---------------------------------------------------------- score at EOS
def score_at_eos(*, reward_weights: Optional[Sequence[float]] = None,
                 accumulate: bool = True) -> TrajectoryTransform:
  r"""Places the sequence reward on the last loss token of ``token_rewards``.

  ``token_rewards[b, t_last(b)] += R_b`` with ``R_b = nansum_k w_k r_{b,k}``
  and t_last the last True of ``loss_mask`` (the EOS / last generated token),
  as verl's reward managers and TRL PPO do before GAE (formulas.md §2.9).
  NaN (unscorable) rewards contribute 0. With ``accumulate=False`` an existing
  ``token_rewards`` is replaced instead of added to.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    score = sequence_rewards(traj, reward_weights)
    placed = place_at_last_token(score, traj.loss_mask)
    if accumulate and traj.token_rewards is not None:
      placed = placed + jnp.asarray(traj.token_rewards, jnp.float32)
    return traj.replace(token_rewards=placed), {}

  return stateless(fn)


# ------------------------------------------------------------- KL reward
def kl_estimate(logp: Array, ref_logp: Array, estimator: KLEstimator = "k1", *,
                clamp: bool = True) -> Array:
  r"""Per-token KL(π‖π_ref) estimators of verl ``kl_penalty`` (formulas.md §3.4).

  k1 / 'kl': ℓp − ref;  'abs': |ℓp − ref|;  k2 / 'mse': ½(ℓp − ref)²;
  k3 / 'low_var_kl' (Schulman 2020): x = ref − ℓp, e^x − x − 1, with verl's
  clamps x ∈ [−20, 20] and output ∈ [−10, 10] when ``clamp`` (TRL: none).
  A thin wrapper of :func:`jaxsi.transforms.kl.kl_estimate` with verl's naming
  (where 'k3' means the clamped estimator unless ``clamp=False``).
  """
  names = {"kl": "k1", "k1": "k1", "abs": "abs", "mse": "k2", "k2": "k2",
           "k3": "low_var_kl" if clamp else "k3",
           "low_var_kl": "low_var_kl" if clamp else "k3"}
  if estimator not in names:
    raise ValueError(f"unknown KL estimator {estimator!r}; expected k1, abs, k2,"
                     " k3 (or verl names kl, mse, low_var_kl)")
  return kl_lib.kl_estimate(logp, ref_logp, estimator=names[estimator])


class KLControllerState(NamedTuple):
  """State of :func:`kl_in_reward`: the current coefficient β."""

  beta: Array


def adaptive_kl_update(beta: Array, kl: Array, *, target: float,
                       horizon: float, n_steps: Union[int, Array]) -> Array:
  r"""Ziegler et al. 2019 adaptive KL controller (verl ``AdaptiveKLController``).

  ``β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n_steps/horizon)``.
  """
  err = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return beta * (1.0 + err * n_steps / horizon)


def kl_in_reward(*, beta: float = 0.001, estimator: KLEstimator = "k1",
                 mode: Literal["token", "sequence"] = "token",
                 adaptive: bool = False, target_kl: float = 0.1,
                 horizon: float = 10000.0, clamp: bool = True,
                 logprobs_field: str = "old_logprobs",
                 column: Optional[int] = None) -> TrajectoryTransform:
  r"""KL to the reference folded into the reward (a penalty, no gradient).

  ``mode='token'`` (verl ``apply_kl_penalty``, formulas.md §3.4a)::

      token_rewards_{i,t} −= β · kl(old_{i,t}, ref_{i,t}) · m_{i,t}

  (``token_rewards`` starts at 0 when absent; chain :func:`score_at_eos`
  first to add the score). ``mode='sequence'`` (TRL ``RLOOTrainer``, §2.1)::

      R_i −= β · Σ_t m_{i,t} kl(old_{i,t}, ref_{i,t})     (k1 by default)

  on one column of ``rewards``. β is the transform state: fixed, or with
  ``adaptive=True`` updated AFTER it is used, by
  :func:`adaptive_kl_update` with KL = mean over valid samples of the
  per-sequence token mean of the estimator and n_steps = B, as as verl (``kl_ctrl.update(
  current_kl, n_steps=batch_size)``; defaults kl_coef 0.001, target 0.1,
  horizon 10000). The per-token values are stop-gradient.

  Args:
    beta: initial/fixed coefficient β.
    estimator: 'k1' | 'abs' | 'k2' | 'k3' (verl names accepted), see
      :func:`kl_estimate`.
    mode: 'token' or 'sequence'.
    adaptive: use the adaptive controller.
    target_kl: KL target of the adaptive controller.
    horizon: horizon of the adaptive controller.
    clamp: verl's clamps for k3 (TRL has none).
    logprobs_field: trajectory field with the policy log-probs
      ('old_logprobs' as verl and TRL; 'behaviour_logprobs' also works).
    column: reward column for ``mode='sequence'`` (None requires K = 1).

  Returns:
    A TrajectoryTransform with state :class:`KLControllerState`; metrics
    'kl/mean' (the KL fed to the controller), 'kl/beta' (the β used).
  """
  if estimator not in ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"):
    raise ValueError(f"unknown KL estimator {estimator!r}")
  if mode not in ("token", "sequence"):
    raise ValueError(f"mode={mode!r}; expected 'token' or 'sequence'")

  def init():
    return KLControllerState(beta=jnp.asarray(beta, jnp.float32))

  def update(traj: Trajectory, state: KLControllerState, ctx: Context):
    del ctx
    logp = getattr(traj, logprobs_field)
    if logp is None or traj.ref_logprobs is None:
      raise ValueError(f"kl_in_reward needs traj.{logprobs_field} and "
                       "traj.ref_logprobs (chain old_logprobs()/ref_logprobs())")
    m = traj.loss_mask.astype(jnp.float32)
    kl = jax.lax.stop_gradient(
        kl_estimate(logp, traj.ref_logprobs, estimator, clamp=clamp)) * m
    b_ = state.beta
    if mode == "token":
      base = (jnp.zeros_like(m) if traj.token_rewards is None
              else jnp.asarray(traj.token_rewards, jnp.float32))
      traj = traj.replace(token_rewards=base - b_ * kl)
    else:
      c = _column(traj, column)
      traj = traj.replace(rewards=traj.rewards.at[:, c].add(
          -b_ * jnp.sum(kl, axis=1)))
    seq_kl = jnp.sum(kl, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    current = _mean(seq_kl, traj.valid)
    new_beta = b_
    if adaptive:
      new_beta = adaptive_kl_update(b_, current, target=target_kl,
                                    horizon=horizon, n_steps=traj.batch_size)
    return traj, KLControllerState(beta=new_beta), {"kl/mean": current,
                                                    "kl/beta": b_}

  return TrajectoryTransform(init, update)


__all__ = [
    "compose_rewards", "shape_turn_rewards", "progress_bonus",
    "overlong_penalty", "score_at_eos", "kl_estimate", "KLControllerState",
    "adaptive_kl_update", "kl_in_reward",
]
