"""Tests of the cached sampler against full (uncached) forward passes.

Compilation is the expensive part on CPU, so the tests share a few sampler
configurations (module fixtures) and reuse their compilations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.models import config as mcfg
from jaxsi.models import model as mmodel
from jaxsi.sampling import sampler
from jaxsi.sampling import strategies as st

PROMPTS = [[3, 4], [5, 6, 7, 8, 9], [10, 11, 12]]
GEN = 8
# Shared bucket settings: P = 16, G = 8, 4 prompt rows.
BUCKETS = dict(prompt_buckets=(16, 32), gen_buckets=(GEN,), batch_buckets=(4,))
# Every uncached reference forward pass runs on [REF_ROWS, REF_WIDTH] (one
# compilation).
REF_ROWS, REF_WIDTH = 8, 48


@pytest.fixture(scope="module")
def tiny():
  cfg = mcfg.get_config("tiny", vocab_size=32, d_model=32, n_layers=2, n_heads=2,
                        n_kv_heads=1, head_dim=16, d_ff=64)
  return mmodel.init(cfg, jax.random.key(0))


@pytest.fixture(scope="module")
def forward(tiny):
  """Uncached logits of [b, t] arrays, zero-padded to [REF_ROWS, REF_WIDTH]."""
  model, _ = tiny
  fn = jax.jit(lambda params, tokens, positions, mask: model.apply(
      params, tokens, positions, input_mask=mask)[0])

  def run(params, tokens, positions, mask):
    b, t = np.shape(tokens)
    pad = lambda x: np.pad(np.asarray(x), ((0, REF_ROWS - b), (0, REF_WIDTH - t)))
    return fn(params, pad(tokens), pad(positions), pad(mask))[:b, :t]

  return run


@pytest.fixture(scope="module")
def greedy_reference(tiny, forward):
  """Step-by-step argmax of the full forward pass, each row unpadded."""
  _, params = tiny
  seqs = [list(p) for p in PROMPTS]
  logprobs = [[] for _ in PROMPTS]
  for _ in range(GEN):
    tokens = np.zeros((len(seqs), 16), np.int32)
    mask = np.zeros((len(seqs), 16), bool)
    for b, s in enumerate(seqs):
      tokens[b, :len(s)] = s
      mask[b, :len(s)] = True
    positions = np.tile(np.arange(16, dtype=np.int32), (len(seqs), 1))
    logits = np.asarray(forward(params, tokens, positions, mask))
    for b, s in enumerate(seqs):
      row = logits[b, len(s) - 1]
      tok = int(np.argmax(row))
      logprobs[b].append(float(jax.nn.log_softmax(row)[tok]))
      s.append(tok)
  return [s[len(p):] for s, p in zip(seqs, PROMPTS)], logprobs


@pytest.fixture(scope="module")
def greedy_run(tiny, greedy_reference):
  """Greedy sampling with two stop ids, one of which splits the rows."""
  model, params = tiny
  stops = _stop_ids(greedy_reference[0])
  traj, cache = sampler.sample(
      model, params, PROMPTS, rng=jax.random.key(0), strategy=st.Greedy(),
      max_new_tokens=GEN, stop_ids=stops, return_cache=True, **BUCKETS)
  return stops, traj, cache


def _completion(traj, b):
  """Real completion tokens and behaviour logprobs of row b (last turn)."""
  loss = np.asarray(traj.loss_mask[b])
  turns = np.asarray(traj.turn_ids[b])
  sel = loss & (turns == turns.max())
  return (np.asarray(traj.tokens[b])[sel].tolist(),
          np.asarray(traj.behaviour_logprobs[b])[sel])


def _full_forward_logprobs(params, forward, traj):
  """log p(tokens[t] | tokens[:t]) from one uncached forward pass (shifted)."""
  logits = forward(params, traj.tokens, traj.positions, traj.input_mask)
  lp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  tok = jnp.take_along_axis(lp, traj.tokens[:, 1:, None], axis=-1)[..., 0]
  return np.pad(np.asarray(tok), ((0, 0), (1, 0)))


def _first_stop(tokens, stops):
  cut = [i for i, t in enumerate(tokens) if t in stops]
  return cut[0] if cut else None


def _stop_ids(reference_tokens):
  """(tok, 31) such that some rows stop early and some run to the budget."""
  for tok in reference_tokens[0][1:]:
    firsts = [_first_stop(row, (tok, 31)) for row in reference_tokens]
    if None in firsts and any(f is not None for f in firsts):
      return (tok, 31)
  raise AssertionError("fixture is degenerate: no token splits the rows")


# ------------------------------------------------------------------ greedy
def test_greedy_equals_full_forward_argmax_and_stops(greedy_run, greedy_reference):
  ref_tokens, ref_logprobs = greedy_reference
  stops, traj, _ = greedy_run
  assert traj.tokens.shape == (4, 16 + GEN)
  lengths, finished = [], []
  for b, ref in enumerate(ref_tokens):
    cut = _first_stop(ref, stops)
    n = GEN if cut is None else cut + 1
    lengths.append(n)
    finished.append(cut is not None)
    tokens, logprobs = _completion(traj, b)
    assert tokens == ref[:n]
    # Greedy reports log-probs under the temperature-1 distribution.
    np.testing.assert_allclose(logprobs, ref_logprobs[b][:n], atol=1e-5)
    # After the stop token: padding, out of every mask, zero log-prob.
    np.testing.assert_array_equal(np.asarray(traj.tokens[b, 16 + n:]), 0)
    np.testing.assert_array_equal(
        np.asarray(traj.loss_mask[b]),
        [False] * 16 + [True] * n + [False] * (GEN - n))
    np.testing.assert_array_equal(np.asarray(traj.input_mask[b, 16:]),
                                  np.asarray(traj.loss_mask[b, 16:]))
    assert not np.asarray(traj.behaviour_logprobs[b])[
        ~np.asarray(traj.loss_mask[b])].any()
  assert any(finished) and not all(finished)
  np.testing.assert_array_equal(np.asarray(traj.extras["completion_length"]),
                                lengths + [0])
  np.testing.assert_array_equal(np.asarray(traj.extras["finished"]),
                                finished + [False])
  np.testing.assert_array_equal(np.asarray(traj.completion_lengths[:3]), lengths)
  # Layout: prompts left-padded, positions over real tokens.
  np.testing.assert_array_equal(np.asarray(traj.tokens[1, 11:16]), PROMPTS[1])
  np.testing.assert_array_equal(np.asarray(traj.input_mask[1, :16]),
                                [False] * 11 + [True] * 5)
  np.testing.assert_array_equal(np.asarray(traj.positions[1, 11:16 + lengths[1]]),
                                np.arange(5 + lengths[1]))


def test_dummy_rows_are_invalid_and_empty(greedy_run):
  _, traj, _ = greedy_run
  np.testing.assert_array_equal(np.asarray(traj.valid), [True, True, True, False])
  np.testing.assert_array_equal(np.asarray(traj.prompt_ids), [0, 1, 2, -1])
  assert not np.asarray(traj.loss_mask[3]).any()


def test_compiles_once_per_bucket(tiny, greedy_run, greedy_reference):
  model, params = tiny
  stops, _, _ = greedy_run
  before = sampler.trace_counts()["generate"]
  # Other prompts, other lengths, fewer prompts, shorter budget: same buckets.
  traj = sampler.sample(model, params, PROMPTS[:2], rng=jax.random.key(5),
                        strategy=st.Greedy(), max_new_tokens=3, stop_ids=stops,
                        **BUCKETS)
  sampler.sample(model, params, [[1] * 16, [2, 3, 4, 5, 6, 7]],
                 rng=jax.random.key(0), strategy=st.Greedy(), max_new_tokens=GEN,
                 stop_ids=stops, **BUCKETS)
  assert sampler.trace_counts()["generate"] == before
  # A budget of 3 stops after 3 tokens (unless a stop id came first).
  for b in range(2):
    ref = greedy_reference[0][b]
    cut = _first_stop(ref[:3], stops)
    assert _completion(traj, b)[0] == ref[:3 if cut is None else cut + 1]
  np.testing.assert_array_equal(np.asarray(traj.valid), [True, True, False, False])
  # A longer prompt falls into the next bucket: exactly one new compilation.
  sampler.sample(model, params, [[1] * 17], rng=jax.random.key(0),
                 strategy=st.Greedy(), max_new_tokens=GEN, stop_ids=stops,
                 **BUCKETS)
  assert sampler.trace_counts()["generate"] == before + 1


# ----------------------------------------------------- temperature sampling
@pytest.fixture(scope="module")
def temperature_run(tiny):
  model, params = tiny

  def run(seed):
    return sampler.sample(model, params, PROMPTS, rng=jax.random.key(seed),
                          strategy=st.Temperature(1.0), n=2, max_new_tokens=GEN,
                          stop_ids=(), **BUCKETS)

  return run


def test_behaviour_logprobs_equal_full_forward(tiny, forward, temperature_run):
  _, params = tiny
  traj = temperature_run(1)
  ref = _full_forward_logprobs(params, forward, traj)
  mask = np.asarray(traj.loss_mask)
  assert mask[:6].sum() == 6 * GEN
  np.testing.assert_allclose(np.asarray(traj.behaviour_logprobs)[mask], ref[mask],
                             atol=1e-5)
  # No masks at temperature 1: tempered == behaviour log-probs.
  np.testing.assert_allclose(np.asarray(traj.extras["tempered_logprobs"]),
                             np.asarray(traj.behaviour_logprobs), atol=1e-6)


def test_truncated_sampling_reports_logprobs_of_sampled_distribution(
    tiny, forward):
  model, params = tiny
  strategy = st.Sampling(temperature=0.7, top_p=0.8, min_p=0.05)
  traj = sampler.sample(model, params, PROMPTS, rng=jax.random.key(7),
                        strategy=strategy, max_new_tokens=GEN, stop_ids=(),
                        **BUCKETS)
  logits = forward(params, traj.tokens, traj.positions, traj.input_mask)
  tokens = np.asarray(traj.tokens)[:, 1:, None]
  mask = np.asarray(traj.loss_mask)
  # Token t is drawn from the logits at t - 1 (shifted).
  sampled = np.take_along_axis(np.asarray(strategy.log_probs(logits[:, :-1])),
                               tokens, -1)[..., 0]
  tempered = np.take_along_axis(
      np.asarray(jax.nn.log_softmax(logits[:, :-1] / 0.7)), tokens, -1)[..., 0]
  sampled = np.pad(sampled, ((0, 0), (1, 0)))
  tempered = np.pad(tempered, ((0, 0), (1, 0)))
  assert np.isfinite(sampled[mask]).all()  # every drawn token survived the masks
  np.testing.assert_allclose(np.asarray(traj.behaviour_logprobs)[mask],
                             sampled[mask], atol=1e-5)
  np.testing.assert_allclose(np.asarray(traj.extras["tempered_logprobs"])[mask],
                             tempered[mask], atol=1e-5)
  # Truncation renormalises: the sampled log-probs are strictly larger.
  assert (sampled[mask] > tempered[mask] + 1e-6).all()


def test_n_samples_per_prompt_groups(temperature_run):
  traj = temperature_run(1)
  assert traj.batch_size == 8  # 4 prompt rows (1 dummy) x n=2
  np.testing.assert_array_equal(np.asarray(traj.group_ids), [0, 0, 2, 2, 4, 4, 6, 6])
  np.testing.assert_array_equal(np.asarray(traj.prompt_ids),
                                [0, 0, 1, 1, 2, 2, -1, -1])
  np.testing.assert_array_equal(np.asarray(traj.valid), [True] * 6 + [False] * 2)
  tokens = np.asarray(traj.tokens)
  for i in range(3):
    np.testing.assert_array_equal(tokens[2 * i, :16], tokens[2 * i + 1, :16])
  # Two samples of one prompt are different draws.
  assert any((tokens[2 * i, 16:] != tokens[2 * i + 1, 16:]).any() for i in range(3))


def test_same_rng_same_output_different_rng_different(temperature_run):
  a, b, c = temperature_run(1), temperature_run(1), temperature_run(2)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.behaviour_logprobs),
                                np.asarray(b.behaviour_logprobs))
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()


# --------------------------------------------------------- multi-turn
def _real_tokens(traj, b):
  return np.asarray(traj.tokens[b])[np.asarray(traj.input_mask[b])].tolist()


def test_continue_equals_sampling_from_scratch(tiny, forward, greedy_run):
  model, params = tiny
  stops, traj, cache = greedy_run
  inject = [[20], [21, 22], [23, 24, 25], [0]]
  cont, cache2 = sampler.continue_sampling(
      model, params, traj, cache, inject, rng=jax.random.key(3),
      strategy=st.Greedy(), max_new_tokens=6, stop_ids=stops, gen_buckets=(GEN,),
      inject_buckets=(4,), return_cache=True)
  assert cont.tokens.shape == (4, 16 + GEN + 4 + GEN)
  assert cache2.mask.shape == (4, cont.length)
  # From scratch: the whole conversation as the prompt.
  convs = [_real_tokens(traj, b) + inject[b] for b in range(3)]
  scratch = sampler.sample(model, params, convs, rng=jax.random.key(3),
                           strategy=st.Greedy(), max_new_tokens=6, stop_ids=stops,
                           **BUCKETS)
  for b in range(3):
    tok_c, lp_c = _completion(cont, b)
    tok_s, lp_s = _completion(scratch, b)
    assert tok_c == tok_s and tok_c
    np.testing.assert_allclose(lp_c, lp_s, atol=1e-5)
    assert _real_tokens(cont, b) == convs[b] + tok_s
  for key in ("finished", "completion_length"):
    np.testing.assert_array_equal(np.asarray(cont.extras[key][:3]),
                                  np.asarray(scratch.extras[key][:3]))
  # Turn ids: prompt 0, first model turn 1, injected -1, second model turn 2.
  turns = np.asarray(cont.turn_ids[2])[np.asarray(cont.input_mask[2])]
  n1 = int(traj.extras["completion_length"][2])
  n2 = int(cont.extras["completion_length"][2])
  np.testing.assert_array_equal(
      turns, [0] * 3 + [1] * n1 + [-1] * 3 + [2] * n2)
  # The conversation (with its masked holes) scores like the sampler: an
  # uncached forward pass reproduces the behaviour log-probs of both turns.
  ref = _full_forward_logprobs(params, forward, cont)
  loss = np.asarray(cont.loss_mask)
  np.testing.assert_allclose(np.asarray(cont.behaviour_logprobs)[loss], ref[loss],
                             atol=1e-5)

  # And once more from the returned cache.
  inject2 = [[26], [27], [28, 29], [0]]
  cont2 = sampler.continue_sampling(
      model, params, cont, cache2, inject2, rng=jax.random.key(4),
      strategy=st.Greedy(), max_new_tokens=3, stop_ids=stops, gen_buckets=(GEN,),
      inject_buckets=(4,))
  convs2 = [_real_tokens(cont, b) + inject2[b] for b in range(3)]
  scratch2 = sampler.sample(model, params, convs2, rng=jax.random.key(4),
                            strategy=st.Greedy(), max_new_tokens=3,
                            stop_ids=stops, **BUCKETS)
  for b in range(3):
    tok_c, lp_c = _completion(cont2, b)
    tok_s, lp_s = _completion(scratch2, b)
    assert tok_c == tok_s
    np.testing.assert_allclose(lp_c, lp_s, atol=1e-5)
  assert int(np.asarray(cont2.turn_ids).max()) == 3
  assert int(np.asarray(cont2.turn_ids).min()) == -2


def test_continue_rejects_empty_injection(tiny, greedy_run):
  model, params = tiny
  _, traj, cache = greedy_run
  with pytest.raises(ValueError, match="empty"):
    sampler.continue_sampling(model, params, traj, cache, [[1], [], [2], []],
                              rng=jax.random.key(0), strategy=st.Greedy(),
                              max_new_tokens=2, stop_ids=())


def test_sample_rejects_empty_prompt(tiny):
  model, params = tiny
  with pytest.raises(ValueError, match="empty"):
    sampler.sample(model, params, [[1], []], rng=jax.random.key(0),
                   strategy=st.Greedy(), max_new_tokens=2, stop_ids=())


def test_sample_rejects_non_strategy(tiny):
  model, params = tiny
  with pytest.raises(TypeError, match="strategy"):
    sampler.sample(model, params, [[1]], rng=jax.random.key(0),
                   strategy="greedy", max_new_tokens=2, stop_ids=())


def test_scanned_model_samples_the_same_tokens_and_logprobs(tiny):
  """scan_layers=True: the cached decode scans the stacked blocks with the
  KV cache in the carry; same tokens and behaviour log-probs as the list."""
  model, params = tiny
  scanned = mmodel.build(model.config.replace(scan_layers=True))
  kwargs = dict(rng=jax.random.key(5), strategy=st.Temperature(1.0),
                max_new_tokens=GEN, stop_ids=(31,), **BUCKETS)
  ref = sampler.sample(model, params, PROMPTS, **kwargs)
  got = sampler.sample(scanned, mmodel.stack_layers(params), PROMPTS, **kwargs)
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(ref.tokens))
  np.testing.assert_allclose(np.asarray(got.behaviour_logprobs),
                             np.asarray(ref.behaviour_logprobs), atol=1e-6, rtol=0)
