r"""Online DPO and iterative DPO on verifier pairs: the preference baselines.

* :func:`online_dpo` (a Loop ``Method``): every step samples n completions per
  prompt from the current policy, scores them with the verifier, pairs the
  best against the worst of each group (``pairs.best_vs_worst``) and takes a
  DPO step (Rafailov et al. 2023, arXiv:2305.18290, Eq. 7) on the pairs of the
  current batch, with a frozen reference (the initial policy):
  L = −log σ(β[(log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))]).
  This is the on-policy pairing of online/iterative DPO set-ups (e.g. Xiong
  et al. 2024, arXiv:2312.11456; Guo et al. 2024, arXiv:2402.04792).
* :func:`iterative_dpo` (a ``RoundsMethod``): each round samples n per
  problem from M_t, pairs a verified-correct against an incorrect sample of
  the same problem (best vs worst by the gold verifier), and trains
  M_{t+1} from M_t with reference M_t — iterative DPO on gold-label pairs
  (as in Self-Rewarding LMs' iteration scheme, Yuan et al. 2024,
  arXiv:2401.10020 §2.3, with the verifier as the judge). It is the
  supervised upper baseline of ScPO (``methods.scpo``) and the unfiltered
  baseline of DNO (``methods.dno``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from jaxsi import spec
from jaxsi.methods import base
from jaxsi.methods import self_training_common as common
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn
from jaxsi.sampling import rollouts
from jaxsi.transforms import pairs, preference, rescoring
from jaxsi.transforms.base import chain, objective


def online_dpo(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=16,
                                                     temperature=1.0),
               optim: OptimSpec = OptimSpec(), beta: float = 0.1,
               margin: float = 0.0, loss_type: Any = "sigmoid",
               max_pairs: Optional[int] = None,
               reward_fns: Sequence[Any] = (reward_fn.correctness_reward,),
               extra_transforms: Sequence[Any] = (),
               name: str = "online_dpo") -> base.Method:
  """Online DPO under the Loop (pairs from the current batch).

  Args:
    rollout: n samples per prompt (n ≥ 2), budget, temperature.
    optim: epochs × minibatches; minibatches must be 1 (a random minibatch
      split would separate a chosen row from its rejected partner).
    beta: DPO β.
    margin: a pair needs a score gap > ``margin`` (``best_vs_worst``).
    loss_type: a DPO loss type or tuple (``preference.DPO_LOSS_TYPES``).
    max_pairs: None: one best-vs-worst pair per group
      (``pairs.best_vs_worst``); an int P: every higher ≻ lower pair of a
      group past ``margin`` (``pairs.all_pairs``), the first P of the batch —
      the update then runs on a new batch of 2P rows (chosen copies, then
      their rejected partners; unused slots invalid).
    reward_fns: the score (default: the verifier).
    extra_transforms: transforms chained after the pair builder.
    name: method name.

  Returns:
    The Method (roles: the frozen reference).
  """
  if rollout.n < 2:
    raise ValueError(f"online_dpo: rollout.n must be >= 2 to pair samples, got {rollout.n}")
  if optim.minibatches != 1:
    raise ValueError(f"online_dpo: optim.minibatches must be 1, got {optim.minibatches}"
                     " (a random minibatch split would separate the rows of a pair)")
  if max_pairs is None:
    builder = pairs.best_vs_worst(margin=margin)
  else:
    if isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 1:
      raise ValueError(f"online_dpo: max_pairs must be None or an int >= 1, got {max_pairs!r}")
    builder = pairs.all_pairs(max_pairs=int(max_pairs), margin=margin)
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=tuple(reward_fns),
      transform=chain(rescoring.ref_logprobs(), builder),
      objective=objective((1.0, preference.dpo(beta=beta, loss_type=loss_type), "dpo")),
      roles=base.reference_role(1.0), extra_transforms=extra_transforms)


def iterative_dpo(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
                  beta: float = 0.1, margin: float = 0.0,
                  reference: str = "previous",
                  name: str = "iterative_dpo") -> spec.RoundsMethod:
  """Iterative DPO in rounds on gold-label (verifier) pairs.

  Args:
    rollout: n samples per problem and round.
    beta: DPO β.
    margin: pair iff verifier gap > ``margin`` (0: correct vs incorrect).
    reference: ``'previous'`` (M_t, iterative DPO) or ``'base'`` (frozen).
    name: method name.

  Returns:
    The RoundsMethod (train from current).
  """
  common.check_rollout("iterative_dpo", rollout)
  if rollout.n < 2:
    raise ValueError(f"iterative_dpo: rollout.n must be >= 2, got {rollout.n}")
  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout),
      rewards=(reward_fn.correctness_reward,),
      select=pairs.best_vs_worst(margin=margin), objective="dpo",
      objective_settings=dict(beta=float(beta)), reference=reference,
      train_from="current", accumulate=False, include_labeled=False)


__all__ = ["iterative_dpo", "online_dpo"]
