"""Rounds over the loop's pieces: rollout + reward stages, stored trajectories,
transforms as filters and pair builders, a DPO M-step with a refreshed
reference, and launchers that refuse the other kind of method."""

import dataclasses
import math
import os

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import rft
from jaxsi.methods import self_training_common as common
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import reward_fn
from jaxsi.rewards import stages as reward_stages
from jaxsi.sampling import rollouts
from jaxsi.training import metrics as metrics_lib
from jaxsi.training import round_store
from jaxsi.training import rounds
from jaxsi.training import rounds_run
from jaxsi.transforms import filters
from jaxsi.transforms import pairs as pairs_lib

# Orbax leaves the read coroutines of a damaged checkpoint to the GC (noise).
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

CONFIG = rounds.RoundsConfig(
    rounds=2, warm_start_steps=4, steps_per_round=5, batch_size=8, max_len=16,
    max_new_tokens=3, rollout_batch=16, chunk_size=4, save_every=2, seed=0)


@pytest.fixture(scope="module")
def setup():
  tok = char_tokenizer.CharTokenizer()
  pool, test = tasks_lib.make_train_test("addition", n_train=24, n_test=4,
                                         difficulty=1, seed=0)
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  return dict(tokenizer=tok, labeled=pool[:16], unlabeled=pool[16:], test=test,
              model=model, init_params=params)


def length_reward(tasks, completions):
  """Completion length: differs within nearly every sampled group."""
  del tasks
  return np.asarray([len(c) for c in completions], np.float32)


@reward_stages.batch_reward
def group_rank(inputs):
  """A group reward (it reads group ids): rank of the length within the group."""
  lengths = np.asarray([len(c) for c in inputs.completions], np.float32)
  out = np.zeros_like(lengths)
  for g in np.unique(inputs.group_ids):
    rows = np.flatnonzero(inputs.group_ids == g)
    out[rows] = np.argsort(np.argsort(lengths[rows], kind="stable"), kind="stable")
  return out


def _dpo(reference="previous", **kw):
  return spec.RoundsMethod(
      name="iterative_dpo",
      rollout=rollouts.Sample(spec.RolloutSpec(n=4, temperature=1.0)),
      rewards=(length_reward,), select=pairs_lib.best_vs_worst(),
      objective="dpo", objective_settings={"beta": 0.1}, reference=reference,
      train_from="current", include_labeled=False, **kw)


def _first_losses(workdir):
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return {r: next(x[f"round{r}/loss"] for x in rows if x["step"] == r * 100_000 + 1)
          for r in (1, 2)}


def test_stored_trajectories_and_transforms(setup, tmp_path):
  """Each chunk's Trajectory is on disk with named reward columns, group and
  prompt ids; a jaxsi.transforms filter over the stored round reproduces the
  records' selection."""
  method = dataclasses.replace(
      rft.rft(rollout=spec.RolloutSpec(n=2, temperature=1.0)),
      rewards=(reward_fn.correctness_reward, group_rank),
      select=lambda records, plan, ctx: (                           # records
          common.keep_correct(records, distinct=False), [], {}))
  rounds.run_rounds(method=method, workdir=str(tmp_path), config=CONFIG, verbose=False,
                    **setup)
  store = round_store.RoundStore(str(tmp_path))
  stored = store.trajectory(1, 2)
  traj = stored.traj
  assert stored.reward_names == ("correct", "group_rank")
  assert traj.batch_size == 8 * 2 and traj.rewards.shape == (16, 2)
  np.testing.assert_array_equal(traj.group_ids, np.repeat(np.arange(8) * 2, 2))
  assert [stored.task_ids[p] for p in traj.prompt_ids] == [
      t.id for t in setup["unlabeled"] for _ in range(2)]
  records = store.read_chunks(1, 2)
  texts = [setup["tokenizer"].decode(r[m].tolist())
           for r, m in zip(traj.tokens, traj.loss_mask)]
  assert texts == [r["completion"] for r in records]
  # the group reward saw whole groups: ranks {0, 1} in every group
  assert sorted(traj.rewards[:, 1].reshape(-1, 2).sum(1).tolist()) == [1.0] * 8
  # a filter from jaxsi.transforms on the stored round = the records' selection
  ex, _, m = rounds.select_with_transform(
      filters.threshold_filter(threshold=1.0, reward_weights=(1.0, 0.0)), stored,
      setup["tokenizer"])
  want = store.load(1, "selected.json")["examples"]
  assert ex == want and m["kept"] == len(want)
  # group-wise filters and pair builders run on it too
  best, _, _ = rounds.select_with_transform(
      filters.top_k_per_group(k=1, reward_weights=(0.0, 1.0)), stored, setup["tokenizer"])
  assert len(best) == 8 and [e["task_id"] for e in best] == [t.id for t in setup["unlabeled"]]
  for t in (filters.drop_zero_variance_groups(), pairs_lib.best_vs_worst()):
    rounds.select_with_transform(t, stored, setup["tokenizer"])


