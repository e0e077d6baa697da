r"""SCoRe (multi-turn self-correction by RL) and the plain two-turn GRPO baseline.

Kumar et al. 2024, "Training Language Models to Self-Correct via Reinforcement
Learning" (arXiv:2409.12917). Two attempts per problem: the model answers,
a fixed instruction asks it to check and revise, the model answers again::

  rollout   episode(turns=2, feedback=FixedFeedback(revise prompt),
                    stop_on_correct=False)        rewards per turn (r1, r2)
  stage I   chain(ref_logprobs, old_logprobs,
                  shape_turn_rewards(λ r1, r2: (0, r2)), turn_advantages)
            objective = pg + turn_kl_penalty(weights=(β2, β1))   β2 ≫ β1
            (§5.1, Eq. 3: maximise r(y2) while a strong KL keeps the first
            attempt at the base model, so the two turns decouple)
  stage II  chain(ref_logprobs, old_logprobs, score_bonus(α),
                  turn_advantages)
            objective = pg + turn_kl_penalty(weights=(β1, β1))
            (§5.2, Eq. 4: r1 + r̂2 with r̂2 = r2 + α(r2 − r1))

The paper runs stage I, then stage II from the stage-I policy (the KL
reference stays the base model); ``stage`` picks one and the caller chains
them (``experiments/self_correction_bench.py`` does). Policy gradient: the
clipped surrogate with on-policy old log-probs, whose first-step gradient is
REINFORCE's (the paper uses REINFORCE with a KL penalty).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax.numpy as jnp

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import rollouts
from jaxsi.transforms import (advantages, importance, kl, policy_losses,
                              rescoring, rewards, turns)
from jaxsi.transforms.base import chain, objective

RewardFns = Union[Callable, Sequence[Callable]]


def episode_method(*, episode: multiturn.EpisodeSpec, eval_turns: tuple = (1, 2),
                   **fields) -> base.Method:
  """A :class:`~jaxsi.spec.Method` whose rollout is multi-turn episodes.

  Shared by every multi-turn factory (SCoRe, UFO, Reflect-Retry-Reward,
  Critique-GRPO, multi-turn PPO): the rollout stage is
  :class:`~jaxsi.sampling.rollouts.Episodes` (``episode``: turns, feedback,
  stop rules; the reward stages grade each model turn, their components
  summed into the turn's reward; ``eval_turns`` are the turns the
  self-correction metrics compare). ``fields`` as :func:`base.make_method`.
  """
  return base.make_method(
      stage=lambda spec: rollouts.Episodes(spec, episode=episode,
                                           eval_turns=tuple(eval_turns)),
      **fields)


def is_multi_turn(method: base.Method) -> bool:
  """Whether ``method`` samples multi-turn episodes."""
  return isinstance(method.rollout, rollouts.Episodes)


def clipped_pg_method(*, name: str, rollout: RolloutSpec, optim: OptimSpec,
                      reward_fns: RewardFns, shaping: Sequence[Any],
                      kl_coef: float, kl_estimator: str, agg: str,
                      eps_low: float, eps_high: float,
                      episode: multiturn.EpisodeSpec,
                      extra_transforms: Sequence[Any] = (),
                      pre: Sequence[Any] = (), pg_term: Any = None,
                      **method_fields) -> base.Method:
  """The episode Method of a clipped policy gradient.

  Transform ``chain(*pre, [ref_logprobs,] old_logprobs, *shaping)``
  (reference only when ``kl_coef > 0``); objective ``pg + kl_coef ·
  kl_penalty`` with ``pg`` = ``pg_term`` or ``pg_clip``. UFO,
  Reflect-Retry-Reward, Critique-GRPO and the two-turn GRPO baseline differ
  only in ``shaping`` (their reward / advantage transforms) and ``episode``;
  Critique-GRPO's off-policy mode re-lays rows in ``pre`` (before scoring)
  and uses its own ``pg_term``.
  """
  parts = list(pre)
  if kl_coef:
    parts.append(rescoring.ref_logprobs())
  parts += [importance.old_logprobs(), *shaping]
  pg = pg_term or policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high,
                                        agg=agg)
  terms = [(1.0, pg, "pg")]
  if kl_coef:
    terms.append((kl_coef, kl.kl_penalty(estimator=kl_estimator, agg=agg), "kl"))
  return episode_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms),
      roles=base.reference_role(kl_coef), episode=episode,
      extra_transforms=extra_transforms, **method_fields)


REVISE_PROMPT = "Check and revise:"


def score(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                                temperature=1.0),
          optim: OptimSpec = OptimSpec(), stage: int = 2,
          reward_fns: RewardFns = (reward_lib.correctness_reward,),
          feedback_text: str = REVISE_PROMPT, inject_length: int = 24,
          alpha: float = 10.0, kl_first: float = 0.0, kl_base: float = 0.01,
          kl_estimator: str = "k3", agg: str = "token-mean",
          eps_low: float = 0.2, eps_high: float = 0.2,
          baseline: str = "group", scale: str = "none",
          bonus_to_first: bool = True, anchor_first: float = 0.0,
          extra_transforms: Sequence[Any] = (),
          name: str = "score") -> base.Method:
  r"""SCoRe stage I or II (Kumar et al. 2024, arXiv:2409.12917, Eq. 3 / Eq. 4).

  Args:
    rollout: episodes per prompt (``n``, the group of the per-turn
      baseline), budget of each attempt, sampling and scoring temperature,
      strategy (default temperature sampling).
    optim: optimisation passes / minibatches per batch.
    stage: 1 (maximise r2, strong KL on turn 1) or 2 (r1 + r2 + α(r2 − r1)).
    reward_fns: per-turn graders.
    feedback_text: the instruction injected between the attempts.
    inject_length: columns of the injected turn.
    alpha: α of the stage-II progress bonus (the paper uses α = 10; GK).
    kl_first: β2, the extra KL weight on first-attempt tokens in stage I
      (0 → 10·kl_base; ignored in stage II).
    kl_base: β1, the KL weight on every turn.
    kl_estimator: KL estimator (``jaxsi.transforms.kl``).
    agg: aggregation of the policy and KL terms.
    eps_low, eps_high: clip range of the surrogate.
    baseline: 'group' (per-turn group-mean baseline) or 'none' (REINFORCE).
    scale: 'none' (the paper's raw returns) or 'group' (divide each turn's
      advantages by the group std, GRPO-style; keeps the update size
      independent of α).
    bonus_to_first: stage II: whether the first attempt's return includes
      the progress bonus (the literal Eq. 4 sum; default) or only r1 + r2
      (``turns.score_bonus``): with α > 1 the literal sum rewards a wrong
      first attempt.
    anchor_first: stage II: extra KL weight on first-attempt tokens (a jaxsi
      option, 0 in the paper): keeps attempt 1 near the reference so the
      bonus can only be won by attempt 2 (guards against the sandbagging the
      literal bonus invites; docs/self_correction.md).
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method (episodes rollout).
  """
  if stage not in (1, 2):
    raise ValueError(f"score: stage must be 1 or 2, got {stage}")
  if anchor_first < 0:
    raise ValueError(f"score: anchor_first must be >= 0, got {anchor_first}")
  if stage == 1 and anchor_first:
    raise ValueError("score: anchor_first is a stage-II option; stage I anchors "
                     "attempt 1 with kl_first")
  beta2 = kl_first or 10.0 * kl_base
  if stage == 1:
    shaping = rewards.shape_turn_rewards(lambda r1, r2: (jnp.zeros_like(r1), r2))
    kl_weights = (kl_base + beta2, kl_base)
  else:
    shaping = turns.score_bonus(alpha=alpha, bonus_to_first=bonus_to_first)
    kl_weights = (kl_base + anchor_first, kl_base)
  parts = []
  use_kl = any(w > 0 for w in kl_weights)
  if use_kl:
    parts.append(rescoring.ref_logprobs())
  parts += [importance.old_logprobs(), shaping,
            turns.turn_advantages(gamma=1.0, baseline=baseline,
                                          scale=scale)]
  terms = [(1.0, policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high,
                                       agg=agg), "pg")]
  if use_kl:
    terms.append((1.0, turns.turn_kl_penalty(weights=kl_weights,
                                             estimator=kl_estimator, agg=agg),
                  "kl"))
  return episode_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms),
      roles=base.reference_role(use_kl), extra_transforms=extra_transforms,
      episode=multiturn.EpisodeSpec(
          max_turns=2, feedback=multiturn.FixedFeedback(feedback_text),
          stop_on_correct=False, inject_length=inject_length))


def two_turn_grpo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=8,
                                                        temperature=1.0),
                  optim: OptimSpec = OptimSpec(), reward: str = "r2",
                  reward_fns: RewardFns = (reward_lib.correctness_reward,),
                  feedback_text: str = REVISE_PROMPT, inject_length: int = 24,
                  kl_coef: float = 0.0, kl_estimator: str = "k3",
                  agg: str = "token-mean", eps_low: float = 0.2,
                  eps_high: float = 0.2, extra_transforms: Sequence[Any] = (),
                  name: str = "two_turn_grpo") -> base.Method:
  r"""Plain GRPO on two-attempt episodes: SCoRe without its structure.

  The baseline of SCoRe's ablations (Kumar et al. 2024, §6, "multi-turn RL
  without stage I / reward shaping"): the episode reward R = r2
  (``reward='r2'``) or R = r1 + r2 (``'sum'``) is group-normalised (GRPO,
  Shao et al. 2024, arXiv:2402.03300, Eq. 3) and every model token of both
  attempts gets the same advantage; no progress bonus, no per-turn KL.

  Args: as :func:`score`; ``reward`` 'r2' | 'sum'; ``kl_coef`` an optional
  uniform KL weight.

  Returns:
    The Method (episodes rollout).
  """
  if reward == "r2":
    shaping = rewards.shape_turn_rewards(lambda r1, r2: r2)
  elif reward == "sum":
    shaping = rewards.shape_turn_rewards(lambda r1, r2: r1 + r2)
  else:
    raise ValueError(f"two_turn_grpo: reward={reward!r}; expected 'r2' or 'sum'")
  return clipped_pg_method(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=reward_fns,
      shaping=(shaping, advantages.group_advantages(scale="group")),
      kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg, eps_low=eps_low,
      eps_high=eps_high,
      episode=multiturn.EpisodeSpec(
          max_turns=2, feedback=multiturn.FixedFeedback(feedback_text),
          stop_on_correct=False, inject_length=inject_length))
