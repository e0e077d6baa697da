r"""The jaxsi entry point: absl flags + gin at the edge (T5X style).

Usage::

  python -m jaxsi.launch --gin_file=quickstart.gin --workdir=/tmp/run \
      [--gin_file=more.gin] [--gin.rounds_run.run.control=True] \
      [--gin_bindings='rounds_run.run.seed = 1'] [--gin_search_path=DIR]

Convention. A ``.gin`` file imports the library modules it configures with
``from __gin__ import dynamic_registration`` (so library code needs no gin
decorators), binds their keyword arguments, and names the function to run in the
macro ``MAIN``::

  from __gin__ import dynamic_registration
  from jaxsi.methods import rft
  from jaxsi.training import rounds_run
  MAIN = @rounds_run.run
  rounds_run.run:
    method = @rft.rft()
    rounds_config = {"rounds": 3}

The launcher calls ``MAIN(workdir=FLAGS.workdir)`` (plus ``dry_run=True`` with
``--dry_run`` when the function accepts it; ``--cpu_devices=N`` first makes JAX
start on N fake CPU devices, to rehearse a GPU/TPU mesh on a workstation). ``--gin.NAME=VALUE`` is sugar for
``--gin_bindings='NAME = VALUE'``.

Before any work starts the config is parsed and finalized, so an unknown
configurable, a misspelled parameter or a malformed value fails at once with gin's
message naming the binding and its file and line. The parsed config of a new run is written to
``<workdir>/config.gin`` before any work, and gin's operative config (every value
actually used) to ``<workdir>/operative_config.gin`` after it. A rerun in the
same workdir resumes that run, so its configuration must be the same: a changed
binding is refused before any work, naming each one
(``jaxsi.training.run_config``), unless ``--allow_config_change=NAME,...``
names it.
"""

from __future__ import annotations

import datetime
import errno
import inspect
import os
import re
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import gin

from jaxsi.training import run_config

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("gin_file", [], "Gin config files (searched in --gin_search_path).")
flags.DEFINE_multi_string("gin_bindings", [], "Individual gin bindings 'NAME = VALUE'.")
flags.DEFINE_multi_string("gin_search_path", [], "Extra directories to search for gin files.")
flags.DEFINE_string("workdir", None, "Output directory (default ./workdir/<timestamp>).")
flags.DEFINE_bool("dry_run", False, "Ask MAIN to build and compile without running "
                  "(passed as dry_run=True when MAIN accepts it).")
flags.DEFINE_list("allow_config_change", [], "Rerunning a workdir with changed "
                  "bindings is refused; name the bindings (parameter names such "
                  "as 'steps', or full names) to continue the run with them.")
flags.DEFINE_integer("cpu_devices", 0, "If > 0, run on this many fake CPU devices "
                     "(rehearse a GPU/TPU mesh, e.g. with --dry_run, on a workstation).")

# The repository's gin_configs/ (next to the jaxsi package in a source checkout).
DEFAULT_SEARCH_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs")


class LaunchError(ValueError):
  """A configuration error found before any work started."""


def rewrite_gin_args(args: Sequence[str]) -> list[str]:
  """Rewrites ``--gin.NAME=VALUE`` to ``--gin_bindings=NAME = VALUE``."""
  out = []
  for arg in args:
    if arg.startswith("--gin.") and arg != "--gin.":
      body = arg[len("--gin."):]
      if "=" not in body:
        raise LaunchError(f"malformed flag {arg!r}: expected --gin.NAME=VALUE")
      name, value = body.split("=", 1)
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def parse_config(gin_files: Sequence[str], bindings: Sequence[str],
                 search_paths: Sequence[str] = ()) -> None:
  """Parses and finalizes the gin config; raises LaunchError on any problem."""
  paths = [p for p in [os.getcwd()] + list(search_paths) + [DEFAULT_SEARCH_PATH]
           if os.path.isdir(p)]
  for path in paths:
    gin.add_config_file_search_path(path)  # for `include` inside gin files
  if not gin_files:
    raise LaunchError("no --gin_file given (e.g. --gin_file=quickstart.gin)")
  gin_files = [resolve_gin_file(f, paths) for f in gin_files]
  check_one_main(gin_files)
  try:
    gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=True)
  except Exception as e:  # gin raises many types (incl. tokenize.TokenError)
    listed = "".join(f"\n  bindings line {i}: {b}" for i, b in enumerate(bindings, 1))
    raise LaunchError(f"invalid gin configuration: {e}"
                      + (f"\n(command-line bindings:{listed})" if bindings else "")) from e


_MAIN_RE = re.compile(r"^MAIN\s*=\s*@([\w.]+)", re.M)
_METHOD_RE = re.compile(r"^METHOD\s*=\s*@([\w.]+)", re.M)


def check_one_main(gin_files: Sequence[str]) -> None:
  """Refuses gin files that name different ``MAIN`` functions (launchers).

  ``MAIN`` is a macro, so the last file would silently win: e.g. an
  experiment for the RL loop (``MAIN = @rl_run.run``) followed by a
  self-training method file (``MAIN = @rounds_run.run``) would run the
  rounds loop and ignore the experiment. A command-line binding of MAIN
  still overrides on purpose.
  """
  mains, methods = {}, {}
  for path in gin_files:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for m in _MAIN_RE.finditer(text):
      mains.setdefault(m.group(1), path)
    for m in _METHOD_RE.finditer(text):
      methods[m.group(1)] = path
  if len(mains) > 1:
    method = ", ".join(f"{m} ({os.path.basename(p)})" for m, p in methods.items())
    listed = "; ".join(f"{os.path.basename(p)}: MAIN = @{m}" for m, p in mains.items())
    raise LaunchError(
        f"the gin files name different launchers ({listed}); method"
        f" {method or '?'} runs under one loop only: pass the method file"
        " alone (it binds its own MAIN) or with an experiment of its loop")


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
  """Absolute path of ``name``: as given, else under each search path in order."""
  if os.path.isfile(name):
    return os.path.abspath(name)
  for path in search_paths:
    candidate = os.path.join(path, name)
    if os.path.isfile(candidate):
      return candidate
  raise LaunchError(f"gin file {name!r} not found (searched: ., {', '.join(search_paths)})")


