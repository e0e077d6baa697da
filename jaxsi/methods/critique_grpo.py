r"""Critique-GRPO: critique-guided refinements join the GRPO group.

Zhang et al. 2025, "Critique-GRPO: Advancing LLM Reasoning with Natural
Language and Numerical Feedback" (arXiv:2506.03106). For each prompt, n
responses are sampled; the wrong ones receive a natural-language critique and
the model writes a refinement conditioned on (question, response, critique);
the refinements join the group, and advantages are computed over initial
responses and refinements together::

  rollout   episode(turns=2, feedback=VerifierCritique(...) (or ModelFeedback),
                    stop_on_correct=True)     critiques for wrong answers only
  chain     pooled_turn_advantages            group = n initial + refinements
            turn_as_response                  refinement → response to q
            [ref_logprobs], old_logprobs
  objective mixed_policy_pg(γ)                clip on initial responses,
                                              −A·π/(π+γ) on refinements
            (+ β·kl)

``refinements='off_policy'`` (default, the paper's): a refinement is
trained as an off-policy response to the bare question, π_θ(y'|q), through
the policy-shaping function f(π) = π/(π + γ) borrowed from LUFFY
(``jaxsi.transforms.policy_shaping``), one token mean over the joint group.
``refinements='in_context'``: the refinement is trained on-policy in the
context it was sampled in (question, response, critique) with the clipped
surrogate, i.e. plain multi-turn GRPO with pooled advantages (the variant
this factory had before, kept for comparison; its old defaults were
``scale='group', agg='seq-mean-token-mean'``).

With ``kl_coef > 0`` the KL penalty also covers the re-laid refinement rows,
whose tokens were not sampled from π_θ(·|q); the paper uses no KL (default).

Departure (stated): all refinements of wrong responses join the group; the
paper's code can subsample them. The default critique is written by the
verifier ("The answer X is wrong; the correct answer ends in D."); a
model-written critique is ``multiturn.ModelFeedback``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.score import clipped_pg_method
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.transforms import policy_shaping, turns

RewardFns = Union[Callable, Sequence[Callable]]
CRITIQUE = "The answer {answer} is wrong; the correct answer ends in {last}."


def critique_grpo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                                        temperature=1.0),
                  optim: OptimSpec = OptimSpec(),
                  reward_fns: RewardFns = (reward_lib.correctness_reward,),
                  critique_template: str = CRITIQUE,
                  feedback: Optional[multiturn.Feedback] = None,
                  inject_length: int = 64, scale: str = "none",
                  refinements: str = "off_policy", gamma: float = 0.1,
                  kl_coef: float = 0.0, kl_estimator: str = "k3",
                  agg: str = "token-mean", eps_low: float = 0.2,
                  eps_high: float = 0.2, extra_transforms: Sequence[Any] = (),
                  name: str = "critique_grpo") -> base.Method:
  r"""Critique-GRPO (Zhang et al. 2025, arXiv:2506.03106, §3).

  A_{b,k} = r_{b,k} − μ_g (the paper; ``scale='group'`` also divides by
  σ_g + eps) over the group's initial responses (k = 1) and refinements
  (k = 2, wrong initial responses only); every token of turn k of row b gets
  A_{b,k}. Initial responses: clipped surrogate; refinements: see
  ``refinements``.

  Args:
    rollout: ``n`` initial responses per prompt, budget of the response
      and of the refinement, sampling / scoring temperature, strategy.
    optim: optimisation passes x minibatches.
    reward_fns: graders.
    critique_template: ``VerifierCritique`` template (fields ``answer``,
      ``last``, ``first``, ``gold``).
    feedback: any Feedback instead (e.g. ``multiturn.ModelFeedback``).
    inject_length: columns of the critique turn.
    scale: 'none' (R − mean, the paper) or 'group' (GRPO's std scaling).
    refinements: 'off_policy' (the paper: a response to the bare question,
      shaped by π/(π + γ)) or 'in_context' (on-policy in the critique
      context, clipped surrogate).
    gamma: γ of the shaping function (the paper: 0.1).
    kl_coef: optional KL weight.
    kl_estimator: KL estimator.
    agg: aggregation (the paper: token mean over the joint group).
    eps_low, eps_high: clip range.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method (episodes rollout).
  """
  if refinements not in ("off_policy", "in_context"):
    raise ValueError(f"critique_grpo: refinements={refinements!r}; expected "
                     "'off_policy' or 'in_context'")
  fb = feedback or multiturn.VerifierCritique(template=critique_template)
  episode = multiturn.EpisodeSpec(max_turns=2, feedback=fb,
                                  stop_on_correct=True,
                                  inject_length=inject_length)
  adv = turns.pooled_turn_advantages(scale=scale)
  common = dict(name=name, rollout=rollout, optim=optim,
                extra_transforms=extra_transforms, reward_fns=reward_fns,
                kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg,
                eps_low=eps_low, eps_high=eps_high, episode=episode)
  if refinements == "in_context":
    return clipped_pg_method(shaping=(adv,), **common)
  # Off-policy refinements: re-laid before any scoring, so old / ref
  # log-probs are those of the bare-question rows.
  return clipped_pg_method(
      pre=(adv, turns.turn_as_response(turn=2)), shaping=(),
      pg_term=policy_shaping.mixed_policy_pg(
          gamma=gamma, eps_low=eps_low, eps_high=eps_high, agg=agg),
      **common)
