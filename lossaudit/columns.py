"""Arrow columns to dense numpy arrays, vectorised, with per-row validity.

TFRecord batches hold every feature as a list column (tf.train.Example has no
scalars); Parquet batches hold scalars or lists. Both go through
`dense_numbers`, which never loops over rows in Python.

One bad value must cost one row, not its batch. Casts are tried on the whole
column first (the normal case, one Arrow call); only when a cast fails are
the offending rows found: text that is not a number by a vectorised regular
expression, bytes that are not UTF-8 by decoding each value (Arrow has no
vectorised UTF-8 check that says which value is bad).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What Arrow's string -> float64 cast parses, after trimming white space.
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)$"


class Dense(NamedTuple):
  """A column read as a dense array, with what was wrong in each row.

  Attributes:
    values: `(N, width)`; zero in rows with the wrong number of values
      (`counts != width`) and in rows that are `not_numbers`.
    counts: `(N,)` number of values per row, as in `value_counts`.
    not_numbers: `(N,)` bool, rows of `width` values of which one is text
      (or bytes) that is not a number.
    text: `(N,)` Arrow array, the first such value of each `not_numbers`
      row (null elsewhere); None when no row is `not_numbers`.
  """

  values: np.ndarray
  counts: np.ndarray
  not_numbers: np.ndarray
  text: Optional[pa.Array] = None


class Text(NamedTuple):
  """The first value of each row as a string.

  Attributes:
    strings: `(N,)` string array; null where the row has no value or its
      value is bytes that are not valid UTF-8.
    not_utf8: `(N,)` bool, the rows whose value is not valid UTF-8.
    raw: `(N,)` the first values as read (bytes stay bytes), for messages.
  """

  strings: pa.Array
  not_utf8: np.ndarray
  raw: pa.Array


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


def dense_numbers(column: pa.Array, width: int,
                  dtype: np.dtype) -> Dense:
  """Reads a numeric, or numbers-as-text, column as a dense `(N, width)` array.

  Args:
    column: a scalar or list column of N rows; string and binary values are
      parsed as numbers (`"3"`, `"-0.5"`, `"nan"`), and a row holding one that
      is not a number is reported in `not_numbers`.
    width: the number of values each row must have.
    dtype: numpy dtype of the result.

  Returns:
    A `Dense` with values `(N, width)`.

  Raises:
    pa.ArrowException, TypeError, ValueError: values that are neither numbers
      nor text (structs, nested lists).
  """
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  counts = value_counts(column)
  n = len(column)
  good = counts == width
  kept = column if good.all() else column.filter(pa.array(good))
  flat = flat_values(kept)
  numbers, bad, shown = _flat_numbers(flat, dtype)
  not_numbers, text = np.zeros(n, dtype=bool), None
  if bad is not None:
    not_numbers, text = _rows_not_numbers(shown, bad, good, width)
  if good.all():
    values = numbers.reshape(n, width)
  else:
    values = np.zeros((n, width), dtype=dtype)
    values[good] = numbers.reshape(-1, width)
  if text is not None:
    values = np.where(not_numbers[:, None], values.dtype.type(0), values)
  return Dense(values, counts, not_numbers, text)


def list_numbers(column: pa.Array, dtype: np.dtype) -> Dense:
  """Reads a scalar or list column of numbers, rows of any length, flat.

  Args:
    column: N rows; text is parsed as numbers, as in `dense_numbers`.
    dtype: numpy dtype of the result.

  Returns:
    A `Dense` whose `values` are `(M,)`: the values of every row in order,
    `max(counts, 0)` of them per row (zero where not a number).
  """
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  counts = value_counts(column)
  flat = flat_values(column)
  values, bad, shown = _flat_numbers(flat, dtype)
  n = len(column)
  if bad is None:
    return Dense(values, counts, np.zeros(n, dtype=bool))
  lengths = np.maximum(counts, 0)
  row_of = np.repeat(np.arange(n), lengths)
  not_numbers = np.zeros(n, dtype=bool)
  not_numbers[row_of[bad]] = True
  first = np.zeros(n, dtype=np.int64)
  bad_at = np.flatnonzero(bad)
  rows, at = np.unique(row_of[bad_at], return_index=True)
  first[rows] = bad_at[at]
  values = np.where(bad, values.dtype.type(0), values)
  return Dense(values, counts, not_numbers,
               shown.take(pa.array(first, mask=~not_numbers)))


def list_bytes(column: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a scalar or list column of strings or bytes, rows of any length.

  Returns:
    `(values, counts)`: `(M,)` object array of `bytes` (UTF-8 for strings),
    every row's values in order, and `(N,)` counts as in `value_counts`.

  Raises:
    TypeError: the values are not strings or bytes.
  """
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  counts = value_counts(column)
  flat = flat_values(column)
  if pa.types.is_null(flat.type):
    flat = flat.cast(pa.binary())
  if not is_text(flat.type):
    raise TypeError(f"expected strings or bytes. Received: {flat.type}")
  if not (pa.types.is_binary(flat.type) or
          pa.types.is_large_binary(flat.type)):
    flat = flat.cast(pa.large_binary())
  values = flat.to_numpy(zero_copy_only=False)
  return values.astype(object, copy=False), counts


