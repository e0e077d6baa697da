r"""SPO: the win rate inside the group as the reward of a group policy gradient.

Swamy et al. 2024, "A Minimaximalist Approach to Reinforcement Learning from
Human Feedback" (arXiv:2401.04056, Algorithm 1, SPO): sample N completions
of a prompt, compare them pairwise with a preference oracle, reward each by
its win rate r_i = 1/(N−1) Σ_{j≠i} P(y_i ≻ y_j) (``jaxsi.rewards.win_rate``),
and run any policy-gradient update — here GRPO's (group-normalised
advantages, PPO clip, optional k3 KL: ``jaxsi.methods.grpo``)::

  SPO  rollout(N) · reward(win rate under P) ·
       chain([ref_logprobs], old_logprobs, group_advantages(scale='group'),
             drop_zero_variance_groups)
       objective = pg_clip(0.2, 0.2) + β·kl(k3)

Two oracles (``preference``):

* ``'verifier'`` — the perfect rater (P = 1 / ½ / 0 by the verifier's grade):
  the win rate is affine in a 0/1 grade within a group
  (``win_rate`` module docstring), so with ``scale='group'`` the advantages,
  and hence the run, are GRPO's on the verifier reward.
* ``'judge'`` — a model role judges every pair in a pairwise
  ``JudgeFormat`` (``win_rate.PairwiseJudgeWinRate``), in both orders with
  ``position_swap``. ``judge_role='policy'`` is the self-play judge (the
  current policy, the paper's single agent also as rater);
  ``judge_role='judge'`` a frozen judge (by default a copy of the warm
  start; a run may pass its own). A tiny model judges only what it was
  taught: ``teach_judge`` adds verifier-labelled pairwise judging examples
  (``jaxsi.data.judging.pairwise_examples`` of the labelled tasks) to the
  warm start (``rollout.supervised_extras``). The verifier is then only a
  monitor (``label_free/sample_acc``).

GK: the paper's update is PPO/SAC on continuous control; the GRPO update and
the judge prompts are this library's miniature (see the ``win_rate``
docstring for what was checked).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from jaxsi import spec as spec_lib
from jaxsi.data import judging as data_judging
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.grpo import grpo
from jaxsi.rewards import judging
from jaxsi.rewards import win_rate
from jaxsi.sampling import label_free as monitors
from jaxsi.sampling import rollouts

PREFERENCES = ("verifier", "judge")
JUDGE_ROLES = (spec_lib.POLICY, spec_lib.JUDGE)


@dataclasses.dataclass(frozen=True)
class TeachJudge(rollouts.Sample):
  """``rollouts.Sample`` whose warm start also teaches pairwise judging.

  ``supervised_extras(tasks)`` = one verifier-labelled pairwise example per
  labelled task (the target against a one-digit corruption, in a random
  order: ``data.judging.pairwise_examples``), so the warm-started policy can
  act as SPO's judge.

  Attributes:
    spec: the rollout spec.
    judge_format: the pairwise format.
    seed: seed of the corruptions and orders.
  """

  judge_format: Any = "pairwise"
  seed: int = 0

  def supervised_extras(self, tasks) -> list:
    ex = data_judging.pairwise_examples(list(tasks), self.judge_format, seed=self.seed)
    return [(e["prompt"], e["completion"]) for e in ex]


def spo(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=16, temperature=1.0),
        optim: OptimSpec = OptimSpec(), preference: str = "verifier",
        judge_role: str = spec_lib.POLICY, judge_format: Any = "pairwise",
        position_swap: bool = True, unparsed: str = "tie",
        judge_max_new_tokens: int = 2, teach_judge: bool = True,
        eps_low: float = 0.2, eps_high: float = 0.2, kl_coef: float = 0.04,
        kl_estimator: str = "k3", scale: str = "group",
        agg: str = "seq-mean-token-mean", drop_zero_variance: bool = True,
        extra_transforms: Sequence[Any] = (), name: Optional[str] = None
        ) -> base.Method:
  r"""SPO (Swamy et al. 2024, arXiv:2401.04056, Algorithm 1) with GRPO's update.

  Args:
    rollout: N samples per prompt (the group the win rate is taken in),
      budget, temperature.
    optim: epochs × minibatches.
    preference: ``'verifier'`` (perfect rater) or ``'judge'`` (a model role
      judges pairs).
    judge_role: ``'policy'`` (self-judge, the current params) or ``'judge'``
      (frozen; default a copy of the warm start). Only with ``'judge'``.
    judge_format: the pairwise ``JudgeFormat`` (or its name).
    position_swap: judge both orders of every pair.
    unparsed: unparsed judgments count as ties (``'tie'``) or are skipped
      (``'skip'``).
    judge_max_new_tokens: judgment budget.
    teach_judge: add pairwise judging examples to the warm start.
    eps_low, eps_high, kl_coef, kl_estimator, scale, agg,
      drop_zero_variance, extra_transforms: as ``grpo.grpo``.
    name: method name (default ``'spo'`` / ``'spo_judge'``).

  Returns:
    The on-policy Method.

  Raises:
    ValueError: an unknown ``preference``, ``judge_role`` or ``unparsed``,
      or a format that is not pairwise.
  """
  if preference not in PREFERENCES:
    raise ValueError(f"spo: preference must be one of {PREFERENCES}, got {preference!r}")
  if unparsed not in win_rate.UNPARSED_MODES:
    raise ValueError(f"spo: unparsed must be one of {win_rate.UNPARSED_MODES}, got"
                     f" {unparsed!r}")
  if preference == "verifier":
    reward = win_rate.verifier_win_rate(group_size=rollout.n, unparsed=unparsed)
  else:
    if judge_role not in JUDGE_ROLES:
      raise ValueError(f"spo: judge_role must be one of {JUDGE_ROLES}, got"
                       f" {judge_role!r}")
    fmt = judging.get_format(judge_format)
    if fmt.kind != "pairwise":
      raise ValueError(f"spo: judge_format {fmt.name!r} is {fmt.kind}; SPO's judge"
                       " compares two completions (a pairwise format)")
    reward = win_rate.PairwiseJudgeWinRate(
        role=judge_role, format=fmt, position_swap=position_swap, unparsed=unparsed,
        max_new_tokens=judge_max_new_tokens, group_size=rollout.n)
  method = grpo(rollout=rollout, optim=optim, reward_fns=(reward,), eps_low=eps_low,
                eps_high=eps_high, kl_coef=kl_coef, kl_estimator=kl_estimator,
                scale=scale, agg=agg, drop_zero_variance=drop_zero_variance,
                extra_transforms=extra_transforms,
                name=name or ("spo" if preference == "verifier" else "spo_judge"))
  if preference == "verifier":
    return method
  stage = (TeachJudge(spec=method.spec, judge_format=judge_format) if teach_judge
           else rollouts.Sample(method.spec))
  roles = method.roles
  if judge_role == spec_lib.JUDGE:
    roles += (spec_lib.Role(spec_lib.JUDGE, source=spec_lib.FROM_INITIAL),)
  return dataclasses.replace(method, rollout=monitors.LabelMonitor(stage, vote=False),
                             roles=roles)


__all__ = ["PREFERENCES", "TeachJudge", "spo"]
