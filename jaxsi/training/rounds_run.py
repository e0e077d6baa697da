"""A launcher entry point for the rounds methods (``MAIN = @rounds_run.run``).

Builds a synthetic task split, a model preset and a :class:`RoundsConfig`, then
runs :func:`jaxsi.training.rounds.run_rounds` with the method bound in gin
(``rounds_run.run.method = %METHOD``, as the files in
``gin_configs/methods/{star,rft,rest_em,bstar,vstar,sharpening,easy_to_hard}.gin``
and ``gin_configs/quickstart.gin`` do), optionally with its labeled-only
control, and reports the rounds (printed table, ``results.md``,
``accuracy.png``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import jax

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.training import arguments
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import evaluation
from jaxsi.training import round_store
from jaxsi.training import rounds

CONTROL_DIR = "control"


def run(*, workdir: str, method: spec.RoundsMethod, task: str = "addition",
        task_format: Optional[dict] = None, difficulty: Sequence[int] = (2,),
        test_difficulty: Optional[Sequence[int]] = None, n_labeled: int = 1500,
        n_unlabeled: int = 2048, n_test: int = 256, model: str = "tiny",
        model_overrides: Optional[dict] = None, rounds_config: Optional[dict] = None,
        method_overrides: Optional[dict] = None,
        labeled_max_difficulty: Optional[int] = None, control: bool = False,
        plot: bool = True, seed: int = 0, dry_run: bool = False) -> Any:
  """Runs (or resumes) ``method`` on a synthetic task; returns the round records.

  Args:
    workdir: run directory (rerun to resume).
    method: the ``RoundsMethod`` (e.g. ``%METHOD`` of a method gin file).
    task: registered synthetic task.
    task_format: its format options (default ``{'reverse': True}`` for addition).
    difficulty: difficulty levels of the labeled and unlabeled problems.
    test_difficulty: levels of the held-out problems (default ``difficulty``);
      easy-to-hard runs give the unlabeled higher levels here too.
    n_labeled, n_unlabeled, n_test: split sizes.
    model: model preset; ``model_overrides`` replace its fields.
    rounds_config: ``RoundsConfig`` fields.
    method_overrides: ``RoundsMethod`` fields replacing the method's own
      (e.g. ``{'train_from': 'current'}``).
    labeled_max_difficulty: keep only labeled problems up to this level
      (easy-to-hard: the supervised range; harder levels stay unlabeled).
    control: also run :func:`rounds.labeled_only` of the method from the same
      warm start (in ``workdir/control``): the same M-step steps on the
      labeled set only, reported as a column beside the method's.
    plot: write ``accuracy.png`` (held-out pass@1 per round).
    seed: seed of data and model.
    dry_run: build everything, run nothing; returns the config.

  Returns:
    The method's round records (``rounds.run_rounds``; the control's are in
    ``workdir/control/rounds.json``), or the ``RoundsConfig`` if ``dry_run``.

  Raises:
    spec.ConfigurationError: ``method`` is an on-policy ``spec.Method``.
  """
  A = arguments
  A.check("rounds_run.run", locals(), dict(
      difficulty=A.integers(0), test_difficulty=A.integers(0),
      n_labeled=A.integer(1), n_unlabeled=A.integer(0), n_test=A.integer(1),
      labeled_max_difficulty=A.integer(0), control=A.flag(), plot=A.flag(),
      seed=A.integer(0), dry_run=A.flag()))
  A.check("rounds_run.run.rounds_config", dict(rounds_config or {}), dict(
      rounds=A.integer(0), warm_start_steps=A.integer(0),
      steps_per_round=A.integer(0), batch_size=A.integer(1), max_len=A.integer(2),
      learning_rate=A.number(0, open_low=True), warmup_steps=A.integer(0),
      weight_decay=A.number(0), max_grad_norm=A.number(0, open_low=True),
      max_new_tokens=A.integer(1), rollout_batch=A.integer(1),
      chunk_size=A.integer(1), save_every=A.integer(1), eval_n=A.integer(1),
      reward_timeout_s=A.number(0, open_low=True),
      seed=A.integer(0)))
  known = {f.name for f in dataclasses.fields(rounds.RoundsConfig)}
  unknown = sorted(set(rounds_config or {}) - known)
  if unknown:
    raise arguments.ArgumentError(
        f"rounds_run.run.rounds_config: unknown field(s) {unknown}; RoundsConfig"
        f" has {sorted(known)}")
  rounds.check_method(method, "rounds_run.run")
  fmt = dict({"reverse": True} if task == "addition" and task_format is None
             else (task_format or {}))
  tok = char_tokenizer.CharTokenizer()
  config = rounds.RoundsConfig(**dict(rounds_config or {}, seed=seed))
  method = dataclasses.replace(method, **dict(method_overrides or {}))
  # Built up front so a method without a control fails before the main run.
  control_method = rounds.labeled_only(method) if control else None
  pool, test = tasks_lib.make_train_test(
      task, n_train=n_labeled + n_unlabeled, n_test=n_test, difficulty=list(difficulty),
      test_difficulty=None if test_difficulty is None else list(test_difficulty),
      seed=seed, **fmt)
  cfg = model_config.get_config(model, vocab_size=tok.vocab_size, **(model_overrides or {}))
  mdl, params = model_lib.init(cfg, jax.random.key(seed))
  labeled, unlabeled = pool[:n_labeled], pool[n_labeled:]
  if labeled_max_difficulty is not None:
    labeled = [t for t in labeled if t.difficulty <= labeled_max_difficulty]
  if dry_run:
    return config
  print(f"[jaxsi] {method.name}: model {model} {model_lib.count_params(params):,}"
        f" params; {task} difficulty {list(difficulty)}; labeled {len(labeled)},"
        f" unlabeled {len(unlabeled)}, test {len(test)}", flush=True)
  common = dict(model=mdl, init_params=params, tokenizer=tok, labeled=labeled,
                unlabeled=unlabeled, test=test, config=config)
  records = rounds.run_rounds(method=method, workdir=workdir, **common)
  control_records = None
  if control:
    main_pool = pool_lib.CheckpointPool(round_store.RoundStore(workdir).pool_dir)
    warm = main_pool.params(0, like=params)
    main_pool.close()
    control_records = rounds.run_rounds(
        method=control_method, warm_params=warm,
        workdir=os.path.join(workdir, CONTROL_DIR), **common)
  report(records, workdir=workdir, control_records=control_records,
         title=f"{method.name} on {task} ({model} model)", plot=plot)
  return records


def report(records: Sequence[dict], *, workdir: str,
           control_records: Optional[Sequence[dict]] = None, title: str = "",
           plot: bool = True) -> str:
  """Prints the round table and writes it to ``results.md`` (and ``accuracy.png``).

  Args:
    records: the method's round records.
    workdir: where ``results.md`` and ``accuracy.png`` go.
    control_records: round records of the labeled-only control, if run.
    title: plot title.
    plot: write ``accuracy.png``.

  Returns:
    The markdown table.
  """
  control = {r["round"]: r["test_pass1"] for r in control_records or ()}
  extra = []
  if control_records is not None:
    extra.append(("control (labeled only)", lambda rec: control[rec["round"]]))
  extra += [("sample acc (unlabeled)", lambda rec: rec["select"]["sample_accuracy"]),
            ("time (s)", lambda rec: str(rec["seconds"]))]
  table = rounds.history_table(records, extra=extra)
  print("\n" + table, flush=True)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  if plot:
    curves = {"round": [r["round"] for r in records],
              "held-out pass@1": [r["test_pass1"] for r in records]}
    if control_records is not None:
      curves["control: labeled only"] = [control.get(r["round"]) for r in records]
    evaluation.plot_curves(curves, os.path.join(workdir, "accuracy.png"), x="round",
                           title=title, ylabel="pass@1")
  return table
