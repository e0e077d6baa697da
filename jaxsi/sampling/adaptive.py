r"""Adaptive self-consistency: sample in windows, stop each problem early.

One driver (:func:`run`) and small stopping policies. Every round the driver
draws one window of ``w`` samples for each *still active* problem only (the
active prompts are re-batched into chunks padded to one of a few halving
row buckets, so the jitted sampler compiles once per (bucket, w) shape,
never per round or per active count), then asks the policy for each
problem's target sample count; a problem whose target is not above its
count stops. The answer is the majority over everything drawn for the
problem (unparseable answers do not vote; ties: seen first).

A policy is ``policy(answers, window, max_samples) -> int[P]`` (the target
total samples per problem, given the answers drawn so far); policies:

* :func:`esc` — Early-stopping Self-Consistency (Li et al. 2024, "Escape
  Sky-high Cost", arXiv:2401.10480, §3): stop once a window's ``w`` answers
  are all equal (an unparseable answer counts as a value, so a window of
  ``None`` also stops);
* :func:`adaptive_consistency` — Adaptive-Consistency (Aggarwal et al. 2023,
  arXiv:2305.11860, §2, Beta criterion): with v₁, v₂ the counts of the two
  most frequent answers, stop when
  P(p₁ > p₂ | v) = ∫₀^{1/2} Beta(x; v₂+1, v₁+1) dx = Σ_{j≤v₁} C(m, j) / 2^m,
  m = v₁ + v₂ + 1, exceeds the threshold C (0.95 in the paper);
  unparseable answers are not counted (all-None never stops early);
* :func:`dsc` — Difficulty-Adaptive Self-Consistency (Wang et al. 2024,
  "Make Every Penny Count", arXiv:2408.13457), its partition and
  pre-allocation steps with the first window as the difficulty estimate (the
  paper ranks difficulty with an LLM prior; here the posterior proxy
  d = 1 − (majority count of the first window) / w): d = 0 problems are
  easy and stop after the first window; the others are pre-allocated
  w + ⌈(S − w) · d / d_max / w⌉ · w samples (S = ``max_samples``,
  d_max = 1 − 1/w, the most disagreement a window can show), drawn without
  further stopping (one allocation, no re-sampling decisions);
* :func:`fixed` — always ``max_samples`` (plain self-consistency in windows).

Cost is real: :class:`Result` records sampler calls, rows generated
(padding included) and tokens per problem.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxsi.rewards import verifiers
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import sampler as sampler_lib

# draw(problem_ids, window) -> (answers, correct, lengths): w per problem.
Draw = Callable[[Sequence[int], int], tuple]
Policy = Callable[[Sequence[Sequence[Any]], int, int], np.ndarray]


def fixed(answers, window: int, max_samples: int) -> np.ndarray:
  """Every problem draws ``max_samples`` (windowed self-consistency)."""
  del window
  return np.full((len(answers),), max_samples, np.int64)


def esc(answers, window: int, max_samples: int) -> np.ndarray:
  """ESC (Li et al. 2024): stop when the last window's answers are all equal."""
  out = []
  for a in answers:
    last = list(a[-window:])
    stop = len(last) == window and all(x == last[0] for x in last)
    out.append(len(a) if stop else min(len(a) + window, max_samples))
  return np.asarray(out, np.int64)


def dsc(answers, window: int, max_samples: int) -> np.ndarray:
  """DSC-style allocation (Wang et al. 2024) from the first window's agreement."""
  out = []
  for a in answers:
    first = list(a[:window])
    if len(first) < window:
      out.append(window)
      continue
    top = max(_counts_all(first).values())
    d = 1.0 - top / window
    if d <= 0.0:          # always so at w = 1: one sample each
      out.append(len(a))
      continue
    share = d / (1.0 - 1.0 / window)
    extra = math.ceil(round((max_samples - window) * share / window, 9)) * window
    out.append(min(window + extra, max_samples))
  return np.asarray(out, np.int64)


def _counts_all(answers) -> dict:
  c = {}
  for a in answers:
    c[a] = c.get(a, 0) + 1
  return c