def test_dpo_round_on_best_vs_worst_pairs(setup, tmp_path):
  """Pairs from transforms/pairs.best_vs_worst inside rounds, DPO through fit.

  Hand check: with reference = the previous iterate and training from it, the
  policy equals the reference at the first step of every round, so each
  round's first DPO loss is −log σ(0) = log 2. With the frozen base as
  reference the second round starts away from it (loss ≠ log 2).
  """
  recs = rounds.run_rounds(method=_dpo(), workdir=str(tmp_path / "prev"), config=CONFIG,
                           verbose=False, **setup)
  assert [r["round"] for r in recs] == [0, 1, 2]
  store = round_store.RoundStore(str(tmp_path / "prev"))
  for r in (1, 2):
    sel = store.load(r, "selected.json")
    assert sel["pairs"] and sel["pairs"] == [
        p for p in sel["pairs"] if len(p["chosen"]) > len(p["rejected"])]
    assert recs[r]["pairs"] == len(sel["pairs"]) == recs[r]["train_size"]
    # the same pairs, rebuilt from the stored trajectories by the transform
    _, again, _ = rounds.select_with_transform(
        pairs_lib.best_vs_worst(), store.trajectory(r, 2), setup["tokenizer"])
    assert again == sel["pairs"]
  first = _first_losses(str(tmp_path / "prev"))
  assert first[1] == pytest.approx(math.log(2), abs=1e-5)
  assert first[2] == pytest.approx(math.log(2), abs=1e-5)
  rounds.run_rounds(method=_dpo(reference="base"), workdir=str(tmp_path / "base"),
                    config=CONFIG, verbose=False, **setup)
  frozen = _first_losses(str(tmp_path / "base"))
  assert frozen[1] == pytest.approx(math.log(2), abs=1e-5)   # round 1: base = previous
  assert abs(frozen[2] - math.log(2)) > 1e-4


def test_launchers_refuse_the_other_kind_of_method(tmp_path):
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  on_policy = methods.grpo(rollout=spec.RolloutSpec(n=2, max_new_tokens=3),
                           reward_fns=(length_reward,))
  with pytest.raises(spec.ConfigurationError, match=r"'grpo'.*RL launcher"):
    rounds_run.run(workdir=str(tmp_path), method=on_policy)
  with pytest.raises(spec.ConfigurationError, match="rl_run"):
    rounds.run_rounds(method=on_policy, model=None, init_params=None, tokenizer=None,
                      labeled=[], unlabeled=[], test=[], workdir=str(tmp_path))
  from jaxsi.training import loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(spec.ConfigurationError, match="rounds_run.run"):
    loop.Loop(model=None, params=None, method=rft.rft(), tokenizer=None, tasks=[1],
              optimizer=None, prompts_per_step=1)


def test_rounds_method_validation():
  with pytest.raises(ValueError, match="rollout stage"):
    spec.RoundsMethod(name="x", select=lambda *a: ([], [], {}))
  with pytest.raises(ValueError, match="reference"):
    _dpo(reference="best")
  with pytest.raises(ValueError, match="select"):
    spec.RoundsMethod(name="x", select=3, rollout=rollouts.Sample())
  m = _dpo()
  assert m.pairwise and m.select_is_transform
  with pytest.raises(ValueError, match="without the labeled set"):
    rounds.labeled_only(m)


def test_a_failing_reward_is_isolated_in_rounds(setup, tmp_path):
  """A reward that raises on some completions marks those samples failed (not
  selected) and the round goes on, as in the on-policy loop."""
  def picky(tasks, completions):
    if len(completions) > 4:          # the batch call fails; group retries pass
      raise ValueError("cannot grade more than one group at a time")
    if completions[0].startswith("1"):  # and some groups fail for good
      raise ValueError("cannot grade a group starting with 1")
    return np.asarray([float(len(c) > 1) for c in completions], np.float32)

  method = spec.RoundsMethod(
      name="picky", rollout=rollouts.Sample(spec.RolloutSpec(n=4, temperature=1.0)),
      rewards=(picky,), select=filters.threshold_filter(threshold=1.0),
      train_from="current")
  records = rounds.run_rounds(method=method, workdir=str(tmp_path),
                              config=dataclasses.replace(CONFIG, rounds=1),
                              verbose=False, **setup)
  assert [r["round"] for r in records] == [0, 1]


def test_a_damaged_pool_round_is_recomputed(setup, tmp_path):
  """Truncating a stored round (a crash or a full disk) is noticed by the
  rerun, reported, moved aside and recomputed from the round's stored data:
  the same parameters, records and log rows as before."""
  from jaxsi.training import checkpoint_pool  # pylint: disable=g-import-not-at-top
  method = spec.RoundsMethod(
      name="lengths", rollout=rollouts.Sample(spec.RolloutSpec(n=2, temperature=1.0)),
      rewards=(length_reward,), select=filters.threshold_filter(threshold=2.0),
      train_from="current")
  kw = dict(method=method, workdir=str(tmp_path),
            config=dataclasses.replace(CONFIG, rounds=1), verbose=False, **setup)
  records = rounds.run_rounds(**kw)
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  want = [np.asarray(x) for x in jax.tree.leaves(pool.params(1, like=setup["init_params"]))]
  pool.close()
  rows = (tmp_path / "metrics.jsonl").read_text()
  files = sorted((tmp_path / "pool" / "1").rglob("*"), key=lambda p: p.stat().st_size)
  with open([f for f in files if f.is_file()][-1], "r+b") as f:
    f.truncate(5)
  assert rounds.run_rounds(**kw) == records
  assert [p.name.split(".")[0] for p in (tmp_path / "pool" / "damaged").iterdir()] == ["1"]
  pool = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  assert pool.rounds() == [0, 1]
  for a, b in zip(want, jax.tree.leaves(pool.params(1, like=setup["init_params"]))):
    np.testing.assert_array_equal(a, np.asarray(b))
  pool.close()
  assert (tmp_path / "metrics.jsonl").read_text() == rows
