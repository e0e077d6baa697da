"""SPOC / self-rewarding correction: reward fn, stats, factory, one RL step.

The RL step runs on the shared tiny set-up of ``rl_fixtures`` with one-char
verdict markers (``'+'`` correct, ``'='`` wrong) from its 12-character
alphabet, so a random-init policy emits attempts, verdicts and revisions and
the span rewards have variance. The loss of the first optimizer step is
recomputed independently in numpy: span ids from the host parser, span
advantages pooled per role by explicit loops, GRPO clipped loss with
seq-mean-token-mean aggregation.
"""

from __future__ import annotations

import importlib
import pathlib

import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi.data import spans as sv
from jaxsi.data import tasks as tasks_lib
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

spoc_lib = importlib.import_module("jaxsi.methods.spoc")


def _tasks(**kw):
  return tasks_lib.make_tasks("addition_self_verify", 16, difficulty=1, seed=0,
                              **kw)


def test_span_rewards_hand_cases():
  fmt = sv.VerdictFormat(max_attempts=2)
  task = _tasks(max_attempts=2)[0]          # prompt '{a}+{b}=', answer
  ok, bad = task.answer[::-1], str(int(task.answer) + 1)[::-1]
  cases = {  # absent spans score 0 (unused: presence comes from span ids)
      f"{ok}[correct]": [1, 1, 0, 0, 0],
      f"{ok}[wrong]": [1, 0, 0, 0, 0],              # no revision → 0
      f"{bad}[wrong]{ok}[correct]": [0, 1, 1, 1, 0],
      f"{bad}[correct]": [0, 0, 0, 0, 0],
      f"{bad}[wrong]": [0, 1, 0, 0, 0],             # right verdict, gave up
      f"{ok}": [1, 0, 0, 0, 0],                     # no verdict → 0
      "": [0, 0, 0, 0, 0],
      f"{bad}[wrong]{bad}[wrong]{ok}": [0, 1, 0, 1, -1],  # extra text
      f"x{ok}[correct]": [0, 0, 0, 0, 0],           # malformed attempt
      f"x{ok}[wrong]": [0, 1, 0, 0, 0],
  }
  fn = spoc_lib.self_verification_reward(fmt, extra_reward=-1.0)
  assert fn.names == ("solution_1", "verdict_1", "solution_2", "verdict_2",
                      "extra")
  got = fn([task] * len(cases), list(cases))
  np.testing.assert_array_equal(got, np.asarray(list(cases.values()),
                                                np.float32))


def test_self_verification_stats_hand():
  fmt = sv.VerdictFormat(max_attempts=2)
  task = _tasks(max_attempts=2)[0]
  ok, bad = task.answer[::-1], str(int(task.answer) + 1)[::-1]
  comps = [f"{ok}[correct]",                 # right, verified
           f"{bad}[wrong]{ok}[correct]",     # wrong → right
           f"{ok}[wrong]{bad}[correct]",     # right → wrong
           f"{bad}[correct]"]                # wrong, wrongly verified
  st = spoc_lib.self_verification_stats([task] * 4, comps, fmt)
  assert st["final_acc"] == 0.5 and st["first_acc"] == 0.5
  # Verdicts: T, T(1) T(2), F(1) F(2), F → 3 of 6 right.
  assert st["verdict_acc"] == 0.5 and st["verdicts"] == 6
  assert st["first_verdict_acc"] == 0.5
  # Correct attempts: #1 (T ok), #2 att 2 (T ok), #3 att 1 (F bad) → 2/3;
  # wrong attempts: #2 att 1 (F ok), #3 att 2 (T bad), #4 (T bad) → 1/3.
  assert st["verdict_tpr"] == pytest.approx(2 / 3)
  assert st["verdict_tnr"] == pytest.approx(1 / 3)
  assert st["verdict_balanced"] == pytest.approx(0.5)
  assert st["wrong_to_right"] == 0.25 and st["right_to_wrong"] == 0.25
  assert st["revised"] == 0.5 and st["mean_attempts"] == 1.5