def beta_stop_probability(v1: int, v2: int) -> float:
  """P(p₁ > p₂) under the Beta(v₁+1, v₂+1) posterior of the top-two split
  (Aggarwal et al. 2023, §2): Σ_{j=0}^{v₁} C(m, j) / 2^m, m = v₁ + v₂ + 1."""
  if v1 < 0 or v2 < 0:
    raise ValueError(f"beta_stop_probability: counts must be >= 0, got {v1}, {v2}")
  m = v1 + v2 + 1
  return sum(math.comb(m, j) for j in range(v1 + 1)) / 2.0 ** m


def adaptive_consistency(threshold: float = 0.95) -> Policy:
  """Adaptive-Consistency's Beta stopping criterion at confidence ``threshold``."""
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"adaptive_consistency: threshold must be in (0, 1), got"
                     f" {threshold!r}")

  def policy(answers, window: int, max_samples: int) -> np.ndarray:
    out = []
    for a in answers:
      counts = sorted(_counts(a).values(), reverse=True) + [0, 0]
      stop = beta_stop_probability(counts[0], counts[1]) > threshold
      out.append(len(a) if stop else min(len(a) + window, max_samples))
    return np.asarray(out, np.int64)

  policy.__name__ = f"adaptive_consistency(C={threshold:g})"
  return policy


def _counts(answers) -> dict:
  c = {}
  for a in answers:
    if a is not None:
      c[a] = c.get(a, 0) + 1
  return c


def vote(answers) -> int:
  """Index of the first sample of the most frequent answer (None ignored;
  ties: seen first; −1: no parsed answer)."""
  counts, first = _counts(answers), {}
  for i, a in enumerate(answers):
    if a is not None:
      first.setdefault(a, i)
  if not counts:
    return -1
  best = max(counts.values())
  return min(first[a] for a in counts if counts[a] == best)


@dataclasses.dataclass
class Result:
  """What the windowed driver drew and chose.

  Attributes:
    answers, correct, lengths: per problem, every sample drawn (in order).
    chosen: int[P] index of the majority answer's first sample (−1: none).
    calls: sampler calls made; rows: rows generated (padding included).
    seconds: wall time.
  """

  answers: list
  correct: list
  lengths: list
  chosen: np.ndarray
  calls: int = 0
  rows: int = 0
  seconds: float = 0.0

  @property
  def samples(self) -> np.ndarray:
    return np.asarray([len(a) for a in self.answers], np.int64)

  @property
  def tokens(self) -> np.ndarray:
    return np.asarray([int(np.sum(x)) for x in self.lengths], np.int64)

  def accuracy(self) -> float:
    grades = [c[i] if i >= 0 else 0.0 for c, i in zip(self.correct, self.chosen)]
    return float(np.mean(grades)) if grades else 0.0

  def summary(self) -> dict:
    return dict(accuracy=self.accuracy(),
                samples_per_problem=float(self.samples.mean()),
                tokens_per_problem=float(self.tokens.mean()),
                calls=self.calls, rows=self.rows)


def run(draw: Draw, num_problems: int, *, policy: Policy, window: int,
        max_samples: int) -> Result:
  """Windowed sampling with early stopping (see the module docstring).

  Args:
    draw: ``draw(problem_ids, window)`` → ``(answers, correct, lengths)``,
      each a list over ``problem_ids`` of ``window`` values; it may report
      ``draw.calls`` / ``draw.rows`` (read after the run).
    num_problems: P.
    policy: target samples per problem from the answers so far.
    window: w ≥ 1 samples per round.
    max_samples: cap per problem (a multiple of ``window``).
  """
  if window < 1 or max_samples < window or max_samples % window:
    raise ValueError(f"adaptive.run: need 1 <= window <= max_samples and"
                     f" max_samples % window == 0, got window={window},"
                     f" max_samples={max_samples}")
  t0 = time.perf_counter()
  answers = [[] for _ in range(num_problems)]
  correct = [[] for _ in range(num_problems)]
  lengths = [[] for _ in range(num_problems)]
  active = list(range(num_problems))
  while active:
    a, c, l = draw(active, window)
    for j, p in enumerate(active):
      if len(a[j]) != window:
        raise ValueError(f"adaptive.run: draw returned {len(a[j])} samples for"
                         f" problem {p}, expected {window}")
      answers[p] += list(a[j])
      correct[p] += [float(x) for x in c[j]]
      lengths[p] += [int(x) for x in l[j]]
    target = np.asarray(policy(answers, window, max_samples))
    active = [p for p in range(num_problems)
              if target[p] > len(answers[p]) and len(answers[p]) < max_samples]
  return Result(answers=answers, correct=correct, lengths=lengths,
                chosen=np.asarray([vote(a) for a in answers], np.int64),
                calls=int(getattr(draw, "calls", 0)),
                rows=int(getattr(draw, "rows", 0)),
                seconds=time.perf_counter() - t0)


