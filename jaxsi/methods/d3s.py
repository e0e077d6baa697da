r"""D³S: GRPO with Dynamic Dual-level Down-Sampling.

"Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for
Efficient Policy Optimization" (arXiv:2509.22115). Per group, keep the subset
of rollouts with the largest advantage variance (sample level); among their
tokens keep those with the largest |A_{i,t}|·H_{i,t} (token level); relax
both keep ratios over training (dynamic schedule). The pieces are
``jaxsi.transforms.downsampling`` (its docstring states which details are a
GK reading of the paper)::

  D³S  chain(old_logprobs(entropy), group_advantages,
             d3s_sample_selection(keep=ρ_s(step)),
             d3s_token_selection(keep=ρ_t(step)))
       objective = pg_clip(agg='token-mean')
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import (advantages, downsampling, importance,
                              policy_losses)
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]
ENTROPY_KEY = "entropy"


def d3s(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(),
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        sample_keep_start: float = 0.5, sample_keep_end: float = 1.0,
        token_keep_start: float = 0.5, token_keep_end: float = 1.0,
        transition_steps: int = 100, eps_low: float = 0.2,
        eps_high: float = 0.28, agg: str = "token-mean",
        extra_transforms: Sequence[Any] = (), name: str = "d3s") -> base.Method:
  r"""D³S (module docstring): max-variance rollout subset + |A|·H tokens.

  The keep ratios move linearly from ``*_start`` (aggressive) to ``*_end``
  over ``transition_steps`` RL iterations (``downsampling.linear_keep_schedule``
  evaluated at ``ctx.step`` = the iteration).

  Args:
    rollout, optim, reward_fns, eps_low, eps_high, agg, extra_transforms,
      name: as ``grpo`` / ``dapo``.
    sample_keep_start: fraction of each group kept at step 0.
    sample_keep_end: … after ``transition_steps``.
    token_keep_start: fraction of loss tokens kept at step 0.
    token_keep_end: … after ``transition_steps``.
    transition_steps: length of the schedule.

  Returns:
    The Method.
  """
  sample_keep = downsampling.linear_keep_schedule(
      start=sample_keep_start, end=sample_keep_end,
      transition_steps=transition_steps)
  token_keep = downsampling.linear_keep_schedule(
      start=token_keep_start, end=token_keep_end,
      transition_steps=transition_steps)
  transform = chain(
      importance.old_logprobs(scorer=base.POLICY_ENTROPY,
                              entropy_key=ENTROPY_KEY),
      advantages.group_advantages(scale="group"),
      downsampling.d3s_sample_selection(keep=sample_keep),
      downsampling.d3s_token_selection(keep=token_keep, entropy_key=ENTROPY_KEY))
  pg = policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg)
  return base.make_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      transform=transform, objective=objective((1.0, pg, "pg")))