def test_factory_and_gin():
  m = methods.spoc(rollout=RolloutSpec(n=4, max_new_tokens=20), max_attempts=2)
  assert m.name == "spoc" and m.n == 4 and not m.needs("reference")
  assert m.rewards[0].names[-1] == "extra"
  assert m.transform.init() is not None
  m2 = methods.spoc(outcome_coef=0.5, kl_coef=0.01)
  assert len(m2.rewards) == 2 and m2.needs("reference")
  gin = pytest.importorskip("gin")
  root = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "methods"
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(root / "spoc.gin")],
                                      ["spoc.spoc.max_attempts = 2"])
  m3 = gin.query_parameter("%METHOD").scoped_configurable_fn()
  gin.clear_config()
  assert m3.name == "spoc" and len(m3.rewards[0].names) == 5


def _role_pooled_advantages(r, present, groups, eps=1e-4):
  """Independent reference: loops over groups and roles (odd/even spans)."""
  b, s = r.shape
  adv = np.zeros((b, s))
  for g in np.unique(groups):
    rows = np.flatnonzero(groups == g)
    for role in (0, 1):
      cols = [c for c in range(s) if (c + 1) % 2 == (1 - role)]
      vals = [(i, c, r[i, c]) for i in rows for c in cols if present[i, c]]
      if len(vals) < 2:
        continue
      x = np.array([v for _, _, v in vals], np.float64)
      std = x.std(ddof=1)
      for i, c, v in vals:
        adv[i, c] = 0.0 if std + eps == 0 else (v - x.mean()) / (std + eps)
  return adv


def test_one_rl_step_loss_matches_reference():
  tok, model, params, _, opt = fx.setup()
  tasks = _tasks(correct="+", wrong="=", max_attempts=2)
  fmt = sv.VerdictFormat(correct="+", wrong="=", max_attempts=2)
  m = methods.spoc(tokenizer=tok, correct="+", wrong="=", max_attempts=2,
                   rollout=RolloutSpec(n=fx.N, max_new_tokens=6))
  trainer = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                         tasks=tasks, optimizer=opt,
                         prompts_per_step=fx.PROMPTS, seed=0,
                         compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(trainer.state.params)
  metrics = trainer.step()
  traj = trainer.last_traj
  lm = np.asarray(traj.loss_mask, bool)
  tokens = np.asarray(traj.tokens)
  # Span ids on device == host parser on the sampled token ids.
  host_ids = np.zeros_like(tokens)
  for i in range(tokens.shape[0]):
    pos = np.flatnonzero(lm[i])
    host_ids[i, pos] = sv.self_verification_span_ids(
        tok, tokens[i, pos].tolist(), fmt)
  np.testing.assert_array_equal(np.asarray(traj.span_ids), host_ids)
  # Reference advantages.
  r = np.asarray(trainer.last_batch.rewards, np.float64)        # [B, 5]
  assert r.shape[1] == 5
  valid0 = np.asarray(trainer.last_batch.traj.valid, bool)
  present = np.stack([[(host_ids[i] == s + 1).any() for s in range(5)]
                      for i in range(r.shape[0])]) & np.isfinite(r) & \
      valid0[:, None]
  groups = np.asarray(traj.group_ids)
  adv_s = _role_pooled_advantages(np.where(present, r, 0.0), present, groups)
  tok_adv = np.zeros(lm.shape)
  for i in range(lm.shape[0]):
    for t in np.flatnonzero(lm[i]):
      tok_adv[i, t] = adv_s[i, host_ids[i, t] - 1]
  np.testing.assert_allclose(np.asarray(traj.advantages), tok_adv, rtol=1e-4,
                             atol=1e-5)
  signal = np.array([np.any(tok_adv[groups == g] != 0) for g in groups])
  valid = valid0 & signal
  assert valid.any(), "fixture should give span rewards with variance"
  np.testing.assert_array_equal(np.asarray(traj.valid), valid)
  lp = fx.policy_logprobs(model, p0, traj)
  old = np.asarray(traj.old_logprobs, np.float64)
  ratio = np.exp(np.where(lm, lp - old, 0.0))
  expected = fx.agg(fx.ppo_clip(ratio, tok_adv, 0.2, 0.2), lm & valid[:, None],
                    "seq-mean-token-mean")
  np.testing.assert_allclose(metrics["loss_first"], expected, rtol=2e-4,
                             atol=2e-5)
  for k in ("reward/solution_1/mean", "reward/verdict_1/mean",
            "transform/spans/attempts_mean", "transform/span/adv_abs_mean"):
    assert np.isfinite(metrics[k]), k
  assert metrics["transform/span/frac_tokens_unrewarded"] == 0.0
