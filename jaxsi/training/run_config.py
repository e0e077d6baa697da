r"""Honest resume: a workdir belongs to one configuration.

The launcher writes the parsed gin configuration of a run to
``<workdir>/config.gin`` once, before any work. A later launch in the same
workdir resumes that run, so it must mean the same run: :func:`check_resume`
compares the new configuration with the recorded one binding by binding and
refuses (:class:`ConfigChangeError`, before any work, nothing written) every
changed, added or removed binding, naming each one with its old and new
value. A researcher who *means* to continue with a change (more steps, a
longer schedule) names the bindings: ``--allow_config_change=steps`` (a
parameter name, or a full binding name ``rl_run.run.steps``); each accepted
change is appended to ``<workdir>/config_changes.jsonl`` with the time, so
the run's history stays readable. Only bindings that cannot change results
(console output) pass unnamed.

Why not allow "harmless" changes by default (T5X and orbax promise exact
resume, not config merging): a changed seed makes "before" and "after"
evaluations use different test sets, a changed model size dies deep in a
restore, a changed learning rate silently mixes two runs. Refusing is cheap;
a silent mix is not.

The comparison is over the text gin writes (``gin.config_str()``: one
``name = value`` binding per logical line, continuation lines indented), so
this module does not import gin.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Iterable, Mapping, Optional, Sequence

CONFIG_FILE = "config.gin"
CHANGES_FILE = "config_changes.jsonl"
# Parameters that only change what is printed.
HARMLESS = frozenset({"console", "verbose", "log_every", "progress"})

_BINDING = re.compile(r"^([A-Za-z_%][\w.%/]*)\s*=\s*(.*)$")


class ConfigChangeError(ValueError):
  """A rerun whose configuration differs from the workdir's run."""


def bindings(config_text: str) -> dict[str, str]:
  """``{binding name: value text}`` of a gin config (imports, comments skipped).

  A binding's value runs over the following indented (continuation) lines;
  whitespace inside a value is normalised, so reformatting is not a change.
  """
  out: dict[str, str] = {}
  name = None
  for raw in config_text.splitlines():
    line = raw.rstrip()
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if line[0] in " \t" and name is not None:
      out[name] += " " + line.strip()
      continue
    name = None
    if line.startswith(("from ", "import ")):
      continue
    m = _BINDING.match(line)
    if m:
      name = m.group(1)
      out[name] = m.group(2).rstrip("\\").strip()
  return {k: " ".join(v.split()) for k, v in out.items()}


def diff(old: Mapping[str, str], new: Mapping[str, str]
         ) -> list[tuple[str, Optional[str], Optional[str]]]:
  """Changed, added (old None) and removed (new None) bindings, sorted."""
  names = sorted(set(old) | set(new))
  return [(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)]


def _allowed(name: str, allow: Iterable[str]) -> bool:
  param = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
  return param in HARMLESS or any(a in (name, param) for a in allow)


def _show(value: Optional[str]) -> str:
  if value is None:
    return "(unset)"
  return value if len(value) <= 80 else value[:77] + "..."


def check_resume(workdir: str, config_text: str, *,
                 allow: Sequence[str] = (), record: bool = True) -> list:
  """Records a new run's configuration, or checks a rerun against it.

  Args:
    workdir: the run directory.
    config_text: the parsed configuration (``gin.config_str()``).
    allow: bindings the caller accepts changing (parameter names such as
      ``steps`` or full names such as ``rl_run.run.steps``).
    record: write ``config.gin`` (new run) / append accepted changes to
      ``config_changes.jsonl``; ``False`` for dry runs (check only).

  Returns:
    The accepted changes ``[(name, old, new), ...]`` (empty for a new run or
    an unchanged rerun).

  Raises:
    ConfigChangeError: a binding changed that ``allow`` does not name; the
      message lists every one with its old and new value. Nothing is written.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    if record:
      os.makedirs(workdir, exist_ok=True)
      _write_atomic(path, config_text)
    return []
  with open(path, encoding="utf-8") as f:
    old_text = f.read()
  changes = diff(bindings(old_text), bindings(config_text))
  refused = [c for c in changes if not _allowed(c[0], allow)]
  if refused:
    lines = "".join(f"\n  {n}: {_show(o)} -> {_show(v)}" for n, o, v in refused)
    names = ",".join(sorted({n.rsplit('.', 1)[-1] for n, _, _ in refused}))
    raise ConfigChangeError(
        f"{workdir} holds a run with a different configuration ({path});"
        f" resuming it with these changes would mix two runs:{lines}\n"
        f"Start a new run with another --workdir, or continue this one with the"
        f" change on purpose: --allow_config_change={names}")
  if changes and record:
    with open(os.path.join(workdir, CHANGES_FILE), "a", encoding="utf-8") as f:
      for n, o, v in changes:
        f.write(json.dumps({"time": time.time(), "binding": n, "old": o,
                            "new": v}) + "\n")
      f.flush()
      os.fsync(f.fileno())
  return changes


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
