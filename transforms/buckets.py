"""`BucketRows`: rows split by a hash of their id into scratch files.

Each bundle splits its rows by `duplicates.hash_buckets` of the id and
writes each bucket's rows to a scratch Arrow IPC file, named only when the
bundle succeeds (as the spill does). Only `(bucket, file name)` pairs are
shuffled, so a join or count by id reads one bucket's files on one worker:
no runner holds every id in memory. Used to count duplicate ids and to join
flags with the baseline's.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

import apache_beam as beam
import numpy as np
import pyarrow as pa

from lossaudit import duplicates
from lossaudit.transforms.spill import (
  SpillFile,
  in_global_window,
  open_spill,
  read_spilled,
)

# Rows buffered before they are split into buckets and written.
FLUSH_ROWS = 1 << 16


class _BucketRowsFn(beam.DoFn):
  """RecordBatches → `(bucket, scratch file)` per bucket a bundle used, or
  `(bucket, (tag, scratch file))` with a tag."""

  def __init__(self, prefix: str, schema: pa.Schema, num_buckets: int,
               tag: Any = None):
    self._prefix = prefix
    self._schema = schema
    self._num_buckets = num_buckets
    self._tag = tag

  def start_bundle(self):
    self._buffer: List[pa.RecordBatch] = []
    self._buffered = 0
    self._files: Dict[int, SpillFile] = {}

  def process(self, batch: pa.RecordBatch):
    if not batch.num_rows:
      return
    self._buffer.append(batch.select(self._schema.names))
    self._buffered += batch.num_rows
    if self._buffered >= FLUSH_ROWS:
      self._flush()

  def finish_bundle(self):
    self._flush()
    for bucket, spill in sorted(self._files.items()):
      spill.close()
      value = spill.path if self._tag is None else (self._tag, spill.path)
      yield in_global_window((bucket, value))

  def _flush(self):
    if not self._buffer:
      return
    table = pa.Table.from_batches(self._buffer, schema=self._schema)
    self._buffer, self._buffered = [], 0
    buckets = duplicates.hash_buckets(table.column("id").combine_chunks(),
                                       self._num_buckets)
    # One sort, then each bucket is a slice (not one filter a bucket).
    order = np.argsort(buckets, kind="stable")
    table = table.take(pa.array(order))
    buckets = buckets[order]
    starts = np.flatnonzero(np.diff(buckets, prepend=-1))
    stops = np.append(starts[1:], len(buckets))
    for start, stop in zip(starts.tolist(), stops.tolist()):
      bucket = int(buckets[start])
      if bucket not in self._files:
        self._files[bucket] = open_spill(f"{self._prefix}-b{bucket}",
                                         self._schema)
      for batch in table.slice(start, stop - start).to_batches():
        self._files[bucket].writer.write_batch(batch)


class BucketRows(beam.PTransform):
  """RecordBatches → `(bucket, scratch file)` pairs (see module docstring).

  Args:
    prefix: scratch files are `prefix-b<bucket>-*.arrows`.
    schema: the columns kept (an `id` string column among them).
    num_buckets: how many buckets the ids are split into.
    tag: when set, each file name is given as `(tag, name)`, so buckets of
      several kinds can be grouped together.
  """

  def __init__(self, prefix: str, schema: pa.Schema,
               num_buckets: int = duplicates.NUM_BUCKETS, tag: Any = None):
    super().__init__()
    self._fn = _BucketRowsFn(prefix, schema, num_buckets, tag)

  def expand(self, batches):
    return batches | "Bucket" >> beam.ParDo(self._fn)


def read_bucket(paths: Iterable[str], schema: pa.Schema) -> pa.Table:
  """The `schema` columns of one bucket's scratch files, as one table."""
  return pa.Table.from_batches(
      [batch.select(schema.names) for path in paths
       for batch in read_spilled(path)], schema=schema)
