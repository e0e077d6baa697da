"""Tests of the sampling strategies on hand-computed distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.sampling import strategies as st

# Probabilities 0.5, 0.3, 0.15, 0.05 (shuffled so order is not assumed).
PROBS = np.array([0.15, 0.5, 0.05, 0.3], np.float32)
LOGITS = jnp.log(jnp.asarray(PROBS))


def _mask(strategy, logits=LOGITS):
  return np.asarray(strategy.logits_mask(logits))


def test_top_k_mask_keeps_k_largest():
  np.testing.assert_array_equal(_mask(st.TopK(k=2)), [False, True, False, True])
  np.testing.assert_array_equal(_mask(st.TopK(k=1)), [False, True, False, False])
  np.testing.assert_array_equal(_mask(st.TopK(k=10)), [True] * 4)


def test_top_k_mask_keeps_ties_with_kth():
  logits = jnp.array([1.0, 3.0, 3.0, 0.0])
  np.testing.assert_array_equal(
      np.asarray(st.top_k_mask(logits, k=1)), [False, True, True, False])


@pytest.mark.parametrize("p, expected", [
    (0.01, [False, True, False, False]),  # argmax always kept
    (0.4, [False, True, False, False]),   # 0.5 >= 0.4
    (0.75, [False, True, False, True]),   # 0.5 + 0.3 = 0.8 >= 0.75
    (0.9, [True, True, False, True]),     # 0.95 >= 0.9
    (0.99, [True, True, True, True]),
    (1.0, [True, True, True, True]),
])
def test_top_p_mask_smallest_nucleus(p, expected):
  np.testing.assert_array_equal(_mask(st.TopP(p=p)), expected)


def test_top_p_depends_on_temperature():
  # T=2: q ∝ sqrt(p) = (.3873, .7071, .2236, .5477)/1.8657
  #   = (.2076, .3790, .1198, .2936); sorted cum before: 0, .379, .6726 -> 3 kept.
  np.testing.assert_array_equal(_mask(st.TopP(p=0.7, temperature=2.0)),
                                [True, True, False, True])
  np.testing.assert_array_equal(_mask(st.TopP(p=0.7)),
                                [False, True, False, True])


def test_min_p_mask():
  # p_max = 0.5: p_min 0.25 -> keep p >= 0.125; p_min 0.5 -> keep p >= 0.25.
  np.testing.assert_array_equal(_mask(st.MinP(p_min=0.25)), [True, True, False, True])
  np.testing.assert_array_equal(_mask(st.MinP(p_min=0.5)), [False, True, False, True])
  np.testing.assert_array_equal(_mask(st.MinP(p_min=1.0)), [False, True, False, False])
  np.testing.assert_array_equal(_mask(st.MinP(p_min=0.0)), [True] * 4)


def test_masks_are_applied_in_order_top_k_then_top_p():
  # top-k 2 renormalises to (.625, .375): top-p 0.6 then keeps only the argmax,
  # while top-p 0.6 on the full distribution keeps 0.5 and 0.3.
  both = st.Sampling(top_k=2, top_p=0.6)
  np.testing.assert_array_equal(_mask(both), [False, True, False, False])
  np.testing.assert_array_equal(_mask(st.TopP(p=0.6)), [False, True, False, True])


def test_log_probs_renormalise_over_mask():
  lp = np.asarray(st.TopK(k=2).log_probs(LOGITS))
  np.testing.assert_allclose(np.exp(lp), [0.0, 0.625, 0.0, 0.375], atol=1e-6)
  lp = np.asarray(st.MinP(p_min=0.25).log_probs(LOGITS))
  np.testing.assert_allclose(np.exp(lp), [0.15 / .95, 0.5 / .95, 0.0, 0.3 / .95],
                             atol=1e-6)
  # Temperature only: softmax(log p / 2) = sqrt(p) / sum sqrt(p).
  q = np.sqrt(PROBS) / np.sqrt(PROBS).sum()
  np.testing.assert_allclose(np.exp(st.Temperature(2.0).log_probs(LOGITS)), q,
                             atol=1e-6)
  # tempered_log_probs ignores the masks.
  np.testing.assert_allclose(
      np.exp(st.TopK(k=2, temperature=2.0).tempered_log_probs(LOGITS)), q, atol=1e-6)


def test_sample_returns_logprob_of_drawn_token_and_respects_mask():
  strategy = st.TopK(k=2)
  keys = jax.random.split(jax.random.key(0), 4000)
  tokens, logprobs = jax.jit(jax.vmap(strategy.sample, in_axes=(None, 0)))(
      LOGITS, keys)
  tokens, logprobs = np.asarray(tokens), np.asarray(logprobs)
  assert set(np.unique(tokens)) == {1, 3}
  np.testing.assert_allclose(logprobs[tokens == 1], np.log(0.625), atol=1e-6)
  np.testing.assert_allclose(logprobs[tokens == 3], np.log(0.375), atol=1e-6)
  # Frequencies: 0.625 / 0.375 (std of the mean ~0.008).
  assert abs(np.mean(tokens == 1) - 0.625) < 0.04


def test_greedy_is_argmax_with_temperature_one_logprob():
  logits = jnp.array([[0.0, 2.0, 2.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
  tokens, logprobs = st.Greedy().sample(logits, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(tokens), [1, 0])  # lowest tied index
  np.testing.assert_allclose(
      np.asarray(logprobs),
      np.asarray(jax.nn.log_softmax(logits))[[0, 1], [1, 0]], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(st.Greedy().logits_mask(logits)),
                                [[False, True, True, False], [True, False, False, False]])


def test_presets_equal_general_sampling_and_jit():
  pairs = [
      (st.Temperature(0.7), st.Sampling(temperature=0.7)),
      (st.TopK(k=3, temperature=0.5), st.Sampling(temperature=0.5, top_k=3)),
      (st.TopP(p=0.7, temperature=2.0), st.Sampling(temperature=2.0, top_p=0.7)),
      (st.MinP(p_min=0.3), st.Sampling(min_p=0.3)),
  ]
  logits = jax.random.normal(jax.random.key(1), (3, 11))
  all_log_probs = lambda x: [(a.log_probs(x), b.log_probs(x)) for a, b in pairs]
  jitted = jax.jit(all_log_probs)(logits)
  for (preset, _), (lp_preset, lp_general) in zip(pairs, jitted):
    lp_preset = np.asarray(lp_preset)
    np.testing.assert_allclose(lp_preset, np.asarray(lp_general), atol=1e-6)
    # Every truncating preset removes some of the 11 tokens here.
    assert np.isinf(lp_preset).any() == (not isinstance(preset, st.Temperature))
    assert hash(preset) == hash(type(preset)(**preset.__dict__))


def test_batched_masks_are_per_row():
  logits = jnp.stack([LOGITS, LOGITS[::-1]])
  mask = np.asarray(st.TopP(p=0.75).logits_mask(logits))
  np.testing.assert_array_equal(mask, [[False, True, False, True],
                                       [True, False, True, False]])


@pytest.mark.parametrize("make", [
    lambda: st.Sampling(temperature=0.0),
    lambda: st.TopK(k=0),
    lambda: st.TopP(p=0.0),
    lambda: st.TopP(p=1.5),
    lambda: st.MinP(p_min=-0.1),
])
def test_invalid_strategies_raise(make):
  with pytest.raises(ValueError):
    make()
