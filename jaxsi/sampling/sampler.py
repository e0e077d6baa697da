"""Autoregressive sampling: prefill + a jitted ``lax.while_loop`` decode.

Token in, token out. ``sample`` turns a list of prompts (token ids) into a
:class:`~jaxsi.trajectory.Trajectory` holding prompt + completion; decoding text
is the caller's job.

Layout of the returned trajectory (``B = rows · n``, ``T = P + G``)::

    column:  0 ........ P-1 | P ............ P+G-1
    row b:   pad pad p p p p | c c c c STOP pad pad
             (left-padded     (completion, right-padded
              prompt bucket)   to the generation bucket)

* Samples of prompt ``i`` are rows ``i·n … i·n+n-1`` with ``group_ids = i·n``
  and ``prompt_ids = i`` (or the given dataset ids).
* ``input_mask``: real tokens; ``positions``: counted over real tokens;
  ``loss_mask``: completion tokens up to and including the first stop token;
  ``turn_ids``: 0 prompt, k for the k-th model turn, -j for the j-th injected
  turn; ``behaviour_logprobs``: log-prob of each completion token under the
  distribution it was drawn from (see ``strategies``), 0 elsewhere.
* ``extras['finished']`` bool[B]: the (latest) turn ended with a stop token
  (False = truncated at ``max_new_tokens``); ``extras['completion_length']``
  int32[B]: tokens generated in the latest turn (stop token included);
  ``extras['tempered_logprobs']`` f32[B, T]: log-prob of each completion token
  under ``softmax(logits / temperature)`` without top-k/p/min-p truncation.

Compilation: the jitted cores are cached by jax per (model, strategy, n,
stop_ids, pad_id, generation bucket) and input shapes (row bucket, prompt
bucket). ``max_new_tokens`` is a traced scalar, so any value up to the
generation bucket reuses the compilation. With ``batch_buckets`` the number of
prompts is padded with dummy rows (``valid=False``, never decoded, loss_mask
empty) that are *returned* in the trajectory; without it (default) B is exactly
``len(prompts) · n`` and a new number of prompts compiles again.

Randomness: the token of row ``b`` at completion step ``s`` is drawn with
``fold_in(fold_in(rng, b), s)``, so a row's sample depends only on ``rng``, its
row index and its own history (not on the batch bucket).

Multi-turn: the KV cache slots are the trajectory's columns. ``continue_sampling``
appends an injected turn (e.g. feedback) for every row into the existing cache
and decodes the next model turn without re-encoding the conversation.
Short rows leave masked holes (``input_mask`` False) inside the conversation;
attention, positions and the cache skip them, and because every turn must
inject at least one token, every trained token directly follows a real token.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Optional, Sequence, Tuple, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import strategies as strategies_lib
from jaxsi.trajectory import TOKEN_FIELDS, Trajectory, positions_from_mask

Array = jax.Array

# How often each jitted core was traced (== compiled) in this process; tests
# and benchmarks read it through `trace_counts()`.
_TRACE_COUNTS: collections.Counter = collections.Counter()


def trace_counts() -> dict:
  """A copy of {core name: number of traces} ('generate', 'continue')."""
  return dict(_TRACE_COUNTS)


@flax.struct.dataclass
class DecodeState:
  """Loop state of one decoded turn.

  Attributes:
    step: int32[] completion tokens written so far (the loop index).
    tokens: int32[B, G] completion buffer (pad after a row is done).
    logprobs: f32[B, G] behaviour log-probs (0 after a row is done).
    tempered_logprobs: f32[B, G] log-probs under temperature only.
    done: bool[B] row emitted a stop token (or is a dummy/invalid row).
    finished: bool[B] row emitted a stop token.
    lengths: int32[B] real completion tokens (stop token included).
    base_positions: int32[B] position of completion token 0.
    row_keys: PRNG keys [B], one stream per row.
    logits: f32[B, V] next-token logits (for column ``step``).
    cache: the model's KVCache (slot ``cache.index`` is the next to write).
  """

  step: Array
  tokens: Array
  logprobs: Array
  tempered_logprobs: Array
  done: Array
  finished: Array
  lengths: Array
  base_positions: Array
  row_keys: Array
  logits: Array
  cache: Any


# ----------------------------------------------------------------- decoding
def _is_stop(tokens: Array, stop_ids: Tuple[int, ...]) -> Array:
  if not stop_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.asarray(stop_ids, jnp.int32))


def _draw(strategy, logits: Array, row_keys: Array, step: Array):
  """Samples one token per row: (tokens, behaviour logprobs, tempered logprobs)."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
  tokens, logprobs = jax.vmap(strategy.sample)(logits, keys)
  tempered = jnp.take_along_axis(
      strategy.tempered_log_probs(logits), tokens[:, None], axis=-1)[:, 0]
  return tokens, logprobs.astype(jnp.float32), tempered.astype(jnp.float32)


