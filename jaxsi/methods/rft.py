"""RFT: rejection-sampling fine-tuning (Yuan et al. 2023).

"Scaling Relationship on Learning Mathematical Reasoning with Large Language
Models" (arXiv:2308.01825), §3.3: sample k reasoning paths per training
question from the SFT model (temperature 0.7), keep the correct ones with
distinct reasoning paths (the paper dedupes by the list of equations; here by
the completion text), and fine-tune the *base* model on SFT data ∪ RFT data
(§3.3: "D_RFT = D ∪ {distinct correct paths}"). One round in the paper;
iterated rounds regenerate with the latest model and retrain from the base.

As a composition (``jaxsi.spec.RoundsMethod``): rollout stage
``rollouts.Sample(rollout)`` (a RolloutSpec: k samples at temperature T) · reward stage
``correctness_reward`` (the task verifier) · :func:`verified_filter` ·
``fit(sft)`` on labeled ∪ kept, from the base.
"""

from __future__ import annotations

from typing import Optional

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import reward_fn
from jaxsi.sampling import rollouts
from jaxsi.transforms import base as transforms_base
from jaxsi.transforms import filters


def verified_filter(*, max_per_prompt: Optional[int],
                    distinct: bool = False) -> transforms_base.TrajectoryTransform:
  """The RFT / ReST-EM filter as ``jaxsi.transforms``: verified (the summed
  reward columns — here one, the verifier — ≥ 1), then with ``distinct`` the
  first of each group's identical completions (a no-op when one is kept per
  problem, so left out), then at most ``max_per_prompt`` per problem, first in
  sample order (``top_k_per_group`` breaks ties by row). Runs on a round's
  stored trajectories."""
  chain = [filters.threshold_filter(threshold=1.0)]
  if distinct and max_per_prompt != 1:
    chain.append(filters.distinct_per_group())
  if max_per_prompt is not None:
    chain.append(filters.top_k_per_group(k=int(max_per_prompt)))
  return transforms_base.chain(*chain)


def rft(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=0.7),
        max_per_prompt: Optional[int] = None, distinct: bool = True,
        name: str = "rft") -> spec.RoundsMethod:
  """RFT (Yuan et al. 2023, §3.3) as a :class:`~jaxsi.spec.RoundsMethod`.

  Args:
    rollout: the shared sampling settings: ``n`` = k sampled paths per
      question (paper: k = 100) at ``temperature`` (paper: 0.7); the
      completion budget is ``RoundsConfig.max_new_tokens``.
    max_per_prompt: cap on kept distinct correct paths per question (None:
      all distinct ones, as the paper).
    distinct: dedupe identical completions of a question.
    name: method name.

  Returns:
    The method: base-restart, no accumulation, labeled data included; the
    selection is the transform :func:`verified_filter` over the round's
    stored trajectories.
  """
  common.check_rollout("rft", rollout)

  return spec.RoundsMethod(
      name=name,
      rollout=rollouts.Sample(rollout),
      rewards=(reward_fn.correctness_reward,),
      select=verified_filter(max_per_prompt=max_per_prompt, distinct=distinct),
      train_from="base", accumulate=False, include_labeled=True)
