"""Label-free methods run one loop step; their rewards are recomputed by hand.

On the tiny set-up of ``rl_fixtures`` (1-digit addition, a random-init
decoder): TTRL and Co-Reward's majority-vote rewards are recomputed from the
decoded samples with ``collections.Counter``; RLHF-Sharpening's reward from
the reference (= initial) parameters' log-probs; Intuitor's from the
self-certainty of the rollout parameters.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from jaxsi.data import batching
from jaxsi.data import rephrase
from jaxsi.methods import confidence_rl, majority_vote
from jaxsi.rewards import verifiers
from jaxsi.sampling import confidence
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from tests.methods import rl_fixtures as fx

SPEC = RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW)


def _run(method):
  tok, model, params, tasks, opt = fx.setup()
  trainer = loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                      tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                      seed=0, compiler_options=loop.FAST_COMPILE)
  p0 = fx.host_params(trainer.state.params)
  metrics = trainer.step()
  for k in ("loss", "loss_first", "reward/mean"):
    assert np.isfinite(metrics[k]), k
  return trainer, p0, metrics


def _texts_answers(trainer):
  traj, batch = trainer.last_batch.traj, trainer.last_batch
  texts = [trainer.tokenizer.decode(t[m].tolist())
           for t, m in zip(traj.tokens, traj.loss_mask)]
  answers = [verifiers.canonical_answer(trainer.tasks[i], c)
             for i, c in zip(batch.task_index, texts)]
  return texts, answers


def _vote(answers):
  """Most frequent non-None answer, ties to the first seen (by hand)."""
  seen = [a for a in answers if a is not None]
  if not seen:
    return None
  counts = collections.Counter(seen)
  best = max(counts.values())
  return next(a for a in seen if counts[a] == best)


def test_ttrl_votes_over_all_and_trains_on_half():
  trainer, _, metrics = _run(majority_vote.ttrl(rollout=SPEC, train_fraction=0.5))
  _, answers = _texts_answers(trainer)
  n = fx.N
  want = []
  for g in range(fx.PROMPTS):
    group = answers[g * n:(g + 1) * n]
    label = _vote(group)
    want += [float(a is not None and a == label) for a in group]
  np.testing.assert_array_equal(trainer.last_batch.rewards[:, 0], want)
  # After the subset (2 of 4 per group) and the zero-variance filter.
  valid = np.asarray(trainer.last_traj.valid).reshape(fx.PROMPTS, n)
  assert np.all(valid.sum(1) <= n // 2)
  assert metrics["transform/subsample/frac_kept"] == 0.5
  for k in ("pseudo_label_acc", "agreement", "sample_acc", "unparseable_frac"):
    assert 0.0 <= metrics[f"label_free/{k}"] <= 1.0
  np.testing.assert_allclose(metrics["label_free/agreement"], np.mean(want))


def test_co_reward_pairs_rephrasings_and_crosses_the_votes():
  trainer, _, metrics = _run(majority_vote.co_reward(rollout=SPEC))
  batch, n, r = trainer.last_batch, fx.N, fx.PROMPTS
  traj = batch.traj
  assert traj.tokens.shape[0] == 2 * r * n
  groups = np.asarray(traj.group_ids)
  np.testing.assert_array_equal(groups, np.repeat(np.arange(2 * r) * n, n))
  np.testing.assert_array_equal(
      np.asarray(traj.pair_ids), np.repeat(np.r_[np.arange(r, 2 * r), np.arange(r)] * n, n))
  # The second half was sampled under the rephrased prompt b+a=.
  p = traj.tokens.shape[1] - fx.MAX_NEW
  task = trainer.tasks[batch.task_index[r * n]]
  ids = batching.encode_prompt(trainer.tokenizer, rephrase.rephrase_prompt(task))
  row = traj.tokens[r * n][:p][traj.input_mask[r * n][:p]]
  assert row.tolist() == ids
  _, answers = _texts_answers(trainer)
  labels = [_vote(answers[g * n:(g + 1) * n]) for g in range(2 * r)]
  want = [float(a is not None and a == labels[(i // n + r) % (2 * r)])
          for i, a in enumerate(answers)]
  np.testing.assert_array_equal(batch.rewards[:, 0], want)
  assert np.isfinite(metrics["label_free/pseudo_label_acc"])


def test_sharpening_rl_reward_is_the_base_models_mean_logprob():
  trainer, p0, metrics = _run(confidence_rl.sharpening_rl(rollout=SPEC))
  traj = trainer.last_batch.traj
  lp = fx.policy_logprobs(trainer.model, p0, traj)
  m = np.asarray(traj.loss_mask)
  np.testing.assert_allclose(trainer.last_batch.rewards[:, 0],
                             (lp * m).sum(1) / m.sum(1), rtol=1e-4, atol=1e-5)
  assert np.isfinite(metrics["label_free/sample_acc"])
  assert "reference" in trainer.frozen


def test_intuitor_reward_is_self_certainty_under_the_rollout_policy():
  trainer, p0, _ = _run(confidence_rl.intuitor(rollout=SPEC))
  traj = trainer.last_batch.traj
  want = confidence.sequence_confidence(trainer.model, p0, traj,
                                        kind="self_certainty")
  np.testing.assert_allclose(trainer.last_batch.rewards[:, 0], want, rtol=1e-5)


FACTORIES = {"ttrl": majority_vote.ttrl, "srt": majority_vote.srt,
             "co_reward": majority_vote.co_reward,
             "intuitor": confidence_rl.intuitor, "em_rl": confidence_rl.em_rl,
             "em_ft": confidence_rl.em_ft, "rlsc": confidence_rl.rlsc,
             "sharpening_rl": confidence_rl.sharpening_rl}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_take_only_their_own_math_and_gin_builds(name):
  import inspect  # pylint: disable=g-import-not-at-top
  from jaxsi.spec import OptimSpec  # pylint: disable=g-import-not-at-top
  params = inspect.signature(FACTORIES[name]).parameters
  assert {"rollout", "optim", "extra_transforms"} <= set(params)
  assert not {"n", "max_new_tokens", "temperature", "strategy", "epochs",
              "minibatches"} & set(params)
  m = FACTORIES[name](rollout=RolloutSpec(n=2, max_new_tokens=3),
                      optim=OptimSpec(epochs=2, minibatches=2))
  assert (m.name, m.n, m.max_new_tokens, m.epochs) == (name, 2, 3, 2)
  gin = pytest.importorskip("gin")
  import pathlib  # pylint: disable=g-import-not-at-top
  path = (pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "methods"
          / f"{name}.gin")
  gin.clear_config()
  try:
    gin.parse_config_file(str(path))
    built = gin.query_parameter("%METHOD").scoped_configurable_fn()
    assert built.name == name
  finally:
    gin.clear_config()


def test_bad_settings_are_refused_by_name():
  with pytest.raises(ValueError, match="ttrl: train_fraction"):
    majority_vote.ttrl(train_fraction=0.0)
  with pytest.raises(ValueError, match="em_rl: level"):
    confidence_rl.em_rl(level="word")


def test_sharpening_and_kl_roles():
  assert confidence_rl.sharpening_rl(kl_coef=0.0).needs("reference")
  assert not majority_vote.ttrl().needs("reference")
  assert majority_vote.ttrl(kl_coef=0.01).needs("reference")
