r"""UFO: unary feedback ("try again") as observation in multi-turn RL.

Liu et al. 2025, "A Simple 'Try Again' Can Elicit Multi-Turn LLM Reasoning"
(arXiv:2507.14295). After a wrong answer the environment appends the same
minimal feedback turn ("Try again.") and the model answers again, until it is
correct or the turn budget is spent::

  rollout   episode(turns=K, feedback=FixedFeedback("Try again."),
                    stop_on_correct=True)               rewards per turn
  chain     old_logprobs, [ref_logprobs],
            repeat_penalty(λ)      r_k −= λ·1[turn k repeats an earlier answer]
            turn_discount(γ)       R = Σ_k γ^{k−1} r_k  (success at turn k → γ^{k−1})
            group_advantages       GRPO, one advantage for every model token
  objective pg_clip (+ β·kl)       loss only on assistant turns (the loss mask
                                   never covers injected feedback)

The turn-discount and repetition-penalty values are general-knowledge
readings of the paper (GK); both are parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.score import clipped_pg_method
from jaxsi.sampling import multiturn
from jaxsi.transforms import advantages, turns

RewardFns = Union[Callable, Sequence[Callable]]
TRY_AGAIN = "Try again."


def ufo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                              temperature=1.0),
        optim: OptimSpec = OptimSpec(), max_turns: int = 3,
        reward_fns: RewardFns = (reward_lib.correctness_reward,),
        feedback_text: str = TRY_AGAIN, inject_length: int = 16,
        gamma: float = 0.8, repeat_penalty: float = 0.25,
        kl_coef: float = 0.0, kl_estimator: str = "k3",
        agg: str = "seq-mean-token-mean", eps_low: float = 0.2,
        eps_high: float = 0.2, extra_transforms: Sequence[Any] = (),
        name: str = "ufo") -> base.Method:
  r"""UFO (Liu et al. 2025, arXiv:2507.14295): "try again" multi-turn GRPO.

  Episode reward R = Σ_k γ^{k−1}(r_k − λ·repeat_k) over the turns taken
  (the episode stops at the first correct answer), group-normalised into one
  advantage per episode, applied to the model's turns only.

  Args:
    rollout: ``n`` episodes per prompt (GRPO group), budget of each answer,
      sampling / scoring temperature, strategy.
    optim: optimisation passes x minibatches.
    max_turns: K, answers per episode at most.
    reward_fns: per-turn graders.
    feedback_text: the unary feedback turn.
    inject_length: columns of the feedback turn.
    gamma: turn discount γ.
    repeat_penalty: λ, subtracted for every repeated answer.
    kl_coef: optional KL weight (0: none, no reference).
    kl_estimator: KL estimator.
    agg: aggregation of the terms.
    eps_low, eps_high: clip range.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method (episodes rollout).
  """
  shaping = (turns.repeat_penalty(penalty=repeat_penalty),
             turns.turn_discount(gamma=gamma),
             advantages.group_advantages(scale="group"))
  return clipped_pg_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns, shaping=shaping,
      kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg, eps_low=eps_low,
      eps_high=eps_high, episode=multiturn.EpisodeSpec(
          max_turns=max_turns, feedback=multiturn.FixedFeedback(feedback_text),
          stop_on_correct=True, inject_length=inject_length))
