r"""DNO: Direct Nash Optimization (Rosset et al. 2024), the practical iteration.

"Direct Nash Optimization: Teaching Language Models to Self-Improve with
General Preferences" (arXiv:2404.03715), Alg. 2 (DNO-Prct): each iteration
t samples several responses per prompt from π_t, scores them with a
preference oracle, pairs the best against the worst **only if their score
gap exceeds a margin** (the large-margin filter), and trains π_{t+1} from π_t
with a DPO-style contrastive loss whose reference is π_t:
L = −log σ(β log π(y⁺)/π_t(y⁺) − β log π(y⁻)/π_t(y⁻)) — Alg. 2's update
(its step size η is β here; catalog_01 [1] marks the practical details GK:
checked from the paper as recalled — the loss with reference π_t, the
best-vs-worst pair and the margin filter on the oracle's score gap match
Alg. 2 and §5; the paper's oracle scores each response 1–10 with GPT-4 and
its exact margin value is not reproduced here).

The margin filter is the difference from iterative DPO
(``methods.iterative_dpo``): ``margin=0`` gives the unfiltered baseline.
Here the oracle is a scored reward sum s = Σ_k w_k r_k (default: the
verifier plus 0.5 × the answer-format reward, so gaps of 0.5 are
format-only differences and the default margin 0.5 keeps only pairs that
differ in correctness). ``teacher_response=True`` adds the paper's teacher
(GPT-4-Turbo) response to every group: ``rollouts.WithTeacherResponse``,
n − 1 policy samples + the task's labeled target as the response of a
perfect teacher, scored by the same oracle (so it is chosen whenever it
wins by the margin).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from jaxsi import spec
from jaxsi.methods import self_training_common as common
from jaxsi.rewards import reward_fn
from jaxsi.sampling import rollouts
from jaxsi.transforms import pairs


def dno(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
        beta: float = 0.1, margin: float = 0.5,
        rewards: Sequence[Any] = (reward_fn.correctness_reward, reward_fn.format_reward),
        reward_weights: Optional[Sequence[float]] = (1.0, 0.5),
        teacher_response: bool = False,
        name: str = "dno") -> spec.RoundsMethod:
  """DNO-Prct (arXiv:2404.03715, Alg. 2) as a ``RoundsMethod``.

  Args:
    rollout: responses per prompt and iteration.
    beta: β of the contrastive (DPO) loss.
    margin: the filter: a pair needs s(y⁺) − s(y⁻) > ``margin``.
    rewards: the oracle's reward stages (column 0 is also the monitored
      correctness).
    reward_weights: w_k of the score (None: all 1).
    teacher_response: the last of each group's n rows is the teacher's
      response (the labeled target, ``rollouts.WithTeacherResponse``).
    name: method name.

  Returns:
    The RoundsMethod (reference = previous iterate, train from current).
  """
  common.check_rollout("dno", rollout)
  if rollout.n < 2:
    raise ValueError(f"dno: rollout.n must be >= 2, got {rollout.n}")
  if margin < 0:
    raise ValueError(f"dno: margin must be >= 0, got {margin}")
  rewards = tuple(rewards)
  if reward_weights is not None and len(reward_weights) != len(rewards):
    raise ValueError(f"dno: {len(reward_weights)} reward_weights for {len(rewards)}"
                     " reward stages")
  stage = (rollouts.WithTeacherResponse(rollout) if teacher_response
           else rollouts.Sample(rollout))
  return spec.RoundsMethod(
      name=name, rollout=stage, rewards=rewards,
      select=pairs.best_vs_worst(margin=margin, reward_weights=reward_weights),
      objective="dpo", objective_settings=dict(beta=float(beta)),
      reference="previous", train_from="current", accumulate=False,
      include_labeled=False)


__all__ = ["dno"]
