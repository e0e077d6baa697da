r"""A launcher entry point for the on-policy RL methods (``MAIN = @rl_run.run``).

Builds a synthetic task split (labelled problems for a supervised warm start,
an *unlabelled* pool for RL, held-out problems for evaluation), a model preset
(with a value head when the method trains one), warm-starts it with SFT, runs
:class:`jaxsi.training.loop.Loop` with the method bound in gin
(``rl_run.run.method = %METHOD``) and evaluates held-out pass@1 before, during
and after RL. Every ``gin_configs/methods/NAME.gin`` of the RL family defines
``METHOD``, so the method is one flag::

  python -m jaxsi.launch --gin_file=experiments/rl_addition.gin \
      --gin_file=methods/dapo.gin --workdir=/tmp/dapo_addition

Outputs in ``workdir``: ``warm_start/`` (the SFT params, Orbax), ``teacher/``
(KDRL only), ``ckpt/`` and ``metrics.jsonl`` (the RL loop), ``eval.jsonl``
(one line per evaluation: iteration, greedy and sampled pass@1 per difficulty
on the held-out set; for a multi-turn method also its greedy held-out
episode metrics under 'episode': acc_t1, acc_t2, wrong_to_right, ...) and
``results.json`` (before / after summary, ``multi_turn``). A multi-turn
method (``rollouts.Episodes``: SCoRe, UFO, ...) trains on episodes, with a
reward per model turn in the metrics (``reward/turnK/mean``). Rerunning
with the same ``workdir`` resumes: the warm start is restored, the RL loop
continues from its latest checkpoint and evaluations already written are not
repeated.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.models import config as model_config
from jaxsi.models import model as model_lib
from jaxsi.sampling import rollouts
from jaxsi.sampling import strategies
from jaxsi.training import arguments
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import evaluate as evaluate_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import optimizer as optimizer_lib
from jaxsi.training import loop as loop_lib
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import round_store


# ------------------------------------------------------------------ pieces
def split_tasks(*, task: str, difficulty: Sequence[int], n_train: int,
                n_test: int, labeled_fraction: float, seed: int,
                task_format: Optional[dict] = None,
                test_difficulty: Optional[Sequence[int]] = None):
  """(labelled, unlabelled, test) task lists; disjoint, deterministic in seed.

  ``n_train`` problems of the mixed ``difficulty`` levels are split at random
  into ``labeled_fraction`` labelled (warm start) and the rest unlabelled (the
  RL pool: only the verifier sees their answers).
  """
  fmt = dict(task_format or {})
  train, test = tasks_lib.make_train_test(
      task, n_train=n_train, n_test=n_test, difficulty=list(difficulty),
      test_difficulty=None if test_difficulty is None else list(test_difficulty),
      seed=seed, **fmt)
  perm = np.random.default_rng(seed).permutation(len(train))
  k = int(round(labeled_fraction * len(train)))
  labeled = [train[i] for i in perm[:k]]
  unlabeled = [train[i] for i in perm[k:]]
  return labeled, unlabeled, test


def supervised(*, model, params, tokenizer, prompts: Sequence[str],
               targets: Sequence[str], steps: int, learning_rate: float,
               batch_size: int = 64, seed: int = 0, desc: str = "warm-start"):
  """The RL warm start: ``fit.fit_sft`` on (prompt, target) pairs, cosine
  schedule, warmup ``min(20, steps // 4)``, batches of ``min(batch_size,
  len(prompts))`` rows; returns new params (the caller's stay valid)."""
  opt = fit_lib.OptimizerSpec(learning_rate=learning_rate, schedule="cosine",
                              warmup_steps=min(20, steps // 4), total_steps=max(steps, 1))
  return fit_lib.fit_sft(
      model=model, params=params, tokenizer=tokenizer,
      examples=[dict(prompt=p, completion=t) for p, t in zip(prompts, targets)],
      max_len=max((len(p) + len(t) for p, t in zip(prompts, targets)), default=0) + 2,
      optimizer=opt, steps=steps, batch_size=max(1, min(batch_size, len(prompts))),
      seed=seed, log_every=max(1, steps // 4), desc=desc).params


def cached_params(directory: str, abstract, build: Callable[[], Any]):
  """Restores params saved in ``directory``, or builds and saves them."""
  ckpt = checkpoint_lib.Checkpointer(directory, keep=1, async_save=False)
  try:
    if ckpt.latest_step() is not None:
      params, _ = ckpt.restore(abstract)
      return params, True
    params = build()
    ckpt.save(0, params, force=True)
    return params, False
  finally:
    ckpt.close()


def evaluate(*, model, params, tokenizer, tasks, temperature: float,
             samples: int, max_new_tokens: int, seed: int,
             episode: Any = None, reward_fns: Sequence[Callable] = (),
             eval_turns: Sequence[int] = (1, 2)) -> dict:
  """Held-out greedy pass@1 and sampled pass@1 (``samples`` per task).

  With ``episode`` (a multi-turn method's ``multiturn.EpisodeSpec``) also
  the greedy episode metrics under 'episode' (``acc_t1``, ``acc_t2``,
  ``gap``, ``wrong_to_right``, ... of ``eval_turns``; one episode per task,
  graded by ``reward_fns``): pass@1 above is the first attempt alone.
  """
  def pass_at_1(strategy, n, seed):
    return evaluate_lib.pass_at_1(model, params, tokenizer, tasks, strategy=strategy,
                                  n=n, max_new_tokens=max_new_tokens, seed=seed,
                                  batch_size=max(n, 256 // n * n))

  out = {"greedy": pass_at_1(strategies.Greedy(), 1, seed)}
  if samples > 0:
    out["sampled"] = pass_at_1(strategies.Sampling(temperature=temperature), samples,
                               seed + 1)
  if episode is not None:
    stats = evaluate_lib.evaluate_multi_turn(
        model=model, params=params, tokenizer=tokenizer, tasks=tasks,
        spec=episode, reward_fns=tuple(reward_fns),
        strategy=strategies.Greedy(), max_new_tokens=max_new_tokens,
        seed=seed + 2, batch_size=max(1, min(128, len(tasks))),
        first=int(eval_turns[0]), second=int(eval_turns[1]))
    out["episode"] = {k: float(v) for k, v in stats.items()
                      if isinstance(v, (int, float, np.floating))}
  return out


def _append_jsonl(path: str, record: dict) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


# --------------------------------------------------------------------- run
def run(*, workdir: str, method: spec_lib.Method, task: str = "addition",
        task_format: Optional[dict] = None, difficulty: Sequence[int] = (2,),
        test_difficulty: Optional[Sequence[int]] = None, n_train: int = 3000,
        n_test: int = 256, labeled_fraction: float = 0.5,
        rl_pool: Optional[int] = None,
        warm_start_max_difficulty: Optional[int] = None,
        model: str = "tiny", model_overrides: Optional[dict] = None,
        warm_start_steps: int = 300, warm_start_lr: float = 3e-3,
        warm_start_batch: int = 64, teacher_steps: Optional[int] = None,
        optimizer: Any = None, learning_rate: float = 3e-4,
        warmup_steps: int = 10, max_grad_norm: float = 1.0,
        steps: int = 100, prompts_per_step: int = 16, seed: int = 0,
        checkpoint_every: int = 25, eval_every: int = 0,
        eval_samples: int = 4, fast_compile: bool = True,
        reward_timeout_s: float = 60.0, max_skipped_iterations: int = 3,
        max_reward_failure_rate: float = 0.5, reward_failure_patience: int = 2,
        console: bool = False, staleness: int = 0,
        dry_run: bool = False, reward_model: Any = None) -> dict:
  """Warm start + RL of ``method`` on a synthetic task; returns the summary.

  Args:
    workdir: run directory (rerun to resume).
    method: the Method (``%METHOD`` of a ``gin_configs/methods`` file).
    task: registered synthetic task (``jaxsi.data.tasks``).
    task_format: its format options (default ``{'reverse': True}`` for
      addition: answers least-significant digit first).
    difficulty: difficulty levels of the training problems.
    test_difficulty: levels of the held-out problems (default ``difficulty``).
    n_train: training problems (labelled + unlabelled).
    n_test: held-out problems.
    labeled_fraction: fraction of the training problems with SFT labels; the
      rest is the RL pool.
    rl_pool: use only this many unlabelled problems for RL (default all).
    warm_start_max_difficulty: SFT only on labelled problems up to this level
      (harder levels are then seen only by RL).
    model: model preset; ``model_overrides`` replace its fields
      (``value_head`` is set when the method trains a value head).
    warm_start_steps: SFT steps (0: RL from the random init).
    warm_start_lr: peak SFT learning rate (cosine to 0).
    warm_start_batch: SFT batch size.
    teacher_steps: SFT steps of the KDRL teacher (default 2 × warm start),
      trained on the labelled *and* unlabelled problems (a teacher that saw
      the answers of the RL pool); only when the method needs a teacher.
    optimizer: optax transformation of the RL updates (e.g.
      ``@optimizer.make_optimizer()`` in gin); default: AdamW with
      ``learning_rate``, linear ``warmup_steps`` then constant,
      ``max_grad_norm`` clipping.
    learning_rate, warmup_steps, max_grad_norm: the default optimizer.
    steps: RL iterations.
    prompts_per_step: prompts per RL iteration (× ``method.n`` samples).
    seed: seed of data, model, SFT and RL.
    checkpoint_every: RL checkpoint interval (iterations).
    eval_every: evaluate every this many iterations (0: before/after only).
    eval_samples: sampled completions per held-out problem at the method's
      temperature (0: greedy only).
    fast_compile: cheaper XLA compilation (``loop.FAST_COMPILE``).
    reward_timeout_s: per-call timeout of host reward functions (a hang
      marks its samples failed after this long).
    max_skipped_iterations, max_reward_failure_rate, reward_failure_patience:
      when a run stops as failed (``loop.Loop``, ``training/guards.py``).
    console: print one metrics line per RL iteration.
    staleness: 0 (synchronous) or 1 (one-step off-policy pipelining: batch
      t from θ_{t−1}, generated while update t−1 runs; ``loop.Loop``).
    dry_run: build data, model and method, run nothing; returns the set-up.
    reward_model: a ``reward_model_role.RewardModelSpec`` (default one) —
      only for a method that reads the ``'reward_model'`` role: before RL, an
      RM is trained on the warm start's ranked samples of the labelled
      problems (``workdir/reward_model``, reused on resume), and
      ``results.json`` gets ``reward_model`` (its training info and the
      held-out RM score vs verifier accuracy before and after RL).

  Returns:
    ``{'method', 'before', 'after', 'iterations', 'seconds', ...}``; the same
    dict is written to ``workdir/results.json``.
  """
  t_start = time.time()
  A = arguments
  A.check("rl_run.run", locals(), dict(
      difficulty=A.integers(0), test_difficulty=A.integers(0),
      n_train=A.integer(2), n_test=A.integer(1), labeled_fraction=A.number(0, 1),
      rl_pool=A.integer(1), warm_start_max_difficulty=A.integer(0),
      warm_start_steps=A.integer(0), warm_start_lr=A.number(0, open_low=True),
      warm_start_batch=A.integer(1), teacher_steps=A.integer(1),
      learning_rate=A.number(0, open_low=True), warmup_steps=A.integer(0),
      max_grad_norm=A.number(0, open_low=True), steps=A.integer(0),
      prompts_per_step=A.integer(1), seed=A.integer(0),
      checkpoint_every=A.integer(0), eval_every=A.integer(0),
      eval_samples=A.integer(0), fast_compile=A.flag(), console=A.flag(),
      reward_timeout_s=A.number(0, open_low=True),
      max_skipped_iterations=A.integer(1),
      max_reward_failure_rate=A.number(0, 1), reward_failure_patience=A.integer(1),
      staleness=A.integer(0, 1), dry_run=A.flag()))
  if not isinstance(method, spec_lib.Method):
    raise spec_lib.ConfigurationError(
        f"rl_run.run trains an on-policy jaxsi.spec.Method; got"
        f" {type(method).__name__} {getattr(method, 'name', method)!r}, which"
        " needs another launcher (self-training rounds: MAIN = @rounds_run.run)")
  if (prompts_per_step * method.n) % method.minibatches:
    raise arguments.ArgumentError(
        f"rl_run.run.prompts_per_step = {prompts_per_step}: the batch"
        f" {prompts_per_step} × n={method.n} is not divisible by method"
        f" {method.name!r}'s minibatches={method.minibatches} (nothing was run)")
  from jaxsi.rewards import stages as reward_stages  # pylint: disable=g-import-not-at-top
  wants_rm = (method.needs(spec_lib.REWARD_MODEL) or spec_lib.REWARD_MODEL in
              reward_stages.stage_roles(reward_stages.as_stages(method.rewards)))
  if reward_model is not None and not wants_rm:
    raise arguments.ArgumentError(
        f"rl_run.run.reward_model is set but method {method.name!r} reads no"
        " 'reward_model' role (nothing was run)")
  os.makedirs(workdir, exist_ok=True)
  if task_format is None:
    task_format = {"reverse": True} if task == "addition" else {}
  tok = char_tokenizer.CharTokenizer()
  labeled, unlabeled, test = split_tasks(
      task=task, difficulty=difficulty, n_train=n_train, n_test=n_test,
      labeled_fraction=labeled_fraction, seed=seed, task_format=task_format,
      test_difficulty=test_difficulty)
  pool = unlabeled if rl_pool is None else unlabeled[:rl_pool]
  sft = [t for t in labeled if warm_start_max_difficulty is None
         or t.difficulty <= warm_start_max_difficulty]
  overrides = dict(model_overrides or {})
  if method.value_head:
    overrides["value_head"] = True
  cfg = model_config.get_config(model, vocab_size=tok.vocab_size, **overrides)
  mdl, init_params = model_lib.init(cfg, jax.random.key(seed))
  setup = dict(method=method.name, task=task, difficulty=list(difficulty),
               labeled=len(labeled), warm_start_examples=len(sft),
               rl_pool=len(pool), test=len(test),
               params=model_lib.count_params(init_params),
               prompts_per_step=prompts_per_step, n=method.n, steps=steps,
               multi_turn=isinstance(method.rollout, rollouts.Episodes))
  print(f"[rl_run] {setup}", flush=True)
  if dry_run:
    return setup

  # Warm start (cached in workdir/warm_start so a resumed run skips it).
  prompts = [t.prompt for t in sft]
  targets = [t.target for t in sft]
  # What the rollout stage needs taught (Guide: copy a hint's target).
  for prompt, target in method.rollout.supervised_extras(labeled):
    prompts.append(prompt)
    targets.append(target)

  def build_warm():
    if warm_start_steps <= 0:
      return init_params
    return supervised(model=mdl, params=init_params, tokenizer=tok,
                      prompts=prompts, targets=targets, steps=warm_start_steps,
                      learning_rate=warm_start_lr, batch_size=warm_start_batch,
                      seed=seed)

  warm, restored = cached_params(os.path.join(workdir, "warm_start"),
                                 init_params, build_warm)
  teacher = None
  if method.needs(spec_lib.TEACHER):
    every = labeled + unlabeled

    def build_teacher():
      return supervised(
          model=mdl, params=init_params, tokenizer=tok,
          prompts=[t.prompt for t in every], targets=[t.target for t in every],
          steps=teacher_steps or 2 * max(warm_start_steps, 1),
          learning_rate=warm_start_lr, batch_size=warm_start_batch,
          seed=seed + 1, desc="teacher")

    teacher_params, _ = cached_params(os.path.join(workdir, "teacher"),
                                      init_params, build_teacher)
    teacher = (mdl, teacher_params)

  rm_role = None
  if wants_rm:
    from jaxsi.training import reward_model_role  # pylint: disable=g-import-not-at-top
    rm_model, rm_params, rm_info = reward_model_role.build(
        reward_model or reward_model_role.RewardModelSpec(), model=mdl, params=warm,
        tokenizer=tok, tasks=labeled, max_new_tokens=method.max_new_tokens,
        seed=seed, directory=os.path.join(workdir, "reward_model"))
    rm_role = (rm_model, rm_params)

    def rm_report(params):
      return reward_model_role.heldout_report(
          rm_model=rm_model, rm_params=rm_params, model=mdl, params=params,
          tokenizer=tok, tasks=test, n=max(2, eval_samples),
          max_new_tokens=method.max_new_tokens, temperature=method.temperature,
          seed=seed)

    rm_info = dict(rm_info, before=rm_report(warm))
    print(f"[rl_run] reward model: {rm_info}", flush=True)

  # A multi-turn method trains episodes (the Loop runs its rollouts.Episodes
  # stage) and is evaluated on them too, besides first-attempt pass@1.
  episode_eval = {}
  if setup["multi_turn"]:
    episode_eval = dict(episode=method.rollout.episode,
                        reward_fns=method.rewards,
                        eval_turns=method.rollout.eval_turns)
  eval_path = os.path.join(workdir, "eval.jsonl")
  # One row per iteration, no torn line (an earlier run killed mid-write).
  metrics_lib.rewind_jsonl(eval_path, 2 ** 62, key="iteration")
  done = {int(r["iteration"]): r for r in (
      metrics_lib.read_jsonl(eval_path) if os.path.exists(eval_path) else [])}

  def do_eval(params, iteration: int) -> dict:
    if iteration in done:
      return done[iteration]
    res = evaluate(model=mdl, params=params, tokenizer=tok, tasks=test,
                   temperature=method.temperature, samples=eval_samples,
                   max_new_tokens=method.max_new_tokens, seed=seed + 7,
                   **episode_eval)
    record = {"iteration": iteration, **res}
    _append_jsonl(eval_path, record)
    done[iteration] = record
    print(f"[rl_run] eval @ {iteration}: {res}", flush=True)
    return record

  before = do_eval(warm, 0)
  if optimizer is None:
    optimizer = optimizer_lib.make_optimizer(
        learning_rate=learning_rate, schedule="constant",
        warmup_steps=warmup_steps, total_steps=max(steps, warmup_steps + 1),
        max_grad_norm=max_grad_norm)
  roles = {spec_lib.TEACHER: teacher} if teacher is not None else {}
  if rm_role is not None:
    roles[spec_lib.REWARD_MODEL] = rm_role
  trainer = loop_lib.Loop(
      model=mdl, params=warm, method=method, tokenizer=tok, tasks=pool,
      optimizer=optimizer, prompts_per_step=prompts_per_step, seed=seed,
      roles=roles, workdir=workdir, checkpoint_every=checkpoint_every,
      console=console, reward_timeout_s=reward_timeout_s,
      max_skipped_iterations=max_skipped_iterations,
      max_reward_failure_rate=max_reward_failure_rate,
      reward_failure_patience=reward_failure_patience, staleness=staleness,
      compiler_options=loop_lib.FAST_COMPILE if fast_compile else None)

  def callback(iteration, metrics):
    del metrics
    if eval_every and iteration % eval_every == 0 and iteration < steps:
      do_eval(trainer.state.params, iteration)

  # Killed after the checkpoint of an evaluation iteration, before its row:
  # the restored params are that iteration's, evaluate them now.
  if 0 < trainer.iteration < steps:
    callback(trainer.iteration, None)
  path = os.path.join(workdir, "results.json")
  previous = round_store.read_json(path) if os.path.exists(path) else None
  if previous is not None and trainer.iteration >= steps:
    trainer.close()   # a finished run: its results stay as they are
    print(f"[rl_run] {workdir} is finished ({trainer.iteration} iterations);"
          " results.json unchanged", flush=True)
    return previous
  try:
    history = trainer.run(steps, log_every=max(1, steps // 10),
                          callback=callback)
    after = do_eval(trainer.state.params, trainer.iteration)
    if rm_role is not None:
      rm_info["after"] = rm_report(trainer.state.params)
  finally:
    trainer.close()
  summary = dict(setup, before=before, after=after,
                 iterations=trainer.iteration, warm_start_restored=restored,
                 seconds=time.time() - t_start)
  if rm_role is not None:
    summary["reward_model"] = rm_info
  if history:
    last = history[-min(10, len(history)):]
    summary["train_reward_last10"] = float(np.mean(
        [h["reward/mean"] for h in last]))
  round_store.write_json_atomic(path, summary, indent=1)
  return summary
