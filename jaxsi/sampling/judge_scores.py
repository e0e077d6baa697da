r"""The model as its own judge at test time: judgment scores for best-of-N.

LLM-as-a-judge best-of-N (Self-Rewarding LMs, Yuan et al. 2024,
arXiv:2401.10020, §2.2: the model scores its own candidates with a judging
prompt; here at inference, as a selector of ``jaxsi.sampling.test_time``).
For every candidate j of problem p the judge writes one judgment, greedily,
from ``format.prompt(task.prompt, candidate)`` (a pointwise or verdict
:class:`jaxsi.rewards.judging.JudgeFormat`; the reference answer is never
given: a template with an ``{answer}`` field is refused), and the parsed
score fills ``Candidates.scores[name]`` f32[P, N]; an unparsed judgment scores
:data:`UNPARSED_SCORE` (finite, below every parsed score: never chosen over a
parsed one, and a problem whose judgments all fail falls back to its first
candidate, i.e. random choice, instead of no answer). Then
``test_time.best_of_n(name)`` is the judge's best-of-N.

Cost: P·N judgments in ``ceil(P·N / batch_size)`` sampler calls of
``batch_size`` rows (the last padded, so one compilation per prompt bucket);
the judgment tokens are reported, since a judge spends compute too.
"""

from __future__ import annotations

import time
from typing import Any, Union

import jax
import numpy as np

from jaxsi.rewards import judging
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.sampling import strategies

NAME = "judge"
UNPARSED_SCORE = -1e9


def fill_scores(candidates: Any, model: Any, params: Any, tokenizer: Any, *,
                format: Union[str, judging.JudgeFormat] = "score_1_5",  # pylint: disable=redefined-builtin
                max_new_tokens: int = 4, batch_size: int = 256,
                name: str = NAME) -> dict:
  """Writes ``candidates.scores[name]`` (the judge's score of every candidate).

  Args:
    candidates: ``test_time.Candidates`` (P problems × N texts).
    model, params, tokenizer: the judge (usually the generator itself).
    format: a pointwise or verdict judging format (name or JudgeFormat).
    max_new_tokens: the judgment budget.
    batch_size: judgments per sampler call.
    name: the score's key.

  Returns:
    Counts of the parse statuses (``judge/ok``, ``judge/unparsed``,
    ``judge/over_budget``), ``judge_tokens_per_problem`` (judgment tokens
    generated per problem) and ``judge_seconds``.

  Raises:
    ValueError: a pairwise format, a template that reads the reference
      answer, or a budget / batch size below 1.
  """
  fmt = judging.get_format(format)
  if fmt.kind == "pairwise":
    raise ValueError(f"judge_scores: format {fmt.name!r} is pairwise; best-of-N"
                     " scores one candidate at a time (pointwise or verdict)")
  if "{answer}" in fmt.template:
    raise ValueError(f"judge_scores: format {fmt.name!r} reads the reference"
                     " answer ({answer}); a test-time judge must not see it")
  if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
    raise ValueError(f"judge_scores: max_new_tokens must be an integer >= 1, got"
                     f" {max_new_tokens!r}")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"judge_scores: batch_size must be an integer >= 1, got"
                     f" {batch_size!r}")
  p, n = np.asarray(candidates.correct).shape
  prompts = [[tokenizer.bos_id] + list(tokenizer.encode(fmt.prompt(t.prompt, c)))
             for t, row in zip(candidates.tasks, candidates.texts) for c in row]
  t0 = time.perf_counter()
  texts, finished = [], []
  tokens = 0
  for c0 in range(0, len(prompts), batch_size):
    chunk = prompts[c0:c0 + batch_size]
    traj = sampler_lib.sample(
        model, params, chunk, rng=jax.random.key(c0), strategy=strategies.Greedy(),
        n=1, max_new_tokens=int(max_new_tokens), stop_ids=(tokenizer.eos_id,),
        pad_id=tokenizer.pad_id, batch_buckets=(int(batch_size),))
    mask = np.asarray(traj.loss_mask, bool)[:len(chunk)]
    toks = np.asarray(traj.tokens)[:len(chunk)]
    done = np.asarray(traj.extras["finished"], bool)[:len(chunk)]
    tokens += int(mask.sum())
    for r in range(len(chunk)):
      ids = toks[r][mask[r]].tolist()
      if done[r] and ids and ids[-1] == tokenizer.eos_id:
        ids = ids[:-1]
      texts.append(tokenizer.decode(ids))
      finished.append(bool(done[r]))
  scores, statuses = parse_judgments(fmt, texts, finished)
  candidates.scores[name] = scores.reshape(p, n)
  out = judging.count_statuses(statuses)
  out["judge_tokens_per_problem"] = tokens / max(p, 1)
  out["judge_calls"] = -(-len(prompts) // int(batch_size))
  out["judge_seconds"] = time.perf_counter() - t0
  return out


def parse_judgments(fmt: judging.JudgeFormat, texts, finished):
  """(f32[M] scores, M statuses): parsed scores, UNPARSED_SCORE where unparsed."""
  scores = np.full((len(texts),), UNPARSED_SCORE, np.float32)
  statuses = []
  for i, (text, fin) in enumerate(zip(texts, finished)):
    value, status = fmt.parse(text, finished=bool(fin))
    statuses.append(status)
    if np.isfinite(value):
      scores[i] = value
  return scores, statuses


__all__ = ["NAME", "UNPARSED_SCORE", "fill_scores", "parse_judgments"]
