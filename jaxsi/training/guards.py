"""Failure guards of the loop: a run that keeps failing stops, loudly.

A step whose loss, gradient or update is non-finite is skipped by the update
step (``steps.make_update_step``: params and optimizer state kept); a reward
that raises, hangs, returns NaN or the wrong shape marks its samples failed
(``rewards.reward_fn.safe_rewards``). Both keep one bad batch from poisoning
a run, but a run where they happen every iteration learns nothing and used
to exit 0. :class:`FailureGuard` turns a sustained failure into
:class:`RunFailure`, whose message names the cause, the limit that tripped
(a ``Loop`` argument, so a gin binding of the launcher) and the first error
texts.
"""

from __future__ import annotations

from typing import Mapping, Sequence


class RunFailure(RuntimeError):
  """A run that cannot produce a meaningful result (stops with its cause)."""


class FailureGuard:
  """Stops a run whose updates or rewards keep failing (see :class:`Loop`)."""

  def __init__(self, *, max_skipped_iterations: int, max_reward_failure_rate: float,
               reward_failure_patience: int):
    if int(max_skipped_iterations) != max_skipped_iterations or max_skipped_iterations < 1:
      raise ValueError("Loop: max_skipped_iterations must be an integer >= 1, got"
                       f" {max_skipped_iterations!r}")
    if not 0.0 <= max_reward_failure_rate <= 1.0:
      raise ValueError("Loop: max_reward_failure_rate must be in [0, 1], got"
                       f" {max_reward_failure_rate!r}")
    if int(reward_failure_patience) != reward_failure_patience or reward_failure_patience < 1:
      raise ValueError("Loop: reward_failure_patience must be an integer >= 1,"
                       f" got {reward_failure_patience!r}")
    self.max_skipped = int(max_skipped_iterations)
    self.max_rate = float(max_reward_failure_rate)
    self.patience = int(reward_failure_patience)
    self.skipped_run = self.failed_run = 0

  def check(self, iteration: int, name: str, metrics: Mapping[str, float],
            errors: Sequence[str]) -> None:
    skipped = metrics.get("skipped_nonfinite", 0.0)
    self.skipped_run = self.skipped_run + 1 if skipped >= 1.0 else 0
    if self.skipped_run >= self.max_skipped:
      raise RunFailure(
          f"{name}: every update of the last {self.skipped_run} iterations (to"
          f" {iteration}) was skipped as non-finite (loss={metrics.get('loss')},"
          f" grad_norm={metrics.get('grad_norm')}, learning_rate="
          f"{metrics.get('learning_rate')}): non-finite data, rewards or learning"
          " rate; the last good parameters are in the previous checkpoint"
          " (limit: max_skipped_iterations)")
    rate = metrics.get("reward_failed_frac", 0.0)
    self.failed_run = self.failed_run + 1 if rate > self.max_rate else 0
    if self.failed_run >= self.patience:
      first = "; ".join(errors) if errors else "(no error text recorded)"
      raise RunFailure(
          f"{name}: {rate:.0%} of the samples failed their reward in iteration"
          f" {iteration} ({self.failed_run} iterations in a row above"
          f" max_reward_failure_rate={self.max_rate}); first errors: {first}")
