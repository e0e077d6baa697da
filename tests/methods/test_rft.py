"""RFT: distinct-correct rejection filter (hand cases) and the method's wiring."""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.methods import rft
from jaxsi.methods import self_training_common as common


def rec(tid, sample, completion, correct, prompt="p"):
  return dict(task_id=tid, prompt=prompt + tid, sample=sample, completion=completion,
              correct=correct, answer=completion, difficulty=1)


RECORDS = [rec("a", 0, "12", True), rec("a", 1, "12", True), rec("a", 2, "13", False),
           rec("a", 3, "012", True), rec("b", 0, "7", False), rec("c", 0, "5", True)]


def test_keep_correct_distinct_and_capped():
  got = common.keep_correct(RECORDS, max_per_prompt=None)
  assert [(e["task_id"], e["completion"]) for e in got] == [
      ("a", "12"), ("a", "012"), ("c", "5")]
  assert got[0] == dict(prompt="pa", completion="12", task_id="a")
  got = common.keep_correct(RECORDS, max_per_prompt=1)
  assert [(e["task_id"], e["completion"]) for e in got] == [("a", "12"), ("c", "5")]
  got = common.keep_correct(RECORDS, max_per_prompt=None, distinct=False)
  assert [e["completion"] for e in got] == ["12", "12", "012", "5"]


def test_sample_stats():
  s = common.sample_stats(RECORDS)
  assert s["sample_accuracy"] == pytest.approx(4 / 6)
  assert s["pass_at_n"] == pytest.approx(2 / 3)
  assert s["distinct_correct"] == pytest.approx((2 + 0 + 1) / 3)


def test_rft_method():
  m = rft.rft(rollout=spec.RolloutSpec(n=4, temperature=0.7))
  assert m.train_from == "base" and not m.accumulate and m.include_labeled
  assert m.select_is_transform
  with pytest.raises(TypeError):      # the sampling settings are a RolloutSpec
    rft.rft(rollout=dict(n=4, temperature=0.7))
  with pytest.raises(TypeError):      # no loose sampling arguments
    rft.rft(samples_per_prompt=4)     # pylint: disable=unexpected-keyword-arg


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/rft.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  m = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m.name == "rft" and m.train_from == "base"


def test_verified_filter_on_a_trajectory():
  """Hand example: groups {0,1,2}, {3,4}, {5}; rewards 0,1,1 | 0,0 | 1 → keep
  rows 1, 5 (first verified of each group), all verified without a cap."""
  import jax.numpy as jnp
  from jaxsi.trajectory import Trajectory
  from jaxsi.transforms import base
  traj = Trajectory.create(jnp.ones((6, 4), jnp.int32)).replace(
      rewards=jnp.asarray([[0.], [1.], [1.], [0.], [0.], [1.]]),
      group_ids=jnp.asarray([0, 0, 0, 3, 3, 5], jnp.int32))
  f = rft.verified_filter(max_per_prompt=1)
  out, _, _ = f.update(traj, f.init(), base.Context())
  assert np.flatnonzero(np.asarray(out.valid)).tolist() == [1, 5]
  f = rft.verified_filter(max_per_prompt=None)
  out, _, _ = f.update(traj, f.init(), base.Context())
  assert np.flatnonzero(np.asarray(out.valid)).tolist() == [1, 2, 5]
  assert rft.rft(max_per_prompt=1).select_is_transform
  assert rft.rft(max_per_prompt=2).select_is_transform


def _stored_round(seed, problems=6, n=5, budget=3):
  """A stored round of ``problems`` × ``n`` samples like the sampler writes them
  (finished: < budget digits + eos; truncated: budget digits, no eos), with its
  records in row order (completion = the decoded text, as ``Samples.records``)."""
  import jax.numpy as jnp
  from jaxsi.data import char_tokenizer
  from jaxsi.training import round_store
  from jaxsi.trajectory import Trajectory
  tok = char_tokenizer.CharTokenizer()
  rng = np.random.default_rng(seed)
  prompt = tok.encode("3+4=")
  rows, masks, correct, recs = [], [], [], []
  for i in range(problems * n):
    if rng.random() < 0.2:
      comp = tok.encode("".join(rng.choice(list("12"), budget)))
    else:
      comp = tok.encode("".join(rng.choice(list("12"), rng.integers(0, budget)))) + [tok.eos_id]
    pad = len(prompt) + budget + 1 - len(prompt) - len(comp)
    rows.append(prompt + comp + [tok.pad_id] * pad)
    masks.append([False] * len(prompt) + [True] * len(comp) + [False] * pad)
    correct.append(bool(rng.random() < 0.7))
    recs.append(dict(task_id=f"t{i // n}", prompt="3+4=", correct=correct[-1],
                     completion=tok.decode([x for x, m in zip(rows[-1], masks[-1]) if m])))
  traj = Trajectory.create(jnp.asarray(rows), loss_mask=jnp.asarray(masks)).replace(
      rewards=jnp.asarray(correct, jnp.float32)[:, None],
      group_ids=jnp.repeat(jnp.arange(problems, dtype=jnp.int32) * n, n),
      prompt_ids=jnp.repeat(jnp.arange(problems, dtype=jnp.int32), n))
  stored = round_store.StoredChunk(traj=traj, reward_names=("correct",),
                                   task_ids=[f"t{p}" for p in range(problems)],
                                   prompt_texts=["3+4="] * problems)
  return stored, recs, tok


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verified_filter_selects_what_keep_correct_selected(seed):
  """The transform chain over the stored trajectories keeps exactly the
  examples the record filter ``common.keep_correct`` kept (text dedupe = token
  dedupe: a truncated completion never decodes like a finished one)."""
  from jaxsi.training import rounds
  stored, recs, tok = _stored_round(seed)
  for cap in (None, 1, 2, 4):
    for distinct in (True, False):
      want = common.keep_correct(recs, max_per_prompt=cap, distinct=distinct)
      got, _, metrics = rounds.select_with_transform(
          rft.verified_filter(max_per_prompt=cap, distinct=distinct), stored, tok)
      assert got == want, (cap, distinct)
      assert metrics["kept"] == len(want)
