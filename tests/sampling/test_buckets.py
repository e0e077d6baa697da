"""Tests of bucketing and host-side padding."""

import numpy as np
import pytest

from jaxsi.sampling import buckets


@pytest.mark.parametrize("size, expected", [
    (0, 16), (1, 16), (16, 16), (17, 32), (64, 64), (65, 128), (129, 256),
])
def test_bucket_size(size, expected):
  assert buckets.bucket_size(size, (16, 32, 64, 128)) == expected


def test_bucket_size_without_buckets_is_identity():
  assert buckets.bucket_size(37, None) == 37
  assert buckets.bucket_size(37, ()) == 37


def test_bucket_size_rejects_bad_buckets():
  with pytest.raises(ValueError):
    buckets.bucket_size(3, (8, 4))
  with pytest.raises(ValueError):
    buckets.bucket_size(-1, (8,))


def test_left_pad():
  tokens, mask = buckets.left_pad([[5, 6], [7], []], length=4, pad_id=1,
                                  num_rows=4)
  np.testing.assert_array_equal(
      tokens, [[1, 1, 5, 6], [1, 1, 1, 7], [1, 1, 1, 1], [1, 1, 1, 1]])
  np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [0, 0, 0, 1], [0] * 4, [0] * 4])
  with pytest.raises(ValueError):
    buckets.left_pad([[1, 2, 3]], length=2, pad_id=0)