def _write(state: DecodeState, tokens, logprobs, tempered, *, stop_ids, pad_id):
  """Writes the tokens drawn at ``state.step`` for the rows still running."""
  alive = ~state.done
  col = state.step
  tokens = jnp.where(alive, tokens, pad_id)
  stop = alive & _is_stop(tokens, stop_ids)
  return state.replace(
      step=col + 1,
      tokens=state.tokens.at[:, col].set(tokens),
      logprobs=state.logprobs.at[:, col].set(jnp.where(alive, logprobs, 0.0)),
      tempered_logprobs=state.tempered_logprobs.at[:, col].set(
          jnp.where(alive, tempered, 0.0)),
      lengths=state.lengths + alive.astype(jnp.int32),
      finished=state.finished | stop,
      done=state.done | stop,
  )


def _decode_turn(model, params, strategy, *, cache, last_logits, base_positions,
                 done, row_keys, max_new_tokens, gen_length, stop_ids, pad_id
                 ) -> DecodeState:
  """Decodes one model turn: draw a token, feed it to the model, repeat.

  Each iteration draws the token of column ``step`` from ``state.logits``,
  writes it (pad for finished rows) and runs the one-token cached forward pass
  that yields the next logits. The loop stops when every row is done or
  ``max_new_tokens`` tokens were drawn, so every drawn token is in the cache.

  Args:
    model: the static Model.
    params: its params.
    strategy: a sampling strategy.
    cache: KVCache holding the conversation so far (index = next free slot).
    last_logits: f32[B, V] next-token logits after the conversation.
    base_positions: int32[B] position of the first completion token.
    done: bool[B] rows not to decode (dummy / invalid rows).
    row_keys: per-row PRNG keys [B].
    max_new_tokens: int32[] tokens to generate at most (clipped to
      [1, gen_length]).
    gen_length: static completion buffer length G.
    stop_ids: static stop token ids.
    pad_id: static padding id.

  Returns:
    The final DecodeState; its cache holds the conversation and the
    ``state.step`` drawn columns (index = conversation + step).
  """
  b = last_logits.shape[0]
  max_new = jnp.clip(jnp.asarray(max_new_tokens, jnp.int32), 1, gen_length)
  state = DecodeState(
      step=jnp.zeros((), jnp.int32),
      tokens=jnp.full((b, gen_length), pad_id, jnp.int32),
      logprobs=jnp.zeros((b, gen_length), jnp.float32),
      tempered_logprobs=jnp.zeros((b, gen_length), jnp.float32),
      done=done,
      finished=jnp.zeros((b,), bool),
      lengths=jnp.zeros((b,), jnp.int32),
      base_positions=base_positions,
      row_keys=row_keys,
      logits=last_logits.astype(jnp.float32),
      cache=cache,
  )

  def cond(state: DecodeState):
    return (state.step < max_new) & ~jnp.all(state.done)

  def body(state: DecodeState):
    col = state.step
    state = _write(state, *_draw(strategy, state.logits, state.row_keys, col),
                   stop_ids=stop_ids, pad_id=pad_id)
    token = jax.lax.dynamic_index_in_dim(state.tokens, col, axis=1)  # [B, 1]
    real = (col < state.lengths)[:, None]
    positions = (state.base_positions + col)[:, None]
    hidden, cache = model.apply(params, token, positions, input_mask=real,
                                cache=state.cache, return_hidden=True)
    return state.replace(cache=cache, logits=model.logits(params, hidden[:, -1]))

  return jax.lax.while_loop(cond, body, state)


