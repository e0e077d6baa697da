r"""π-Distill: a PI-conditioned teacher and a plain student trained jointly in one model.

Penaloza et al. 2026, "Privileged Information Distillation for Language
Models" (arXiv:2602.04942, §3 "Privileged Information distillation
(π-Distill)"; GK: composed from the abstract and the authors' summary — one
objective, samples drawn ONCE from the teacher, the teacher's objective also
applied to the student with an importance-sampling term — not checked
against the paper's equations). The same parameters θ are the teacher
π_θ(· | x, I) (privileged information I in context: a verified solution,
the answer, a skill) and the student π_θ(· | x). With y ~ π_θold(· | x, I)::

  J(θ) = α · J_T(θ) + (1 − α) · J_S(θ)
  J_T = E_y[ 1/|y| Σ_t min(ρ^T_t Â, clip(ρ^T_t, 1 ± ε) Â) ],  ρ^T_t = π_θ(y_t | x, I, y_<t) / π_θold(y_t | x, I, y_<t)
  J_S = E_y[ 1/|y| Σ_t min(ρ^S_t Â, clip(ρ^S_t, 1 ± ε) Â) ],  ρ^S_t = π_θ(y_t | x, y_<t)    / π_θold(y_t | x, I, y_<t)

Â the group-normalised outcome advantage of the teacher's samples (GRPO).
ρ^S is the per-token importance ratio of the student against the sampling
(teacher) policy: the student learns from the teacher's successes off-policy,
the teacher keeps improving on-policy, and at inference only the student
(plain prompt) is used. α = 1 trains the teacher alone, α = 0 the student
alone on teacher samples (both variants the paper reports).

Composition::

  rollout    TeacherSample(n): n // 2 samples per prompt from the privileged
             prompt, each row duplicated under the plain prompt
             (sampling/privileged.py; student rows marked, twins indexed)
  transform  old_logprobs → twin_old_logprobs (student rows: the teacher's)
             → group_advantages → drop_zero_variance_groups → row weights
             2α (teacher rows) / 2(1 − α) (student rows)
  objective  pg_clip (the weights make its mean α·J_T + (1 − α)·J_S: both
             halves have the same completions, hence the same token counts)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax.numpy as jnp

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import privileged
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import advantages, filters, importance, policy_losses
from jaxsi.transforms.base import Context, chain, objective, stateless

RewardFns = Union[Callable, Sequence[Callable]]


def joint_weights(alpha: float):
  """Row weights ×2α on teacher rows, ×2(1 − α) on student rows.

  With equal teacher/student halves a weighted mean over rows is then
  α·(teacher mean) + (1 − α)·(student mean). Metric ``pi_distill/alpha``.
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    student = jnp.asarray(traj.extras[privileged.STUDENT_KEY], bool)
    scale = jnp.where(student, 2.0 * (1.0 - alpha), 2.0 * alpha)
    return (traj.replace(weights=traj.weights * scale),
            {"pi_distill/alpha": jnp.asarray(alpha, jnp.float32)})

  return stateless(fn)


def pi_distill(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                     temperature=1.0),
               optim: OptimSpec = OptimSpec(),
               reward_fns: RewardFns = (reward_lib.correctness_reward,),
               context_fn: Callable[[Any], str] = privileged.solution_context,
               alpha: float = 0.5, eps: float = 0.2, scale: str = "group",
               agg: str = "seq-mean-token-mean", drop_zero_variance: bool = True,
               teach: int = 2, extra_transforms: Sequence[Any] = (),
               name: str = "pi_distill") -> base.Method:
  r"""π-Distill (module docstring): α·J_teacher + (1 − α)·J_student.

  Args:
    rollout: ``n`` rows per prompt (even): n // 2 teacher samples, each also
      laid out under the plain prompt; budget; temperature.
    optim: epochs × minibatches.
    reward_fns: reward stages (graded once per teacher sample).
    context_fn: task → privileged prompt (``privileged.solution_context``,
      ``answer_context``, ``skill_context``, or your own).
    alpha: weight of the teacher term, in [0, 1].
    eps: PPO clip ε of both terms.
    scale: group advantage scaling.
    agg: aggregation of the clipped PG term.
    drop_zero_variance: drop all-equal groups (both halves together).
    teach: every ``teach``-th labelled task is also taught under its
      privileged prompt in the warm start (0: none).
    extra_transforms, name: as ``grpo``.

  Returns:
    The Method (rollout: ``privileged.TeacherSample``).

  Raises:
    ValueError: an option out of range (named).
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"pi_distill: alpha must be in [0, 1], got {alpha!r}")
  if not eps > 0:
    raise ValueError(f"pi_distill: eps must be > 0, got {eps!r}")
  parts = [importance.old_logprobs(),
           importance.twin_old_logprobs(rows_key=privileged.STUDENT_KEY,
                                        twin_key=privileged.TWIN_KEY),
           advantages.group_advantages(scale=scale)]
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  parts.append(joint_weights(float(alpha)))
  pg = policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg=agg)
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective((1.0, pg, "pg")),
      stage=lambda s: privileged.TeacherSample(s, context_fn=context_fn,
                                               teach=teach),
      extra_transforms=extra_transforms)


__all__ = ["pi_distill", "joint_weights"]
