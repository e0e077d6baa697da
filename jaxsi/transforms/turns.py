r"""Per-turn math of multi-turn self-correction, as small pure transforms.

A multi-turn trajectory (``jaxsi.sampling.multiturn``) holds per-turn rewards
in the columns of ``traj.rewards`` f32[B, K] (column k − 1 = model turn k; NaN
= turn not taken or not graded) and marks every token with ``turn_ids`` (k on
model turn k, negative on injected turns). The transforms below shape those
columns and turn them into token advantages; the objective term
:func:`turn_kl_penalty` weights the KL per turn. Methods compose them:

* SCoRe (Kumar et al. 2024, arXiv:2409.12917): stage I rewards (0, r2) with a
  strong KL on turn-1 tokens; stage II :func:`score_bonus` r̂2 = r2 + α(r2 − r1),
  then :func:`turn_advantages` (per-turn returns).
* UFO (Liu et al. 2025, "A Simple 'Try Again' Can Elicit Multi-Turn LLM
  Reasoning", arXiv:2507.14295): :func:`repeat_penalty` then
  :func:`turn_discount` (γ^{k−1} on turn k), group advantages.
* Reflect, Retry, Reward (Bensal et al. 2025, arXiv:2505.24726):
  :func:`require_reward` (failures that were retried) and
  :func:`restrict_loss_to_turns` (reflection tokens only).
* Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106):
  :func:`pooled_turn_advantages` (refinements join the group), then
  :func:`turn_as_response` (each refinement becomes an off-policy response to
  the bare question, trained with ``jaxsi.transforms.policy_shaping``).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import TOKEN_FIELDS, Trajectory, positions_from_mask
from jaxsi.transforms import aggregation
from jaxsi.transforms import kl as kl_lib
from jaxsi.transforms.base import Context, ModelOutputs, TrajectoryTransform, stateless

Array = jax.Array
sg = jax.lax.stop_gradient

REPEATS_KEY = "turn_repeats"
NUM_TURNS_KEY = "num_turns"


# ------------------------------------------------------------------ helpers
def _rewards(traj: Trajectory) -> Array:
  if traj.rewards is None:
    raise ValueError("this transform needs traj.rewards f32[B, K] (per turn)")
  return jnp.asarray(traj.rewards, jnp.float32)


def _turn_ids(traj: Trajectory) -> Array:
  if traj.turn_ids is None:
    raise ValueError("this transform needs traj.turn_ids (a multi-turn rollout)")
  return jnp.asarray(traj.turn_ids, jnp.int32)


def turn_token_mask(traj: Trajectory, turns: Sequence[int]) -> Array:
  """bool[B, T]: loss tokens of the model turns ``turns`` (1-based)."""
  ids = _turn_ids(traj)
  sel = jnp.isin(ids, jnp.asarray(tuple(turns), jnp.int32))
  return traj.loss_mask.astype(bool) & sel


def taken_turns(traj: Trajectory, k: int) -> Array:
  """bool[B, K]: model turn j + 1 was taken by row b.

  From ``extras['num_turns']`` when present, else from ``turn_ids``.
  """
  if NUM_TURNS_KEY in traj.extras:
    n = jnp.asarray(traj.extras[NUM_TURNS_KEY], jnp.int32)
  else:
    n = jnp.max(jnp.where(traj.loss_mask, _turn_ids(traj), 0), axis=1)
  return jnp.arange(1, k + 1)[None, :] <= n[:, None]


def per_turn_to_tokens(values: Array, traj: Trajectory) -> Array:
  """f32[B, K] per-turn values → f32[B, T] on model-turn loss tokens.

  ``out[b, t] = values[b, turn_ids[b, t] − 1]`` on loss tokens of valid rows
  whose turn id is in [1, K]; 0 elsewhere.
  """
  k = values.shape[1]
  ids = _turn_ids(traj)
  idx = jnp.clip(ids - 1, 0, k - 1)
  out = jnp.take_along_axis(values, idx, axis=1)
  keep = traj.sample_mask.astype(bool) & (ids >= 1) & (ids <= k)
  return jnp.where(keep, out, 0.0).astype(jnp.float32)


def _mean(x: Array, mask: Array) -> Array:
  m = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


# ---------------------------------------------------------------- masks
def restrict_loss_to_turns(*, turns: Sequence[int]) -> TrajectoryTransform:
  r"""``loss_mask`` ← loss tokens of the model turns ``turns`` only.

  Reflect, Retry, Reward (Bensal et al. 2025, arXiv:2505.24726, §3): only the
  self-reflection tokens are rewarded (``turns=(2,)`` in a reflect → retry
  episode); the answer tokens of both attempts are not trained.
  Metric 'turns/loss_tokens' (mean loss tokens per valid row).
  """
  turns = tuple(int(t) for t in turns)

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    m = turn_token_mask(traj, turns)
    tokens = jnp.sum(m, axis=1).astype(jnp.float32)
    return traj.replace(loss_mask=m), {
        "turns/loss_tokens": _mean(tokens, traj.valid)}

  return stateless(fn)


def require_reward(*, column: int) -> TrajectoryTransform:
  r"""``valid`` ← valid ∧ isfinite(rewards[:, column]).

  Drops the rows that never reached (or were not graded at) a turn, e.g. the
  first-attempt successes of Reflect, Retry, Reward, which the paper does not
  train on. Metric 'turns/frac_kept'.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    keep = traj.valid & jnp.isfinite(r[:, column])
    return traj.replace(valid=keep), {
        "turns/frac_kept": jnp.mean(keep.astype(jnp.float32))}

  return stateless(fn)


