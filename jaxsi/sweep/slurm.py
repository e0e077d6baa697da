r"""A sweep as a SLURM job array: an sbatch script and a trial list.

jaxsi does not schedule anything on a cluster; ``jaxsi sweep FILE --dir DIR
--slurm`` writes what ``sbatch`` needs and stops::

  DIR/slurm/trials.txt     one trial id per line (line k = array task k)
  DIR/slurm/sweep.sbatch   #SBATCH --array=0-(N-1)[%parallel], options, and a
                           body that runs line $SLURM_ARRAY_TASK_ID + 1:
                             $PYTHON -m jaxsi.cli sweep --dir DIR --trial <id>
                           (the trial as expanded in DIR/trials.json)
  DIR/slurm/logs/          %A_%a.out / .err of each array task

Submit with ``sbatch DIR/slurm/sweep.sbatch``. Each array task runs one
trial exactly as the local executor does (its ``trial.json``, logs and
launcher workdir under ``DIR/trials/<id>``; a finished trial returns at
once, an interrupted one resumes), so ``jaxsi sweep FILE --dir DIR
--summary`` works the same afterwards, and resubmitting the script resumes
the sweep. Only unfinished trials are listed (``--slurm`` again after a
partial run writes the rest). ``#SBATCH`` options come from the sweep
file's ``[slurm]`` table and ``--slurm_option=KEY=VALUE`` flags (the latter
win), written as ``#SBATCH --KEY=VALUE`` (underscores become dashes:
``cpus_per_task = 8`` → ``--cpus-per-task=8``). ``PYTHON`` defaults to the
interpreter that wrote the script; set it in the environment to override.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Collection, Mapping, Optional, Sequence

from jaxsi.sweep import executor
from jaxsi.sweep.definition import Sweep, Trial

_OPTION = re.compile(r"^[a-z][a-z0-9_-]*$")


def sbatch_options(sweep: Sweep, overrides: Mapping[str, str] = ()) -> dict:
  """``{option: value}`` from ``[slurm]`` and ``overrides`` (dashes, not underscores)."""
  out = {}
  for k, v in list(dict(sweep.slurm).items()) + list(dict(overrides).items()):
    if not _OPTION.match(k):
      raise ValueError(f"slurm option {k!r}: expected a name like 'partition' or"
                       " 'cpus_per_task'")
    if k in ("array", "output", "error"):
      raise ValueError(f"slurm option {k!r} is set by jaxsi (the trial array and"
                       " its log files)")
    out[k.replace("_", "-")] = str(v)
  return out


def write_slurm(sweep: Sweep, trials: Sequence[Trial], sweep_dir: str, *,
                parallel: Optional[int] = None, options: Mapping[str, str] = (),
                only: Optional[Collection[str]] = None,
                python: str = sys.executable) -> dict:
  """Writes ``slurm/sweep.sbatch`` and ``slurm/trials.txt`` for the unfinished trials.

  ``trials.json`` records every trial; ``only`` (ids) limits the array to a slice.

  Returns:
    ``{'script': path, 'trials': path, 'count': N, 'ids': [...]}`` (``script``
    is None when every trial is finished).
  """
  executor.prepare(sweep, trials, sweep_dir)
  sweep_dir = os.path.abspath(sweep_dir)
  todo = [t for t in trials
          if (executor.read_record(sweep_dir, t) or {}).get("status") != "done"
          and (only is None or t.id in only)]
  out = os.path.join(sweep_dir, "slurm")
  os.makedirs(os.path.join(out, "logs"), exist_ok=True)
  listing = os.path.join(out, "trials.txt")
  with open(listing, "w", encoding="utf-8") as f:
    f.writelines(f"{t.id}\n" for t in todo)
  if not todo:
    return dict(script=None, trials=listing, count=0, ids=[])
  array = f"0-{len(todo) - 1}" + (f"%{parallel}" if parallel else "")
  opts = {"job-name": sweep.name, **sbatch_options(sweep, options)}
  lines = ["#!/bin/bash",
           f"# jaxsi sweep {sweep.name}: {len(todo)} trials (written by jaxsi sweep --slurm)",
           f"#SBATCH --array={array}",
           f"#SBATCH --output={out}/logs/%A_%a.out",
           f"#SBATCH --error={out}/logs/%A_%a.err"]
  lines += [f"#SBATCH --{k}={v}" for k, v in opts.items()]
  lines += [
      "set -euo pipefail",
      f"PYTHON=\"${{PYTHON:-{python}}}\"",
      f"SWEEP_DIR={shlex.quote(sweep_dir)}",
      ": \"${SLURM_ARRAY_TASK_ID:?run this script with sbatch (a job array)}\"",
      "TRIAL=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" \"$SWEEP_DIR/slurm/trials.txt\")",
      "if [ -z \"$TRIAL\" ]; then echo \"no trial on line $((SLURM_ARRAY_TASK_ID + 1))\" >&2; exit 2; fi",
      "exec \"$PYTHON\" -m jaxsi.cli sweep --dir \"$SWEEP_DIR\" --trial \"$TRIAL\"",
  ]
  script = os.path.join(out, "sweep.sbatch")
  with open(script, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.chmod(script, 0o755)
  return dict(script=script, trials=listing, count=len(todo), ids=[t.id for t in todo])
