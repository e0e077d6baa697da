r"""``jaxsi eval`` and ``jaxsi test-time``: a checkpoint or a run's params on tasks.

The two subcommands of :mod:`jaxsi.cli` that evaluate a policy: ``eval``
(pass@k / maj@k of a local HF checkpoint or of a jaxsi run workdir's latest
params, ``jaxsi.training.evaluate``) and ``test-time`` (the test-time driver,
``jaxsi.training.test_time_run``, through the launcher).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

def _load_tasks(source: str, ns, chat, task_format=None):
  kind, _, rest = source.partition(":")
  if kind == "synthetic":
    from jaxsi.data import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
    return tasks_lib.make_tasks(rest, ns.limit or 100, difficulty=ns.difficulty,
                                seed=ns.seed, **dict(task_format or {}))
  if kind in ("gsm8k", "math"):
    from jaxsi.data import math_datasets  # pylint: disable=g-import-not-at-top
    loader = math_datasets.load_gsm8k if kind == "gsm8k" else math_datasets.load_math
    return loader(rest, split=ns.split, chat_template=chat, limit=ns.limit)
  if kind == "jsonl":
    from jaxsi.data import jsonl  # pylint: disable=g-import-not-at-top
    return jsonl.load_jsonl_tasks(rest, limit=ns.limit)
  raise ValueError(f"--tasks={source!r}: expected synthetic:NAME, gsm8k:PATH,"
                   " math:PATH or jsonl:FILE" + (" or heldout" if ns.workdir else ""))


# What `jaxsi eval --workdir` reads of a run's launcher arguments.
_RUN_ARGS = ("model", "model_overrides", "task", "task_format", "difficulty",
             "test_difficulty", "seed", "n_test", "n_train", "n_labeled",
             "n_unlabeled", "rounds_config", "method")


def run_arguments(workdir: str) -> tuple[str, dict]:
  """``(launcher, arguments)`` of the run in ``workdir``, from its config.gin.

  The launcher is ``'rl_run.run'`` or ``'rounds_run.run'``; the arguments are
  those of :data:`_RUN_ARGS` it has (bound in config.gin, else the
  function's defaults), ``method`` built from its bindings.

  Raises:
    ValueError: no config.gin, a config that does not parse, or another
      launcher.
  """
  import inspect  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from jaxsi.training import run_config  # pylint: disable=g-import-not-at-top
  from jaxsi.training import run_workdir  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, run_config.CONFIG_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"--workdir={workdir}: no {run_config.CONFIG_FILE} (not the"
                     " workdir of a jaxsi launcher run)")
  gin.clear_config()
  try:
    try:
      gin.parse_config_file(path)
      ref = gin.query_parameter("%MAIN")
    except Exception as e:  # pylint: disable=broad-except  (gin raises many types)
      raise ValueError(f"{path}: cannot be read back: {type(e).__name__}: {e}") from None
    conf = getattr(ref, "configurable", None)
    launcher = (f"{conf.module.rsplit('.', 1)[-1]}.{conf.name}" if conf is not None
                and conf.module.startswith("jaxsi.training.") else repr(ref))
    if launcher not in run_workdir.LAUNCHERS:
      raise ValueError(f"{path}: MAIN = @{getattr(ref, 'selector', launcher)}; only"
                       f" {' and '.join(run_workdir.LAUNCHERS)} runs can be read back"
                       " (for an HF checkpoint use --hf_checkpoint)")
    signature = inspect.signature(inspect.unwrap(ref.scoped_configurable_fn))
    args = {}
    for name in _RUN_ARGS:
      if name not in signature.parameters:
        continue
      try:
        value = gin.query_parameter(f"{ref.selector}.{name}")
      except ValueError:   # not bound: the launcher's default
        value = signature.parameters[name].default
      while isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()   # e.g. %METHOD: the method
      args[name] = value
    return launcher, args
  finally:
    gin.clear_config()


def _workdir_policy(ns):
  """``(model, params, tokenizer, tasks, where, max_new_tokens, what)`` of ``--workdir``."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxsi.data import char_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as model_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import rounds as rounds_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import run_workdir  # pylint: disable=g-import-not-at-top
  source = run_workdir.find_params(ns.workdir)   # before any parsing: the clearest error
  launcher, args = run_arguments(ns.workdir)
  tok = char_tokenizer.CharTokenizer()   # both launchers' tokenizer
  cfg = mcfg.get_config(args["model"], vocab_size=tok.vocab_size,
                        **dict(args.get("model_overrides") or {}))
  model, like = model_lib.init(cfg, jax.random.key(0))
  params, step = run_workdir.restore_params(source, like, step=ns.step)
  if ns.tasks in (None, "heldout"):
    tasks = run_workdir.heldout_tasks(launcher, args)
    if ns.limit:
      tasks = tasks[:ns.limit]
    where = f"the run's held-out set ({args['task']})"
  else:
    if ns.tasks.startswith("synthetic:") and ns.difficulty is None:
      ns.difficulty = list(args["difficulty"])
    tasks = _load_tasks(ns.tasks, ns, None, task_format=run_workdir.task_format(args))
    where = ns.tasks
  if launcher == "rounds_run.run":
    budget = dict(args.get("rounds_config") or {}).get(
        "max_new_tokens", rounds_lib.RoundsConfig.max_new_tokens)
  else:
    budget = args["method"].max_new_tokens
  unit = "round" if launcher == "rounds_run.run" else "iteration"
  what = f"{launcher} run {ns.workdir}, {unit} {step} ({source.what})"
  return model, params, tok, tasks, where, budget, what


def evaluate(ns) -> int:
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  from jaxsi.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  if bool(ns.hf_checkpoint) == bool(ns.workdir):
    print("jaxsi eval: give --hf_checkpoint=DIR or --workdir=DIR (one of them)",
          file=sys.stderr)
    return 2
  try:
    if ns.workdir:
      model, params, tok, tasks, where, budget, what = _workdir_policy(ns)
    else:
      from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
      from jaxsi.data import hf_tokenizer  # pylint: disable=g-import-not-at-top
      if ns.tasks in (None, "heldout"):
        raise ValueError("--tasks: required with --hf_checkpoint (synthetic:NAME,"
                         " gsm8k:PATH, math:PATH or jsonl:FILE)")
      if ns.difficulty is None:
        ns.difficulty = 1
      tok = hf_tokenizer.load_tokenizer(ns.tokenizer or ns.hf_checkpoint,
                                        eos_token=ns.eos_token)
      chat = tok.template if ns.chat_template else None
      tasks = _load_tasks(ns.tasks, ns, chat)
      model, params = hf.load_pretrained(ns.hf_checkpoint)
      where, budget, what = ns.tasks, 256, ns.hf_checkpoint
  except (FileNotFoundError, ValueError, checkpoint_lib.CheckpointError) as e:
    print(f"jaxsi eval: {e}", file=sys.stderr)
    return 2
  max_new_tokens = ns.max_new_tokens or budget
  strategy = (strategies.Greedy() if ns.temperature == 0
              else strategies.Sampling(temperature=ns.temperature))
  n = 1 if ns.temperature == 0 else ns.n
  res = evaluate_lib.evaluate_policy(
      model, params, tok, tasks, strategy=strategy, n=n,
      max_new_tokens=max_new_tokens, seed=ns.seed,
      batch_size=max(n, ns.batch_size // n * n))
  print(f"{what}: {len(tasks)} tasks from {where}, n={n},"
        f" {'greedy' if ns.temperature == 0 else f'temperature {ns.temperature}'},"
        f" max_new_tokens={max_new_tokens}")
  for k, v in res["overall"].items():
    print(f"  {k:12s} {v:.4f}" if isinstance(v, float) else f"  {k:12s} {v}")
  if ns.output:
    with open(ns.output, "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1, default=float)
    print(f"[eval] wrote {ns.output}")
  return 0


# -------------------------------------------------------------- test-time
TEST_TIME_GIN = "experiments/test_time_addition.gin"


def _test_time_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxsi test-time", formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False,
      description="Test-time scaling of one policy: the fixed-N selectors (first,"
      " majority, self-certainty best-of-N, Borda, likelihood, oracle) at every N"
      " from one generation, and the windowed early-stopping policies (ESC,"
      " Adaptive-Consistency, DSC) generated window by window; writes"
      " test_time.md / .json / .png (accuracy vs tokens per problem) in"
      f" --workdir. The launcher (jaxsi run) with --gin_file={TEST_TIME_GIN}"
      " (MAIN = @test_time_run.run); every other argument goes to it, e.g."
      " --gin.test_time_run.run.ns='[1, 2, 4, 8, 16]'.",
      epilog="examples:\n"
      "  jaxsi test-time --run=/tmp/grpo --workdir=/tmp/tt     # a run's latest params\n"
      "  jaxsi test-time --params_dir=/tmp/grpo/warm_start --workdir=/tmp/tt\n"
      "  jaxsi test-time --hf_checkpoint=DIR --workdir=/tmp/tt \\\n"
      "      --gin.test_time_run.run.tasks=\"'gsm8k:/data/gsm8k'\"\n\n"
      "test_time_run.run's arguments (bind with --gin.test_time_run.run.NAME=VALUE):\n"
      + _args_section("jaxsi.training.test_time_run", "run"))
  p.add_argument("--workdir", help="output directory (test_time.md/.json/.png)")
  src = p.add_mutually_exclusive_group()
  src.add_argument("--run", metavar="WORKDIR", help="an rl_run or rounds_run workdir: its"
                   " latest params, its model and its task (format, hardest level)")
  src.add_argument("--params_dir", help="a jaxsi checkpoint directory (the model of the"
                   " gin file unless bound)")
  src.add_argument("--hf_checkpoint", help="a local HF model directory")
  p.add_argument("--gin_file", action="append", default=None,
                 help=f"gin files (default {TEST_TIME_GIN})")
  return p


def _args_section(module: str, fn: str) -> str:
  """The ``Args:`` section of ``module.fn``'s docstring (its lines, dedented)."""
  import importlib  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  doc = inspect.getdoc(getattr(importlib.import_module(module), fn)) or ""
  lines, inside = [], False
  for line in doc.splitlines():
    if line.strip() == "Args:":
      inside = True
      continue
    if inside and line and not line.startswith(" "):
      break
    if inside:
      lines.append(line)
  return "\n".join(lines)


def test_time(args: Sequence[str], *, launcher) -> int:
  parser = _test_time_parser()
  ns, rest = parser.parse_known_args(list(args))
  bindings = []

  def bind(name, value):
    bindings.append(f"--gin_bindings=test_time_run.run.{name} = {value!r}")

  if ns.run:
    from jaxsi.training import run_workdir  # pylint: disable=g-import-not-at-top
    try:
      source = run_workdir.find_params(ns.run)
      _, run_args = run_arguments(ns.run)
    except (FileNotFoundError, ValueError) as e:
      print(f"jaxsi test-time: {e}", file=sys.stderr)
      return 2
    bind("params_dir", source.directory)
    bind("model", run_args["model"])
    bind("model_overrides", dict(run_args.get("model_overrides") or {}))
    bind("tasks", f"synthetic:{run_args['task']}")
    bind("task_format", run_workdir.task_format(run_args))
    bind("difficulty", int(max(run_args["difficulty"])))
  elif ns.params_dir:
    bind("params_dir", ns.params_dir)
  elif ns.hf_checkpoint:
    bind("hf_checkpoint", ns.hf_checkpoint)
  launcher_args = [f"--gin_file={f}" for f in (ns.gin_file or [TEST_TIME_GIN])]
  if ns.workdir:
    launcher_args.append(f"--workdir={ns.workdir}")
  return launcher(launcher_args + bindings + list(rest), prog="jaxsi test-time",
                   dry_run=False)


# ------------------------------------------------------------------ bench