# ------------------------------------------------------------- shaping
def repeat_penalty(*, penalty: float, key: str = REPEATS_KEY
                   ) -> TrajectoryTransform:
  r"""UFO repetition penalty: r_k ← r_k − λ·1[answer of turn k repeats].

  Liu et al. 2025 (UFO, arXiv:2507.14295) penalise a model that answers "try
  again" with an answer it already gave. ``traj.extras[key]`` f32[B, K] holds
  the repeat indicators (``multiturn.run_episodes`` fills them from the
  canonical answers); NaN rewards (turns not taken) stay NaN. (GK: the paper's
  exact penalty value and placement; λ is a parameter here.)
  Metric 'turns/repeat_frac' (repeats per taken turn).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    if key not in traj.extras:
      raise ValueError(f"repeat_penalty needs traj.extras[{key!r}] f32[B, K]")
    rep = jnp.asarray(traj.extras[key], jnp.float32)
    if rep.shape != r.shape:
      raise ValueError(f"repeat_penalty: repeats {rep.shape} vs rewards {r.shape}")
    new = jnp.where(jnp.isfinite(r), r - penalty * rep, r)
    taken = jnp.isfinite(r) & traj.valid[:, None]
    return traj.replace(rewards=new), {"turns/repeat_frac": _mean(rep, taken)}

  return stateless(fn)


def turn_discount(*, gamma: float) -> TrajectoryTransform:
  r"""UFO turn-discounted episode reward: R = Σ_k γ^{k−1} r_k (NaN-aware).

  Liu et al. 2025 (arXiv:2507.14295): an episode that stops at its first
  correct answer in turn k earns γ^{k−1}, so fewer turns are better.
  Turns not taken (NaN) contribute 0; a row whose turns are all NaN stays NaN
  (unscorable). ``rewards`` becomes f32[B, 1]. Metric 'reward/mean'.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    k = r.shape[1]
    disc = gamma ** jnp.arange(k, dtype=jnp.float32)
    finite = jnp.isfinite(r)
    total = jnp.sum(jnp.where(finite, r * disc, 0.0), axis=1)
    total = jnp.where(jnp.any(finite, axis=1), total, jnp.nan)
    return traj.replace(rewards=total[:, None]), {
        "reward/mean": _mean(total, traj.valid & jnp.isfinite(total))}

  return stateless(fn)