class SamplerDraw:
  """A :data:`Draw` backed by the jitted sampler.

  Active prompts are chunked into groups of at most ``rows // window``
  prompts; each chunk is padded to the smallest of ``levels`` halving
  buckets (rows // window, its half, …; ``batch_buckets``) and drawn in one
  ``sampler.sample`` call with ``n = window``. The sampler so compiles at
  most ``levels`` times per window size, whatever the active counts, and a
  shrinking active set really generates fewer rows.
  """

  def __init__(self, model, params, tokenizer, tasks: Sequence[Any], *,
               strategy, max_new_tokens: int, rng, rows: int = 256,
               levels: int = 4):
    if rows < 1 or levels < 1:
      raise ValueError(f"SamplerDraw: rows and levels must be >= 1, got"
                       f" rows={rows}, levels={levels}")
    self.model, self.params, self.tok, self.tasks = model, params, tokenizer, tasks
    self.strategy, self.max_new_tokens, self.rng = strategy, max_new_tokens, rng
    self.row_budget, self.levels = int(rows), int(levels)
    self.prompts = [[tokenizer.bos_id] + list(tokenizer.encode(t.prompt))
                    for t in tasks]
    self.calls = 0
    self.rows = 0

  def __call__(self, problem_ids: Sequence[int], window: int):
    per = max(1, self.row_budget // window)
    buckets = tuple(sorted({max(1, per >> i) for i in range(self.levels)}))
    answers, correct, lengths = [], [], []
    for c0 in range(0, len(problem_ids), per):
      ids = list(problem_ids[c0:c0 + per])
      traj = sampler_lib.sample(
          self.model, self.params, [self.prompts[p] for p in ids],
          rng=jax.random.fold_in(self.rng, self.calls), strategy=self.strategy,
          n=window, max_new_tokens=self.max_new_tokens,
          stop_ids=(self.tok.eos_id,), pad_id=self.tok.pad_id,
          batch_buckets=buckets)
      self.calls += 1
      self.rows += buckets_lib.bucket_size(len(ids), buckets) * window
      toks = np.asarray(traj.tokens)
      mask = np.asarray(traj.loss_mask, bool)
      for j, p in enumerate(ids):
        task, a, c, l = self.tasks[p], [], [], []
        for r in range(j * window, (j + 1) * window):
          text = self.tok.decode(toks[r][mask[r]].tolist())
          a.append(verifiers.canonical_answer(task, text))
          c.append(float(task.verify(text)))
          l.append(int(mask[r].sum()))
        answers.append(a)
        correct.append(c)
        lengths.append(l)
    return answers, correct, lengths


POLICIES = {"fixed": fixed, "esc": esc, "dsc": dsc,
            "adaptive_consistency": adaptive_consistency()}


def get_policy(name: str, where: Optional[str] = None) -> Policy:
  """The policy named ``name`` (``POLICIES``), else a clear error."""
  if name not in POLICIES:
    raise ValueError(f"{where or 'adaptive'}: unknown policy {name!r}; expected"
                     f" one of {sorted(POLICIES)}")
  return POLICIES[name]


__all__ = ["POLICIES", "Result", "SamplerDraw", "adaptive_consistency",
           "beta_stop_probability", "dsc", "esc", "fixed", "get_policy", "run", "vote"]
