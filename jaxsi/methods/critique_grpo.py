r"""Critique-GRPO: critique-guided refinements join the GRPO group.

Zhang et al. 2025, "Critique-GRPO: Advancing LLM Reasoning with Natural
Language and Numerical Feedback" (arXiv:2506.03106). For each prompt, n
responses are sampled; the wrong ones receive a natural-language critique and
the model writes a refinement conditioned on (question, response, critique);
the refinements are added to the group, and GRPO-normalised advantages are
computed over initial responses and refinements together::

  rollout   episode(turns=2, feedback=VerifierCritique(...) (or ModelFeedback),
                    stop_on_correct=True)     critiques for wrong answers only
  chain     [ref_logprobs], old_logprobs,
            pooled_turn_advantages            group = n initial + refinements
  objective pg_clip (+ β·kl)

Departure from the paper (stated, not hidden): the refinement is trained in
the context it was sampled in (question, first response, critique), which
keeps the update on-policy; the paper trains refinements as off-policy
responses to the bare question with a policy-shaping weight
π/(π + γ) (its §3.2), which this factory does not implement. The default
critique is written by the verifier ("The answer X is wrong; the correct
answer ends in D."); a model-written critique is
``multiturn.ModelFeedback``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.methods.score import MultiTurnMethod, clipped_pg_method
from jaxsi.sampling import multiturn
from jaxsi.transforms import turns

RewardFns = Union[Callable, Sequence[Callable]]
CRITIQUE = "The answer {answer} is wrong; the correct answer ends in {last}."


def critique_grpo(*, n: int = 4, max_new_tokens: int = 8,
                  temperature: float = 1.0,
                  reward_fns: RewardFns = (reward_lib.correctness_reward,),
                  critique_template: str = CRITIQUE,
                  feedback: Optional[multiturn.Feedback] = None,
                  inject_length: int = 64, scale: str = "group",
                  kl_coef: float = 0.0, kl_estimator: str = "k3",
                  agg: str = "seq-mean-token-mean", eps_low: float = 0.2,
                  eps_high: float = 0.2, epochs: int = 1, minibatches: int = 1,
                  strategy: Any = None, name: str = "critique_grpo"
                  ) -> MultiTurnMethod:
  r"""Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106, §3, Eq. 5–6).

  A_{b,k} = (r_{b,k} − μ_g) / (σ_g + eps) over the group's initial responses
  (k = 1) and refinements (k = 2, wrong initial responses only); every
  token of turn k of row b gets A_{b,k}.

  Args:
    n: initial responses per prompt.
    max_new_tokens: budget of the response and of the refinement.
    temperature: sampling / scoring temperature.
    reward_fns: graders.
    critique_template: ``VerifierCritique`` template (fields ``answer``,
      ``last``, ``first``, ``gold``).
    feedback: any Feedback instead (e.g. ``multiturn.ModelFeedback``).
    inject_length: columns of the critique turn.
    scale: 'group' (GRPO) or 'none' (Dr. GRPO) normalisation.
    kl_coef: optional KL weight.
    kl_estimator: KL estimator.
    agg: aggregation.
    eps_low, eps_high: clip range.
    epochs, minibatches, strategy, name: loop options.

  Returns:
    The MultiTurnMethod.
  """
  fb = feedback or multiturn.VerifierCritique(template=critique_template)
  shaping = (turns.pooled_turn_advantages(scale=scale),)
  return clipped_pg_method(
      name=name, n=n, temperature=temperature, strategy=strategy,
      max_new_tokens=max_new_tokens, reward_fns=reward_fns, shaping=shaping,
      kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg, eps_low=eps_low,
      eps_high=eps_high, epochs=epochs, minibatches=minibatches,
      episode=multiturn.EpisodeSpec(
          max_turns=2, feedback=fb, stop_on_correct=True,
          inject_length=inject_length))
