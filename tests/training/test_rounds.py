"""The rounds loop: disk-backed resumable data, exact resume, accumulation."""

import json
import os

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import rest_em
from jaxsi.methods import self_training_common as common
from jaxsi.methods import rft
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import checkpoint_pool
from jaxsi.training import fit
from jaxsi.training import round_fit
from jaxsi.training import round_store
from jaxsi.training import rounds
from jaxsi.training import rounds_run

CONFIG = rounds.RoundsConfig(
    rounds=2, warm_start_steps=4, steps_per_round=4, batch_size=8, max_len=16,
    max_new_tokens=3, rollout_batch=16, chunk_size=4, save_every=2, seed=0)


class Interrupt(Exception):
  pass


@pytest.fixture(scope="module")
def setup():
  tok = char_tokenizer.CharTokenizer()
  pool, test = tasks_lib.make_train_test("addition", n_train=28, n_test=8,
                                         difficulty=1, seed=0)
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  return dict(tokenizer=tok, labeled=pool[:16], unlabeled=pool[16:], test=test,
              model=model, init_params=params)


def _run(setup, workdir, callback=None, method=None):
  return rounds.run_rounds(
      method=method or rest_em.rest_em(rollout=spec.RolloutSpec(n=2, temperature=1.0),
                                       max_per_prompt=2),
      callback=callback, workdir=str(workdir), config=CONFIG, verbose=False,
      **setup)


def _files(workdir, r):
  d = os.path.join(workdir, f"round_{r:03d}")
  chunks = sorted(c for c in os.listdir(os.path.join(d, "chunks")) if c.endswith(".json"))
  return ([json.load(open(os.path.join(d, "chunks", c))) for c in chunks],
          json.load(open(os.path.join(d, "selected.json"))))


def _strip(recs):
  return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]


def test_resume_mid_round_loses_and_duplicates_nothing(setup, tmp_path):
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
  ref = _run(setup, ref_dir)
  assert [r["round"] for r in ref] == [0, 1, 2]

  def stop_in_generation(event, **info):
    if event == "chunk" and info["round"] == 1 and info["chunk"] == 1:
      raise Interrupt()

  def stop_in_training(event, **info):
    if event == "train_step" and info["tag"] == "round2" and info["position"] == 3:
      raise Interrupt()

  with pytest.raises(Interrupt):
    _run(setup, run_dir, stop_in_generation)
  # Two of three chunks of round 1 are on disk, nothing more.
  # (each chunk: its Trajectory, then its records)
  assert sorted(os.listdir(run_dir / "round_001" / "chunks")) == [
      "chunk_00000.json", "chunk_00000.npz", "chunk_00001.json", "chunk_00001.npz"]
  with pytest.raises(Interrupt):
    _run(setup, run_dir, stop_in_training)
  got = _run(setup, run_dir)
  assert _strip(got) == _strip(ref)
  for r in (1, 2):
    chunks, selected = _files(str(run_dir), r)
    ref_chunks, ref_selected = _files(str(ref_dir), r)
    assert chunks == ref_chunks and selected == ref_selected
    recs = [x for c in chunks for x in c["records"]]
    keys = [(x["task_id"], x["sample"]) for x in recs]
    assert len(keys) == len(set(keys)) == 12 * 2   # every problem × n, once
  like = setup["init_params"]
  p_ref = checkpoint_pool.CheckpointPool(str(ref_dir / "pool"))
  p_run = checkpoint_pool.CheckpointPool(str(run_dir / "pool"))
  assert p_run.rounds() == [0, 1, 2]
  for r in (0, 1, 2):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 p_ref.params(r, like=like), p_run.params(r, like=like))
  # Rounds really changed the model.
  a, b = p_run.params(0, like=like), p_run.params(2, like=like)
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  # A finished run is not rerun.
  assert _strip(_run(setup, run_dir, stop_in_generation)) == _strip(ref)
  p_ref.close(); p_run.close()


def test_accumulation_and_train_from(setup, tmp_path):
  seen = []

  def select(records, plan, ctx):
    del plan, ctx
    # One fixed example per round, tagged by the round of the generating model.
    return [dict(prompt=records[0]["prompt"], completion="1", task_id=f"x{len(seen)}")], [], {}

  def sample_chunk(ctx, tasks, plan):
    seen.append(ctx.round)
    return [dict(task_id=t.id, prompt=t.prompt, sample=0, completion="", answer=None,
                 correct=False, difficulty=1) for t in tasks]

  method = spec.RoundsMethod(name="acc", sample_chunk=sample_chunk, select=select,
                               accumulate=True, include_labeled=False,
                               problems=lambda r, un: un[:4])
  recs = _run(setup, tmp_path / "acc", method=method)
  assert [r["train_size"] for r in recs] == [16, 1, 2]   # data accumulates
  assert [r["candidates"] for r in recs[1:]] == [4, 4]
  with pytest.raises(ValueError, match="train_from"):
    spec.RoundsMethod(name="bad", sample_chunk=sample_chunk, select=select,
                        train_from="best")


