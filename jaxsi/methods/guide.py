r"""Guide: hint-conditioned resampling of all-fail groups (Guide-GRPO).

Nath et al. 2025, "Adaptive Guidance Accelerates Reinforcement Learning of
Reasoning Models" (arXiv:2506.13923). When every sample of a prompt fails,
GRPO has no signal for it (Â = 0). Guide samples part of that group again from
the prompt **with a hint** h (e.g. the answer or a partial solution), trains on
those completions **under the plain prompt** q, and corrects for the changed
context with the importance ratio π_θ(o_t | q, o_<t) / π_old(o_t | q, h, o_<t)
inside the usual clipped objective (the paper's off-policy Guide-GRPO
objective). Composition::

  Guide  rollout: HintedResample(Sample, hint_fn, fraction) — all-fail groups get
               round(fraction·n) hinted resamples placed under the plain prompt
         chain([ref_logprobs], old_logprobs, guided_old_logprobs,
               group_advantages, drop_zero_variance_groups)
         objective = pg_clip(agg='seq-mean-token-mean') [+ β·kl]

(ExPO-style self-explanation and STaR rationalisation are the same pieces with
the ratio set to 1 — ``importance='plain'`` here: the guided samples are then
treated as if sampled under the plain prompt.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.grpo import _group_pg
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import advantages, policy_losses

RewardFns = Union[Callable, Sequence[Callable]]


def answer_hint(task) -> str:
  """The default hint: the task's full supervised target (answer included)."""
  return task.target or task.answer


def guide(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                temperature=1.0),
          optim: OptimSpec = OptimSpec(),
          reward_fns: RewardFns = (reward_lib.correctness_reward,),
          hint_fn: Callable[[Any], str] = answer_hint, fraction: float = 0.5,
          importance: str = "hint", eps_low: float = 0.2,
          eps_high: float = 0.2, kl_coef: float = 0.0,
          agg: str = "seq-mean-token-mean",
          extra_transforms: Sequence[Any] = (), name: str = "guide"
          ) -> base.Method:
  r"""Guide-GRPO (module docstring).

  Args:
    rollout, optim, reward_fns, eps_low, eps_high, kl_coef, agg,
      extra_transforms, name: as ``grpo``.
    hint_fn: task → hint text appended to the prompt text.
    fraction: fraction of an all-fail group replaced by hinted samples.
    importance: 'hint' (π_old = behaviour policy under the hint, the paper)
      or 'plain' (π_old rescored under the plain prompt: ratio 1 at the first
      update, ExPO / STaR-rationalisation style).

  Returns:
    The Method (rollout: ``rollouts.HintedResample`` around plain sampling).
  """
  if importance not in ("hint", "plain"):
    raise ValueError(f"importance={importance!r}; expected 'hint' or 'plain'")
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      kl_coef=kl_coef, kl_estimator="k3", agg=agg,
      advantage=advantages.group_advantages(scale="group"),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg),
      drop_zero_variance=True,
      guide=dict(hint_fn=hint_fn, fraction=fraction),
      guide_importance=(importance == "hint"))
