"""Writing small real datasets (TFRecord of tf.train.Example, Parquet).

Used by the demo, the benchmark and the tests to build their data.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _list_column(values: np.ndarray) -> pa.Array:
  """`(N, ...)` values as a list column of N rows (strings as bytes)."""
  values = np.asarray(values)
  flat = values.reshape(len(values), -1)
  offsets = np.arange(0, flat.size + 1, max(flat.shape[1], 1), dtype=np.int32)
  if values.dtype.kind in "biu":
    flat = flat.astype(np.int64)
  elif values.dtype.kind == "f":
    flat = flat.astype(np.float32)
  items = pa.array(flat.reshape(-1))
  if isinstance(items, pa.ChunkedArray):  # Arrow splits very long text.
    items = items.combine_chunks()
  if pa.types.is_string(items.type) or pa.types.is_large_string(items.type):
    items = items.cast(pa.binary())
  return pa.ListArray.from_arrays(pa.array(offsets), items)


def to_examples(columns: Mapping[str, np.ndarray]) -> List[bytes]:
  """Serialized tf.train.Examples, one per row of `columns` (`(N, ...)`).

  Encoded in C++ by tfx_bsl; a NaN stays NaN.
  """
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

  batch = pa.RecordBatch.from_arrays(
      [_list_column(v) for v in columns.values()], list(columns))
  return example_coder.RecordBatchToExamplesEncoder().encode(batch)


def _shards(n: int, num_shards: int):
  bounds = np.linspace(0, n, num_shards + 1).astype(int)
  return list(zip(bounds[:-1], bounds[1:]))


def write_tfrecords(directory: str, columns: Mapping[str, np.ndarray],
                    num_shards: int = 4, compression: str = "GZIP",
                    prefix: str = "part") -> List[str]:
  """Writes `columns` as `num_shards` TFRecord files; returns their paths."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  records = to_examples(columns)
  suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
  paths = []
  options = tf.io.TFRecordOptions(compression_type=compression or "")
  for index, (lo, hi) in enumerate(_shards(len(records), num_shards)):
    path = os.path.join(directory,
                        f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}")
    with tf.io.TFRecordWriter(path, options) as writer:
      for record in records[lo:hi]:
        writer.write(record)
    paths.append(path)
  return paths


def to_arrow(columns: Mapping[str, np.ndarray]) -> pa.Table:
  """`(N,)` columns as scalars, `(N, d...)` columns as list<...> columns."""
  arrays: Dict[str, pa.Array] = {}
  for name, values in columns.items():
    values = np.asarray(values)
    if values.ndim == 1:
      arrays[name] = pa.array(values)
    else:
      flat = values.reshape(len(values), -1)
      offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
      arrays[name] = pa.ListArray.from_arrays(pa.array(offsets),
                                              pa.array(flat.reshape(-1)))
  return pa.table(arrays)


def write_parquet(directory: str, columns: Mapping[str, np.ndarray],
                  num_shards: int = 4, row_group_size: int = 512,
                  prefix: str = "part") -> List[str]:
  """Writes `columns` as `num_shards` Parquet files; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  table = to_arrow(columns)
  paths = []
  for index, (lo, hi) in enumerate(_shards(table.num_rows, num_shards)):
    path = os.path.join(directory,
                        f"{prefix}-{index:05d}-of-{num_shards:05d}.parquet")
    pq.write_table(table.slice(lo, hi - lo), path,
                   row_group_size=row_group_size)
    paths.append(path)
  return paths
