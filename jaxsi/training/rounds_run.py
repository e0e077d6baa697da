"""A launcher entry point for the rounds methods (``MAIN = @rounds_run.run``).

Builds a synthetic task split, a model preset and a :class:`RoundsConfig`, then
runs :func:`jaxsi.training.rounds.run_rounds` with the method bound in gin
(``rounds_run.run.method = %METHOD``, as the files in
``gin_configs/methods/{star,rft,rest_em,bstar,vstar,sharpening,easy_to_hard}.gin`` do).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax

from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.training import rounds


def run(*, workdir: str, method: rounds.RoundsMethod, task: str = "addition",
        task_format: Optional[dict] = None, difficulty: Sequence[int] = (2,),
        test_difficulty: Optional[Sequence[int]] = None, n_labeled: int = 1500,
        n_unlabeled: int = 2048, n_test: int = 256, model: str = "tiny",
        model_overrides: Optional[dict] = None, rounds_config: Optional[dict] = None,
        labeled_max_difficulty: Optional[int] = None, seed: int = 0,
        dry_run: bool = False) -> Any:
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
    labeled_max_difficulty: keep only labeled problems up to this level
      (easy-to-hard: the supervised range; harder levels stay unlabeled).
    seed: seed of data and model.
    dry_run: build everything, run nothing; returns the config.
  """
  fmt = dict({"reverse": True} if task == "addition" and task_format is None
             else (task_format or {}))
  tok = char_tokenizer.CharTokenizer()
  config = rounds.RoundsConfig(**dict(rounds_config or {}, seed=seed))
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
  return rounds.run_rounds(method=method, model=mdl, init_params=params, tokenizer=tok,
                           labeled=labeled, unlabeled=unlabeled,
                           test=test, workdir=workdir, config=config)
