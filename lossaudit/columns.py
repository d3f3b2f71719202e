"""Arrow columns to dense numpy arrays, vectorised, with per-row validity.

TFRecord batches hold every feature as a list column (tf.train.Example has no
scalars); Parquet batches hold scalars or lists. Both go through
`dense_values`, which never loops over rows in Python.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _is_list(type_: pa.DataType) -> bool:
  return (pa.types.is_list(type_) or pa.types.is_large_list(type_) or
          pa.types.is_fixed_size_list(type_))


def value_counts(column: pa.Array) -> np.ndarray:
  """Number of values per row `(N,)`; a null row has -1, a scalar row 1."""
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  if _is_list(column.type):
    counts = pc.list_value_length(column).fill_null(-1)
    return counts.to_numpy(zero_copy_only=False).astype(np.int64)
  counts = np.ones(len(column), dtype=np.int64)
  if column.null_count:
    counts[column.is_null().to_numpy(zero_copy_only=False)] = -1
  return counts


def dense_values(column: pa.Array, width: int,
                 dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a column as a dense `(N, width)` array.

  Args:
    column: a scalar or list column of N rows.
    width: the number of values each row must have.
    dtype: numpy dtype of the result.

  Returns:
    `(values, counts)`: values `(N, width)` where rows with the wrong number of
    values (`counts != width`) are zero, and counts `(N,)` as in
    `value_counts`.
  """
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  counts = value_counts(column)
  n = len(column)
  good = counts == width
  if _is_list(column.type):
    if good.all():
      flat = column.flatten()
    else:
      flat = column.filter(pa.array(good)).flatten()
    if pa.types.is_null(flat.type):
      flat = flat.cast(pa.float64())
    flat_values = flat.to_numpy(zero_copy_only=False)
  else:
    flat_values = (column.to_numpy(zero_copy_only=False)
                   if good.all() else column.filter(pa.array(good)).to_numpy(
                       zero_copy_only=False))
  flat_values = np.asarray(flat_values).astype(dtype, copy=False)
  if good.all():
    return flat_values.reshape(n, width), counts
  values = np.zeros((n, width), dtype=dtype)
  values[good] = flat_values.reshape(-1, width)
  return values, counts


def first_as_string(column: pa.Array) -> pa.Array:
  """The first value of each row as a string array `(N,)`; null where missing."""
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  if _is_list(column.type):
    column = _first_element(column)
  if pa.types.is_large_binary(column.type):
    column = column.cast(pa.binary())
  return column.cast(pa.string())


def _first_element(column: pa.Array) -> pa.Array:
  present = value_counts(column) > 0
  if present.all():
    return pc.list_element(column, 0)
  taken = pc.list_element(column.filter(pa.array(present)), 0)
  index = np.full(len(column), -1, dtype=np.int64)
  index[present] = np.arange(int(present.sum()))
  return taken.take(pa.array(index, mask=~present))


def column_type(column: pa.Array) -> pa.DataType:
  """The value type of a scalar or list column."""
  type_ = column.type
  return type_.value_type if _is_list(type_) else type_


def fingerprints(*arrays: np.ndarray) -> pa.Array:
  """A stable 64-bit content fingerprint of each row, as decimal strings.

  Args:
    *arrays: arrays with N rows each; the bytes of each row are hashed
      together with FarmHash (`tf.fingerprint`), so equal content gives an
      equal id whatever file format it came from.

  Returns:
    A string array `(N,)`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  n = len(arrays[0])
  rows = np.concatenate(
      [np.ascontiguousarray(a).reshape(n, -1).view(np.uint8).reshape(n, -1)
       for a in arrays], axis=1)
  rows = np.ascontiguousarray(rows)
  as_bytes = rows.view(f"S{rows.shape[1]}").reshape(n) if n else np.zeros(
      0, dtype="S1")
  digest = tf.fingerprint(tf.constant(as_bytes)).numpy()
  ids = np.ascontiguousarray(digest).view("<u8").reshape(n)
  return pa.array(ids.astype(str), type=pa.string())


def optional_column(batch: pa.RecordBatch, name: Optional[str]):
  if name is None:
    return None
  index = batch.schema.get_field_index(name)
  return None if index < 0 else batch.column(index)