def test_store_records_are_unique(tmp_path):
  store = round_store.RoundStore(str(tmp_path))
  store.add_record({"round": 0})
  with pytest.raises(ValueError, match="already recorded"):
    store.add_record({"round": 0})
  np.testing.assert_array_equal(fit.tile_to(3, 7), [0, 1, 2, 0, 1, 2, 0])


def test_gin_files_launch_rounds_methods(tmp_path):
  gin = pytest.importorskip("gin")
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "methods"
  for name in ("star", "rft", "rest_em", "bstar", "vstar", "sharpening", "easy_to_hard"):
    gin.clear_config()
    gin.parse_config_file(str(root / f"{name}.gin"))
    main = gin.query_parameter("%MAIN").scoped_configurable_fn   # as jaxsi.launch
    config = main(workdir=str(tmp_path / name), dry_run=True)
    assert isinstance(config, rounds.RoundsConfig)
    assert gin.query_parameter("%METHOD").scoped_configurable_fn().name == name
  gin.clear_config()


TINY = dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64,
            max_seq_len=64)


def test_rounds_run_control_report_and_resume(tmp_path):
  kw = dict(workdir=str(tmp_path), method=rft.rft(rollout=spec.RolloutSpec(n=2, temperature=1.0),
                                                  max_per_prompt=1),
            method_overrides={"train_from": "current"}, difficulty=[1], n_labeled=16,
            n_unlabeled=8, n_test=8, model_overrides=TINY, control=True,
            rounds_config=dict(rounds=2, warm_start_steps=4, steps_per_round=4,
                               batch_size=8, max_len=16, max_new_tokens=3,
                               rollout_batch=16, chunk_size=4, save_every=2))
  recs = rounds_run.run(**kw)
  assert [r["round"] for r in recs] == [0, 1, 2]
  control = round_store.RoundStore(str(tmp_path / rounds_run.CONTROL_DIR)).records()
  assert control[0]["test_pass1"] == recs[0]["test_pass1"]   # one shared warm start
  # The control samples nothing and trains the same steps on the labeled set only.
  assert [(r["candidates"], r["selected"], r["train_size"], r["train_steps"])
          for r in control[1:]] == [(0, 0, 16, 4)] * 2
  assert [r["candidates"] for r in recs[1:]] == [16, 16]
  table = (tmp_path / "results.md").read_text().splitlines()
  assert "control (labeled only)" in table[0] and len(table) == 5
  assert (tmp_path / "accuracy.png").exists()
  # A finished run (and its control) is not rerun.
  assert rounds_run.run(**kw) == recs
  assert round_store.RoundStore(str(tmp_path / rounds_run.CONTROL_DIR)).records() == control


def test_labeled_only_needs_the_labeled_set():
  with pytest.raises(ValueError, match="without the labeled set"):
    rounds.labeled_only(rest_em.rest_em(include_labeled=False))
  control = rounds.labeled_only(rest_em.rest_em())
  assert (control.name, control.train_from) == ("rest_em_labeled_only", "base")
  assert control.select([], {}, None) == ([], [], {})


def test_quickstart_gin_is_rft_in_rounds(tmp_path, monkeypatch):
  """quickstart.gin: RFT (4 samples at T = 1, one kept per problem) from the current model."""
  gin = pytest.importorskip("gin")
  from jaxsi import launch  # pylint: disable=g-import-not-at-top  (needs gin)
  calls = []

  def fake_run_rounds(**kw):
    calls.append(kw)
    return [dict(round=0, test_pass1=0.25, test_by_difficulty={}, seconds=1.0)]

  monkeypatch.setattr(rounds, "run_rounds", fake_run_rounds)
  gin.clear_config()
  try:
    launch.parse_config(["quickstart.gin"], ["rounds_run.run.plot = False"])
    main = launch.main_function()
    config = main(workdir=str(tmp_path), dry_run=True)
    assert isinstance(config, rounds.RoundsConfig) and config.rounds >= 2
    assert [gin.query_parameter(f"spec.RolloutSpec.{k}") for k in
            ("n", "temperature")] == [4, 1.0]
    assert gin.query_parameter("rft.rft.max_per_prompt") == 1
    main(workdir=str(tmp_path))
  finally:
    gin.clear_config()
  (kw,) = calls
  method = kw["method"]
  assert (method.name, method.train_from, method.accumulate, method.include_labeled) == (
      "rft", "current", False, True)
  assert (len(kw["labeled"]), len(kw["unlabeled"]), len(kw["test"])) == (2000, 3000, 512)
  assert "| warm start | 0.250 |" in (tmp_path / "results.md").read_text()


def test_fit_sft_refuses_a_longer_runs_checkpoint(setup, tmp_path):
  kw = dict(model=setup["model"], params=setup["init_params"],
            tokenizer=setup["tokenizer"],
            examples=common.task_examples(setup["labeled"]), config=CONFIG,
            ckpt_dir=str(tmp_path / "sft"), seed=0)
  p4, _ = round_fit.fit_sft(steps=4, **kw)   # leaves its step-2 checkpoint behind
  again, _ = round_fit.fit_sft(steps=4, **kw)  # resumes from step 2: same result
  for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="checkpoint at step 2 > steps=1"):
    round_fit.fit_sft(steps=1, **kw)
