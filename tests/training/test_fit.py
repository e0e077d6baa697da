"""fit: SFT, DPO pairs and score regression through one resumable loop."""

import jax
import numpy as np
import pytest

from jaxsi.data import batching
from jaxsi.training import fit
from jaxsi.training import steps as steps_lib
from tests.methods import rl_fixtures as fx

FAST = steps_lib.FAST_COMPILE


@pytest.fixture(scope="module")
def tiny():
  tok, model, params, tasks, _ = fx.setup()
  return tok, model, params, tasks


def _examples(tasks):
  return [dict(prompt=t.prompt, completion=t.target, task_id=t.id) for t in tasks]


def _pairs(tasks):
  """chosen = the target, rejected = the target with its first digit bumped."""
  prompts = [t.prompt for t in tasks]
  chosen = [t.target for t in tasks]
  rejected = [str((int(c[0]) + 1) % 10) + c[1:] for c in chosen]
  return prompts, chosen, rejected


def _seq_logprobs(model, params, traj):
  out = steps_lib.model_outputs_fn(model)(params, traj)
  lp, lm = np.asarray(out.logprobs, np.float64), np.asarray(traj.loss_mask)
  return (lp * lm).sum(axis=1)


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sft_loss_decreases(tiny):
  tok, model, params, tasks = tiny
  data = fit.sft_examples(tok, _examples(tasks), max_len=12)
  res = fit.fit(model=model, params=params, objective=fit.sft(), data=data,
                optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=30,
                batch_size=8, seed=0, log_every=10, compiler_options=FAST)
  losses = [float(h["loss"]) for h in res.history]
  assert len(losses) == 30 and res.position == 30 and res.start_position == 0
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert res.metrics["loss"] == pytest.approx(np.mean(losses[-10:]), rel=1e-6)
  # The caller's params are untouched (fit trains a copy).
  _leaves_equal(params, fx.setup()[2])


def _dpo_hand_loss(model, params, ref_params, data, beta):
  traj = data.batch(np.arange(len(data)))
  pi = _seq_logprobs(model, params, traj)
  ref = _seq_logprobs(model, ref_params, traj)
  p = len(data)
  margin = (pi[:p] - ref[:p]) - (pi[p:] - ref[p:])
  return float(np.mean(np.log1p(np.exp(-beta * margin))))  # −log σ(β·margin)


def test_dpo_first_loss_is_the_hand_formula(tiny):
  tok, model, params, tasks = tiny
  prompts, chosen, rejected = _pairs(tasks[:8])
  beta = 0.5
  # Reference = the initial params: every margin is 0, the loss log 2.
  data = fit.preference_data(tok, prompts, chosen, rejected, max_len=12,
                             reference=(model, params), reference_batch=16)
  res = fit.fit(model=model, params=params, objective=fit.preference("dpo", beta=beta),
                data=data, optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=1,
                batch_size=16, seed=0, compiler_options=FAST)
  first = float(res.history[0]["loss"])
  assert first == pytest.approx(np.log(2.0), abs=1e-5)
  assert first == pytest.approx(_dpo_hand_loss(model, params, params, data, beta),
                                abs=1e-5)
  # Another reference: the loss is still the hand formula (and not log 2).
  other = fx.perturbed(params, scale=0.2)
  data = fit.preference_data(tok, prompts, chosen, rejected, max_len=12,
                             reference=(model, other), reference_batch=16)
  res = fit.fit(model=model, params=params, objective=fit.preference("dpo", beta=beta),
                data=data, optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=1,
                batch_size=16, seed=0, compiler_options=FAST)
  hand = _dpo_hand_loss(model, params, other, data, beta)
  assert abs(hand - np.log(2.0)) > 1e-3
  assert float(res.history[0]["loss"]) == pytest.approx(hand, abs=1e-5)


def test_pair_batches_keep_pairs_together(tiny):
  tok, _, _, tasks = tiny
  prompts, chosen, rejected = _pairs(tasks[:6])
  data = fit.preference_data(tok, prompts, chosen, rejected, max_len=12)
  traj = data.batch(np.asarray([4, 1, 2]))
  np.testing.assert_array_equal(traj.pair_ids, [3, 4, 5, 0, 1, 2])
  ref = batching.sft_arrays(tok, [prompts[4]], [rejected[4]], max_len=12)
  np.testing.assert_array_equal(traj.tokens[3], ref["tokens"][0])
  assert traj.ref_logprobs is None
  with pytest.raises(ValueError, match="not a pairwise term"):
    fit.preference("kto")
  with pytest.raises(ValueError, match="split a preference pair"):
    fit.fit(model=None, params=None, objective=fit.preference("dpo"), data=data,
            optimizer=fit.OptimizerSpec(learning_rate=1e-3), steps=1, batch_size=5,
            seed=0)


def test_score_regression_first_loss_matches_numpy(tiny):
  tok, model, params, tasks = tiny
  ex = tasks[:8]
  scores = np.linspace(-1.0, 2.0, len(ex)).astype(np.float32)
  data = fit.score_data(tok, [t.prompt for t in ex], [t.target for t in ex], scores,
                        max_len=12)
  res = fit.fit(model=model, params=params, objective=fit.score_regression(),
                data=data, optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=1,
                batch_size=8, seed=0, compiler_options=FAST)
  traj = data.batch(np.arange(8))
  values = np.asarray(steps_lib.model_outputs_fn(model, with_values=True)(
      params, traj).values, np.float64)
  lm = np.asarray(traj.loss_mask)
  last = np.asarray([np.flatnonzero(row)[-1] for row in lm])
  v = values[np.arange(8), last]
  expected = 0.5 * np.mean((v - scores) ** 2)
  assert float(res.history[0]["loss"]) == pytest.approx(expected, rel=1e-5)
  assert float(res.history[0]["score_target_mean"]) == pytest.approx(scores.mean(),
                                                                     rel=1e-5)


