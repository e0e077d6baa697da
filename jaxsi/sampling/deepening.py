r"""Iterative deepening: inject a reflection trigger, continue from the KV cache.

After the model's first completion a fixed *trigger* text (default
``" wait "``) is appended and generation continues from the existing KV cache
(:func:`jaxsi.sampling.multiturn.run_episodes` with a
:class:`~jaxsi.sampling.multiturn.FixedFeedback`, i.e.
:func:`jaxsi.sampling.sampler.continue_generate`: only the trigger and the new
tokens run through the model, the conversation is never re-encoded). ``d``
rounds of deepening give ``d + 1`` model turns; ``d = 0`` is plain sampling.

This is the test-time half of two papers:

* s1 budget forcing (Muennighoff et al. 2025, "s1: Simple test-time
  scaling", arXiv:2501.19393, §3.1): when the model would stop, append
  "Wait" and let it keep thinking;
* Iterative Deepening Sampling (Chen, Koenig & Dilkina 2025,
  arXiv:2502.05449): inject self-correction triggers into ongoing
  generations on a growing budget schedule (here every model turn has the
  same budget G; the paper's growth factor γ is not implemented).

**The answer that counts** is the last turn's parsed answer
(``verifiers.canonical_answer``); when the last turn has none, the latest
earlier turn that has one (so a trigger that makes the model babble does not
erase an answer it already gave); with no parseable turn at all the last
turn's text is graded. :meth:`Deepened.final_turn` applies this rule.

**Tokens.** ``gen_tokens[p, s, j]`` are the tokens the model generated in
turn j + 1 of sample s (its stop token included); ``trigger_tokens[p, s, j]``
the trigger tokens injected before turn j + 2 (prefilled, not generated).
Accuracy-versus-tokens curves use the generated tokens (as the fixed-N
selectors, whose prompt tokens are not counted either); the trigger tokens
are reported next to them.

One batched call per turn per chunk: chunks of ``batch_size // n`` prompts
(padded with invalid rows to that many, so every chunk has one shape), each
one ``sampler.generate`` and ``d`` ``continue_generate`` calls, never one per
problem.

Turn k is drawn with ``fold_in(rng_chunk, k)`` whatever ``d`` is, so the
first j turns of a run with d rounds are exactly a run with j − 1 rounds:
:meth:`Deepened.truncate` reads every shallower depth from one run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jaxsi.data import batching
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import multiturn
from jaxsi.sampling import test_time as tt

DEFAULT_TRIGGER = " wait "


@dataclasses.dataclass
class Deepened:
  """``n`` samples of each of P problems, each deepened ``rounds`` times.

  Attributes:
    tasks: the P tasks.
    rounds: d, trigger injections per sample (d + 1 model turns).
    trigger: the injected text.
    texts: texts[p][s][j] decoded model turn j + 1 of sample s.
    answers: canonical answers per turn (None: unparseable).
    correct: f32[P, n, d + 1] verifier grade of every turn.
    gen_tokens: int[P, n, d + 1] tokens generated in every turn.
    trigger_tokens: int[P, n, d] trigger tokens injected before turn j + 2.
    token_ids: token_ids[p][s][j] ids generated in turn j + 1 (stop included).
    logprobs: f32[P, n, d + 1] sum of the sampler's log-probs of every turn.
    calls: sampler calls (``generate`` + ``continue_generate``).
    seconds: wall time of the generation and grading.
  """

  tasks: Sequence[Any]
  rounds: int
  trigger: str
  texts: list
  answers: list
  correct: np.ndarray
  gen_tokens: np.ndarray
  trigger_tokens: np.ndarray
  token_ids: list
  logprobs: np.ndarray
  calls: int = 0
  seconds: float = 0.0

  @property
  def num_problems(self) -> int:
    return len(self.tasks)

  @property
  def n(self) -> int:
    return int(self.correct.shape[1])

  def truncate(self, rounds: int) -> "Deepened":
    """The same samples stopped after ``rounds`` deepening rounds."""
    if int(rounds) != rounds or not 0 <= rounds <= self.rounds:
      raise ValueError(f"Deepened.truncate: rounds must be an integer in"
                       f" [0, {self.rounds}], got {rounds!r}")
    j = int(rounds) + 1
    cut = lambda grid: [[row[:j] for row in sample] for sample in grid]
    return dataclasses.replace(
        self, rounds=int(rounds), texts=cut(self.texts), answers=cut(self.answers),
        token_ids=cut(self.token_ids), logprobs=self.logprobs[:, :, :j],
        correct=self.correct[:, :, :j], gen_tokens=self.gen_tokens[:, :, :j],
        trigger_tokens=self.trigger_tokens[:, :, :j - 1])

  def final_turn(self) -> np.ndarray:
    """int[P, n]: the turn whose answer counts (module docstring's rule)."""
    out = np.full((self.num_problems, self.n), self.rounds, np.int64)
    for p, samples in enumerate(self.answers):
      for s, turns in enumerate(samples):
        parsed = [j for j, a in enumerate(turns) if a is not None]
        if parsed:
          out[p, s] = parsed[-1]
    return out

  def final_answers(self) -> list:
    """P lists of n answers that count (None: no turn parseable)."""
    turn = self.final_turn()
    return [[self.answers[p][s][turn[p, s]] for s in range(self.n)]
            for p in range(self.num_problems)]

  def final_correct(self) -> np.ndarray:
    """f32[P, n] grade of the answer that counts."""
    turn = self.final_turn()
    return np.take_along_axis(self.correct, turn[..., None], axis=2)[..., 0]

  def candidates(self) -> tt.Candidates:
    """The deepened samples as ``test_time.Candidates`` (final answers;
    ``lengths`` = tokens generated over all turns), for ``tt.majority`` /
    ``tt.sweep`` (no confidence scores)."""
    turn = self.final_turn()
    texts = [[self.texts[p][s][turn[p, s]] for s in range(self.n)]
             for p in range(self.num_problems)]
    return tt.Candidates(tasks=list(self.tasks), texts=texts,
                         answers=self.final_answers(),
                         correct=self.final_correct(),
                         lengths=self.gen_tokens.sum(axis=2), scores={},
                         seconds=self.seconds)

  def changes(self) -> dict:
    """How often the answer that counts differs from the first turn's.

    Returns:
      Fractions of all P·n samples: ``changed`` (final answer != turn-1
      answer, None counting as an answer), ``right_to_wrong`` (turn 1
      correct, final wrong), ``wrong_to_right``, ``fallback`` (the last
      turn had no parseable answer, an earlier one counts); with
      ``acc_first`` and ``acc_final`` (their difference is
      ``wrong_to_right − right_to_wrong``).
    """
    first = self.correct[:, :, 0] >= 1.0
    final = self.final_correct() >= 1.0
    fa = self.final_answers()
    changed = np.asarray([[fa[p][s] != self.answers[p][s][0]
                           for s in range(self.n)]
                          for p in range(self.num_problems)], bool)
    mean = lambda x: float(np.mean(x)) if x.size else 0.0
    return dict(changed=mean(changed), right_to_wrong=mean(first & ~final),
                wrong_to_right=mean(~first & final),
                fallback=mean(self.final_turn() < self.rounds),
                acc_first=mean(first), acc_final=mean(final))

  def summary(self) -> dict:
    """Per-problem means over all n samples: tokens and accuracy."""
    return dict(rounds=self.rounds, n=self.n, trigger=self.trigger,
                gen_tokens_per_problem=float(self.gen_tokens.sum(axis=(1, 2)).mean()),
                trigger_tokens_per_problem=float(
                    self.trigger_tokens.sum(axis=(1, 2)).mean()),
                accuracy=float(self.final_correct().mean()), calls=self.calls,
                seconds=self.seconds, **self.changes())


def _grade(tasks, texts) -> np.ndarray:
  return np.asarray([float(t.verify(x)) for t, x in zip(tasks, texts)], np.float32)


def trigger_ids(tokenizer, trigger: str) -> list:
  """The trigger's token ids; raises ValueError naming ``trigger``."""
  if not isinstance(trigger, str) or not trigger:
    raise ValueError(f"deepening: trigger must be a non-empty string, got {trigger!r}")
  try:
    ids = list(tokenizer.encode(trigger))
  except ValueError as e:
    raise ValueError(f"deepening: trigger {trigger!r} cannot be encoded by the"
                     f" tokenizer: {e}") from None
  if not ids:
    raise ValueError(f"deepening: trigger {trigger!r} encodes to no tokens")
  return ids


def deepen(model, params, tokenizer, tasks: Sequence[Any], *, rounds: int,
           max_new_tokens: int, strategy, rng, n: int = 1,
           trigger: str = DEFAULT_TRIGGER, batch_size: int = 256,
           prompt_buckets: Optional[Sequence[int]] = buckets_lib.DEFAULT_PROMPT_BUCKETS
           ) -> Deepened:
  """Draws ``n`` samples per task and deepens each ``rounds`` times.

  Args:
    model: static Model.
    params: its params.
    tokenizer: encodes prompts and the trigger, decodes turns.
    tasks: the P tasks (``prompt``, ``verify``).
    rounds: d >= 0 trigger injections (0: plain sampling).
    max_new_tokens: G, the budget of every model turn (>= 1).
    strategy: sampling strategy of every turn.
    rng: PRNG key (chunk c0 uses ``fold_in(rng, c0)``).
    n: samples per problem (>= 1).
    trigger: injected text (non-empty, encodable by ``tokenizer``).
    batch_size: rows per sampler call (>= n); ``batch_size // n`` prompts.
    prompt_buckets: prompt length buckets (one compile per bucket).

  Returns:
    The Deepened samples.

  Raises:
    ValueError: a bad argument (named).
  """
  for name, v, lo in (("rounds", rounds, 0), ("max_new_tokens", max_new_tokens, 1),
                      ("n", n, 1), ("batch_size", batch_size, 1)):
    if isinstance(v, bool) or int(v) != v or v < lo:
      raise ValueError(f"deepening.deepen: {name} must be an integer >= {lo},"
                       f" got {v!r}")
  if batch_size < n:
    raise ValueError(f"deepening.deepen: batch_size = {batch_size} must be >="
                     f" n = {n}")
  ids = trigger_ids(tokenizer, trigger)
  rounds, n = int(rounds), int(n)
  spec = multiturn.EpisodeSpec(
      max_turns=rounds + 1,
      feedback=multiturn.FixedFeedback(trigger) if rounds else None,
      inject_length=len(ids))
  per_chunk = max(1, int(batch_size) // n)
  prompts = batching.encode_prompts(tokenizer, tasks)
  p_all, k = len(tasks), rounds + 1
  texts = [[None] * n for _ in range(p_all)]
  answers = [[None] * n for _ in range(p_all)]
  token_ids = [[None] * n for _ in range(p_all)]
  logprobs = np.zeros((p_all, n, k), np.float32)
  correct = np.zeros((p_all, n, k), np.float32)
  gen = np.zeros((p_all, n, k), np.int64)
  trig = np.zeros((p_all, n, rounds), np.int64)
  calls = 0
  t0 = time.perf_counter()
  for c0 in range(0, p_all, per_chunk):
    chunk = prompts[c0:c0 + per_chunk]
    num = len(chunk)
    length = buckets_lib.bucket_size(max(len(x) for x in chunk), prompt_buckets)
    rows = chunk + [[tokenizer.pad_id]] * (per_chunk - num)
    tokens, mask = buckets_lib.left_pad(rows, length=length, pad_id=tokenizer.pad_id)
    chunk_tasks = list(tasks[c0:c0 + num]) + [tasks[c0]] * (per_chunk - num)
    ids = np.full((per_chunk,), -1, np.int32)      # as sampler.sample: -1 dummy
    ids[:num] = np.arange(c0, c0 + num)
    ep = multiturn.run_episodes(
        model, params, prompt_tokens=tokens, prompt_mask=mask, tasks=chunk_tasks,
        tokenizer=tokenizer, spec=spec, reward_fn=_grade,
        rng=jax.random.fold_in(rng, c0), strategy=strategy, n=n,
        max_new_tokens=int(max_new_tokens), stop_ids=(tokenizer.eos_id,),
        pad_id=tokenizer.pad_id, valid=np.arange(per_chunk) < num,
        prompt_ids=ids)
    calls += k
    turn_ids, toks, lps = (np.asarray(x) for x in jax.device_get(
        (ep.traj.turn_ids, ep.traj.tokens, ep.traj.behaviour_logprobs)))
    for i in range(num):
      for s in range(n):
        b = i * n + s
        texts[c0 + i][s] = list(ep.texts[b])
        answers[c0 + i][s] = list(ep.answers[b])
        correct[c0 + i, s] = np.nan_to_num(ep.rewards[b], nan=0.0)
        token_ids[c0 + i][s] = [toks[b][turn_ids[b] == j + 1].tolist()
                                for j in range(k)]
        for j in range(k):
          gen[c0 + i, s, j] = int((turn_ids[b] == j + 1).sum())
          logprobs[c0 + i, s, j] = float(lps[b][turn_ids[b] == j + 1].sum())
        for j in range(rounds):
          trig[c0 + i, s, j] = int((turn_ids[b] == -(j + 1)).sum())
  return Deepened(tasks=list(tasks), rounds=rounds, trigger=trigger, texts=texts,
                  answers=answers, correct=correct, gen_tokens=gen,
                  trigger_tokens=trig, token_ids=token_ids, logprobs=logprobs,
                  calls=calls,
                  seconds=time.perf_counter() - t0)


def sweep(d: Deepened, *, depths: Sequence[int], ks: Sequence[int],
          selectors: Optional[dict] = None) -> list:
  """Accuracy-versus-tokens rows of every depth ≤ ``d.rounds`` and budget k.

  Each depth is read from ``d`` by :meth:`Deepened.truncate`; at budget k
  the selectors (default ``first`` and ``majority`` over the final answers of
  the first k samples) choose one sample.

  Returns:
    Rows ``{selector: 'deepen d=J NAME', k, depth, accuracy,
    tokens_per_problem (generated, all turns of the first k samples),
    trigger_tokens_per_problem}`` plus the depth's :meth:`Deepened.changes`
    over all n samples.
  """
  selectors = dict(selectors or {"first": tt.first, "majority": tt.majority})
  rows = []
  for depth in depths:
    part = d.truncate(depth)
    cands = part.candidates()
    changes = part.changes()
    for row in tt.sweep(cands, ks=ks, selectors=selectors):
      k = row["k"]
      rows.append(dict(
          row, selector=f"deepen d={int(depth)} {row['selector']}",
          depth=int(depth), trigger=d.trigger,
          trigger_tokens_per_problem=float(
              part.trigger_tokens[:, :k].sum(axis=(1, 2)).mean()),
          **changes))
  return rows


def markdown(rows: Sequence[dict]) -> str:
  """Table of :func:`sweep` rows."""
  lines = ["| depth d | k | tokens / problem | trigger tokens / problem | selector |"
           " accuracy | answer changed | right→wrong | wrong→right | fallback |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['depth']} | {r['k']} | {r['tokens_per_problem']:.1f} |"
        f" {r['trigger_tokens_per_problem']:.1f} | {r['selector']} |"
        f" {r['accuracy']:.3f} | {r['changed']:.3f} | {r['right_to_wrong']:.3f} |"
        f" {r['wrong_to_right']:.3f} | {r['fallback']:.3f} |")
  return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_TRIGGER", "Deepened", "deepen", "markdown", "sweep",
           "trigger_ids"]
