"""Each example's held-out fold, from its id alone: `fold_of`.

With `model.folds: K` and no `input.fold_column`, an audit scores each
example with the model of fold `fold_of(id, K)`: the model trained without
that example. The training side must put the example in the same fold, so
the hash is fixed and documented here:

    fold = FarmHash Fingerprint64(UTF-8 bytes of the id) mod K

(an unsigned 64-bit fingerprint, reduced modulo K). The id is the string
the audit reads from `input.id_column` (an integer id is its decimal text,
as in `losses/`). Ways to compute the same folds when training:

- TensorFlow: `tf.strings.to_hash_bucket_fast(ids, K)` (what `fold_of`
  calls), e.g. inside a `tf.data` pipeline:
  `ds.filter(lambda x: tf.strings.to_hash_bucket_fast(x["id"], K) != k)`
  keeps the training rows of model k.
- Plain Python: FarmHash Fingerprint64, e.g. with the `pyfarmhash` package,
  `farmhash.fingerprint64(id) % K` (a str is hashed as its UTF-8 bytes).
  `tf.fingerprint` gives the same 64 bits as 8 little-endian bytes.
- Any framework: `lossaudit folds --config FILE --output DIR` writes
  `(id, fold)` Parquet shards for every id of the config's input, to join
  with the training data.

Every route gives `fold_of`, which the audit uses, so the training split and
the audit agree. The hash is the same in every run, process and machine:
FarmHash's fingerprints are fixed by design (unlike Python's salted
`hash`), and `tests/test_folds.py` pins a few values.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import numpy as np
import pyarrow as pa

Ids = Union[Sequence[Union[str, bytes]], np.ndarray, pa.Array,
            pa.ChunkedArray]

# How many null positions an error names.
_SHOWN = 5


def fold_of(ids: Ids, num_folds: int) -> np.ndarray:
  """The fold of each id: FarmHash Fingerprint64 of its UTF-8 bytes mod K.

  Args:
    ids: `(N,)` ids: a list or tuple of str or bytes, a numpy array of
      str, bytes or objects (str or bytes), or a pyarrow string or binary
      array (or chunked array). A str id is hashed as its UTF-8 bytes, so
      `"a"` and `b"a"` share a fold.
    num_folds: K, an integer >= 2.

  Returns:
    `(N,)` int64 folds in `[0, K)`.

  Raises:
    TypeError: `num_folds` is not an integer, or `ids` are not strings or
      bytes.
    ValueError: `num_folds` < 2, or some ids are null (None), naming their
      positions.
  """
  k = _check_num_folds(num_folds)
  values = _as_numpy(ids)
  if not len(values):
    return np.zeros(0, dtype=np.int64)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    strings = tf.constant(values, dtype=tf.string)
  except (TypeError, ValueError) as e:
    raise TypeError(f"ids: expected str or bytes ids. Received: {e}") from None
  folds = tf.strings.to_hash_bucket_fast(strings, k).numpy()
  return folds.astype(np.int64, copy=False).reshape(len(values))


def _check_num_folds(num_folds: int) -> int:
  if (not isinstance(num_folds, numbers.Integral) or
      isinstance(num_folds, (bool, np.bool_))):
    raise TypeError("num_folds: expected an integer >= 2. Received:"
                    f" {num_folds!r} of type {type(num_folds).__name__}")
  if num_folds < 2:
    raise ValueError(
        f"num_folds: expected an integer >= 2. Received: {num_folds!r}")
  return int(num_folds)


def _as_numpy(ids: Ids) -> np.ndarray:
  """`ids` as a `(N,)` numpy array of str or bytes (object, `U` or `S`).

  Raises:
    TypeError: not strings or bytes.
    ValueError: a null id.
  """
  if isinstance(ids, (pa.Array, pa.ChunkedArray)):
    type_ = ids.type
    if pa.types.is_dictionary(type_):
      ids, type_ = ids.cast(type_.value_type), type_.value_type
    if not (pa.types.is_string(type_) or pa.types.is_large_string(type_) or
            pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or
            pa.types.is_string_view(type_) or pa.types.is_binary_view(type_)):
      raise TypeError("ids: expected a pyarrow string or binary array."
                      f" Received: an array of {type_}")
    if ids.null_count:
      nulls = ids.is_null()
      if isinstance(nulls, pa.ChunkedArray):
        nulls = nulls.combine_chunks()
      _refuse_nulls(nulls.to_numpy(zero_copy_only=False), len(ids))
    return ids.to_numpy(zero_copy_only=False)
  if isinstance(ids, (str, bytes)):
    raise TypeError("ids: expected a sequence of ids. Received: one"
                    f" {type(ids).__name__}, {ids[:40]!r}")
  if isinstance(ids, np.ndarray):
    values = ids.astype(object) if ids.dtype.kind == "T" else ids
  else:
    # dtype=object: numpy's `S` dtype would drop trailing NUL bytes.
    values = np.empty(len(ids), dtype=object)
    values[:] = list(ids)
  if values.ndim != 1:
    raise TypeError(f"ids: expected a 1-D array. Received: shape"
                    f" {values.shape}")
  if values.dtype.kind not in "OUS":
    raise TypeError(f"ids: expected str or bytes ids. Received: a numpy"
                    f" array of {values.dtype}")
  if values.dtype == object:
    _refuse_nulls(np.equal(values, None).astype(bool), len(values))
  return values


def _refuse_nulls(nulls: np.ndarray, n: int) -> None:
  """Raises ValueError naming the null positions of `nulls` `(N,)` bool."""
  where = np.flatnonzero(nulls)
  if not len(where):
    return
  shown = ", ".join(str(i) for i in where[:_SHOWN])
  more = ", ..." if len(where) > _SHOWN else ""
  raise ValueError(
      f"ids: expected a str or bytes id in every position; {len(where)} of"
      f" {n} are null. Received: None at positions [{shown}{more}]")
