r"""The ``jaxsi`` command: one entry point for the research workflow.

::

  jaxsi run --gin_file=quickstart.gin --workdir=/tmp/q     # = python -m jaxsi.launch
  jaxsi dry-run --gin_file=experiments/grpo_gsm8k_qwen2_5_0_5b_tpu.gin --cpu_devices=8
  jaxsi sweep gin_configs/sweeps/getting_started.toml --dir /tmp/gs --parallel 2
  jaxsi sweep --dir /tmp/gs --summary                      # tables + plots again
  jaxsi sweep FILE --dir /tmp/gs --slurm                   # sbatch script + trial list
  jaxsi compare /tmp/a /tmp/b                              # runs side by side
  jaxsi eval --hf_checkpoint=DIR --tasks=gsm8k:DIR         # a checkpoint on tasks
  jaxsi eval --workdir=/tmp/q                              # a run's latest params
  jaxsi test-time --run=/tmp/q --workdir=/tmp/tt           # selectors + policies vs N
  jaxsi bench rl_step -- --iters=3                         # benchmarks/ or experiments/
  jaxsi list [methods|models|tasks|gin]

``run`` and ``dry-run`` hand their arguments to the absl launcher unchanged
(``jaxsi.launch``; ``--gin.NAME=VALUE`` works), so ``python -m jaxsi.launch``
and ``jaxsi run`` are the same command. Every subcommand has its own
``--help``. Exit status: 0 success, 1 a sweep with failed trials, 2 bad
arguments or configuration (the launcher's convention), 3 a failed run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import glob
import json
import os
import runpy
import shlex
import sys
from typing import Optional, Sequence

from jaxsi import cli_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "gin_configs")
SCRIPT_DIRS = ("benchmarks", "experiments")


def _first_line(doc: Optional[str]) -> str:
  for line in (doc or "").strip().splitlines():
    if line.strip():
      return line.strip()
  return ""


# ------------------------------------------------------------ run, dry-run
def _launcher(args: Sequence[str], *, prog: str, dry_run: bool) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxsi import launch  # pylint: disable=g-import-not-at-top
  if any(a in ("-h", "--help", "--helpshort") for a in args):
    what = ("Builds and compiles MAIN without running it (the launcher with"
            " --dry_run): sharding plan, memory per device, compiled steps."
            if dry_run else "Runs the gin experiment's MAIN in a workdir (the"
            " absl launcher; a rerun in the same workdir resumes).")
    print(f"usage: {prog} --gin_file=FILE [--gin_file=...] [--gin.NAME=VALUE ...]"
          f" [--workdir=DIR]\n\n{what}\n\n{launch.__doc__.strip()}\n")
    print(flags.FLAGS.module_help(launch))
    return 0
  import gin  # pylint: disable=g-import-not-at-top
  argv = [prog] + list(args) + (["--dry_run"] if dry_run else [])
  old = sys.argv
  sys.argv = argv
  # A fresh launch each call (the CLI may run several in one process, e.g. a
  # notebook): no flag values or gin bindings left from the previous one.
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  try:
    launch.run()
  except SystemExit as e:
    return int(e.code or 0) if not isinstance(e.code, str) else 2
  finally:
    sys.argv = old
    flags.FLAGS.unparse_flags()
    gin.clear_config()
  return 0


# ------------------------------------------------------------------ sweep
def _sweep(ns) -> int:
  from jaxsi.sweep import definition  # pylint: disable=g-import-not-at-top
  from jaxsi.sweep import executor  # pylint: disable=g-import-not-at-top
  from jaxsi.sweep import summary as summary_lib  # pylint: disable=g-import-not-at-top
  if ns.trial or (ns.summary and ns.file is None):
    if not ns.dir:
      print("jaxsi sweep: --trial/--summary without a sweep file need --dir", file=sys.stderr)
      return 2
    if ns.trial:
      info = summary_lib.load_trials(ns.dir)
      match = [t for t in info["trials"] if t["id"] == ns.trial]
      if not match:
        print(f"jaxsi sweep: no trial {ns.trial!r} in {ns.dir}/{executor.TRIALS_FILE}",
              file=sys.stderr)
        return 2
      trial = definition.trial_from_json(match[0])
      if (executor.read_record(ns.dir, trial) or {}).get("status") == "done":
        print(f"[sweep] {trial.id} is finished")
        return 0
      rec = executor.run_trial(trial, ns.dir, extra_args=_extra(ns))
      print(f"[sweep] {trial.id}: {rec['status']} (exit status {rec['returncode']})")
      return 0 if rec["status"] == "done" else 1
    return _write_summary(ns, ns.dir, failed=[])
  if ns.file is None:
    print("jaxsi sweep: give a sweep file (e.g. gin_configs/sweeps/getting_started.toml)",
          file=sys.stderr)
    return 2
  try:
    sweep = definition.load_sweep(ns.file)
    trials = definition.expand(sweep)
  except definition.SweepError as e:
    print(f"jaxsi sweep: {e}", file=sys.stderr)
    return 2
  sweep_dir = ns.dir or os.path.join("sweeps", sweep.name)
  if ns.gin_bindings:
    trials = [dataclasses.replace(t, bindings=t.bindings + tuple(ns.gin_bindings))
              for t in trials]
  try:
    chosen = select(trials, ns.only)
  except ValueError as e:
    print(f"jaxsi sweep: {e}", file=sys.stderr)
    return 2
  only = {t.id for t in chosen} if ns.only else None
  if ns.list:
    for t in chosen:
      print(f"{t.id}\t{shlex.join(executor.launcher_command(t, executor.trial_dir(sweep_dir, t)))}")
    print(f"{len(chosen)} trials", file=sys.stderr)
    return 0
  if ns.slurm:
    from jaxsi.sweep import slurm  # pylint: disable=g-import-not-at-top
    try:
      opts = dict(o.split("=", 1) for o in ns.slurm_option)
    except ValueError:
      print(f"jaxsi sweep: --slurm_option expects KEY=VALUE, got {ns.slurm_option}",
            file=sys.stderr)
      return 2
    try:
      out = slurm.write_slurm(sweep, trials, sweep_dir, parallel=ns.parallel_cap,
                              options=opts, only=only)
    except ValueError as e:
      print(f"jaxsi sweep: {e}", file=sys.stderr)
      return 2
    if out["script"] is None:
      print(f"[sweep] every trial of {sweep.name} is finished; nothing to submit")
    else:
      print(f"[sweep] {out['count']} trials: sbatch {out['script']}")
    return 0
  if not ns.summary:
    try:
      records = executor.run_local(sweep, sweep_dir, parallel=ns.parallel,
                                   trials=trials, only=only, extra_args=_extra(ns))
    except executor.SweepBusy as e:
      print(f"jaxsi sweep: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt:
      return 130
    failed = [t.id for t in chosen
              if records.get(t.id) is None or records[t.id]["status"] != "done"]
  else:
    failed = []
  return _write_summary(ns, sweep_dir, failed=failed)


def _write_summary(ns, sweep_dir: str, *, failed) -> int:
  from jaxsi.sweep import summary as summary_lib  # pylint: disable=g-import-not-at-top
  try:
    summary = summary_lib.write_summary(sweep_dir, plot=not ns.noplot)
  except FileNotFoundError as e:
    print(f"jaxsi sweep: {e}", file=sys.stderr)
    return 2
  print(summary_lib.to_markdown(summary))
  print(f"[sweep] wrote {os.path.join(sweep_dir, summary_lib.SUMMARY_MD)},"
        f" {summary_lib.SUMMARY_JSON}" + (f" and {len(summary.get('plots', []))} plots"
                                          f" in {os.path.join(sweep_dir, 'plots')}"
                                          if not ns.noplot else ""))
  return 1 if failed else 0


def select(trials, only: Sequence[str]):
  """The trials whose labels match every ``AXIS=LABEL`` (values of one axis: or).

  Raises:
    ValueError: a malformed item, or an axis or label no trial has.
  """
  wanted: dict[str, set] = {}
  for item in only:
    if "=" not in item:
      raise ValueError(f"--only {item!r}: expected AXIS=LABEL (e.g. method=grpo, seed=0)")
    axis, label = item.split("=", 1)
    wanted.setdefault(axis, set()).add(label)

  def labels(t):
    return {**t.assignment, **({"seed": str(t.seed)} if t.seed is not None else {})}

  for axis, labs in wanted.items():
    known = {labels(t).get(axis) for t in trials} - {None}
    if not known:
      raise ValueError(f"--only {axis}=...: the sweep has no axis {axis!r}")
    missing = sorted(labs - known)
    if missing:
      raise ValueError(f"--only {axis}={missing[0]}: no such value (known: {', '.join(sorted(known))})")
  return [t for t in trials
          if all(labels(t).get(a) in labs for a, labs in wanted.items())]


def _extra(ns) -> list[str]:
  return [f"--allow_config_change={ns.allow_config_change}"] if ns.allow_config_change else []


# ---------------------------------------------------------------- compare
def _compare(ns) -> int:
  from jaxsi.sweep import compare  # pylint: disable=g-import-not-at-top
  try:
    res = compare.compare(ns.workdirs, metrics=ns.metric or None, curves=ns.curve or None)
  except (FileNotFoundError, ValueError) as e:
    print(f"jaxsi compare: {e}", file=sys.stderr)
    return 2
  text = compare.to_markdown(res)
  print(text)
  if ns.out:
    os.makedirs(ns.out, exist_ok=True)
    with open(os.path.join(ns.out, "compare.md"), "w", encoding="utf-8") as f:
      f.write(text)
    with open(os.path.join(ns.out, "compare.json"), "w", encoding="utf-8") as f:
      json.dump({k: v for k, v in res.items() if not k.startswith("_")}, f, indent=1)
    plot = compare.write_plot(res, os.path.join(ns.out, "compare.png"))
    print(f"[compare] wrote {ns.out}/compare.md, compare.json"
          + (f", {plot}" if plot else " (no learning curves to plot)"))
  return 0


# ------------------------------------------------------------------- eval
def bench_scripts() -> dict[str, str]:
  """``{name: path}`` of the scripts in benchmarks/ and experiments/."""
  out = {}
  for d in SCRIPT_DIRS:
    for path in sorted(glob.glob(os.path.join(REPO, d, "*.py"))):
      name = os.path.splitext(os.path.basename(path))[0]
      if not name.startswith("_"):
        out.setdefault(name, path)
        out[f"{d}/{name}"] = path
  return out


def _doc_of(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return _first_line(ast.get_docstring(ast.parse(f.read())))


def _bench(ns, rest: Sequence[str]) -> int:
  scripts = bench_scripts()
  if not ns.name:
    for name, path in scripts.items():
      if "/" in name:
        print(f"{name:34s} {_doc_of(path)}")
    return 0
  if ns.name not in scripts:
    print(f"jaxsi bench: no script {ns.name!r} in {', '.join(SCRIPT_DIRS)}/ (known:"
          f" {', '.join(n for n in scripts if '/' not in n)})", file=sys.stderr)
    return 2
  path = scripts[ns.name]
  old = sys.argv
  sys.argv = [path] + list(rest)
  try:
    runpy.run_path(path, run_name="__main__")
  except SystemExit as e:
    return int(e.code or 0) if not isinstance(e.code, str) else 2
  finally:
    sys.argv = old
  return 0


# ------------------------------------------------------------------- list
def gin_files() -> list[tuple[str, str]]:
  """``(path under gin_configs/, first comment line)`` of every gin and sweep file."""
  out = []
  for path in sorted(glob.glob(os.path.join(GIN_DIR, "**", "*.gin"), recursive=True)
                     + glob.glob(os.path.join(GIN_DIR, "sweeps", "*.toml"))):
    first = ""
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.startswith("#") and line.strip("# \n"):
          first = line.strip("# \n")
          break
    out.append((os.path.relpath(path, GIN_DIR), first))
  return out


def listing(what: str) -> list[str]:
  """One line per method / model preset / task / gin file, from the registries."""
  lines = []
  if what in ("all", "methods"):
    from jaxsi import methods  # pylint: disable=g-import-not-at-top
    for family, table in (("rl", methods.METHODS), ("multi-turn", methods.MULTI_TURN_METHODS),
                          ("self-training", methods.SELF_TRAINING_METHODS)):
      for name, fn in table.items():
        lines.append(f"method  {name:16s} {family:13s} {_first_line(fn.__doc__)}")
  if what in ("all", "models"):
    from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
    for name in mcfg.PRESETS:
      lines.append(f"model   {name:16s} {mcfg.describe(mcfg.get_config(name))}")
  if what in ("all", "tasks"):
    from jaxsi.data import registry  # pylint: disable=g-import-not-at-top
    from jaxsi.data import tasks as _tasks  # pylint: disable=g-import-not-at-top,unused-import
    for name in registry.task_names():
      lines.append(f"task    {name:16s} {_first_line(registry.get_generator(name).__doc__)}")
  if what in ("all", "gin"):
    for path, first in gin_files():
      lines.append(f"gin     {path:40s} {first}")
  return lines


# ------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxsi", description="jaxsi: run, sweep, evaluate and compare"
      " self-improvement experiments.", epilog="`jaxsi COMMAND --help` for each command.",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", metavar="COMMAND")
  sub.add_parser("run", help="run a gin experiment (the launcher: python -m jaxsi.launch)",
                 add_help=False)
  sub.add_parser("dry-run", help="plan and compile a gin experiment without running it",
                 add_help=False)
  sub.add_parser("test-time", help="test-time scaling of a run's or checkpoint's policy:"
                 " selectors at N = 1..8, early-stopping policies", add_help=False)

  s = sub.add_parser("sweep", help="run a sweep of trials, or summarise / export it",
                     description="Expand a sweep file (TOML: base gin files + bindings,"
                     " axes, seeds; see jaxsi/sweep/definition.py) into trials and run"
                     " them as launcher processes, N at a time; rerun to resume. Then"
                     " write summary.md / summary.json (mean ± std over seeds) and plots.")
  s.add_argument("file", nargs="?", help="the sweep file (e.g. gin_configs/sweeps/getting_started.toml)")
  s.add_argument("--dir", help="sweep directory (default sweeps/<name>)")
  s.add_argument("--parallel", type=int, default=1, help="trials running at once (default 1)")
  s.add_argument("--list", action="store_true", help="print the trials and their commands; run nothing")
  s.add_argument("--summary", action="store_true", help="only (re)write the summary of --dir")
  s.add_argument("--noplot", action="store_true", help="no plots in the summary")
  s.add_argument("--slurm", action="store_true", help="write an sbatch job-array script + trial list instead of running")
  s.add_argument("--slurm_option", action="append", default=[], metavar="KEY=VALUE",
                 help="an #SBATCH option (repeatable), e.g. partition=gpu")
  s.add_argument("--parallel_cap", type=int, default=None,
                 help="with --slurm: at most this many array tasks at once (%%N)")
  s.add_argument("--only", action="append", default=[], metavar="AXIS=LABEL",
                 help="run a slice: trials with this label (repeatable; one axis's"
                 " labels are or-ed), e.g. --only method=grpo --only seed=0")
  s.add_argument("--gin_bindings", action="append", default=[], metavar="'NAME = VALUE'",
                 help="an extra binding for every trial (repeatable; e.g. a tiny"
                 " smoke run: --gin_bindings='rl_run.run.steps = 2')")
  s.add_argument("--trial", help="run one trial of --dir's trials.json (a SLURM array task)")
  s.add_argument("--allow_config_change", default="",
                 help="passed to each trial's launcher (continue runs with changed bindings)")

  c = sub.add_parser("compare", help="runs side by side: table of final metrics + learning curves",
                     description="Read each WORKDIR's results.json / rounds.json /"
                     " metrics.jsonl and print a table of final metrics; with --out also"
                     " compare.md, compare.json and compare.png (learning curves).")
  c.add_argument("workdirs", nargs="+", metavar="WORKDIR")
  c.add_argument("--metric", action="append", default=[], help="final metric row (repeatable;"
                 " default: every metric that differs)")
  c.add_argument("--curve", action="append", default=[], help="metrics.jsonl column to plot"
                 " (repeatable; default reward/mean, loss)")
  c.add_argument("--out", help="directory for compare.md/.json/.png")

  e = sub.add_parser("eval", help="evaluate a checkpoint or a run's latest params on tasks (pass@k, maj@k)",
                     description="Sample completions of a policy on tasks and grade them:"
                     " pass@k and maj@k overall, per category and per difficulty"
                     " (jaxsi.training.evaluate.evaluate_policy). The policy is a local"
                     " HF checkpoint (--hf_checkpoint: config.json + safetensors +"
                     " tokenizer) or the latest parameters of an rl_run / rounds_run"
                     " run (--workdir: its ckpt/, pool/ or warm_start/ checkpoint;"
                     " only the params are read, never the optimizer state; model and"
                     " tasks from its config.gin, by default its held-out set)."
                     " Nothing is downloaded.")
  e.add_argument("--hf_checkpoint", help="local HF model directory")
  e.add_argument("--workdir", help="an rl_run or rounds_run run directory: its latest params")
  e.add_argument("--step", type=int, default=None, help="with --workdir: this iteration/round"
                 " instead of the latest")
  e.add_argument("--tokenizer", help="tokenizer directory or file (default the checkpoint)")
  e.add_argument("--tasks", help="synthetic:NAME | gsm8k:PATH | math:PATH | jsonl:FILE;"
                 " with --workdir also 'heldout' (the default: the run's held-out set)")
  e.add_argument("--split", default="test", help="gsm8k/math split (default test)")
  e.add_argument("--limit", type=int, default=None, help="first N tasks (synthetic: N tasks, default 100)")
  e.add_argument("--difficulty", type=int, default=None, help="synthetic tasks' difficulty"
                 " (default 1; with --workdir the run's levels)")
  e.add_argument("--n", type=int, default=1, help="samples per task (temperature > 0)")
  e.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
  e.add_argument("--max_new_tokens", type=int, default=None,
                 help="completion budget (default 256; with --workdir the run's)")
  e.add_argument("--batch_size", type=int, default=64)
  e.add_argument("--seed", type=int, default=0)
  e.add_argument("--chat_template", action="store_true", help="render gsm8k/math prompts with the chat template")
  e.add_argument("--eos_token", help="stop token override (e.g. '<|im_end|>')")
  e.add_argument("--output", help="write the full result (overall, by category/difficulty) as JSON")

  b = sub.add_parser("bench", help="run a script of benchmarks/ or experiments/ by name",
                     description="Run benchmarks/NAME.py or experiments/NAME.py with the"
                     " arguments after NAME (use -- before flags meant for the script)."
                     " Without NAME: list the scripts.")
  b.add_argument("name", nargs="?", help="script name (e.g. rl_step, bench, benchmarks/sampler)")

  l = sub.add_parser("list", help="methods, model presets, tasks and gin files, one line each")
  l.add_argument("what", nargs="?", default="all", choices=("all", "methods", "models", "tasks", "gin"))
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ("run", "dry-run"):
    return _launcher(argv[1:], prog=f"jaxsi {argv[0]}", dry_run=argv[0] == "dry-run")
  if argv and argv[0] == "test-time":
    return cli_eval.test_time(argv[1:], launcher=_launcher)
  rest: list[str] = []
  if argv and argv[0] == "bench":
    head = argv[:2] if len(argv) > 1 and not argv[1].startswith("-") else argv[:1]
    rest = argv[len(head):]
    if rest and rest[0] == "--":
      rest = rest[1:]
    elif len(head) == 2:
      pass  # everything after the name belongs to the script
    else:
      head, rest = argv, []
    argv = head
  parser = _parser()
  ns = parser.parse_args(argv)
  if ns.command is None:
    parser.print_help()
    return 2
  if ns.command == "sweep":
    return _sweep(ns)
  if ns.command == "compare":
    return _compare(ns)
  if ns.command == "eval":
    return cli_eval.evaluate(ns)
  if ns.command == "bench":
    return _bench(ns, rest)
  if ns.command == "list":
    for line in listing(ns.what):
      print(line)
    return 0
  parser.error(f"unknown command {ns.command!r}")
  return 2


def run() -> None:
  """Console-script entry point (``jaxsi``)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
