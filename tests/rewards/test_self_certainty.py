"""Self-certainty formulas and best-of-N selection against hand numbers."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsi.rewards import self_certainty as sc


def test_self_certainty_hand_numbers():
  # Uniform p: KL(U || U) = 0.  p = (3/4, 1/4): 0.5·log(2/3) + 0.5·log 2.
  z = jnp.log(jnp.asarray([[1.0, 1.0], [3.0, 1.0]]))
  out = np.asarray(sc.token_self_certainty(z))
  want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
  np.testing.assert_allclose(out, [0.0, want], atol=1e-6)
  assert want == pytest.approx(0.143841, abs=1e-6)
  # Temperature 2 on logits (2 log 3, 0) is p = (3/4, 1/4) again.
  z2 = jnp.asarray([2 * math.log(3.0), 0.0])
  np.testing.assert_allclose(sc.token_self_certainty(z2, 2.0), want, atol=1e-6)
  with pytest.raises(ValueError, match="temperature"):
    sc.token_self_certainty(z2, 0.0)


def test_statistics_from_logits():
  z = jnp.log(jnp.asarray([0.5, 0.25, 0.25]))
  lp, ent, s = sc.token_statistics_from_logits(z, jnp.asarray(1))
  assert float(lp) == pytest.approx(math.log(0.25), abs=1e-6)
  assert float(ent) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)),
                                     abs=1e-6)
  assert float(s) == pytest.approx(
      -math.log(3) - (math.log(0.5) + 2 * math.log(0.25)) / 3, abs=1e-6)


def test_sequence_reduce():
  v = np.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  m = np.asarray([[0, 1, 1], [0, 0, 0]], bool)
  np.testing.assert_allclose(sc.sequence_reduce(v, m), [2.5, 0.0])
  np.testing.assert_allclose(sc.sequence_reduce(v, m, reduce="sum"), [5.0, 0.0])
  with pytest.raises(ValueError, match="reduce"):
    sc.sequence_reduce(v, m, reduce="max")


def test_best_of_n_ties_nan_invalid_and_singletons():
  scores = [0.1, 0.3, 0.3, np.nan, 2.0, 0.0, 5.0]
  groups = [0, 0, 0, 3, 3, 5, 6]
  valid = [True, True, True, True, False, True, False]
  out = sc.best_of_n(scores, groups, valid)
  # tie 0.3 → lowest row 1; group 3: NaN and an invalid row → none;
  # group 5: its only row; group 6: only row invalid → none.
  assert out == {0: 1, 3: None, 5: 5, 6: None}
  assert sc.best_of_n(scores, groups) == {0: 1, 3: 4, 5: 5, 6: 6}
