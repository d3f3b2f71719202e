"""`CountDuplicateIds`: how many ids occur on more than one scored example.

Each bundle splits its ids by hash into buckets and writes each bucket's ids
to a scratch Arrow IPC file, named only when the bundle succeeds (as the
spill does); each bucket's files are then read and counted on one worker.
Only file names are shuffled, so no runner holds all the ids in memory: a
worker holds one bucket, about 1/64 of them.
"""

from __future__ import annotations

from typing import Dict, Iterable

import apache_beam as beam
import pyarrow as pa

from lossaudit import duplicates
from lossaudit.merging import merge_all
from lossaudit.transforms.spill import (
  SpillFile,
  in_global_window,
  open_spill,
  read_spilled,
)

_SCHEMA = pa.schema([pa.field("id", pa.string())])
# Ids buffered before they are split into buckets and written.
_FLUSH_IDS = 1 << 16


class _BucketIdsFn(beam.DoFn):
  """Scored RecordBatches → `(bucket, scratch file of its ids)` per bundle."""

  def __init__(self, prefix: str, num_buckets: int):
    self._prefix = prefix
    self._num_buckets = num_buckets

  def start_bundle(self):
    self._buffer, self._buffered = [], 0
    self._files: Dict[int, SpillFile] = {}

  def process(self, batch: pa.RecordBatch):
    self._buffer.append(batch.column("id"))
    self._buffered += batch.num_rows
    if self._buffered >= _FLUSH_IDS:
      self._flush()

  def finish_bundle(self):
    self._flush()
    for bucket, spill in sorted(self._files.items()):
      spill.close()
      yield in_global_window((bucket, spill.path))

  def _flush(self):
    if not self._buffer:
      return
    ids = pa.concat_arrays(self._buffer)
    self._buffer, self._buffered = [], 0
    for bucket, part in duplicates.split_by_bucket(ids, self._num_buckets):
      if bucket not in self._files:
        self._files[bucket] = open_spill(f"{self._prefix}-b{bucket}", _SCHEMA)
      self._files[bucket].writer.write_batch(
          pa.RecordBatch.from_arrays([part], schema=_SCHEMA))


def _find_in_bucket(unused_bucket: int, paths: Iterable[str]
                    ) -> duplicates.Duplicates:
  return duplicates.find_duplicates([
      batch.column("id") for path in paths for batch in read_spilled(path)])


class CountDuplicateIds(beam.PTransform):
  """Scored RecordBatches → one `lossaudit.duplicates.Duplicates`.

  Duplicates are counted, never merged: every example is scored and written
  under its id.

  Args:
    prefix: scratch files are `prefix-b<bucket>-*.arrows`.
    num_buckets: how many buckets the ids are split into.
  """

  def __init__(self, prefix: str, num_buckets: int = duplicates.NUM_BUCKETS):
    super().__init__()
    self._prefix = prefix
    self._num_buckets = num_buckets

  def expand(self, batches):
    return (batches
            | "Bucket" >> beam.ParDo(_BucketIdsFn(self._prefix,
                                                  self._num_buckets))
            | "GroupBuckets" >> beam.GroupByKey()
            | "FindInBucket" >> beam.MapTuple(_find_in_bucket)
            | "Merge" >> beam.CombineGlobally(
                merge_all, empty=duplicates.Duplicates()))
