"""Tests for jaxsi.transforms.spans: span ids, per-span advantages, filter.

Hand-built trajectories with hand-computed numbers; markers are short token
sequences (positive = (90, 91), negative = (92, 93)), EOS = 2, digits 10..19.
"""

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.data import spans as data_spans
from jaxsi.data.char_tokenizer import CharTokenizer
from jaxsi.trajectory import Trajectory
from jaxsi.transforms import spans
from jaxsi.transforms.base import Context

POS, NEG, EOS = (90, 91), (92, 93), 2
NAN = np.nan


def _rows_traj(completions, prompt_len=2, length=14, **kw):
  """Trajectory with a 2-token prompt and right-padded completions."""
  b = len(completions)
  tokens = np.zeros((b, length), np.int32)
  lm = np.zeros((b, length), bool)
  im = np.zeros((b, length), bool)
  for i, c in enumerate(completions):
    tokens[i, :prompt_len] = 5
    tokens[i, prompt_len:prompt_len + len(c)] = c
    lm[i, prompt_len:prompt_len + len(c)] = True
    im[i, :prompt_len + len(c)] = True
  return Trajectory.create(tokens, input_mask=im, loss_mask=lm, **kw)


def _ids(traj, m):
  return np.asarray(spans.span_ids_from_markers(
      traj.tokens, traj.loss_mask, correct_ids=POS, wrong_ids=NEG,
      stop_ids=(EOS,), max_attempts=m))


CASES = [  # (completion, expected span ids of the completion) with M = 2
    ([11, 12, *POS, EOS], [1, 1, 2, 2, 2]),                      # right, stop
    ([11, *NEG, 12, *POS, EOS], [1, 2, 2, 3, 4, 4, 4]),          # revise
    ([11, 12, EOS], [1, 1, 2]),                                  # no verdict
    ([11, *NEG, 12], [1, 2, 2, 3]),                              # truncated
    ([92, 11, 90, EOS], [1, 1, 1, 2]),                           # malformed
    ([11, *NEG, 12, *NEG, 13, *POS, EOS],                        # > M attempts
     [1, 2, 2, 3, 4, 4, 5, 5, 5, 5]),
    ([11, *NEG, EOS], [1, 2, 2, 3]),                             # gave up early
    ([11, *NEG, 12, *NEG, EOS], [1, 2, 2, 3, 4, 4, 4]),          # M-th wrong
    ([EOS], [1]),                                                # empty
    ([*POS, EOS], [2, 2, 2]),                                    # no attempt
]


def test_span_ids_hand_cases():
  traj = _rows_traj([c for c, _ in CASES])
  ids = _ids(traj, 2)
  for i, (c, want) in enumerate(CASES):
    row = ids[i]
    np.testing.assert_array_equal(row[2:2 + len(c)], want, err_msg=str(c))
    assert (row[:2] == 0).all() and (row[2 + len(c):] == 0).all()


def test_span_ids_skip_ids_are_transparent():
  pad, bos = 0, 1
  traj = _rows_traj([[pad, EOS], [11, *POS, pad, 12, EOS],
                     [11, *NEG, bos, EOS], [pad, 11, EOS]])
  ids = np.asarray(spans.span_ids_from_markers(
      traj.tokens, traj.loss_mask, correct_ids=POS, wrong_ids=NEG,
      stop_ids=(EOS,), max_attempts=2, skip_ids=(pad, bos)))
  np.testing.assert_array_equal(ids[0, 2:4], [1, 1])
  np.testing.assert_array_equal(ids[1, 2:8], [1, 2, 2, 2, 3, 4])
  np.testing.assert_array_equal(ids[2, 2:7], [1, 2, 2, 2, 3])
  np.testing.assert_array_equal(ids[3, 2:5], [1, 1, 2])


def test_span_ids_shared_marker_prefix_belongs_to_attempt():
  pos, neg = (90, 91), (90, 93)   # both markers start with token 90
  traj = _rows_traj([[11, *neg, 12, *pos, EOS], [*neg, 11, EOS]])
  ids = np.asarray(spans.span_ids_from_markers(
      traj.tokens, traj.loss_mask, correct_ids=pos, wrong_ids=neg,
      stop_ids=(EOS,), max_attempts=2))
  np.testing.assert_array_equal(ids[0, 2:9], [1, 1, 2, 3, 3, 4, 4])
  np.testing.assert_array_equal(ids[1, 2:6], [1, 2, 3, 4])
  assert spans.shared_prefix_len(pos, neg) == 1


