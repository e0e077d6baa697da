"""A launcher run read back from its workdir: latest parameters, held-out tasks.

Where the synthetic-task launchers keep their parameters::

  rl_run.run      ckpt/<iteration>/state   the Loop's {role: TrainState}; the
                                           policy's under policy/params, next to
                                           its optimizer state
                  warm_start/0/state       the warm start (before the first
                                           RL checkpoint)
  rounds_run.run  pool/<round>/state       CheckpointPool: round r under params

:func:`find_params` picks the first of these that exists (and
:func:`params_source` reads any one such directory), :func:`restore_params` reads
only the parameter subtree of a checkpoint (an orbax partial restore: an
Adam state, twice the parameters, is never read), checked leaf by leaf
against the model's parameter shapes, and :func:`heldout_tasks` rebuilds the
run's held-out test set from its launcher arguments (the split the launcher
evaluated on, so a greedy pass@1 here reproduces the run's last one).
Nothing here reads gin: the caller (the ``jaxsi eval`` command) passes the
run's resolved launcher arguments.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Mapping, Optional, Sequence

import jax
import orbax.checkpoint as ocp

from jaxsi.data import tasks as tasks_lib
from jaxsi.training import checkpoint as checkpoint_lib

# (directory under the workdir, where the params sit in its tree, what it is).
SOURCES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("ckpt", ("policy", "params"), "rl_run's RL checkpoints (TrainState)"),
    ("pool", ("params",), "rounds_run's round pool"),
    ("warm_start", (), "rl_run's warm start"),
)
LAUNCHERS = ("rl_run.run", "rounds_run.run")


class NoCheckpointError(FileNotFoundError):
  """The workdir (or directory) holds no parameter checkpoint."""


@dataclasses.dataclass(frozen=True)
class ParamsSource:
  """One checkpoint directory of a run and where its params sit.

  Attributes:
    directory: the Orbax checkpoint directory (steps as subdirectories).
    steps: its saved steps, ascending (iterations or rounds).
    path: keys from the checkpoint tree's root to the params subtree.
    what: a short description (e.g. "rounds_run's round pool").
  """

  directory: str
  steps: tuple[int, ...]
  path: tuple[str, ...]
  what: str


def _steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  ckpt = checkpoint_lib.Checkpointer(directory, keep=None, async_save=False)
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def find_params(workdir: str) -> ParamsSource:
  """The first of :data:`SOURCES` under ``workdir`` that holds a checkpoint.

  Raises:
    NoCheckpointError: none does (naming every directory looked at).
  """
  workdir = os.path.abspath(os.fspath(workdir))
  if not os.path.isdir(workdir):
    raise NoCheckpointError(f"{workdir}: no such directory")
  for sub, path, what in SOURCES:
    directory = os.path.join(workdir, sub)
    steps = _steps(directory)
    if steps:
      return ParamsSource(directory, tuple(steps), path, what)
  looked = ", ".join(f"{sub}/ ({what})" for sub, _, what in SOURCES)
  raise NoCheckpointError(
      f"{workdir} holds no parameter checkpoint (looked for {looked}); is it the"
      f" workdir of a {' or '.join(LAUNCHERS)} run that saved one?")


def params_source(directory: str) -> ParamsSource:
  """A checkpoint directory of any of the layouts above (e.g. ``RUN/pool``,
  ``RUN/ckpt`` or ``RUN/warm_start``), its params located from the newest
  step's tree: ``policy/params``, ``params``, or the root.

  Raises:
    NoCheckpointError: the directory holds no checkpoint.
  """
  directory = os.path.abspath(os.fspath(directory))
  steps = _steps(directory)
  if not steps:
    raise NoCheckpointError(f"{directory}: no checkpoint there")
  for sub, path, what in SOURCES:
    if os.path.basename(directory) == sub:
      return ParamsSource(directory, tuple(steps), path, what)
  tree = _tree_metadata(os.path.join(directory, str(steps[-1]), "state"))
  if isinstance(tree, Mapping) and isinstance(tree.get("policy"), Mapping) and (
      "params" in tree["policy"]):
    path = ("policy", "params")
  elif isinstance(tree, Mapping) and "params" in tree:
    path = ("params",)
  else:
    path = ()
  return ParamsSource(directory, tuple(steps), path, "a params checkpoint")


def _tree_metadata(item_dir: str) -> Any:
  meta = ocp.PyTreeCheckpointer().metadata(item_dir)
  tree = getattr(meta, "item_metadata", meta)
  return getattr(tree, "tree", tree)


def _subtree(tree: Any, path: Sequence[str], where: str) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      found = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
      raise checkpoint_lib.CheckpointError(
          f"{where}: no {'/'.join(path)} in the checkpoint tree (at {key!r} found"
          f" {found})")
    tree = tree[key]
  return tree


def _name(path) -> str:
  """``a/0/b`` for a key path (integer and string keys alike, as orbax stores them)."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def _check_shapes(meta: Any, like: Any, where: str) -> None:
  """Every leaf of ``like`` exists in ``meta`` with the same shape."""
  flat_meta = {_name(p): m for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]}
  for p, x in jax.tree_util.tree_flatten_with_path(like)[0]:
    name = _name(p)
    if name not in flat_meta:
      raise checkpoint_lib.CheckpointError(
          f"{where}: the model's parameter {name} is not in the checkpoint (a"
          " different model than the run's?)")
    got = tuple(getattr(flat_meta[name], "shape", ()))
    if got != tuple(x.shape):
      raise checkpoint_lib.CheckpointError(
          f"{where}: parameter {name} has shape {got} in the checkpoint, the model"
          f" expects {tuple(x.shape)} (a different model config than the run's?)")


