"""The RL launcher entry point (jaxsi/training/rl_run.py) through jaxsi.launch."""

import json
import os
import types

import pytest

gin = pytest.importorskip("gin")

from jaxsi import launch  # pylint: disable=g-import-not-at-top
from jaxsi import spec  # pylint: disable=g-import-not-at-top
from jaxsi.spec import RolloutSpec  # pylint: disable=g-import-not-at-top
from jaxsi import methods  # pylint: disable=g-import-not-at-top
from jaxsi.training import rl_run  # pylint: disable=g-import-not-at-top

# Tiny settings: 1-layer d=32 decoder, 2 prompts × 4 samples, 5 SFT steps.
_TINY = [
    "rl_run.run.n_train = 48",
    "rl_run.run.n_test = 8",
    'rl_run.run.model_overrides = {"d_model": 32, "n_layers": 1, "n_heads": 2,'
    ' "n_kv_heads": 1, "head_dim": 16, "d_ff": 64}',
    "rl_run.run.warm_start_steps = 5",
    "rl_run.run.warm_start_batch = 8",
    "rl_run.run.prompts_per_step = 2",
    "rl_run.run.checkpoint_every = 1",
    "rl_run.run.eval_every = 0",
    "rl_run.run.eval_samples = 2",
    "spec.RolloutSpec.n = 4",
    "spec.RolloutSpec.max_new_tokens = 4",
]


def _launch(workdir, files, bindings, dry_run=False, allow=()):
  gin.clear_config()
  try:
    flags = types.SimpleNamespace(gin_file=list(files), gin_bindings=list(bindings),
                                  gin_search_path=[], workdir=str(workdir),
                                  dry_run=dry_run, allow_config_change=list(allow))
    return launch.launch(flags)
  finally:
    gin.clear_config()


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def test_grpo_addition_runs_checkpoints_and_resumes(tmp_path):
  files = ["experiments/grpo_addition.gin"]
  out = _launch(tmp_path, files, _TINY + ["rl_run.run.steps = 2"])
  assert out["method"] == "grpo" and out["iterations"] == 2
  assert not out["warm_start_restored"]
  metrics = _lines(tmp_path / "metrics.jsonl")
  assert [m["step"] for m in metrics] == [1, 2]
  assert all("reward/mean" in m and "loss" in m for m in metrics)
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["1", "2"]
  assert os.listdir(tmp_path / "warm_start")
  evals = _lines(tmp_path / "eval.jsonl")
  assert [e["iteration"] for e in evals] == [0, 2]
  for e in evals:
    for kind in ("greedy", "sampled"):
      assert 0.0 <= e[kind]["all"] <= 1.0
  assert (tmp_path / "operative_config.gin").exists()

  # A rerun that changes what the run means is refused before any work,
  # naming each binding; nothing in the workdir changes.
  config = (tmp_path / "config.gin").read_text()
  results = (tmp_path / "results.json").read_text()
  with pytest.raises(launch.LaunchError) as e:
    _launch(tmp_path, files, _TINY + ["rl_run.run.steps = 3", "rl_run.run.seed = 1"])
  assert "rl_run.run.seed: 0 -> 1" in str(e.value)
  assert "rl_run.run.steps: 2 -> 3" in str(e.value)
  assert "--allow_config_change=" in str(e.value)
  assert (tmp_path / "config.gin").read_text() == config
  assert (tmp_path / "results.json").read_text() == results
  # Rerunning the finished run unchanged: results.json stays as it is.
  again = _launch(tmp_path, files, _TINY + ["rl_run.run.steps = 2"])
  assert (tmp_path / "results.json").read_text() == results
  assert again["iterations"] == 2 and "train_reward_last10" in again

  # Resume on purpose with more steps: the warm start, the RL state and the
  # evaluation at iteration 0 are restored, not recomputed.
  out = _launch(tmp_path, files, _TINY + ["rl_run.run.steps = 3"], allow=["steps"])
  assert out["iterations"] == 3 and out["warm_start_restored"]
  changes = _lines(tmp_path / "config_changes.jsonl")
  assert [(c["binding"], c["old"], c["new"]) for c in changes] == [
      ("rl_run.run.steps", "2", "3")]
  assert [m["step"] for m in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]
  assert [e["iteration"] for e in _lines(tmp_path / "eval.jsonl")] == [0, 2, 3]
  assert "3" in os.listdir(tmp_path / "ckpt")
  with open(tmp_path / "results.json", encoding="utf-8") as f:
    assert json.load(f)["iterations"] == 3


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_rl_method_gin_is_one_flag(tmp_path, name):
  out = _launch(tmp_path, ["experiments/rl_addition.gin", f"methods/{name}.gin"],
                ["rl_run.run.n_train = 48", "rl_run.run.n_test = 8"], dry_run=True)
  assert out["method"] == name
  assert out["rl_pool"] == 24 and out["labeled"] == 24


