"""Building blocks of the method factories: specs, rollouts, two transforms.

A method is ``rollout stage + reward stages + transform chain + objective``
(DESIGN.md "Transforms and objectives"), the :class:`jaxsi.spec.Method`
value that ``jaxsi.training.loop.Loop`` runs. Every factory in
``jaxsi/methods/`` returns one and names its paper and equation; this module
holds what they share: :func:`make_method` (the Method of a sampled rollout
with the shared :class:`~jaxsi.spec.RolloutSpec` / :class:`~jaxsi.spec.OptimSpec`),
and the two transforms only loop-produced data needs: :func:`policy_values`
(PPO) and :func:`guided_old_logprobs` (Guide).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxsi import spec as spec_lib
from jaxsi.sampling import rollouts
from jaxsi.sampling import strategies
from jaxsi.spec import (GUIDED_KEY, HINT_LOGPROBS_KEY, POLICY, POLICY_ENTROPY,
                        POLICY_VALUES, REFERENCE, TEACHER, Method, OptimSpec,
                        Role, RolloutSpec)
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import aggregation
from jaxsi.transforms.base import (Context, ObjectiveTerm, TrajectoryTransform,
                                   chain, stateless)

sg = jax.lax.stop_gradient

__all__ = [
    "GUIDED_KEY", "HINT_LOGPROBS_KEY", "POLICY", "POLICY_ENTROPY",
    "POLICY_VALUES", "REFERENCE", "TEACHER", "Method", "OptimSpec", "Role",
    "RolloutSpec", "as_reward_fns", "default_strategy", "guided_old_logprobs",
    "make_method", "policy_values", "reference_role", "resolve_rollout",
    "rollout_spec",
]

REFERENCE_ROLE = Role(REFERENCE, source=spec_lib.FROM_INITIAL)


def default_strategy(temperature: float = 1.0) -> strategies.Sampling:
  """Plain temperature sampling (what GRPO-style methods sample with)."""
  return strategies.Sampling(temperature=temperature)


def as_reward_fns(reward_fns) -> Tuple[Callable, ...]:
  """A tuple of reward fns / stages from one or a sequence (gin passes lists)."""
  if callable(reward_fns):
    return (reward_fns,)
  return tuple(reward_fns)


def rollout_spec(*, n: int, max_new_tokens: int, temperature: float = 1.0,
                 strategy: Any = None) -> RolloutSpec:
  """A RolloutSpec with its strategy resolved (:func:`resolve_rollout`)."""
  return resolve_rollout(RolloutSpec(n=n, max_new_tokens=max_new_tokens,
                                     temperature=temperature, strategy=strategy))


def resolve_rollout(spec: RolloutSpec) -> RolloutSpec:
  """``spec`` with an explicit strategy: the given one, else temperature
  sampling, or greedy decoding (``strategies.Greedy``) at temperature 0.

  The scoring temperature (:attr:`RolloutSpec.scoring_temperature`) is the
  strategy's (1 for greedy), as before the strategy was filled in.
  """
  if not isinstance(spec, RolloutSpec):
    raise TypeError(f"rollout must be a jaxsi.spec.RolloutSpec, got"
                    f" {type(spec).__name__} {spec!r}")
  if spec.strategy is not None:
    return spec
  return dataclasses.replace(spec, strategy=rollouts.strategy_of(spec))


def reference_role(kl_coef: float) -> Tuple[Role, ...]:
  """``(Role('reference', FROM_INITIAL),)`` when a KL term needs it."""
  return (REFERENCE_ROLE,) if kl_coef else ()


def make_method(*, name: str, rollout: RolloutSpec, optim: OptimSpec = OptimSpec(),
                reward_fns, transform: TrajectoryTransform,
                objective: ObjectiveTerm, roles: Sequence[Role] = (),
                stage: Optional[Callable[[RolloutSpec], Any]] = None,
                value_head: bool = False, extra_transforms: Sequence[Any] = ()
                ) -> Method:
  """A :class:`~jaxsi.spec.Method` sampled by ``stage`` (default plain).

  Args:
    name: method name.
    rollout: the shared rollout settings (samples per prompt, budget,
      temperature, strategy; temperature 0 without a strategy is greedy).
    optim: the shared optimisation settings (epochs x minibatches).
    reward_fns: reward stages or ``fn(tasks, completions)`` functions.
    transform: the method's transform chain.
    objective: its objective term.
    roles: roles the method reads (e.g. :func:`reference_role`).
    stage: ``fn(RolloutSpec) -> stage`` building a rollout stage around
      the spec (default :class:`~jaxsi.sampling.rollouts.Sample`).
    value_head: the model needs a value head.
    extra_transforms: transforms chained after ``transform`` (a variant of
      a method as a gin binding).

  Returns:
    The Method.
  """
  if not isinstance(optim, OptimSpec):
    raise TypeError(f"{name}: optim must be a jaxsi.spec.OptimSpec, got"
                    f" {type(optim).__name__} {optim!r}")
  spec = resolve_rollout(rollout)
  built = rollouts.Sample(spec) if stage is None else stage(spec)
  if extra_transforms:
    transform = chain(transform, *extra_transforms)
  return Method(name=name, rollout=built, rewards=as_reward_fns(reward_fns),
                transform=transform, objective=objective, optim=optim,
                roles=tuple(roles), value_head=value_head)


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