class Interrupt(Exception):
  pass


def test_resume_after_an_interruption_is_exact(tiny, tmp_path):
  tok, model, params, tasks = tiny
  data = fit.sft_examples(tok, _examples(tasks), max_len=12)
  kw = dict(model=model, params=params, objective=fit.sft(), data=data,
            optimizer=fit.OptimizerSpec(learning_rate=1e-2, warmup_steps=2), steps=6,
            batch_size=4, seed=3, save_every=2, log_every=1, compiler_options=FAST)
  ref = fit.fit(**kw)

  def stop(position, metrics):
    del metrics
    if position == 5:
      raise Interrupt()

  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(Interrupt):
    fit.fit(ckpt_dir=ckpt, callback=stop, **kw)
  got = fit.fit(ckpt_dir=ckpt, **kw)
  assert got.start_position == 4 and got.position == 6
  _leaves_equal(ref.params, got.params)
  assert [float(h["loss"]) for h in got.history] == [
      float(h["loss"]) for h in ref.history[4:]]
  # A checkpoint beyond the requested steps is refused.
  with pytest.raises(ValueError, match="checkpoint at step 4 > steps=3"):
    fit.fit(ckpt_dir=ckpt, **dict(kw, steps=3))


def test_metrics_rows_are_exactly_once_across_an_interruption(tiny, tmp_path):
  # Rows every 3 steps, checkpoints every 2: interrupted after step 5 (past
  # the row at 3 and the checkpoint at 4), the resumed fit rewinds nothing
  # it needs, writes the row at 6 from the same three steps, and the file
  # equals an uninterrupted fit's.
  from jaxsi.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  tok, model, params, tasks = tiny
  data = fit.sft_examples(tok, _examples(tasks), max_len=12)
  kw = dict(model=model, params=params, objective=fit.sft(), data=data,
            optimizer=fit.OptimizerSpec(learning_rate=1e-2), steps=7,
            batch_size=4, seed=3, save_every=2, log_every=3, compiler_options=FAST)

  def rows(workdir, **extra):
    w = metrics_lib.MetricWriter(str(workdir), tensorboard=False, console=False)
    try:
      fit.fit(writer=w, **kw, **extra)
    finally:
      w.close()
    return [{k: v for k, v in r.items() if k != "time"}
            for r in metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))]

  ref = rows(tmp_path / "ref")
  assert [r["step"] for r in ref] == [3, 6, 7]

  def stop(position, metrics):
    del metrics
    if position == 5:
      raise Interrupt()

  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(Interrupt):
    rows(tmp_path / "run", ckpt_dir=ckpt, callback=stop)
  assert rows(tmp_path / "run", ckpt_dir=ckpt) == ref


def test_equal_settings_compile_once(tiny):
  tok, model, params, tasks = tiny
  data = fit.sft_examples(tok, _examples(tasks), max_len=12)
  opt = fit.OptimizerSpec(learning_rate=1.2345e-3)   # a fresh cache entry
  for seed in (0, 1):
    fit.fit(model=model, params=params, objective=fit.sft(), data=data, optimizer=opt,
            steps=2, batch_size=8, seed=seed, compiler_options=FAST)
  _, update = fit.cached_update_step(model=model, objective=fit.sft(), optimizer=opt,
                                     steps=2, compiler_options=FAST)
  assert update.trace_count() == 1
  _, other = fit.cached_update_step(model=model, objective=fit.sft(), optimizer=opt,
                                    steps=3, compiler_options=FAST)
  assert other is not update   # another schedule length, another step


def test_small_datasets_are_tiled_and_bad_data_is_refused(tiny):
  tok, model, params, tasks = tiny
  data = fit.sft_examples(tok, _examples(tasks[:3]), max_len=12)
  res = fit.fit(model=model, params=params, objective=fit.sft(), data=data,
                optimizer=fit.OptimizerSpec(learning_rate=1e-3), steps=1, batch_size=8,
                seed=0, compiler_options=FAST)
  assert float(res.history[0]["tokens"]) == pytest.approx(
      sum(np.asarray(data.arrays["loss_mask"])[i].sum() for i in fit.tile_to(3, 8)))
  empty = fit.FitData.sft({k: np.zeros((0, 4), v) for k, v in
                           (("tokens", np.int32), ("input_mask", bool),
                            ("loss_mask", bool))})
  with pytest.raises(ValueError, match="no training data"):
    fit.fit(model=model, params=params, objective=fit.sft(), data=empty,
            optimizer=fit.OptimizerSpec(learning_rate=1e-3), steps=1, batch_size=8,
            seed=0)
  with pytest.raises(ValueError, match="no training examples"):
    fit.sft_examples(tok, [], max_len=12)
  long = [dict(prompt="1+1=", completion="2" * 20)]
  with pytest.raises(ValueError, match="max_len=12"):
    fit.sft_examples(tok, long, max_len=12)
  with pytest.raises(ValueError, match="every example is longer"):
    fit.sft_examples(tok, long, max_len=12, drop_too_long=True)
  kept = fit.sft_examples(tok, long + _examples(tasks[:2]), max_len=12,
                          drop_too_long=True)
  assert len(kept) == 2
  with pytest.raises(ValueError, match="missing arrays"):
    fit.FitData("scores", dict(kept.arrays))
