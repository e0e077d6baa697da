"""The loop's new contracts end to end: roles, device reward stages, online
pairs, privileged-context rescoring, group rewards, refusals.

* two trainable roles updated alternately (a challenger/solver toy whose
  challenger is rewarded through the solver role), resumed exactly;
* a judge role whose parsed judgments are the reward;
* DPO on pairs built online from each group;
* a teacher scoring the student's own samples under a privileged prompt;
* a group reward (majority vote) stays correct when the batch call fails and
  the stage retries per group;
* methods whose needs the run does not meet are refused before any work.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import methods
from jaxsi.spec import OptimSpec, RolloutSpec
from jaxsi import spec
from jaxsi.data import batching
from jaxsi.rewards import stages
from jaxsi.rewards import voting
from jaxsi.sampling import rollouts
from jaxsi.sampling import sampler as sampler_lib
from jaxsi.sampling import strategies
from jaxsi.training import loop
from jaxsi.transforms import (distillation, importance, pairs, preference,
                              rescoring)
from jaxsi.transforms.base import chain, objective
from tests.methods import rl_fixtures as fx


def _loop(method, roles=None, **kw):
  tok, model, params, tasks, opt = fx.setup()
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   roles=roles, compiler_options=loop.FAST_COMPILE, **kw)


def _grpo(reward, **kw):
  return methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                      reward_fns=(reward,),
                      kl_coef=0.0, **kw)


def _parse_digit(text):
  """A judgment '7…' → 1.0, any other non-empty text → 0.0, empty → None."""
  if not text:
    return None
  return 1.0 if text[0] == "7" else 0.0


def _greedy_texts(model, params, tok, prompts, max_new):
  ids = [batching.encode_prompt(tok, p) for p in prompts]
  out = []
  for row in ids:
    traj = sampler_lib.sample(model, params, [row], rng=jax.random.key(0),
                              strategy=strategies.Greedy(), n=1,
                              max_new_tokens=max_new, stop_ids=(tok.eos_id,),
                              pad_id=tok.pad_id)
    t = jax.device_get(traj)
    out.append(tok.decode(np.asarray(t.tokens[0])[np.asarray(t.loss_mask[0])].tolist()))
  return out


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------- two roles
JUDGE_OF_SOLVER = stages.Judge(role=spec.SOLVER, template="{completion}=",
                               parse=_parse_digit, max_new_tokens=2,
                               name="solver_says")
CHALLENGER = dataclasses.replace(
    methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                 reward_fns=(fx.first_is_digit, JUDGE_OF_SOLVER), kl_coef=0.0,
                 name="challenger"),
    train=spec.CHALLENGER, roles=(spec.Role(spec.SOLVER, trained=True),))
SOLVER = dataclasses.replace(_grpo(fx.starts_with_one, name="solver"),
                             train=spec.SOLVER)


def _two_role_loop(**kw):
  tok, model, params, tasks, opt = fx.setup()
  return _loop([CHALLENGER, SOLVER], roles={spec.SOLVER: fx.perturbed(params)},
               **kw)


def test_two_trainable_roles_alternate_and_resume_exactly(tmp_path):
  lp = _two_role_loop()
  assert lp.trained_roles == (spec.CHALLENGER, spec.SOLVER)
  solver0 = fx.host_params(lp.states[spec.SOLVER].params)
  chall0 = fx.host_params(lp.states[spec.CHALLENGER].params)
  m0 = lp.step()                                  # challenger's phase
  assert m0["phase"] == 0.0
  assert int(lp.states[spec.CHALLENGER].step) == 1
  assert int(lp.states[spec.SOLVER].step) == 0
  assert _leaves_equal(lp.states[spec.SOLVER].params, solver0)
  assert not _leaves_equal(lp.states[spec.CHALLENGER].params, chall0)
  # The challenger's second reward column is the solver role's judgment.
  assert "reward/solver_says/mean" in m0
  chall1 = fx.host_params(lp.states[spec.CHALLENGER].params)
  m1 = lp.step()                                  # solver's phase
  assert m1["phase"] == 1.0
  assert int(lp.states[spec.SOLVER].step) == 1
  assert _leaves_equal(lp.states[spec.CHALLENGER].params, chall1)
  assert not _leaves_equal(lp.states[spec.SOLVER].params, solver0)
  lp.step()
  # Interrupted after 2 iterations (both roles checkpointed), resumed for 1.
  first = _two_role_loop(workdir=str(tmp_path), checkpoint_every=1)
  first.run(2)
  first.close()
  resumed = _two_role_loop(workdir=str(tmp_path), checkpoint_every=1)
  assert resumed.iteration == 2
  resumed.step()
  resumed.close()
  for role in (spec.CHALLENGER, spec.SOLVER):
    assert int(resumed.states[role].step) == int(lp.states[role].step)
    for a, b in zip(jax.tree.leaves(lp.states[role].params),
                    jax.tree.leaves(resumed.states[role].params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- judge
def test_judge_role_parsed_judgments_are_the_reward():
  tok, model, params, tasks, opt = fx.setup()
  judge_params = fx.perturbed(params, scale=0.3, seed=7)
  judge = stages.Judge(role=spec.JUDGE, template="{prompt}{completion}=",
                       parse=_parse_digit, max_new_tokens=2)
  m = _grpo(judge, name="judged")
  lp = _loop(m, roles={spec.JUDGE: judge_params})
  metrics = lp.step()
  batch = lp.last_batch
  rows = np.flatnonzero(batch.traj.valid)
  texts = [tok.decode(batch.traj.tokens[r][batch.traj.loss_mask[r]].tolist())
           for r in rows]
  prompts = [tasks[batch.task_index[r]].prompt + c + "=" for r, c in zip(rows, texts)]
  judgments = _greedy_texts(model, judge_params, tok, prompts, 2)
  want = np.asarray([_parse_digit(j) if _parse_digit(j) is not None else 0.0
                     for j in judgments], np.float32)
  np.testing.assert_array_equal(batch.rewards[rows, 0], want)
  assert lp.reward_names == ("judge",) and "reward/judge/mean" in metrics
  # The policy can be its own judge: a role sharing the policy's live weights.
  own = _loop(m, roles={spec.JUDGE: spec.POLICY})
  own.step()
  assert own.role_params(spec.JUDGE) is own.state.params


# ----------------------------------------------------------- online DPO
def test_dpo_on_pairs_built_online_from_each_group():
  beta = 0.1
  m = methods.make_method(
      name="online_dpo", rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW, temperature=1.0),
                         reward_fns=(fx.first_is_digit,),
      transform=chain(rescoring.ref_logprobs(), pairs.best_vs_worst()),
      objective=objective((1.0, preference.dpo(beta=beta), "dpo")),
      roles=methods.base.reference_role(1.0))
  lp = _loop(m)
  p0 = fx.host_params(lp.state.params)
  metrics = lp.step()
  traj = lp.last_traj
  raw = np.asarray(lp.last_batch.rewards, np.float64)[:, 0].reshape(-1, fx.N)
  chosen = np.asarray(traj.extras[preference.IS_CHOSEN_KEY])
  pid = np.asarray(traj.pair_ids)
  # One pair per group whose rewards differ: best (first max) vs worst (first min).
  for g in range(fx.PROMPTS):
    rows = np.arange(g * fx.N, (g + 1) * fx.N)
    if raw[g].max() > raw[g].min():
      c = rows[np.argmax(raw[g])]
      assert chosen[rows].sum() == 1 and chosen[c] and pid[c] == rows[np.argmin(raw[g])]
    else:
      assert not chosen[rows].any()
  count = int(chosen.sum())
  assert metrics["transform/pairs/count"] == count and count > 0
  # First step at the reference (= initial params): every pair's margin is 0.
  np.testing.assert_allclose(metrics["loss_first"], np.log(2.0), rtol=1e-5)
  # And the formula, with the rollout params as policy and reference.
  lpr = fx.policy_logprobs(lp.model, p0, traj)
  lm = np.asarray(traj.loss_mask)
  seq = (lpr * lm).sum(1)
  ref = (np.asarray(traj.ref_logprobs, np.float64) * lm).sum(1)
  c = np.flatnonzero(chosen)
  delta = (seq[c] - ref[c]) - (seq[pid[c]] - ref[pid[c]])
  want = np.mean(np.log1p(np.exp(-beta * delta)))
  np.testing.assert_allclose(metrics["loss_first"], want, rtol=1e-5)


# ---------------------------------------------------- privileged teacher
def test_teacher_scores_the_students_samples_under_a_privileged_prompt():
  tok, model, params, tasks, opt = fx.setup()
  teacher = fx.perturbed(params, scale=0.2, seed=5)
  context = lambda t: t.prompt + t.answer + "="      # the answer, then '='
  m = methods.make_method(
      name="privileged", rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW, temperature=1.0),
                         reward_fns=(fx.first_is_digit,),
      transform=chain(importance.old_logprobs(),
                      rescoring.rescore(scorer=spec.TEACHER, params=spec.TEACHER,
                                        field="teacher_logprobs")),
      objective=objective((1.0, distillation.sampled_reverse_kl(
          estimator="k2", agg="token-mean"), "kd")),
      roles=(spec.Role(spec.TEACHER),),
      stage=lambda s: rollouts.WithContext(rollouts.Sample(s), context_fn=context))
  lp = _loop(m, roles={spec.TEACHER: (model, teacher)})
  metrics = lp.step()
  traj = lp.last_traj
  assert metrics["transform/rescore/token_mismatch"] == 0.0
  lm = np.asarray(traj.loss_mask)
  p = lp.prompt_len
  got = np.asarray(traj.teacher_logprobs)
  for b in range(traj.batch_size):
    if not lm[b].any():
      continue
    task = tasks[int(np.asarray(traj.prompt_ids)[b])]
    completion = np.asarray(traj.tokens)[b, p:][lm[b, p:]]
    ids = np.asarray(batching.encode_prompt(tok, context(task)) + completion.tolist())
    full = ids[None, :].astype(np.int32)
    pos = np.arange(full.shape[1])[None, :].astype(np.int32)
    want = fx._logprobs_jit(model)(teacher, full, pos, np.ones_like(full, bool))
    want = np.asarray(want)[0, -completion.size:]
    np.testing.assert_allclose(got[b][lm[b]], want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ group reward
def _vote_reward(inputs):
  """1.0 where a sample's answer is its group's majority answer; raises on a
  batch with more than one group (forcing the per-group retry)."""
  if len(set(np.asarray(inputs.group_ids).tolist())) > 1:
    raise RuntimeError("one group at a time")
  answers = [c.strip() or None for c in inputs.completions]
  winner, _ = voting.majority_vote(answers)
  return np.asarray([a is not None and a == winner for a in answers], np.float32)


def test_group_reward_is_retried_per_group_never_per_sample():
  stage = stages.host(stages.batch_reward(_vote_reward, "vote"))
  completions = ["1", "1", "2", "3", "4", "4", "4", "5"]
  group_ids = np.asarray([0, 0, 0, 0, 4, 4, 4, 4])
  inputs = stages.RewardInputs(tasks=[None] * 8, completions=completions,
                               group_ids=group_ids, prompt_ids=group_ids // 4,
                               rows=np.arange(8))

  class Ctx:
    reward_timeout_s = 5.0

  r, info = stage(Ctx(), inputs)
  np.testing.assert_array_equal(r[:, 0], [1, 1, 0, 0, 1, 1, 1, 0])
  assert info["retried"] and info["num_failed"] == 0
  # Per sample, every row would have been its own majority (all 1.0).
  assert not np.all(r == 1.0)
  # Under the loop: group ids reach the stage and the rewards are per group.
  lp = _loop(_grpo(stages.batch_reward(_vote_reward, "vote"), name="vote"))
  lp.step()
  b = lp.last_batch
  texts = [fx_text.strip() or None for fx_text in
           (lp.tokenizer.decode(b.traj.tokens[r][b.traj.loss_mask[r]].tolist())
            for r in range(b.traj.batch_size))]
  for g in range(fx.PROMPTS):
    rows = range(g * fx.N, (g + 1) * fx.N)
    winner, _ = voting.majority_vote([texts[r] for r in rows])
    want = [float(texts[r] is not None and texts[r] == winner) for r in rows]
    np.testing.assert_array_equal(b.rewards[list(rows), 0], want)


# -------------------------------------------------------------- refusals
def test_methods_whose_needs_the_run_does_not_meet_are_refused():
  with pytest.raises(spec.ConfigurationError, match="'kdrl'.*role 'teacher'"):
    _loop(methods.kdrl(rollout=RolloutSpec(n=2, max_new_tokens=2)))
  judge = stages.Judge(role=spec.JUDGE, parse=_parse_digit)
  with pytest.raises(spec.ConfigurationError, match="role 'judge'"):
    _loop(_grpo(judge))
  with pytest.raises(spec.ConfigurationError, match="value head"):
    tok, model, params, tasks, opt = fx.setup()
    from jaxsi.models import config as mcfg  # pylint: disable=g-import-not-at-top
    from jaxsi.models import model as mmodel  # pylint: disable=g-import-not-at-top
    cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=16,
                          n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
    plain, p = mmodel.init(cfg, jax.random.key(0))
    loop.Loop(model=plain, params=p, method=methods.ppo(rollout=RolloutSpec(n=2, max_new_tokens=2)),
              tokenizer=tok, tasks=tasks, optimizer=opt, prompts_per_step=2)
  with pytest.raises(spec.ConfigurationError, match="initial params"):
    _loop([CHALLENGER, SOLVER])                   # no params for the solver
  with pytest.raises(spec.ConfigurationError, match="jaxsi.spec.Method"):
    _loop(object())


def test_spec_validation():
  with pytest.raises(ValueError, match="n must be"):
    spec.RolloutSpec(n=0)
  with pytest.raises(ValueError, match="n must be"):
    spec.RolloutSpec(n=2.5)
  with pytest.raises(ValueError, match="minibatches"):
    spec.OptimSpec(minibatches=0)
  with pytest.raises(ValueError, match="source"):
    spec.Role("x", source="elsewhere")
  m = _grpo(fx.first_is_digit)
  with pytest.raises(ValueError, match="also listed"):
    dataclasses.replace(m, roles=(spec.Role(spec.POLICY),))
  assert jnp.asarray(m.temperature) == 1.0
