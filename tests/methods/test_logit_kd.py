"""Offline logit KD (jaxsi.methods.logit_kd): the top-k file and the one fit."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import batching
from jaxsi.methods import logit_kd
from jaxsi.models import logprobs as logprobs_lib
from jaxsi.training import fit as fit_lib
from jaxsi.training import steps as steps_lib
from tests.methods import rl_fixtures as fx
from tests.methods.test_gkd import _logits, np_jsd, teacher


def _arrays():
  tok = fx.setup()[0]
  prompts = ["1+2=", "3+4=", "2+2=", "5+1=", "0+7="]
  completions = ["3", "7", "4", "6", "7"]
  return batching.sft_arrays(tok, prompts, completions, max_len=8)


def test_file_roundtrip_chunking_and_vocab_check(tmp_path):
  t_model, t_params = teacher()
  arrays = _arrays()
  a = logit_kd.teacher_topk_arrays(t_model, t_params, arrays, k=3, batch_size=2)
  b = logit_kd.teacher_topk_arrays(t_model, t_params, arrays, k=3, batch_size=5)
  for key in (logit_kd.IDS, logit_kd.LOGPROBS, logit_kd.TAIL):   # chunk-invariant
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
  # Hand check of one position against the teacher's full logits:
  # top-3 = the 3 largest log-softmax entries, tail = log(1 − their mass).
  z = _logits(t_model, t_params, batching.sft_trajectory(arrays))
  r, t = 1, int(np.argmax(arrays["loss_mask"][1]))
  lp = z[r, t] - np.log(np.exp(z[r, t]).sum())
  top = np.sort(lp)[::-1][:3]
  np.testing.assert_allclose(a[logit_kd.LOGPROBS][r, t], top, rtol=1e-5)
  np.testing.assert_allclose(a[logit_kd.TAIL][r, t], np.log1p(-np.exp(top).sum()),
                             rtol=1e-4)
  path = str(tmp_path / "topk.npz")
  v = t_model.config.vocab_size
  logit_kd.write_topk_file(path, a, vocab_size=v)
  back = logit_kd.read_topk_file(path, vocab_size=v)
  assert set(back) == set(a)
  for key in a:
    np.testing.assert_array_equal(back[key], a[key])
  with pytest.raises(spec.ConfigurationError, match="vocab_size=%d.*vocab_size=%d" % (v, v + 1)):
    logit_kd.read_topk_file(path, vocab_size=v + 1)
  with pytest.raises(ValueError, match="k must be"):
    logit_kd.teacher_topk_arrays(t_model, t_params, arrays, k=v + 1)


def test_fit_first_loss_is_the_forward_kl(tmp_path):
  # k = V: the stored distribution is the teacher's; the first fit step's loss
  # is Σ_t KL(teacher_t ‖ student_t) / #loss tokens at the initial params.
  tok, model, params, _, _ = fx.setup()
  t_model, t_params = teacher()
  v = model.config.vocab_size
  arrays = logit_kd.teacher_topk_arrays(t_model, t_params, _arrays(), k=v)
  path = str(tmp_path / "topk.npz")
  logit_kd.write_topk_file(path, arrays, vocab_size=v)
  data = fit_lib.FitData("sft", logit_kd.read_topk_file(path, vocab_size=v))
  key, term = logit_kd.kd_objective(beta=0.0)
  res = fit_lib.fit(model=model, params=params, objective=fit_lib.Objective(key, term),
                    data=data, optimizer=fit_lib.OptimizerSpec(learning_rate=1e-2),
                    steps=2, batch_size=5, seed=0, log_every=1,
                    compiler_options=steps_lib.FAST_COMPILE)
  traj = batching.sft_trajectory(_arrays())
  d = np_jsd(_logits(model, params, traj), _logits(t_model, t_params, traj), 0.0)
  lm = np.asarray(traj.loss_mask, bool)
  want = fx.agg(d, lm, "token-mean")
  np.testing.assert_allclose(float(res.history[0]["loss"]), want, rtol=2e-4, atol=2e-5)
  # The fit moves the student towards the teacher.
  assert float(res.history[1]["loss"]) < float(res.history[0]["loss"])


def test_bad_options():
  with pytest.raises(ValueError, match="nll_coef"):
    logit_kd.kd_objective(nll_coef=-1)
  with pytest.raises(ValueError, match="extras arrays"):
    a = _arrays()
    fit_lib.FitData("sft", {**a, "extras/x": np.zeros((5, 7))})