def test_first_grpo_update_is_on_policy_and_advantages_align():
  """The invariants checked when diagnosing the bench (docs/rl.md, Bench).

  With one epoch and one minibatch the first update sees ratio 1 and no
  clipping; π_old from the rescoring pass equals the sampler's behaviour
  log-probs on the loss tokens; advantages are constant over each
  completion, 0 off its loss tokens, and have the sign of reward − group mean.
  """
  from jaxsi.training import loop  # pylint: disable=g-import-not-at-top
  from tests.methods import rl_fixtures as fx  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  tok, model, params, tasks, opt = fx.setup()
  method = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                        reward_fns=(fx.first_is_digit,), kl_coef=0.04,
                        drop_zero_variance=False)
  trainer = loop.Loop(model=model, params=params, method=method,
                         tokenizer=tok, tasks=tasks, optimizer=opt,
                         prompts_per_step=fx.PROMPTS,
                         compiler_options=loop.FAST_COMPILE)
  m = trainer.step()
  assert m["pg/ratio_min"] == pytest.approx(1.0, abs=1e-5)
  assert m["pg/ratio_max"] == pytest.approx(1.0, abs=1e-5)
  assert m["pg/clipfrac"] == 0.0
  traj = trainer.last_traj
  lm = np.asarray(traj.loss_mask) & np.asarray(traj.valid)[:, None]
  assert lm.any(axis=1).all()
  old, beh = np.asarray(traj.old_logprobs), np.asarray(traj.behaviour_logprobs)
  np.testing.assert_allclose(old[lm], beh[lm], atol=1e-4)
  adv = np.asarray(traj.advantages)
  assert np.all(adv[~np.asarray(traj.loss_mask)] == 0.0)
  row_adv = np.array([a[mask][0] for a, mask in zip(adv, lm)])
  for a, mask, ra in zip(adv, lm, row_adv):
    np.testing.assert_allclose(a[mask], ra, atol=1e-6)
  r = np.asarray(traj.rewards)[:, 0].reshape(-1, fx.N)
  centred = (r - r.mean(axis=1, keepdims=True)).reshape(-1)
  assert np.all(np.sign(row_adv[np.abs(centred) > 1e-6])
                == np.sign(centred[np.abs(centred) > 1e-6]))
  assert (np.abs(centred) > 1e-6).any()  # the batch has signal to check


# ------------------------------------------------------- the wrong loop
def test_a_rounds_method_file_after_an_rl_experiment_is_refused(tmp_path):
  """star.gin binds MAIN = @rounds_run.run: with rl_addition.gin (MAIN =
  @rl_run.run) the last MAIN would silently win; the launcher refuses,
  naming both launchers and the method."""
  for files in (["experiments/rl_addition.gin", "methods/star.gin"],
                ["methods/star.gin", "experiments/rl_addition.gin"]):
    with pytest.raises(launch.LaunchError) as e:
      _launch(tmp_path, files, [])
    msg = str(e.value)
    assert "rl_run.run" in msg and "rounds_run.run" in msg, msg
    assert "star.star" in msg, msg
  assert not (tmp_path / "config.gin").exists()  # refused before any work


