"""One-step off-policy pipelining (``Loop(staleness=1)``, issue #20 item 5).

Batch t is generated (rollout, rewards, transform chain) by θ_{t−1} while
update t−1 runs; update t trains θ_t on it. The tests: three stale steps
equal a hand-rolled reference built from the public jitted pieces, bit for
bit; the batch's ``old_logprobs`` are the behaviour policy's (so the PPO
ratio is π_θt / π_θ(t−1)); a checkpointed run resumes exactly; bad options
are refused by name.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import methods, spec, transforms
from jaxsi.spec import RolloutSpec
from jaxsi.training import loop, loop_steps, placement
from tests.methods import rl_fixtures as fx

SEED = 3
# β > 0: the prepared batch also reads a frozen role (the KL reference).
GRPO = methods.grpo(rollout=RolloutSpec(n=fx.N, max_new_tokens=fx.MAX_NEW),
                    reward_fns=(fx.first_is_digit,), kl_coef=0.04)


def _trainer(method=GRPO, **kw):
  tok, model, params, tasks, opt = fx.setup()
  kw.setdefault("compiler_options", loop.FAST_COMPILE)
  return loop.Loop(model=model, params=params, method=method, tokenizer=tok,
                   tasks=tasks, optimizer=opt, prompts_per_step=fx.PROMPTS,
                   seed=SEED, **kw)


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _reference(steps: int):
  """Hand-rolled one-step-stale training from the public pieces.

  A synchronous Loop only supplies the rollout stage (``collect``, which
  draws prompts in order) and the roles; the keys, the transform chain
  (``loop_steps.prepare_jit``) and the update (``loop_steps.train_fn``) are
  called here: batch t from θ_{max(t−1, 0)}, update θ_t → θ_{t+1} from it.
  Returns the params after every step (host copies).
  """
  _, model, _, _, opt = fx.setup()
  ref = _trainer()
  phase = ref.phases[0]
  prepare = loop_steps.prepare_jit(loop.FAST_COMPILE)
  train = loop_steps.train_fn(model, opt, GRPO, loop.FAST_COMPILE)
  aux = {spec.REFERENCE: ref.role_params(spec.REFERENCE)}
  state = ref.state
  copy = lambda tree: jax.tree.map(lambda x: jnp.array(x, copy=True), tree)
  behaviour = copy(state.params)            # θ_{−1} := θ_0
  method_state = state.method_state
  out = []
  for t in range(steps):
    key = jax.random.fold_in(jax.random.key(SEED), t)
    batch = ref.collect(behaviour, jax.random.fold_in(key, 1), phase)
    traj = placement.to_device(
        batch.traj.replace(rewards=batch.rewards.astype(np.float32)))
    traj, method_state, _ = prepare(
        behaviour, aux, traj, method_state,
        placement.host_key(jax.random.fold_in(key, 2)), np.int32(t),
        transform=GRPO.transform, scorers=phase.scorers,
        lora_reference=phase.lora_reference)
    behaviour = copy(state.params)          # θ_t generates batch t+1
    perm = np.arange(traj.batch_size, dtype=np.int32)[None]  # 1 epoch × 1 mb
    state, _ = train(state.replace(method_state=method_state), traj, perm)
    out.append(fx.host_params(state.params))
  return out


@pytest.fixture(scope="module")
def stale_run():
  lp = _trainer(staleness=1)
  params, trajs, metrics = [], [], []
  for _ in range(3):
    metrics.append(lp.step())
    params.append(fx.host_params(lp.state.params))
    trajs.append(lp.last_traj)
  return params, trajs, metrics


def test_stale_training_equals_reference(stale_run):
  params, _, metrics = stale_run
  want = _reference(3)
  for t in range(3):
    for a, b in zip(_leaves(params[t]), _leaves(want[t])):
      np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
  assert all(m["pipeline/wait_s"] >= 0.0 for m in metrics)
  # The synchronous loop is another computation from step 1 on (batch 1
  # from θ_1, not θ_0); its step 0 is the same (batch 0 from θ_0 both).
  sync = _trainer()
  sync_params = []
  for _ in range(2):
    sync.step()
    sync_params.append(fx.host_params(sync.state.params))
  for a, b in zip(_leaves(sync_params[0]), _leaves(params[0])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(_leaves(sync_params[1]), _leaves(params[1])))
  assert "pipeline/wait_s" not in sync.history[-1]


def test_old_logprobs_are_the_behaviour_policy(stale_run):
  # Batch 2 was generated and scored by θ_1 (params after step 0... index
  # 0 holds θ_1); update 2 trains θ_2 (index 1), so on its first minibatch
  # the PPO ratio is exp(ℓp_θ2 − ℓp_θ1) ≠ 1: the importance correction.
  params, trajs, _ = stale_run
  _, model, _, _, _ = fx.setup()
  traj = trajs[2]
  m = np.asarray(traj.loss_mask, bool) & np.asarray(traj.valid, bool)[:, None]
  old = np.asarray(traj.old_logprobs, np.float64)
  theta1 = fx.policy_logprobs(model, params[0], traj)
  theta2 = fx.policy_logprobs(model, params[1], traj)
  np.testing.assert_allclose(old[m], theta1[m], rtol=0, atol=1e-5)
  log_ratio = theta2[m] - old[m]
  assert np.abs(log_ratio).max() > 1e-3, log_ratio


def test_stale_resume_is_exact(tmp_path, stale_run):
  want = stale_run[0][2]      # the uninterrupted run's θ_3
  first = _trainer(staleness=1, workdir=str(tmp_path), checkpoint_every=1)
  first.run(2)             # no prefetch on its last step: batch 2 is not made
  first.close()
  assert (tmp_path / "ckpt_behaviour").is_dir()
  resumed = _trainer(staleness=1, workdir=str(tmp_path), checkpoint_every=1)
  assert resumed.iteration == 2 and resumed.position == 2
  resumed.step()           # regenerates batch 2 from the saved θ_1
  resumed.close()
  for a, b in zip(_leaves(want), _leaves(resumed.state.params)):
    np.testing.assert_array_equal(a, b)
  # The workdir of a stale run is not resumed synchronously (nor the reverse).
  with pytest.raises(spec.ConfigurationError,
                     match="staleness=1; resuming it with staleness=0"):
    _trainer(workdir=str(tmp_path), checkpoint_every=1)


def test_staleness_bad_options_are_refused():
  with pytest.raises(ValueError, match="staleness must be one of"):
    _trainer(staleness=2)
  with pytest.raises(ValueError, match="staleness must be one of"):
    _trainer(staleness=True)
  solver = dataclasses.replace(GRPO, name="solver", train=spec.SOLVER)
  with pytest.raises(spec.ConfigurationError, match="staleness=1 pipelines one"):
    _trainer(method=[GRPO, solver], staleness=1,
             roles={spec.SOLVER: fx.perturbed(fx.setup()[2])})
  # No old_logprobs in the chain: ratio ≡ 1, refused before any update.
  no_ratio = dataclasses.replace(
      GRPO, name="no_ratio", roles=(),
      transform=transforms.chain(transforms.group_advantages(scale="group")),
      objective=transforms.objective((1.0, transforms.pg_clip(), "pg")))
  lp = _trainer(method=no_ratio, staleness=1)
  with pytest.raises(spec.ConfigurationError, match="'no_ratio' with staleness=1"):
    lp.step()
  assert lp.iteration == 0 and int(lp.state.step) == 0
