r"""π-Distill: a PI-conditioned teacher and a plain student trained jointly in one model.

Penaloza et al. 2026, "Privileged Information Distillation for Language
Models" (arXiv:2602.04942, §3 "Privileged Information distillation
(π-Distill)"). The same parameters θ are the teacher π_T = π_θ(· | x, I)
(privileged information I in context: a verified solution, the answer, a
skill) and the student π_S = π_θ(· | x). Samples are drawn once, from the
teacher. The objective, as the first author states it (single-turn form,
blog post "Understanding Self-Distillation and Privileged Information
Distillation", Emilianopp/Privileged-Information-Distillation,
``_posts/2026-02-04-privileged-information-distillation.md``)::

  J(θ)   = α · J_T(θ) + (1 − α) · J_S(θ)
  J_T(θ) = E_{y~π_T}[ R(y, x) ] − β · KL(π_T ‖ sg[π_S])
  J_S(θ) = E_{y~π_T}[ π_S(y|x) / sg[π_T(y|x, I)] · R(y, x) ] − β · KL(sg[π_T] ‖ π_S)

Here, with y ~ π_θold(· | x, I), the reward parts are PPO-clip terms with the
group-normalised outcome advantage Â (GRPO) and per-token ratios::

  J_T ≈ E_y[ 1/|y| Σ_t min(ρ^T_t Â, clip(ρ^T_t, 1 ± ε) Â) ],  ρ^T_t = π_θ(y_t | x, I, y_<t) / π_θold(y_t | x, I, y_<t)
  J_S ≈ E_y[ 1/|y| Σ_t min(ρ^S_t Â, clip(ρ^S_t, 1 ± ε) Â) ],  ρ^S_t = π_θ(y_t | x, y_<t)    / π_θold(y_t | x, I, y_<t)

and the β terms (``kl_coef``; :func:`joint_kl`) are per-token estimates on
the teacher's samples: on teacher rows the reverse KL(π_T ‖ sg π_S) by its
policy-gradient estimate (reward −(log π_T − sg log π_S^old), the student
layout's pre-update log-probs as the stop-gradient reference); on student
rows the forward KL(sg π_T ‖ π_S) = E_{π_T}[log π_T^old − log π_S], whose
gradient is the NLL of the teacher's tokens under the plain prompt.

What was checked (this revision): the α-mix, samples drawn once from the
teacher, the teacher term as on-policy RL under I and the student term as
importance-weighted RL on teacher samples with the ratio's denominator
stop-gradient all match the authors' statement above. The earlier version
of this module had no β terms; they are ``kl_coef`` now (default 0, the
earlier behaviour: the value of β the paper uses is not in the sources read).
Still unverified (the paper's own equations were not available as text):
whether the paper's ratio is per token (as here, PPO-style, with clipping)
or per sequence (as in the blog's single-turn form, unclipped), its
advantage estimator, and its multi-turn (agentic) aggregation.

α = 1 trains the teacher alone, α = 0 the student alone on teacher samples
(both variants the paper reports).

Composition::

  rollout    TeacherSample(n): n // 2 samples per prompt from the privileged
             prompt, each row duplicated under the plain prompt
             (sampling/privileged.py; student rows marked, twins indexed)
  transform  old_logprobs → [twin_reference_logprobs (teacher rows: the
             student layout's old log-probs into teacher_logprobs)]
             → twin_old_logprobs (student rows: the teacher's)
             → group_advantages → drop_zero_variance_groups → row weights
             2α (teacher rows) / 2(1 − α) (student rows)
  objective  pg_clip [+ kl_coef · joint_kl] (the weights make each mean
             α·(teacher rows) + (1 − α)·(student rows): both halves have the
             same completions, hence the same token counts)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import privileged
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import (advantages, aggregation, filters, importance,
                              policy_losses)
from jaxsi.transforms.base import Context, ModelOutputs, chain, objective, stateless

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


def twin_reference_logprobs():
  """Teacher rows' KL reference: ``teacher_logprobs[b] ← old_logprobs[twin[b]]``.

  Apply after ``importance.old_logprobs`` and before ``twin_old_logprobs``:
  on a teacher row (not ``extras[STUDENT_KEY]``) the stop-gradient
  log-probs of the same completion under the plain prompt (its student twin)
  before the update; student rows keep their own old log-probs there (unused).
  """

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.old_logprobs is None:
      raise ValueError("twin_reference_logprobs needs traj.old_logprobs"
                       " (apply importance.old_logprobs() first)")
    student = jnp.asarray(traj.extras[privileged.STUDENT_KEY], bool)
    twin = jnp.asarray(traj.extras[privileged.TWIN_KEY], jnp.int32)
    old = traj.old_logprobs
    ref = jnp.where((~student)[:, None] & traj.loss_mask, old[twin], old)
    return traj.replace(teacher_logprobs=jax.lax.stop_gradient(ref)), {}

  return stateless(fn)


def joint_kl(*, agg: str = "seq-mean-token-mean"):
  r"""π-Distill's β terms (module docstring) as one objective term.

  Per token, with ℓp the update's log-probs (``outputs.logprobs``) and sg
  stop-gradient:

  * teacher rows: d = ℓp − sg(teacher_logprobs) (the student twin's old
    log-probs, :func:`twin_reference_logprobs`); ℓ = sg(d) + sg(d)·(ℓp − sg ℓp):
    value d (the k1 estimate of KL(π_T ‖ π_S)), gradient the REINFORCE
    gradient of KL(π_T ‖ sg π_S) on the teacher's own samples;
  * student rows: ℓ = sg(old_logprobs) − ℓp with ``old_logprobs`` the
    teacher's (after ``twin_old_logprobs``): the k1 estimate of KL(sg π_T ‖
    π_S) on teacher samples; gradient −∇ℓp (NLL of the teacher's tokens).

  Aggregated by ``agg`` with ``traj.weights`` (the α row weights). Metrics:
  ``teacher_kl``, ``student_kl`` (token means of the two estimates).
  """
  sg = jax.lax.stop_gradient

  def term(outputs: ModelOutputs, traj: Trajectory):
    if traj.teacher_logprobs is None or traj.old_logprobs is None:
      raise ValueError("joint_kl needs traj.teacher_logprobs and traj.old_logprobs"
                       " (twin_reference_logprobs, old_logprobs)")
    m = traj.loss_mask.astype(bool)
    student = jnp.asarray(traj.extras[privileged.STUDENT_KEY], bool)[:, None]
    lp = jnp.where(m, outputs.logprobs, 0.0)
    d = lp - sg(jnp.where(m, traj.teacher_logprobs, 0.0))
    teacher_bt = sg(d) + sg(d) * (lp - sg(lp))
    student_bt = sg(jnp.where(m, traj.old_logprobs, 0.0)) - lp
    loss_bt = jnp.where(student, student_bt, teacher_bt)
    loss = aggregation.aggregate_trajectory(loss_bt, traj, mode=agg)
    tm = (m & ~student & traj.valid[:, None]).astype(jnp.float32)
    smm = (m & student & traj.valid[:, None]).astype(jnp.float32)
    return loss, {
        "teacher_kl": jnp.sum(sg(d) * tm) / jnp.maximum(tm.sum(), 1.0),
        "student_kl": jnp.sum(sg(student_bt) * smm) / jnp.maximum(smm.sum(), 1.0)}

  return term


def pi_distill(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16,
                                                     temperature=1.0),
               optim: OptimSpec = OptimSpec(),
               reward_fns: RewardFns = (reward_lib.correctness_reward,),
               context_fn: Callable[[Any], str] = privileged.solution_context,
               alpha: float = 0.5, kl_coef: float = 0.0, eps: float = 0.2,
               scale: str = "group",
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
    kl_coef: β of the KL terms (:func:`joint_kl`; >= 0; 0: none).
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
  if not kl_coef >= 0:
    raise ValueError(f"pi_distill: kl_coef must be >= 0, got {kl_coef!r}")
  parts = [importance.old_logprobs()]
  if kl_coef:
    parts.append(twin_reference_logprobs())
  parts += [importance.twin_old_logprobs(rows_key=privileged.STUDENT_KEY,
                                        twin_key=privileged.TWIN_KEY),
            advantages.group_advantages(scale=scale)]
  if drop_zero_variance:
    parts.append(filters.drop_zero_variance_groups())
  parts.append(joint_weights(float(alpha)))
  pg = policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg=agg)
  terms = [(1.0, pg, "pg")]
  if kl_coef:
    terms.append((float(kl_coef), joint_kl(agg=agg), "kl"))
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms),
      stage=lambda s: privileged.TeacherSample(s, context_fn=context_fn,
                                               teach=teach),
      extra_transforms=extra_transforms)


__all__ = ["joint_kl", "joint_weights", "pi_distill", "twin_reference_logprobs"]
