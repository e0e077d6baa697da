"""Tests for jaxsi.sampling.privileged: the privileged-context layout.

Hand-built arrays for the pure layout; under the loop (the shared tiny RL
fixture) the stage's layout rescored by the policy has no token mismatch and
its log-probs equal a direct forward pass of [privileged prompt | completion].
"""

import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import batching
from jaxsi.data.registry import Task
from jaxsi.methods import base as methods
from jaxsi.sampling import privileged, rollouts
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop
from jaxsi.transforms import distillation, rescoring
from jaxsi.transforms.base import chain, objective
from tests.methods import rl_fixtures as fx


def _task(**kw):
  base = dict(id="t", prompt="12+34=", answer="46", category="addition",
              target="64")
  base.update(kw)
  return Task(**base)


# ------------------------------------------------------------- context fns
def test_context_fns():
  t = _task()
  assert privileged.answer_context(t) == "12+34=|46|"
  assert privileged.solution_context(t) == "12+34=|64|"        # the target
  assert privileged.solution_context(_task(target="")) == "12+34=|46|"
  assert privileged.skill_context(t) == "add digit by digit, carry 1|12+34="
  assert privileged.skill_context(t, {"addition": "sum"}) == "sum|12+34="
  with pytest.raises(KeyError, match="category 'nope'"):
    privileged.skill_context(_task(category="nope"))


# ------------------------------------------------------------------ layout
def test_layout_matches_hand_built_arrays():
  # Two rows; privileged prompts [1 5 6] and [1 7] left-padded to P' = 4
  # (pad 0); completion bucket G = 3: [11 12 pad] and [13 pad pad].
  c_tok, c_mask = rollouts.left_pad([[1, 5, 6], [1, 7]], 4, 0)
  comp = np.array([[11, 12, 0], [13, 0, 0]], np.int32)
  comp_mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
  tokens, mask, pos = privileged.privileged_layout(c_tok, c_mask, comp, comp_mask)
  np.testing.assert_array_equal(tokens, [[0, 1, 5, 6, 11, 12, 0],
                                         [0, 0, 1, 7, 13, 0, 0]])
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 1, 1, 0],
                                       [0, 0, 1, 1, 1, 0, 0]])
  # Positions over real tokens: BOS at 0, the completion right after the
  # prompt, padding keeps the last real position (0 on the left).
  np.testing.assert_array_equal(pos, [[0, 0, 1, 2, 3, 4, 4],
                                      [0, 0, 0, 1, 2, 2, 2]])
  assert tokens.dtype == np.int32 and pos.dtype == np.int32
  with pytest.raises(ValueError, match="context rows"):
    privileged.privileged_layout(c_tok[:1], c_mask[:1], comp, comp_mask)


def test_context_bucket_and_stage_refusals():
  assert privileged.context_bucket([[1] * 5, [1] * 17]) == 32
  with pytest.raises(ValueError, match="no privileged prompts"):
    privileged.context_bucket([])
  with pytest.raises(ValueError, match="context_fn"):
    privileged.Privileged(rollouts.Sample())
  with pytest.raises(ValueError, match="single-turn"):
    from jaxsi.sampling import multiturn  # pylint: disable=g-import-not-at-top
    privileged.Privileged(rollouts.Episodes(episode=multiturn.EpisodeSpec(max_turns=1)),
                          context_fn=privileged.answer_context)
  with pytest.raises(ValueError, match="teach"):
    privileged.Privileged(context_fn=privileged.answer_context, teach=-1)
  stage = privileged.Privileged(context_fn=privileged.answer_context, teach=2)
  assert stage.context_variants() == {"privileged": privileged.answer_context}
  assert stage.prompt_variants() == {}
  ts = [_task(id=str(i), prompt=f"{i}+1=", target=str(i + 1)) for i in range(3)]
  assert stage.supervised_extras(ts) == [("0+1=|46|", "1"), ("2+1=|46|", "3")]

  class NoVariants:
    prompt_variants = {}

  with pytest.raises(ValueError, match="did not encode the context variant"):
    privileged.Privileged(_Fixed(), context_fn=privileged.answer_context)(
        NoVariants(), None, None)


