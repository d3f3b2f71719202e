"""`FlagHistory`: today's flags joined with the baseline run's, by id.

Today's flagged rows, today's scored `(id, loss)` and the baseline's
`flagged/` rows are each split into hash buckets of scratch files
(`BucketRows`; the scored ones are the buckets the duplicate-id count
reads too); only the `(bucket, (kind, file))` names are grouped, and each
bucket is joined on one worker (`lossaudit.history.join_bucket`). No side
input holds the ids, and a worker holds one bucket's rows: memory stays flat
however many examples are flagged. A bucket without baseline flags never
reads its scored rows (nothing in it can be resolved).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit import history
from lossaudit.history import (
  BASELINE_SCHEMA,
  SCORED_IDS_SCHEMA,
  SCORED_SCHEMA,
  HistoryCounts,
)
from lossaudit.merging import merge_all
from lossaudit.transforms.buckets import BucketRows, read_bucket

RESOLVED = "resolved"
COUNTS = "counts"
_FLAGGED, _SCORED, _BASELINE = "flagged", "scored", "baseline"
_BASELINE_IDS = "baseline_ids"


class HistoryInputs(NamedTuple):
  """What `FlagHistory` joins.

  Attributes:
    flagged: today's flagged RecordBatches.
    scored: `(bucket, scratch file)` of today's scored `(id, loss)`
      (`BucketRows` with `SCORED_SCHEMA`).
  """

  flagged: beam.PCollection
  scored: beam.PCollection


def read_baseline_file(path: str, baseline_run_id: str
                       ) -> Iterable[pa.RecordBatch]:
  """A baseline `flagged/` file's rows as `BASELINE_SCHEMA` batches."""
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    parquet = pq.ParquetFile(f)
    names = [n for n in BASELINE_SCHEMA.names
             if n in parquet.schema_arrow.names]
    for index in range(parquet.num_row_groups):
      table = history.baseline_rows(
          parquet.read_row_group(index, columns=names), baseline_run_id)
      yield from table.to_batches()


def read_id_file(path: str) -> Iterable[pa.RecordBatch]:
  """The `id` column of a Parquet file (`scored_ids/` or `losses/`), as
  `SCORED_IDS_SCHEMA` batches."""
  with FileSystems.open(
      path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    parquet = pq.ParquetFile(f)
    for batch in parquet.iter_batches(columns=["id"]):
      yield pa.RecordBatch.from_arrays(
          [batch.column(0).cast(pa.string())], schema=SCORED_IDS_SCHEMA)


class _JoinBucketFn(beam.DoFn):
  """`(bucket, [(kind, file)])` → history-annotated flagged batches, and
  `resolved` batches and `counts` as tagged outputs."""

  def __init__(self, flagged_schema: pa.Schema, run_id: str,
               ids_known: bool):
    self._flagged_schema = flagged_schema
    self._run_id = run_id
    self._ids_known = ids_known

  def process(self, element: Tuple[int, Iterable[Tuple[str, str]]],
              decided=None):
    _, files = element
    paths = {_FLAGGED: [], _SCORED: [], _BASELINE: [], _BASELINE_IDS: []}
    for kind, path in files:
      paths[kind].append(path)
    baseline = read_bucket(paths[_BASELINE], BASELINE_SCHEMA)
    flagged = read_bucket(paths[_FLAGGED], self._flagged_schema)
    baseline_ids = (read_bucket(paths[_BASELINE_IDS], SCORED_IDS_SCHEMA)
                    if self._ids_known else None)
    scored = (read_bucket(paths[_SCORED], SCORED_SCHEMA)
              if baseline.num_rows or paths[_BASELINE_IDS] else None)
    joined = history.join_bucket(flagged, baseline, scored, self._run_id,
                                 baseline_ids, decided)
    for batch in joined.flagged.to_batches():
      yield batch
    for batch in joined.resolved.to_batches():
      yield beam.pvalue.TaggedOutput(RESOLVED, batch)
    yield beam.pvalue.TaggedOutput(COUNTS, joined.counts)


class FlagHistory(beam.PTransform):
  """`HistoryInputs` → `{"flagged", "resolved", "counts"}`.

  `flagged`: today's flagged batches with `status`, `first_flagged` and
  `times_flagged` (`history.with_history_schema`); `resolved`: batches of
  `RESOLVED_SCHEMA`; `counts`: one `HistoryCounts`.

  Args:
    prefix: the scratch files are `prefix-<kind>-b<bucket>-*.arrows`.
    flagged_schema: the schema of today's flagged batches.
    baseline_files: the baseline's `flagged/` Parquet files (none: every
      flag is new).
    baseline_run_id: the baseline's run id, the `first_flagged` of its flags
      when it has no history of its own.
    run_id: this run's id.
    baseline_ids: Parquet files with an `id` column of every id the
      baseline scored; None when unknown (then `in_baseline` is null).
    decisions: a singleton PCollection of the `Decisions` in force, or
      None: their `keep`s make flags `reviewed`.
  """

  def __init__(self, prefix: str, flagged_schema: pa.Schema,
               baseline_files: Sequence[str], baseline_run_id: str,
               run_id: str, baseline_ids: Optional[Sequence[str]] = (),
               decisions=None):
    super().__init__()
    self._decisions = decisions
    self._prefix = prefix
    self._flagged_schema = flagged_schema
    self._baseline_files = list(baseline_files)
    self._baseline_run_id = baseline_run_id
    self._run_id = run_id
    self._baseline_ids = baseline_ids

  def expand(self, inputs: HistoryInputs):
    prefix = self._prefix
    parts = (
        inputs.flagged | "BucketFlagged" >> BucketRows(
            f"{prefix}-{_FLAGGED}", self._flagged_schema, tag=_FLAGGED),
        inputs.scored | "TagScored" >> beam.MapTuple(
            lambda bucket, path: (bucket, (_SCORED, path))),
        (inputs.flagged.pipeline
         | "BaselineFiles" >> beam.Create(self._baseline_files)
         | "Spread" >> beam.Reshuffle()
         | "ReadBaseline" >> beam.FlatMap(read_baseline_file,
                                          self._baseline_run_id)
         | "BucketBaseline" >> BucketRows(
             f"{prefix}-{_BASELINE}", BASELINE_SCHEMA, tag=_BASELINE)),
        (inputs.flagged.pipeline
         | "BaselineIdFiles" >> beam.Create(list(self._baseline_ids or ()))
         | "SpreadIds" >> beam.Reshuffle()
         | "ReadBaselineIds" >> beam.FlatMap(read_id_file)
         | "BucketBaselineIds" >> BucketRows(
             f"{prefix}-{_BASELINE_IDS}", SCORED_IDS_SCHEMA,
             tag=_BASELINE_IDS)))
    joined = (parts
              | "Buckets" >> beam.Flatten()
              | "GroupBuckets" >> beam.GroupByKey()
              | "JoinBuckets" >> beam.ParDo(_JoinBucketFn(
                  self._flagged_schema, self._run_id,
                  ids_known=self._baseline_ids is not None),
                  **({} if self._decisions is None else {
                      "decided": beam.pvalue.AsSingleton(self._decisions)})
                  ).with_outputs(
                      RESOLVED, COUNTS, main="flagged"))
    return {"flagged": joined.flagged, RESOLVED: joined[RESOLVED],
            COUNTS: joined[COUNTS] | "SumCounts" >> beam.CombineGlobally(
                merge_all, empty=HistoryCounts())}
