r"""Distillation objective terms: full-vocabulary divergences, top-k KD, sampled reverse KL.

Alignment: ``outputs.logits[b, t]`` (student) and
``traj.extras['teacher_logits'][b, t]`` (f32[B, T, V], teacher) are the logits
of the distribution that PRODUCED token ``tokens[b, t]`` — aligned exactly like
``logprobs`` (so position t's logits are the model output at position t − 1;
row t = 0 is ignored by the mask). Top-k teachers give
``traj.extras['teacher_topk_ids']`` int32[B, T, K] and
``['teacher_topk_logprobs']`` f32[B, T, K] with the same alignment.
Tokens count where ``traj.loss_mask & traj.valid``; ``traj.weights`` scale rows.
"""

from __future__ import annotations

import functools

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation, kl
from jaxsi.transforms.base import ModelOutputs

Array = jax.Array
sg = jax.lax.stop_gradient

TEACHER_LOGITS_KEY = "teacher_logits"
TOPK_IDS_KEY = "teacher_topk_ids"
TOPK_LOGPROBS_KEY = "teacher_topk_logprobs"
TOPK_TAIL_KEY = "teacher_topk_tail_logprob"   # f32[B, T]: log of the rest's mass


def _kl(log_p: Array, log_q: Array) -> Array:
  """Σ_v p (log p − log q) over the last axis (0·log 0 = 0)."""
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