def test_span_ids_max_attempts_one():
  traj = _rows_traj([[11, *NEG, EOS], [11, *NEG, 12, *POS, EOS]])
  ids = _ids(traj, 1)
  np.testing.assert_array_equal(ids[0, 2:6], [1, 2, 2, 2])  # stop ends verdict
  np.testing.assert_array_equal(ids[1, 2:9], [1, 2, 2, 3, 3, 3, 3])


def test_span_ids_jit_and_transform():
  traj = _rows_traj([c for c, _ in CASES])
  t = spans.verdict_span_ids(correct_ids=POS, wrong_ids=NEG, stop_ids=(EOS,),
                             max_attempts=2)
  out, _, metrics = jax.jit(lambda tr: t.update(tr, t.init(), Context()))(traj)
  np.testing.assert_array_equal(np.asarray(out.span_ids), _ids(traj, 2))
  # Attempt spans (1, 3) with tokens: 1,2,1,2,1,2,2,2,1,0 → 1.4; extra: row 5.
  assert float(metrics["spans/attempts_mean"]) == pytest.approx(1.4)
  assert float(metrics["spans/frac_extra"]) == pytest.approx(0.1)


def test_device_ids_equal_host_parser_on_random_text():
  tok = CharTokenizer()
  fmt = data_spans.VerdictFormat(max_attempts=2)
  # Pieces incl. ids that decode to nothing (pad, bos) and a turn marker.
  pieces = [tok.encode(p) for p in ("4", "61", "[correct]", "[wrong]",
                                    "[corr", "x", "]")]
  pieces += [[tok.pad_id], [tok.bos_id], [tok.turn_end_id]]
  rng = random.Random(0)
  rows, want = [], []
  for _ in range(400):
    ids = [i for _ in range(rng.randint(0, 6)) for i in rng.choice(pieces)]
    ids += [tok.eos_id] if rng.random() < 0.7 else []
    rows.append(ids)
    want.append(data_spans.self_verification_span_ids(tok, ids, fmt))
  length = 2 + max(len(r) for r in rows) + 1
  traj = _rows_traj(rows, length=length)
  got = np.asarray(spans.span_ids_from_markers(
      traj.tokens, traj.loss_mask, correct_ids=tok.encode(fmt.correct),
      wrong_ids=tok.encode(fmt.wrong), stop_ids=(tok.eos_id,), max_attempts=2,
      skip_ids=(tok.pad_id, tok.bos_id)))
  for i, w in enumerate(want):
    np.testing.assert_array_equal(got[i, 2:2 + len(w)], w)


# ------------------------------------------------------------ advantages
ROLES2 = data_spans.span_roles(2)  # (0, 1, 0, 1, 0)


def _adv_traj(valid=None):
  """Group 0: samples 0-2 (+ 3 invalid); group 4: sample 4 alone."""
  comps = [
      [11, *POS, EOS],                 # right, says right      spans 1 2 2 2
      [12, *NEG, 11, *POS, EOS],       # wrong→right            1 2 2 3 4 4 4
      [12, *POS, EOS],                 # wrong, says right      1 2 2 2
      [11, *POS, EOS],                 # invalid sample
      [12, *NEG, 11, *POS, EOS],       # singleton group
  ]
  traj = _rows_traj(comps, group_ids=[0, 0, 0, 0, 4],
                    valid=[True, True, True, False, True] if valid is None
                    else valid)
  rewards = np.array([
      [1, 1, NAN, NAN, NAN],
      [0, 1, 1, 1, NAN],
      [0, 0, NAN, NAN, NAN],
      [1, 1, NAN, NAN, NAN],
      [0, 1, 1, 1, NAN]], np.float32)
  ids = _ids(traj, 2)
  return traj.replace(rewards=jnp.asarray(rewards),
                      span_ids=jnp.asarray(ids))


def _run(t, traj):
  return t.update(traj, t.init(), Context())


