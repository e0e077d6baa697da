r"""Multi-turn rollouts: model turn → injected turn → model turn …, one KV cache.

An *episode* is a conversation of up to ``max_turns`` model turns. After model
turn k the host decodes the turn, grades it with a reward fn, decides per row
whether the episode goes on (stop when the answer is correct, a stop phrase
appears, or ``max_turns`` is reached) and chooses the text injected before
turn k+1 (fixed text, text chosen by the verifier's verdict, a critique built
from the verifier, or text written by another model). The next turn is then
decoded by :func:`jaxsi.sampling.sampler.continue_generate`, which writes only
the injected tokens and the new completion into the existing KV cache: the
conversation is never re-encoded.

Layout of the returned trajectory (fixed shapes, ``I`` = ``inject_length``)::

    columns: P (prompt) | G (turn 1) | I (inject 1) | G (turn 2) | … | G (turn K)
    T = P + G + (K − 1)(I + G)          (the same for every batch of a run)

* ``turn_ids``: 0 prompt, k on the tokens of model turn k, −j on the tokens
  of the j-th injected turn (DESIGN.md Trajectory table); 0 on padding.
* ``loss_mask``: model-turn tokens only (injected turns are observations).
* A row whose episode ended keeps masked (padding) columns for the turns it
  did not take: it is carried through the jitted decoder as a ``done`` row.
* ``extras['turn_rewards']`` f32[B, K]: reward of model turn k (NaN for a
  turn not taken or not graded); ``extras['num_turns']`` int32[B];
  ``extras['turn_repeats']`` f32[B, K]: 1 where turn k's answer repeats the
  answer of an earlier graded turn (UFO's repetition penalty reads it).

Only the decode/verify/choose-injection step between turns runs on the host;
generation (prefill + ``lax.while_loop`` decode) is jitted, compiled once per
turn index (the conversation grows by ``I + G`` columns per turn).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsi.rewards import verifiers
from jaxsi.sampling import buckets as buckets_lib
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.sampling import strategies as strategies_lib
from jaxsi.trajectory import TOKEN_FIELDS, Trajectory

Array = jax.Array


# ---------------------------------------------------------------- feedback
@dataclasses.dataclass(frozen=True)
class TurnHistory:
  """What a feedback fn sees after model turn ``turn`` (host data).

  Attributes:
    turn: the model turn just finished (1-based).
    tasks: the task of every row (B).
    texts: texts[b][j] = decoded text of model turn j + 1 of row b ('' if the
      row did not take it).
    rewards: f32[B, turn] rewards of the turns so far (NaN: not graded/taken).
    injected: injected[b][j] = text injected before model turn j + 2.
    answers: answers[b][j] = canonical answer of turn j + 1 (None: none).
  """

  turn: int
  tasks: Sequence[Any]
  texts: Sequence[Sequence[str]]
  rewards: np.ndarray
  injected: Sequence[Sequence[str]]
  answers: Sequence[Sequence[Optional[str]]]


# feedback(history) -> one injected text per row (rows that stop are ignored).
Feedback = Callable[[TurnHistory], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class FixedFeedback:
  """The same text after every turn (UFO's "try again", SCoRe's revise prompt)."""

  text: str

  def __call__(self, history: TurnHistory) -> List[str]:
    return [self.text] * len(history.tasks)


@dataclasses.dataclass(frozen=True)
class VerdictFeedback:
  """Text chosen by the verifier's verdict on the last turn.

  Attributes:
    correct: injected when the last turn's reward >= ``threshold``.
    wrong: injected otherwise (also for an ungraded turn).
    threshold: success threshold.
  """

  correct: str
  wrong: str
  threshold: float = 1.0

  def __call__(self, history: TurnHistory) -> List[str]:
    r = history.rewards[:, history.turn - 1]
    return [self.correct if np.isfinite(x) and x >= self.threshold
            else self.wrong for x in r]


@dataclasses.dataclass(frozen=True)
class VerifierCritique:
  """A critique written from the verifier's knowledge (Critique-GRPO).

  Zhang et al. 2025, "Critique-GRPO" (arXiv:2506.03106) uses natural-language
  critiques; a verifier can write a simple one, e.g. ``"The answer 331 is
  wrong; the correct answer ends in 3."``. ``template`` is formatted with
  ``answer`` (the canonical answer of the last turn, or its text), ``last``
  (the last character of the gold answer), ``first`` (its first character)
  and ``gold`` (the whole gold answer: a full-solution hint).

  Attributes:
    template: critique for a wrong (or ungraded) last turn.
    correct: text for a correct last turn.
    threshold: success threshold.
  """

  template: str = "The answer {answer} is wrong; the correct answer ends in {last}."
  correct: str = "The answer is correct."
  threshold: float = 1.0

  def __call__(self, history: TurnHistory) -> List[str]:
    k = history.turn - 1
    out = []
    for b, task in enumerate(history.tasks):
      r = history.rewards[b, k]
      if np.isfinite(r) and r >= self.threshold:
        out.append(self.correct)
        continue
      ans = history.answers[b][k]
      ans = ans if ans is not None else history.texts[b][k].strip()
      gold = str(task.answer)
      out.append(self.template.format(answer=ans, last=gold[-1:],
                                      first=gold[:1], gold=gold))
    return out


class ModelFeedback:
  """Feedback written by a (critic / teacher / the same) model.

  The critic reads ``prompt_fn(history, b) -> str`` (e.g. problem + attempt +
  "Critique:") and its greedy/sampled completion becomes the injected text,
  optionally wrapped as ``prefix + critique + suffix``.

  Args:
    model: the critic's static Model.
    params: its params.
    tokenizer: the tokenizer (shared with the policy).
    prompt_fn: ``(history, row) -> critic prompt text``.
    max_new_tokens: critique length budget.
    strategy: critic sampling strategy (default greedy).
    prefix: text before the critique in the injected turn.
    suffix: text after it (e.g. a "try again" cue).
    seed: PRNG seed of the critic's sampling.
  """

  def __init__(self, *, model, params, tokenizer,
               prompt_fn: Callable[[TurnHistory, int], str],
               max_new_tokens: int = 16,
               strategy: Optional[strategies_lib.Strategy] = None,
               prefix: str = "", suffix: str = "", seed: int = 0):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.prompt_fn = prompt_fn
    self.max_new_tokens = int(max_new_tokens)
    self.strategy = strategy or strategies_lib.Greedy()
    self.prefix, self.suffix = prefix, suffix
    self.seed = int(seed)

  def __call__(self, history: TurnHistory) -> List[str]:
    tok = self.tokenizer
    prompts = [[tok.bos_id] + list(tok.encode(self.prompt_fn(history, b)))
               for b in range(len(history.tasks))]
    traj = sampler_lib.sample(
        self.model, self.params, prompts,
        rng=jax.random.fold_in(jax.random.key(self.seed), history.turn),
        strategy=self.strategy, max_new_tokens=self.max_new_tokens,
        stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
    tokens, mask = jax.device_get((traj.tokens, traj.loss_mask))
    return [self.prefix + tok.decode(np.asarray(t)[np.asarray(m)].tolist())
            + self.suffix for t, m in zip(tokens, mask)]


# ------------------------------------------------------------ episode spec
@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """How an episode unfolds (static; hashable so methods can hold it).

  Attributes:
    max_turns: K, model turns at most (>= 1).
    feedback: a Feedback, or a tuple of K − 1 of them (``feedback[k − 1]``
      is injected before model turn k + 1).
    stop_on_correct: end a row's episode after a graded turn with reward
      >= ``success_threshold`` (UFO, Reflect-Retry-Reward, Critique-GRPO);
      False always plays every turn (SCoRe's two attempts).
    stop_phrases: end a row's episode when its last turn contains one.
    graded_turns: 1-based model turns the reward fn grades (None: all). An
      ungraded turn (e.g. a reflection) gets reward NaN.
    success_threshold: reward at or above which a turn is correct.
    inject_length: I, columns of every injected turn (longer text raises).
    max_new_tokens: G of every model turn (None: the method's budget).
    stop_fn: optional label-free stop rule ``fn(TurnHistory) -> bool[B]``
      (True: the row's episode ends after this turn), consulted after the
      rules above; test-time loops (``jaxsi.sampling.refine``) stop on the
      model's own answers without reading the verifier.
  """

  max_turns: int = 2
  feedback: Union[Feedback, Tuple[Feedback, ...], None] = None
  stop_on_correct: bool = False
  stop_phrases: Tuple[str, ...] = ()
  graded_turns: Optional[Tuple[int, ...]] = None
  success_threshold: float = 1.0
  inject_length: int = 16
  max_new_tokens: Optional[int] = None
  stop_fn: Optional[Callable[[TurnHistory], Sequence[bool]]] = None

  def __post_init__(self):
    if self.max_turns < 1:
      raise ValueError(f"EpisodeSpec: max_turns must be >= 1, got {self.max_turns}")
    if self.max_turns > 1 and self.feedback is None:
      raise ValueError("EpisodeSpec: max_turns > 1 needs a feedback")
    if isinstance(self.feedback, tuple) and len(self.feedback) != self.max_turns - 1:
      raise ValueError(
          f"EpisodeSpec: {len(self.feedback)} feedbacks for {self.max_turns} "
          f"turns; give one, or max_turns - 1 = {self.max_turns - 1}")
    if self.inject_length < 1:
      raise ValueError("EpisodeSpec: inject_length must be >= 1")

  def feedback_for(self, turn: int) -> Feedback:
    """The feedback injected after model turn ``turn`` (1-based)."""
    if isinstance(self.feedback, tuple):
      return self.feedback[turn - 1]
    return self.feedback

  def graded(self, turn: int) -> bool:
    return self.graded_turns is None or turn in self.graded_turns

  def length(self, prompt_len: int, gen_len: int) -> int:
    """T of the episode trajectory."""
    return prompt_len + gen_len + (self.max_turns - 1) * (
        self.inject_length + gen_len)


@dataclasses.dataclass
class Episode:
  """A batch of finished episodes.

  Attributes:
    traj: the Trajectory (device arrays), T = ``spec.length(P, G)``.
    rewards: f32[B, K] per-turn rewards (NaN: not taken / not graded).
    texts: texts[b][k] decoded model turn k + 1 ('' if not taken).
    injected: injected[b][k] text injected before model turn k + 2.
    answers: canonical answers per turn (None: none / not taken).
    num_turns: int32[B] model turns taken (0 for invalid rows).
    repeats: f32[B, K] 1 where a graded turn repeats an earlier answer.
    info: timings and token counts.
  """

  traj: Trajectory
  rewards: np.ndarray
  texts: List[List[str]]
  injected: List[List[str]]
  answers: List[List[Optional[str]]]
  num_turns: np.ndarray
  repeats: np.ndarray
  info: dict


def _answer_of(task, text: str) -> Optional[str]:
  try:
    return verifiers.canonical_answer(task, text)
  except Exception:  # pylint: disable=broad-except
    return None


def _encode_injections(tokenizer, texts: Sequence[str], rows: np.ndarray,
                       length: int, pad_id: int):
  b = len(texts)
  seqs = [[] for _ in range(b)]
  for r in np.flatnonzero(rows):
    ids = list(tokenizer.encode(texts[r]))
    if not ids:
      raise ValueError(f"multiturn: injected turn of row {r} is empty; every "
                       "continuing row needs >= 1 injected token")
    if len(ids) > length:
      raise ValueError(
          f"multiturn: injected text {texts[r]!r} has {len(ids)} tokens > "
          f"inject_length={length}; raise EpisodeSpec.inject_length")
    seqs[r] = ids
  return buckets_lib.left_pad(seqs, length=length, pad_id=pad_id)


def _pad_to(traj: Trajectory, length: int) -> Trajectory:
  """Right-pads token fields and [B, T] extras to ``length`` columns."""
  t = traj.length
  if t == length:
    return traj
  updates = {}
  for name in TOKEN_FIELDS:
    v = getattr(traj, name)
    if v is not None:
      updates[name] = jnp.pad(v, ((0, 0), (0, length - t)))
  extras = {}
  for k, v in traj.extras.items():
    if np.ndim(v) == 2 and np.shape(v)[1] == t:
      v = jnp.pad(v, ((0, 0), (0, length - t)))
    extras[k] = v
  return traj.replace(extras=extras, **updates)


def run_episodes(model, params, *, prompt_tokens, prompt_mask,
                 tasks: Sequence[Any], tokenizer, spec: EpisodeSpec,
                 reward_fn: Callable[[Sequence[Any], Sequence[str]], np.ndarray],
                 rng: Array, strategy: strategies_lib.Strategy, n: int,
                 max_new_tokens: int, stop_ids: Tuple[int, ...],
                 pad_id: int = 0, valid: Optional[np.ndarray] = None,
                 prompt_ids: Optional[np.ndarray] = None) -> Episode:
  """Plays ``n`` episodes per prompt (see the module docstring).

  Args:
    model: static Model.
    params: its params.
    prompt_tokens: int32[R, P] left-padded prompts.
    prompt_mask: bool[R, P] real prompt tokens.
    tasks: the R tasks (given to the reward and feedback fns).
    tokenizer: encodes injected text, decodes model turns.
    spec: the EpisodeSpec.
    reward_fn: ``fn(tasks, texts) -> f32[len]`` (host) grading one turn.
    rng: PRNG key (turn k uses ``fold_in(rng, k)``).
    strategy: sampling strategy of every model turn.
    n: episodes per prompt (rows ``i·n … i·n+n−1``).
    max_new_tokens: G, the budget of every model turn
      (``spec.max_new_tokens`` wins when set).
    stop_ids: ids ending a model turn.
    pad_id: padding id.
    valid: bool[R] real prompt rows (default all).
    prompt_ids: int32[R] dataset ids.

  Returns:
    The Episode.
  """
  k_max = spec.max_turns
  g = int(spec.max_new_tokens or max_new_tokens)
  r_rows, p = np.shape(prompt_tokens)
  b = r_rows * n
  row_tasks = [tasks[i // n] for i in range(b)]
  t0 = time.perf_counter()
  traj, cache = sampler_lib.generate(
      model, params, jnp.asarray(prompt_tokens, jnp.int32),
      jnp.asarray(prompt_mask, bool), rng=jax.random.fold_in(rng, 1),
      max_new_tokens=np.int32(g), strategy=strategy, n=int(n), gen_length=g,
      stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id),
      valid=None if valid is None else jnp.asarray(valid, bool),
      prompt_ids=None if prompt_ids is None else jnp.asarray(prompt_ids, jnp.int32))
  row_valid = np.asarray(jax.device_get(traj.valid), bool)
  active = row_valid.copy()
  rewards = np.full((b, k_max), np.nan, np.float32)
  repeats = np.zeros((b, k_max), np.float32)
  texts = [[""] * k_max for _ in range(b)]
  injected = [[""] * max(k_max - 1, 0) for _ in range(b)]
  answers = [[None] * k_max for _ in range(b)]
  num_turns = np.zeros((b,), np.int32)
  finished = np.zeros((b,), bool)
  gen_s, reward_s = 0.0, 0.0
  for k in range(1, k_max + 1):
    tokens, turn_ids, fin = jax.device_get(
        (traj.tokens, traj.turn_ids, traj.extras["finished"]))
    gen_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = np.flatnonzero(active)
    num_turns[rows] = k
    finished[rows] = np.asarray(fin, bool)[rows]
    for r in rows:
      ids = np.asarray(tokens[r])[np.asarray(turn_ids[r]) == k].tolist()
      texts[r][k - 1] = tokenizer.decode(ids)
    if spec.graded(k) and rows.size:
      got = np.asarray(reward_fn([row_tasks[r] for r in rows],
                                 [texts[r][k - 1] for r in rows]),
                       np.float32).reshape(len(rows), -1)
      rewards[rows, k - 1] = np.nansum(got, axis=1) if got.shape[1] > 1 else got[:, 0]
      for r in rows:
        ans = _answer_of(row_tasks[r], texts[r][k - 1])
        answers[r][k - 1] = ans
        prev = [answers[r][j] for j in range(k - 1) if spec.graded(j + 1)]
        if ans is not None and ans in prev:
          repeats[r, k - 1] = 1.0
    reward_s += time.perf_counter() - t0
    if k == k_max:
      break
    cont = active.copy()
    if spec.stop_on_correct and spec.graded(k):
      cont &= ~(np.nan_to_num(rewards[:, k - 1], nan=-np.inf)
                >= spec.success_threshold)
    if spec.stop_phrases:
      for r in np.flatnonzero(cont):
        if any(s in texts[r][k - 1] for s in spec.stop_phrases):
          cont[r] = False
    history = TurnHistory(turn=k, tasks=row_tasks,
                          texts=[list(x) for x in texts],
                          rewards=rewards[:, :k].copy(),
                          injected=[list(x) for x in injected],
                          answers=[list(x) for x in answers])
    if spec.stop_fn is not None:
      stop = np.asarray(spec.stop_fn(history), bool).reshape(-1)
      if stop.shape != (b,):
        raise ValueError(f"multiturn: stop_fn returned {stop.shape[0]} flags "
                         f"for {b} rows")
      cont &= ~stop
    if not cont.any():
      break
    fb = list(spec.feedback_for(k)(history))
    if len(fb) != b:
      raise ValueError(f"multiturn: feedback returned {len(fb)} texts for {b} rows")
    for r in np.flatnonzero(cont):
      injected[r][k - 1] = fb[r]
    inj_tokens, inj_mask = _encode_injections(tokenizer, fb, cont,
                                              spec.inject_length, pad_id)
    t0 = time.perf_counter()
    # Rows whose episode ended ride along as invalid (not decoded) rows and
    # get no injected tokens; their validity is restored afterwards.
    traj, cache = sampler_lib.continue_generate(
        model, params, traj.replace(valid=jnp.asarray(cont)), cache,
        jnp.asarray(inj_tokens), jnp.asarray(inj_mask),
        rng=jax.random.fold_in(rng, k + 1), max_new_tokens=np.int32(g),
        strategy=strategy, gen_length=g,
        stop_ids=tuple(int(s) for s in stop_ids), pad_id=int(pad_id))
    traj = traj.replace(valid=jnp.asarray(row_valid))
    active = cont
  traj = _pad_to(traj, spec.length(p, g))
  extras = dict(traj.extras)
  extras.update(turn_rewards=jnp.asarray(rewards),
                num_turns=jnp.asarray(num_turns),
                turn_repeats=jnp.asarray(repeats),
                finished=jnp.asarray(finished))
  traj = traj.replace(extras=extras)
  gen_tokens = int(np.sum(jax.device_get(traj.loss_mask)))
  return Episode(traj=traj, rewards=rewards, texts=texts, injected=injected,
                 answers=answers, num_turns=num_turns, repeats=repeats,
                 info=dict(gen_s=gen_s, reward_s=reward_s,
                           gen_tokens=gen_tokens))


# ----------------------------------------------------------- statistics
def self_correction_stats(rewards: np.ndarray, valid: Optional[np.ndarray] = None,
                          *, first: int = 1, second: int = 2,
                          threshold: float = 1.0) -> dict:
  """Self-correction metrics of SCoRe (Kumar et al. 2024, arXiv:2409.12917, §6).

  A turn not taken (NaN, e.g. the episode stopped after a correct answer)
  keeps the previous turn's verdict, so "accuracy at turn 2" is the accuracy
  of the answer standing after turn 2.

  Args:
    rewards: f32[B, K] per-turn rewards.
    valid: bool[B] rows to count (default all).
    first: 1-based turn of the first attempt.
    second: 1-based turn of the second attempt.
    threshold: correctness threshold.

  Returns:
    dict with 'acc_t1', 'acc_t2', 'gap' (= acc_t2 − acc_t1, SCoRe's
    Δ(t1, t2)), 'wrong_to_right' and 'right_to_wrong' (fractions of all
    rows, SCoRe's Δ^{i→c} and Δ^{c→i}), and 'count'.
  """
  r = np.asarray(rewards, np.float32)
  valid = np.ones(r.shape[0], bool) if valid is None else np.asarray(valid, bool)
  r = r[valid]
  if r.shape[0] == 0:
    return dict(acc_t1=0.0, acc_t2=0.0, gap=0.0, wrong_to_right=0.0,
                right_to_wrong=0.0, count=0)
  c1 = np.nan_to_num(r[:, first - 1], nan=0.0) >= threshold
  c2 = c1.copy()
  for j in range(first, second):
    col = r[:, j]
    taken = np.isfinite(col)
    c2 = np.where(taken, col >= threshold, c2)
  return dict(acc_t1=float(c1.mean()), acc_t2=float(c2.mean()),
              gap=float(c2.mean() - c1.mean()),
              wrong_to_right=float((~c1 & c2).mean()),
              right_to_wrong=float((c1 & ~c2).mean()), count=int(r.shape[0]))


__all__ = [
    "Episode", "EpisodeSpec", "Feedback", "FixedFeedback", "ModelFeedback",
    "TurnHistory", "VerdictFeedback", "VerifierCritique", "run_episodes",
    "self_correction_stats",
]