def test_rl_run_refuses_a_rounds_method(tmp_path):
  from jaxsi.methods import star  # pylint: disable=g-import-not-at-top
  with pytest.raises(spec.ConfigurationError) as e:
    rl_run.run(workdir=str(tmp_path), method=star.star())
  msg = str(e.value)
  assert "rl_run.run" in msg and "'star'" in msg and "rounds_run" in msg, msg


def test_an_episode_method_under_rl_run_is_multi_turn(tmp_path):
  """SCoRe given to the single-turn addition experiment trains two-turn
  episodes (tests/test_recipes.py runs it: reward/turn1, reward/turn2)."""
  out = _launch(tmp_path, ["experiments/rl_addition.gin", "methods/score.gin"],
                ["rl_run.run.n_train = 48", "rl_run.run.n_test = 8"],
                dry_run=True)
  assert out["method"] == "score" and out["multi_turn"]
  out = _launch(tmp_path, ["experiments/rl_addition.gin", "methods/grpo.gin"],
                ["rl_run.run.n_train = 48", "rl_run.run.n_test = 8"],
                dry_run=True)
  assert out["method"] == "grpo" and not out["multi_turn"]


def test_dry_run_refuses_an_episode_method(tmp_path):
  """The GSM8K dry run compiles one single-turn rollout: an episode method
  (SCoRe) is refused, naming the method and the dry run."""
  with pytest.raises(spec.ConfigurationError) as e:
    _launch(tmp_path, ["experiments/grpo_gsm8k_qwen3_0_6b_gpu.gin",
                       "methods/score.gin"], [], dry_run=True)
  msg = str(e.value)
  assert "'score'" in msg and "dry_run" in msg and "episodes" in msg, msg


def test_eval_log_is_exactly_once_after_an_interruption(tmp_path, monkeypatch):
  """Interrupted right after the checkpoint of an evaluation iteration (before
  its eval row) and with a torn last line: the rerun evaluates that iteration
  from the restored params and eval.jsonl ends with one row per iteration."""
  files = ["experiments/grpo_addition.gin"]
  bindings = _TINY + ["rl_run.run.steps = 2", "rl_run.run.eval_every = 1",
                      "rl_run.run.checkpoint_every = 1"]
  real = rl_run.evaluate
  calls = []

  def flaky(**kw):
    calls.append(1)
    if len(calls) == 2:            # the eval of iteration 1, after its checkpoint
      raise KeyboardInterrupt("killed")
    return real(**kw)

  monkeypatch.setattr(rl_run, "evaluate", flaky)
  with pytest.raises(KeyboardInterrupt):
    _launch(tmp_path, files, bindings)
  with open(tmp_path / "eval.jsonl", "a", encoding="utf-8") as f:
    f.write('{"iteration": 1, "gree')          # torn by the kill
  monkeypatch.setattr(rl_run, "evaluate", real)
  out = _launch(tmp_path, files, bindings)
  assert out["iterations"] == 2
  assert [e["iteration"] for e in _lines(tmp_path / "eval.jsonl")] == [0, 1, 2]
  assert [m["step"] for m in _lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_staleness_is_one_gin_binding_and_checked(tmp_path):
  # Accepted by gin and the dry run; an out-of-range value is refused by
  # name before any work (Loop(staleness=...) itself is tested in
  # tests/training/test_loop_staleness.py).
  files = ["experiments/rl_addition.gin", "methods/grpo.gin"]
  small = ["rl_run.run.n_train = 48", "rl_run.run.n_test = 8"]
  out = _launch(tmp_path, files, small + ["rl_run.run.staleness = 1"],
                dry_run=True)
  assert out["method"] == "grpo"
  with pytest.raises(ValueError, match=r"rl_run.run.staleness = 2: expected <= 1"):
    _launch(tmp_path / "bad", files, small + ["rl_run.run.staleness = 2"],
            dry_run=True)
