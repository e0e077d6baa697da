r"""The RL loop for multi-turn episodes: the same loop, a different rollout.

:class:`MultiTurnRLTrainer` is :class:`jaxsi.training.rl.RLTrainer` with one
override: a rollout batch is a batch of *episodes*
(``jaxsi.sampling.multiturn.run_episodes``: model turn → injected turn → model
turn …, one KV cache) instead of single completions, and its rewards are
per turn, ``rewards[:, k−1]`` = reward of model turn k (NaN: not taken / not
graded). Everything after the rollout — the jitted transform chain, the
jitted epochs × minibatches update, checkpoints, metrics — is the base loop's;
the method's transforms (``jaxsi.transforms.turns``) turn the per-turn rewards
into token advantages and the loss mask already covers model turns only.

Shapes stay fixed across iterations: T = P + G + (K − 1)(I + G) (prompt
bucket, turn budget, injected-turn length, max turns), so the prepare and
train steps compile once; the decoder compiles once per turn index.

Extra metrics per iteration: 'sc/acc_t1', 'sc/acc_t2' (answer standing after
turn 2), 'sc/gap', 'sc/wrong_to_right', 'sc/right_to_wrong', 'sc/turns_mean',
'sc/repeat_frac'.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from jaxsi.methods.score import MultiTurnMethod
from jaxsi.rewards import reward_fn as reward_lib
from jaxsi.sampling import multiturn
from jaxsi.training import rl


def turn_reward_fn(reward_fns, *, timeout_s: float = 60.0):
  """``fn(tasks, texts) -> f32[B]``: the summed components of ``reward_fns``.

  Runs each fn through ``reward_fn.safe_rewards`` (a failing fn gives NaN
  rows, never an exception).
  """

  def fn(tasks, texts):
    total = np.zeros((len(texts),), np.float32)
    for f in reward_fns:
      k = len(reward_lib.reward_names(f))
      r, _, _ = reward_lib.safe_rewards(f, tasks, texts, timeout_s=timeout_s,
                                        num_components=k)
      total = total + np.asarray(r, np.float32).sum(axis=1)
    return total

  return fn


class MultiTurnRLTrainer(rl.RLTrainer):
  """Runs a :class:`MultiTurnMethod` (arguments as :class:`rl.RLTrainer`)."""

  def __init__(self, *, method: MultiTurnMethod, **kwargs):
    if not isinstance(method, MultiTurnMethod):
      raise TypeError(f"MultiTurnRLTrainer needs a MultiTurnMethod, got "
                      f"{type(method).__name__}")
    super().__init__(method=method, **kwargs)
    self.episode = method.episode
    self.reward_names = tuple(f"turn{k}" for k in
                              range(1, self.episode.max_turns + 1))
    self._turn_reward = turn_reward_fn(method.reward_fns,
                                       timeout_s=self.reward_timeout_s)

  def run_episodes(self, params, task_index: np.ndarray, rng, *,
                   strategy: Any = None, n: Optional[int] = None
                   ) -> multiturn.Episode:
    """Episodes for the tasks ``task_index`` (n per task) under ``params``."""
    rows = [self.prompts[i] for i in task_index]
    tokens, mask = rl.left_pad(rows, self.prompt_len, self.pad_id)
    return multiturn.run_episodes(
        self.model, params, prompt_tokens=tokens, prompt_mask=mask,
        tasks=[self.tasks[i] for i in task_index], tokenizer=self.tokenizer,
        spec=self.episode, reward_fn=self._turn_reward, rng=rng,
        strategy=strategy or self.method.strategy,
        n=int(self.method.n if n is None else n),
        max_new_tokens=self.method.max_new_tokens, stop_ids=self.stop_ids,
        pad_id=self.pad_id, prompt_ids=np.asarray(task_index, np.int32))

  def _one_batch(self, params, rng, *, hinted=False):
    del hinted
    task_index = np.asarray(self.iterator.indices(self.position))
    self.position += 1
    t0 = time.perf_counter()
    ep = self.run_episodes(params, task_index, rng)
    traj = rl._to_host(ep.traj)  # pylint: disable=protected-access
    wall = time.perf_counter() - t0
    first, second = self.method.eval_turns
    second = min(second, self.episode.max_turns)
    stats = multiturn.self_correction_stats(
        ep.rewards, traj.valid, first=first, second=second,
        threshold=self.episode.success_threshold)
    taken = np.isfinite(ep.rewards)
    info = dict(gen_s=wall - ep.info["reward_s"], reward_s=ep.info["reward_s"],
                reward_failed=int((np.isnan(ep.rewards[:, 0])
                                   & np.asarray(traj.valid, bool)).sum()
                                  if self.episode.graded(1) else 0),
                gen_tokens=ep.info["gen_tokens"],
                sc={**{k: v for k, v in stats.items() if k != "count"},
                    "turns_mean": float(ep.num_turns[traj.valid].mean()),
                    "repeat_frac": float(ep.repeats[taken].mean())
                    if taken.any() else 0.0})
    return rl.Batch(traj=traj, rewards=ep.rewards,
                    task_index=np.repeat(task_index, self.method.n), info=info)

  def _metrics(self, batch, tmetrics, umetrics, *, t_prep, t_upd, t_total):
    out = super()._metrics(batch, tmetrics, umetrics, t_prep=t_prep,
                           t_upd=t_upd, t_total=t_total)
    for k, v in batch.info.get("sc", {}).items():
      out[f"sc/{k}"] = float(v)
    return out
