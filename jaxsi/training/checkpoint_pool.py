"""A pool of per-round model snapshots, each addressable as a frozen function.

Self-training methods iterate "generate with model k → train model k+1"; some
need models of other rounds: the base (warm-started) model ReST-EM and STaR
restart from (Singh et al. 2023, "Beyond Human Data", Alg. 1; Zelikman et al.
2022, "STaR", Alg. 1 line 7), the frozen reference of a V-STaR verifier
(Hosseini et al. 2024, "V-STaR", Eq. 3), or any past/future snapshot
(catalog: "outer iteration loop + checkpoint pool").

``CheckpointPool(directory)`` stores the parameters of round ``r`` as Orbax
checkpoint step ``r`` (synchronous writes, all rounds kept), and returns them
as a parameter pytree (:meth:`params`), as a frozen jitted apply function
``fn(tokens, positions, input_mask=None) -> logits`` (:meth:`apply_fn`) or as
a ``ScoreFn(traj) -> ModelOutputs`` with the parameters bound
(:meth:`score_fn`). Restored parameters are kept in a small in-memory cache.
"""

from __future__ import annotations

import collections
import os
import sys
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.models import logprobs as logprobs_lib
from jaxsi.training import checkpoint as checkpoint_lib


class CheckpointPool:
  """Parameters of every finished round, by round number (see module doc)."""

  def __init__(self, directory: str, *, cache_size: int = 4):
    """Opens (creating) the pool directory.

    Args:
      directory: where round checkpoints are written.
      cache_size: restored parameter sets kept in memory.
    """
    self.directory = os.path.abspath(os.fspath(directory))
    self._ckpt = checkpoint_lib.Checkpointer(self.directory, keep=None,
                                             save_every=1, async_save=False)
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._cache_size = int(cache_size)

  def rounds(self) -> list[int]:
    """Stored rounds, ascending."""
    return self._ckpt.all_steps()

  def __contains__(self, round_index: int) -> bool:
    return int(round_index) in self.rounds()

  def latest(self) -> Optional[int]:
    """The newest stored round, or None."""
    rounds = self.rounds()
    return rounds[-1] if rounds else None

  def save(self, round_index: int, params: Any) -> None:
    """Stores the parameters of round ``round_index`` (written before return).

    Raises:
      ValueError: the round is already stored (rounds are immutable).
    """
    r = int(round_index)
    if r < 0:
      raise ValueError(f"CheckpointPool.save: round must be >= 0, got {r}")
    if r in self:
      raise ValueError(f"CheckpointPool.save: round {r} is already stored in"
                       f" {self.directory}")
    self._ckpt.save(r, {"params": params}, force=True)
    self._ckpt.wait()

  def params(self, round_index: int, *, like: Any) -> Any:
    """The parameters of round ``round_index``.

    Args:
      round_index: a stored round.
      like: a parameter pytree (arrays or ShapeDtypeStructs) giving the
        structure, dtypes and shardings to restore into.

    Raises:
      KeyError: the round is not stored (lists the stored ones).
    """
    r = int(round_index)
    if r in self._cache:
      self._cache.move_to_end(r)
      return self._cache[r]
    if r not in self:
      raise KeyError(f"CheckpointPool: no round {r} in {self.directory};"
                     f" stored rounds: {self.rounds()}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        {"params": like})
    tree, _ = self._ckpt.restore(abstract, step=r)
    # Restored arrays are committed to their device; where ``like`` is not
    # (one device, no mesh), hand back uncommitted arrays too, or every jitted
    # step that saw ``like`` compiles again for the committed placement.
    out = jax.tree.map(
        lambda x, l: (jnp.asarray(np.asarray(x))
                      if isinstance(l, jax.Array) and not l.committed else x),
        tree["params"], like)
    self._cache[r] = out
    while len(self._cache) > self._cache_size:
      self._cache.popitem(last=False)
    return out

  def check(self, *, like: Any) -> list[int]:
    """Reads every stored round back; a damaged one is moved aside.

    A round that fails to restore while another restores into ``like`` is
    damaged (truncated by a crash or a full disk): it is reported, moved to
    ``<directory>/damaged/`` (kept, never deleted) and leaves the pool, so
    the schedule recomputes it. If no round restores, ``like`` is not this
    pool's model: :class:`~jaxsi.training.checkpoint.CheckpointError`,
    nothing moved.

    Returns:
      The rounds moved aside.
    """
    bad, good = [], []
    for r in self.rounds():
      try:
        self.params(r, like=like)
        good.append(r)
      except Exception as e:  # pylint: disable=broad-except
        bad.append((r, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"))
    if bad and not good:
      raise checkpoint_lib.CheckpointError(
          f"no round of the pool {self.directory} restores into this model"
          " (nothing was moved): " + "; ".join(f"round {r}: {m}" for r, m in bad))
    for r, msg in bad:
      moved = self._ckpt._move_aside(r)  # pylint: disable=protected-access
      print(f"[jaxsi.pool] round {r} in {self.directory} is damaged ({msg});"
            f" moved to {moved}; it will be recomputed", file=sys.stderr, flush=True)
    return [r for r, _ in bad]

  def apply_fn(self, round_index: int, *, model: Any, like: Any
               ) -> Callable[..., jax.Array]:
    """A frozen ``fn(tokens, positions, input_mask=None) -> logits`` of a round.

    The parameters are bound (and wrapped in ``stop_gradient``), so the
    function can be called inside other jitted code without training them.
    """
    params = self.params(round_index, like=like)

    @jax.jit
    def fn(tokens, positions, input_mask=None):
      frozen = jax.lax.stop_gradient(params)
      logits, _ = model.apply(frozen, tokens, positions, input_mask=input_mask)
      return logits

    return fn

  def score_fn(self, round_index: int, *, model: Any, like: Any,
               temperature: float = 1.0) -> Callable[[Any], Any]:
    """``fn(traj) -> ModelOutputs`` (token log-probs) of a round's model."""
    params = self.params(round_index, like=like)
    score = logprobs_lib.score_fn(model, temperature=temperature)
    jitted = jax.jit(lambda p, t: score(jax.lax.stop_gradient(p), t))
    return lambda traj: jitted(params, traj)

  def close(self) -> None:
    """Releases the checkpoint manager."""
    self._ckpt.close()