def _prefill(model, params, cache, tokens, mask, base_positions):
  """Writes a left-padded chunk into the cache; returns (last logits, cache)."""
  positions = base_positions[:, None] + jnp.maximum(
      jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
  hidden, cache = model.apply(params, tokens, positions, input_mask=mask,
                              cache=cache, return_hidden=True)
  return model.logits(params, hidden[:, -1]), cache


def _repeat_rows(x: Array, n: int, axis: int = 0) -> Array:
  return x if n == 1 else jnp.repeat(x, n, axis=axis)


def _repeat_cache(cache, n: int):
  if n == 1:
    return cache
  return cache.replace(k=jnp.repeat(cache.k, n, axis=1),
                       v=jnp.repeat(cache.v, n, axis=1),
                       mask=jnp.repeat(cache.mask, n, axis=0))


def _grow_cache(cache, extra: int):
  """Appends ``extra`` empty (masked) slots to every cache row."""
  pad_kv = [(0, 0)] * cache.k.ndim
  pad_kv[2] = (0, extra)
  return cache.replace(k=jnp.pad(cache.k, pad_kv), v=jnp.pad(cache.v, pad_kv),
                       mask=jnp.pad(cache.mask, ((0, 0), (0, extra))))


def _row_keys(rng: Array, batch: int) -> Array:
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      rng, jnp.arange(batch, dtype=jnp.int32))


def _completion_fields(state: DecodeState):
  g = state.tokens.shape[1]
  gen_mask = jnp.arange(g, dtype=jnp.int32)[None, :] < state.lengths[:, None]
  logprobs = jnp.where(gen_mask, state.logprobs, 0.0)
  tempered = jnp.where(gen_mask, state.tempered_logprobs, 0.0)
  return gen_mask, logprobs, tempered


# -------------------------------------------------------- jitted array cores
@functools.partial(
    jax.jit,
    static_argnames=("model", "strategy", "n", "gen_length", "stop_ids", "pad_id"))
def generate(model, params, prompt_tokens: Array, prompt_mask: Array, *,
             rng: Array, max_new_tokens, strategy, n: int = 1, gen_length: int,
             stop_ids: Tuple[int, ...], pad_id: int = 0,
             valid: Optional[Array] = None, prompt_ids: Optional[Array] = None
             ) -> Tuple[Trajectory, Any]:
  """Samples ``n`` completions per prompt from left-padded prompt arrays.

  The array-level core of :func:`sample` (jitted; usable inside other jitted
  code): no Python runs between the prompt arrays and the trajectory.

  Args:
    model: static Model (``jaxsi.models.model``).
    params: its params.
    prompt_tokens: int32[R, P] left-padded prompts (every row >= 1 real token).
    prompt_mask: bool[R, P] real prompt tokens.
    rng: PRNG key.
    max_new_tokens: int scalar (traced) <= ``gen_length``.
    strategy: static sampling strategy (``jaxsi.sampling.strategies``).
    n: static samples per prompt.
    gen_length: static completion buffer length G.
    stop_ids: static tuple of stop token ids.
    pad_id: static padding id.
    valid: bool[R] real prompt rows (False: dummy row, not decoded); default
      all True.
    prompt_ids: int32[R] dataset ids (default 0..R-1).

  Returns:
    (Trajectory with B = R·n rows and T = P + G columns, KVCache with P + G
    slots to pass to :func:`continue_generate`).
  """
  _TRACE_COUNTS["generate"] += 1
  r, p = prompt_tokens.shape
  b = r * n
  prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
  prompt_mask = jnp.asarray(prompt_mask, bool)
  valid = jnp.ones((r,), bool) if valid is None else jnp.asarray(valid, bool)
  prompt_ids = (jnp.arange(r, dtype=jnp.int32) if prompt_ids is None
                else jnp.asarray(prompt_ids, jnp.int32))

  # Prefill each prompt once, then copy its cache rows n times.
  cache = model.init_cache(r, p + gen_length)
  last_logits, cache = _prefill(model, params, cache, prompt_tokens,
                                prompt_mask, jnp.zeros((r,), jnp.int32))
  cache = _repeat_cache(cache, n)
  prompt_len = jnp.sum(prompt_mask, axis=1, dtype=jnp.int32)
  state = _decode_turn(
      model, params, strategy, cache=cache,
      last_logits=_repeat_rows(last_logits, n),
      base_positions=_repeat_rows(prompt_len, n),
      done=~_repeat_rows(valid, n), row_keys=_row_keys(rng, b),
      max_new_tokens=max_new_tokens, gen_length=gen_length,
      stop_ids=stop_ids, pad_id=pad_id)

  gen_mask, logprobs, tempered = _completion_fields(state)
  tokens = jnp.concatenate([_repeat_rows(prompt_tokens, n), state.tokens], 1)
  input_mask = jnp.concatenate([_repeat_rows(prompt_mask, n), gen_mask], 1)
  zeros_p = jnp.zeros((b, p), jnp.float32)
  turn_ids = jnp.concatenate(
      [jnp.zeros((b, p), jnp.int32), gen_mask.astype(jnp.int32)], 1)
  traj = Trajectory.create(
      tokens,
      input_mask=input_mask,
      loss_mask=jnp.concatenate([jnp.zeros((b, p), bool), gen_mask], 1),
      positions=positions_from_mask(input_mask),
      group_ids=jnp.repeat(jnp.arange(r, dtype=jnp.int32) * n, n),
      prompt_ids=_repeat_rows(prompt_ids, n),
      valid=_repeat_rows(valid, n),
      turn_ids=turn_ids,
      behaviour_logprobs=jnp.concatenate([zeros_p, logprobs], 1),
      extras={
          "finished": state.finished,
          "completion_length": state.lengths,
          "tempered_logprobs": jnp.concatenate([zeros_p, tempered], 1),
      },
  )
  return traj, state.cache


