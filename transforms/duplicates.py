"""`CountDuplicateIds`: how many ids occur on more than one scored example.

The ids come split into hash buckets of scratch files (`BucketRows`, shared
with the flag history's join); each bucket's files are read and counted on
one worker, which holds about 1/64 of the ids.
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import pyarrow as pa

from lossaudit import duplicates
from lossaudit.merging import merge_all
from lossaudit.transforms.buckets import read_bucket

_SCHEMA = pa.schema([pa.field("id", pa.string())])


def _find_in_bucket(unused_bucket: int, paths: Iterable[str]
                    ) -> duplicates.Duplicates:
  ids = read_bucket(paths, _SCHEMA).column("id")
  return duplicates.find_duplicates(ids.chunks)


class CountDuplicateIds(beam.PTransform):
  """`(bucket, scratch file)` pairs of `BucketRows` (with an `id` column) →
  one `lossaudit.duplicates.Duplicates`.

  Duplicates are counted, never merged: every example is scored and written
  under its id.
  """

  def expand(self, buckets):
    return (buckets
            | "GroupBuckets" >> beam.GroupByKey()
            | "FindInBucket" >> beam.MapTuple(_find_in_bucket)
            | "Merge" >> beam.CombineGlobally(
                merge_all, empty=duplicates.Duplicates()))
