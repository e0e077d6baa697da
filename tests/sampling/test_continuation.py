"""Judging by continuing the generation's KV cache: the template test, the stop
token stripping (hand arrays), and equality with judging re-encoded prompts."""

import dataclasses
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi import spec
from jaxsi.data import char_tokenizer
from jaxsi.data import tasks as tasks_lib
from jaxsi.methods import self_rewarding as sr
from jaxsi.methods import self_training_common as common
from jaxsi.models import config as mcfg
from jaxsi.models import kv_cache
from jaxsi.models import model as mmodel
from jaxsi.rewards import judging
from jaxsi.sampling import continuation
from jaxsi.sampling import rollouts
from jaxsi.trajectory import Trajectory
from jaxsi.training import round_context
from jaxsi.training import rounds


def test_suffix_of():
  assert continuation.suffix_of("{prompt}{completion}|score:") == "|score:"
  assert continuation.suffix_of("{prompt}{completion} ok? {{y/n}}") == " ok? {y/n}"
  assert continuation.suffix_of("{prompt}{completion}") == ""
  # not a continuation: another field, or text before the candidate
  assert continuation.suffix_of("{prompt}{completion}|ref:{answer}|") is None
  assert continuation.suffix_of("Q: {prompt}{completion}|score:") is None
  assert continuation.suffix_of("{completion}{prompt}") is None
  # the miniature formats are continuations except the pairwise one
  assert continuation.suffix_of(judging.get_format("score_1_5").template) is not None
  assert continuation.suffix_of(judging.get_format("pairwise").template) is None


def test_strip_stop_hand_case():
  eos = 2
  # row 0: prompt [5, 2] (a prompt token equal to the stop id is kept),
  # completion [6, 2] (stopped), one pad; row 1: completion [7, 8, 9] (budget).
  tokens = np.array([[5, 2, 6, 2, 0], [0, 5, 7, 8, 9]], np.int32)
  input_mask = np.array([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]], bool)
  loss_mask = np.array([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], bool)
  traj = Trajectory.create(tokens, input_mask=input_mask, loss_mask=loss_mask)
  cache = kv_cache.KVCache(k=jnp.zeros((1, 2, 5, 1, 2)), v=jnp.zeros((1, 2, 5, 1, 2)),
                           mask=jnp.asarray(input_mask), index=jnp.asarray(5, jnp.int32))
  t2, c2 = continuation.strip_stop(traj, cache, (eos,))
  want = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(np.asarray(t2.input_mask), want)
  np.testing.assert_array_equal(np.asarray(c2.mask), want)
  np.testing.assert_array_equal(np.asarray(t2.loss_mask),
                                [[0, 0, 1, 0, 0], [0, 0, 1, 1, 1]])
  # the next position is the count of remaining real tokens: 3 and 4
  np.testing.assert_array_equal(np.asarray(t2.input_mask).sum(1), [3, 4])
  # nothing to strip: the same objects back
  t3, c3 = continuation.strip_stop(traj, cache, (99,))
  assert t3 is traj and c3 is cache


@pytest.fixture(scope="module")
def round_ctx():
  tok = char_tokenizer.CharTokenizer()
  cfg = mcfg.get_config("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                        n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64, max_seq_len=64)
  model, params = mmodel.init(cfg, jax.random.key(0))
  _, test = tasks_lib.make_train_test("addition", n_train=8, n_test=6, difficulty=[1],
                                      seed=0, reverse=True)
  # rollout_batch 8 with n = 2: 4 prompts per sampler batch, so the 6 tasks
  # take two batches, the second padded with dummy rows (sliced off the cache)
  config = rounds.RoundsConfig(max_new_tokens=5, batch_size=8, max_len=32,
                               rollout_batch=8, seed=0)
  ctx = round_context.RoundContext(
      round=1, model=model, params=params, base_params=params, tokenizer=tok,
      rng=jax.random.key(1), pool=None, config=config, workdir=tempfile.mkdtemp(),
      method=None)
  return ctx, list(test)


def test_judging_from_the_cache_equals_reencoded_prompts(round_ctx):
  ctx, test = round_ctx
  fmt = judging.get_format("score_1_5")
  rollout = spec.RolloutSpec(n=2, temperature=1.0)
  ro = common.sample(ctx, test, rollout, keep_cache=True)
  assert len(ro.caches) == 2 and ro.cache_params is ctx.params
  per = [test[i // ro.n] for i in range(len(ro.texts))]
  cached = sr.self_judge(ctx, per, ro.texts, fmt, samples=ro)
  assert ro.caches is None                      # released after use
  scratch = sr.self_judge(ctx, per, ro.texts, fmt)
  assert len(cached[2]) == len(ro.texts) == 12
  assert cached[2] == scratch[2]                # the judgment texts
  assert cached[1] == scratch[1]                # statuses
  assert cached[0] == scratch[0]                # scores
  # the cache was used: the re-encoded path appends no Samples to ctx.generated
  # either, so check the continuation directly on fresh samples
  ro2 = common.sample(ctx, test, rollout, keep_cache=True)
  texts = ctx.continue_samples(ro2, "|score:")
  assert texts == scratch[2]
  assert ctx.continue_samples(ro2, "|score:") is None      # caches gone


def test_other_params_or_no_cache_fall_back(round_ctx):
  ctx, test = round_ctx
  rollout = spec.RolloutSpec(n=2, temperature=1.0)
  ro = common.sample(ctx, test, rollout, keep_cache=True)
  other = jax.tree.map(lambda x: x * 1.0, ctx.params)
  assert ctx.continue_samples(ro, "|score:", params=other) is None
  assert ro.caches is not None                  # not consumed by a refusal
  plain = common.sample(ctx, test, rollout)
  assert plain.caches is None and ctx.continue_samples(plain, "|score:") is None
  with pytest.raises(ValueError, match="keep_cache needs a plain"):
    ctx.sample(test, stage=_NotSample(rollout), keep_cache=True)


@dataclasses.dataclass(frozen=True)
class _NotSample(rollouts.Sample):
  """A stage that is not a plain rollouts.Sample (a subclass)."""
