"""V-STaR: pair builder and best-of-N on hand cases; DPO verifier training."""

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.methods import self_training_common as common
from jaxsi.methods import vstar
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import fit
from jaxsi.training import round_context
from jaxsi.training import round_store
from jaxsi.training import rounds
from jaxsi.transforms import preference


def rec(tid, s, completion, correct):
  return dict(task_id=tid, prompt="q" + tid, sample=s, completion=completion,
              correct=correct, answer=completion, difficulty=1)


def test_build_pairs_hand_case():
  records = [rec("a", 0, "1", True), rec("a", 1, "2", False), rec("a", 2, "3", False),
             rec("a", 3, "2", False), rec("a", 4, "1", True),
             rec("b", 0, "5", True),                       # no incorrect → no pair
             rec("c", 0, "7", False), rec("c", 1, "8", True), rec("c", 2, "9", True),
             rec("c", 3, "6", True)]
  pairs = common.build_pairs(records, max_pairs_per_problem=4)
  assert [(p["task_id"], p["chosen"], p["rejected"]) for p in pairs] == [
      ("a", "1", "2"), ("a", "1", "3"),
      ("c", "8", "7"), ("c", "9", "7"), ("c", "6", "7")]
  assert pairs[0]["prompt"] == "qa"
  capped = common.build_pairs(records, max_pairs_per_problem=1)
  assert [(p["task_id"], p["chosen"], p["rejected"]) for p in capped] == [
      ("a", "1", "2"), ("c", "8", "7")]


def test_best_of_n_and_majority():
  scores = np.asarray([0.1, 0.9, 0.3, 2.0, 2.0, -1.0])
  correct = np.asarray([False, True, False, False, True, True])
  assert common.best_of_n_accuracy(scores, correct, 3) == pytest.approx(0.5)
  answers = ["1", "2", "2", None, "5", "5"]
  correct2 = np.asarray([True, False, False, False, True, True])
  assert common.majority_accuracy(answers, correct2, 3) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(1))
  return tok, model, params


def test_pair_batch_layout(tiny):
  tok, model, params = tiny
  from jaxsi.data import batching
  ch = batching.sft_arrays(tok, ["1+1=", "2+2="], ["2", "4"], max_len=10)
  rj = batching.sft_arrays(tok, ["1+1=", "2+2="], ["3", "5"], max_len=10)
  ch["ref_logprobs"] = np.zeros((2, 10), np.float32)
  rj["ref_logprobs"] = np.ones((2, 10), np.float32)
  traj = fit.pair_batch(ch, rj, np.asarray([1, 0]))
  np.testing.assert_array_equal(traj.pair_ids, [2, 3, 0, 1])
  np.testing.assert_array_equal(traj.extras[preference.IS_CHOSEN_KEY],
                                [True, True, False, False])
  np.testing.assert_array_equal(traj.tokens[0], ch["tokens"][1])
  np.testing.assert_array_equal(traj.tokens[2], rj["tokens"][1])
  assert float(traj.ref_logprobs[3].sum()) == 10.0


