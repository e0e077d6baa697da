"""SFT-Sharpening: best-of-N by the model's own log-likelihood."""

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import batching
from jaxsi.data import char_tokenizer
from jaxsi.methods import self_training_common as common
from jaxsi.methods import sharpening
from jaxsi.models import config as mcfg
from jaxsi.models import logprobs
from jaxsi.models import model as mmodel
from jaxsi.training import round_context
from jaxsi.training import rounds
from jaxsi.trajectory import Trajectory


def rec(tid, s, completion, lp, n_tokens, correct=False):
  return dict(task_id=tid, prompt="q", sample=s, completion=completion, correct=correct,
              answer=completion, logprob=lp, logprob_mean=lp / n_tokens, difficulty=1)


RECORDS = [rec("a", 0, "1", -3.0, 3), rec("a", 1, "22", -2.5, 5, True),
           rec("a", 2, "3", -2.5, 2), rec("b", 0, "4", -0.5, 1),
           rec("b", 1, "5", -0.9, 9, True)]


def test_best_of_n_by_likelihood():
  best = common.best_of_n(RECORDS, score="logprob")
  assert [(r["task_id"], r["completion"]) for r in best] == [("a", "22"), ("b", "4")]
  best = common.best_of_n(RECORDS, score="logprob_mean")
  assert [(r["task_id"], r["completion"]) for r in best] == [("a", "22"), ("b", "5")]


def test_select_metrics():
  m = sharpening.sharpening(rollout=spec.RolloutSpec(n=3, temperature=1.0))
  examples, _, metrics = m.select(RECORDS, {}, None)
  assert [e["completion"] for e in examples] == ["22", "4"]
  assert metrics["selected_accuracy"] == pytest.approx(0.5)
  assert metrics["selected_logprob"] == pytest.approx((-2.5 - 0.5) / 2)
  assert not m.include_labeled and m.train_from == "current"


def test_sequence_logprobs_is_the_sum_over_the_completion():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=32)
  model, params = mmodel.init(cfg, jax.random.key(2))
  arr = batching.sft_arrays(tok, ["12+3=", "7+7="], ["15", "14"], max_len=12)
  traj = Trajectory.create(arr["tokens"], input_mask=arr["input_mask"],
                           loss_mask=arr["loss_mask"])
  lp, _ = jax.jit(lambda p, t: logprobs.token_logprobs(
      model, p, t.tokens, t.positions, input_mask=t.input_mask))(params, traj)
  want = np.sum(np.where(arr["loss_mask"], np.asarray(lp), 0.0), axis=1)
  np.testing.assert_allclose(round_context.sequence_logprobs(model, params, traj), want,
                             rtol=1e-5)
  np.testing.assert_allclose(
      round_context.sequence_logprobs(model, params, traj, normalize=True),
      want / arr["loss_mask"].sum(1), rtol=1e-5)


def test_gin():
  gin = pytest.importorskip("gin")
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "gin_configs/methods/sharpening.gin"
  gin.clear_config()
  gin.parse_config_file(str(path))
  assert gin.query_parameter("%METHOD").scoped_configurable_fn().name == "sharpening"
  gin.clear_config()


def test_sampled_eval_and_evaluate(tmp_path):
  """The held-out selectors: random choice, maj@N, likelihood best-of-N, pass@N."""
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=32)
  model, params = mmodel.init(cfg, jax.random.key(3))
  from jaxsi.data import tasks as tasks_lib
  tasks = tasks_lib.make_tasks("addition", 6, difficulty=1, seed=0)
  config = rounds.RoundsConfig(max_new_tokens=3, rollout_batch=16, eval_n=4, seed=0)
  ctx = round_context.RoundContext(round=0, model=model, params=params, base_params=params,
                                   tokenizer=tok, rng=jax.random.key(0), pool=None,
                                   config=config, workdir=str(tmp_path))
  out, ro, logp = common.sampled_eval(ctx, tasks, n=4, temperature=1.0)
  correct = np.asarray(ro.correct, bool)
  assert len(ro.texts) == 24 and logp.shape == (24,)
  assert out["random_choice"] == pytest.approx(correct.mean())
  assert out["pass_at_n"] == pytest.approx(correct.reshape(6, 4).any(1).mean())
  assert out["likelihood_best_of_n"] == pytest.approx(
      common.best_of_n_accuracy(logp, correct, 4))
  np.testing.assert_allclose(logp, round_context.sequence_logprobs(model, params, ro.traj))
  # the same key: equal samples every call (every round sees equally drawn samples)
  def same(a, b):   # NaN-aware (pair accuracy is NaN without correct/incorrect pairs)
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_equal(a[k], b[k])

  again, _, _ = common.sampled_eval(ctx, tasks, n=4, temperature=1.0)
  same(again, out)
  m = sharpening.sharpening(rollout=spec.RolloutSpec(n=2, temperature=1.0))
  ev = m.evaluate(ctx, tasks)
  same({k: v for k, v in ev.items() if k != "mean_logprob"}, out)
  assert ev["mean_logprob"] == pytest.approx(float(np.mean(logp)))
  assert sharpening.sharpening(evaluate_best_of_n=False).evaluate is None
