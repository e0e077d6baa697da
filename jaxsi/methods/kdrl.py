r"""KDRL: GRPO + reverse KL to a separate teacher on the student's rollouts.

Xu et al. 2025, "KDRL: Post-Training Reasoning LLMs via Unified Knowledge
Distillation and Reinforcement Learning" (arXiv:2506.02208): the student
optimises J_GRPO(θ) − β·KL(π_θ ‖ π_T) on its own samples, so the teacher's
token-level supervision and the verifier's outcome reward shape one policy::

  KDRL  chain(teacher_logprobs, old_logprobs, group_advantages,
              drop_zero_variance_groups)
        objective = pg_clip(agg='seq-mean-token-mean')
                    + β · sampled_reverse_kl(estimator='k2')

The teacher is a different parameter set (and may be a different model): the
run passes it as the ``teacher`` role and the loop scores the rollouts with it. The
k2 estimator (½(log π_θ − log π_T)², whose gradient equals the
reverse-KL policy gradient per token) is the paper's recommended choice (GK).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.grpo import _group_pg
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import advantages, distillation, policy_losses, rescoring

RewardFns = Union[Callable, Sequence[Callable]]


def kdrl(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         kd_coef: float = 0.1, kd_estimator: str = "k2", eps: float = 0.2,
         agg: str = "seq-mean-token-mean",
         extra_transforms: Sequence[Any] = (), name: str = "kdrl"
         ) -> base.Method:
  r"""KDRL (module docstring): GRPO + β·KL(π_θ ‖ π_teacher).

  Args:
    rollout, optim, reward_fns, extra_transforms, name: as ``grpo``.
    kd_coef: β of the reverse KL to the teacher.
    kd_estimator: 'k2' (default), 'k3', 'k1' or 'pg'
      (``distillation.sampled_reverse_kl``).
    eps: PPO clip ε.
    agg: aggregation of both terms.

  Returns:
    The Method (role ``teacher``: the run passes ``roles={'teacher': (model, params)}``).
  """
  kd = distillation.sampled_reverse_kl(estimator=kd_estimator, agg=agg)
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      kl_coef=0.0, kl_estimator="k3", agg=agg,
      advantage=advantages.group_advantages(scale="group"),
      pg_term=policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg=agg),
      drop_zero_variance=False, pre=(rescoring.teacher_logprobs(scorer=base.TEACHER),),
      extra_terms=((kd_coef, kd, "kd"),), teacher=True)
