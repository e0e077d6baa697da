"""Easy-to-hard self-improvement: majority vote + length filter, level schedule."""

import pytest

from jaxsi import spec
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import easy_to_hard
from jaxsi.methods import self_training_common as common


def rec(tid, s, completion, answer, correct, d=3):
  return dict(task_id=tid, prompt="q" + tid, sample=s, completion=completion,
              answer=answer, correct=correct, difficulty=d)


RECORDS = [
    # a: 3/4 agree on 1234 (correct), label = first completion giving it.
    rec("a", 0, "4321", "1234", True), rec("a", 1, "5321", "1235", False),
    rec("a", 2, "4321", "1234", True), rec("a", 3, "4321", "1234", True),
    # b: 2/4 agree on a wrong, short answer (truncated: length 3).
    rec("b", 0, "999", "999", False), rec("b", 1, "999", "999", False),
    rec("b", 2, "1000", "0001", True), rec("b", 3, "2000", "0002", False),
    # c: no agreement (all different).
    rec("c", 0, "1111", "1111", True), rec("c", 1, "2222", "2222", False),
    rec("c", 2, "3333", "3333", False), rec("c", 3, None or "", None, False),
    # d: 4/4 agree, length 4.
    rec("d", 0, "8765", "5678", True), rec("d", 1, "8765", "5678", True),
    rec("d", 2, "8765", "5678", True), rec("d", 3, "8765", "5678", True),
]


def test_majority_vote_only():
  kept, m = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=False)
  assert [(r["task_id"], r["completion"]) for r in kept] == [
      ("a", "4321"), ("b", "999"), ("d", "8765")]
  assert m["voted"] == 4 and m["kept"] == 3 and m["problems"] == 4
  assert m["label_accuracy"] == pytest.approx(2 / 3)
  # Unfiltered majority labels: a ✓, b ✗, c (tie → first, "1111") ✓, d ✓.
  assert m["unfiltered_label_accuracy"] == pytest.approx(3 / 4)
  kept, _ = common.majority_filter(RECORDS, min_agreement=0.75, length_filter=False)
  assert [r["task_id"] for r in kept] == ["a", "d"]


def test_length_filter_drops_the_truncated_label():
  kept, m = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=True)
  assert [r["task_id"] for r in kept] == ["a", "d"]        # modal length 4; b has 3
  assert m["label_accuracy"] == 1.0
  kept, _ = common.majority_filter(RECORDS, min_agreement=0.5, length_filter=True,
                                   length_tolerance=1)
  assert [r["task_id"] for r in kept] == ["a", "b", "d"]


def test_levels_and_unfiltered_select():
  pool = tasks_lib.make_tasks("addition", 12, difficulty=[1, 2, 3, 4], seed=0)
  m = easy_to_hard.easy_to_hard(start_difficulty=2)
  assert {t.difficulty for t in m.problems(1, pool)} == {3}
  assert {t.difficulty for t in m.problems(2, pool)} == {4}
  with pytest.raises(ValueError, match="difficulty 5"):
    m.problems(3, pool)
  assert m.accumulate and m.train_from == "current" and m.include_labeled
  raw = easy_to_hard.easy_to_hard(start_difficulty=2, filtering=False)
  examples, _, metrics = raw.select(RECORDS, {}, None)
  assert [e["completion"] for e in examples] == ["4321", "999", "1111", "8765"]
  assert metrics["label_accuracy"] == pytest.approx(3 / 4)
  examples, _, metrics = m.select(RECORDS, {}, None)
  assert [e["task_id"] for e in examples] == ["a", "d"]


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/easy_to_hard.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  assert gin.query_parameter("%METHOD").scoped_configurable_fn().name == "easy_to_hard"
  gin.clear_config()


def test_voting_across_independently_initialised_models(tmp_path):
  """vote_models=3: two peers get their own warm start and M-steps (stored per
  round), and every peer's greedy answer is a vote in the round's records."""
  import jax
  import numpy as np
  from jaxsi.data import char_tokenizer
  from jaxsi.models import config as mcfg
  from jaxsi.models import model as mmodel
  from jaxsi.training import checkpoint_pool
  from jaxsi.training import round_store
  from jaxsi.training import rounds

  tok = char_tokenizer.CharTokenizer()
  tasks = tasks_lib.make_tasks("addition", 24, difficulty=[1, 2, 3], seed=0)
  labeled = [t for t in tasks if t.difficulty == 1]
  unlabeled = [t for t in tasks if t.difficulty > 1]
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=32)
  model, params = mmodel.init(cfg, jax.random.key(0))
  config = rounds.RoundsConfig(rounds=2, warm_start_steps=3, steps_per_round=2,
                               batch_size=8, max_len=16, max_new_tokens=4,
                               rollout_batch=16, chunk_size=64, save_every=10)
  method = easy_to_hard.easy_to_hard(start_difficulty=1,
                                     rollout=spec.RolloutSpec(n=2, temperature=0.7),
                                     vote_models=3, min_agreement=0.0)
  recs = rounds.run_rounds(method=method, model=model, init_params=params, tokenizer=tok,
                           labeled=labeled, unlabeled=unlabeled, test=unlabeled[:4],
                           workdir=str(tmp_path), config=config, verbose=False)
  assert [r["round"] for r in recs] == [0, 1, 2]
  chunk = round_store.read_json(str(tmp_path / "round_001/chunks/chunk_00000.json"))["records"]
  from jaxsi.methods import self_training_common as common
  per_task = common.group_by_task(chunk)
  for group in per_task.values():
    # main greedy first, 2 main samples, then one greedy vote per peer
    assert [r["voter"] for r in group] == [0, 0, 0, 1, 2]
    assert [r["sample"] for r in group] == [0, 1, 2, 3, 4]
  for i in (1, 2):
    pool = checkpoint_pool.CheckpointPool(str(tmp_path / f"peers/model_{i}/pool"))
    # round 2 sampled with the peers of round 1: both rounds are stored
    assert pool.rounds() == [0, 1]
    p1 = pool.params(1, like=params)
    pool.close()
  main0 = checkpoint_pool.CheckpointPool(str(tmp_path / "pool"))
  m0 = main0.params(0, like=params)
  main0.close()
  # independent initialisation: the peer differs from the main model
  leaf = lambda p: np.asarray(jax.tree.leaves(p)[0])
  assert not np.allclose(leaf(p1), leaf(m0))
  with pytest.raises(ValueError, match="vote_models"):
    easy_to_hard.easy_to_hard(start_difficulty=1, vote_models=0)
