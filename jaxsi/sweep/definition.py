r"""A sweep file and its expansion into trials.

A sweep is a small declarative TOML file next to the gin files
(``gin_configs/sweeps/NAME.toml``). Why TOML and not gin: gin binds the
arguments of one run and has no notion of "these values, one run each"; a
sweep written in gin would need a configurable of its own and could only be
read by importing every module the experiment configures. TOML is in the
standard library (``tomllib``), declarative, commented, and its values map
one to one onto the Python literals gin parses. The trials themselves stay
ordinary launcher runs (``python -m jaxsi.launch --gin_file=... --gin_bindings=...``).

Format::

  name = "methods_x_seeds"            # default: the file's stem
  description = "..."

  [base]                               # the experiment every trial runs
  gin_files = ["experiments/rl_addition.gin"]
  bindings = ["rl_run.run.steps = 20"] # gin text, exactly as --gin_bindings

  [[axis]]                             # grid over gin files (binding = "gin_file")
  name = "method"
  binding = "gin_file"
  values = ["methods/grpo.gin", "methods/rloo.gin"]

  [[axis]]                             # grid over one binding
  name = "n"
  binding = "spec.RolloutSpec.n"
  values = [4, 8]

  [[axis]]                             # zipped: the bindings vary together
  name = "lr"
  bindings = ["rl_run.run.learning_rate", "rl_run.run.warmup_steps"]
  values = [[1e-4, 10], [3e-4, 5]]
  labels = ["low", "high"]             # optional, any axis

  [[axis]]                             # random draws (reproducible from seed)
  name = "search"
  random = 4                           # number of draws
  seed = 0
  [axis.draw]                          # binding = {distribution = [...]}
  "rl_run.run.learning_rate" = {log_uniform = [1e-5, 1e-3]}
  "rl_run.run.warmup_steps" = {int_uniform = [0, 20]}
  "spec.RolloutSpec.n" = {choice = [4, 8]}

  [seeds]                              # repeats; the summary averages over them
  binding = "rl_run.run.seed"
  values = [0, 1, 2]                   # or: count = 3 (seeds 0, 1, 2)

  [summary]                            # optional: what the summary shows
  metrics = ["after/greedy/all"]       # final metrics (results.json leaves)
  curves = ["reward/mean"]             # metrics.jsonl columns plotted over steps

  [slurm]                              # optional: #SBATCH options for --slurm
  partition = "gpu"
  time = "04:00:00"

The trials are the cartesian product of the axes, times the seeds. A value
is written as a gin literal (``repr`` of the TOML value: numbers, booleans,
strings quoted, lists and tables); a string that starts with ``@`` or ``%``
is a gin reference or macro and is written as it is. A ``gin_file`` value is
appended to the base files; relative paths are resolved against the sweep
file's directory, then the working directory, else left to the launcher's
search path (``gin_configs/``).

Trial ids are stable: the labels of the trial's axis values joined by ``_``
plus a hash of what the axes and the seed bind (not of the base), e.g.
``method=grpo_seed=0-3f2a9c``. Adding a value to an axis adds trials and
leaves the others' ids (and workdirs) alone; changing the base keeps the
ids, and the launcher then refuses to resume a trial whose configuration
changed (``jaxsi.training.run_config``), naming the binding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import re
import tomllib
from typing import Any, Mapping, Optional, Sequence

GIN_FILE = "gin_file"
_TOP_KEYS = {"name", "description", "base", "axis", "seeds", "summary", "slurm"}
_AXIS_KEYS = {"name", "binding", "bindings", "values", "labels", "random",
              "seed", "draw"}
_DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
_BINDING_NAME = re.compile(r"^[A-Za-z_%][\w.%/]*$")


class SweepError(ValueError):
  """A sweep file that cannot be expanded; the message names file and field."""


@dataclasses.dataclass(frozen=True)
class Axis:
  """One axis: ``points[i]`` binds ``{target: value}`` and is labelled ``labels[i]``."""
  name: str
  kind: str  # 'grid' | 'zip' | 'random'
  points: tuple
  labels: tuple


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A parsed sweep file."""
  name: str
  path: str
  base_gin_files: tuple
  base_bindings: tuple
  axes: tuple
  seed_binding: Optional[str]
  seeds: tuple
  description: str = ""
  summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  slurm: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Trial:
  """One launcher run of a sweep.

  Attributes:
    id: stable id (also the workdir name under ``<sweep_dir>/trials/``).
    assignment: ``{axis name: value label}`` (the seed axis excluded).
    values: ``{axis name: {target: value}}`` the raw values.
    seed: the seed value (``None`` without a ``[seeds]`` table).
    gin_files: base files + the files the axes add.
    bindings: base bindings + the bindings the axes and the seed add.
  """
  id: str
  assignment: Mapping[str, str]
  values: Mapping[str, Mapping[str, Any]]
  seed: Optional[int]
  gin_files: tuple
  bindings: tuple

  @property
  def config_key(self) -> str:
    """The trial's configuration without its seed (what the summary groups by)."""
    return ",".join(f"{k}={v}" for k, v in self.assignment.items()) or "base"

  def to_json(self) -> dict:
    return dict(id=self.id, assignment=dict(self.assignment),
                values={k: dict(v) for k, v in self.values.items()},
                seed=self.seed, gin_files=list(self.gin_files),
                bindings=list(self.bindings), config=self.config_key)


