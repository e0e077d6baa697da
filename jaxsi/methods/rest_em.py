"""ReST-EM: expectation-maximisation self-training (Singh et al. 2023).

"Beyond Human Data: Scaling Self-Training for Problem-Solving with Language
Models" (arXiv:2312.06585), Alg. 1 / Eq. 2–3. Maximising the ELBO
E_{q(y|x)}[log r(x, y) + log p_θ(y|x)] with a binary reward r:

* E-step (Generate): for every problem sample K solutions from the current
  policy p_{θ_{t}} (temperature 1 in the paper's math runs), score them with
  r(x, y) ∈ {0, 1}, keep those with r ≥ threshold, at most ``max_per_prompt``
  per problem (paper: 10, to balance easy and hard problems);
* M-step (Improve): maximise Σ r(x, y) log p_θ(y|x) over the kept samples,
  fine-tuning **from the base model** each iteration (§3: "we always
  fine-tune the base pretrained language model", to limit overfitting),
  on the latest iteration's data only.

As a composition (``jaxsi.spec.RoundsMethod``): rollout stage
``rollouts.Sample(rollout)`` (a RolloutSpec: K samples at temperature T) · reward stage
``correctness_reward`` · ``rft.verified_filter`` (reward ≥ 1, distinct, at
most ``max_per_prompt`` per problem) · ``fit(sft)`` from the base.
"""

from __future__ import annotations

from jaxsi import spec
from jaxsi.methods import rft
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import reward_fn
from jaxsi.sampling import rollouts


def rest_em(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
            max_per_prompt: int = 4, include_labeled: bool = True,
            name: str = "rest_em") -> spec.RoundsMethod:
  """ReST-EM (Singh et al. 2023, Alg. 1) as a ``RoundsMethod``.

  Args:
    rollout: the shared sampling settings: ``n`` = K samples per problem
      (paper: 32) at ``temperature`` (paper: 1.0 for MATH); the completion
      budget is ``RoundsConfig.max_new_tokens``.
    max_per_prompt: cap of kept correct solutions per problem (paper: 10).
    include_labeled: also train on the labeled warm-start set each M-step
      (our warm start stands in for the paper's pretrained model; without it
      the restarted model would only see self-generated data).
    name: method name.

  Returns:
    The method: restart from the base, latest round's data only.
  """
  common.check_rollout("rest_em", rollout)
  if max_per_prompt < 1:
    raise ValueError("rest_em: max_per_prompt must be >= 1")

  return spec.RoundsMethod(
      name=name,
      rollout=rollouts.Sample(rollout),
      rewards=(reward_fn.correctness_reward,),
      select=rft.verified_filter(max_per_prompt=max_per_prompt, distinct=True),
      train_from="base", accumulate=False, include_labeled=include_labeled)
