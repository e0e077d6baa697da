"""The multi-turn driver: cache reuse == re-encoding, turn ids, masks, stops."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxsi.data import batching
from jaxsi.sampling import multiturn
from jaxsi.sampling import sampler
from jaxsi.sampling import strategies as st
from jaxsi.sampling import rollouts
from tests.methods import rl_fixtures as fx

G = 4          # tokens per model turn
I = 4          # columns per injected turn
P = 16         # prompt bucket
N = 2


def starts_with_one(tasks, texts):
  del tasks
  return np.asarray([1.0 if t.startswith("1") else 0.0 for t in texts],
                    np.float32)


def first_digit_odd(tasks, texts):
  del tasks
  return np.asarray([1.0 if t[:1].isdigit() and int(t[0]) % 2 else 0.0
                     for t in texts], np.float32)


def run(spec, strategy, *, seed=0, reward_fn=first_digit_odd, num=3):
  tok, model, params, tasks, _ = fx.setup()
  prompts = batching.encode_prompts(tok, tasks[:num])
  tokens, mask = rollouts.left_pad(prompts, P, tok.pad_id)
  ep = multiturn.run_episodes(
      model, params, prompt_tokens=tokens, prompt_mask=mask,
      tasks=tasks[:num], tokenizer=tok, spec=spec, reward_fn=reward_fn,
      rng=jax.random.key(seed), strategy=strategy, n=N, max_new_tokens=G,
      stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
  return tok, model, params, prompts, ep


VERDICT = multiturn.VerdictFeedback(correct="=", wrong="+=")
SPEC3 = multiturn.EpisodeSpec(max_turns=3, feedback=VERDICT,
                              stop_on_correct=True, inject_length=I)


def test_cache_reuse_equals_reencoding_whole_conversation():
  tok, model, params, _, ep = run(SPEC3, st.Sampling(temperature=1.0))
  traj = ep.traj
  assert traj.tokens.shape == (3 * N, SPEC3.length(P, G)) == (6, 16 + 4 + 2 * 8)
  assert ep.num_turns.max() >= 2, "fixture should continue some episodes"
  # One uncached forward pass over the whole conversation (re-encoding).
  ref = fx.policy_logprobs(model, params, traj)
  lm = np.asarray(traj.loss_mask)
  np.testing.assert_allclose(np.asarray(traj.behaviour_logprobs)[lm], ref[lm],
                             atol=1e-5)


def test_greedy_turn_equals_sampling_from_scratch():
  spec = multiturn.EpisodeSpec(max_turns=2, feedback=VERDICT, inject_length=I)
  tok, model, params, prompts, ep = run(spec, st.Greedy())
  traj = ep.traj
  tokens, mask, ids = (np.asarray(x) for x in
                       (traj.tokens, traj.input_mask, traj.turn_ids))
  for b in range(3 * N):
    conv = tokens[b][mask[b] & (ids[b] <= 1) & (ids[b] >= -1)]
    conv = [t for t in conv.tolist()]
    scratch = sampler.sample(model, params, [conv], rng=jax.random.key(0),
                             strategy=st.Greedy(), max_new_tokens=G,
                             stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
    lm = np.asarray(scratch.loss_mask[0])
    want = np.asarray(scratch.tokens[0])[lm].tolist()
    got = tokens[b][ids[b] == 2].tolist()
    assert got == want
    np.testing.assert_allclose(
        np.asarray(traj.behaviour_logprobs[b])[ids[b] == 2],
        np.asarray(scratch.behaviour_logprobs[0])[lm], atol=1e-5)


def test_turn_ids_masks_rewards_and_stops():
  tok, _, _, prompts, ep = run(SPEC3, st.Sampling(temperature=1.0), seed=1)
  traj = ep.traj
  tokens, mask, ids, lm = (np.asarray(x) for x in (
      traj.tokens, traj.input_mask, traj.turn_ids, traj.loss_mask))
  np.testing.assert_array_equal(lm, ids > 0)
  np.testing.assert_array_equal(mask[ids != 0], True)
  for b in range(3 * N):
    k_b = int(ep.num_turns[b])
    lengths = [int((ids[b] == k).sum()) for k in range(1, 4)]
    injected = [int((ids[b] == -k).sum()) for k in range(1, 3)]
    want = [0] * len(prompts[b // N])
    for k in range(k_b):
      if k:
        want += [-k] * injected[k - 1]
      want += [k + 1] * lengths[k]
    assert ids[b][mask[b]].tolist() == want
    for k in range(3):
      if k < k_b:
        assert lengths[k] >= 1
        assert tok.decode(tokens[b][ids[b] == k + 1].tolist()) == ep.texts[b][k]
        assert ep.rewards[b, k] == first_digit_odd(None, [ep.texts[b][k]])[0]
      else:
        assert lengths[k] == 0 and np.isnan(ep.rewards[b, k])
    for k in range(1, k_b):
      # Stop rule: continued only after a wrong answer; verdict text injected.
      assert ep.rewards[b, k - 1] == 0.0
      assert ep.injected[b][k - 1] == "+="
      assert tokens[b][ids[b] == -k].tolist() == tok.encode("+=")
    if k_b < 3:
      assert ep.rewards[b, k_b - 1] == 1.0
    for k in range(1, k_b):
      prev = ep.answers[b][:k]
      rep = ep.answers[b][k] is not None and ep.answers[b][k] in prev
      assert ep.repeats[b, k] == float(rep)
  np.testing.assert_array_equal(np.asarray(traj.extras["num_turns"]),
                                ep.num_turns)
  np.testing.assert_array_equal(np.asarray(traj.extras["turn_rewards"]),
                                ep.rewards)


def test_stop_phrase_ends_every_episode_and_shape_is_fixed():
  counts = sampler.trace_counts()
  spec = multiturn.EpisodeSpec(max_turns=3, feedback=VERDICT,
                               stop_phrases=("",), inject_length=I)
  _, _, _, _, ep = run(spec, st.Sampling(temperature=1.0))
  assert ep.traj.tokens.shape == (6, spec.length(P, G))
  np.testing.assert_array_equal(ep.num_turns, 1)
  assert int(np.asarray(ep.traj.turn_ids).max()) == 1
  assert np.isnan(ep.rewards[:, 1:]).all()
  # The same shapes again: nothing recompiles.
  run(SPEC3, st.Sampling(temperature=1.0), seed=3)
  after = sampler.trace_counts()
  run(SPEC3, st.Sampling(temperature=1.0), seed=4)
  assert sampler.trace_counts() == after
  assert after.get("generate", 0) >= counts.get("generate", 0)


def test_graded_turns_and_per_turn_feedback():
  spec = multiturn.EpisodeSpec(
      max_turns=3, feedback=(multiturn.FixedFeedback("+"),
                             multiturn.FixedFeedback("==")),
      stop_on_correct=True, graded_turns=(1, 3), inject_length=I)
  _, _, _, _, ep = run(spec, st.Sampling(temperature=1.0))
  assert np.isnan(ep.rewards[:, 1]).all()          # reflection turn ungraded
  two = ep.num_turns >= 2
  assert two.any()
  assert all(ep.injected[b][0] == "+" for b in np.flatnonzero(two))
  three = ep.num_turns == 3
  # An ungraded turn never stops the episode.
  np.testing.assert_array_equal(two, three)
  assert all(ep.injected[b][1] == "==" for b in np.flatnonzero(three))


def test_feedback_fns_and_errors():
  tok, model, params, tasks, _ = fx.setup()
  hist = multiturn.TurnHistory(
      turn=1, tasks=tasks[:2], texts=[["31"], ["7"]],
      rewards=np.array([[0.0], [1.0]], np.float32), injected=[[], []],
      answers=[["13"], [None]])
  crit = multiturn.VerifierCritique(template="{answer} no, ends {last}",
                                    correct="ok")
  assert crit(hist) == [f"13 no, ends {tasks[0].answer[-1]}", "ok"]
  assert multiturn.VerdictFeedback(correct="a", wrong="b")(hist) == ["b", "a"]
  mf = multiturn.ModelFeedback(model=model, params=params, tokenizer=tok,
                               prompt_fn=lambda h, b: h.tasks[b].prompt,
                               max_new_tokens=3, prefix="+", suffix="=")
  out = mf(hist)
  assert len(out) == 2 and all(o.startswith("+") and o.endswith("=")
                               for o in out)
  with pytest.raises(ValueError, match="feedback"):
    multiturn.EpisodeSpec(max_turns=2)
  with pytest.raises(ValueError, match="feedbacks"):
    multiturn.EpisodeSpec(max_turns=3, feedback=(VERDICT,))
  long = multiturn.EpisodeSpec(max_turns=2, inject_length=1,
                               feedback=multiturn.FixedFeedback("+=+"))
  with pytest.raises(ValueError, match="inject_length"):
    run(long, st.Greedy())


def test_self_correction_stats_hand_numbers():
  r = np.array([[0, 1], [1, 1], [1, 0], [0, 0], [1, np.nan]], np.float32)
  s = multiturn.self_correction_stats(r)
  # turn-1 correct: rows 1, 2, 4; after turn 2: rows 0, 1, 4 (row 4 keeps).
  assert s["acc_t1"] == pytest.approx(0.6) and s["acc_t2"] == pytest.approx(0.6)
  assert s["gap"] == pytest.approx(0.0)
  assert s["wrong_to_right"] == pytest.approx(0.2)
  assert s["right_to_wrong"] == pytest.approx(0.2)
  s = multiturn.self_correction_stats(r, valid=np.array([1, 1, 0, 1, 0], bool))
  assert s["gap"] == pytest.approx(1 / 3) and s["count"] == 3
  # Three turns with an ungraded middle turn (Reflect-Retry-Reward).
  r3 = np.array([[0, np.nan, 1], [0, np.nan, 0]], np.float32)
  s = multiturn.self_correction_stats(r3, second=3)
  assert s["acc_t2"] == pytest.approx(0.5)
