"""Writing small real datasets (TFRecord of tf.train.Example, Parquet).

Used by the demo, the benchmark and the tests to build their data.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _feature(value: np.ndarray):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  value = np.asarray(value).reshape(-1)
  if value.dtype.kind in "iub":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value))
  if value.dtype.kind == "f":
    return tf.train.Feature(float_list=tf.train.FloatList(value=value))
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[v.encode() if isinstance(v, str) else bytes(v) for v in value]))


def to_examples(columns: Mapping[str, np.ndarray]) -> List[bytes]:
  """Serialized tf.train.Examples, one per row of `columns` (`(N, ...)`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  n = len(next(iter(columns.values())))
  return [
      tf.train.Example(features=tf.train.Features(feature={
          name: _feature(values[i]) for name, values in columns.items()
      })).SerializeToString() for i in range(n)
  ]


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
