"""`CountDuplicateIds`: how many ids occur on more than one scored example.

The ids are split into hash buckets of scratch files (`BucketRows`); each
bucket's files are then read and counted on one worker, which holds about
1/64 of the ids.
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import pyarrow as pa

from lossaudit import duplicates
from lossaudit.merging import merge_all
from lossaudit.transforms.buckets import BucketRows, read_bucket

_SCHEMA = pa.schema([pa.field("id", pa.string())])


def _find_in_bucket(unused_bucket: int, paths: Iterable[str]
                    ) -> duplicates.Duplicates:
  ids = read_bucket(paths, _SCHEMA).column("id")
  return duplicates.find_duplicates(ids.chunks)


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
            | "Bucket" >> BucketRows(self._prefix, _SCHEMA, self._num_buckets)
            | "GroupBuckets" >> beam.GroupByKey()
            | "FindInBucket" >> beam.MapTuple(_find_in_bucket)
            | "Merge" >> beam.CombineGlobally(
                merge_all, empty=duplicates.Duplicates()))