def test_dpo_verifier_learns_to_rank(tiny):
  tok, model, params = tiny
  pairs = [dict(prompt=f"{a}+{a}=", chosen=str(2 * a), rejected=str(2 * a + 1), task_id=str(a))
           for a in range(1, 9)]
  config = rounds.RoundsConfig(max_len=10, learning_rate=3e-3, warmup_steps=1)
  ctx = round_context.RoundContext(round=1, model=model, params=params, base_params=params,
                                   tokenizer=tok, rng=jax.random.key(0), pool=None,
                                   config=config, workdir="")
  vparams, metrics = vstar.train_verifier(ctx, pairs=pairs, steps=30, pairs_per_batch=8,
                                          beta=0.5, seed=0)
  assert metrics["rewards/accuracies"] > 0.9
  # The verifier score (Eq. 3) ranks chosen above rejected on the training pairs.
  from jaxsi.data import batching
  from jaxsi.trajectory import Trajectory
  arr = batching.sft_arrays(tok, [p["prompt"] for p in pairs] * 2,
                            [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                            max_len=10)
  traj = Trajectory.create(arr["tokens"], input_mask=arr["input_mask"],
                           loss_mask=arr["loss_mask"])
  s = vstar.verifier_scores(ctx, vparams, traj)
  assert np.all(s[:8] > s[8:])
  # The base model scores 0 against itself.
  np.testing.assert_allclose(vstar.verifier_scores(ctx, params, traj), 0.0,
                             atol=1e-5)


def test_select_and_gin():
  m = vstar.vstar()
  assert m.train_from == "base" and m.accumulate and m.after_round and m.evaluate
  records = [rec("a", 0, "1", True), rec("a", 1, "2", False)]
  examples, pairs, metrics = m.select(records, {}, None)
  assert len(examples) == 1 and len(pairs) == 1 and metrics["pairs"] == 1
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/vstar.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  assert gin.query_parameter("%METHOD").scoped_configurable_fn().name == "vstar"
  assert gin.query_parameter("vstar.vstar.verifier_tasks") == "unlabeled"
  gin.clear_config()
  with pytest.raises(ValueError, match="verifier_tasks"):
    vstar.vstar(verifier_tasks="labeled")


def test_pair_ranking_accuracy():
  scores = np.asarray([3.0, 1.0, 2.0, 5.0, 5.0, 0.0, 1.0, 2.0, 3.0])
  correct = np.asarray([True, False, False, True, False, False, True, True, True])
  # group 1: correct 3 > 1, 3 > 2 → 2/2; group 2: 5 vs 5 tie (½), 5 > 0 → 1.5/2;
  # group 3: no incorrect → no pairs.
  assert common.pair_ranking_accuracy(scores, correct, 3) == pytest.approx(3.5 / 4)
  assert np.isnan(common.pair_ranking_accuracy(scores[6:], correct[6:], 3))
  # reversing the score reverses the ranking
  assert common.pair_ranking_accuracy(-scores, correct, 3) == pytest.approx(0.5 / 4)


def test_build_pairs_all_pairs():
  records = [rec("a", 0, "1", True), rec("a", 1, "2", False), rec("a", 2, "3", False),
             rec("a", 3, "4", True), rec("a", 4, "2", False)]
  # linear pairing: max(2 correct, 2 distinct incorrect) = 2 pairs
  assert [(p["chosen"], p["rejected"]) for p in common.build_pairs(records)] == [
      ("1", "2"), ("4", "3")]
  # all pairs: 2 × 2, correct-major, capped
  allp = common.build_pairs(records, all_pairs=True)
  assert [(p["chosen"], p["rejected"]) for p in allp] == [
      ("1", "2"), ("1", "3"), ("4", "2"), ("4", "3")]
  assert len(common.build_pairs(records, all_pairs=True, max_pairs_per_problem=3)) == 3


def test_after_round_adds_the_ranked_generators_own_pairs(tiny, tmp_path):
  """verifier_tasks='unlabeled': round r's verifier data = E-step pairs of
  rounds 1..r plus pairs of the round-r generator's own samples on the run's
  unlabeled problems (stored, reused on resume)."""
  import os
  from jaxsi.data import tasks as tasks_lib
  from jaxsi.training import checkpoint_pool as pool_lib
  tok, model, params = tiny
  tasks = tasks_lib.make_tasks("addition", 16, difficulty=1, seed=3, reverse=True)
  m = vstar.vstar(rollout=spec.RolloutSpec(n=4, temperature=1.0), verifier_steps=3, pairs_per_batch=4,
                  verifier_tasks="unlabeled", max_pairs_per_problem=8)
  store = round_store.RoundStore(str(tmp_path))
  e_step = [dict(prompt="1+1=", chosen="2", rejected="3", task_id="x")]
  store.save(1, "selected.json", dict(examples=[], pairs=e_step, metrics={}))
  config = rounds.RoundsConfig(max_len=16, max_new_tokens=4, rollout_batch=64)
  pool = pool_lib.CheckpointPool(os.path.join(str(tmp_path), "pool"))
  ctx = round_context.RoundContext(round=1, model=model, params=params, base_params=params,
                                   tokenizer=tok, rng=jax.random.key(0), pool=pool,
                                   config=config, workdir=str(tmp_path),
                                   unlabeled=tuple(tasks))
  out = m.after_round(ctx, store)
  own = store.load(1, "verifier_samples.json")
  assert own is not None and out["own_generator_pairs"] == len(own["pairs"])
  assert out["verifier_pairs"] == len(e_step) + len(own["pairs"])
  by_prompt = {t.prompt: t for t in tasks}
  for p in own["pairs"]:
    t = by_prompt[p["prompt"]]
    assert t.verify(p["chosen"]) == 1.0 and t.verify(p["rejected"]) == 0.0
  assert 0.0 <= out["own_generator_sample_accuracy"] <= 1.0
  # the verifier exists now; a second call restores it without resampling
  assert m.after_round(ctx, store) == {"verifier": "restored"}
  pool.close()