@functools.partial(
    jax.jit,
    static_argnames=("model", "strategy", "gen_length", "stop_ids", "pad_id"))
def continue_generate(model, params, traj: Trajectory, cache, inject_tokens: Array,
                      inject_mask: Array, *, rng: Array, max_new_tokens, strategy,
                      gen_length: int, stop_ids: Tuple[int, ...], pad_id: int = 0
                      ) -> Tuple[Trajectory, Any]:
  """Appends an injected turn to every row and decodes the next model turn.

  The array-level core of :func:`continue_sampling`. The conversation so far is
  read from ``cache`` (never re-encoded): only the injected tokens and the new
  completion are run through the model.

  Args:
    model: static Model.
    params: its params.
    traj: the trajectory returned with ``cache`` (T columns == cache slots).
    cache: KVCache from :func:`generate` / :func:`continue_generate`.
    inject_tokens: int32[B, I] left-padded injected turn, >= 1 real token per
      valid row.
    inject_mask: bool[B, I] real injected tokens.
    rng: PRNG key.
    max_new_tokens: int scalar (traced) <= ``gen_length``.
    strategy: static sampling strategy.
    gen_length: static completion buffer length G.
    stop_ids: static stop ids.
    pad_id: static padding id.

  Returns:
    (Trajectory with T + I + G columns: the old one, the injected turn and the
    new completion; KVCache with as many slots).

  Raises:
    ValueError: cache and trajectory lengths disagree.
  """
  _TRACE_COUNTS["continue"] += 1
  b, t = traj.tokens.shape
  i = inject_tokens.shape[1]
  if cache.mask.shape != (b, t):
    raise ValueError(
        f"continue_generate: cache has {cache.mask.shape} slots, the trajectory"
        f" has {(b, t)} tokens; pass the cache returned with this trajectory")
  inject_tokens = jnp.asarray(inject_tokens, jnp.int32)
  inject_mask = jnp.asarray(inject_mask, bool)
  cache = _grow_cache(cache, i + gen_length)

  # Every drawn column is already in the cache; skip the unused rest of the
  # previous generation buffer (its slots stay masked).
  cache = cache.replace(index=jnp.asarray(t, jnp.int32))

  seen = jnp.sum(traj.input_mask, axis=1, dtype=jnp.int32)
  last_logits, cache = _prefill(model, params, cache, inject_tokens, inject_mask,
                                seen)
  injected = jnp.sum(inject_mask, axis=1, dtype=jnp.int32)
  state = _decode_turn(
      model, params, strategy, cache=cache, last_logits=last_logits,
      base_positions=seen + injected, done=~traj.valid,
      row_keys=_row_keys(rng, b), max_new_tokens=max_new_tokens,
      gen_length=gen_length, stop_ids=stop_ids, pad_id=pad_id)

  gen_mask, logprobs, tempered = _completion_fields(state)
  old_turns = (traj.turn_ids if traj.turn_ids is not None
               else traj.loss_mask.astype(jnp.int32))
  model_turn = jnp.max(old_turns) + 1
  inject_turn = jnp.maximum(-jnp.min(old_turns), 0) + 1
  new_cols = i + gen_length
  updates = {}
  for name in TOKEN_FIELDS:
    old = getattr(traj, name)
    if old is not None:
      updates[name] = jnp.pad(old, ((0, 0), (0, new_cols)))
  input_mask = jnp.concatenate([traj.input_mask, inject_mask, gen_mask], 1)
  updates.update(
      tokens=jnp.concatenate([traj.tokens, inject_tokens, state.tokens], 1),
      input_mask=input_mask,
      positions=positions_from_mask(input_mask),
      loss_mask=jnp.concatenate(
          [traj.loss_mask, jnp.zeros((b, i), bool), gen_mask], 1),
      turn_ids=jnp.concatenate(
          [old_turns, jnp.where(inject_mask, -inject_turn, 0),
           jnp.where(gen_mask, model_turn, 0)], 1).astype(jnp.int32),
      behaviour_logprobs=jnp.concatenate(
          [(traj.behaviour_logprobs if traj.behaviour_logprobs is not None
            else jnp.zeros((b, t), jnp.float32)),
           jnp.zeros((b, i), jnp.float32), logprobs], 1),
  )
  extras = dict(traj.extras)
  old_tempered = extras.get("tempered_logprobs")
  if old_tempered is None or old_tempered.shape != (b, t):
    old_tempered = jnp.zeros((b, t), jnp.float32)
  extras.update(
      finished=state.finished,
      completion_length=state.lengths,
      tempered_logprobs=jnp.concatenate(
          [old_tempered, jnp.zeros((b, i), jnp.float32), tempered], 1),
  )
  return traj.replace(extras=extras, **updates), state.cache


