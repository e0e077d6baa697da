r"""Self-motivated Learning: PPO + KL against a reward model trained on self-ranked rationales.

Feng et al. 2024, "Improving Language Model Reasoning with Self-motivated
Learning" (arXiv:2404.07017, §3): the model generates several rationales
per question of an existing dataset; the correctness of the answer each
leads to ranks them; a reward model is trained on the ranks (pairwise); RL
then improves rationale generation with PPO and a KL penalty to the initial
model::

  RM     rollout(warm start, n per labelled question) · rank(verifier:
         correct ≻ wrong) · fit(bradley_terry, role=reward_model)
         (training.reward_model_role, run by rl_run.run before RL)
  RL     rollout(policy) · reward(reward_model score, frozen) ·
         chain(ref_logprobs, policy_values, score_at_eos,
               kl_in_reward(β, 'token'), gae_advantages(γ, λ))
         objective = pg_clip + c_v · value_loss                (= methods.ppo)

The method is ``methods.ppo.ppo`` with the reward stage given by the run's
configuration (``training.reward_model.RewardModelScorer``, which reads the
``'reward_model'`` role: a method module cannot import ``jaxsi.training``)
and the role declared; the rollout also logs the verifier's accuracy of the
RL samples (``label_free/sample_acc``) next to the RM reward
(``reward/mean``), the reward-hacking monitor. The verifier reward is never
used by the update.

GK (checked against the abstract and ``seeds/catalog_03.md`` [26], not the
paper's equations): PPO with a KL penalty to the SFT model (β here 0.05, the
paper's value not checked); the RM is a pairwise ranking model on
(correct ≻ wrong) rationale pairs of one question (Bradley–Terry,
``value.bradley_terry``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, Union

from jaxsi import spec as spec_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.ppo import ppo
from jaxsi.rewards import stages
from jaxsi.sampling import label_free as monitors

RewardFns = Union[Callable, Sequence[Callable]]


def self_motivated(*, reward_fns: RewardFns = (),
                   rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=16,
                                                      temperature=1.0),
                   optim: OptimSpec = OptimSpec(epochs=2, minibatches=2),
                   eps: float = 0.2, vf_coef: float = 0.5, vf_clip: float = 0.2,
                   gamma: float = 1.0, lam: float = 0.95, kl_coef: float = 0.05,
                   role: str = spec_lib.REWARD_MODEL,
                   extra_transforms: Sequence[Any] = (),
                   name: str = "self_motivated") -> base.Method:
  r"""Self-motivated Learning's RL stage (arXiv:2404.07017 §3; PPO, Schulman
  et al. 2017, arXiv:1707.06347, Eq. 7, with a per-token KL reward).

  Args:
    reward_fns: the reward-model stage(s) (gin:
      ``(@reward_model.RewardModelScorer(),)``); at least one must read
      ``role``.
    rollout, optim, eps, vf_coef, vf_clip, gamma, lam, extra_transforms:
      as ``methods.ppo.ppo``.
    kl_coef: β of the per-token KL to the initial (SFT) policy.
    role: the reward-model role (trained before RL by the launcher:
      ``rl_run.run.reward_model``).
    name: method name.

  Returns:
    The Method (``value_head=True``; reads roles ``role`` and, with β > 0,
    ``'reference'``).

  Raises:
    ValueError: no reward stage reading ``role``.
  """
  fns = stages.as_stages(reward_fns) if reward_fns else ()
  if role not in stages.stage_roles(fns):
    raise ValueError(
        f"self_motivated.reward_fns: give a reward stage that reads role {role!r}"
        " (jaxsi.training.reward_model.RewardModelScorer, gin:"
        " reward_fns = (@reward_model.RewardModelScorer(),)); got"
        f" {[type(f).__name__ for f in fns]}")
  method = ppo(rollout=rollout, optim=optim, reward_fns=fns, eps=eps, vf_coef=vf_coef,
               vf_clip=vf_clip, gamma=gamma, lam=lam, kl_coef=kl_coef,
               extra_transforms=extra_transforms, name=name)
  return dataclasses.replace(
      method, rollout=monitors.LabelMonitor(method.rollout, vote=False),
      roles=method.roles + (spec_lib.Role(role, source=spec_lib.FROM_RUN),))


__all__ = ["self_motivated"]
