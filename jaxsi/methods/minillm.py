r"""MiniLLM: on-policy reverse-KL distillation as policy gradient (TRL ``MiniLLMTrainer``).

Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language Models"
(arXiv:2306.08543), as TRL ships it (``trl.experimental.minillm``, read at
huggingface/trl f2cd577: ``MiniLLMTrainer._compute_advantage``,
``_single_step_decomposition_loss``, ``compute_loss``). The student samples
y ~ π_θ(· | x); with per-token rewards from a separate teacher π_T::

  R_t   = log π_T(y_t | x, y_<t) − log π_θold(y_t | x, y_<t)           (stop-gradient)
  A^KL_t = Σ_{i≥t} γ^{i−t} R_i / Σ_{i≥t} γ^{i−t}    (length_normalization; γ = 0: R_t)
  A_t   = A^GRPO (verifier, group-normalised; 0 with reward_advantage=False) + A^KL_t
  L(θ)  = PPO-clip(A_t)  +  single_coef · 1/N Σ_t KL(π_θ(· | x, y_<t) ‖ π_T(· | x, y_<t))

The first term is the paper's "long" part of the reverse-KL gradient (its
Eq. 5–7: the policy gradient of −KL(π_θ ‖ π_T) with the future log-ratio as
reward, length-normalised), the second the "single-step decomposition"
(the exact per-position reverse KL, here ``distillation.topk_jsd(beta=1)``
against the teacher's top-k; k = V is TRL's full-vocabulary
``F.kl_div(teacher, student, log_target=True)`` summed over V, averaged over
completion tokens). γ = 0 with no single-step term is the plain on-policy
distillation of Tinker / Thinking Machines (TRL's docs).

Checked against TRL's code, and where this differs:

* TRL computes R_t from the *current* forward pass with gradient attached
  and adds it to the advantages, so gradient also flows through the
  advantage; here R_t uses the sampling policy's log-probs
  (``old_logprobs``) and is a constant, as the paper's policy gradient treats
  the reward (equal values at the first update of a batch).
* Without length normalisation TRL's code multiplies the suffix sum by γ^t
  (it weights by γ^i with i counted from the completion start); its
  docstring and the paper use Σ_{i≥t} γ^{i−t} R_i, which is what this does.
  With normalisation the factor cancels and both agree.
* TRL's default reward is a dummy zero reward (A^GRPO = 0):
  ``reward_advantage=False`` here (default); True adds the verifier's GRPO
  advantage (TRL with real ``reward_funcs``).
* Not in TRL and not built here: the paper's teacher-mix sampling
  (p̃ = α·p_T + (1 − α)·π_θ) and its pre-training language-modelling loss.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsi import spec as spec_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import (advantages, distillation, importance, policy_losses,
                              rescoring, teacher_logits)
from jaxsi.transforms.base import Context, chain, objective, stateless

RewardFns = Union[Callable, Sequence[Callable]]


def discounted_suffix_mean(rewards: jax.Array, mask: jax.Array, *, gamma: float,
                           normalize: bool = True) -> jax.Array:
  r"""f32[B, T]: Σ_{i≥t} γ^{i−t} r_i m_i, divided by Σ_{i≥t} γ^{i−t} m_i if ``normalize``.

  γ = 0 returns ``rewards · mask``. Positions with ``mask = 0`` are 0.
  """
  m = mask.astype(jnp.float32)
  r = rewards.astype(jnp.float32) * m
  if gamma == 0.0:
    return r

  def step(carry, x):
    num, den = carry
    ri, mi = x
    num = ri + gamma * num
    den = mi + gamma * den
    return (num, den), (num, den)

  zeros = jnp.zeros(r.shape[:1], jnp.float32)
  _, (num, den) = jax.lax.scan(step, (zeros, zeros), (r.T[::-1], m.T[::-1]))
  num, den = num[::-1].T, den[::-1].T
  out = num / jnp.maximum(den, 1e-8) if normalize else num
  return out * m


def rkl_advantages(*, gamma: float = 0.0, length_normalization: bool = True):
  """Adds MiniLLM's reverse-KL advantage A^KL (module docstring) to ``advantages``.

  Reads ``teacher_logprobs`` and ``old_logprobs`` (or ``behaviour_logprobs``)
  on the ``loss_mask`` tokens; ``advantages`` None counts as 0. Metrics:
  ``minillm/reward`` (token-mean R_t), ``minillm/rkl_advantage`` (token-mean A^KL).

  Raises:
    ValueError: gamma outside [0, 1].
  """
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"rkl_advantages: gamma must be in [0, 1], got {gamma!r}")

  def fn(traj: Trajectory, ctx: Context):
    del ctx
    if traj.teacher_logprobs is None:
      raise ValueError("rkl_advantages: traj.teacher_logprobs is not set; chain"
                       " rescoring.teacher_logprobs() before it")
    student = traj.old_logprobs if traj.old_logprobs is not None else traj.behaviour_logprobs
    m = traj.loss_mask.astype(jnp.float32)
    r = jax.lax.stop_gradient(traj.teacher_logprobs - student)
    a_kl = discounted_suffix_mean(r, m, gamma=float(gamma), normalize=length_normalization)
    base_adv = (jnp.zeros_like(m) if traj.advantages is None
                else traj.advantages.astype(jnp.float32))
    n = jnp.maximum(m.sum(), 1.0)
    return (traj.replace(advantages=base_adv + a_kl),
            {"minillm/reward": jnp.sum(r * m) / n,
             "minillm/rkl_advantage": jnp.sum(a_kl * m) / n})

  return stateless(fn)


def minillm(*, rollout: RolloutSpec = RolloutSpec(n=2, max_new_tokens=16,
                                                  temperature=1.0),
            optim: OptimSpec = OptimSpec(),
            reward_fns: RewardFns = (reward_lib.correctness_reward,),
            gamma: float = 0.0, length_normalization: bool = True,
            single_coef: float = 1.0, rkl_advantage: bool = True,
            reward_advantage: bool = False, eps: float = 0.2, k: int = 64,
            row_chunk: int = 1, chunked: bool = True, agg: str = "token-mean",
            extra_transforms: Sequence[Any] = (), name: str = "minillm"
            ) -> base.Method:
  r"""MiniLLM (module docstring) with the teacher role.

  Args:
    rollout: student samples per prompt / budget / temperature.
    optim: epochs × minibatches.
    reward_fns: reward stages (the GRPO advantage with ``reward_advantage``;
      logged otherwise).
    gamma: γ of the reverse-KL return (TRL default 0).
    length_normalization: divide by Σ γ^{i−t} (TRL default True).
    single_coef: weight of the single-step full reverse KL (TRL
      ``single_step_decomposition``: 1 on, 0 off).
    rkl_advantage: add A^KL to the advantages (TRL ``rkl_advantage``).
    reward_advantage: add the verifier's group-normalised advantage.
    eps: PPO clip ε.
    k: teacher ids kept per position for the single-step term (V: exact).
    row_chunk: rows per teacher top-k chunk (divides the batch).
    chunked: the single-step term chunk by chunk over T from the hidden
      states (``topk_jsd(chunked=True)``; as ``gkd``'s default).
    agg: aggregation of both terms (TRL: token-mean over completion tokens).
    extra_transforms, name: as ``grpo``.

  Returns:
    The Method (role ``teacher``: ``roles={'teacher': (model, params)}``).

  Raises:
    ValueError: no signal at all, a negative weight, or reward_advantage
      with n < 2 (named).
  """
  if single_coef < 0:
    raise ValueError(f"minillm: single_coef must be >= 0, got {single_coef!r}")
  if not (rkl_advantage or reward_advantage or single_coef):
    raise ValueError("minillm: rkl_advantage, reward_advantage and single_coef are"
                     " all off: nothing to train on")
  if reward_advantage and rollout.n < 2:
    raise ValueError("minillm: reward_advantage needs rollout.n >= 2 (group"
                     f" advantages), got n={rollout.n}")
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"minillm: gamma must be in [0, 1], got {gamma!r}")
  parts = [rescoring.teacher_logprobs(scorer=base.TEACHER), importance.old_logprobs()]
  if single_coef:
    parts.append(teacher_logits.teacher_topk(
        k=int(k), scorer=f"{spec_lib.TEACHER}/logits", params=spec_lib.TEACHER,
        row_chunk=int(row_chunk)))
  if reward_advantage:
    parts.append(advantages.group_advantages(scale="group"))
  if rkl_advantage:
    parts.append(rkl_advantages(gamma=float(gamma),
                                length_normalization=length_normalization))
  terms = []
  if rkl_advantage or reward_advantage:
    terms.append((1.0, policy_losses.pg_clip(eps_low=eps, eps_high=eps, agg=agg), "pg"))
  if single_coef:
    terms.append((float(single_coef), distillation.topk_jsd(beta=1.0, agg=agg,
                                                                chunked=chunked), "kd"))
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=reward_fns,
      transform=chain(*parts), objective=objective(*terms),
      roles=(base.Role(base.TEACHER),), extra_transforms=extra_transforms)


__all__ = ["discounted_suffix_mean", "minillm", "rkl_advantages"]
