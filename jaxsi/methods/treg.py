r"""T-REG: preference optimisation with token-level reward regularisation.

Zhou et al. 2024, arXiv:2412.02685. DPO on preference pairs plus a
regulariser that makes DPO's implicit token rewards β·log(π/π_ref) follow
token rewards the model generates itself by *contrastive prompting*: the
reference re-scores each response under a "better" and a "worse"
instruction, r_t = 2σ(d_t) − 1 with d_t the log-prob difference (the term,
its equations and what is unverified: ``jaxsi.transforms.token_reward_regularization``).

Contrastive prompts in miniature: a tiny character model follows no
natural-language instruction, so the instructions are tags it is taught in
the warm start — ``'good|' + prompt`` → the target and ``'bad|' + prompt`` →
a corrupted target (``jaxsi.data.judging.corrupt``, one digit changed) —
the analogue of an instruction-tuned LLM's ability to answer well or badly
on request (:func:`contrastive_examples`). After the warm start no gold
label reaches the token rewards (they are the model's own log-probs under
the two tags); the pairs themselves are the verifier's.

* :func:`treg` (a ``RoundsMethod``): iterative DPO on verifier pairs
  (``methods.iterative_dpo``: sample n per problem from M_t, best ≻ worst by
  the verifier, train M_{t+1} from M_t with reference M_t), with the T-REG
  term; each pair carries its contrastive prompts (``'contexts'``), scored
  by the reference when the M-step lays out its data
  (``fit_data.preference_data(contexts=...)``). ``alpha=0`` is iterative DPO
  on the same pairs exactly (the baseline of the bench).
* :func:`online_treg` (a Loop ``Method``): ``online_dpo`` with the term; the
  rollout stage lays out every completion after both instructions
  (``sampling.privileged.Privileged``, twice) and
  ``transforms.rescoring.rescore`` scores them with the frozen reference.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


from jaxsi import spec
from jaxsi.data import judging as data_judging
from jaxsi.methods import base
from jaxsi.methods import self_rewarding
from jaxsi.methods import self_training_common as common
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.rewards import reward_fn
from jaxsi.sampling import privileged
from jaxsi.sampling import rollouts
from jaxsi.transforms import pairs as pairs_lib
from jaxsi.transforms import rescoring
from jaxsi.transforms import token_reward_regularization as treg_lib
from jaxsi.transforms.base import chain, objective

BETTER = "better"
WORSE = "worse"


def better_context(task) -> str:
  """``'good|' + prompt``: the "better response" instruction in miniature."""
  return f"good{privileged.SEP}{task.prompt}"


def worse_context(task) -> str:
  """``'bad|' + prompt``: the "worse response" instruction in miniature."""
  return f"bad{privileged.SEP}{task.prompt}"


def contrastive_examples(labeled: Sequence[Any], *,
                         better: Callable[[Any], str] = better_context,
                         worse: Callable[[Any], str] = worse_context,
                         seed: int = 0) -> list[dict]:
  """Warm-start examples teaching the two instructions.

  Per labeled task: ``better(task)`` → its target, and ``worse(task)`` → one
  corruption of the target (``data_judging.candidates``; a task whose target
  has no digit gives no worse example).
  """
  out = []
  for task, cand in data_judging.candidates(labeled, wrong_per_task=1, seed=seed):
    good = cand == task.target
    out.append(dict(prompt=(better if good else worse)(task), completion=cand,
                    task_id=f"{task.id}/{'better' if good else 'worse'}"))
  return out


def _check(name, beta, alpha, normalize):
  if not beta > 0:
    raise ValueError(f"{name}: beta must be > 0, got {beta!r}")
  if not alpha >= 0:
    raise ValueError(f"{name}: alpha must be >= 0, got {alpha!r}")
  if normalize not in treg_lib.NORMALIZATIONS:
    raise ValueError(f"{name}: normalize must be one of {treg_lib.NORMALIZATIONS},"
                     f" got {normalize!r}")


def treg(*, rollout: spec.RolloutSpec = spec.RolloutSpec(n=8, temperature=1.0),
         beta: float = 0.1, alpha: float = 1.0, normalize: str = "sigmoid",
         sequence_weighting: bool = True, margin: float = 0.0,
         better: Callable[[Any], str] = better_context,
         worse: Callable[[Any], str] = worse_context, seed: int = 0,
         name: str = "treg") -> spec.RoundsMethod:
  """T-REG in rounds: iterative DPO on verifier pairs + the token regulariser.

  Args:
    rollout: n samples per problem and round (n ≥ 2).
    beta: β of DPO and of the regulariser.
    alpha: α, the regulariser's weight (0: iterative DPO on the same pairs).
    normalize: token-reward normalisation ('sigmoid' | 'none').
    sequence_weighting: scale each pair's regulariser by sg(σ(−βΔ)).
    margin: a pair needs a verifier gap > ``margin``.
    better, worse: task → the contrastive instruction prompts.
    seed: seed of the warm start's corruptions.
    name: method name.

  Returns:
    The RoundsMethod (warm start: targets + :func:`contrastive_examples`;
    reference = previous iterate; train from current).
  """
  common.check_rollout(name, rollout)
  if rollout.n < 2:
    raise ValueError(f"{name}: rollout.n must be >= 2 to form pairs, got {rollout.n}")
  _check(name, beta, alpha, normalize)
  if not margin >= 0:
    raise ValueError(f"{name}: margin must be >= 0, got {margin!r}")
  for label, fn in (("better", better), ("worse", worse)):
    if not callable(fn):
      raise ValueError(f"{name}: {label} must be fn(task) -> str, got {fn!r}")

  def warm_start(labeled):
    return common.task_examples(labeled) + contrastive_examples(
        labeled, better=better, worse=worse, seed=seed)

  def select(records, plan, ctx):
    del plan
    tasks = {t.id: t for t in ctx.unlabeled}
    scored = [dict(r, judge_score=float(r["correct"])) for r in records]
    pairs, m = self_rewarding.pairs_from_scores(scored, margin=margin)
    for p in pairs:
      task = tasks[p["task_id"]]
      p["contexts"] = {BETTER: better(task), WORSE: worse(task)}
    m.update(common.sample_stats(records))
    m.update(pairs=len(pairs))
    return [], pairs, m

  return spec.RoundsMethod(
      name=name, rollout=rollouts.Sample(rollout),
      rewards=(reward_fn.correctness_reward,), select=select, warm_start=warm_start,
      objective="treg",
      objective_settings=dict(beta=float(beta), alpha=float(alpha), normalize=normalize,
                              sequence_weighting=bool(sequence_weighting)),
      reference="previous", train_from="current", accumulate=False,
      include_labeled=False)


def online_treg(*, rollout: RolloutSpec = RolloutSpec(n=4, max_new_tokens=16,
                                                      temperature=1.0),
                optim: OptimSpec = OptimSpec(), beta: float = 0.1, alpha: float = 1.0,
                normalize: str = "sigmoid", sequence_weighting: bool = True,
                margin: float = 0.0,
                better: Callable[[Any], str] = better_context,
                worse: Callable[[Any], str] = worse_context,
                reward_fns: Sequence[Any] = (reward_fn.correctness_reward,),
                extra_transforms: Sequence[Any] = (),
                name: str = "online_treg") -> base.Method:
  """T-REG under the Loop: ``online_dpo`` + contrastive rescoring + the term.

  The frozen reference (the initial policy) scores each completion under the
  plain prompt (``ref_logprobs``) and after both instructions
  (``extras['better_logprobs' | 'worse_logprobs']``). The Loop's warm start
  teaches the better instruction only (``Privileged.teach`` adds
  (better prompt, target) for every 2nd labeled task); the worse one is
  untaught there (the rounds method teaches both).

  Args:
    rollout: n samples per prompt (n ≥ 2).
    optim: minibatches must be 1 (pairs must stay in one minibatch).
    beta, alpha, normalize, sequence_weighting: the term's settings.
    margin: a pair needs a reward gap > ``margin``.
    better, worse: task → the contrastive instruction prompts.
    reward_fns: the pair score (default: the verifier).
    extra_transforms: transforms chained after the pair builder.
    name: method name.

  Returns:
    The Method (roles: the frozen reference).
  """
  if rollout.n < 2:
    raise ValueError(f"{name}: rollout.n must be >= 2 to pair samples, got {rollout.n}")
  if optim.minibatches != 1:
    raise ValueError(f"{name}: optim.minibatches must be 1, got {optim.minibatches}"
                     " (a random minibatch split would separate the rows of a pair)")
  _check(name, beta, alpha, normalize)

  def stage(s):
    inner = privileged.Privileged(rollouts.Sample(s), context_fn=better, name=BETTER,
                                  teach=2)
    return privileged.Privileged(inner, context_fn=worse, name=WORSE, teach=0)

  transform = chain(
      rescoring.ref_logprobs(),
      rescoring.rescore(context=BETTER, params="reference", field=treg_lib.BETTER_KEY),
      rescoring.rescore(context=WORSE, params="reference", field=treg_lib.WORSE_KEY),
      pairs_lib.best_vs_worst(margin=margin))
  term = treg_lib.treg(beta=beta, alpha=alpha, normalize=normalize,
                       sequence_weighting=sequence_weighting)
  return base.make_method(
      name=name, rollout=rollout, optim=optim, reward_fns=tuple(reward_fns),
      transform=transform, objective=objective((1.0, term, "treg")),
      roles=(base.REFERENCE_ROLE,), stage=stage, extra_transforms=extra_transforms)


__all__ = ["treg", "online_treg", "better_context", "worse_context",
           "contrastive_examples"]