def flat_values(column: pa.Array) -> pa.Array:
  """The values of a list column's rows in order (a null row has none), or
  a scalar column's non-null values."""
  if _is_list(column.type):
    return column.flatten()
  return column.drop_null() if column.null_count else column


def _flat_numbers(flat: pa.Array, dtype: np.dtype
                  ) -> Tuple[np.ndarray, Optional[np.ndarray], pa.Array]:
  """Values `(M,)` as numbers of `dtype`; text is parsed.

  Returns:
    `(values, bad, shown)`: the values (zero where not a number), `(M,)`
    bool of the text values that are not numbers or None when all are, and
    the values as messages quote them (bytes only when one is not UTF-8).
  """
  if pa.types.is_null(flat.type):
    flat = flat.cast(pa.float64())
  bad, shown = None, flat
  if is_text(flat.type):
    strings, not_utf8 = _utf8(flat)
    parsed, bad = _parse_numbers(strings)
    shown = flat if not_utf8.any() else strings
    flat = parsed
  values = np.asarray(flat.to_numpy(zero_copy_only=False)).astype(
      dtype, copy=False)
  return values, bad, shown


def dense_values(column: pa.Array, width: int,
                 dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
  """`dense_numbers` for a column that must hold numbers only.

  Returns:
    `(values, counts)`: values `(N, width)` where rows with the wrong number of
    values (`counts != width`) are zero, and counts `(N,)` as in
    `value_counts`.

  Raises:
    ValueError: a value is text that is not a number.
  """
  dense = dense_numbers(column, width, dtype)
  if dense.not_numbers.any():
    first = dense.text[int(np.argmax(dense.not_numbers))].as_py()
    raise ValueError(f"expected numbers. Received: {first!r}")
  return dense.values, dense.counts


def is_text(type_: pa.DataType) -> bool:
  """Whether values of `type_` are strings or bytes."""
  return (pa.types.is_string(type_) or pa.types.is_large_string(type_) or
          pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or
          pa.types.is_fixed_size_binary(type_))


def _parse_numbers(strings: pa.Array
                   ) -> Tuple[pa.Array, Optional[np.ndarray]]:
  """Strings `(M,)` as float64 `(M,)` and `(M,)` bool of those that are not
  numbers (null ones included; zero in the result), or None when all are."""
  strings = pc.utf8_trim_whitespace(strings)
  if not strings.null_count:
    try:
      return pc.cast(strings, pa.float64()), None
    except pa.ArrowInvalid:
      pass
  number = pc.match_substring_regex(strings, _NUMBER).fill_null(False)
  bad = ~number.to_numpy(zero_copy_only=False)
  parsed = pc.cast(pc.if_else(number, strings, pa.scalar(None, pa.string())),
                   pa.float64()).fill_null(0.0)
  return parsed, bad


def _rows_not_numbers(flat: pa.Array, bad: np.ndarray, good: np.ndarray,
                      width: int) -> Tuple[np.ndarray, pa.Array]:
  """Rows `(N,)` holding a `bad` flat value, and the first such value `(N,)`.

  `flat` holds the `width` values of each `good` row, in order.
  """
  per_row = bad.reshape(-1, width)
  not_numbers = np.zeros(len(good), dtype=bool)
  not_numbers[good] = per_row.any(axis=1)
  index = np.zeros(len(good), dtype=np.int64)
  index[good] = (np.arange(len(per_row)) * width + per_row.argmax(axis=1))
  return not_numbers, flat.take(pa.array(index, mask=~not_numbers))


def first_as_string(column: pa.Array) -> pa.Array:
  """The first value of each row as a string array `(N,)`; null where missing.

  Raises:
    pa.ArrowInvalid: a value is bytes that are not valid UTF-8 (see
      `first_as_text`, which reports those rows instead).
  """
  return _first_values(column).cast(pa.string())


def first_as_text(column: pa.Array) -> Text:
  """The first value of each row as a string, with the rows not UTF-8.

  Args:
    column: a scalar or list column of N rows (strings, bytes or numbers).

  Returns:
    A `Text` of N rows.
  """
  raw = _first_values(column)
  strings, not_utf8 = _utf8(raw)
  return Text(strings, not_utf8, raw)


def _first_values(column: pa.Array) -> pa.Array:
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  if _is_list(column.type):
    column = _first_element(column)
  if (pa.types.is_large_binary(column.type) or
      pa.types.is_fixed_size_binary(column.type)):
    column = column.cast(pa.binary())
  return column


def _utf8(values: pa.Array) -> Tuple[pa.Array, np.ndarray]:
  """`values` `(M,)` cast to strings, null where not valid UTF-8, and `(M,)`
  bool of those rows."""
  if (pa.types.is_large_binary(values.type) or
      pa.types.is_fixed_size_binary(values.type)):
    values = values.cast(pa.binary())
  try:
    return values.cast(pa.string()), np.zeros(len(values), dtype=bool)
  except pa.ArrowInvalid:
    if not pa.types.is_binary(values.type):
      raise
  not_utf8 = np.array([not _decodes(v) for v in values.to_pylist()],
                      dtype=bool).reshape(len(values))
  kept = pc.if_else(pa.array(not_utf8), pa.scalar(None, values.type), values)
  return kept.cast(pa.string()), not_utf8


def _decodes(value: Optional[bytes]) -> bool:
  try:
    if value is not None:
      value.decode("utf-8")
    return True
  except UnicodeDecodeError:
    return False


def _first_element(column: pa.Array) -> pa.Array:
  present = value_counts(column) > 0
  if present.all():
    return pc.list_element(column, 0)
  taken = pc.list_element(column.filter(pa.array(present)), 0)
  index = np.full(len(column), -1, dtype=np.int64)
  index[present] = np.arange(int(present.sum()))
  return taken.take(pa.array(index, mask=~present))


def without_dictionaries(data: Union[pa.Table, pa.RecordBatch]
                         ) -> Union[pa.Table, pa.RecordBatch]:
  """`data` with its dictionary-encoded columns (pandas categoricals in
  Parquet) decoded to plain columns of their values."""
  for index, field in enumerate(data.schema):
    if pa.types.is_dictionary(field.type):
      data = data.set_column(index, field.name, data.column(index).cast(
          field.type.value_type))
  return data


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
  n = len(arrays[0])
  rows = np.concatenate(
      [np.ascontiguousarray(a).reshape(n, -1).view(np.uint8).reshape(n, -1)
       for a in arrays], axis=1)
  return pa.array(fingerprints_u64(rows).astype(str), type=pa.string())


def fingerprints_u64(rows: np.ndarray) -> np.ndarray:
  """FarmHash fingerprints (`tf.fingerprint`) `(N,)` uint64 of each row of
  `rows`: `(N, W)` uint8, or `(N,)` object array of bytes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  n = len(rows)
  if rows.dtype != object:
    rows = np.ascontiguousarray(rows)
    rows = (rows.view(f"S{rows.shape[1]}").reshape(n) if n and rows.shape[1]
            else np.zeros(n, dtype="S1"))
  digest = tf.fingerprint(tf.constant(rows, dtype=tf.string)).numpy()
  return np.ascontiguousarray(digest).view("<u8").reshape(n)


def optional_column(batch: pa.RecordBatch, name: Optional[str]):
  if name is None:
    return None
  index = batch.schema.get_field_index(name)
  return None if index < 0 else batch.column(index)
