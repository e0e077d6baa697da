"""ScPO: vote counts, the method's composition, weighted pairs reaching the
DPO M-step, and one tiny round end to end (no gold label read)."""

import dataclasses
import math
import pathlib

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import scpo
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.rewards import stages
from jaxsi.training import round_fit
from jaxsi.training import round_store
from jaxsi.training import rounds

CONFIG = rounds.RoundsConfig(
    rounds=1, warm_start_steps=4, steps_per_round=2, batch_size=8, max_len=16,
    max_new_tokens=3, rollout_batch=16, chunk_size=4, save_every=100, seed=0,
    warmup_steps=0)


@pytest.fixture(scope="module")
def setup():
  tok = char_tokenizer.CharTokenizer()
  pool, test = tasks_lib.make_train_test("addition", n_train=24, n_test=4,
                                         difficulty=1, seed=0)
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  return dict(tokenizer=tok, labeled=pool[:16], unlabeled=pool[16:20], test=test,
              model=model, init_params=params)


def test_vote_counts_by_hand():
  # group 0: answers 7 7 8 None → votes 2 2 1 0; group 4: 3 3 → 2 2.
  v = scpo.vote_counts(["7", "7", "8", None, "3", "3"], np.asarray([0, 0, 0, 0, 4, 4]))
  np.testing.assert_array_equal(v, [2, 2, 1, 0, 2, 2])


def test_vote_count_reward_canonicalises_and_refuses_partial_groups(setup):
  t = setup["unlabeled"][0]
  gold = t.answer
  # "0<gold>" is the same number as gold (canonical answers are exact numbers).
  comps = [gold, "0" + gold, gold + "9", ""]
  inputs = stages.RewardInputs(tasks=[t] * 4, completions=comps,
                               group_ids=np.zeros(4, np.int32),
                               prompt_ids=np.zeros(4, np.int32), rows=np.arange(4))
  fn = scpo.vote_count_reward(group_size=4)
  np.testing.assert_array_equal(fn(inputs), [2, 2, 1, 0])
  with pytest.raises(ValueError, match="group 0 has 4 of 8"):
    scpo.vote_count_reward(group_size=8)(inputs)
  assert fn.names == ("votes",) and fn.takes_inputs


def test_scpo_composition_and_gin():
  m = scpo.scpo(rollout=spec.RolloutSpec(n=4), beta=0.2, nll_coef=0.5)
  assert m.objective == "dpo" and m.reference == "previous" and m.train_from == "current"
  assert m.objective_settings == dict(beta=0.2, loss_type=("sigmoid", "sft"),
                                      loss_weights=(1.0, 0.5))
  assert not m.include_labeled and m.select_is_transform
  assert scpo.scpo(nll_coef=0.0).objective_settings == dict(beta=0.1)
  with pytest.raises(ValueError, match="rollout.n"):
    scpo.scpo(rollout=spec.RolloutSpec(n=1))
  with pytest.raises(ValueError, match="nll_coef"):
    scpo.scpo(nll_coef=-1.0)
  gin = pytest.importorskip("gin")
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/scpo.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  built = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert built.name == "scpo" and built.rollout.spec.n == 8


def test_pair_weights_reach_the_dpo_m_step(setup):
  """Policy = reference at the first step, so each pair's DPO loss is log 2;
  with weights (0.5, 0) over the 2 pairs of the one batch the loss is
  (0.5·log 2 + 0·log 2)/2 = 0.25·log 2 (unweighted: log 2)."""
  tok, model, params = setup["tokenizer"], setup["model"], setup["init_params"]
  pairs = [dict(prompt="1+1=", chosen="2", rejected="3", weight=0.5, task_id="a"),
           dict(prompt="2+2=", chosen="4", rejected="5", weight=0.0, task_id="b")]
  fit = lambda ps: round_fit.fit_pairs(model=model, params=params, reference=params,
                                       tokenizer=tok, pairs=ps, steps=1, config=CONFIG,
                                       seed=0, pairs_per_batch=2, beta=0.1)[1]
  assert fit(pairs)["loss"] == pytest.approx(0.25 * math.log(2), rel=1e-5)
  unweighted = [{k: v for k, v in p.items() if k != "weight"} for p in pairs]
  assert fit(unweighted)["loss"] == pytest.approx(math.log(2), rel=1e-5)
  with pytest.raises(ValueError, match="pair 1 .* weight"):
    fit([pairs[0], dict(pairs[1], weight=-1.0)])


