"""Orbax checkpoints of a TrainState (+ data position, method extras) and preemption.

``Checkpointer`` wraps ``orbax.checkpoint.CheckpointManager``:

* ``save(step, state, extra=...)`` saves when ``step % save_every == 0`` (or
  ``force=True``, for the final / preemption save) and keeps the last ``keep``;
* ``restore(abstract_state)`` restores the latest (or a given) step **into**
  the abstract state: ShapeDtypeStructs whose ``.sharding`` says where every
  leaf goes (``partitioning.with_shardings``), so a sharded state is read
  directly onto its devices;
* ``extra`` is a JSON dict saved next to the state — at least
  ``{'data_position': int}`` so a loop can replay its data stream from the
  exact batch after the checkpoint, plus anything a method needs ('method').

Typed PRNG keys (``jax.random.key``) are stored as their raw key data
(``jax.random.key_data``) with the key implementation name in the metadata,
and re-wrapped on restore (``jax.random.wrap_key_data``).

Resume is exact: with the same data from ``data_position`` on, N steps → save
→ restore in a fresh process → N steps equals 2N uninterrupted steps bit for
bit on CPU (tests/training/test_checkpoint.py).

``PreemptionGuard`` turns SIGTERM into a flag the loop checks at step
boundaries: save (``force=True``) and exit cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

_KEY_IMPLS = "_jaxsi_key_impls"
_STATE, _EXTRA = "state", "extra"
DAMAGED = "damaged"   # where unreadable checkpoints are moved (kept, never deleted)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored (damaged, or not this run's)."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _path_str(path) -> str:
  return jax.tree_util.keystr(path)


def keys_to_data(tree: Any) -> Tuple[Any, dict]:
  """Replaces typed PRNG key leaves by their key data; returns impl names by path."""
  impls = {}

  def conv(path, x):
    if _is_key(x):
      impls[_path_str(path)] = str(jax.random.key_impl(x))
      return jax.random.key_data(x)
    return x

  return jax.tree_util.tree_map_with_path(conv, tree), impls


def _abstract_keys_to_data(abstract: Any) -> Any:
  """ShapeDtypeStructs of key data for abstract typed-key leaves (same sharding)."""
  def conv(x):
    if _is_key(x):
      data = jax.eval_shape(jax.random.key_data, x)
      return jax.ShapeDtypeStruct(data.shape, data.dtype,
                                  sharding=getattr(x, "sharding", None))
    return x
  return jax.tree.map(conv, abstract)


def _data_to_keys(tree: Any, abstract: Any, impls: Mapping[str, str]) -> Any:
  def conv(path, x, a):
    if _is_key(a):
      impl = impls.get(_path_str(path))
      if impl is None:
        raise ValueError(f"checkpoint has no PRNG implementation for {_path_str(path)}")
      return jax.random.wrap_key_data(x, impl=impl)
    return x
  return jax.tree_util.tree_map_with_path(conv, tree, abstract)


class Checkpointer:
  """Periodic, keep-last-k Orbax checkpoints of a TrainState.

  Example::

    ckpt = Checkpointer(workdir / 'ckpt', keep=3, save_every=100)
    if ckpt.latest_step() is not None:
      state, extra = ckpt.restore(abstract_state)   # sharded SDS tree
      position = extra['data_position']
    for ...:
      state, metrics = update(state, batch_at(position)); position += 1
      ckpt.save(int(state.step), state, extra={'data_position': position})
    ckpt.save(int(state.step), state, extra=..., force=True)   # final
    ckpt.close()

  Every process of a multi-host job must call ``save``/``restore``.
  """

  def __init__(self, directory: os.PathLike | str, *, keep: Optional[int] = 3,
               save_every: int = 1000, async_save: bool = True):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where step subdirectories are written (absolute path).
      keep: number of most recent checkpoints kept (None: all).
      save_every: periodic saves at steps divisible by this.
      async_save: write in a background thread (``save`` returns once the
        arrays are copied off the devices); ``wait()`` blocks until written.
    """
    if save_every < 1:
      raise ValueError(f"Checkpointer: save_every={save_every} must be >= 1")
    self.directory = os.path.abspath(os.fspath(directory))
    self.save_every = save_every
    self.keep = keep
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=(_STATE, _EXTRA))

  def should_save(self, step: int) -> bool:
    """True at periodic save steps."""
    return int(step) % self.save_every == 0

  def save(self, step: int, state: Any, *, extra: Optional[Mapping[str, Any]] = None,
           force: bool = False) -> bool:
    """Saves ``state`` (and JSON ``extra``) as checkpoint ``step`` if due.

    Args:
      step: the step number (usually ``int(state.step)``).
      state: a TrainState (any pytree of jax arrays; typed keys allowed).
      extra: JSON-serialisable dict, e.g. ``{'data_position': 123}``.
      force: save even if ``step`` is not a multiple of ``save_every``.

    Returns:
      True if a checkpoint was written (or started, when async).
    """
    step = int(step)
    if not (force or self.should_save(step)):
      return False
    if step in self._manager.all_steps():
      return False
    tree, impls = keys_to_data(state)
    meta = dict(extra or {})
    if _KEY_IMPLS in meta:
      raise ValueError(f"Checkpointer.save: extra may not use the reserved key {_KEY_IMPLS!r}")
    meta[_KEY_IMPLS] = impls
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(tree),
            _EXTRA: ocp.args.JsonSave(meta),
        }),
        force=True)

  def restore(self, abstract_state: Any, *, step: Optional[int] = None
              ) -> Tuple[Any, dict]:
    """Restores a checkpoint into the structure/shardings of ``abstract_state``.

    Without ``step``, the newest checkpoint that reads back is restored: a
    damaged one (truncated or missing files, unreadable metadata, a tree that
    does not match ``abstract_state``) is reported on stderr, moved aside to
    ``<directory>/damaged/<step>`` (kept for inspection, never deleted) and
    the previous one is tried, as orbax's own "latest valid step" promise
    suggests. The run then continues from the older step and writes the
    newer steps again.

    Args:
      abstract_state: pytree of ShapeDtypeStruct (with ``.sharding`` for
        placement) or arrays, e.g. ``partitioning.with_shardings(
        jax.eval_shape(init), shardings)``. Typed key leaves are restored as
        typed keys.
      step: the step to restore (default: the newest good one). An explicit
        step is never skipped: its damage is raised.

    Returns:
      ``(state, extra)``; ``extra`` is the dict passed to ``save``.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      CheckpointError: every checkpoint is damaged (each one's error named),
        or the explicit ``step`` is.
    """
    self.wait()
    if step is not None:
      try:
        return self._restore_step(abstract_state, int(step))
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(
            f"checkpoint {step} in {self.directory} cannot be restored:"
            f" {type(e).__name__}: {_first_line(e)}") from e
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"Checkpointer.restore: no checkpoint in {self.directory}")
    # Newest first. A step that fails while an older one restores into the
    # same template is damaged; if none restores, the template is not this
    # run's (a changed model) or all are damaged: nothing is moved then.
    errors = []
    for s in reversed(steps):
      try:
        out = self._restore_step(abstract_state, s)
      except Exception as e:  # pylint: disable=broad-except
        errors.append((s, f"{type(e).__name__}: {_first_line(e)}"))
        continue
      for bad, msg in errors:
        moved = self._move_aside(bad)
        print(f"[jaxsi.checkpoint] checkpoint {bad} in {self.directory} is damaged"
              f" ({msg}); moved to {moved}", file=sys.stderr, flush=True)
      if errors:
        print(f"[jaxsi.checkpoint] resumed from checkpoint {s}, the newest that"
              " reads back", file=sys.stderr, flush=True)
      return out
    raise CheckpointError(
        f"no checkpoint in {self.directory} restores into this run's state (a"
        " changed model or optimizer, or every checkpoint damaged; nothing was"
        " moved or deleted): " + "; ".join(f"step {s}: {m}" for s, m in errors))

  def _restore_step(self, abstract_state: Any, step: int) -> Tuple[Any, dict]:
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        abstract_state)
    target = _abstract_keys_to_data(abstract)
    out = self._manager.restore(
        int(step),
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(target),
            _EXTRA: ocp.args.JsonRestore(),
        }))
    meta = out[_EXTRA]
    if not isinstance(meta, dict) or _KEY_IMPLS not in meta:
      raise CheckpointError(f"step {step}: the {_EXTRA!r} item is missing or unreadable")
    meta = dict(meta)
    impls = meta.pop(_KEY_IMPLS, {})
    state = _data_to_keys(out[_STATE], abstract, impls)
    # Materialise now so a damaged array fails here, not in the first step.
    state = jax.block_until_ready(state)
    return state, meta

  def _move_aside(self, step: int) -> str:
    """Moves step ``step``'s directory to ``damaged/`` (only on process 0)."""
    src = os.path.join(self.directory, str(int(step)))
    dst_dir = os.path.join(self.directory, DAMAGED)
    dst = os.path.join(dst_dir, f"{int(step)}.{time.strftime('%Y%m%dT%H%M%S')}")
    if jax.process_index() == 0 and os.path.isdir(src):
      os.makedirs(dst_dir, exist_ok=True)
      os.replace(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"jaxsi_ckpt_move_{step}")
    self._manager.reload()
    return dst

  def latest_step(self) -> Optional[int]:
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All saved steps, ascending."""
    return sorted(self._manager.all_steps())

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class PreemptionGuard:
  """Turns termination signals into a stop request checked at step boundaries.

  The handler only sets a flag (it runs between Python bytecodes of the main
  thread, possibly in the middle of a step); the loop calls
  ``should_stop(step)`` after each update and, if True, saves with
  ``force=True`` and returns. Multi-process jobs agree on the decision with an
  all-gather of the flags, so every process stops at the same step.

  Example::

    with PreemptionGuard() as guard:
      for ...:
        state, m = update(state, batch)
        if guard.should_stop(step):
          ckpt.save(step, state, extra=..., force=True); ckpt.wait(); break
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self._previous: dict = {}
    self.requested = False
    self.signum: Optional[int] = None

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    self.signum = signum

  def install(self) -> "PreemptionGuard":
    """Installs the handlers (main thread only); remembers the previous ones."""
    for sig in self.signals:
      self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def uninstall(self) -> None:
    """Restores the previous handlers."""
    for sig, prev in self._previous.items():
      signal.signal(sig, prev)
    self._previous.clear()

  def request(self) -> None:
    """Requests a stop programmatically (same effect as the signal)."""
    self.requested = True

  def should_stop(self, step: Optional[int] = None) -> bool:  # pylint: disable=unused-argument
    """True once a stop was requested on any process.

    Args:
      step: the current step (for logging by callers; the decision is the
        flag, agreed across processes when there are several).
    """
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def __enter__(self) -> "PreemptionGuard":
    return self.install()

  def __exit__(self, *exc) -> None:
    self.uninstall()
