r"""OPSD: on-policy self-distillation from the same model under privileged context.

Zhao et al. 2026, "Self-Distilled Reasoner: On-Policy Self-Distillation for
Large Language Models" (arXiv:2601.18734). One model plays both roles: the
student p_S(· | x) sees the question, the teacher p_T(· | x, y*) = the SAME
parameters conditioned on privileged information y* (a verified solution,
the answer); the student samples ŷ ~ p_S(· | x) and minimises the per-token
divergence between the two next-token distributions along its own tokens,
the teacher stop-gradient::

  L(θ) = E_{ŷ ~ p_S} [ 1/|ŷ| Σ_t D( p_S(· | x, ŷ_<t) ‖ sg p_T(· | x, y*, ŷ_<t) ) ]

(the paper's objective; D a full-vocabulary divergence, or its sampled-token
estimate; GK, unchecked against the equation numbers). Here D is the reverse
KL estimated from the sampled tokens' log-probs
(``distillation.sampled_reverse_kl``): d_t = log p_S(ŷ_t) − log p_T(ŷ_t),
estimator 'pg' = REINFORCE with per-token reward −d_t (unbiased reverse-KL
gradient), or k1/k2/k3 (``divergence='sampled'``, the default).

``divergence='topk'`` is the full-distribution form: the privileged teacher's
top-k next-token log-probs at every completion position (plus the exact
log-mass of the rest) are computed in one stop-gradient pass over the
privileged layout, ``row_chunk`` rows at a time
(``teacher_logits.teacher_topk(context='privileged')``), and the loss is the
generalised JSD_β between the student's full distribution (the update's
logits) and that teacher over the K + 1 buckets (``distillation.topk_jsd``:
β = 1 is the reverse KL(p_S ‖ p_T) of the equation above, β = 0 the forward
KL, 0.5 the JSD). With k = V it is the exact full-vocabulary divergence.

Composition::

  OPSD      rollout: Privileged(Sample(n), context_fn)   (sampling/privileged.py)
            chain(rescore(context='privileged', params='policy',
                          field='teacher_logprobs'))     one stop-grad pass
            objective = kd_coef · sampled_reverse_kl(estimator)
            or (divergence='topk')
            chain(teacher_topk(k, context='privileged', params='policy'))
            objective = kd_coef · topk_jsd(β)          the update's logits
  OPSD+RL   (π-Distill's "OPSD" form, Privileged Information Distillation
            for Language Models: RL with a reverse-KL penalty to the
            PI-conditioned teacher; GK) the same plus old_logprobs,
            group_advantages and pg_clip: ``pg_coef > 0``
  Skill-SD  (skills as privileged context, combined with GRPO; GK):
            :func:`skill_sd` = OPSD+RL with ``context_fn=skill_context``.

The teacher is the live policy (``teacher='live'``: re-synced every step,
OPSD / Skill-SD) or the frozen initial policy (``teacher='initial'``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

from jaxsi import spec as spec_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import privileged
from jaxsi.sampling import rollouts
from jaxsi.sampling import skill_bank
from jaxsi.transforms import (advantages, distillation, filters, importance,
                              policy_losses, rescoring, teacher_logits)
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]
TEACHERS = ("live", "initial")
DIVERGENCES = ("sampled", "topk")


def opsd(*, rollout: RolloutSpec = RolloutSpec(n=1, max_new_tokens=16,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(),
         reward_fns: RewardFns = (reward_lib.correctness_reward,),
         context_fn: Callable[[Any], str] = privileged.solution_context,
         kd_coef: float = 1.0, kd_estimator: str = "pg",
         pg_coef: float = 0.0, eps: float = 0.2, scale: str = "group",
         agg: str = "token-mean", teacher: str = "live", teach: int = 2,
         divergence: str = "sampled", k: int = 0, jsd_beta: float = 1.0,
         row_chunk: int = 1, chunked: Optional[bool] = None,
         kd_on_stop: bool = True,
         kd_importance: bool = False,
         extra_transforms: Sequence[Any] = (), name: str = "opsd"
         ) -> base.Method:
  r"""OPSD (module docstring): kd_coef·KL(p_S ‖ sg p_T) [+ pg_coef·GRPO].

  Args:
    rollout: samples per prompt (``n=1`` in OPSD; ``n ≥ 2`` with the GRPO
      term), completion budget, temperature (the scorers use the same one).
    optim: epochs × minibatches.
    reward_fns: reward stages (the advantage with ``pg_coef > 0``; logged
      otherwise).
    context_fn: task → privileged prompt (``privileged.solution_context``,
      ``answer_context``, ``skill_context``, or your own).
    kd_coef: weight of the reverse KL to the privileged teacher (> 0).
    kd_estimator: 'pg' (default), 'k1', 'k2', 'k3' (``sampled_reverse_kl``).
    pg_coef: weight of the clipped GRPO term (0: pure OPSD).
    eps: PPO clip ε of the GRPO term.
    scale: group advantage scaling of the GRPO term.
    agg: aggregation of both terms.
    teacher: 'live' (the current policy's params, stop-gradient) or
      'initial' (a frozen copy of the initial policy: role ``reference``).
    teach: every ``teach``-th labelled task is also taught under its
      privileged prompt in the warm start (0: none).
    divergence: 'sampled' (the sampled-token reverse KL, ``kd_estimator``)
      or 'topk' (JSD_β against the privileged teacher's top-k distribution;
      reads ``k``, ``jsd_beta``, ``row_chunk``).
    k: teacher ids kept per position for 'topk' (>= 1; the vocabulary size
      gives the exact full-vocabulary divergence).
    jsd_beta: β of ``distillation.topk_jsd`` (1 = reverse KL, 0 = forward).
    row_chunk: rows of the privileged layout scored at once for 'topk'
      (divides the batch; one chunk's [row_chunk, T', V] logits are alive).
    chunked: for 'topk', the student side chunk by chunk over T
      (``topk_jsd(chunked=True)``: no [B, T, V] student logits alive). None
      (default): True for 'topk' (no measurable cost at the synthetic
      vocabularies, experiments/chunked_kd_bench.py); False: the full-logits
      path of the earlier bench tables. 'sampled' refuses True/False.
    kd_importance: weight the 'pg' estimate by ρ = π_θ/π_old
      (``sampled_reverse_kl(importance=True)``; Skill-SD's correction when a
      batch feeds several updates; 'sampled' only).
    kd_on_stop: False → no loss on the stop token (``filters.mask_stop_token``:
      a teacher that knows the answer leaks correctness through it; pure OPSD
      only, ``pg_coef = 0``).
    extra_transforms, name: as ``grpo``.

  Returns:
    The Method (rollout: ``privileged.Privileged`` around plain sampling).

  Raises:
    ValueError: an option out of range (named).
  """
  if teacher not in TEACHERS:
    raise ValueError(f"opsd: teacher must be one of {TEACHERS}, got {teacher!r}")
  if not kd_coef > 0:
    raise ValueError(f"opsd: kd_coef must be > 0, got {kd_coef!r}")
  if pg_coef < 0:
    raise ValueError(f"opsd: pg_coef must be >= 0, got {pg_coef!r}")
  if pg_coef and rollout.n < 2:
    raise ValueError(f"opsd: pg_coef > 0 needs rollout.n >= 2 (group"
                     f" advantages), got n={rollout.n}")
  if divergence not in DIVERGENCES:
    raise ValueError(f"opsd: divergence must be one of {DIVERGENCES}, got {divergence!r}")
  if divergence == "sampled" and (k or jsd_beta != 1.0 or row_chunk != 1
                                 or chunked is not None):
    raise ValueError("opsd: k, jsd_beta, row_chunk and chunked are read only by"
                     f" divergence='topk', got k={k!r}, jsd_beta={jsd_beta!r},"
                     f" row_chunk={row_chunk!r}, chunked={chunked!r} with"
                     " divergence='sampled'")
  if kd_importance and (divergence != "sampled" or kd_estimator != "pg"):
    raise ValueError("opsd: kd_importance needs divergence='sampled' and"
                     f" kd_estimator='pg', got {divergence!r}, {kd_estimator!r}")
  if divergence == "topk" and kd_estimator != "pg":
    raise ValueError("opsd: kd_estimator is read only by divergence='sampled',"
                     f" got {kd_estimator!r} with divergence='topk'")
  if divergence == "topk" and (int(k) != k or k < 1):
    raise ValueError(f"opsd: divergence='topk' needs an integer k >= 1, got {k!r}")
  if not kd_on_stop and pg_coef:
    raise ValueError("opsd: kd_on_stop=False masks the stop token for every"
                     " term; it needs pg_coef = 0")
  params = spec_lib.POLICY if teacher == "live" else spec_lib.REFERENCE
  if divergence == "sampled":
    parts = [rescoring.rescore(context=privileged.DEFAULT_NAME,
                               scorer=spec_lib.POLICY, params=params,
                               field="teacher_logprobs")]
    kd = distillation.sampled_reverse_kl(estimator=kd_estimator, agg=agg,
                                         importance=kd_importance)
  else:
    scorer = spec_lib.POLICY_LOGITS if teacher == "live" else f"{params}/logits"
    parts = [teacher_logits.teacher_topk(
        k=int(k), scorer=scorer, params=params, row_chunk=int(row_chunk),
        context=privileged.DEFAULT_NAME)]
    kd = distillation.topk_jsd(beta=jsd_beta, agg=agg,
                               chunked=True if chunked is None else bool(chunked))
  if not kd_on_stop:
    parts.append(filters.mask_stop_token())
  terms = [(kd_coef, kd, "kd")]
  if pg_coef or kd_importance:
    parts.append(importance.old_logprobs())
  if pg_coef:
    parts.append(advantages.group_advantages(scale=scale))
    terms.insert(0, (pg_coef, policy_losses.pg_clip(eps_low=eps, eps_high=eps,
                                                    agg=agg), "pg"))
  roles = (base.REFERENCE_ROLE,) if teacher == "initial" else ()
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms), roles=roles,
      stage=lambda s: privileged.Privileged(rollouts.Sample(s),
                                            context_fn=context_fn, teach=teach),
      extra_transforms=extra_transforms)


def skill_sd(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                   temperature=1.0),
             optim: OptimSpec = OptimSpec(),
             reward_fns: RewardFns = (reward_lib.correctness_reward,),
             context_fn: Callable[[Any], str] = privileged.skill_context,
             kd_coef: float = 0.1, kd_estimator: str = "pg",
             pg_coef: float = 1.0, eps: float = 0.2,
             agg: str = "seq-mean-token-mean", teach: int = 2,
             kd_importance: bool = True, summarise: bool = False,
             max_examples: int = 2,
             extra_transforms: Sequence[Any] = (), name: str = "skill_sd"
             ) -> base.Method:
  r"""Skill-SD (seeds catalog_02 [20]; GK, unchecked): GRPO + β·KL(p_S ‖ sg p_T)
  with the teacher = the live policy conditioned on a skill description.

  The paper summarises finished trajectories into natural-language skills;
  on the synthetic tasks the skill is the category's procedure
  (``privileged.SKILLS``). The paper's importance-weighted reverse KL is
  ``kd_importance=True`` (``distillation.sampled_reverse_kl(importance=True)``:
  weight ρ = π_θ/π_old on the 'pg' estimate; GK, the form is derived, not
  read from the paper); it is 1 at the first update of a batch, so it
  matters with epochs × minibatches > 1.

  ``summarise=True`` writes the skills from the policy's own finished
  trajectories (``sampling.skill_bank.SkillSummaries``: per category, the
  last ``max_examples`` verified successes of earlier batches, written out
  as worked examples; the fixed ``privileged.SKILLS`` text until the first
  success). That summary is extractive; the paper's LLM-written
  natural-language summary is not built (the tiny synthetic models cannot
  write one), and ``context_fn`` is then not read.
  """
  method = opsd(rollout=rollout, optim=optim, reward_fns=reward_fns,
              context_fn=context_fn, kd_coef=kd_coef, kd_estimator=kd_estimator,
              pg_coef=pg_coef, eps=eps, agg=agg, teacher="live", teach=teach,
              kd_importance=kd_importance,
              extra_transforms=extra_transforms, name=name)
  if not summarise:
    return method
  return dataclasses.replace(method, rollout=skill_bank.SkillSummaries(
      inner=rollouts.Sample(method.rollout.spec), teach=teach,
      max_examples=int(max_examples)))
