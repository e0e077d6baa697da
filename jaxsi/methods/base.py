"""The method spec shared by every on-policy RL method, and its rescoring transforms.

A method is ``rollout spec + reward fns + transform chain + objective`` (DESIGN.md
"Transforms and objectives"). :class:`RLMethod` is that tuple as a frozen
dataclass; ``jaxsi.training.rl`` runs any of them with the same loop. Each
factory in ``jaxsi/methods/`` returns an ``RLMethod`` and names its paper and
equation.

The loop's side of the rescoring contract: it puts the parameter sets
``'policy'`` (current params, not a copy), ``'reference'`` (frozen warm start)
and ``'teacher'`` in ``Context.params`` and the scorers ``'policy'``,
``'policy_entropy'`` (with per-token entropy), ``'policy_values'`` (value
head) and ``'teacher'`` in ``Context.scorers``; the library transforms
``rescoring.ref_logprobs``/``teacher_logprobs`` and
``importance.old_logprobs`` read them. This module adds the two transforms
only the RL loop's data needs: :func:`policy_values` (PPO) and
:func:`guided_old_logprobs` (Guide).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxsi.sampling import strategies
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import (Context, ObjectiveTerm, TrajectoryTransform,
                                   stateless)

sg = jax.lax.stop_gradient

# Names the loop uses in Context.params / Context.scorers.
POLICY = "policy"
REFERENCE = "reference"
TEACHER = "teacher"
POLICY_VALUES = "policy_values"
POLICY_ENTROPY = "policy_entropy"
GUIDED_KEY = "guided"
HINT_LOGPROBS_KEY = "hint_logprobs"


@dataclasses.dataclass(frozen=True)
class DynamicSampling:
  """DAPO dynamic sampling (Yu et al. 2025, arXiv:2503.14476, §3.2 / Alg. 1).

  The loop keeps generating batches of ``prompts_per_step`` prompts, keeps the
  groups whose sequence rewards are not all equal (0 < #correct < G), and stops
  when ``prompts_per_step`` such groups are collected or after
  ``max_gen_batches`` generation batches (then the batch is completed with
  filtered groups marked ``valid=False``, so shapes stay fixed).

  Attributes:
    max_gen_batches: generation batches per step at most (verl
      ``max_num_gen_batches``).
    atol: a group is zero-variance when max − min ≤ atol.
  """

  max_gen_batches: int = 4
  atol: float = 0.0


@dataclasses.dataclass(frozen=True)
class GuideSpec:
  """Guide (Nath et al. 2025, "Adaptive Guidance Accelerates Reinforcement
  Learning of Reasoning Models", arXiv:2506.13923, Guide-GRPO).

  For every group whose samples all fail (max reward ≤ ``fail_threshold``), the
  loop samples ``round(fraction·n)`` new completions from the prompt with a hint
  appended (``hint_fn(task) -> str``, e.g. the answer), places them under the
  **plain** prompt (same columns: the completion does not move) and replaces that
  many of the group's failed samples. Their rewards are computed for the plain
  task. ``extras['guided']`` marks them and ``extras['hint_logprobs']`` keeps
  their behaviour log-probs under the hinted prompt; the method's
  :func:`guided_old_logprobs` transform uses those as π_old, so the importance
  ratio is π_θ(o | q) / π_old(o | q, h) (the paper's off-policy correction).

  Attributes:
    hint_fn: task → hint text appended to the prompt text.
    fraction: fraction of an all-fail group replaced by guided samples.
    fail_threshold: a group fails when every reward ≤ this.
  """

  hint_fn: Callable[[Any], str]
  fraction: float = 0.5
  fail_threshold: float = 0.0


@dataclasses.dataclass(frozen=True)
class RLMethod:
  """An on-policy RL method as data: what to sample, score, transform, optimise.

  Attributes:
    name: method name (logging).
    n: samples per prompt (group size G).
    strategy: sampling strategy (its temperature is also used to score).
    max_new_tokens: completion budget per sample.
    reward_fns: host reward fns ``fn(tasks, completions) -> f32[B] | f32[B, K]``;
      their columns are concatenated into ``traj.rewards`` f32[B, K].
    transform: the trajectory transform chain (ref/old log-probs, reward
      shaping, advantages, filters, ...), run jitted after the rewards.
    objective: the objective term minimised by the update.
    epochs: optimisation passes over each rollout batch.
    minibatches: minibatches per epoch (each one optimizer step; B must divide).
    reference: keep a frozen copy of the initial params as ``'reference'``.
    teacher: the method needs ``'teacher'`` params/scorer (KDRL).
    with_entropy: compute per-token entropy in the update's forward pass.
    with_values: the model has a value head trained by the objective (PPO).
    dynamic_sampling: DAPO refill of zero-variance groups, or None.
    guide: Guide hint-conditioned resampling of all-fail groups, or None.
  """

  name: str
  n: int
  strategy: Any
  max_new_tokens: int
  reward_fns: Tuple[Callable, ...]
  transform: TrajectoryTransform
  objective: ObjectiveTerm
  epochs: int = 1
  minibatches: int = 1
  reference: bool = False
  teacher: bool = False
  with_entropy: bool = True
  with_values: bool = False
  dynamic_sampling: Optional[DynamicSampling] = None
  guide: Optional[GuideSpec] = None

  def __post_init__(self):
    if self.n < 1:
      raise ValueError(f"RLMethod {self.name}: n must be >= 1, got {self.n}")
    if self.max_new_tokens < 1:
      raise ValueError(f"RLMethod {self.name}: max_new_tokens must be >= 1")
    if self.epochs < 1 or self.minibatches < 1:
      raise ValueError(f"RLMethod {self.name}: epochs and minibatches must be >= 1,"
                       f" got {self.epochs}, {self.minibatches}")
    if not self.reward_fns:
      raise ValueError(f"RLMethod {self.name}: give at least one reward fn")

  @property
  def temperature(self) -> float:
    """Temperature the sampler divides logits by (scorers use the same)."""
    return float(getattr(self.strategy, "temperature", 1.0))

  @property
  def updates_per_batch(self) -> int:
    return self.epochs * self.minibatches


def default_strategy(temperature: float = 1.0) -> strategies.Sampling:
  """Plain temperature sampling (what GRPO-style methods sample with)."""
  return strategies.Sampling(temperature=temperature)


def as_reward_fns(reward_fns) -> Tuple[Callable, ...]:
  """A tuple of reward fns from one fn or a sequence (gin passes lists)."""
  if callable(reward_fns):
    return (reward_fns,)
  return tuple(reward_fns)


# ----------------------------------------------------------- rescoring
def policy_values(*, scorer: str = POLICY_VALUES, params: str = POLICY
                  ) -> TrajectoryTransform:
  """Fills ``traj.values`` = V_old(tokens[:t]) from the value head (PPO).

  Also fills ``old_logprobs`` from the same forward pass (one pass instead of
  two). Metric ``value/old_mean``.
  """

  def fn(traj: Trajectory, ctx: Context):
    out = ctx.score(scorer, params, traj)
    if out.values is None:
      raise ValueError("policy_values: the scorer returned no values (use a"
                       " model with value_head=True)")
    m = traj.loss_mask
    values = jnp.where(m, sg(out.values), 0.0)
    old = jnp.where(m, sg(out.logprobs), 0.0)
    return traj.replace(values=values, old_logprobs=old), {
        "value/old_mean": aggregation.masked_token_mean(values, traj)}

  return stateless(fn)


def guided_old_logprobs(*, key: str = HINT_LOGPROBS_KEY,
                        guided_key: str = GUIDED_KEY) -> TrajectoryTransform:
  """For guided samples, π_old := the behaviour policy under the hinted prompt.

  Guide-GRPO (Nath et al. 2025, arXiv:2506.13923): a completion o drawn
  from π_old(· | q, h) with hint h is trained under the plain prompt q with the
  importance ratio π_θ(o_t | q, o_<t) / π_old(o_t | q, h, o_<t). Rows with
  ``extras[guided_key]`` False keep their ``old_logprobs`` (chain
  :func:`old_logprobs` first). Metric ``guide/frac_guided``.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.old_logprobs is None:
      raise ValueError("guided_old_logprobs: chain old_logprobs() first")
    if key not in traj.extras or guided_key not in traj.extras:
      return traj, {"guide/frac_guided": jnp.zeros((), jnp.float32)}
    guided = jnp.asarray(traj.extras[guided_key], bool)
    hint = jnp.asarray(traj.extras[key], jnp.float32)
    old = jnp.where(guided[:, None] & traj.loss_mask, hint, traj.old_logprobs)
    frac = jnp.mean(guided.astype(jnp.float32))
    return traj.replace(old_logprobs=old), {"guide/frac_guided": frac}

  return stateless(fn)


def reward_names_of(reward_fns: Sequence[Callable]) -> Tuple[str, ...]:
  """Component names of the concatenated reward columns."""
  from jaxsi.rewards import reward_fn as reward_lib  # pylint: disable=g-import-not-at-top
  names = []
  for fn in reward_fns:
    names.extend(reward_lib.reward_names(fn))
  return tuple(names)
