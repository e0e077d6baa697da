"""Every notebook under notebooks/ runs (papermill, tiny parameters) and is stored clean.

The notebooks are executed in a fresh IPython kernel of this interpreter (a
kernel spec written to a tmp JUPYTER_PATH, so no system kernel is needed) on
the session's 8 fake CPU devices, with the tiny parameters below replacing
their ``parameters`` cell: the quickstart rounds (1 round of a 1-layer
model), GRPO on GSM8K (one iteration of a tiny random Qwen2-architecture
checkpoint on an 8-problem GSM8K file, both written here, on a 2 x 4 mesh),
the comparison of the two runs they leave behind, and the test-time scaling
curves (a 1-step warm start, N = 1, 2 on 3 problems); then `jaxsi eval
--workdir` on the quickstart run reproduces its last held-out pass@1. The tiny
settings are those of tests/test_recipes.py's quickstart, TPU-experiment and
test-time runs, and the kernels use the same persistent XLA cache, so
whichever test runs second reuses the other's compiled programs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
_TINY_MODEL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
               "head_dim": 16, "d_ff": 64}
# Colab opens a GitHub file at colab.research.google.com/github/OWNER/REPO/blob/BRANCH/PATH.
_COLAB_RE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+"
                       r"/blob/main/(notebooks/[\w.-]+\.ipynb)")


def _load(name):
  with open(NOTEBOOKS / name, encoding="utf-8") as f:
    return json.load(f)


def test_notebooks_exist_and_readme_names_them():
  assert {"quickstart_rounds.ipynb", "grpo_gsm8k_tpu.ipynb",
          "compare_runs.ipynb", "test_time_scaling.ipynb"} <= set(NAMES)
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  for name in NAMES:
    assert f"notebooks/{name}" in readme, name


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_with_parameters_and_colab_link(name):
  nb = _load(name)
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  for k, c in enumerate(code):
    assert c.get("outputs") == [], f"{name}: code cell {k} has stored outputs"
    assert c.get("execution_count") is None, f"{name}: code cell {k} was executed"
  tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
  assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
  text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
  links = _COLAB_RE.findall(text)
  assert links == [f"notebooks/{name}"], (name, links)  # its own path


def _tiny_qwen_files(root: pathlib.Path):
  """(checkpoint dir, GSM8K dir): a tiny HF checkpoint + BPE tokenizer, 8 problems."""
  tokenizers = pytest.importorskip("tokenizers")
  import jax  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from jaxsi.data import math_datasets  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  from jaxsi.models import hf  # pylint: disable=g-import-not-at-top
  from jaxsi.models import model as model_lib  # pylint: disable=g-import-not-at-top
  ckpt = root / "ckpt"
  ckpt.mkdir(parents=True)
  tk = tokenizers.Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(
      ["You are Qwen, created by Alibaba Cloud. You are a helpful assistant. "
       "Please reason step by step, and put your final answer within \\boxed{}. "
       "How many apples? 12 + 30 = 42"] * 4,
      trainers.BpeTrainer(vocab_size=300, show_progress=False,
                          special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tk.save(str(ckpt / "tokenizer.json"))
  (ckpt / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
  cfg = mcfg.get_config("tiny", vocab_size=320, qkv_bias=True, **_TINY_MODEL)
  _, params = model_lib.init(cfg, jax.random.key(0))
  hf.save_pretrained(str(ckpt), cfg, params)
  math_datasets.write_jsonl(
      [{"question": f"How many apples? {a} + 30", "answer": f"#### {a + 30}"}
       for a in range(8)], root / "gsm8k" / "train.jsonl")
  return str(ckpt), str(root / "gsm8k")


def _kernel(tmp_path, tmp_path_factory, monkeypatch) -> str:
  """A kernel spec for this interpreter in a tmp JUPYTER_PATH; the kernel gets
  this process's environment (8 fake CPU devices) and the XLA cache of
  tests/test_recipes.py (the same directory, shared by xdist workers)."""
  pytest.importorskip("ipykernel")
  spec = tmp_path / "jupyter" / "kernels" / "jaxsi-test"
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "jaxsi test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):  # .../pytest-N/popen-gwK
    base = base.parent
  cache = base / "recipes_xla_cache"
  cache.mkdir(exist_ok=True)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  return "jaxsi-test"


def test_notebooks_run_with_tiny_parameters(tmp_path, tmp_path_factory, monkeypatch):
  papermill = pytest.importorskip("papermill")
  pytest.importorskip("math_verify")
  kernel = _kernel(tmp_path, tmp_path_factory, monkeypatch)
  ckpt, gsm8k = _tiny_qwen_files(tmp_path / "files")
  rounds_dir, grpo_dir, cmp_dir, tt_dir = (str(tmp_path / d)
                                           for d in ("rft", "grpo", "cmp", "tt"))
  params = {
      "quickstart_rounds.ipynb": dict(
          workdir=rounds_dir, n_labeled=8, n_unlabeled=8, n_test=2,
          samples_per_problem=2, model_overrides=_TINY_MODEL,
          rounds_config={"rounds": 1, "warm_start_steps": 1, "steps_per_round": 1,
                         "batch_size": 4, "max_len": 24, "max_new_tokens": 4,
                         "rollout_batch": 16, "chunk_size": 8, "eval_n": 2,
                         "warmup_steps": 0},
          extra_bindings=["rounds_run.run.plot = False"], install=False),
      "grpo_gsm8k_tpu.ipynb": dict(
          hf_checkpoint=ckpt, data_path=gsm8k, workdir=grpo_dir, num_steps=1,
          mesh={"data": 2, "fsdp": 4, "tensor": 1},
          prompts_per_step=4, samples_per_prompt=2, max_new_tokens=4, prompt_len=128,
          dry_run_first=False, install=False, fetch_files=False,
          extra_bindings=[
              "dry_run.run_experiment.model_overrides = {}",
              "spec.OptimSpec.minibatches = 1",
              "dry_run.run_experiment.compiler_options = ("
              "('xla_backend_optimization_level', 0),"
              " ('xla_llvm_disable_expensive_passes', True))"]),
      "compare_runs.ipynb": dict(
          workdirs=[rounds_dir, grpo_dir], labels=["rft", "grpo"], sweep_dir=None,
          metrics=["reward/mean", "loss", "warm_start/loss"], smooth=1,
          out_dir=cmp_dir),
      # tests/test_recipes.py's tiny test-time settings (its compiled sampler).
      "test_time_scaling.ipynb": dict(
          workdir=tt_dir, params_dir=None, model_overrides=_TINY_MODEL, n_labeled=8,
          warm_start_steps=1, warm_start_batch=4, n_tasks=3, ns=[1, 2], window=2,
          max_new_tokens=3, batch_size=8, install=False),
  }
  assert set(params) == set(NAMES), "give every notebook tiny parameters here"
  for name in ("quickstart_rounds.ipynb", "grpo_gsm8k_tpu.ipynb", "compare_runs.ipynb",
               "test_time_scaling.ipynb"):
    out = tmp_path / f"executed_{name}"
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params[name],
                               kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False,
                               log_output=False)
    executed = json.loads(out.read_text(encoding="utf-8"))
    injected = [c for c in executed["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, f"{name}: the tiny parameters were not injected"
  with open(os.path.join(rounds_dir, "rounds.json"), encoding="utf-8") as f:
    assert [r["round"] for r in json.load(f)] == [0, 1]
  assert os.path.exists(os.path.join(rounds_dir, "notebook_rounds.png"))
  assert os.path.exists(os.path.join(grpo_dir, "notebook_grpo.png"))
  table = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
  rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
  assert set(rows) == {"rft", "grpo"}, table
  assert "held-out pass@1 after" in table.splitlines()[0]
  assert os.path.exists(tmp_path / "cmp" / "comparison.png")
  _eval_rounds_workdir(rounds_dir, tmp_path)
  # The test-time notebook: its own warm start, both tables, its plot.
  assert os.path.isdir(os.path.join(tt_dir, "warm_start"))
  with open(os.path.join(tt_dir, "test_time.json"), encoding="utf-8") as f:
    tt = json.load(f)
  assert tt["n_tasks"] == 3 and tt["ns"] == [1, 2]
  assert {(r["selector"], r["k"]) for r in tt["fixed"]} >= {("majority", 2), ("first", 1)}
  assert [r["policy"] for r in tt["policies"]] == ["esc", "adaptive_consistency", "dsc"]
  assert os.path.exists(os.path.join(tt_dir, "notebook_test_time.png"))


def _eval_rounds_workdir(rounds_dir, tmp_path):
  """``jaxsi eval --workdir`` on the quickstart notebook's run reproduces its
  last held-out greedy pass@1 (same params, held-out split, budget, batch)."""
  from jaxsi import cli  # pylint: disable=g-import-not-at-top
  out = tmp_path / "eval_rounds.json"
  assert cli.main(["eval", f"--workdir={rounds_dir}", "--batch_size=16",
                   f"--output={out}"]) == 0
  with open(os.path.join(rounds_dir, "rounds.json"), encoding="utf-8") as f:
    last = json.load(f)[-1]
  got = json.loads(out.read_text(encoding="utf-8"))
  assert got["overall"]["num_tasks"] == 2
  assert got["overall"]["pass@1"] == pytest.approx(last["test_pass1"])
  assert {d: v["pass@1"] for d, v in got["by_difficulty"].items()} == pytest.approx(
      last["test_by_difficulty"])
