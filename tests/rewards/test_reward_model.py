"""Learned outcome reward models: data, training, scoring, stage, filter, selector."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.data import batching
from jaxsi.data import tasks as tasks_lib
from jaxsi.training import reward_model as rm
from jaxsi.rewards import stages
from jaxsi.sampling import test_time as tt
from jaxsi.trajectory import Trajectory
from jaxsi.training import run_workdir
from jaxsi.training import steps as steps_lib
from jaxsi.transforms import base as tbase
from tests.methods import rl_fixtures as fx


def corrupt(target):
  """A trivially detectable wrong answer: the digits followed by '+'."""
  return target + "+"


def records(tasks):
  out = []
  for t in tasks:
    out.append(dict(prompt=t.prompt, completion=t.target, correct=True, task_id=t.id))
    out.append(dict(prompt=t.prompt, completion=corrupt(t.target), correct=False,
                    task_id=t.id))
  return out


@pytest.fixture(scope="module")
def tiny():
  tok, model, params, tasks, _ = fx.setup()
  return tok, model, params, tasks


@pytest.fixture(scope="module")
def trained(tiny):
  """Both kinds trained on the 16 fixture problems (right vs corrupted)."""
  tok, model, params, tasks = tiny
  rmodel, rparams = rm.init_from(model, params, jax.random.key(3))
  recs = records(tasks)
  out = {}
  for kind in rm.KINDS:
    data = rm.training_data(kind, tok, recs, max_len=10)
    res = rm.train(model=rmodel, params=rparams, kind=kind, data=data, steps=40,
                   learning_rate=1e-2, batch_size=16, seed=0)
    out[kind] = res
  return rmodel, rparams, out


def pair_accuracy(model, params, tok, tasks):
  prompts = [t.prompt for t in tasks]
  good = rm.score_texts(model, params, tok, prompts, [t.target for t in tasks],
                        max_len=10)
  bad = rm.score_texts(model, params, tok, prompts, [corrupt(t.target) for t in tasks],
                       max_len=10)
  return float(np.mean((good > bad) + 0.5 * (good == bad)))


def test_init_from_keeps_the_backbone_and_adds_a_head(tiny):
  tok, model, params, _ = tiny
  del tok
  bare = {k: v for k, v in params.items() if k != "value_head"}
  rmodel, rparams = rm.init_from(model, bare, jax.random.key(0))
  assert rmodel.config.value_head and "value_head" in rparams
  for a, b in zip(jax.tree.leaves(bare), jax.tree.leaves(
      {k: v for k, v in rparams.items() if k != "value_head"})):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert rparams["value_head"]["kernel"].shape == (model.config.d_model, 1)


def test_training_data_kinds(tiny):
  tok, _, _, tasks = tiny
  recs = records(tasks[:3]) + [dict(prompt=tasks[3].prompt, completion="1",
                                    correct=True, task_id=tasks[3].id)]
  point = rm.training_data("pointwise", tok, recs, max_len=10)
  assert point.kind == "scores" and len(point) == 7
  np.testing.assert_array_equal(point.arrays["scores"], [1, 0, 1, 0, 1, 0, 1])
  pairs = rm.training_data("bradley_terry", tok, recs, max_len=10)
  # Task 3 has no wrong sample: 3 pairs, chosen = the target.
  assert pairs.kind == "pairs" and len(pairs) == 3
  ref = batching.sft_arrays(tok, [tasks[0].prompt], [corrupt(tasks[0].target)],
                            max_len=10)
  np.testing.assert_array_equal(pairs.arrays["rejected/tokens"][0], ref["tokens"][0])
  with pytest.raises(ValueError, match="no prompt has both"):
    rm.training_data("bradley_terry", tok, recs[-1:], max_len=10)
  with pytest.raises(ValueError, match="kind must be one of"):
    rm.training_data("ranking", tok, recs, max_len=10)
  with pytest.raises(ValueError, match="trains on 'pairs' data"):
    rm.train(model=None, params=None, kind="bradley_terry", data=point, steps=1,
             learning_rate=1e-3, batch_size=2, seed=0)


def test_both_kinds_learn_a_separable_fixture(tiny, trained):
  tok, _, _, tasks = tiny
  rmodel, rparams, res = trained
  held_out = tasks_lib.make_tasks("addition", 32, difficulty=1, seed=1)
  before = pair_accuracy(rmodel, rparams, tok, held_out)
  for kind, r in res.items():
    after = pair_accuracy(rmodel, r.params, tok, held_out)
    assert after >= 0.9 and after > before + 0.2, (kind, before, after)
  assert float(res["bradley_terry"].history[-1]["rm/accuracy"]) >= 0.9
  # Pointwise scores approach the 1/0 targets.
  prompts = [t.prompt for t in held_out]
  good = rm.score_texts(rmodel, res["pointwise"].params, tok, prompts,
                        [t.target for t in held_out], max_len=10)
  bad = rm.score_texts(rmodel, res["pointwise"].params, tok, prompts,
                       [corrupt(t.target) for t in held_out], max_len=10)
  assert good.mean() > 0.7 and bad.mean() < 0.3


def test_scoring_chunked_equals_unchunked_and_the_training_read(tiny):
  tok, model, params, tasks = tiny
  ex = tasks[:8]
  arrays = batching.sft_arrays(tok, [t.prompt for t in ex], [t.target for t in ex],
                               max_len=10)
  arrays["loss_mask"][7] = False
  traj = Trajectory.create(arrays["tokens"], input_mask=arrays["input_mask"],
                           loss_mask=arrays["loss_mask"])
  full = rm.score(model, params, traj, chunk=64)
  for chunk in (4,):
    np.testing.assert_allclose(rm.score(model, params, traj, chunk=chunk), full,
                               rtol=1e-5, atol=1e-6)
  values = np.asarray(jax.jit(steps_lib.model_outputs_fn(model, with_values=True))(
      params, traj).values)
  last = [np.flatnonzero(r)[-1] for r in arrays["loss_mask"][:7]]
  np.testing.assert_allclose(full[:7], values[np.arange(7), last], rtol=1e-5,
                             atol=1e-6)
  assert np.isnan(full[7])              # no loss token
  # Left-padded rows (as sampled) score like right-padded ones.
  b, t = arrays["tokens"].shape
  n_real = arrays["input_mask"].sum(axis=1)
  left = {k: np.zeros_like(v) for k, v in arrays.items()}
  for i in range(b):
    for k in left:
      left[k][i, t - n_real[i]:] = arrays[k][i, :n_real[i]]
  traj_l = Trajectory.create(left["tokens"], input_mask=left["input_mask"],
                             loss_mask=left["loss_mask"])
  np.testing.assert_allclose(rm.score(model, params, traj_l)[:7], full[:7],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      rm.score_texts(model, params, tok, [t.prompt for t in ex],
                     [t.target for t in ex], max_len=10)[:7], full[:7], rtol=1e-5,
      atol=1e-6)
  bare = fx.setup()[1]
  with pytest.raises(ValueError, match="chunk"):
    rm.score(bare, params, traj, chunk=0)


class FakeCtx:

  def __init__(self, roles):
    self.roles = roles

  def role_model_params(self, role):
    return self.roles[role]


def test_reward_stage_reads_the_role(tiny, trained):
  tok, model, _, tasks = tiny
  ex = tasks[:8]
  arrays = batching.sft_arrays(tok, [t.prompt for t in ex], [t.target for t in ex],
                               max_len=10)
  traj = jax.tree.map(np.asarray, Trajectory.create(
      arrays["tokens"], input_mask=arrays["input_mask"], loss_mask=arrays["loss_mask"]))
  inputs = stages.RewardInputs(tasks=ex, completions=[t.target for t in ex],
                               group_ids=np.arange(8), prompt_ids=np.arange(8),
                               rows=np.arange(8), traj=traj)
  stage = rm.RewardModelScorer()
  assert stage.names == ("reward_model",) and stage.roles == ("reward_model",)
  assert stages.as_stages([stage]) == (stage,)
  assert stages.stage_roles([stage]) == ("reward_model",)
  other = trained[2]["pointwise"].params
  scores, info = stage(FakeCtx({"reward_model": (model, other)}), inputs)
  assert scores.shape == (8, 1)
  np.testing.assert_allclose(scores[:, 0], rm.score(model, other, traj), rtol=1e-6)
  assert info["reward_model/mean"] == pytest.approx(float(scores.mean()), rel=1e-5)
  with pytest.raises(KeyError):
    stage(FakeCtx({}), inputs)
  with pytest.raises(ValueError, match="no trajectory"):
    stage(FakeCtx({"reward_model": (model, other)}),
          dataclasses_replace(inputs, traj=None))


def dataclasses_replace(x, **kw):
  import dataclasses
  return dataclasses.replace(x, **kw)


def test_keep_mask_and_filter_records():
  s = np.asarray([0.9, 0.2, np.nan, 0.5, 0.5, 0.1])
  g = np.asarray([0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(rm.keep_mask(s, g, threshold=0.5),
                                [True, False, False, True, True, False])
  # Top-1 per group; ties → the lower index; NaN never kept.
  np.testing.assert_array_equal(rm.keep_mask(s, g, top_k=1),
                                [True, False, False, True, False, False])
  np.testing.assert_array_equal(rm.keep_mask(s, g, top_k=2, threshold=0.3),
                                [True, False, False, True, True, False])
  with pytest.raises(ValueError, match="threshold and/or top_k"):
    rm.keep_mask(s, g)
  with pytest.raises(ValueError, match="top_k must be"):
    rm.keep_mask(s, g, top_k=0)
  recs = [dict(task_id=str(x), completion=str(i)) for i, x in enumerate(g)]
  kept = rm.filter_records(recs, s, top_k=1)
  assert [r["completion"] for r in kept] == ["0", "3"]
  with pytest.raises(ValueError, match="records"):
    rm.filter_records(recs[:2], s, top_k=1)


def test_filter_transform_reads_only_the_rm_column():
  # Column 0 (correctness) would flip the choice if it were summed in.
  rewards = np.asarray([[5.0, 0.1], [0.0, 0.8], [0.0, 0.3], [9.0, np.nan]], np.float32)
  traj = Trajectory.create(np.ones((4, 2), np.int32), rewards=jnp.asarray(rewards),
                           group_ids=np.asarray([0, 0, 1, 1]))
  ctx = tbase.Context(step=0)
  names = ("correct", "reward_model")
  t = rm.filter_transform(names, threshold=0.2)
  out, _, m = t.update(traj, t.init(), ctx)
  np.testing.assert_array_equal(np.asarray(out.valid), [False, True, True, False])
  assert float(m["filter/frac_kept"]) == pytest.approx(0.5)
  np.testing.assert_array_equal(np.asarray(out.rewards), np.asarray(traj.rewards))
  t = rm.filter_transform(names, top_k=1)
  out, _, _ = jax.jit(lambda x: t.update(x, t.init(), ctx))(traj)
  np.testing.assert_array_equal(np.asarray(out.valid), [False, True, True, False])
  with pytest.raises(ValueError, match="not a reward column"):
    rm.filter_transform(("correct",), top_k=1)
  with pytest.raises(ValueError, match="threshold and/or top_k"):
    rm.filter_transform(names)


def _candidates(tasks):
  texts = [[corrupt(t.target), t.target, "0", "1"] for t in tasks]
  correct = np.asarray([[0.0, 1.0, float(t.target == "0"), float(t.target == "1")]
                        for t in tasks], np.float32)
  return tt.Candidates(tasks=list(tasks), texts=texts,
                       answers=[[None, t.target, "0", "1"] for t in tasks],
                       correct=correct, lengths=np.full(correct.shape, 2),
                       scores={})


def test_selector_fills_scores_and_picks_by_them(tiny, trained):
  tok, _, _, tasks = tiny
  rmodel, _, res = trained
  c = _candidates(tasks[:8])
  with pytest.raises(KeyError, match="no score 'reward_model'"):
    tt.best_of_n("reward_model")(c, 3)
  params = res["bradley_terry"].params
  rm.fill_scores(c, rmodel, params, tok, max_len=10)
  assert c.scores["reward_model"].shape == (8, 4)
  np.testing.assert_allclose(
      c.scores["reward_model"][:, 1],
      rm.score_texts(rmodel, params, tok, [t.prompt for t in tasks[:8]],
                     [t.target for t in tasks[:8]], max_len=10), rtol=1e-5, atol=1e-6)
  # The trained RM prefers the right answer to the corrupted one.
  assert (c.scores["reward_model"][:, 1] > c.scores["reward_model"][:, 0]).all()
  sel = rm.selectors_with_rm()
  assert set(tt.DEFAULT_SELECTORS) < set(sel) and "reward_model" in sel
  assert "reward_model" not in tt.DEFAULT_SELECTORS     # defaults unchanged
  # Hand scores: the selector is argmax of the RM column among the first k.
  c.scores["reward_model"] = np.tile(np.asarray([[0.2, 0.1, 0.9, np.nan]]), (8, 1))
  np.testing.assert_array_equal(sel["reward_model"](c, 2), np.zeros(8))
  np.testing.assert_array_equal(sel["reward_model"](c, 4), np.full(8, 2))
  rows = tt.sweep(c, ks=[2], selectors={"reward_model": sel["reward_model"]})
  assert rows[0]["accuracy"] == pytest.approx(0.0)
  only = rm.selectors_with_rm({"first": tt.first}, name="orm")
  assert set(only) == {"first", "orm"}


def test_save_and_load_round_trip(tiny, trained, tmp_path):
  tok, _, _, tasks = tiny
  rmodel, _, res = trained
  params = res["pointwise"].params
  d = rm.save(str(tmp_path / "rm"), rmodel, params, kind="pointwise",
              meta={"steps": 40})
  model2, params2, info = rm.load(d)
  assert info["kind"] == "pointwise" and info["steps"] == 40
  assert model2.config == rmodel.config
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  prompts = [t.prompt for t in tasks[:8]]
  np.testing.assert_allclose(
      rm.score_texts(model2, params2, tok, prompts, [t.target for t in tasks[:8]],
                     max_len=10),
      rm.score_texts(rmodel, params, tok, prompts, [t.target for t in tasks[:8]],
                     max_len=10), rtol=1e-6)
  # The params directory reads like any params_dir (warm start layout).
  src = run_workdir.params_source(str(tmp_path / "rm" / "params"))
  again, step = run_workdir.restore_params(src, rmodel.abstract_params())
  assert step == 0
  with pytest.raises(ValueError, match="already holds"):
    rm.save(d, rmodel, params, kind="pointwise")
  with pytest.raises(ValueError, match="kind must be"):
    rm.save(str(tmp_path / "x"), rmodel, params, kind="rank")
  with pytest.raises(FileNotFoundError, match="reward_model.json"):
    rm.load(str(tmp_path / "nothing"))
