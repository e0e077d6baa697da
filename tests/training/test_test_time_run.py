"""The test-time launcher: bad bindings fail first, a params checkpoint is read."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from jaxsi.data import char_tokenizer
from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.training import arguments
from jaxsi.training import checkpoint as checkpoint_lib
from jaxsi.training import test_time_run

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
        "head_dim": 16, "d_ff": 64}


@pytest.mark.parametrize("kw, match", [
    (dict(selectors=("first", "nope")), "unknown selector 'nope'"),
    (dict(policies=("esc", "sprt")), "unknown policy 'sprt'"),
    (dict(ns=(1, 3), window=2), "window = 2: must divide max"),
    (dict(ns=(1, 16), window=2, batch_size=8), "batch_size = 8"),
    (dict(tasks="csv:x"), "expected synthetic:NAME"),
    (dict(hf_checkpoint="a", params_dir="b"), "not both"),
])
def test_bad_bindings_name_the_binding(tmp_path, kw, match):
  with pytest.raises(arguments.ArgumentError, match=match):
    test_time_run.run(workdir=str(tmp_path), model_overrides=TINY, **kw)


def test_missing_params_dir(tmp_path):
  with pytest.raises(arguments.ArgumentError, match="no checkpoint there"):
    test_time_run.run(workdir=str(tmp_path), params_dir=str(tmp_path / "none"),
                      model_overrides=TINY, n_tasks=1)


def test_reads_params_dir(tmp_path):
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, **TINY)
  _, params = mmodel.init(cfg, jax.random.key(7))   # not the seed-0 init
  ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "p"), keep=1, async_save=False)
  ckpt.save(0, params, force=True)
  ckpt.close()
  _, _, loaded = test_time_run._load_model(None, str(tmp_path / "p"), "tiny",
                                            TINY, 0)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  out = test_time_run.run(workdir=str(tmp_path / "w"), params_dir=str(tmp_path / "p"),
                          model_overrides=TINY, n_tasks=3, ns=(1, 2), window=1,
                          max_new_tokens=3, batch_size=8, plot=False,
                          selectors=("first", "oracle"), policies=("esc", "fixed"))
  assert [r["selector"] for r in out["fixed"]] == ["first", "oracle"] * 2
  fixed = {r["policy"]: r for r in out["policies"]}["fixed"]
  assert fixed["samples_per_problem"] == 2.0
  with open(os.path.join(tmp_path, "w", "test_time.json"), encoding="utf-8") as f:
    assert json.load(f)["n_tasks"] == 3
  assert "| esc |" in (tmp_path / "w" / "test_time.md").read_text()
