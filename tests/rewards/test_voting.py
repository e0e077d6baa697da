"""Tests for jaxsi.rewards.voting."""

from jaxsi.rewards import voting


def test_majority_vote_ties_and_none():
  assert voting.majority_vote(["a", "b", "b", "a"]) == ("a", 0)  # Tie: earliest.
  assert voting.majority_vote(["b", "a", "a", "b", "a"]) == ("a", 1)
  assert voting.majority_vote([None, None, "x"]) == ("x", 2)  # None never wins.
  assert voting.majority_vote([None, " ", ""]) == (None, None)
  assert voting.majority_vote([None, None, "y", "z"]) == ("y", 2)
  assert voting.majority_vote([]) == (None, None)


def test_majority_vote_compares_exact_values():
  # No normalisation here: "42" and "42.0" are different answers.
  assert voting.majority_vote(["42.0", "42", "42"]) == ("42", 1)
  assert voting.majority_vote([3, 3, "3"]) == (3, 0)