def trial_from_json(d: Mapping[str, Any]) -> Trial:
  """The inverse of :meth:`Trial.to_json` (a ``trials.json`` entry)."""
  return Trial(id=d["id"], assignment=dict(d["assignment"]),
               values={k: dict(v) for k, v in d["values"].items()},
               seed=d["seed"], gin_files=tuple(d["gin_files"]),
               bindings=tuple(d["bindings"]))


# ----------------------------------------------------------------- values
def gin_literal(value: Any, *, where: str = "value") -> str:
  """The gin text of a TOML value (``@``/``%`` strings are references).

  Raises:
    SweepError: a float that is not finite or a type gin cannot parse.
  """
  if isinstance(value, str):
    return value if value.startswith(("@", "%")) else repr(value)
  if isinstance(value, bool) or isinstance(value, int):
    return repr(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      raise SweepError(f"{where}: {value!r} is not finite")
    return repr(value)
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(gin_literal(v, where=where) for v in value) + "]"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k!r}: {gin_literal(v, where=where)}"
                           for k, v in value.items()) + "}"
  raise SweepError(f"{where}: {type(value).__name__} {value!r} has no gin form")


def value_label(target: str, value: Any) -> str:
  """Short label of one value: a gin file's stem, a number's ``%g``, text."""
  if target == GIN_FILE:
    return os.path.splitext(os.path.basename(str(value)))[0]
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return f"{value:.3g}"
  if isinstance(value, (list, dict)):
    return json.dumps(value, separators=(",", ":"))
  return str(value)


# ---------------------------------------------------------------- parsing
def load_sweep(path: str) -> Sweep:
  """Reads and checks a sweep file.

  Raises:
    SweepError: unreadable TOML (with its line), an unknown key, a missing or
      malformed field; the message names the file and the field.
  """
  try:
    with open(path, "rb") as f:
      data = tomllib.load(f)
  except FileNotFoundError:
    raise SweepError(f"sweep file {path!r} not found") from None
  except tomllib.TOMLDecodeError as e:
    raise SweepError(f"{path}: not valid TOML: {e}") from None
  return parse_sweep(data, path=path)


def _err(path: str, field: str, msg: str) -> SweepError:
  return SweepError(f"{path}: {field}: {msg}")


def _strings(data, path, field) -> tuple:
  if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
    raise _err(path, field, f"expected a list of strings, got {data!r}")
  return tuple(data)


