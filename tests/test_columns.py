"""Arrow → numpy conversion with per-row validity, and content fingerprints."""

import numpy as np
import pyarrow as pa

from lossaudit import columns as cols


def test_dense_values_from_lists_with_bad_rows():
  column = pa.array([[1.0, 2.0], None, [3.0], [4.0, 5.0]],
                    pa.large_list(pa.float32()))
  values, counts = cols.dense_values(column, 2, np.float32)
  np.testing.assert_array_equal(counts, [2, -1, 1, 2])
  np.testing.assert_array_equal(values, [[1, 2], [0, 0], [0, 0], [4, 5]])


def test_dense_values_from_scalars():
  column = pa.array([1, None, 3], pa.int64())
  values, counts = cols.dense_values(column, 1, np.float32)
  np.testing.assert_array_equal(counts, [1, -1, 1])
  np.testing.assert_array_equal(values[:, 0], [1, 0, 3])
  assert values.dtype == np.float32


def test_first_as_string():
  binary = pa.array([[b"a"], None, [], [b"d", b"e"]], pa.large_list(
      pa.large_binary()))
  assert cols.first_as_string(binary).to_pylist() == ["a", None, None, "d"]
  ints = pa.array([[7], [8]], pa.large_list(pa.int64()))
  assert cols.first_as_string(ints).to_pylist() == ["7", "8"]
  assert cols.first_as_string(pa.array([1, 2])).to_pylist() == ["1", "2"]


def test_fingerprints_are_stable_and_content_based():
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  y = np.array([0, 1, 0])
  first = cols.fingerprints(x, y).to_pylist()
  assert first == cols.fingerprints(x.copy(), y.copy()).to_pylist()
  assert len(set(first)) == 3
  x[1, 3] = 0.0
  changed = cols.fingerprints(x, y).to_pylist()
  assert changed[0] == first[0] and changed[1] != first[1]
  # Trailing zero bytes still count.
  zeros = np.zeros((2, 2), dtype=np.float32)
  assert len(set(cols.fingerprints(zeros, np.array([0, 1])).to_pylist())) == 2
