"""STaR: rationalisation regenerates failures with the answer as a hint and
trains them without it."""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import star
from jaxsi.training import round_context


class HintOnlyModel:
  """A fake round context: answers right only when the prompt carries the hint,
  except problems listed in ``solves`` (right without hint) and ``hopeless``."""

  def __init__(self, solves=(), hopeless=()):
    self.solves, self.hopeless, self.calls = set(solves), set(hopeless), []
    self.strategies = []

  def sample(self, tasks, *, strategy, n, temperature=None, params=None, rng=None):
    self.calls.append([t.prompt for t in tasks])
    self.strategies.append((type(strategy).__name__, n))
    texts = []
    for t in tasks:
      ok = t.id not in self.hopeless and ("[" in t.prompt or t.id in self.solves)
      texts += [t.target if ok else "0"] * n
    correct = np.asarray([tasks[i // n].verify(x) >= 1 for i, x in enumerate(texts)])
    return round_context.Samples(traj=None, rewards=correct[:, None].astype(np.float32),
                                 reward_names=("correct",), texts=texts, correct=correct,
                                 answers=texts, tasks=list(tasks), n=n)


def _tasks():
  return tasks_lib.make_tasks("addition", 3, difficulty=2, seed=0, reverse=True)


def test_hinted_prompt():
  t = _tasks()[0]
  assert star.hinted_prompt(t, star.answer_hint) == t.prompt[:-1] + f"[{t.target}]="
  assert star.hinted_prompt(t.replace(prompt="ab"), lambda _: "!") == "ab!"


def test_rationalisation_trains_without_hint():
  a, b, c = _tasks()
  m = star.star()
  ctx = HintOnlyModel(solves=[a.id], hopeless=[c.id])
  records = m.sample_chunk(ctx, [a, b, c], {})
  # Second call regenerates only the two failures, with the hint in the prompt.
  assert ctx.calls[1] == [star.hinted_prompt(b, star.answer_hint),
                          star.hinted_prompt(c, star.answer_hint)]
  rat = [r for r in records if r["rationalized"]]
  assert [r["task_id"] for r in rat] == [b.id, c.id]
  assert all("[" not in r["prompt"] and "[" in r["hinted_prompt"] for r in rat)
  examples, _, metrics = m.select(records, {}, None)
  assert examples == [dict(prompt=a.prompt, completion=a.target, task_id=a.id),
                      dict(prompt=b.prompt, completion=b.target, task_id=b.id)]
  assert metrics["kept_rationalized"] == 1
  assert metrics["rationalization_success"] == pytest.approx(0.5)
  assert metrics["sample_accuracy"] == pytest.approx(1 / 3)   # direct samples only


def test_without_rationalisation_and_warm_start():
  a, b, c = _tasks()
  m = star.star(rationalize=False)
  ctx = HintOnlyModel(solves=[a.id])
  records = m.sample_chunk(ctx, [a, b, c], {})
  assert len(ctx.calls) == 1 and not any(r["rationalized"] for r in records)
  assert [e["task_id"] for e in m.select(records, {}, None)[0]] == [a.id]
  assert len(m.warm_start([a, b])) == 2
  hinted = star.star().warm_start([a, b])
  assert len(hinted) == 4 and hinted[2]["prompt"] == star.hinted_prompt(a, star.answer_hint)
  assert hinted[2]["completion"] == a.target
  s = star.star()
  assert s.train_from == "base" and s.steps_growth == pytest.approx(1.2)


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/star.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "star" and m.steps_growth == pytest.approx(1.2)
  assert (m.rollout.spec.n, m.rollout.spec.temperature) == (1, 0.0)   # greedy (paper)


def test_rollout_spec_sets_sampling():
  """The shared RolloutSpec gives both generations' n and strategy (greedy by
  default); loose sampling arguments are gone."""
  a, b, c = _tasks()
  ctx = HintOnlyModel(solves=[a.id])
  star.star().sample_chunk(ctx, [a, b, c], {})
  assert ctx.strategies == [("Greedy", 1), ("Greedy", 1)]
  ctx = HintOnlyModel(solves=[a.id])
  m = star.star(rollout=spec.RolloutSpec(n=3, temperature=0.5))
  assert m.rollout.spec == spec.RolloutSpec(n=3, temperature=0.5)
  m.sample_chunk(ctx, [a, b, c], {})
  assert ctx.strategies == [("Sampling", 3), ("Sampling", 3)]
  with pytest.raises(TypeError):
    star.star(samples_per_prompt=1)   # pylint: disable=unexpected-keyword-arg
  with pytest.raises(TypeError):
    star.star(rollout=1)
