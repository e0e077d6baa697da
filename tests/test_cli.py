"""The ``jaxsi`` command: every subcommand's help, the launcher, list, bench, eval, compare."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxsi import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, expected", [
    ([], ["run", "dry-run", "test-time", "sweep", "compare", "eval", "bench", "list"]),
    (["sweep"], ["--parallel", "--slurm", "--only", "--summary", "--trial", "resume"]),
    (["compare"], ["WORKDIR", "--metric", "--out", "compare.png"]),
    (["eval"], ["--hf_checkpoint", "--workdir", "--step", "--tasks", "synthetic:NAME", "heldout",
               "pass@k", "optimizer state"]),
    (["test-time"], ["--run", "--params_dir", "--hf_checkpoint", "test_time.png",
                     "experiments/test_time_addition.gin", "ns: sample budgets N",
                     "policies: names of"]),
    (["bench"], ["benchmarks/", "experiments/"]),
    (["list"], ["methods", "models", "tasks", "gin"]),
])
def test_help_of_each_command(command, expected, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(command + ["--help"])
  assert e.value.code == 0
  out = " ".join(capsys.readouterr().out.split())
  for word in expected:
    assert word in out, (command, word)


@pytest.mark.parametrize("command", ["run", "dry-run"])
def test_launcher_help(command, capsys):
  assert cli.main([command, "--help"]) == 0
  out = capsys.readouterr().out
  assert f"usage: jaxsi {command} --gin_file=FILE" in out
  assert "--allow_config_change" in out and "MAIN" in out


def test_run_and_dry_run_are_the_launcher(tmp_path, capsys):
  gin = tmp_path / "fake.gin"
  gin.write_text("from __gin__ import dynamic_registration\n"
                 "from tests.sweep import fake_trial\n"
                 "MAIN = @fake_trial.run\n")
  wd = tmp_path / "wd"
  assert cli.main(["run", f"--gin_file={gin}", f"--workdir={wd}",
                   "--gin.fake_trial.run.value=2.0"]) == 0
  assert json.load(open(wd / "results.json"))["score"] == 2.0
  assert "fake_trial.run.value = 2.0" in (wd / "config.gin").read_text()
  dry = tmp_path / "dry"
  assert cli.main(["dry-run", f"--gin_file={gin}", f"--workdir={dry}"]) == 0
  assert (dry / "dry_run.txt").read_text() == "dry"
  assert not (dry / "results.json").exists()
  capsys.readouterr()
  # A configuration error: exit status 2 and the launcher's message.
  assert cli.main(["run", "--gin_file=no_such.gin", f"--workdir={wd}"]) == 2
  assert "gin file 'no_such.gin' not found" in capsys.readouterr().err


def test_python_m_jaxsi_launch_still_works(tmp_path):
  r = subprocess.run([sys.executable, "-m", "jaxsi.launch", "--gin_file=no_such.gin",
                      f"--workdir={tmp_path}"], capture_output=True, text=True,
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert r.returncode == 2 and "gin file 'no_such.gin' not found" in r.stderr


def test_list_reads_the_registries(capsys):
  from jaxsi import methods  # pylint: disable=g-import-not-at-top
  from jaxsi.data import registry  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
  assert cli.main(["list"]) == 0
  lines = capsys.readouterr().out.splitlines()
  kinds = [l.split()[0] for l in lines]
  n_methods = (len(methods.METHODS) + len(methods.MULTI_TURN_METHODS)
               + len(methods.SELF_TRAINING_METHODS))
  assert kinds.count("method") == n_methods
  assert kinds.count("model") == len(mcfg.PRESETS)
  assert kinds.count("task") == len(registry.task_names()) > 0
  gin_files = sorted(ROOT.glob("gin_configs/**/*.gin")) + sorted(
      ROOT.glob("gin_configs/sweeps/*.toml"))
  assert kinds.count("gin") == len(gin_files)
  names = {tuple(l.split()[:2]) for l in lines}
  assert ("method", "grpo") in names and ("method", "star") in names
  assert ("model", "tiny") in names and ("task", "addition") in names
  assert ("gin", "quickstart.gin") in names and ("gin", "sweeps/getting_started.toml") in names
  grpo = next(l for l in lines if l.split()[:2] == ["method", "grpo"])
  assert "GRPO" in grpo  # its docstring's first line
  assert cli.main(["list", "models"]) == 0
  assert all(l.startswith("model") for l in capsys.readouterr().out.splitlines())


def test_bench_runs_a_script_by_name(tmp_path, monkeypatch, capsys):
  (tmp_path / "benchmarks").mkdir()
  (tmp_path / "experiments").mkdir()
  (tmp_path / "benchmarks" / "speed.py").write_text(
      '"""Times something."""\nimport sys\nprint("argv", sys.argv[1:])\n'
      'sys.exit(3 if "--fail" in sys.argv else 0)\n')
  (tmp_path / "experiments" / "paper.py").write_text('"""Reproduces a claim."""\n')
  monkeypatch.setattr(cli, "REPO", str(tmp_path))
  assert cli.main(["bench"]) == 0
  out = capsys.readouterr().out
  assert "benchmarks/speed" in out and "Times something." in out
  assert "experiments/paper" in out and "Reproduces a claim." in out
  assert cli.main(["bench", "speed", "--", "--iters=2"]) == 0
  assert "argv ['--iters=2']" in capsys.readouterr().out
  assert cli.main(["bench", "benchmarks/speed", "--fail"]) == 3
  assert cli.main(["bench", "nope"]) == 2
  assert "no script 'nope'" in capsys.readouterr().err


def test_bench_lists_the_repository_scripts(capsys):
  assert cli.main(["bench"]) == 0
  out = capsys.readouterr().out
  for path in sorted(ROOT.glob("benchmarks/*.py")) + sorted(ROOT.glob("experiments/*.py")):
    name = f"{path.parent.name}/{path.stem}"
    if path.stem.startswith("_"):   # shared helper modules, not scripts
      assert name not in out
    else:
      assert name in out


def test_compare_command(tmp_path, capsys):
  for name, acc in (("a", 0.25), ("b", 0.5)):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"acc": acc}))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": acc}) + "\n")
  out = tmp_path / "out"
  assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| acc | 0.25 | 0.5 |" in printed
  assert json.load(open(out / "compare.json"))["table"] == {"acc": [0.25, 0.5]}
  assert (out / "compare.png").stat().st_size > 1000
  assert cli.main(["compare", str(tmp_path / "missing")]) == 2


def test_sweep_command_errors(tmp_path, capsys):
  bad = tmp_path / "bad.toml"
  bad.write_text('[base]\ngin_files = ["a.gin"]\n[[axis]]\nbinding = "a.b"\n')
  assert cli.main(["sweep", str(bad)]) == 2
  assert "axis[0].values: missing" in capsys.readouterr().err
  gs = str(ROOT / "gin_configs" / "sweeps" / "getting_started.toml")
  assert cli.main(["sweep", gs, "--list", "--only", "method=ppo"]) == 2
  assert "--only method=ppo: no such value (known: dr_grpo, grpo, rloo)" in capsys.readouterr().err
  assert cli.main(["sweep", gs, "--list", "--only", "method=rloo", "--only", "seed=1",
                   "--dir", str(tmp_path / "s"), "--gin_bindings", "rl_run.run.steps = 2"]) == 0
  (line,) = capsys.readouterr().out.splitlines()
  assert line.startswith("method=rloo_seed=1-")
  assert "--gin_file=methods/rloo.gin" in line
  assert line.index("'--gin_bindings=rl_run.run.steps = 40'") < line.index(
      "'--gin_bindings=rl_run.run.steps = 2'")
  assert cli.main(["sweep", "--summary"]) == 2


def test_eval_a_local_hf_checkpoint(tmp_path, capsys):
  tokenizers = pytest.importorskip("tokenizers")
  pytest.importorskip("math_verify")
  import jax  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from jaxsi.data import hf_tokenizer, math_datasets  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg, hf, model as model_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  from jaxsi.training import evaluate  # pylint: disable=g-import-not-at-top
  ckpt = tmp_path / "ckpt"
  ckpt.mkdir()
  tk = tokenizers.Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(["How many apples? 12 + 30 = 42 #### 42"] * 4, trainers.BpeTrainer(
      vocab_size=300, show_progress=False, special_tokens=["<|endoftext|>", "<|im_end|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tk.save(str(ckpt / "tokenizer.json"))
  (ckpt / "tokenizer_config.json").write_text(json.dumps(
      {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
  cfg = mcfg.get_config("tiny", vocab_size=320, d_model=32, n_layers=1, n_heads=2,
                        n_kv_heads=1, head_dim=16, d_ff=64, qkv_bias=True)  # qwen2
  _, params = model_lib.init(cfg, jax.random.key(0))
  hf.save_pretrained(str(ckpt), cfg, params)
  math_datasets.write_jsonl(
      [{"question": f"How many apples? {a} + 30", "answer": f"#### {a + 30}"}
       for a in range(3)], tmp_path / "gsm8k" / "test.jsonl")
  out = tmp_path / "eval.json"
  assert cli.main(["eval", f"--hf_checkpoint={ckpt}", f"--tasks=gsm8k:{tmp_path / 'gsm8k'}",
                   "--max_new_tokens=3", f"--output={out}"]) == 0
  printed = capsys.readouterr().out
  assert "3 tasks from gsm8k:" in printed and "greedy" in printed
  got = json.load(open(out))
  # The same numbers as the library call on the same checkpoint and tasks.
  model, p = hf.load_pretrained(str(ckpt))
  tok = hf_tokenizer.load_tokenizer(str(ckpt))
  tasks = math_datasets.load_gsm8k(str(tmp_path / "gsm8k"), split="test")
  want = evaluate.evaluate_policy(model, p, tok, tasks, strategy=strategies.Greedy(),
                                  n=1, max_new_tokens=3, seed=0, batch_size=64)
  assert got["overall"] == pytest.approx(json.loads(json.dumps(want["overall"], default=float)))
  assert cli.main(["eval", f"--hf_checkpoint={ckpt}", "--tasks=nowhere:x"]) == 2
  assert "expected synthetic:NAME" in capsys.readouterr().err


def _fake_rl_run(wd):
  """What rl_run.run leaves in a workdir: config.gin (MAIN, the bindings) and
  Loop's {role: TrainState} checkpoints under ckpt/ (iterations 1 and 2, other
  params each). Returns (model, tokenizer, iteration 2's params)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxsi.data import char_tokenizer  # pylint: disable=g-import-not-at-top
  from jaxsi.models import config as mcfg, model as model_lib  # pylint: disable=g-import-not-at-top
  from jaxsi.training import checkpoint, train_state  # pylint: disable=g-import-not-at-top
  wd.mkdir()
  (wd / "config.gin").write_text(
      "from __gin__ import dynamic_registration\n"
      "from jaxsi.methods import grpo\nfrom jaxsi import spec\n"
      "from jaxsi.training import rl_run\n"
      "MAIN = @rl_run.run\nMETHOD = @grpo.grpo()\n"
      "grpo.grpo.rollout = @spec.RolloutSpec()\n"
      "spec.RolloutSpec.max_new_tokens = 3\n"
      "rl_run.run.method = %METHOD\n"
      "rl_run.run.model_overrides = {'d_model': 32, 'n_layers': 1, 'n_heads': 2,"
      " 'n_kv_heads': 1, 'head_dim': 16, 'd_ff': 64}\n"
      "rl_run.run.n_train = 12\nrl_run.run.n_test = 3\nrl_run.run.seed = 5\n")
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
  model, _ = model_lib.init(cfg, jax.random.key(0))
  with checkpoint.Checkpointer(str(wd / "ckpt"), keep=None, async_save=False) as ckpt:
    for step in (1, 2):
      params = model_lib.init(cfg, jax.random.key(10 + step))[1]
      ckpt.save(step, {"policy": train_state.create_train_state(
          params, optax.adam(1e-3), jax.random.key(0))}, extra={"position": 0},
                force=True)
  return model, tok, params


def test_eval_a_run_workdir(tmp_path, capsys):
  """--workdir: the newest RL checkpoint's policy params, on the run's held-out split."""
  from jaxsi.sampling import strategies  # pylint: disable=g-import-not-at-top
  from jaxsi.training import evaluate, rl_run  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "run"
  model, tok, params = _fake_rl_run(wd)
  out = tmp_path / "eval.json"
  assert cli.main(["eval", f"--workdir={wd}", "--temperature=1", "--n=2",
                   f"--output={out}"]) == 0
  printed = capsys.readouterr().out
  assert f"rl_run.run run {wd}, iteration 2" in printed
  assert "3 tasks from the run's held-out set (addition)" in printed
  assert "max_new_tokens=3" in printed   # the method's budget
  _, _, test = rl_run.split_tasks(task="addition", difficulty=[2], n_train=12, n_test=3,
                                  labeled_fraction=0.5, seed=5,
                                  task_format={"reverse": True})
  want = evaluate.evaluate_policy(model, params, tok, test,
                                  strategy=strategies.Sampling(temperature=1.0), n=2,
                                  max_new_tokens=3, seed=0, batch_size=64)
  got = json.load(open(out))
  assert got["overall"] == pytest.approx(json.loads(json.dumps(want["overall"], default=float)))
  # Errors: no checkpoint, another launcher, both sources or neither.
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli.main(["eval", f"--workdir={empty}"]) == 2
  assert "holds no parameter checkpoint (looked for ckpt/" in capsys.readouterr().err
  (wd / "config.gin").write_text("from __gin__ import dynamic_registration\n"
                                 "from tests.sweep import fake_trial\n"
                                 "MAIN = @fake_trial.run\n")
  assert cli.main(["eval", f"--workdir={wd}"]) == 2
  assert ("MAIN = @fake_trial.run; only rl_run.run and rounds_run.run runs can be read"
          " back") in capsys.readouterr().err
  assert cli.main(["eval", f"--workdir={wd}", "--hf_checkpoint=x"]) == 2
  assert cli.main(["eval"]) == 2
  assert "give --hf_checkpoint=DIR or --workdir=DIR" in capsys.readouterr().err


def test_test_time_command_on_a_run(tmp_path, capsys):
  """`jaxsi test-time --run`: the launcher with the test-time gin file, bound to
  the run's newest checkpoint, its model and its task."""
  wd = tmp_path / "run"
  _fake_rl_run(wd)
  out = tmp_path / "tt"
  assert cli.main(["test-time", f"--run={wd}", f"--workdir={out}",
                   "--gin.test_time_run.run.n_tasks=3", "--gin.test_time_run.run.ns=[1, 2]",
                   "--gin.test_time_run.run.max_new_tokens=3",
                   "--gin.test_time_run.run.batch_size=8"]) == 0
  config = " ".join((out / "config.gin").read_text().replace("\\\n", " ").split())
  assert "MAIN = @test_time_run.run" in config
  assert f"test_time_run.run.params_dir = '{wd / 'ckpt'}'" in config
  assert "'d_model': 32" in config and "test_time_run.run.task_format = {'reverse': True}" in config
  assert "test_time_run.run.difficulty = 2" in config   # the run's (hardest) level
  res = json.load(open(out / "test_time.json"))
  assert res["tasks"] == "synthetic:addition" and res["n_tasks"] == 3 and res["ns"] == [1, 2]
  assert "Test-time selection on 3 problems" in capsys.readouterr().out
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli.main(["test-time", f"--run={empty}", f"--workdir={out}"]) == 2
  assert "jaxsi test-time:" in capsys.readouterr().err
