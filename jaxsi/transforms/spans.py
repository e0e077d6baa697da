r"""Span ids and per-span rewards/advantages inside one sequence.

In-sequence self-verification (SPOC, Zhao et al. 2025, "Boosting LLM
Reasoning via Spontaneous Self-Correction", arXiv:2506.06923; Self-rewarding
correction, Xiong et al. 2025, arXiv:2502.19613; S²R): one completion holds
``attempt verdict (revision verdict)*``. Every span is an action with its own
reward — an attempt is rewarded for being correct, a verdict for matching the
true correctness of the attempt before it — and the policy gradient of each
token uses the advantage of *its* span instead of one sequence advantage.

Span ids (``Trajectory.span_ids``, see ``jaxsi.data.spans``): 0 outside the
completion, ``2k − 1`` the k-th attempt, ``2k`` its verdict, ``2M + 1``
anything after the M-th verdict. ``traj.rewards[:, s − 1]`` is the reward of
span s (NaN: the span does not exist), as produced by
``jaxsi.methods.spoc.self_verification_reward``.

Transforms:

* :func:`verdict_span_ids` — fills ``span_ids`` from the token ids on device
  (marker matching; the same ids as the host parser
  ``jaxsi.data.spans.self_verification_span_ids``).
* :func:`span_advantages` — per-span group-normalised advantages broadcast
  to the span's tokens (and the span rewards as ``token_rewards`` at the
  last token of each span).
* :func:`drop_zero_advantage_groups` — drop groups whose every token
  advantage is 0 (no learning signal).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import jax
import jax.numpy as jnp

from jaxsi.trajectory import Trajectory, group_sum
from jaxsi.transforms.advantages import TRL_EPS
from jaxsi.transforms.base import Context, TrajectoryTransform, stateless

Array = jax.Array

Normalize = Literal["role", "span"]
Scale = Literal["group", "none"]


# --------------------------------------------------------------- span ids
def _match(tokens: Array, ok: Array, marker: Sequence[int]) -> Array:
  """bool[B, T]: the marker's token sequence starts at t (all inside ``ok``)."""
  b, t = tokens.shape
  n = len(marker)
  pad_tok = jnp.pad(tokens, ((0, 0), (0, n)))
  pad_ok = jnp.pad(ok, ((0, 0), (0, n)))
  hit = jnp.ones((b, t), bool)
  for i, m in enumerate(marker):
    hit &= (pad_tok[:, i:i + t] == m) & pad_ok[:, i:i + t]
  return hit


def _shift_right(x: Array, k: int, fill) -> Array:
  """x[:, t − k] (``fill`` for t < k)."""
  if k == 0:
    return x
  return jnp.pad(x, ((0, 0), (k, 0)), constant_values=fill)[:, :x.shape[1]]


def shared_prefix_len(a: Sequence, b: Sequence) -> int:
  """Length of the common prefix of two sequences (the markers' shared start)."""
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


