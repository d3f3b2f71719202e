"""`CountDuplicateIds`: how many ids occur on more than one scored example."""

from __future__ import annotations

import functools

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from lossaudit import duplicates

# Ids buffered per bundle before they are split into buckets and emitted.
_FLUSH_IDS = 1 << 20


class _BucketIdsFn(beam.DoFn):
  """Scored RecordBatches → `(bucket, ids)`, a few large arrays per bundle."""

  def __init__(self, num_buckets: int):
    self._num_buckets = num_buckets

  def start_bundle(self):
    self._ids = []
    self._buffered = 0

  def process(self, batch: pa.RecordBatch):
    self._ids.append(batch.column("id"))
    self._buffered += batch.num_rows
    if self._buffered >= _FLUSH_IDS:
      yield from self._flush()

  def finish_bundle(self):
    for element in self._flush():
      yield WindowedValue(element, window.GlobalWindow().max_timestamp(),
                          [window.GlobalWindow()])

  def _flush(self):
    ids, self._ids, self._buffered = self._ids, [], 0
    if ids:
      yield from duplicates.split_by_bucket(pa.concat_arrays(ids),
                                            self._num_buckets)


def _find_in_bucket(element) -> duplicates.Duplicates:
  _, ids = element
  return duplicates.find_duplicates(list(ids))


def _merge_all(found) -> duplicates.Duplicates:
  return functools.reduce(duplicates.Duplicates.merge, found,
                          duplicates.Duplicates())


class CountDuplicateIds(beam.PTransform):
  """Scored RecordBatches → one `lossaudit.duplicates.Duplicates`.

  Duplicates are counted, never merged: every example is scored and written
  under its id.
  """

  def __init__(self, num_buckets: int = duplicates.NUM_BUCKETS):
    super().__init__()
    self._num_buckets = num_buckets

  def expand(self, batches):
    return (batches
            | "Bucket" >> beam.ParDo(_BucketIdsFn(self._num_buckets))
            | "GroupBuckets" >> beam.GroupByKey()
            | "FindInBucket" >> beam.Map(_find_in_bucket)
            | "Merge" >> beam.CombineGlobally(_merge_all))