def test_span_advantages_role_pooling_hand_numbers():
  traj = _adv_traj()
  t = spans.span_advantages(num_spans=5, roles=ROLES2, eps=0.0)
  out, _, m = _run(t, traj)
  a = np.asarray(out.advantages)
  # Solution pool of group 0 (valid): [1, 0, 1, 0] → mean .5, std sqrt(1/3).
  s = 0.5 / np.sqrt(1 / 3)
  # Verdict pool: [1, 1, 1, 0] → mean .75, std .5 → +.5 / −1.5.
  want = {
      0: [s, .5, .5, .5],
      1: [-s, .5, .5, s, .5, .5, .5],
      2: [-s, -1.5, -1.5, -1.5],
  }
  for i, w in want.items():
    np.testing.assert_allclose(a[i, 2:2 + len(w)], w, rtol=1e-5)
    assert np.all(a[i, :2] == 0) and np.all(a[i, 2 + len(w):] == 0)
  assert np.all(a[3] == 0)          # invalid sample
  # Group of one: its two attempts form a solution pool [0, 1] (±.5 / std
  # sqrt(.5)); its verdict pool [1, 1] has no variance → 0.
  np.testing.assert_allclose(a[4, 2:9], [-np.sqrt(.5), 0, 0, np.sqrt(.5), 0, 0,
                                         0], rtol=1e-5, atol=1e-7)
  # Span rewards at each span's last token.
  tr = np.asarray(out.token_rewards)
  np.testing.assert_allclose(tr[1, 2:9], [0, 0, 1, 1, 0, 0, 1])
  np.testing.assert_allclose(tr[2, 2:6], [0, 0, 0, 0])
  np.testing.assert_allclose(tr[0, 2:6], [1, 0, 0, 1])
  assert float(m["span/role1/reward_mean"]) == pytest.approx(5 / 6)
  assert float(m["span/frac_tokens_unrewarded"]) == 0.0


def test_span_advantages_span_pooling_and_default_eps():
  traj = _adv_traj()
  out, _, _ = _run(spans.span_advantages(num_spans=5, roles=ROLES2,
                                         normalize="span", eps=0.0), traj)
  a = np.asarray(out.advantages)
  r3 = np.sqrt(1 / 3)
  # span 1 pool [1, 0, 0]: mean 1/3, std sqrt(1/3); span 2 pool [1, 1, 0].
  np.testing.assert_allclose(a[0, 2:4], [(2 / 3) / r3, (1 / 3) / r3], rtol=1e-5)
  np.testing.assert_allclose(a[1, 2:9], [-(1 / 3) / r3, (1 / 3) / r3,
                                         (1 / 3) / r3, 0, 0, 0, 0], rtol=1e-5,
                             atol=1e-7)                 # spans 3, 4 singletons
  np.testing.assert_allclose(a[2, 2:6], [-(1 / 3) / r3] + [-(2 / 3) / r3] * 3,
                             rtol=1e-5)
  # Default eps (TRL 1e-4) divides by std + 1e-4.
  out2, _, _ = _run(spans.span_advantages(num_spans=5, roles=ROLES2), traj)
  np.testing.assert_allclose(np.asarray(out2.advantages)[2, 3],
                             -0.75 / (0.5 + 1e-4), rtol=1e-6)


def test_span_advantages_scale_none_weights_outcome():
  traj = _adv_traj()
  final = np.array([1, 1, 0, 1, 1], np.float32)  # outcome column 5
  traj = traj.replace(rewards=jnp.concatenate(
      [traj.rewards, jnp.asarray(final)[:, None]], axis=1))
  t = spans.span_advantages(num_spans=5, roles=ROLES2, scale="none",
                            role_weights=(1.0, 2.0), outcome_column=5,
                            outcome_coef=0.5, eps=0.0)
  a = np.asarray(_run(t, traj)[0].advantages)
  # Centred only: solutions ±.5, verdicts +.25/−.75 (×2).
  # Outcome (scale none): group 0 valid finals [1, 1, 0] → mean 2/3.
  o = np.array([1 / 3, 1 / 3, -2 / 3])
  np.testing.assert_allclose(a[0, 2:4], [.5 + .5 * o[0], .5 + .5 * o[0]],
                             rtol=1e-5)
  np.testing.assert_allclose(a[2, 2:4], [-.5 + .5 * o[2], -1.5 + .5 * o[2]],
                             rtol=1e-5)
  np.testing.assert_allclose(a[1, 5], .5 + .5 * o[1], rtol=1e-5)  # span 3
  # Group of one: solution pool [0, 1] centred ±.5; outcome singleton → 0.
  np.testing.assert_allclose(a[4, 2:9], [-.5, 0, 0, .5, 0, 0, 0], atol=1e-7)