def span_ids_from_markers(tokens: Array, loss_mask: Array, *,
                          correct_ids: Sequence[int], wrong_ids: Sequence[int],
                          stop_ids: Sequence[int], max_attempts: int,
                          skip_ids: Sequence[int] = ()) -> Array:
  """int32[B, T] span ids of completions in the verdict format (pure, jit-able).

  With j(t) the number of verdict markers that end before token t, M =
  ``max_attempts``:

  * a token inside the j-th marker → 2j (verdict j), or 2M + 1 when j > M —
    except the tokens of the prefix both markers share (``'['`` of
    ``'[correct]'``/``'[wrong]'``), which go to the attempt before: they
    decide where the attempt *ends*, not the verdict. (Crediting them to the
    verdict let a policy cut its first attempt short — ``'23[wrong]231'`` —
    and collect the verdict's reward for the cut.);
  * another completion token → 2j + 1 (attempt j + 1), or 2M + 1 when j ≥ M;
  * the stop token takes the span the format expects next: after a positive
    marker (or the M-th) it ends that verdict (2j); after a negative marker
    with attempts left it is the missing revision (2j + 1); after attempt
    text it is that attempt's missing verdict (2j + 2); after extra text
    2M + 1; as the first completion token 1;
  * a ``skip_ids`` token (ids that decode to no text, e.g. pad/bos emitted
    by the policy) is transparent: it joins the span of the previous
    non-skipped token (1 if none) and is ignored by the stop rule, as the
    host parser's zero-width tokens are (a skipped token *inside* a marker
    breaks the marker here but not in the decoded text);
  * tokens outside ``loss_mask`` (prompt, padding, after the stop) → 0.

  The two markers must not overlap (``jaxsi.data.spans.VerdictFormat``
  checks this for the strings); completions whose sampled tokenization of a
  marker differs from ``correct_ids``/``wrong_ids`` see no marker there.

  Args:
    tokens: int32[B, T].
    loss_mask: bool[B, T] completion tokens (through the first stop token).
    correct_ids: token ids of the positive marker.
    wrong_ids: token ids of the negative marker.
    stop_ids: ids that end a completion.
    max_attempts: M.
    skip_ids: ids that decode to no text.

  Returns:
    int32[B, T] span ids.
  """
  if not correct_ids or not wrong_ids:
    raise ValueError("span_ids_from_markers: empty marker token ids")
  if max_attempts < 1:
    raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
  m = max_attempts
  extra = 2 * m + 1
  lm = jnp.asarray(loss_mask, bool)
  stop = jnp.zeros_like(lm)
  for s in stop_ids:
    stop |= tokens == s
  stop &= lm
  body = lm & ~stop
  skip = jnp.zeros_like(lm)
  for s in skip_ids:
    skip |= tokens == s
  skip &= body
  real = body & ~skip
  # The markers' common prefix ends the attempt: it belongs to the attempt.
  shared = shared_prefix_len(correct_ids, wrong_ids)
  inside = jnp.zeros_like(lm)
  ends = []
  for ids in (tuple(correct_ids), tuple(wrong_ids)):
    hit = _match(tokens, real, ids)
    for i in range(shared, len(ids)):
      inside |= _shift_right(hit, i, False)
    ends.append(_shift_right(hit, len(ids) - 1, False))
  end_pos, end_neg = ends
  marker_end = end_pos | end_neg
  # j(t): markers that end strictly before t.
  j = jnp.cumsum(marker_end.astype(jnp.int32), axis=1) - marker_end.astype(
      jnp.int32)
  in_marker_span = jnp.where(j + 1 <= m, 2 * (j + 1), extra)
  text_span = jnp.where(j < m, 2 * j + 1, extra)
  span = jnp.where(inside, in_marker_span, text_span)
  # The last real (non-skipped) completion token before t.
  t_idx = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
  last_real = jax.lax.cummax(jnp.where(real, t_idx, -1), axis=1)
  prev = _shift_right(last_real, 1, -1)
  has_prev = prev >= 0
  gather = lambda x: jnp.take_along_axis(x, jnp.maximum(prev, 0), axis=1)
  # Zero-width (skipped) tokens join the previous real token's span.
  span = jnp.where(skip, jnp.where(has_prev, gather(span), 1), span)
  # The stop token.
  prev_end_pos = gather(end_pos) & has_prev
  prev_end_neg = gather(end_neg) & has_prev
  # For the stop token j counts every marker before it.
  after_marker = jnp.where(
      j > m, extra,
      jnp.where(prev_end_neg & (j < m), 2 * j + 1, 2 * j))
  after_text = jnp.where(j < m, 2 * j + 2, extra)
  stop_span = jnp.where(
      ~has_prev, 1,
      jnp.where(prev_end_pos | prev_end_neg, after_marker, after_text))
  span = jnp.where(stop, stop_span, span)
  return jnp.where(lm, span, 0).astype(jnp.int32)


def verdict_span_ids(*, correct_ids: Sequence[int], wrong_ids: Sequence[int],
                     stop_ids: Sequence[int], max_attempts: int,
                     skip_ids: Sequence[int] = ()) -> TrajectoryTransform:
  """Fills ``traj.span_ids`` of the verdict format from the token ids.

  Token in, token out: :func:`span_ids_from_markers` on device, no decoding.
  SPOC (arXiv:2506.06923) segments one completion into alternating solution
  and verification messages; these ids are that segmentation.

  Args:
    correct_ids: token ids of the positive verdict marker.
    wrong_ids: token ids of the negative verdict marker.
    stop_ids: ids that end a completion.
    max_attempts: M.
    skip_ids: ids that decode to no text (pad, bos).

  Returns:
    A stateless transform. Metrics: 'spans/attempts_mean' (attempt spans
    with tokens per valid sample), 'spans/frac_extra' (valid samples with
    text after the M-th verdict).
  """
  correct_ids, wrong_ids = tuple(correct_ids), tuple(wrong_ids)
  stop_ids, skip_ids = tuple(stop_ids), tuple(skip_ids)

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    ids = span_ids_from_markers(traj.tokens, traj.loss_mask,
                                correct_ids=correct_ids, wrong_ids=wrong_ids,
                                stop_ids=stop_ids, max_attempts=max_attempts,
                                skip_ids=skip_ids)
    s = 2 * max_attempts + 1
    present = _present(ids, traj.loss_mask, s)          # [B, S]
    v = traj.valid.astype(jnp.float32)
    nv = jnp.maximum(jnp.sum(v), 1.0)
    attempts = jnp.sum(present[:, 0:2 * max_attempts:2], axis=1)
    metrics = {
        "spans/attempts_mean": jnp.sum(attempts * v) / nv,
        "spans/frac_extra": jnp.sum(present[:, -1] * v) / nv,
    }
    return traj.replace(span_ids=ids), metrics

  return stateless(fn)