def score_bonus(*, alpha: float, first: int = 0, second: int = 1,
                bonus_to_first: bool = True) -> TrajectoryTransform:
  r"""SCoRe stage-II per-turn rewards: (r1, r2 + α(r2 − r1)).

  Kumar et al. 2024 ("Training Language Models to Self-Correct via
  Reinforcement Learning", arXiv:2409.12917, §5.2, Eq. 4): the progress bonus
  b(y2 | y1, y*) = α(r(y2) − r(y1)) is added to the second attempt's reward
  so that flipping wrong → right pays more than staying right and
  right → wrong is punished. Unlike ``rewards.progress_bonus`` (which sums the
  turns into one column) the K columns are kept, so :func:`turn_advantages`
  can give each turn its own return. Metric 'turns/bonus_mean'.

  ``bonus_to_first=False`` keeps the bonus out of the first attempt's return
  (its column becomes r1 − b, so with γ = 1 the returns are G1 = r1 + r2 and
  G2 = r2 + b): the bonus then credits only the attempt it measures. With
  the literal trajectory-level sum (default) G1 = (1 − α) r1 + (1 + α) r2,
  which for α > 1 rewards a *wrong* first attempt — measured in
  ``docs/self_correction.md``: the policy learns to sandbag attempt 1.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    r1, r2 = r[:, first], r[:, second]
    bonus = alpha * (r2 - r1)
    new = r.at[:, second].set(r2 + bonus)
    if not bonus_to_first:
      new = new.at[:, first].set(jnp.where(jnp.isfinite(bonus), r1 - bonus, r1))
    ok = traj.valid & jnp.isfinite(bonus)
    return traj.replace(rewards=new), {"turns/bonus_mean": _mean(bonus, ok)}

  return stateless(fn)


# ---------------------------------------------------------- advantages
def _group_stats(x: Array, ok: Array, group_ids: Array, ddof: int = 1):
  """Per-row (mean, std, count) over all ok entries of x[B, K] in its group."""
  b = x.shape[0]
  xs = jnp.sum(jnp.where(ok, x, 0.0), axis=1)
  cnt = jnp.sum(ok.astype(jnp.float32), axis=1)
  tot = jax.ops.segment_sum(xs, group_ids, num_segments=b)[group_ids]
  n = jax.ops.segment_sum(cnt, group_ids, num_segments=b)[group_ids]
  mean = tot / jnp.maximum(n, 1.0)
  dev = jnp.where(ok, x - mean[:, None], 0.0)
  ss = jax.ops.segment_sum(jnp.sum(dev * dev, axis=1), group_ids,
                           num_segments=b)[group_ids]
  std = jnp.sqrt(ss / jnp.maximum(n - ddof, 1.0))
  return mean, std, n


def turn_advantages(*, gamma: float = 1.0,
                    baseline: Literal["group", "none"] = "group",
                    scale: Literal["none", "group"] = "none",
                    eps: float = 1e-4) -> TrajectoryTransform:
  r"""Per-turn returns and advantages of a K-turn episode.

  With per-turn rewards r̂_{b,j} (columns of ``rewards``; NaN = 0),
  the return of model turn k is G_{b,k} = Σ_{j ≥ k} γ^{j−k} r̂_{b,j} (what
  turn k's tokens influence), and::

      A_{b,k} = G_{b,k} − μ_k(g(b))             baseline='group'
      A_{b,k} = (G_{b,k} − μ_k) / (σ_k + eps)   scale='group'
      A_{b,k} = G_{b,k}                         baseline='none'

  with μ_k, σ_k (unbiased) the mean / std of G_{·,k} over the valid rows of
  the group that took turn k (a group of one gets A = 0 with a baseline).
  Token t of model turn k gets A_{b,k} (:func:`per_turn_to_tokens`).

  SCoRe (Kumar et al. 2024, arXiv:2409.12917) optimises Σ_i r̂(y_i) by
  REINFORCE over both attempts; with γ = 1 the first attempt's return is
  r1 + r2 + α(r2 − r1) (DESIGN.md's SCoRe-II composition) and the second
  attempt's is r2 + α(r2 − r1) (its own reward only: it cannot change r1).
  The group-mean baseline is an RLOO/GRPO-style variance reduction (GK: the
  paper's baseline is not specified in the abstract).

  Writes ``advantages`` f32[B, T] and ``returns`` f32[B, T] (G per token).
  Metrics 'turns/return_mean_t{k}', 'turns/adv_abs_mean'.
  """
  if baseline not in ("group", "none"):
    raise ValueError(f"baseline={baseline!r}; expected 'group' or 'none'")
  if scale not in ("none", "group"):
    raise ValueError(f"scale={scale!r}; expected 'none' or 'group'")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = jnp.nan_to_num(_rewards(traj), nan=0.0)
    k = r.shape[1]
    # G_k = r_k + γ G_{k+1}, a reverse scan over the K columns.
    g_cols = [None] * k
    acc = jnp.zeros(r.shape[0], jnp.float32)
    for j in reversed(range(k)):
      acc = r[:, j] + gamma * acc
      g_cols[j] = acc
    returns = jnp.stack(g_cols, axis=1)
    taken = taken_turns(traj, k) & traj.valid[:, None]
    adv = returns
    if baseline == "group":
      cols = []
      for j in range(k):
        okj = taken[:, j:j + 1]
        mean, std, n = _group_stats(returns[:, j:j + 1], okj, traj.group_ids)
        a = returns[:, j] - mean
        if scale == "group":
          a = a / (std + eps)
        cols.append(jnp.where(taken[:, j] & (n > 1), a, 0.0))
      adv = jnp.stack(cols, axis=1)
    adv = jnp.where(taken, adv, 0.0)
    metrics = {f"turns/return_mean_t{j + 1}": _mean(returns[:, j], taken[:, j])
               for j in range(k)}
    metrics["turns/adv_abs_mean"] = _mean(jnp.abs(adv), taken)
    return traj.replace(advantages=per_turn_to_tokens(adv, traj),
                        returns=per_turn_to_tokens(returns, traj)), metrics

  return stateless(fn)


def pooled_turn_advantages(*, scale: Literal["group", "none"] = "group",
                           eps: float = 1e-4) -> TrajectoryTransform:
  r"""Group advantages where every graded turn is a group member.

  Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106, §3): the refinements
  written after a critique join the GRPO group of the initial responses, so
  one group holds the n first attempts and the refinements. Here member
  (b, k) is model turn k of row b with a finite reward r_{b,k}; over the
  members of the group::

      A_{b,k} = (r_{b,k} − μ_g) / (σ_g + eps)     (σ unbiased; 'none': no σ)

  and the tokens of turn k of row b get A_{b,k}. Groups with < 2 members get
  0. Writes ``advantages``; metrics 'turns/members_per_group',
  'turns/adv_abs_mean'.
  """
  if scale not in ("group", "none"):
    raise ValueError(f"scale={scale!r}; expected 'group' or 'none'")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    ok = jnp.isfinite(r) & traj.valid[:, None]
    mean, std, n = _group_stats(r, ok, traj.group_ids)
    a = r - mean[:, None]
    if scale == "group":
      a = a / (std[:, None] + eps)
    adv = jnp.where(ok & (n[:, None] > 1), a, 0.0)
    return traj.replace(advantages=per_turn_to_tokens(adv, traj)), {
        "turns/members_per_group": _mean(n, traj.valid),
        "turns/adv_abs_mean": _mean(jnp.abs(adv), ok)}

  return stateless(fn)


def turn_rewards_at_ends(*, accumulate: bool = False) -> TrajectoryTransform:
  r"""Each turn's reward on the last loss token of that turn (for GAE).

  ``token_rewards[b, t_k(b)] = r_{b,k}`` with t_k the last loss token of
  model turn k (turns not taken, NaN rewards: nothing), 0 elsewhere. Followed
  by ``gae.gae_advantages`` — whose GAE skips non-loss tokens, so the
  injected turns are environment transitions and the value of turn k + 1's
  first token bootstraps turn k — this is PPO over a multi-turn episode (the
  per-turn generalisation of ``rewards.score_at_eos``; Zhou et al. 2024,
  ArCHer, arXiv:2402.19446, place utterance rewards the same way). Shape the
  columns first (e.g. :func:`score_bonus`) to change the credit. With
  ``accumulate`` an existing ``token_rewards`` is added to (e.g. a per-token
  KL reward).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r = _rewards(traj)
    ids = _turn_ids(traj)
    m = traj.loss_mask.astype(bool)
    t = ids.shape[1]
    col = jnp.arange(t, dtype=jnp.int32)[None, :]
    out = jnp.zeros(ids.shape, jnp.float32)
    for j in range(r.shape[1]):
      mk = m & (ids == j + 1)
      last = jnp.max(jnp.where(mk, col, -1), axis=1)
      rj = r[:, j]
      hit = (col == last[:, None]) & mk & jnp.isfinite(rj)[:, None]
      out = out + jnp.where(hit, jnp.nan_to_num(rj)[:, None], 0.0)
    if accumulate and traj.token_rewards is not None:
      out = out + jnp.asarray(traj.token_rewards, jnp.float32)
    return traj.replace(token_rewards=out), {}

  return stateless(fn)


OFF_POLICY_KEY = "off_policy"


def turn_as_response(*, turn: int = 2, key: str = OFF_POLICY_KEY
                     ) -> TrajectoryTransform:
  r"""Re-lays model turn ``turn`` as a response to the bare prompt (new rows).

  Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106, §3) trains a
  refinement y' written after (question, response, critique) as if it were a
  response to the question alone, π_θ(y'_t | q, y'_{<t}), off-policy (the
  shaped objective ``jaxsi.transforms.policy_shaping.mixed_policy_pg``).
  Here the B episode rows become 2B rows:

  * rows [0, B): the episodes with turn ``turn`` removed from the loss;
  * rows [B, 2B): row b's prompt followed directly by its turn-``turn``
    tokens, compacted to the left (a stable gather: kept tokens first, in
    order; earlier model turns and injected turns dropped), positions
    recomputed, ``turn_ids`` 1 on the response; valid only where row b took
    that turn; ``rewards`` (r_turn, NaN, …) — the response's own reward in
    column 0, as for a one-turn row. ``group_ids`` / ``prompt_ids`` /
    ``weights`` / per-row extras are copied, so a refinement stays in its
    prompt's group; every extra whose second axis has length T ([B, T, …])
    is treated as per-token and gathered like the tokens.

  ``extras[key]`` (bool[2B]) marks the new rows. Advantages already on the
  tokens travel with them, so run this after the advantage transform (e.g.
  :func:`pooled_turn_advantages`) and before any re-scoring transform
  (``old_logprobs``, ``ref_logprobs``): log-probs scored in the episode
  context would be wrong for the new rows, so their presence raises, and the
  sampler's log-probs of the new rows (``behaviour_logprobs`` and per-token
  extras named ``*logprobs``) are set to 0 — they were computed in the
  critique context, not for the bare question. Doubling the rows keeps every
  shape static (one compile).

  Args:
    turn: the model turn to re-lay (1-based, >= 2).
    key: extras key of the off-policy row flag.
  """
  if turn < 2:
    raise ValueError(f"turn_as_response: turn must be >= 2, got {turn}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    for name in ("old_logprobs", "ref_logprobs", "teacher_logprobs"):
      if getattr(traj, name) is not None:
        raise ValueError(
            f"turn_as_response: traj.{name} is already set (scored in the "
            "episode context); chain turn_as_response before re-scoring")
    if traj.segment_ids is not None:
      raise ValueError("turn_as_response: packed trajectories are not supported")
    ids = _turn_ids(traj)
    b, t = ids.shape
    real = traj.input_mask.astype(bool)
    is_turn = ids == turn
    keep = real & ((ids == 0) | is_turn)
    order = jnp.argsort(jnp.where(keep, 0, 1), axis=1, stable=True)
    take = lambda x: jnp.take_along_axis(x, order, axis=1)
    new_real = take(keep)
    new_loss = take(traj.loss_mask.astype(bool) & is_turn)
    taken = jnp.any(new_loss, axis=1)
    def per_token(name, v):
      if jnp.ndim(v) < 2 or jnp.shape(v)[1] != t:
        return v
      idx = order.reshape(order.shape + (1,) * (jnp.ndim(v) - 2))
      v = jnp.take_along_axis(v, idx, axis=1)
      # Sampler log-probs were computed in the critique context.
      return jnp.zeros_like(v) if name.endswith("logprobs") else v

    fields = {}
    for name in TOKEN_FIELDS:
      v = getattr(traj, name)
      if v is not None and name not in ("input_mask", "loss_mask", "positions",
                                        "turn_ids"):
        fields[name] = per_token(name, v)
    new_rewards = None
    if traj.rewards is not None:
      r = _rewards(traj)
      if r.shape[1] < turn:
        raise ValueError(f"turn_as_response: rewards have {r.shape[1]} turn "
                         f"columns, turn={turn}")
      new_rewards = jnp.full_like(r, jnp.nan).at[:, 0].set(r[:, turn - 1])
    new = traj.replace(
        input_mask=new_real, loss_mask=new_loss,
        positions=positions_from_mask(new_real),
        turn_ids=jnp.where(new_loss, 1, 0).astype(jnp.int32),
        valid=traj.valid & taken, rewards=new_rewards,
        extras={k: per_token(k, v) for k, v in traj.extras.items()},
        **fields)
    old = traj.replace(loss_mask=traj.loss_mask.astype(bool) & ~is_turn)
    flags = jnp.arange(2 * b) >= b
    out = jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), old, new)
    out = out.replace(extras={**out.extras, key: flags})
    return out, {"turns/as_response_rows": jnp.sum(new.valid)}

  return stateless(fn)


# ------------------------------------------------------------ objective
def turn_kl_penalty(*, weights: Sequence[float], estimator: str = "k3",
                    agg: str = "token-mean", max_len: Optional[int] = None):
  r"""KL(π ‖ π_ref) with a weight per model turn: L = agg_t(β_{turn(t)} k_t).

  SCoRe stage I (Kumar et al. 2024, arXiv:2409.12917, §5.1, Eq. 3):
  maximise r(y2) − β2 KL(π(·|x1) ‖ π_ref(·|x1)) on the FIRST attempt (β2 large,
  keeping turn 1 near the base model so it cannot collapse onto turn 2) plus
  the usual β1 KL elsewhere; stage II uses β1 on every turn. ``weights[k−1]``
  is the weight of model turn k (turns beyond the tuple get the last weight);
  use it in ``objective((1.0, turn_kl_penalty(...), 'kl'))``. Reads
  ``outputs.logprobs``, ``traj.ref_logprobs``, ``traj.turn_ids``.

  Returns:
    An objective term; metrics 'kl' (token mean of the unweighted estimate)
    and 'kl_t{k}' per turn.
  """
  w = jnp.asarray(tuple(float(x) for x in weights), jnp.float32)
  if w.ndim != 1 or w.shape[0] < 1:
    raise ValueError("turn_kl_penalty: give at least one weight")
  kl_lib.validate_estimator(estimator)

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.ref_logprobs is None:
      raise ValueError("turn_kl_penalty needs traj.ref_logprobs")
    m = traj.loss_mask.astype(bool)
    ids = _turn_ids(traj)
    lp = jnp.where(m, outputs.logprobs, 0.0)
    ref = jnp.where(m, traj.ref_logprobs, 0.0)
    kl_bt = kl_lib.kl_estimate(lp, ref, estimator=estimator)
    beta = w[jnp.clip(ids - 1, 0, w.shape[0] - 1)]
    loss = aggregation.aggregate_trajectory(beta * kl_bt, traj, mode=agg,
                                            max_len=max_len)
    metrics = {"kl": aggregation.masked_token_mean(sg(kl_bt), traj)}
    for j in range(int(w.shape[0])):
      metrics[f"kl_t{j + 1}"] = aggregation.masked_token_mean(
          sg(kl_bt), traj, mask=m & (ids == j + 1))
    return loss, metrics

  return term


__all__ = [
    "per_turn_to_tokens", "pooled_turn_advantages", "repeat_penalty",
    "require_reward", "restrict_loss_to_turns", "score_bonus", "taken_turns",
    "turn_advantages", "turn_discount", "turn_kl_penalty", "turn_token_mask",
]
