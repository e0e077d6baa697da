"""Sweep files: parsing, expansion into trials, stable ids, errors naming the field."""

import math
import pathlib

import pytest

from jaxsi.sweep import definition as D

GRID = """
name = "g"
[base]
gin_files = ["experiments/rl_addition.gin"]
bindings = ["rl_run.run.steps = 5"]

[[axis]]
name = "method"
binding = "gin_file"
values = ["methods/grpo.gin", "methods/rloo.gin"]

[[axis]]
bindings = ["rl_run.run.learning_rate", "rl_run.run.warmup_steps"]
values = [[1e-4, 10], [3e-4, 5]]
labels = ["low", "high"]

[seeds]
binding = "rl_run.run.seed"
count = 2
"""


def _write(tmp_path, text, name="s.toml"):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


def test_gin_literal():
  assert D.gin_literal(3) == "3"
  assert D.gin_literal(0.0003) == "0.0003"
  assert D.gin_literal(True) == "True"
  assert D.gin_literal("addition") == "'addition'"
  assert D.gin_literal("@grpo.grpo()") == "@grpo.grpo()"
  assert D.gin_literal("%METHOD") == "%METHOD"
  assert D.gin_literal([1, "a"]) == "[1, 'a']"
  assert D.gin_literal({"reverse": True}) == "{'reverse': True}"
  with pytest.raises(D.SweepError, match="not finite"):
    D.gin_literal(math.inf)


def test_grid_zip_seeds_expand_in_order(tmp_path):
  sweep = D.load_sweep(_write(tmp_path, GRID))
  trials = D.expand(sweep)
  assert len(trials) == 2 * 2 * 2
  first = trials[0]
  assert first.assignment == {"method": "grpo", "learning_rate+warmup_steps": "low"}
  assert first.seed == 0
  assert first.gin_files == ("experiments/rl_addition.gin", "methods/grpo.gin")
  assert first.bindings == ("rl_run.run.steps = 5",
                            "rl_run.run.learning_rate = 0.0001",
                            "rl_run.run.warmup_steps = 10",
                            "rl_run.run.seed = 0")
  # First axis slowest, seeds fastest.
  assert [(t.assignment["method"], t.assignment["learning_rate+warmup_steps"], t.seed)
          for t in trials] == [(m, l, s) for m in ("grpo", "rloo")
                               for l in ("low", "high") for s in (0, 1)]
  assert first.config_key == "method=grpo,learning_rate+warmup_steps=low"
  assert first.id.startswith("method=grpo_learning_rate+warmup_steps=low_seed=0-")
  assert len({t.id for t in trials}) == 8
  assert D.trial_from_json(first.to_json()) == first


def test_ids_are_stable_when_an_axis_grows_or_the_base_changes(tmp_path):
  ids = {t.id for t in D.expand(D.load_sweep(_write(tmp_path, GRID)))}
  grown = GRID.replace('"methods/rloo.gin"]', '"methods/rloo.gin", "methods/ppo.gin"]')
  grown = grown.replace("rl_run.run.steps = 5", "rl_run.run.steps = 50")
  more = {t.id for t in D.expand(D.load_sweep(_write(tmp_path, grown, "t.toml")))}
  assert ids < more and len(more) == 12


def test_random_draws_are_reproducible_in_range_and_prefix_stable(tmp_path):
  text = """
[base]
gin_files = ["a.gin"]
[[axis]]
name = "search"
random = {count}
seed = 7
[axis.draw]
"x.lr" = {{log_uniform = [1e-5, 1e-3]}}
"x.n" = {{choice = [4, 8]}}
"x.w" = {{int_uniform = [0, 3]}}
"x.c" = {{uniform = [0.1, 0.2]}}
"""
  a = D.load_sweep(_write(tmp_path, text.format(count=3))).axes[0]
  b = D.load_sweep(_write(tmp_path, text.format(count=5), "b.toml")).axes[0]
  assert a.points == b.points[:3]
  assert a.points == D.load_sweep(_write(tmp_path, text.format(count=3), "c.toml")).axes[0].points
  for p in b.points:
    assert 1e-5 <= p["x.lr"] <= 1e-3 and p["x.n"] in (4, 8)
    assert p["x.w"] in range(4) and 0.1 <= p["x.c"] <= 0.2
  assert len({p["x.lr"] for p in b.points}) == 5
  assert a.labels[0] == (f"d0,lr={a.points[0]['x.lr']:.3g},n={a.points[0]['x.n']},"
                         f"w={a.points[0]['x.w']},c={a.points[0]['x.c']:.3g}")