# ------------------------------------------------------------ list front end
def _check_prompts(prompts, what: str, *, allow_empty: bool):
  rows = [list(map(int, np.asarray(p, np.int64).reshape(-1))) for p in prompts]
  if not rows:
    raise ValueError(f"{what}: no sequences given")
  if not allow_empty:
    for idx, row in enumerate(rows):
      if not row:
        raise ValueError(
            f"{what}: sequence {idx} is empty; every row needs >= 1 token "
            "(e.g. a BOS or turn marker)")
  return rows


def _check_strategy(strategy) -> None:
  if not isinstance(strategy, strategies_lib.Strategy):
    raise TypeError(
        f"strategy must be a sampling strategy (e.g. Greedy(), TopP(p=0.9)), "
        f"got {strategy!r}")


def _gen_length(max_new_tokens: int, gen_buckets) -> int:
  if int(max_new_tokens) < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  return buckets_lib.bucket_size(int(max_new_tokens), gen_buckets)


def sample(model, params, prompts: Sequence[Sequence[int]], *, rng: Array,
           strategy: strategies_lib.Strategy, max_new_tokens: int,
           stop_ids: Sequence[int], n: int = 1, pad_id: int = 0,
           prompt_ids: Optional[Sequence[int]] = None,
           prompt_buckets: Optional[Sequence[int]] = buckets_lib.DEFAULT_PROMPT_BUCKETS,
           gen_buckets: Optional[Sequence[int]] = None,
           batch_buckets: Optional[Sequence[int]] = None,
           return_cache: bool = False) -> Union[Trajectory, Tuple[Trajectory, Any]]:
  """Samples ``n`` completions for each prompt (see the module docstring).

  Args:
    model: static Model (``jaxsi.models.model.init``).
    params: its params.
    prompts: token id lists (each non-empty).
    rng: PRNG key; the same key gives the same output.
    strategy: a strategy from ``jaxsi.sampling.strategies``.
    max_new_tokens: completion budget per sample (>= 1).
    stop_ids: token ids that end a sample (kept, inside the loss mask).
    n: samples per prompt (rows ``i·n … i·n+n-1``, ``group_ids = i·n``).
    pad_id: padding token id.
    prompt_ids: dataset ids of the prompts (default ``range(len(prompts))``);
      dummy rows get -1.
    prompt_buckets: prompt length buckets (None: no bucketing).
    gen_buckets: completion buffer buckets (None: exactly ``max_new_tokens``).
    batch_buckets: buckets for the number of prompts; extra dummy prompts are
      returned as rows with ``valid=False`` (None: no dummy rows).
    return_cache: also return the KVCache for :func:`continue_sampling`.

  Returns:
    The Trajectory, or (Trajectory, KVCache) if ``return_cache``.

  Raises:
    ValueError: empty prompts, bad sizes.
  """
  _check_strategy(strategy)
  rows = _check_prompts(prompts, "sample", allow_empty=False)
  if n < 1:
    raise ValueError(f"sample: n must be >= 1, got {n}")
  num = len(rows)
  r = buckets_lib.bucket_size(num, batch_buckets)
  p = buckets_lib.bucket_size(max(len(x) for x in rows), prompt_buckets)
  g = _gen_length(max_new_tokens, gen_buckets)
  # Dummy rows hold one real pad token (never decoded: valid=False).
  tokens, mask = buckets_lib.left_pad(rows + [[pad_id]] * (r - num), length=p,
                                      pad_id=pad_id)
  if prompt_ids is not None and len(prompt_ids) != num:
    raise ValueError(f"sample: {len(prompt_ids)} prompt_ids for {num} prompts")
  valid = np.arange(r) < num
  ids = np.full((r,), -1, np.int32)
  ids[:num] = np.arange(num) if prompt_ids is None else np.asarray(prompt_ids)
  traj, cache = generate(
      model, params, tokens, mask, rng=rng,
      max_new_tokens=np.int32(max_new_tokens), strategy=strategy, n=int(n),
      gen_length=g, stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id),
      valid=valid, prompt_ids=ids)
  return (traj, cache) if return_cache else traj