def _resolve_file(name: str, sweep_path: str) -> str:
  if os.path.isabs(name):
    return name
  here = os.path.join(os.path.dirname(os.path.abspath(sweep_path)), name)
  if os.path.isfile(here):
    return here
  if os.path.isfile(name):
    return os.path.abspath(name)
  return name  # the launcher searches gin_configs/


def _check_target(target, path, field) -> str:
  if not isinstance(target, str) or not _BINDING_NAME.match(target):
    raise _err(path, field, f"{target!r} is not a binding name (e.g."
               " 'rl_run.run.seed') or 'gin_file'")
  return target


def _draw(rng: random.Random, spec: Any, path: str, field: str) -> Any:
  if not isinstance(spec, dict) or len(spec) != 1:
    raise _err(path, field, f"expected one of {{{', '.join(_DISTRIBUTIONS)}"
               f" = [...]}}, got {spec!r}")
  (kind, args), = spec.items()
  if kind not in _DISTRIBUTIONS:
    raise _err(path, field, f"unknown distribution {kind!r}; known:"
               f" {', '.join(_DISTRIBUTIONS)}")
  if kind == "choice":
    if not isinstance(args, list) or not args:
      raise _err(path, field, f"choice needs a non-empty list, got {args!r}")
    return args[rng.randrange(len(args))]
  if (not isinstance(args, list) or len(args) != 2
      or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                 for a in args) or not args[0] <= args[1]):
    raise _err(path, field, f"{kind} needs [low, high] with low <= high, got {args!r}")
  low, high = args
  if kind == "uniform":
    return rng.uniform(low, high)
  if kind == "int_uniform":
    if not all(isinstance(a, int) for a in args):
      raise _err(path, field, f"int_uniform needs integers, got {args!r}")
    return rng.randint(low, high)
  if low <= 0:
    raise _err(path, field, f"log_uniform needs low > 0, got {args!r}")
  return math.exp(rng.uniform(math.log(low), math.log(high)))


