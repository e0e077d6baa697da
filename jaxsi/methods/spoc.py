r"""In-sequence self-verification RL: SPOC / self-rewarding correction.

SPOC (Zhao et al. 2025, "Boosting LLM Reasoning via Spontaneous
Self-Correction", arXiv:2506.06923) and self-rewarding correction (Xiong et
al. 2025, "Self-rewarding correction for mathematical reasoning",
arXiv:2502.19613; also S²R): after an SFT warm start on synthetic
``attempt verdict (revision verdict)*`` traces, online RL improves both the
solutions and the verifications of ONE completion with span-level rewards —
each solution span for its correctness, each verification span for matching
the true correctness of the solution before it. As a composition::

  rollout(n) · rewards(self_verification_reward: [sol_1, ver_1, …, sol_M,
                                                   ver_M, extra])
  chain([ref_logprobs], old_logprobs, verdict_span_ids(markers),
        span_advantages(roles, normalize='role'), drop_zero_advantage_groups)
  objective = pg_clip(ε=(0.2, 0.2), agg='seq-mean-token-mean') [+ β·kl(k3)]

Single-turn sampling: the loop is :class:`jaxsi.training.rl.RLTrainer`
unchanged; span ids are computed on device from the sampled token ids.
The exact advantage estimator of the papers is not in their abstracts; the
per-span GRPO normalisation here is a general-knowledge (GK) reading
(see :func:`jaxsi.transforms.spans.span_advantages`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from jaxsi.data import spans as spans_lib
from jaxsi.methods import base
from jaxsi.methods.base import OptimSpec, RolloutSpec
from jaxsi.methods.grpo import _group_pg
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.transforms import policy_losses
from jaxsi.transforms import spans as span_transforms
from jaxsi.transforms.base import chain


def reward_names(fmt: spans_lib.VerdictFormat) -> tuple[str, ...]:
  """``('solution_1', 'verdict_1', …, 'solution_M', 'verdict_M', 'extra')``."""
  names = []
  for k in range(1, fmt.max_attempts + 1):
    names += [f"solution_{k}", f"verdict_{k}"]
  return tuple(names) + ("extra",)


def span_rewards(task: Any, completion: str, fmt: spans_lib.VerdictFormat, *,
                 extra_reward: float = 0.0) -> np.ndarray:
  """f32[2M + 1] rewards of the spans of one completion.

  * ``solution_k`` = ``task.verify(attempt_k)`` (1 correct, 0 otherwise; an
    empty revision after a negative verdict — the model stopped instead of
    revising — scores 0);
  * ``verdict_k`` = 1 when the verdict equals the truth of attempt k
    (``[correct]`` ⇔ solution_k = 1), 0 when it does not or when attempt k
    has text but no verdict (the stop token then stands where the verdict
    was due; a truncated completion has no token to carry it);
  * ``extra`` = ``extra_reward`` when text follows the M-th verdict;
  * a span the completion does not have gets 0: it is never used, because
    ``span_advantages`` only reads spans that have tokens (the span ids
    decide presence). Absent spans are not NaN because ``safe_rewards``
    marks a row with any non-finite value as a failed reward call.
  """
  r = np.zeros((fmt.num_spans,), np.float32)
  parsed = spans_lib.parse_self_verification(completion, fmt)
  for k, a in enumerate(parsed.attempts):
    correct = float(task.verify(a.text)) if a.text.strip() else 0.0
    r[2 * k] = correct
    if a.verdict is not None:
      r[2 * k + 1] = float(a.verdict == (correct > 0.5))
    elif a.text:
      r[2 * k + 1] = 0.0
  if parsed.extra is not None:
    r[-1] = extra_reward
  return r


def self_verification_reward(fmt: spans_lib.VerdictFormat = spans_lib.VerdictFormat(),
                             *, extra_reward: float = 0.0) -> Callable:
  """Host reward fn ``(tasks, completions) -> f32[B, 2M + 1]`` (named columns).

  Column s − 1 is the reward of span s (:func:`span_rewards`; 0 for spans
  the completion does not have); the order
  matches ``jaxsi.data.spans`` span ids so ``span_advantages`` reads it
  directly.
  """

  def fn(tasks, completions):
    if len(tasks) != len(completions):
      raise ValueError(f"self_verification_reward: {len(tasks)} tasks but "
                       f"{len(completions)} completions")
    out = np.stack([span_rewards(t, c, fmt, extra_reward=extra_reward)
                    for t, c in zip(tasks, completions)]) if tasks else (
                        np.zeros((0, fmt.num_spans), np.float32))
    return out.astype(np.float32)

  fn.names = reward_names(fmt)
  fn.__name__ = "self_verification_reward"
  return fn


def marker_ids(tokenizer, fmt: spans_lib.VerdictFormat) -> tuple[tuple[int, ...],
                                                               tuple[int, ...]]:
  """Token ids of the two verdict markers under ``tokenizer``."""
  return tuple(tokenizer.encode(fmt.correct)), tuple(tokenizer.encode(fmt.wrong))


def spoc(*, rollout: RolloutSpec = RolloutSpec(n=8, max_new_tokens=32,
                                               temperature=1.0),
         optim: OptimSpec = OptimSpec(), tokenizer=None,
         correct: str = "[correct]", wrong: str = "[wrong]",
         max_attempts: int = 3, normalize: str = "role", scale: str = "group",
         solution_weight: float = 1.0, verdict_weight: float = 1.0,
         outcome_coef: float = 0.0, extra_reward: float = 0.0,
         split_verdicts_by_truth: bool = False, eps_low: float = 0.2,
         eps_high: float = 0.2, kl_coef: float = 0.0,
         kl_estimator: str = "k3", agg: str = "seq-mean-token-mean",
         drop_zero_signal: bool = True, extra_transforms: Sequence[Any] = (),
         name: str = "spoc") -> base.Method:
  r"""SPOC-style span-reward RL for in-sequence self-verification.

  Zhao et al. 2025 (SPOC, arXiv:2506.06923, online RL on interleaved
  solution/verification messages) and Xiong et al. 2025 (arXiv:2502.19613,
  stage-2 RL with rule-based rewards). For sample i, span s of role ρ(s)
  (solution or verdict), with span reward r_{i,s} (:func:`span_rewards`)::

      A_{i,s} = w_ρ · (r_{i,s} − mean_{g,ρ}) / (std_{g,ρ} + 1e-4)   (GK)
      J(θ) = E[ 1/G Σ_i 1/|o_i| Σ_t min(ρ_{i,t} A_{i,s(t)},
                                      clip(ρ_{i,t}, 1−ε, 1+ε) A_{i,s(t)}) ]
             − β KL

  i.e. GRPO's clipped objective (arXiv:2402.03300, Eq. 3) with the sequence
  advantage replaced by the advantage of each token's span; mean/std pool
  the group's spans of the same role (``normalize='role'``) or the same span
  id (``'span'``). ``outcome_coef`` > 0 adds c · the GRPO advantage of the
  final answer (``correctness_reward``) to every token.

  Args:
    rollout: group size G (``n``), completion budget (M attempts and
      verdicts must fit), sampling (and scoring) temperature, strategy.
    optim: optimisation passes x minibatches per rollout batch.
    tokenizer: tokenizer of the policy (marker and EOS ids); default the
      jaxsi ``CharTokenizer``.
    correct: positive verdict marker.
    wrong: negative verdict marker.
    max_attempts: M.
    normalize: 'role' | 'span' pooling of the group statistics.
    scale: 'group' (÷ std) or 'none'.
    solution_weight: w of solution spans.
    verdict_weight: w of verdict spans.
    outcome_coef: c of the final-answer GRPO advantage (0: none).
    extra_reward: reward of text after the M-th verdict.
    split_verdicts_by_truth: pool verdicts of correct and of wrong attempts
      separately (a class-conditional baseline, jaxsi's option, not the
      papers'; see ``span_advantages`` — it did not prevent the "always
      [wrong]" drift of a weak solver in the bench).
    eps_low: ε_low.
    eps_high: ε_high.
    kl_coef: β (0 disables the reference model).
    kl_estimator: KL estimator name.
    agg: token aggregation of the loss terms.
    drop_zero_signal: drop groups whose every token advantage is 0.
    extra_transforms: transforms chained after the method's own chain.
    name: method name.

  Returns:
    The Method.
  """
  if tokenizer is None:
    from jaxsi.data.char_tokenizer import CharTokenizer  # pylint: disable=g-import-not-at-top
    tokenizer = CharTokenizer()
  fmt = spans_lib.VerdictFormat(correct=correct, wrong=wrong,
                                max_attempts=max_attempts)
  correct_ids, wrong_ids = marker_ids(tokenizer, fmt)
  reward_fns = [self_verification_reward(fmt, extra_reward=extra_reward)]
  outcome_column = None
  if outcome_coef:
    reward_fns.append(reward_lib.correctness_reward)
    outcome_column = fmt.num_spans
  parts = [
      span_transforms.verdict_span_ids(
          correct_ids=correct_ids, wrong_ids=wrong_ids,
          stop_ids=(int(tokenizer.eos_id),), max_attempts=max_attempts,
          skip_ids=(int(tokenizer.pad_id), int(tokenizer.bos_id))),
      span_transforms.span_advantages(
          num_spans=fmt.num_spans, roles=spans_lib.span_roles(max_attempts),
          normalize=normalize, scale=scale,
          role_weights=(solution_weight, verdict_weight),
          outcome_column=outcome_column, outcome_coef=outcome_coef,
          split_verdicts_by_truth=split_verdicts_by_truth)]
  if drop_zero_signal:
    parts.append(span_transforms.drop_zero_advantage_groups())
  return _group_pg(
      name=name, rollout=rollout, optim=optim,
      extra_transforms=extra_transforms, reward_fns=tuple(reward_fns),
      kl_coef=kl_coef,
      kl_estimator=kl_estimator, agg=agg, advantage=chain(*parts),
      pg_term=policy_losses.pg_clip(eps_low=eps_low, eps_high=eps_high, agg=agg),
      drop_zero_variance=False)


def self_verification_stats(tasks: Sequence[Any], completions: Sequence[str],
                            fmt: spans_lib.VerdictFormat) -> dict:
  """Self-correction statistics of completions in the verdict format.

  Returns a dict of fractions over the B completions: ``final_acc`` (last
  non-empty attempt correct), ``first_acc`` (attempt 1 correct),
  ``verdict_acc`` (over all emitted verdicts: verdict = truth of its attempt),
  ``verdict_tpr`` / ``verdict_tnr`` ("[correct]" on correct attempts /
  "[wrong]" on wrong ones) and their mean ``verdict_balanced`` (a constant
  verdict scores 0.5 however skewed the attempts are),
  ``first_verdict_acc`` (over completions with a first verdict),
  ``wrong_to_right`` / ``right_to_wrong`` (attempt 1 wrong and final right /
  attempt 1 right and final wrong, over all completions, SCoRe's Δ^{i→c} and
  Δ^{c→i}), ``revised`` (more than one attempt), ``mean_attempts``,
  ``no_verdict`` (attempt 1 has no verdict), ``extra`` (text after the M-th
  verdict), and the counts behind them.
  """
  b = len(tasks)
  final = first = w2r = r2w = revised = no_v = extra = 0
  v_ok = v_n = fv_ok = fv_n = 0
  pos_ok = pos_n = neg_ok = neg_n = 0
  attempts_total = 0
  for t, c in zip(tasks, completions):
    p = spans_lib.parse_self_verification(c, fmt)
    corr = [float(t.verify(a.text)) if a.text.strip() else 0.0
            for a in p.attempts]
    fa = p.final_answer
    f = float(t.verify(fa)) if fa is not None else 0.0
    a1 = corr[0] if corr else 0.0
    final += f
    first += a1
    w2r += (a1 == 0.0) and f == 1.0
    r2w += (a1 == 1.0) and f == 0.0
    n_real = sum(1 for a in p.attempts if a.text or a.verdict is not None)
    attempts_total += n_real
    revised += n_real > 1
    extra += p.extra is not None
    no_v += (not p.attempts) or p.attempts[0].verdict is None
    for k, a in enumerate(p.attempts):
      if a.verdict is not None:
        ok = a.verdict == (corr[k] > 0.5)
        v_ok += ok
        v_n += 1
        if corr[k] > 0.5:
          pos_ok += ok
          pos_n += 1
        else:
          neg_ok += ok
          neg_n += 1
        if k == 0:
          fv_ok += ok
          fv_n += 1
  d = max(b, 1)
  return {
      "final_acc": final / d, "first_acc": first / d,
      "verdict_acc": v_ok / max(v_n, 1), "verdicts": v_n,
      "first_verdict_acc": fv_ok / max(fv_n, 1),
      "verdict_tpr": pos_ok / max(pos_n, 1), "verdict_tnr": neg_ok / max(neg_n, 1),
      "verdict_balanced": 0.5 * (pos_ok / max(pos_n, 1) + neg_ok / max(neg_n, 1)),
      "wrong_to_right": w2r / d, "right_to_wrong": r2w / d,
      "revised": revised / d, "mean_attempts": attempts_total / d,
      "no_verdict": no_v / d, "extra": extra / d, "n": b,
  }