def test_nan_reward_and_missing_span_are_unrewarded():
  traj = _adv_traj()
  r = np.asarray(traj.rewards).copy()
  r[1, 3] = NAN  # verdict 2 of sample 1 unscorable (e.g. mis-segmented)
  traj = traj.replace(rewards=jnp.asarray(r))
  out, _, m = _run(spans.span_advantages(num_spans=5, roles=ROLES2, eps=0.0),
                   traj)
  a = np.asarray(out.advantages)
  assert np.all(a[1, 6:9] == 0)
  # Verdict pool now [1, 1, 0]: mean 2/3, std sqrt(1/3).
  np.testing.assert_allclose(a[0, 3], (1 / 3) / np.sqrt(1 / 3), rtol=1e-5)
  # 3 of the 15 valid loss tokens of group 0 + 7 of sample 4 are unrewarded.
  assert float(m["span/frac_tokens_unrewarded"]) == pytest.approx(3 / 22)


def test_identical_rewards_give_zero_and_group_is_dropped():
  comps = [[11, *POS, EOS]] * 3 + [[11, *POS, EOS], [12, *POS, EOS]]
  traj = _rows_traj(comps, group_ids=[0, 0, 0, 3, 3])
  rewards = np.array([[1, 1, NAN, NAN, NAN]] * 4 + [[0, 0, NAN, NAN, NAN]],
                     np.float32)
  traj = traj.replace(rewards=jnp.asarray(rewards),
                      span_ids=jnp.asarray(_ids(traj, 2)))
  t = spans.span_advantages(num_spans=5, roles=ROLES2)
  out, _, _ = _run(t, traj)
  assert np.all(np.asarray(out.advantages)[:3] == 0)
  assert np.any(np.asarray(out.advantages)[3:] != 0)
  f = spans.drop_zero_advantage_groups()
  out2, _, m = _run(f, out)
  np.testing.assert_array_equal(np.asarray(out2.valid),
                                [False, False, False, True, True])
  assert float(m["filter/frac_dropped"]) == pytest.approx(0.6)


def test_jit_equals_no_jit_and_errors():
  traj = _adv_traj()
  t = spans.span_advantages(num_spans=5, roles=ROLES2)
  a1 = _run(t, traj)[0].advantages
  a2 = jax.jit(lambda tr: _run(t, tr)[0].advantages)(traj)
  np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), rtol=1e-6)
  with pytest.raises(ValueError, match="roles"):
    spans.span_advantages(num_spans=5, roles=(0, 1))
  with pytest.raises(ValueError, match="columns"):
    _run(spans.span_advantages(num_spans=7, roles=data_spans.span_roles(3)),
         traj)
  with pytest.raises(ValueError, match="span_ids"):
    _run(t, traj.replace(span_ids=None))


def test_split_verdicts_by_truth_hand_numbers():
  traj = _adv_traj()
  t = spans.span_advantages(num_spans=5, roles=ROLES2, eps=0.0,
                            split_verdicts_by_truth=True)
  a = np.asarray(_run(t, traj)[0].advantages)
  s = 0.5 / np.sqrt(1 / 3)   # solutions as with role pooling
  v = 0.5 / np.sqrt(0.5)     # verdicts of wrong attempts: pool [1, 0]
  # Verdicts of correct attempts: pool [1 (s0), 1 (s1, verdict 2)] → 0.
  np.testing.assert_allclose(a[0, 2:6], [s, 0, 0, 0], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(a[1, 2:9], [-s, v, v, s, 0, 0, 0], rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(a[2, 2:6], [-s, -v, -v, -v], rtol=1e-5)
  # "Always [wrong]" on wrong attempts: constant pool → no verdict reward.
  r = np.asarray(traj.rewards).copy()
  r[2, 1] = 1.0
  out = _run(t, traj.replace(rewards=jnp.asarray(r)))[0]
  assert np.all(np.asarray(out.advantages)[:3, 3] == 0)
  with pytest.raises(ValueError, match="split_verdicts_by_truth"):
    spans.span_advantages(num_spans=5, roles=ROLES2, normalize="span",
                          split_verdicts_by_truth=True)
