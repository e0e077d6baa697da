"""Sampling strategies: frozen dataclasses that turn next-token logits into tokens.

Every strategy is a static, hashable frozen dataclass (it is a static argument of
the jitted sampler, so two equal strategies share one compilation) with pure
methods over the last (vocabulary) axis of ``logits``:

* ``logits_mask(logits) -> bool[..., V]``: the tokens that may be drawn.
* ``log_probs(logits) -> f32[..., V]``: log of the distribution actually sampled
  from (temperature applied, masked tokens ``-inf``, renormalised).
* ``sample(logits, rng) -> (int32[...], f32[...])``: the drawn tokens and their
  log-probability under ``log_probs`` (the *behaviour* log-prob).
* ``tempered_log_probs(logits) -> f32[..., V]``: log-softmax of
  ``logits / temperature`` without any truncation mask.

The general strategy is :class:`Sampling` (temperature + optional top-k, top-p and
min-p, all static); :class:`Temperature`, :class:`TopK`, :class:`TopP` and
:class:`MinP` are named presets of it, and :class:`Greedy` is argmax decoding.

Order of operations (the same for every preset): ``x = logits / temperature``,
then the top-k mask, then the top-p mask on the top-k-renormalised
distribution, then the min-p mask; the final mask is the intersection. The
argmax token always survives every mask.

Ties: top-k keeps every token whose logit equals the k-th largest (so more than
k tokens survive when the k-th value is tied); top-p keeps every token whose
probability equals that of the last token of the nucleus; min-p's comparison
``p >= p_min · p_max`` is inclusive. The drawn token then follows
``jax.random.categorical``; greedy picks the lowest index among tied maxima.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Optional, Protocol, Tuple, runtime_checkable

import jax
import jax.numpy as jnp

Array = jax.Array

_NEG_INF = -jnp.inf


# --------------------------------------------------------------------- masks
def top_k_mask(logits: Array, *, k: int) -> Array:
  """Keeps the ``k`` largest logits along the last axis.

  Args:
    logits: f32[..., V].
    k: number of tokens to keep (>= 1); ``k >= V`` keeps everything.

  Returns:
    bool[..., V]; tokens tied with the k-th largest logit are all kept.
  """
  if k < 1:
    raise ValueError(f"top_k_mask: k must be >= 1, got {k}")
  if k >= logits.shape[-1]:
    return jnp.ones(logits.shape, bool)
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return logits >= kth


def top_p_mask(logits: Array, *, p: float) -> Array:
  """Nucleus mask: the smallest set of most likely tokens with Σ prob >= p.

  Tokens are taken in decreasing order of probability (softmax of ``logits``;
  ``-inf`` entries have probability 0) until the cumulative probability reaches
  ``p``. The most likely token is always kept (even for tiny ``p``).

  Args:
    logits: f32[..., V].
    p: nucleus mass in (0, 1]; ``p >= 1`` keeps every token of nonzero mass.

  Returns:
    bool[..., V]; tokens whose probability equals that of the last token of the
    nucleus are all kept.
  """
  if not 0.0 < p:
    raise ValueError(f"top_p_mask: p must be > 0, got {p}")
  sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  cum = jnp.cumsum(probs, axis=-1)
  # Mass strictly before each sorted token; a token is in the nucleus iff the
  # tokens before it have not reached p yet (a prefix of the sorted order).
  before = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], -1)
  n_keep = jnp.maximum(jnp.sum(before < p, axis=-1, keepdims=True), 1)
  threshold = jnp.take_along_axis(sorted_logits, n_keep - 1, axis=-1)
  return ((logits >= threshold) & (logits > _NEG_INF)) | (
      logits == jnp.max(logits, axis=-1, keepdims=True))


def min_p_mask(logits: Array, *, p_min: float) -> Array:
  """Min-p mask: keeps tokens with ``prob >= p_min · max prob``.

  Computed in log space: ``logit - max_logit >= log(p_min)`` (the softmax
  normaliser cancels), so it is exact for any masked/unnormalised logits.

  Args:
    logits: f32[..., V].
    p_min: relative threshold in [0, 1]; 0 keeps everything.

  Returns:
    bool[..., V]; the comparison is inclusive, the argmax is always kept.
  """
  if not 0.0 <= p_min <= 1.0:
    raise ValueError(f"min_p_mask: p_min must be in [0, 1], got {p_min}")
  if p_min == 0.0:
    return jnp.ones(logits.shape, bool)
  top = jnp.max(logits, axis=-1, keepdims=True)
  return (logits - top >= math.log(p_min)) | (logits == top)


def _masked_log_softmax(x: Array, mask: Array) -> Array:
  return jax.nn.log_softmax(jnp.where(mask, x, _NEG_INF), axis=-1)


def _take(log_probs: Array, tokens: Array) -> Array:
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


# ---------------------------------------------------------------- strategies
@runtime_checkable
class Strategy(Protocol):
  """What the sampler needs from a strategy (see the module docstring).

  Implementations are frozen (hashable) dataclasses: the sampler passes them
  as static jit arguments.
  """

  def logits_mask(self, logits: Array) -> Array:
    """bool[..., V]: tokens that may be drawn."""

  def log_probs(self, logits: Array) -> Array:
    """f32[..., V]: log of the distribution sampled from."""

  def tempered_log_probs(self, logits: Array) -> Array:
    """f32[..., V]: log-softmax of logits / temperature, no truncation."""

  def sample(self, logits: Array, rng: Array) -> Tuple[Array, Array]:
    """(int32[...] drawn tokens, f32[...] their log-probs under log_probs)."""


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding (lowest index among tied maxima).

  The distribution actually sampled from is a point mass, whose log-prob (0)
  carries no information; ``sample`` therefore reports the log-prob of the
  chosen token under the model's untruncated temperature-1 distribution,
  ``log_softmax(logits)[token]`` (so greedy behaviour log-probs equal what a
  scorer at temperature 1 computes). ``log_probs`` is that distribution too.
  """

  def logits_mask(self, logits: Array) -> Array:
    return logits == jnp.max(logits, axis=-1, keepdims=True)

  def log_probs(self, logits: Array) -> Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

  def tempered_log_probs(self, logits: Array) -> Array:
    return self.log_probs(logits)

  def sample(self, logits: Array, rng: Array) -> Tuple[Array, Array]:
    del rng  # Deterministic.
    logits = logits.astype(jnp.float32)
    tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return tokens, _take(self.log_probs(logits), tokens)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Ancestral sampling with temperature and optional top-k / top-p / min-p.

  All fields are static (part of the jit cache key). ``None`` disables a mask.
  Masks are applied in the order temperature → top-k → top-p (on the top-k
  renormalised distribution) → min-p, and intersected; the argmax always
  survives. ``sample`` returns log-probs under the distribution it drew from
  (temperature applied, masked tokens removed, renormalised).

  Attributes:
    temperature: > 0; logits are divided by it before anything else.
    top_k: keep the k most likely tokens (ties with the k-th all kept).
    top_p: nucleus mass in (0, 1]; 1 disables it.
    min_p: keep tokens with p >= min_p · p_max, in [0, 1]; 0 disables it.
  """

  temperature: float = 1.0
  top_k: Optional[int] = None
  top_p: Optional[float] = None
  min_p: Optional[float] = None

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(
          f"Sampling.temperature must be > 0 (use Greedy() for argmax), got "
          f"{self.temperature}")
    if self.top_k is not None and (not isinstance(self.top_k, int)
                                   or self.top_k < 1):
      raise ValueError(f"Sampling.top_k must be None or an int >= 1, got {self.top_k!r}")
    if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"Sampling.top_p must be None or in (0, 1], got {self.top_p!r}")
    if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
      raise ValueError(f"Sampling.min_p must be None or in [0, 1], got {self.min_p!r}")

  def _scaled(self, logits: Array) -> Array:
    logits = logits.astype(jnp.float32)
    if self.temperature != 1.0:
      logits = logits / self.temperature
    return logits

  def _mask_scaled(self, x: Array) -> Array:
    mask = jnp.ones(x.shape, bool)
    if self.top_k is not None:
      mask = mask & top_k_mask(x, k=self.top_k)
    if self.top_p is not None and self.top_p < 1.0:
      mask = mask & top_p_mask(jnp.where(mask, x, _NEG_INF), p=self.top_p)
    if self.min_p is not None and self.min_p > 0.0:
      mask = mask & min_p_mask(x, p_min=self.min_p)
    return mask

  def logits_mask(self, logits: Array) -> Array:
    return self._mask_scaled(self._scaled(logits))

  def log_probs(self, logits: Array) -> Array:
    x = self._scaled(logits)
    return _masked_log_softmax(x, self._mask_scaled(x))

  def tempered_log_probs(self, logits: Array) -> Array:
    return jax.nn.log_softmax(self._scaled(logits), axis=-1)

  def sample(self, logits: Array, rng: Array) -> Tuple[Array, Array]:
    log_probs = self.log_probs(logits)
    tokens = jax.random.categorical(rng, log_probs, axis=-1).astype(jnp.int32)
    return tokens, _take(log_probs, tokens)


# Named presets: each is a frozen dataclass that behaves exactly like the
# corresponding Sampling(...) (see `as_sampling`).
class _Preset(abc.ABC):
  """A named preset delegating to an equivalent :class:`Sampling`."""

  def __post_init__(self):
    self.as_sampling()  # Validates the fields eagerly.

  @abc.abstractmethod
  def as_sampling(self) -> Sampling:
    """The general strategy this preset stands for."""

  def logits_mask(self, logits: Array) -> Array:
    return self.as_sampling().logits_mask(logits)

  def log_probs(self, logits: Array) -> Array:
    return self.as_sampling().log_probs(logits)

  def tempered_log_probs(self, logits: Array) -> Array:
    return self.as_sampling().tempered_log_probs(logits)

  def sample(self, logits: Array, rng: Array) -> Tuple[Array, Array]:
    return self.as_sampling().sample(logits, rng)


@dataclasses.dataclass(frozen=True)
class Temperature(_Preset):
  """Sampling from softmax(logits / temperature), no truncation."""

  temperature: float = 1.0

  def as_sampling(self) -> Sampling:
    return Sampling(temperature=self.temperature)


@dataclasses.dataclass(frozen=True)
class TopK(_Preset):
  """Top-k sampling (Fan et al., 2018): the k most likely tokens."""

  k: int
  temperature: float = 1.0

  def as_sampling(self) -> Sampling:
    return Sampling(temperature=self.temperature, top_k=self.k)


@dataclasses.dataclass(frozen=True)
class TopP(_Preset):
  """Nucleus sampling (Holtzman et al., 2020, "The Curious Case of Neural Text
  Degeneration"): the smallest set of tokens with cumulative probability >= p."""

  p: float
  temperature: float = 1.0

  def as_sampling(self) -> Sampling:
    return Sampling(temperature=self.temperature, top_p=self.p)


@dataclasses.dataclass(frozen=True)
class MinP(_Preset):
  """Min-p sampling (Nguyen et al., 2024, "Turning Up the Heat: Min-p
  Sampling"): tokens with probability >= p_min times the top probability."""

  p_min: float
  temperature: float = 1.0

  def as_sampling(self) -> Sampling:
    return Sampling(temperature=self.temperature, min_p=self.p_min)