def main_function():
  """The function bound to the ``MAIN`` macro (gin-configured)."""
  try:
    ref = gin.query_parameter("%MAIN")
  except ValueError as e:
    raise LaunchError(
        "the gin config does not bind MAIN; add e.g. 'MAIN = @rounds_run.run'"
    ) from e
  fn = getattr(ref, "scoped_configurable_fn", None)
  if fn is None:
    raise LaunchError(f"MAIN must reference a function (MAIN = @module.fn), got {ref!r}")
  return fn


def launch(argv_flags, *, workdir: Optional[str] = None):
  """Parses the config named by the flags, saves it, runs MAIN, saves the operative config."""
  parse_config(argv_flags.gin_file, argv_flags.gin_bindings, argv_flags.gin_search_path)
  fn = main_function()
  workdir = workdir or argv_flags.workdir or os.path.join(
      "workdir", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  os.makedirs(workdir, exist_ok=True)
  # A workdir is one run: a rerun must mean the same run (honest resume).
  # (A dry run writes no state: it is neither checked nor recorded.)
  if not argv_flags.dry_run:
    try:
      run_config.check_resume(
          workdir, gin.config_str(),
          allow=tuple(getattr(argv_flags, "allow_config_change", None) or ()))
    except run_config.ConfigChangeError as e:
      raise LaunchError(str(e)) from None
  kwargs = {"workdir": workdir}
  if argv_flags.dry_run:
    params = inspect.signature(inspect.unwrap(fn)).parameters
    if "dry_run" not in params:
      raise LaunchError(f"--dry_run: {getattr(fn, '__name__', fn)} has no dry_run argument")
    kwargs["dry_run"] = True
  print(f"jaxsi.launch: running {getattr(fn, '__name__', fn)} in {workdir}", flush=True)
  result = fn(**kwargs)
  # A dry run in a real run's workdir leaves that run's files alone.
  if not argv_flags.dry_run or not os.path.exists(
      os.path.join(workdir, run_config.CONFIG_FILE)):
    path = os.path.join(workdir, "operative_config.gin")
    with open(f"{path}.tmp{os.getpid()}", "w") as f:
      f.write(gin.operative_config_str())
    os.replace(f"{path}.tmp{os.getpid()}", path)
  return result


def use_fake_cpu_devices(n: int) -> None:
  """Makes JAX start on ``n`` fake CPU devices (before its backend starts)."""
  flag = f"--xla_force_host_platform_device_count={n}"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # imported, but no backend yet: the config still counts
    sys.modules["jax"].config.update("jax_platforms", "cpu")


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # Library INFO logs (orbax writes ~40 lines per checkpoint) would bury the
    # run's own progress and tables; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.cpu_devices:
      use_fake_cpu_devices(FLAGS.cpu_devices)
      import jax  # pylint: disable=g-import-not-at-top
      if jax.device_count() != FLAGS.cpu_devices:
        raise LaunchError(
            f"--cpu_devices={FLAGS.cpu_devices}: JAX started with"
            f" {jax.device_count()} {jax.default_backend()} device(s) (XLA_FLAGS="
            f"{os.environ.get('XLA_FLAGS')!r}); the backend was initialised before"
            " the flag could apply")
    launch(FLAGS)
  except (LaunchError, ValueError) as e:
    if not _is_configuration_error(e):
      raise
    print(f"jaxsi.launch: {_message(e)}", file=sys.stderr)
    sys.exit(2)
  except RuntimeError as e:
    if type(e).__name__ != "RunFailure":
      raise
    print(f"jaxsi.launch: the run failed: {_message(e)}", file=sys.stderr)
    sys.exit(3)
  except OSError as e:
    # gin re-raises a proxy of the exception whose errno attributes are
    # unset; the "[Errno N] text: 'path'" message still has them.
    m = re.match(r"\[Errno (\d+)\] ([^:]*)(?:: '(.*?)')?", str(e))
    code = e.errno if e.errno is not None else (int(m.group(1)) if m else None)
    if code not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
      raise
    path = e.filename or (m.group(3) if m else None) or "to the workdir"
    text = e.strerror or (m.group(2) if m else os.strerror(code))
    print(f"jaxsi.launch: cannot write {path}: {text} (errno {code}); free"
          " space or use another --workdir, then rerun to resume from the last"
          " checkpoint", file=sys.stderr)
    sys.exit(3)


def _message(e: BaseException) -> str:
  """The exception text without gin's "In call to configurable" suffix."""
  return str(e).split("\n  In call to configurable")[0]


def _is_configuration_error(e: BaseException) -> bool:
  """Errors found before any work: a short message, exit status 2."""
  names = {c.__name__ for c in type(e).__mro__}
  return bool(names & {"LaunchError", "ArgumentError", "ConfigurationError",
                       "ConfigChangeError"})


def run():
  """Console entry point (rewrites --gin.X=Y before absl parses flags)."""
  try:
    args = rewrite_gin_args(sys.argv)
  except LaunchError as e:
    print(f"jaxsi.launch: {e}", file=sys.stderr)
    sys.exit(2)
  app.run(_main, argv=args)


if __name__ == "__main__":
  run()
