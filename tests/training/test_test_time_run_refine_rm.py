"""The test-time launcher's self-refine rows and reward-model selector."""

from __future__ import annotations

import json
import os

import jax
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import arguments
from jaxsi.training import reward_model
from jaxsi.training import test_time_run

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
        "head_dim": 16, "d_ff": 64}
KW = dict(model_overrides=TINY, n_tasks=3, ns=(1, 2), window=1,
          max_new_tokens=3, batch_size=8, selectors=("first", "oracle"),
          policies=())


def _saved_rm(path, vocab_size):
  cfg = mcfg.get_config("tiny", vocab_size=vocab_size, value_head=True, **TINY)
  model, params = mmodel.init(cfg, jax.random.key(5))
  return reward_model.save(str(path), model, params, kind="bradley_terry")


def test_refine_rows_and_reward_model_selector(tmp_path):
  rm_dir = _saved_rm(tmp_path / "rm", char_tokenizer.CharTokenizer().vocab_size)
  out = test_time_run.run(workdir=str(tmp_path / "tt"), refine=("iort", "progco"),
                          refine_turns=2, reward_model_dir=rm_dir, **KW)
  got = {(r["method"], r["turns"]) for r in out["refine"]}
  assert got == {("iort", 1), ("iort", 2), ("progco", 1), ("progco", 2)}
  for r in out["refine"]:
    # Every model turn generates 1..max_new_tokens (3) tokens.
    assert 0.0 <= r["accuracy"] <= 1.0
    assert 1.0 <= r["tokens_per_problem"] <= 3 * r["model_turns"], r
  # One answer turn is plain greedy generation for every loop.
  assert len({r["accuracy"] for r in out["refine"] if r["turns"] == 1}) == 1
  fixed = {(r["selector"], r["k"]): r["accuracy"] for r in out["fixed"]}
  # Best-of-1 by the RM is the first sample; best-of-2 is at most pass@2.
  assert fixed[("reward_model", 1)] == fixed[("first", 1)]
  assert fixed[("reward_model", 2)] <= fixed[("oracle", 2)]
  md = (tmp_path / "tt" / "test_time.md").read_text()
  assert "Self-refine loops" in md and "| iort | 2 |" in md and "| reward_model |" in md
  with open(os.path.join(tmp_path, "tt", "test_time.json"), encoding="utf-8") as f:
    assert len(json.load(f)["refine"]) == 4


@pytest.mark.parametrize("kw, match", [
    (dict(refine=("nope",)), r"refine: unknown method 'nope'"),
    (dict(refine=("iort",), refine_turns=0), r"refine_turns = 0"),
    (dict(reward_model_dir="/nonexistent/rm"), r"reward_model_dir = '/nonexistent/rm'"),
])
def test_bad_refine_and_rm_bindings(tmp_path, kw, match):
  with pytest.raises(arguments.ArgumentError, match=match):
    test_time_run.run(workdir=str(tmp_path), model_overrides=TINY, n_tasks=1, **kw)


def test_reward_model_with_another_vocabulary_is_refused(tmp_path):
  rm_dir = _saved_rm(tmp_path / "rm", 7)
  with pytest.raises(arguments.ArgumentError, match="vocabulary"):
    test_time_run.run(workdir=str(tmp_path / "tt"), reward_model_dir=rm_dir, **KW)


def test_judge_selector_rows(tmp_path):
  out = test_time_run.run(workdir=str(tmp_path / "tt"), judge_format="score_1_5",
                          judge_max_new_tokens=2, **KW)
  fixed = {(r["selector"], r["k"]): r for r in out["fixed"]}
  # Best-of-1 by the judge is the first sample, but it also paid for 1 judgment.
  assert fixed[("judge", 1)]["accuracy"] == fixed[("first", 1)]["accuracy"]
  extra = out["judge"]["judge_tokens_per_problem"] / 2
  assert abs(fixed[("judge", 1)]["tokens_per_problem"]
             - fixed[("first", 1)]["tokens_per_problem"] - extra) < 1e-6
  assert sum(out["judge"][f"judge/{s}"] for s in ("ok", "unparsed", "over_budget")) == 3 * 2
  assert "Judge (score_1_5, greedy, 2 tokens)" in (tmp_path / "tt" / "test_time.md").read_text()
  with pytest.raises(arguments.ArgumentError, match="pairwise"):
    test_time_run.run(workdir=str(tmp_path), judge_format="pairwise", **KW)
  with pytest.raises(arguments.ArgumentError, match="judge_format"):
    test_time_run.run(workdir=str(tmp_path), judge_format="nope", **KW)