def continue_sampling(model, params, traj: Trajectory, cache,
                      new_tokens: Sequence[Sequence[int]], *, rng: Array,
                      strategy: strategies_lib.Strategy, max_new_tokens: int,
                      stop_ids: Sequence[int], pad_id: int = 0,
                      inject_buckets: Optional[Sequence[int]] = (
                          buckets_lib.DEFAULT_INJECT_BUCKETS),
                      gen_buckets: Optional[Sequence[int]] = None,
                      return_cache: bool = False
                      ) -> Union[Trajectory, Tuple[Trajectory, Any]]:
  """Injects a turn into every row and continues decoding from the cache.

  Equivalent (up to float rounding) to sampling from scratch with the whole
  conversation (real tokens so far + ``new_tokens[b]``) as the prompt, without
  re-encoding it. The returned trajectory extends ``traj`` by the injected
  turn (``turn_ids`` -j, not in the loss mask) and the new completion
  (``turn_ids`` k, in the loss mask, with behaviour log-probs).

  Args:
    model: the Model ``traj`` was sampled with.
    params: its params (normally the same as for ``traj``).
    traj: a trajectory from :func:`sample` / :func:`continue_sampling`; rows
      with ``valid=False`` are carried along but not decoded.
    cache: the KVCache returned with ``traj`` (``return_cache=True``).
    new_tokens: one token list per row of ``traj`` (B lists), each non-empty
      for valid rows (empty lists of invalid rows become ``[pad_id]``).
    rng: PRNG key.
    strategy: sampling strategy.
    max_new_tokens: completion budget of this turn.
    stop_ids: stop token ids.
    pad_id: padding id.
    inject_buckets: length buckets of the injected turn.
    gen_buckets: completion buffer buckets (None: exactly ``max_new_tokens``).
    return_cache: also return the extended cache (to continue again).

  Returns:
    The extended Trajectory, or (Trajectory, KVCache) if ``return_cache``.
  """
  _check_strategy(strategy)
  b = traj.batch_size
  if len(new_tokens) != b:
    raise ValueError(
        f"continue_sampling: {len(new_tokens)} injected turns for {b} rows")
  valid = np.asarray(traj.valid)
  rows = _check_prompts(new_tokens, "continue_sampling", allow_empty=True)
  for idx, row in enumerate(rows):
    if not row:
      if valid[idx]:
        raise ValueError(
            f"continue_sampling: injected turn {idx} is empty; every valid row "
            "needs >= 1 injected token (e.g. a turn marker)")
      rows[idx] = [pad_id]
  i = buckets_lib.bucket_size(max(len(x) for x in rows), inject_buckets)
  g = _gen_length(max_new_tokens, gen_buckets)
  tokens, mask = buckets_lib.left_pad(rows, length=i, pad_id=pad_id)
  traj, cache = continue_generate(
      model, params, traj, cache, tokens, mask, rng=rng,
      max_new_tokens=np.int32(max_new_tokens), strategy=strategy, gen_length=g,
      stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id))
  return (traj, cache) if return_cache else traj
