"""docs/getting_started.md runs: its `jaxsi` commands, in order, with tiny settings.

The sweep command is reduced to two trials (GRPO and RLOO, seed 0) of two RL
iterations on a one-layer model without a warm start; everything else is the
page's text: list, sweep --list, sweep (real launcher processes), --summary,
compare (shell globs expanded as a shell would).
"""

import glob
import json
import os
import pathlib
import re
import shlex

from jaxsi import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "getting_started.md"
TINY = [
    "--only", "method=grpo", "--only", "method=rloo", "--only", "seed=0",
    "--gin_bindings", "rl_run.run.n_train = 16",
    "--gin_bindings", "rl_run.run.n_test = 2",
    "--gin_bindings", ('rl_run.run.model_overrides = {"d_model": 32, "n_layers": 1,'
                       ' "n_heads": 2, "n_kv_heads": 1, "head_dim": 16, "d_ff": 64}'),
    "--gin_bindings", "rl_run.run.warm_start_steps = 0",
    "--gin_bindings", "rl_run.run.steps = 2",
    "--gin_bindings", "rl_run.run.prompts_per_step = 2",
    "--gin_bindings", "rl_run.run.checkpoint_every = 2",
    "--gin_bindings", "rl_run.run.eval_samples = 0",
    "--gin_bindings", "spec.RolloutSpec.n = 2",
    "--gin_bindings", "spec.RolloutSpec.max_new_tokens = 4",
]


def _commands():
  text = DOC.read_text()
  block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
  return [l for l in block.splitlines() if l.startswith("jaxsi ")]


def test_getting_started_commands_run(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(REPO)
  monkeypatch.setenv("PYTHONPATH", str(REPO))
  monkeypatch.setenv("CI", "true")
  out = str(tmp_path / "gs")
  commands = _commands()
  assert [c.split()[1] for c in commands] == ["list", "sweep", "sweep", "sweep", "compare"]
  assert len(commands) + 1 < 10  # + the install command
  for line in commands:
    args = shlex.split(line.replace("/tmp/jaxsi_gs", out))[1:]
    expanded = []
    for a in args:
      expanded += sorted(glob.glob(a)) if "*" in a else [a]
    if args[0] == "sweep" and "--parallel" in args:
      expanded += TINY
    assert cli.main(expanded) == 0, line
  printed = capsys.readouterr().out
  assert "method  grpo" in printed
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [t["status"] for t in summary["trials"] if t["status"] != "pending"] == ["done"] * 2
  rows = {c["config"]: c for c in summary["configs"]}
  assert rows["method=grpo"]["n_done"] == rows["method=rloo"]["n_done"] == 1
  assert rows["method=dr_grpo"]["n_done"] == 0
  acc = rows["method=rloo"]["metrics"]["after/greedy/all"]
  assert acc["n"] == 1 and 0 <= acc["mean"] <= 1
  md = open(os.path.join(out, "summary.md")).read()
  assert "| method | seeds done | before/greedy/all | after/greedy/all |" in md
  assert os.path.getsize(os.path.join(out, "plots", "curve_reward_mean.png")) > 1000
  assert os.path.exists(os.path.join(out, "plots", "final_after_greedy_all_by_method.png"))
  comp = json.load(open(os.path.join(out, "compare", "compare.json")))
  assert len(comp["runs"]) == 2 and comp["curves"][:1] == ["reward/mean"]
  assert os.path.getsize(os.path.join(out, "compare", "compare.png")) > 1000
