"""Previews of the report's flagged examples, fetched by re-reading the input.

Scored batches carry no example bytes (a dataset may hold 500M images), so
once the top flagged rows are known the input files are read again, with
only the id column and the string inputs' columns, and each batch keeps only
the rows with a top flagged id (`lossaudit.previews.batch_previews`). The
file list is derived from the top flagged rows, so the re-read starts only
once they are known (and not at all when nothing was flagged). Dead letters
of the re-read are dropped: the main read counted them. The re-read uses
the readers' DoFns with `preview_` counters, so `records_read` stays the
number of records the audit read once.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa

from lossaudit import dead_letters
from lossaudit import previews as previews_lib
from lossaudit.model_inputs import RAW_RECORD_COLUMN
from lossaudit.scoring import ScoringSpec
from lossaudit.transforms import read


def preview_inputs(spec: ScoringSpec) -> Tuple[Tuple[str, str], ...]:
  """`(model input, column)` of each string input that reads a data column
  (not serialized tf.Examples)."""
  return tuple((f.model_input, f.column) for f in spec.features
               if f.dtype == "string" and f.column != RAW_RECORD_COLUMN)


def preview_tf_schema(tf_schema: bytes, names: Sequence[str]) -> bytes:
  """The features `names` of a serialized tensorflow_metadata Schema (the
  run's, so each keeps the type probed in the data)."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top

  full = schema_pb2.Schema.FromString(tf_schema)
  kept = schema_pb2.Schema()
  for feature in full.feature:
    if feature.name in names:
      kept.feature.add().CopyFrom(feature)
  return kept.SerializeToString()


# The re-read counts into its own counters: `records_read` stays the number
# of records the audit read.
_METRICS_PREFIX = "preview_"


class _PreviewRows(beam.DoFn):
  """`(file, RecordBatch)` → the previews of its top flagged rows (an
  `{id: {model input: preview}}` dict), when it has any."""

  def __init__(self, id_column: str, inputs: Sequence[Tuple[str, str]]):
    self._id_column = id_column
    self._inputs = tuple(inputs)
    self._wanted: Optional[Tuple[List, pa.Array]] = None

  def process(self, element, top_flagged: List[Dict]):
    _, batch = element
    found = previews_lib.batch_previews(
        batch, self._id_column, self._inputs, self._ids(top_flagged))
    if found:
      yield found

  def _ids(self, top_flagged: List[Dict]) -> pa.Array:
    """The top flagged ids as an Arrow array, built once per side input."""
    if self._wanted is None or self._wanted[0] is not top_flagged:
      self._wanted = (top_flagged, pa.array(
          sorted({r["id"] for r in top_flagged}), pa.string()))
    return self._wanted[1]


class _MergePreviews(beam.CombineFn):
  """`{id: {model input: preview}}` dicts → one; the first of an id wins."""

  def create_accumulator(self):
    return {}

  def add_input(self, accumulator, found):
    return previews_lib.merge([accumulator, found])

  def merge_accumulators(self, accumulators):
    return previews_lib.merge(list(accumulators))

  def extract_output(self, accumulator):
    return accumulator


class FetchPreviews(beam.PTransform):
  """The top flagged rows → one `lossaudit.previews.Previews`.

  Args:
    files: the input files (`preflight.Plan.files`).
    input_format: `tfrecord` or `parquet`.
    spec: what is scored; needs an `id_column` and string inputs.
    tf_schema: the run's serialized tensorflow_metadata Schema (TFRecord).
    batch_size: rows per batch read.
  """

  def __init__(self, files: Sequence[str], input_format: str,
               spec: ScoringSpec, tf_schema: Optional[bytes],
               batch_size: int):
    super().__init__()
    if not spec.id_column:
      raise ValueError("previews need an id column")
    self._files = list(files)
    self._format = input_format
    self._id_column = spec.id_column
    self._inputs = preview_inputs(spec)
    columns = list(dict.fromkeys(
        [spec.id_column] + [column for _, column in self._inputs]))
    self._columns = columns
    self._tf_schema = (preview_tf_schema(tf_schema, columns)
                       if input_format == "tfrecord" else None)
    self._batch_size = batch_size

  def expand(self, top_flagged):
    files = top_flagged | "Files" >> beam.FlatMap(
        lambda top, files: files if top else [], self._files)
    batches = self._read(files)
    names = tuple(model_input for model_input, _ in self._inputs)
    return (batches
            | "PreviewRows" >> beam.ParDo(
                _PreviewRows(self._id_column, self._inputs),
                top_flagged=beam.pvalue.AsSingleton(top_flagged))
            | "Merge" >> beam.CombineGlobally(_MergePreviews())
            | "AsPreviews" >> beam.Map(
                lambda by_id: previews_lib.Previews(names, by_id)))

  def _read(self, files: beam.PCollection) -> beam.PCollection:
    """The files → `(file, RecordBatch)` of the id and input columns; the
    dead letters are dropped."""
    if self._format == "tfrecord":
      return (files
              | "Spread" >> beam.Reshuffle()
              | "ReadAndDecode" >> beam.ParDo(
                  read._ReadTFExampleFile(  # pylint: disable=protected-access
                      self._tf_schema, self._batch_size, False,
                      _METRICS_PREFIX)
                  ).with_outputs(dead_letters.TAG, main="batches")).batches
    groups = (files
              | "ListRowGroups" >> beam.ParDo(
                  read._ListRowGroups()  # pylint: disable=protected-access
                  ).with_outputs(dead_letters.TAG, main="groups")).groups
    return (groups
            | "Spread" >> beam.Reshuffle()
            | "ReadRowGroups" >> beam.ParDo(
                read._ReadRowGroup(  # pylint: disable=protected-access
                    self._columns, self._batch_size, _METRICS_PREFIX)
                ).with_outputs(dead_letters.TAG, main="batches")).batches
