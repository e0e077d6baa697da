"""What a rounds method's callbacks may use: sampling, scoring, fitting, pools.

A rounds method (``jaxsi.spec.RoundsMethod``, built in ``jaxsi.methods``)
never imports ``jaxsi.training``; its callbacks receive a
:class:`RoundContext`. Sampling goes through the on-policy loop's own pieces:
a rollout stage (``jaxsi.sampling.rollouts.Sample`` with a
``spec.RolloutSpec``) called on the loop's ``stage_context.StageContext``
over the sampled tasks, so rewards are the same ``jaxsi.rewards.stages``
(named columns, group ids, per-group retry on failure) in both schedules.

Sampling layout (the PRNG stream of a chunk): the tasks are cut into sampler
batches of ``config.rollout_batch // n`` prompts (the last one padded with
invalid dummy rows, so the sampler compiles once per prompt bucket); the
batch starting at task c0 is sampled with key ``fold_in(rng, c0)`` (a plain
``Sample`` stage's ``one_batch`` gets that key itself; another stage gets it
as its rng).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi import spec as spec_lib
from jaxsi import trajectory as traj_lib
from jaxsi.data import batching
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.rewards import stages as reward_stages
from jaxsi.rewards import verifiers
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts
from jaxsi.sampling import strategies
from jaxsi.training import checkpoint_pool as pool_lib
from jaxsi.training import round_fit
from jaxsi.training import round_store
from jaxsi.training import stage_context

DEFAULT_REWARDS = (reward_lib.correctness_reward,)


# ------------------------------------------------------------------ samples
@dataclasses.dataclass
class Samples:
  """Graded samples of a task list (``n`` per task, contiguous).

  Attributes:
    traj: host Trajectory with ``rewards`` f32[B, K] set; ``prompt_ids``
      index ``tasks``.
    rewards: f32[B, K] (NaN: failed).
    reward_names: the K column names.
    texts: decoded completions.
    correct: bool[B] first reward column ≥ 1.
    answers: extracted canonical answers (None: unparseable).
    tasks: the tasks sampled (prompt as sampled).
    n: samples per task.
    seconds: wall time.
    tokens_generated: completion tokens.
    caches: with ``sample(keep_cache=True)``: one (host traj, device
      KVCache) per sampler batch, in row order (see
      :meth:`RoundContext.continue_samples`); else None.
    cache_params: the parameters those caches were computed with.
  """

  traj: Any
  rewards: np.ndarray
  reward_names: tuple
  texts: list
  correct: np.ndarray
  answers: list
  tasks: list
  n: int
  seconds: float = 0.0
  tokens_generated: int = 0
  caches: Optional[list] = dataclasses.field(default=None, repr=False, compare=False)
  cache_params: Any = dataclasses.field(default=None, repr=False, compare=False)

  def records(self, **extra_fields) -> list[dict]:
    """One JSON record per sample (``n`` per task, in order).

    Fields: task_id, prompt, answer_gold, difficulty, sample (index within
    the task), completion, answer, correct, plus ``extra_fields`` (each a
    per-sample sequence or a scalar).
    """
    out = []
    for i, text in enumerate(self.texts):
      task = self.tasks[i // self.n]
      rec = dict(task_id=task.id, prompt=task.prompt, answer_gold=task.answer,
                 difficulty=int(task.difficulty), sample=i % self.n, completion=text,
                 answer=self.answers[i], correct=bool(self.correct[i]))
      for k, v in extra_fields.items():
        rec[k] = v[i] if isinstance(v, (list, tuple, np.ndarray)) else v
        if isinstance(rec[k], np.generic):
          rec[k] = rec[k].item()
      out.append(rec)
    return out

  def stored(self) -> round_store.StoredChunk:
    return round_store.StoredChunk(
        traj=self.traj, reward_names=tuple(self.reward_names),
        task_ids=[t.id for t in self.tasks], prompt_texts=[t.prompt for t in self.tasks])


# ------------------------------------------------------------ log-likelihood
_SEQ_LOGPROB_CACHE: dict = {}


def sequence_logprobs(model: Any, params: Any, traj: Any, *,
                      normalize: bool = False) -> np.ndarray:
  """f32[B]: log π(y | x) = Σ_t loss_mask·log p(y_t | ·) (mean if ``normalize``).

  Scored at temperature 1 (the model's own likelihood, as in SFT-Sharpening,
  Huang et al. 2024, Eq. 3).
  """
  fn = _SEQ_LOGPROB_CACHE.get(model)
  if fn is None:
    def f(p, tokens, positions, input_mask, loss_mask):
      lp, _ = logprobs_lib.token_logprobs(model, p, tokens, positions,
                                          input_mask=input_mask)
      m = loss_mask.astype(jnp.float32)
      return jnp.sum(lp * m, axis=-1), jnp.sum(m, axis=-1)
    fn = _SEQ_LOGPROB_CACHE[model] = jax.jit(f)
  total, count = jax.device_get(fn(params, traj.tokens, traj.positions,
                                   traj.input_mask, traj.loss_mask))
  total, count = np.asarray(total), np.asarray(count)
  return total / np.maximum(count, 1.0) if normalize else total


# ------------------------------------------------------------------ context
@dataclasses.dataclass
class RoundContext:
  """What a method's callbacks may use in round ``round``.

  Attributes:
    round: the round number (1-based; 0 = warm start).
    model: the static model.
    params: parameters of the model that generates this round (round r-1;
      after the M-step, in ``after_round`` / ``evaluate``: round r's).
    base_params: the warm-started parameters (round 0).
    tokenizer: the tokenizer.
    rng: this callback's PRNG key (per chunk for ``sample_chunk``).
    pool: the :class:`CheckpointPool` (any past round's model).
    config: the run's ``RoundsConfig``.
    workdir: the run directory (methods may keep their own artefacts there).
    labeled_examples: the warm-start examples (``method.warm_start`` of the
      labeled tasks), e.g. for methods that train extra models.
    unlabeled: the run's unlabeled tasks (e.g. V-STaR's verifier samples).
    method: the running ``spec.RoundsMethod`` (its rollout and rewards
      stages are the defaults of :meth:`sample`).
    generated: every :meth:`sample` made through this context, in order
      (a chunk's stored trajectories).
  """

  round: int
  model: Any
  params: Any
  base_params: Any
  tokenizer: Any
  rng: jax.Array
  pool: Any
  config: Any
  workdir: str
  labeled_examples: Sequence[dict] = ()
  unlabeled: Sequence[Any] = ()
  method: Optional[spec_lib.RoundsMethod] = None
  generated: list = dataclasses.field(default_factory=list)

  # -- sampling
  def sample(self, tasks: Sequence[Any], *, stage: Any = None, n: Optional[int] = None,
             temperature: Optional[float] = None, strategy: Any = None,
             rng: Optional[jax.Array] = None, params: Any = None,
             rewards: Optional[Sequence[Any]] = None,
             keep_cache: bool = False) -> Samples:
    """Graded samples of ``tasks`` by a rollout stage and reward stages.

    Args:
      tasks: the tasks (their prompts are sampled).
      stage: the rollout stage (default: the method's ``rollout``, else
        ``rollouts.Sample`` of a RolloutSpec of ``n`` / ``temperature`` /
        ``strategy``). Given ``n``, ``temperature`` or ``strategy`` override
        the stage's spec; its budget is always ``config.max_new_tokens``.
      rng: the key (default ``self.rng``).
      params: the sampling parameters (default ``self.params``).
      rewards: reward stages or functions (default: the method's, else the
        task verifier).
      keep_cache: keep each sampler batch's KV cache in ``Samples.caches``
        (a plain ``rollouts.Sample`` stage only), so a follow-up prompt can
        continue the generation (:meth:`continue_samples`) instead of
        re-encoding it. The caches hold device memory until dropped.
    """
    stage = self._stage(stage, n, temperature, strategy)
    if keep_cache and type(stage) is not rollouts.Sample:
      raise ValueError(f"RoundContext.sample: keep_cache needs a plain rollouts.Sample"
                       f" stage (one sampler call per batch), got {type(stage).__name__}")
    spec = stage.spec
    n = int(spec.n)
    fns = rewards if rewards is not None else (
        (self.method.rewards if self.method is not None else ()) or DEFAULT_REWARDS)
    stages = reward_stages.as_stages(fns)
    names = stage.reward_names(reward_stages.stage_names(stages))
    rng = self.rng if rng is None else rng
    params = self.params if params is None else params
    tasks = list(tasks)
    per_batch = max(1, self.config.rollout_batch // n)
    batches = itertools.cycle([np.arange(c0, min(c0 + per_batch, len(tasks)))
                               for c0 in range(0, len(tasks), per_batch)])
    tok = self.tokenizer
    sctx = stage_context.StageContext(
        model=self.model, tokenizer=tok, tasks=tasks, stages=stages, reward_names=names,
        strategy=rollouts.strategy_of(spec), max_new_tokens=int(spec.max_new_tokens),
        prompts=batching.encode_prompts(tok, tasks),
        prompt_variants={k: [batching.encode_prompt(tok, fn(t)) for t in tasks]
                         for k, fn in stage.prompt_variants().items()},
        next_prompts=lambda: next(batches), batch_prompts=per_batch,
        reward_timeout_s=self.config.reward_timeout_s)
    sctx.keep_caches = bool(keep_cache)
    t0 = time.perf_counter()
    trajs, cols = [], []
    for c0 in range(0, len(tasks), per_batch):
      key = jax.random.fold_in(rng, c0)
      # A plain Sample draws its one generation batch under the chunk key
      # itself — the stream rounds have always used, so stored runs and the
      # documented results reproduce; other stages get it as their rng.
      batch = (stage.one_batch(sctx, params, key) if type(stage) is rollouts.Sample
               else stage(sctx, params, key))
      trajs.append(batch.traj)
      cols.append(np.asarray(batch.rewards, np.float32))
    if not trajs:
      raise ValueError("RoundContext.sample: no tasks")
    length = max(t.tokens.shape[1] for t in trajs)
    traj = jax.tree.map(np.asarray, traj_lib.concat(
        [traj_lib.pad_length(t, length) for t in trajs]))
    rew = np.concatenate(cols)
    traj = traj.replace(rewards=rew, extras=dict(
        traj.extras, part=np.full((rew.shape[0],), len(self.generated), np.int32)))
    texts = [self.tokenizer.decode(row[m].tolist())
             for row, m in zip(traj.tokens, traj.loss_mask)]
    correct = np.nan_to_num(rew[:, 0], nan=0.0) >= 1.0
    answers = [verifiers.canonical_answer(tasks[i // n], t) for i, t in enumerate(texts)]
    out = Samples(traj=traj, rewards=rew, reward_names=tuple(names), texts=texts,
                  correct=correct, answers=answers, tasks=tasks, n=n,
                  seconds=time.perf_counter() - t0,
                  tokens_generated=int(traj.loss_mask.sum()),
                  caches=list(sctx.caches) if keep_cache else None,
                  cache_params=params if keep_cache else None)
    self.generated.append(out)
    return out

  def continue_samples(self, samples: Samples, suffix: str, *,
                       strategy: Any = None, rng: Optional[jax.Array] = None,
                       params: Any = None) -> Optional[list]:
    """Texts of one more turn after ``suffix`` on every sample, from the cache.

    ``samples`` must come from ``sample(keep_cache=True)``; each completion's
    stop token is dropped and ``suffix`` appended
    (``jaxsi.sampling.continuation``), as if the prompt were ``prompt +
    completion + suffix``, without re-encoding prompt and completion. The
    budget is ``config.max_new_tokens``.

    Args:
      samples: the samples (their caches are released afterwards).
      suffix: the follow-up text (non-empty).
      strategy: the new turn's strategy (default greedy).
      rng: PRNG key (default ``self.rng``).
      params: the parameters to continue with (default: those that sampled
        ``samples``; other parameters cannot reuse the cache).

    Returns:
      One text per sample, or None when the caches are gone or were computed
      with other parameters (the caller then encodes the prompts itself).
    """
    if not samples.caches or (params is not None and params is not samples.cache_params):
      return None
    ids = self.tokenizer.encode(suffix)
    rng = self.rng if rng is None else rng
    texts = []
    for i, (traj, cache) in enumerate(samples.caches):
      texts += continuation.continue_texts(
          self.model, samples.cache_params, traj, cache, ids, tokenizer=self.tokenizer,
          max_new_tokens=int(self.config.max_new_tokens),
          strategy=strategy if strategy is not None else strategies.Greedy(),
          rng=jax.random.fold_in(rng, i), stop_ids=(int(self.tokenizer.eos_id),),
          pad_id=int(self.tokenizer.pad_id))
    samples.caches, samples.cache_params = None, None
    if len(texts) != len(samples.texts):
      raise ValueError(f"continue_samples: {len(texts)} continuations for"
                       f" {len(samples.texts)} samples")
    return texts

  def _stage(self, stage, n, temperature, strategy):
    if stage is None and self.method is not None and self.method.rollout is not None:
      stage = self.method.rollout
    if stage is None:
      stage = rollouts.Sample(spec_lib.RolloutSpec(
          n=1 if n is None else int(n), max_new_tokens=int(self.config.max_new_tokens),
          temperature=0.0 if temperature is None else float(temperature),
          strategy=strategy))
      return stage
    # One completion budget for the whole run (sampling and evaluation).
    changes = {k: v for k, v in (("n", n), ("temperature", temperature),
                                 ("strategy", strategy)) if v is not None}
    changes["max_new_tokens"] = int(self.config.max_new_tokens)
    return dataclasses.replace(stage, spec=dataclasses.replace(stage.spec, **changes))

  # -- scoring
  def sequence_logprobs(self, traj: Any, *, params: Any = None,
                        normalize: bool = False) -> np.ndarray:
    """log π(y|x) of each row under ``params`` (default: the round's model)."""
    return sequence_logprobs(self.model, self.params if params is None else params,
                             traj, normalize=normalize)

  # -- training and storage
  def fit_sft(self, *, params: Any, examples: Sequence[dict], steps: int,
              ckpt_dir: Optional[str], seed: int, desc: str = "sft") -> Any:
    """Resumable SFT (``round_fit.fit_sft`` with the run's settings); params."""
    out, _ = round_fit.fit_sft(model=self.model, params=params, tokenizer=self.tokenizer,
                               examples=examples, steps=steps, config=self.config,
                               ckpt_dir=ckpt_dir, seed=seed, desc=desc)
    return out

  def fit_pairs(self, *, params: Any, reference: Any, pairs: Sequence[dict], steps: int,
                seed: int, objective: str = "dpo", pairs_per_batch: Optional[int] = None,
                ckpt_dir: Optional[str] = None, desc: str = "pairs",
                config: Any = None, **settings) -> tuple[Any, dict]:
    """A pairwise M-step (``round_fit.fit_pairs``); (params, tail metrics)."""
    return round_fit.fit_pairs(model=self.model, params=params, reference=reference,
                               tokenizer=self.tokenizer, pairs=pairs, steps=steps,
                               config=config or self.config, seed=seed,
                               objective=objective, pairs_per_batch=pairs_per_batch,
                               ckpt_dir=ckpt_dir, desc=desc, **settings)

  def open_pool(self, *parts: str) -> pool_lib.CheckpointPool:
    """A CheckpointPool under ``workdir/parts…`` (close it after use)."""
    return pool_lib.CheckpointPool(os.path.join(self.workdir, *parts))

  @property
  def store(self) -> round_store.RoundStore:
    return round_store.RoundStore(self.workdir)

  def round_train_set(self, r: int) -> list[dict]:
    """The method's SFT M-step data of round ``r`` (``round_store.round_train_set``)."""
    return round_store.round_train_set(self.method, self.labeled_examples, self.store, r)

  def round_steps(self, r: int) -> int:
    """The method's M-step length of round ``r``."""
    return round_fit.round_steps(self.method, self.config, r)

  def init_params(self, seed: int) -> Any:
    """Fresh parameters of the model from ``seed`` (an independent model)."""
    return self.model.init_params(jax.random.key(seed))