def test_equal_random_draws_are_still_distinct_trials(tmp_path):
  text = ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nname = "n"\nrandom = 6\n'
          '[axis.draw]\n"x.n" = {choice = [4]}\n')
  trials = D.expand(D.load_sweep(_write(tmp_path, text)))
  assert [t.assignment["n"] for t in trials] == [f"d{k},n=4" for k in range(6)]
  assert len({t.id for t in trials}) == 6
  assert all(t.bindings == ("x.n = 4",) for t in trials)


def test_relative_gin_files_resolve_next_to_the_sweep_file(tmp_path):
  (tmp_path / "mine.gin").write_text("")
  sweep = D.load_sweep(_write(tmp_path, '[base]\ngin_files = ["mine.gin", "quickstart.gin"]\n'))
  assert sweep.base_gin_files == (str(tmp_path / "mine.gin"), "quickstart.gin")
  assert sweep.name == "s"
  (trial,) = D.expand(sweep)
  assert trial.assignment == {} and trial.seed is None and trial.config_key == "base"


@pytest.mark.parametrize("text, match", [
    ("[base\n", r"s.toml: not valid TOML: .*line 1"),
    ('[base]\ngin_files = ["a.gin"]\n[bogus]\n', r"s.toml: bogus: unknown key"),
    ("name = 'x'\n", r"s.toml: base: missing table"),
    ('[base]\ngin_files = []\n', r"base.gin_files: at least one"),
    ('[base]\ngin_files = ["a.gin"]\nbindings = ["x"]\n', r"base.bindings\[0\]: 'x' is not"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nname = "a"\nbinding = "x.y"\n',
     r"axis\[0\].values: missing"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nbinding = "x.y"\nrandom = 2\nvalues = [1]\n',
     r"axis\[0\]: give exactly one of"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nbindings = ["a.b", "c.d"]\nvalues = [[1]]\n',
     r"axis\[0\].values\[0\]: expected a list of 2 values"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nrandom = 2\ndraw = {"a.b" = {normal = [0, 1]}}\n',
     r"axis\[0\].draw.a.b: unknown distribution 'normal'"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nrandom = 2\ndraw = {"a.b" = {log_uniform = [0, 1]}}\n',
     r"log_uniform needs low > 0"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nbinding = "a.b"\nvalues = [1, 2]\nlabels = ["x"]\n',
     r"axis\[0\].labels: 1 labels for 2 values"),
    ('[base]\ngin_files = ["a.gin"]\n[[axis]]\nbinding = "a.b"\nvalues = [1, 2]\nstep = 1\n',
     r"axis\[0\].step: unknown key"),
    ('[base]\ngin_files = ["a.gin"]\n[seeds]\nbinding = "a.seed"\nvalues = [0, 0]\n',
     r"seeds.values: expected distinct integers"),
    ('[base]\ngin_files = ["a.gin"]\n[seeds]\nbinding = "a seed"\ncount = 2\n',
     r"seeds.binding: 'a seed' is not a binding name"),
])
def test_errors_name_the_file_and_the_field(tmp_path, text, match):
  with pytest.raises(D.SweepError, match=match):
    D.load_sweep(_write(tmp_path, text))


def test_the_shipped_sweep_files_expand():
  root = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "sweeps"
  files = sorted(root.glob("*.toml"))
  assert files
  for f in files:
    trials = D.expand(D.load_sweep(str(f)))
    assert trials, f
  gs = D.load_sweep(str(root / "getting_started.toml"))
  trials = D.expand(gs)
  assert len(trials) == 9
  assert {t.assignment["method"] for t in trials} == {"grpo", "dr_grpo", "rloo"}
