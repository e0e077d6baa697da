r"""Reflect, Retry, Reward: reward the self-reflection that made a retry succeed.

Bensal et al. 2025, "Reflect, Retry, Reward: Self-Improving LLMs via
Reinforcement Learning" (arXiv:2505.24726). Only failures are used: after a
wrong first answer the model writes a self-reflection, then retries; when the
retry succeeds, the *reflection* tokens are rewarded (GRPO), so the model
learns to reflect better, not to memorise answers::

  rollout   episode(turns=3: answer → [reflect prompt] → reflection
                    → [retry prompt] → answer, stop_on_correct=True,
                    graded_turns=(1, 3))
  chain     old_logprobs, [ref_logprobs],
            require_reward(column=2)         keep rows that failed and retried
            shape_turn_rewards(r3)           reward = success of the retry
            restrict_loss_to_turns((2,))     train the reflection tokens only
            group_advantages                 GRPO over the group's retried rows
  objective pg_clip (+ β·kl)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.score import clipped_pg_method
from jaxsi.sampling import multiturn
from jaxsi.transforms import advantages, rewards, turns

RewardFns = Union[Callable, Sequence[Callable]]
REFLECT_PROMPT = "Wrong. Reflect:"
RETRY_PROMPT = "Retry:"


def reflect_retry(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                                        temperature=1.0),
                  optim: OptimSpec = OptimSpec(),
                  reward_fns: RewardFns = (reward_lib.correctness_reward,),
                  reflect_prompt: str = REFLECT_PROMPT,
                  retry_prompt: str = RETRY_PROMPT, inject_length: int = 16,
                  kl_coef: float = 0.0, kl_estimator: str = "k3",
                  agg: str = "seq-mean-token-mean", eps_low: float = 0.2,
                  eps_high: float = 0.2, extra_transforms: Sequence[Any] = (),
                  name: str = "reflect_retry") -> base.Method:
  r"""Reflect, Retry, Reward (Bensal et al. 2025, arXiv:2505.24726, §3).

  Per failed first attempt: reflection y_ref then retry y2; reward
  R = r(y2) on the reflection tokens only, GRPO-normalised over the retried
  rows of each prompt's group. Successful first attempts are not trained on.

  Args:
    rollout: ``n`` episodes per prompt, budget of each model turn (answer
      or reflection), sampling / scoring temperature, strategy.
    optim: optimisation passes x minibatches.
    reward_fns: graders of the answer turns (1 and 3).
    reflect_prompt: injected after a wrong first answer.
    retry_prompt: injected after the reflection.
    inject_length: columns of each injected turn.
    kl_coef: optional KL weight.
    kl_estimator: KL estimator.
    agg: aggregation.
    eps_low, eps_high: clip range.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method (episodes rollout).
  """
  shaping = (turns.require_reward(column=2),
             rewards.shape_turn_rewards(lambda r3: r3, columns=(2,)),
             turns.restrict_loss_to_turns(turns=(2,)),
             advantages.group_advantages(scale="group"))
  return clipped_pg_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns, shaping=shaping,
      kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg, eps_low=eps_low,
      eps_high=eps_high, eval_turns=(1, 3),
      episode=multiturn.EpisodeSpec(
          max_turns=3,
          feedback=(multiturn.FixedFeedback(reflect_prompt),
                    multiturn.FixedFeedback(retry_prompt)),
          stop_on_correct=True, graded_turns=(1, 3),
          inject_length=inject_length))