# ------------------------------------------------------------- advantages
def _present(span_ids: Array, loss_mask: Array, num_spans: int) -> Array:
  """f32[B, S]: 1 where span s (column s − 1) has at least one loss token."""
  onehot = (span_ids[:, :, None] == jnp.arange(1, num_spans + 1)) & loss_mask[
      :, :, None]
  return jnp.any(onehot, axis=1).astype(jnp.float32)


def span_reward_matrix(traj: Trajectory, num_spans: int, *,
                       reward_offset: int = 0) -> tuple[Array, Array]:
  """(r f32[B, S], present bool[B, S]) of the spans of every sample.

  ``r[b, s−1] = traj.rewards[b, reward_offset + s − 1]``; ``present`` = the
  span has a loss token, a finite reward, and the sample is valid.
  """
  if traj.rewards is None or traj.span_ids is None:
    raise ValueError("span transforms need traj.rewards and traj.span_ids")
  rew = jnp.asarray(traj.rewards, jnp.float32)
  if rew.shape[1] < reward_offset + num_spans:
    raise ValueError(f"rewards have K={rew.shape[1]} columns; spans need "
                     f"{reward_offset + num_spans}")
  r = rew[:, reward_offset:reward_offset + num_spans]
  present = (_present(traj.span_ids, traj.loss_mask, num_spans) > 0) & (
      jnp.isfinite(r)) & traj.valid[:, None]
  return jnp.where(present, r, 0.0), present


def span_group_normalize(r: Array, present: Array, group_ids: Array,
                         keys: Array, num_keys: int, *, scale: Scale = "group",
                         eps: float = TRL_EPS) -> Array:
  """f32[B, S]: (r − μ) / (σ + eps) with μ, σ over the group's spans of a key.

  For sample b and span s, the statistics pool every present span s′ of every
  sample of b's group with ``keys[s′] == keys[s]`` (a role, or the span
  itself). σ is the unbiased std over those values; a pool of one value gives
  A = 0 (TRL's singleton rule), a pool of equal values 0 (even with eps = 0);
  absent spans give 0. With role pooling a group of one sample still has a
  pool when the sample has several spans of that role (attempts 1 and 2).

  Args:
    r: f32[B, S] span rewards.
    present: bool[B, S].
    group_ids: int32[B].
    keys: int32[S] pooling key of each span, or int32[B, S] per sample.
    num_keys: number of distinct keys (keys in [0, num_keys)).
    scale: 'group' divides by σ + eps, 'none' only centres (Dr. GRPO).
    eps: added to σ.

  Returns:
    The per-span advantages.
  """
  if scale not in ("group", "none"):
    raise ValueError(f"scale={scale!r}; expected 'group' or 'none'")
  pm = present.astype(jnp.float32)
  keys = jnp.broadcast_to(jnp.asarray(keys, jnp.int32), r.shape)  # [B, S]
  onehot = (keys[:, :, None] == jnp.arange(num_keys)).astype(
      jnp.float32)                                          # [B, S, R]
  per_b = lambda x: jnp.einsum("bs,bsr->br", x, onehot)     # [B, R]
  back = lambda x: jnp.einsum("br,bsr->bs", x, onehot)      # [B, S]
  cnt = group_sum(per_b(pm), group_ids)                     # [B, R]
  tot = group_sum(per_b(r * pm), group_ids)
  mean_s = back(tot / jnp.maximum(cnt, 1.0))
  cnt_s = back(cnt)
  dev = jnp.where(present, r - mean_s, 0.0)
  var = group_sum(per_b(dev * dev), group_ids) / jnp.maximum(cnt - 1.0, 1.0)
  std_s = back(jnp.sqrt(var))
  denom = std_s + eps
  adv = (dev / jnp.where(denom > 0, denom, 1.0)) if scale == "group" else dev
  return jnp.where(present & (cnt_s > 1), adv, 0.0)