def restore_params(source: ParamsSource, like: Any, *,
                   step: Optional[int] = None) -> tuple[Any, int]:
  """Reads only the params subtree of ``source``'s newest (or ``step``) checkpoint.

  Args:
    source: from :func:`find_params` (or built for any checkpoint directory).
    like: the model's parameter pytree (arrays or ShapeDtypeStructs; their
      shardings say where the leaves go).
    step: a saved step; default the newest one that reads back (an older one
      is tried when the newest is damaged, and the damage is reported).

  Returns:
    ``(params, step)``.

  Raises:
    NoCheckpointError: no such step.
    checkpoint.CheckpointError: no step reads back into ``like`` (each
      step's reason: params missing, a leaf of another shape — named —, or
      damage), or the explicit ``step`` does not.
  """
  if step is not None and step not in source.steps:
    raise NoCheckpointError(f"{source.directory}: no checkpoint {step} (saved:"
                            f" {list(source.steps)})")
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, "sharding", None)), like)
  errors = []
  for s in ([step] if step is not None else list(reversed(source.steps))):
    item_dir = os.path.join(source.directory, str(int(s)), "state")
    where = f"{item_dir} ({source.what})"
    try:
      meta = _subtree(_tree_metadata(item_dir), source.path, where)
      _check_shapes(meta, abstract, where)
      item = abstract
      for key in reversed(source.path):
        item = {key: item}
      restored = ocp.PyTreeCheckpointer().restore(item_dir, args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
      params = jax.block_until_ready(_subtree(restored, source.path, where))
    except Exception as e:  # pylint: disable=broad-except
      if step is not None:
        raise checkpoint_lib.CheckpointError(
            f"{where}: {type(e).__name__}: {str(e).strip()[:400]}") from e
      errors.append(f"step {s}: {str(e).strip()[:400]}")
      continue
    # A newer step failed where this one reads back: it is damaged.
    for msg in errors:
      print(f"[jaxsi.run_workdir] {source.directory}: skipped damaged {msg}",
            file=sys.stderr, flush=True)
    return params, int(s)
  raise checkpoint_lib.CheckpointError(
      f"{source.directory}: no checkpoint restores into this model (another"
      " model config, or every one damaged): " + "; ".join(errors))


def task_format(args: Mapping[str, Any]) -> dict:
  """The synthetic task format a run used: its binding, else the launchers'
  default (addition answers reversed)."""
  fmt = args.get("task_format")
  if fmt is None:
    return {"reverse": True} if args.get("task", "addition") == "addition" else {}
  return dict(fmt)


def heldout_tasks(launcher: str, args: Mapping[str, Any]) -> list:
  """The held-out test set of a run, rebuilt from its launcher arguments.

  Args:
    launcher: ``'rl_run.run'`` or ``'rounds_run.run'``.
    args: every argument of that launcher (bound or default) that shapes the
      held-out split: task, task_format, difficulty, test_difficulty, seed,
      n_test and n_train (rl_run) or n_labeled + n_unlabeled (rounds_run).

  Raises:
    ValueError: another launcher, or an argument missing from ``args``.
  """
  if launcher not in LAUNCHERS:
    raise ValueError(f"heldout_tasks: {launcher!r} is not one of {LAUNCHERS}")
  try:
    n_train = (int(args["n_train"]) if launcher == "rl_run.run"
               else int(args["n_labeled"]) + int(args["n_unlabeled"]))
    test_difficulty = args["test_difficulty"]
    _, test = tasks_lib.make_train_test(
        args["task"], n_train=n_train, n_test=int(args["n_test"]),
        difficulty=list(args["difficulty"]),
        test_difficulty=None if test_difficulty is None else list(test_difficulty),
        seed=int(args["seed"]), **task_format(args))
  except KeyError as e:
    raise ValueError(f"heldout_tasks({launcher}): argument {e.args[0]!r} missing") from None
  return test


__all__ = ["LAUNCHERS", "NoCheckpointError", "ParamsSource", "SOURCES",
           "find_params", "heldout_tasks", "params_source", "restore_params",
           "task_format"]