def _axis(data: Any, i: int, path: str) -> Axis:
  where = f"axis[{i}]"
  if not isinstance(data, dict):
    raise _err(path, where, "expected a table ([[axis]])")
  unknown = sorted(set(data) - _AXIS_KEYS)
  if unknown:
    raise _err(path, f"{where}.{unknown[0]}", f"unknown key; known:"
               f" {', '.join(sorted(_AXIS_KEYS))}")
  kinds = [k for k in ("binding", "bindings", "random") if k in data]
  if len(kinds) != 1:
    raise _err(path, where, "give exactly one of binding = (grid), bindings ="
               f" (zip) or random = (draws); got {kinds or 'none'}")
  kind = kinds[0]
  if kind == "random":
    count = data["random"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
      raise _err(path, f"{where}.random", f"number of draws must be an integer"
                 f" >= 1, got {count!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
      raise _err(path, f"{where}.seed", f"expected an integer, got {seed!r}")
    draw = data.get("draw")
    if not isinstance(draw, dict) or not draw:
      raise _err(path, f"{where}.draw", "expected a table {binding = {distribution"
                 " = [...]}}")
    targets = [_check_target(t, path, f"{where}.draw.{t}") for t in draw]
    points = []
    for k in range(count):
      point = {}
      for t in targets:
        # One generator per (seed, draw, binding): more draws or more
        # bindings leave the earlier draws as they were.
        rng = random.Random(f"{seed}:{k}:{t}")
        point[t] = _draw(rng, draw[t], path, f"{where}.draw.{t}")
      points.append(point)
    name = data.get("name", "draw")
    # The draw's index first: two draws may round (or, from a choice, be)
    # alike and are still two trials.
    default = [",".join([f"d{k}"] + [f"{t.rsplit('.', 1)[-1]}={value_label(t, v)}"
                                     for t, v in p.items()]) for k, p in enumerate(points)]
    kind_name = "random"
  else:
    if "values" not in data:
      raise _err(path, f"{where}.values", "missing")
    values = data["values"]
    if not isinstance(values, list) or not values:
      raise _err(path, f"{where}.values", f"expected a non-empty list, got {values!r}")
    if kind == "binding":
      target = _check_target(data["binding"], path, f"{where}.binding")
      targets = [target]
      points = [{target: v} for v in values]
      kind_name = "grid"
    else:
      targets = [_check_target(t, path, f"{where}.bindings[{j}]")
                 for j, t in enumerate(_strings(data["bindings"], path, f"{where}.bindings"))]
      points = []
      for j, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(targets):
          raise _err(path, f"{where}.values[{j}]", f"expected a list of"
                     f" {len(targets)} values (one per binding), got {row!r}")
        points.append(dict(zip(targets, row)))
      kind_name = "zip"
    for j, p in enumerate(points):
      for t, v in p.items():
        if t == GIN_FILE and not isinstance(v, str):
          raise _err(path, f"{where}.values[{j}]", f"a gin_file value is a path, got {v!r}")
        if t != GIN_FILE:
          gin_literal(v, where=f"{path}: {where}.values[{j}]")
    name = data.get("name", targets[0].rsplit(".", 1)[-1] if len(targets) == 1
                    else "+".join(t.rsplit(".", 1)[-1] for t in targets))
    default = [",".join(value_label(t, v) for t, v in p.items()) for p in points]
  if not isinstance(name, str) or not name:
    raise _err(path, f"{where}.name", f"expected a non-empty string, got {name!r}")
  labels = data.get("labels", default)
  labels = _strings(labels, path, f"{where}.labels")
  if len(labels) != len(points):
    raise _err(path, f"{where}.labels", f"{len(labels)} labels for {len(points)} values")
  if len(set(labels)) != len(labels):
    raise _err(path, f"{where}.labels", f"labels must differ: {list(labels)}"
               " (give labels = [...])")
  return Axis(name=name, kind=kind_name, points=tuple(points), labels=tuple(labels))


def parse_sweep(data: Mapping[str, Any], *, path: str = "<sweep>") -> Sweep:
  """Checks a parsed TOML document and returns the :class:`Sweep`."""
  unknown = sorted(set(data) - _TOP_KEYS)
  if unknown:
    raise _err(path, unknown[0], f"unknown key; known: {', '.join(sorted(_TOP_KEYS))}")
  base = data.get("base")
  if not isinstance(base, dict):
    raise _err(path, "base", "missing table [base] (gin_files = [...], bindings = [...])")
  bad = sorted(set(base) - {"gin_files", "bindings"})
  if bad:
    raise _err(path, f"base.{bad[0]}", "unknown key; known: bindings, gin_files")
  files = _strings(base.get("gin_files", []), path, "base.gin_files")
  if not files:
    raise _err(path, "base.gin_files", "at least one gin file is needed")
  bindings = _strings(base.get("bindings", []), path, "base.bindings")
  for j, b in enumerate(bindings):
    if "=" not in b:
      raise _err(path, f"base.bindings[{j}]", f"{b!r} is not 'NAME = VALUE'")
  axes_data = data.get("axis", [])
  if not isinstance(axes_data, list):
    raise _err(path, "axis", "expected [[axis]] tables")
  axes = tuple(_axis(a, i, path) for i, a in enumerate(axes_data))
  names = [a.name for a in axes]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise _err(path, "axis", f"two axes are named {dup[0]!r} (give name = ...)")
  seed_binding, seeds = None, ()
  if "seeds" in data:
    sd = data["seeds"]
    if not isinstance(sd, dict):
      raise _err(path, "seeds", "expected a table [seeds]")
    bad = sorted(set(sd) - {"binding", "values", "count"})
    if bad:
      raise _err(path, f"seeds.{bad[0]}", "unknown key; known: binding, count, values")
    seed_binding = _check_target(sd.get("binding"), path, "seeds.binding")
    if ("values" in sd) == ("count" in sd):
      raise _err(path, "seeds", "give values = [...] or count = N (not both)")
    if "count" in sd:
      c = sd["count"]
      if not isinstance(c, int) or isinstance(c, bool) or c < 1:
        raise _err(path, "seeds.count", f"expected an integer >= 1, got {c!r}")
      seeds = tuple(range(c))
    else:
      seeds = sd["values"]
      if (not isinstance(seeds, list) or not seeds
          or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
          or len(set(seeds)) != len(seeds)):
        raise _err(path, "seeds.values", f"expected distinct integers, got {seeds!r}")
      seeds = tuple(seeds)
    if "seed" in names:
      raise _err(path, "axis", "an axis may not be named 'seed' (the [seeds] table is)")
  summary = data.get("summary", {})
  if not isinstance(summary, dict) or set(summary) - {"metrics", "curves"}:
    raise _err(path, "summary", "expected a table with metrics = [...], curves = [...]")
  for k in ("metrics", "curves"):
    if k in summary:
      _strings(summary[k], path, f"summary.{k}")
  slurm = data.get("slurm", {})
  if not isinstance(slurm, dict) or not all(
      isinstance(v, (str, int)) and not isinstance(v, bool) for v in slurm.values()):
    raise _err(path, "slurm", "expected a table of #SBATCH options (strings or integers)")
  name = data.get("name", os.path.splitext(os.path.basename(path))[0])
  if not isinstance(name, str) or not re.match(r"^[\w.-]+$", name):
    raise _err(path, "name", f"expected letters, digits, '_', '.', '-'; got {name!r}")
  return Sweep(name=name, path=path,
               base_gin_files=tuple(_resolve_file(f, path) for f in files),
               base_bindings=bindings, axes=axes, seed_binding=seed_binding,
               seeds=seeds, description=str(data.get("description", "")),
               summary=dict(summary), slurm=dict(slurm))


# -------------------------------------------------------------- expansion
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")


def _slug(text: str, limit: int = 80) -> str:
  return _UNSAFE.sub("-", text).strip("-")[:limit] or "trial"


def expand(sweep: Sweep) -> list[Trial]:
  """The trials: the product of the axes (first axis slowest), times the seeds."""
  trials, seen = [], {}
  seeds = sweep.seeds or (None,)
  for combo in itertools.product(*[range(len(a.points)) for a in sweep.axes]):
    for seed in seeds:
      files = list(sweep.base_gin_files)
      added: list[str] = []
      assignment, values = {}, {}
      for axis, j in zip(sweep.axes, combo):
        assignment[axis.name] = axis.labels[j]
        values[axis.name] = dict(axis.points[j])
        for target, v in axis.points[j].items():
          if target == GIN_FILE:
            files.append(_resolve_file(v, sweep.path))
          else:
            added.append(f"{target} = {gin_literal(v)}")
      if seed is not None:
        added.append(f"{sweep.seed_binding} = {seed}")
      added_files = files[len(sweep.base_gin_files):]
      digest = hashlib.sha1(json.dumps(
          [[os.path.basename(f) for f in added_files], added],
          sort_keys=True).encode()).hexdigest()[:6]
      label = "_".join(f"{k}={v}" for k, v in assignment.items())
      if seed is not None:
        label = f"{label}_seed={seed}" if label else f"seed={seed}"
      trial_id = f"{_slug(label or 'base')}-{digest}"
      if trial_id in seen:
        raise SweepError(f"{sweep.path}: trials {seen[trial_id]} and {label} bind"
                         " the same values (two axis values are equal)")
      seen[trial_id] = label
      trials.append(Trial(id=trial_id, assignment=assignment, values=values,
                          seed=seed, gin_files=tuple(files),
                          bindings=tuple(sweep.base_bindings) + tuple(added)))
  return trials