def span_advantages(*, num_spans: int, roles: Sequence[int],
                    normalize: Normalize = "role", scale: Scale = "group",
                    eps: float = TRL_EPS,
                    role_weights: Optional[Sequence[float]] = None,
                    reward_offset: int = 0,
                    outcome_column: Optional[int] = None,
                    outcome_coef: float = 0.0,
                    split_verdicts_by_truth: bool = False
                    ) -> TrajectoryTransform:
  r"""Per-span group-normalised advantages applied to the span's tokens.

  SPOC (Zhao et al. 2025, arXiv:2506.06923, online RL with message-level
  rewards) and self-rewarding correction (Xiong et al. 2025,
  arXiv:2502.19613): each solution span is rewarded for correctness, each
  verification span for matching the true correctness of the preceding
  solution. The exact estimator is not in the abstracts; this is the GRPO
  (arXiv:2402.03300, §4.1.2) group normalisation applied per span pool
  (general-knowledge reading, GK)::

      A_{i,s} = (r_{i,s} − mean P(g_i, s)) / (std P(g_i, s) + eps)
      A_{i,t} = w_{role(s_t)} · A_{i,s_t}  [+ c · Â_i^{outcome}]

  where P(g, s) is the pool of rewards of present spans in group g with the
  same role as s (``normalize='role'``: all attempts of the group pooled, all
  verdicts pooled) or the same span id (``'span'``), std is unbiased, and
  pools of one value give 0. Optionally ``outcome_coef`` · the GRPO
  advantage of reward column ``outcome_column`` (e.g. the final answer) is
  added to every loss token. Span rewards are also written to
  ``token_rewards`` at the last token of each span (process rewards).

  ``split_verdicts_by_truth`` (jaxsi's option, not from the papers; needs
  the verdict layout: span 2k is the verdict of attempt 2k − 1) pools the
  verdicts of correct attempts (solution reward > 0.5) and of wrong attempts
  separately: each verdict is compared with the group's verdicts on attempts
  of the same truth, a class-conditional baseline. Once every verdict on a
  wrong attempt is "[wrong]" that pool has no variance and earns nothing,
  while "[wrong]" on a correct attempt is still punished. Measured
  (docs/self_verification.md): this does NOT stop a weak solver (most
  attempts wrong) from drifting to "always [wrong]" — the drift is rewarded
  inside the large wrong-attempt pool before it becomes constant.

  Tokens whose span has no finite reward (e.g. a mis-segmented completion)
  get 0 and are reported in 'span/frac_tokens_unrewarded'.

  Args:
    num_spans: S; span s reads reward column ``reward_offset + s − 1``.
    roles: S role ids (ints ≥ 0), e.g. ``jaxsi.data.spans.span_roles(M)``.
    normalize: 'role' or 'span' pooling.
    scale: 'group' (divide by σ + eps) or 'none'.
    eps: added to σ (TRL 1e-4).
    role_weights: per-role multiplier of the advantage (default 1).
    reward_offset: column of span 1 in ``traj.rewards``.
    outcome_column: reward column of an outcome (sequence) reward, or None.
    outcome_coef: weight c of its GRPO advantage.
    split_verdicts_by_truth: separate verdict pools for correct and wrong
      attempts (role pooling only; roles must be the verdict layout).

  Returns:
    A stateless transform writing ``advantages`` and ``token_rewards``.
    Metrics: 'span/adv_abs_mean', 'span/role{r}/reward_mean',
    'span/role{r}/adv_abs_mean', 'span/frac_tokens_unrewarded'.
  """
  roles = tuple(int(x) for x in roles)
  if len(roles) != num_spans:
    raise ValueError(f"span_advantages: {len(roles)} roles for {num_spans} spans")
  if normalize not in ("role", "span"):
    raise ValueError(f"normalize={normalize!r}; expected 'role' or 'span'")
  num_roles = max(roles) + 1
  weights = (jnp.ones((num_roles,), jnp.float32) if role_weights is None
             else jnp.asarray(role_weights, jnp.float32))
  if weights.shape != (num_roles,):
    raise ValueError(f"role_weights: {weights.shape[0]} weights for "
                     f"{num_roles} roles")
  role_arr = jnp.asarray(roles, jnp.int32)
  if normalize == "role":
    keys, num_keys = role_arr, num_roles
  else:
    keys, num_keys = jnp.arange(num_spans, dtype=jnp.int32), num_spans
  if split_verdicts_by_truth:
    if normalize != "role" or roles[:2] != (0, 1) or num_roles != 2:
      raise ValueError("split_verdicts_by_truth needs normalize='role' and the"
                       " verdict layout roles (0, 1, 0, 1, …)")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    r, present = span_reward_matrix(traj, num_spans,
                                    reward_offset=reward_offset)
    pool_keys, pool_n = keys, num_keys
    if split_verdicts_by_truth:
      # Key 2 = verdict of a wrong attempt (the preceding solution span).
      prev_sol = jnp.pad(r[:, :-1], ((0, 0), (1, 0)))
      wrong = (role_arr[None, :] == 1) & (prev_sol <= 0.5)
      pool_keys, pool_n = jnp.where(wrong, 2, role_arr[None, :]), 3
    adv_s = span_group_normalize(r, present, traj.group_ids, pool_keys, pool_n,
                                 scale=scale, eps=eps)
    adv_s = adv_s * weights[role_arr][None, :]
    sid = traj.span_ids
    col = jnp.clip(sid - 1, 0, num_spans - 1)
    in_range = (sid >= 1) & (sid <= num_spans)
    smask = traj.sample_mask > 0
    tok_adv = jnp.where(in_range & smask,
                        jnp.take_along_axis(adv_s, col, axis=1), 0.0)
    tok_present = jnp.where(in_range,
                            jnp.take_along_axis(present, col, axis=1), False)
    if outcome_column is not None and outcome_coef:
      from jaxsi.transforms.advantages import group_normalize  # pylint: disable=g-import-not-at-top
      out = jnp.asarray(traj.rewards, jnp.float32)[:, outcome_column]
      ok = traj.valid & jnp.isfinite(out)
      a_out = group_normalize(out, traj.group_ids, ok, scale=(
          "group" if scale == "group" else "none"), eps=eps)
      tok_adv = tok_adv + outcome_coef * jnp.where(smask, a_out[:, None], 0.0)
    # Span reward at the last token of each span.
    nxt = jnp.pad(sid[:, 1:], ((0, 0), (0, 1)), constant_values=0)
    nxt_lm = jnp.pad(traj.loss_mask[:, 1:], ((0, 0), (0, 1)))
    last = in_range & traj.loss_mask & ((nxt != sid) | ~nxt_lm)
    tok_r = jnp.where(last & tok_present,
                      jnp.take_along_axis(r, col, axis=1), 0.0)
    pm = present.astype(jnp.float32)
    metrics = {
        "span/adv_abs_mean": _masked_mean(jnp.abs(adv_s), pm),
        "span/frac_tokens_unrewarded": _masked_mean(
            (~tok_present).astype(jnp.float32),
            (smask & in_range).astype(jnp.float32)),
    }
    for k in range(num_roles):
      rm = pm * (role_arr == k)[None, :]
      metrics[f"span/role{k}/reward_mean"] = _masked_mean(r, rm)
      metrics[f"span/role{k}/adv_abs_mean"] = _masked_mean(jnp.abs(adv_s), rm)
    return (traj.replace(advantages=tok_adv.astype(jnp.float32),
                         token_rewards=tok_r.astype(jnp.float32)), metrics)

  return stateless(fn)


def _masked_mean(x: Array, m: Array) -> Array:
  return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def drop_zero_advantage_groups() -> TrajectoryTransform:
  """Marks groups whose every token advantage is 0 as ``valid = False``.

  The span analogue of DAPO's zero-variance filter (arXiv:2503.14476, Eq. 11):
  a group in which no span pool has reward variance gives no gradient, and
  keeping it only dilutes the per-sequence average of the loss. Metric
  'filter/frac_dropped' (fraction of valid samples dropped).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.advantages is None:
      raise ValueError("drop_zero_advantage_groups: compute advantages first")
    signal = jnp.any((traj.advantages != 0) & traj.loss_mask, axis=1)
    any_signal = group_sum(signal.astype(jnp.float32), traj.group_ids) > 0
    drop = traj.valid & ~any_signal
    v = traj.valid.astype(jnp.float32)
    frac = jnp.sum(drop.astype(jnp.float32)) / jnp.maximum(jnp.sum(v), 1.0)
    return traj.replace(valid=traj.valid & any_signal), {
        "filter/frac_dropped": frac}

  return stateless(fn)