def test_one_scpo_round_builds_vote_weighted_pairs_without_labels(setup, tmp_path):
  n = 4
  method = scpo.scpo(rollout=spec.RolloutSpec(n=n, temperature=0.3))
  # A short warm start so that answers parse and sometimes repeat.
  config = dataclasses.replace(CONFIG, warm_start_steps=30)
  recs = rounds.run_rounds(method=method, workdir=str(tmp_path), config=config,
                           verbose=False, **setup)
  assert [r["round"] for r in recs] == [0, 1]
  store = round_store.RoundStore(str(tmp_path))
  stored = store.trajectory(1, 1)
  assert stored.reward_names == ("correct", "votes")
  votes = np.asarray(stored.traj.rewards)[:, 1].reshape(-1, n)
  sel = store.load(1, "selected.json")
  # Hand rule per problem: a pair iff some answer beats another in votes
  # (least-voted among parseable answers), w = (V+ − V−)/k.
  want = []
  for g in range(votes.shape[0]):
    v = votes[g]
    pos = v[v > 0]
    if pos.size and pos.max() > pos.min():
      want.append((pos.max() - pos.min()) / n)
  assert sorted(p["weight"] for p in sel["pairs"]) == pytest.approx(sorted(want))
  assert recs[1]["pairs"] == len(want)
  assert want, "no problem had a vote margin: the check would be vacuous"
  # The same pairs whatever the verifier says: flip the gold column.
  flipped = stored.traj.replace(rewards=np.stack(
      [1.0 - np.asarray(stored.traj.rewards)[:, 0], np.asarray(stored.traj.rewards)[:, 1]], 1))
  _, again, _ = rounds.select_with_transform(
      method.select, dataclasses.replace(stored, traj=flipped), setup["tokenizer"])
  assert again == sel["pairs"]


def _stored(tok, completions, votes, group_ids):
  """A hand-built stored round: row i's completion tokens under loss_mask."""
  from jaxsi.trajectory import Trajectory
  enc = [tok.encode(c) for c in completions]
  t = max(len(e) for e in enc)
  tokens = np.zeros((len(enc), t), np.int32)
  mask = np.zeros((len(enc), t), bool)
  for i, e in enumerate(enc):
    tokens[i, :len(e)] = e
    mask[i, :len(e)] = True
  g = np.asarray(group_ids, np.int32)
  traj = Trajectory.create(tokens, loss_mask=mask, group_ids=g, prompt_ids=g).replace(
      rewards=np.stack([np.zeros(len(enc)), np.asarray(votes)], 1).astype(np.float32))
  n = int(g.max()) + 1
  return round_store.StoredChunk(traj=traj, reward_names=("correct", "votes"),
                                 task_ids=[f"t{k}" for k in range(n)],
                                 prompt_texts=[f"p{k}" for k in range(n)])


def test_select_with_transform_carries_weights_and_new_batches(setup):
  tok = setup["tokenizer"]
  # Problem 0 (k=4): answers 5 5 5 6 → votes 3 3 3 1: pair "5" ≻ "6", w = 2/4.
  stored = _stored(tok, ["5", "5", "5", "6"], [3, 3, 3, 1], [0, 0, 0, 0])
  _, pairs, m = rounds.select_with_transform(scpo.scpo(rollout=spec.RolloutSpec(n=4)).select,
                                             stored, tok)
  assert pairs == [dict(prompt="p0", task_id="t0", chosen="5", rejected="6", weight=0.5)]
  assert m["pairs"] == 1
  # all_pairs returns a new batch; texts come from its rows: the 3 × "5" ≻ "6" pairs.
  from jaxsi.transforms import pairs as pairs_lib
  _, every, _ = rounds.select_with_transform(
      pairs_lib.all_pairs(max_pairs=4, reward_weights=(0.0, 1.0)), stored, tok)
  assert [(p["chosen"], p["rejected"], p["weight"]) for p in every] == [("5", "6", 1.0)] * 3