class _Fixed(rollouts.Stage):
  """A stage returning a fixed one-row batch (for the refusal test)."""

  spec = RolloutSpec(n=1, max_new_tokens=2)

  def __call__(self, ctx, params, rng):
    from jaxsi.trajectory import Trajectory  # pylint: disable=g-import-not-at-top
    traj = Trajectory.create(np.ones((1, 4), np.int32))
    return rollouts.Batch(traj=traj, rewards=np.zeros((1, 1), np.float32),
                          task_index=np.zeros((1,), int), info={})


# ------------------------------------------------------------ under the loop
# A privileged prompt longer than the 16-token sampling bucket: 20 '=' then
# the prompt and the answer (the fixture's alphabet is 0-9 + =).
def _long_context(t):
  return "=" * 20 + t.prompt + t.answer + "="


def test_loop_layout_rescores_exactly_like_a_direct_forward_pass():
  tok, model, params, tasks, opt = fx.setup()
  m = methods.make_method(
      name="privileged_self",
      rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW, temperature=1.0),
      reward_fns=(fx.first_is_digit,),
      transform=chain(rescoring.rescore(context="privileged",
                                        field="teacher_logprobs")),
      objective=objective((1.0, distillation.sampled_reverse_kl(), "kd")),
      stage=lambda s: privileged.Privileged(rollouts.Sample(s),
                                            context_fn=_long_context))
  lp = loop.Loop(model=model, params=params, method=m, tokenizer=tok,
                 tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                 compiler_options=loop.FAST_COMPILE)
  # The sampling bucket is the plain prompts' (16), not the privileged one's.
  assert lp.prompt_len == 16
  assert max(len(r) for r in lp.prompt_variants["privileged"]) > 16
  p0 = fx.host_params(params)
  metrics = lp.step()
  assert metrics["transform/rescore/token_mismatch"] == 0.0
  traj = lp.last_traj
  p = lp.prompt_len
  ext = {k: np.asarray(v) for k, v in traj.extras.items()}
  assert ext["privileged_tokens"].shape == (fx.N * fx.PROMPTS, 32 + fx.MAX_NEW)
  lm = np.asarray(traj.loss_mask)
  got = np.asarray(traj.teacher_logprobs)
  checked = 0
  for b in range(traj.batch_size):
    task = tasks[int(np.asarray(traj.prompt_ids)[b])]
    ctx_ids = batching.encode_prompt(tok, _long_context(task))
    assert ext["privileged_len"][b] == len(ctx_ids)
    row = ext["privileged_tokens"][b][ext["privileged_input_mask"][b]]
    completion = np.asarray(traj.tokens)[b, p:][np.asarray(traj.input_mask)[b, p:]]
    np.testing.assert_array_equal(row, ctx_ids + completion.tolist())
    if not lm[b].any():
      continue
    ids = np.asarray(ctx_ids + completion.tolist(), np.int32)[None, :]
    pos = np.arange(ids.shape[1], dtype=np.int32)[None, :]
    want = np.asarray(fx._logprobs_jit(model)(p0, ids, pos, np.ones_like(ids, bool)))
    n_loss = int(lm[b].sum())
    # The loss tokens are the first n_loss completion tokens.
    want = want[0, len(ctx_ids):len(ctx_ids) + n_loss]
    np.testing.assert_allclose(got[b][lm[b]], want, rtol=1e-4, atol=1e-5)
    checked += 1
  assert checked > 0
  # Not the plain-prompt log-probs: the context changes the distribution.
  plain = fx.policy_logprobs(model, p0, traj)
  assert np.abs(plain[lm] - got[lm]).max() > 1e-3
  # The training objective saw d = lp − lp_teacher (token mean at the params
  # of the rollout: the first update).
  want_kd = np.sum((plain - got) * lm) / lm.sum()
  np.testing.assert_allclose(metrics["kd/reverse_kl"], want_kd, rtol=1e-4, atol=1e-5)
  assert spec.POLICY in lp.states