def generalized_jsd(
    student_logits: Array,
    teacher_logits: Array,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Array:
  r"""Per-position generalised JSD_β of TRL GKD (Agarwal et al. 2024, arXiv:2306.13649).

  S = log_softmax(z_s/τ), Tt = log_softmax(z_t/τ);
  β = 0: KL(teacher ‖ student) (forward KL); β = 1: KL(student ‖ teacher)
  (reverse KL); else M = log((1−β)e^S + βe^Tt) and
  JSD_β = β·KL(teacher ‖ M) + (1−β)·KL(student ‖ M).
  Matches TRL 1.10 ``GKDTrainer.generalized_jsd_loss`` before reduction.

  Args:
    student_logits: f32[..., V].
    teacher_logits: f32[..., V].
    beta: β in [0, 1].
    temperature: τ.

  Returns:
    f32[...] divergence per position.
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return generalized_jsd_logprobs(s, t, beta=beta)


def generalized_jsd_logprobs(s: Array, t: Array, *, beta: float = 0.5) -> Array:
  r"""JSD_β of :func:`generalized_jsd` from normalised log-probs (last axis).

  Args:
    s: f32[..., C] student log-probs (Σ exp = 1).
    t: f32[..., C] teacher log-probs.
    beta: β in [0, 1].

  Returns:
    f32[...].
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  if beta == 0.0:
    return _kl(t, s)
  if beta == 1.0:
    return _kl(s, t)
  mix = jnp.logaddexp(s + np.log1p(-beta), t + np.log(beta))
  return beta * _kl(t, mix) + (1.0 - beta) * _kl(s, mix)


def token_divergence(
    *,
    kind: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Full-vocabulary distillation term L = agg_t D(student_t, teacher_t).

  kind: 'forward_kl' = KL(teacher ‖ student) (= JSD with β=0),
  'reverse_kl' = KL(student ‖ teacher) (β=1), 'jsd' = generalised JSD_β.
  With agg='token-mean' this is TRL GKD's "batchmean" reduction (Σ / #tokens;
  pass ``num_tokens`` for TRL's num_items_in_batch normalisation). The teacher
  logits are stop-gradient.

  Args:
    kind: 'forward_kl' | 'reverse_kl' | 'jsd'.
    beta: β of the JSD.
    temperature: τ applied to both logits.
    agg, max_len, num_tokens, num_sequences: aggregation.

  Returns:
    An objective term; metric ``divergence`` (token mean).
  """
  b = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": beta}.get(kind)
  if b is None:
    raise ValueError(f"kind must be forward_kl|reverse_kl|jsd, got {kind!r}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.logits is None or TEACHER_LOGITS_KEY not in traj.extras:
      raise ValueError("token_divergence needs outputs.logits and"
                       " traj.extras['teacher_logits']")
    teacher = sg(jnp.asarray(traj.extras[TEACHER_LOGITS_KEY]))
    d = generalized_jsd(outputs.logits, teacher, beta=b, temperature=temperature)
    loss = aggregation.aggregate_trajectory(
        d, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return loss, {"divergence": aggregation.masked_token_mean(sg(d), traj)}

  term.needs_logits = True   # the loop's update computes outputs.logits
  return term


def topk_distillation(
    *,
    temperature: float = 1.0,
    renormalize: bool = True,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Top-k logit distillation (forward KL on the teacher's top-k support).

  q_k = softmax_k(ℓ^T_k/τ) over the K stored teacher log-probs
  (``renormalize=True``) or q_k = exp(ℓ^T_k) (``False``, needs τ = 1; the
  missing tail mass is dropped); log p_k = log_softmax(z_s/τ)[id_k];
  ℓ_t = Σ_k q_k (log q_k − log p_k). With K = V and renormalize this equals
  forward KL(teacher ‖ student) (tested).

  Args:
    temperature: τ.
    renormalize: renormalise teacher probabilities over the top-k.
    agg, max_len, num_tokens, num_sequences: aggregation.

  Returns:
    An objective term; metric ``divergence``.
  """
  if not renormalize and temperature != 1.0:
    raise ValueError("topk_distillation: temperature != 1 needs renormalize=True")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.logits is None or TOPK_IDS_KEY not in traj.extras or \
        TOPK_LOGPROBS_KEY not in traj.extras:
      raise ValueError("topk_distillation needs outputs.logits and traj.extras"
                       " ['teacher_topk_ids'], ['teacher_topk_logprobs']")
    ids = jnp.asarray(traj.extras[TOPK_IDS_KEY], jnp.int32)
    tlp = sg(jnp.asarray(traj.extras[TOPK_LOGPROBS_KEY], jnp.float32))
    if renormalize:
      log_q = jax.nn.log_softmax(tlp / temperature, axis=-1)
    else:
      log_q = tlp
    log_s = jax.nn.log_softmax(outputs.logits.astype(jnp.float32) / temperature, axis=-1)
    log_p = jnp.take_along_axis(log_s, ids, axis=-1)
    d = _kl_pair(log_q, log_p)
    loss = aggregation.aggregate_trajectory(
        d, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return loss, {"divergence": aggregation.masked_token_mean(sg(d), traj)}

  term.needs_logits = True   # the loop's update computes outputs.logits
  return term


def _kl_pair(log_q: Array, log_p: Array) -> Array:
  q = jnp.exp(log_q)
  return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)


def sampled_reverse_kl(
    *,
    estimator: str = "pg",
    importance: bool = False,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Reverse KL(π ‖ teacher) from the sampled tokens' log-probs only.

  d_t = ℓp_t − ℓp^T_t with ℓp = ``outputs.logprobs`` (student, on its own
  samples) and ℓp^T = ``traj.teacher_logprobs`` (stop-gradient). For on-policy
  distillation (Agarwal et al. 2024; Thinking Machines "On-Policy
  Distillation" 2025), KDRL (Xu et al. 2025, arXiv:2506.02208) and OPSD
  self-distillation under privileged context.

  * ``estimator='pg'`` (default): ℓ_t = sg[d_t] + sg[d_t]·(ℓp_t − sg[ℓp_t]);
    value = d_t (the k1 estimate), gradient = d_t·∇ℓp_t — REINFORCE with the
    per-token reward −d_t (discount 0), an unbiased per-token estimate of the
    reverse-KL gradient.
  * any :mod:`jaxsi.transforms.kl` estimator name ('k1', 'k2', 'k3', …, '+'):
    ℓ_t = k(ℓp_t, ℓp^T_t) differentiated path-wise (k2's gradient equals the
    'pg' gradient; k1's path-wise gradient is zero in expectation).

  ``importance=True`` ('pg' only) corrects for samples drawn by the pre-update
  policy π_old (``traj.old_logprobs``) when a batch feeds several updates
  (epochs × minibatches): ℓ_t = sg[ρ_t d_t] + sg[ρ_t d_t]·(ℓp_t − sg[ℓp_t])
  with ρ_t = exp(ℓp_t − ℓp^old_t), so the gradient ρ_t d_t ∇ℓp_t is an
  unbiased estimate of ∇KL(π_θ ‖ teacher) under π_old samples (Skill-SD's
  importance-weighted reverse KL, seeds catalog_02 [20]; GK: the form is
  derived here, not read from the paper). At ρ = 1 (the first update of a
  batch) it equals 'pg'.

  Args:
    estimator: 'pg' or a KL estimator name.
    importance: weight by the importance ratio to ``traj.old_logprobs``.
    agg, max_len, num_tokens, num_sequences: aggregation.

  Returns:
    An objective term; metric ``reverse_kl`` (token mean of d).
  """
  if estimator != "pg":
    kl.validate_estimator(estimator)
    if importance:
      raise ValueError("sampled_reverse_kl: importance=True needs estimator='pg',"
                       f" got {estimator!r}")

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.teacher_logprobs is None:
      raise ValueError("sampled_reverse_kl needs traj.teacher_logprobs")
    if importance and traj.old_logprobs is None:
      raise ValueError("sampled_reverse_kl(importance=True) needs"
                       " traj.old_logprobs (importance.old_logprobs())")
    m = traj.loss_mask.astype(bool)
    lp = jnp.where(m, outputs.logprobs, 0.0)
    tlp = sg(jnp.where(m, traj.teacher_logprobs, 0.0))
    d = lp - tlp
    if estimator == "pg" and importance:
      rho = jnp.exp(lp - sg(jnp.where(m, traj.old_logprobs, 0.0)))
      w = sg(rho * d)
      loss_bt = w + w * (lp - sg(lp))
    elif estimator == "pg":
      loss_bt = sg(d) + sg(d) * (lp - sg(lp))
    else:
      loss_bt = kl.kl_estimate(lp, tlp, estimator=estimator)
    loss = aggregation.aggregate_trajectory(
        loss_bt, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    return loss, {"reverse_kl": aggregation.masked_token_mean(sg(d), traj)}

  return term


def _log1mexp_sum(lp: Array) -> Array:
  """log(1 − Σ_k exp(lp_k)) over the last axis, floored where the sum is ≥ 1."""
  tail = 1.0 - jnp.sum(jnp.exp(lp), axis=-1)
  return jnp.where(tail > 0, jnp.log(jnp.maximum(tail, 1e-30)), LOG_FLOOR)


LOG_FLOOR = -1e4   # log of an (effectively) empty bucket; exp(LOG_FLOOR) = 0


def tail_logprob(logits: Array, ids: Array) -> Array:
  r"""log Σ_{v ∉ ids} softmax(z)_v, exactly (a logsumexp over the other ids).

  Args:
    logits: f32[..., V].
    ids: int32[..., K] (distinct ids).

  Returns:
    f32[...], floored at ``LOG_FLOOR`` (an empty tail, K = V, gives the floor:
    exp(LOG_FLOOR) = 0 in f32).
  """
  z = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, axis=-1)
  flat_z = z.reshape((-1, z.shape[-1]))
  flat_i = ids.reshape((-1, ids.shape[-1]))
  in_topk = jax.vmap(lambda i: jnp.zeros((z.shape[-1],), bool).at[i].set(True))(flat_i)
  rest = jnp.where(in_topk, -1e30, flat_z).reshape(z.shape)
  return jnp.maximum(jax.nn.logsumexp(rest, axis=-1) - lse, LOG_FLOOR)


def topk_bucket_logprobs(student_logits: Array, ids: Array, teacher_lp: Array,
                         *, tail: bool = True, teacher_tail: Optional[Array] = None):
  r"""Student and teacher log-probs over the teacher's top-k ids (+ a tail).

  ``tail=True``: K + 1 buckets — the K ids and "every other token", with
  log p_tail = :func:`tail_logprob` of the student logits (exact) and the
  teacher's ``teacher_tail`` (stored by ``teacher_logits.teacher_topk``;
  if None, log(1 − Σ_k q_k), which carries f32 rounding error ~1e-7 that
  matters when the student's tail is tiny). Merging outcomes can only shrink
  an f-divergence (data processing), so this is a lower bound of the
  full-vocabulary one and equals it when K = V (tail mass 0; tested).
  ``tail=False``: both distributions renormalised over the K ids.

  Args:
    student_logits: f32[B, T, V] (already divided by the temperature).
    ids: int32[B, T, K] teacher top-k ids.
    teacher_lp: f32[B, T, K] teacher full-softmax log-probs of ``ids``.
    tail: keep the tail bucket.
    teacher_tail: f32[B, T] teacher log tail mass, or None.

  Returns:
    (f32[B, T, C] student, f32[B, T, C] teacher) log-probs, C = K + tail.
  """
  z = student_logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, axis=-1, keepdims=True)
  s_k = jnp.take_along_axis(z, ids, axis=-1) - lse
  t_k = jnp.asarray(teacher_lp, jnp.float32)
  if not tail:
    return (jax.nn.log_softmax(s_k, axis=-1), jax.nn.log_softmax(t_k, axis=-1))
  s_tail = tail_logprob(z, ids)
  t_tail = (_log1mexp_sum(t_k) if teacher_tail is None
            else jnp.asarray(teacher_tail, jnp.float32))
  return (jnp.concatenate([s_k, s_tail[..., None]], axis=-1),
          jnp.concatenate([t_k, t_tail[..., None]], axis=-1))


TOPK_DIVERGENCE_KEY = "topk_jsd/divergence"
TOPK_MASS_KEY = "topk_jsd/mass"


def topk_jsd_reducer(beta: float, tail: bool):
  """The per-chunk computation of :func:`topk_jsd` (``chunked=True``).

  ``fn(z f32[b, c, V], aux) -> {TOPK_DIVERGENCE_KEY, TOPK_MASS_KEY: f32[b, c]}``
  with ``aux`` the chunk's teacher ids / log-probs (/ tail); ``fn.keys`` names
  the ``traj.extras`` it reads (``models.logprobs.reduce_logits_from_hidden``).
  Cached per (β, tail), so equal settings give one function (one compiled step).
  """
  return _reducer(float(beta), bool(tail))


@functools.lru_cache(maxsize=None)
def _reducer(beta: float, tail: bool):
  def fn(z, aux):
    ids = jnp.asarray(aux[TOPK_IDS_KEY], jnp.int32)
    tlp = sg(jnp.asarray(aux[TOPK_LOGPROBS_KEY], jnp.float32))
    t_tail = aux.get(TOPK_TAIL_KEY)
    t_tail = None if t_tail is None else sg(jnp.asarray(t_tail, jnp.float32))
    s_lp, t_lp = topk_bucket_logprobs(z, ids, tlp, tail=tail, teacher_tail=t_tail)
    d = generalized_jsd_logprobs(s_lp, t_lp, beta=beta)
    k = ids.shape[-1]
    mass = jnp.sum(jnp.exp(s_lp[..., :k]), axis=-1) if tail else jnp.ones_like(d)
    return {TOPK_DIVERGENCE_KEY: d, TOPK_MASS_KEY: mass}
  fn.keys = (TOPK_IDS_KEY, TOPK_LOGPROBS_KEY, TOPK_TAIL_KEY) if tail else (
      TOPK_IDS_KEY, TOPK_LOGPROBS_KEY)
  return fn


def topk_jsd(
    *,
    beta: float = 0.5,
    tail: bool = True,
    chunked: bool = False,
    agg: str = "token-mean",
    max_len: Optional[int] = None,
    num_tokens=None,
    num_sequences=None,
):
  r"""Generalised JSD_β (GKD, arXiv:2306.13649) against a stored top-k teacher.

  The teacher is ``traj.extras['teacher_topk_ids']`` int32[B, T, K] and
  ``['teacher_topk_logprobs']`` f32[B, T, K] (full-softmax log-probs at the
  sampling temperature), optionally ``['teacher_topk_tail_logprob']`` f32[B, T]
  (the log-mass of the other ids; :func:`jaxsi.transforms.teacher_logits.teacher_topk`
  writes them chunk by chunk, so no [B, T, V] teacher array exists); the
  student is ``outputs.logits`` (the update's forward pass, already at the
  same temperature). Per position ℓ_t = JSD_β over the buckets of
  :func:`topk_bucket_logprobs` (β = 0 forward KL, β = 1 reverse KL, as
  :func:`generalized_jsd`); with K = V and ``tail=True`` it equals
  :func:`generalized_jsd` on full logits (tested).

  The returned term carries ``needs_logits = True``: the loop's update then
  computes ``outputs.logits`` (the student's [B, T, V]). With
  ``chunked=True`` it carries ``logits_reducer`` instead: the update computes
  ℓ_t chunk by chunk over T from the hidden states (each chunk's logits
  rematerialised in the backward pass), so no [B, T, V] array is alive; the
  loss and gradient are the same (tested). With ``tail=True`` the teacher's
  tail log-mass must be stored (``teacher_logits.teacher_topk`` does).

  Args:
    beta: β in [0, 1].
    tail: keep the tail bucket (else renormalise over the top-k).
    chunked: the memory-bounded path (above).
    agg, max_len, num_tokens, num_sequences: aggregation.

  Returns:
    An objective term; metrics ``divergence`` (token mean) and ``topk_mass``
    (mean student probability on the teacher's top-k).
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"topk_jsd: beta must be in [0, 1], got {beta}")

  if chunked:
    reducer = topk_jsd_reducer(beta, tail)

    def chunked_term(outputs: ModelOutputs, traj: Trajectory):
      if TOPK_DIVERGENCE_KEY not in outputs.extras:
        raise ValueError("topk_jsd(chunked=True) needs outputs.extras"
                         f"[{TOPK_DIVERGENCE_KEY!r}]: run it under an update"
                         " built with its logits_reducer (the loop and fit do)")
      d = outputs.extras[TOPK_DIVERGENCE_KEY]
      loss = aggregation.aggregate_trajectory(
          d, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
          num_sequences=num_sequences)
      return loss, {"divergence": aggregation.masked_token_mean(sg(d), traj),
                    "topk_mass": aggregation.masked_token_mean(
                        sg(outputs.extras[TOPK_MASS_KEY]), traj)}

    chunked_term.logits_reducer = reducer
    return chunked_term

  def term(outputs: ModelOutputs, traj: Trajectory):
    if outputs.logits is None or TOPK_IDS_KEY not in traj.extras or \
        TOPK_LOGPROBS_KEY not in traj.extras:
      raise ValueError("topk_jsd needs outputs.logits and traj.extras"
                       " ['teacher_topk_ids'], ['teacher_topk_logprobs']"
                       " (teacher_logits.teacher_topk)")
    ids = jnp.asarray(traj.extras[TOPK_IDS_KEY], jnp.int32)
    tlp = sg(jnp.asarray(traj.extras[TOPK_LOGPROBS_KEY], jnp.float32))
    t_tail = traj.extras.get(TOPK_TAIL_KEY)
    t_tail = None if t_tail is None else sg(jnp.asarray(t_tail, jnp.float32))
    s, t = topk_bucket_logprobs(outputs.logits, ids, tlp, tail=tail,
                                teacher_tail=t_tail)
    d = generalized_jsd_logprobs(s, t, beta=beta)
    loss = aggregation.aggregate_trajectory(
        d, traj, mode=agg, max_len=max_len, num_tokens=num_tokens,
        num_sequences=num_sequences)
    k = ids.shape[-1]
    mass = jnp.sum(jnp.exp(s[..., :k]), axis=-1) if tail else jnp.ones_like(d)
    return loss, {"divergence": aggregation.masked_token_mean(sg(d), traj),
                  "topk_mass": aggregation.masked_token_mean(sg(mass), traj)}

  term.needs_logits = True
  return term
