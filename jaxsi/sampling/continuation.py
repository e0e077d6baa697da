r"""Judging (or any follow-up prompt) by continuing a generation's KV cache.

A self-judge (Self-Rewarding LMs, Yuan et al. 2024, arXiv:2401.10020, §2.2)
reads the question and the candidate again: with the miniature judging
template ``{prompt}{completion}|score:`` the judging prompt of a candidate is
the candidate's own context (prompt + completion) followed by a fixed
suffix. Re-encoding it prefills every candidate row from scratch — R·N rows
of prompt + completion + suffix tokens, N times the prompt rows the
generation prefilled, in a longer prompt bucket — so judging cost more than
the generation itself (issue #15 item 9: 2.76× on the round benchmark).

When the judge is the sampling model with the sampling parameters and the
template is a *continuation* (:func:`suffix_of`: it starts with
``{prompt}{completion}`` and has no other field), the judgment is decoded
from the generation's cache instead: the stop token that ended each
completion is masked out of the trajectory and the cache
(:func:`strip_stop`: the judging prompt text has no EOS between the
completion and the suffix, and positions are counted over unmasked tokens,
so the suffix gets the positions it has in the re-encoded prompt), the
suffix is injected and the judgment decoded
(``sampler.continue_sampling``). Only the suffix and the judgment run through
the model. Up to float rounding this equals judging the re-encoded prompt
(``sampler.continue_sampling``'s equivalence; tested against the re-encoded
path in tests/sampling/test_continuation.py) whenever the tokenizer encodes
``prompt + completion`` as ``encode(prompt) + tokens(completion)`` (a
character tokenizer always does; a BPE tokenizer may merge across the
boundary, so the continuation judges the *sampled* tokens exactly, the
re-encoded path a re-tokenisation of their text).
"""

from __future__ import annotations

import string
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.sampling import sampler as sampler_lib


def suffix_of(template: str) -> Optional[str]:
  """The text a continuation template appends to ``{prompt}{completion}``.

  Returns:
    The suffix (``'|score:'`` for ``'{prompt}{completion}|score:'``, with
    ``{{``/``}}`` unescaped), or None when ``template`` is not a continuation
    (it does not start with the two fields, or names another field such as
    ``{answer}``), i.e. the judging prompt must be encoded from scratch.
  """
  head = "{prompt}{completion}"
  if not template.startswith(head):
    return None
  rest = template[len(head):]
  if any(name is not None for _, name, _, _ in string.Formatter().parse(rest)):
    return None
  return rest.format()


def strip_stop(traj: Any, cache: Any, stop_ids: Sequence[int]) -> tuple[Any, Any]:
  """Masks each completion's stop token out of ``traj`` and its ``cache``.

  Args:
    traj: a sampler trajectory (host or device) whose columns are the cache
      slots (``sampler.generate`` / ``continue_generate`` outputs).
    cache: the KVCache returned with it.
    stop_ids: the stop token ids (only completion tokens, ``loss_mask``,
      are stripped; a prompt token equal to a stop id is kept).

  Returns:
    (traj with the stop tokens out of ``input_mask`` and ``loss_mask``,
    cache with those slots masked). Continuing from these, the next token's
    position is the number of remaining real tokens, as if the text had no
    stop token.
  """
  tokens = np.asarray(traj.tokens)
  loss = np.asarray(traj.loss_mask, bool)
  stop = loss & np.isin(tokens, np.asarray(list(stop_ids), tokens.dtype))
  if not stop.any():
    return traj, cache
  keep = ~stop
  traj = traj.replace(input_mask=np.asarray(traj.input_mask, bool) & keep,
                      loss_mask=loss & keep)
  cache = cache.replace(mask=jnp.logical_and(cache.mask, jnp.asarray(keep)))
  return traj, cache


def continue_texts(model: Any, params: Any, traj: Any, cache: Any, suffix: Sequence[int], *,
                   tokenizer: Any, max_new_tokens: int, strategy: Any,
                   rng: jax.Array, stop_ids: Sequence[int], pad_id: int) -> list[str]:
  """Decoded texts of one new turn after ``suffix`` on every row.

  Args:
    model, params: the model and parameters ``traj`` was sampled with.
    traj, cache: a trajectory and its cache (see :func:`strip_stop`).
    suffix: the injected token ids (the same for every row).
    tokenizer: decodes the new turn.
    max_new_tokens: the new turn's budget.
    strategy: its sampling strategy (greedy for a judge).
    rng: PRNG key.
    stop_ids: stop ids of the new turn.
    pad_id: padding id.

  Returns:
    One text per row of ``traj`` (the new turn only).
  """
  suffix = [int(x) for x in suffix]
  if not suffix:
    raise ValueError("continue_texts: the suffix is empty (nothing marks the new turn)")
  traj, cache = strip_stop(traj, cache, stop_ids)
  out = sampler_lib.continue_sampling(
      model, params, traj, cache, [suffix] * traj.batch_size, rng=rng,
      strategy=strategy, max_new_tokens=int(max_new_tokens), stop_ids=stop_ids,
      pad_id=pad_id)
  out = jax.device_get(out)
  start = traj.tokens.shape[1]
  tokens = np.asarray(out.tokens)[:, start:]
  mask = np.asarray(out.loss_mask, bool)[:, start:]
  return [tokenizer.decode(row[m].tolist()) for row, m in zip(tokens, mask)]


__all__ = ["continue_texts", "strip_stop", "suffix_of"]
