"""math-verify answer rewards."""

import threading

import numpy as np
import pytest

pytest.importorskip("math_verify")

from jaxsi.data.tasks import Task  # pylint: disable=g-import-not-at-top
from jaxsi.rewards import math_verify_reward as mvr  # pylint: disable=g-import-not-at-top
from jaxsi.rewards import reward_fn  # pylint: disable=g-import-not-at-top
from jaxsi.rewards import verifiers  # pylint: disable=g-import-not-at-top


@pytest.mark.parametrize("gold,completion,want", [
    ("\\frac{1}{2}", "so the answer is \\boxed{0.5}", True),
    ("\\frac{1}{2}", "so the answer is \\boxed{1/2}", True),
    ("\\frac{1}{2}", "so the answer is \\boxed{\\frac{2}{4}}", True),
    ("\\frac{1}{2}", "so the answer is \\boxed{0.25}", False),
    ("72", "Natalia sold 72 clips.\n#### 72", True),
    ("2400", "#### 2,400", True),
    ("1,234", "\\boxed{1234}", True),
    ("\\sqrt{2}", "$\\boxed{2^{1/2}}$", True),
    ("(1,2]", "The interval is \\boxed{(1, 2]}.", True),
    ("(1,2]", "The interval is \\boxed{[1, 2]}.", False),
    ("72", "I don't know<|end|>", False),
    ("72", "", False),
])
def test_math_verify_match(gold, completion, want):
  assert mvr.math_verify_match(gold, completion) is want


def test_reward_fn_and_registered_verifier():
  tasks = [Task(id="a", prompt="p", answer="\\frac{5}{6}", category="math",
                meta={"verifier": "math_verify"}),
           Task(id="b", prompt="p", answer="3", category="math",
                meta={"verifier": "math_verify"})]
  completions = ["\\boxed{5/6}", "\\boxed{4}"]
  r = mvr.math_verify_reward(tasks, completions)
  assert r.dtype == np.float32 and r.tolist() == [1.0, 0.0]
  assert mvr.math_verify_reward.names == ("math_verify",)
  assert "math_verify" in verifiers.verifier_names()
  assert [t.verify(c) for t, c in zip(tasks, completions)] == [1.0, 0.0]
  with pytest.raises(ValueError, match="2 tasks but 1"):
    mvr.math_verify_reward(tasks, completions[:1])


def test_works_off_the_main_thread_through_safe_rewards():
  tasks = [Task(id="a", prompt="p", answer="7", category="math")] * 2
  out = {}

  def run():
    out["r"] = mvr.math_verify_reward(tasks, ["\\boxed{7}", "\\boxed{8}"])

  th = threading.Thread(target=run)
  th.start()
  th.join(60)
  assert out["r"].tolist() == [1.0, 0.0]
  rewards, failed, _ = reward_fn.safe_rewards(
      mvr.math_verify_reward, tasks, ["\\boxed{7}", "\\boxed{8}"],
      timeout_s=60.0)
  assert not failed.any()
  assert rewards.reshape(-1).tolist() == [1.0, 0.0]
