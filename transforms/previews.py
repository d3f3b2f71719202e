"""Previews of the report's flagged examples: thumbnails and text.

Scored batches carry no example bytes (a dataset may hold 500M images). The
scorer keeps each bundle's running top highest-scored rows as read (id and
string columns, `lossaudit.previews.candidates`), and `TopCandidatesCombineFn`
keeps the run's highest; the report's top flagged rows are found there
whenever they are the highest-scored rows (as under `flag.loss_quantile`).
Only the flagged ids not found there are looked up by reading the input
files again, with only the id and string columns, each batch keeping the
rows with a wanted id (`lossaudit.previews.batch_previews`). That file list
is derived from the missing ids, so the re-read starts only once they are
known, and not at all when none is missing. Dead letters of the re-read are
dropped: the main read counted them. The re-read counts into `preview_`
counters, so `records_read` stays the number of records the audit read.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from lossaudit import formats
from lossaudit import previews as previews_lib
from lossaudit.spec import RAW_RECORD_COLUMN, ScoringSpec


def preview_inputs(spec: ScoringSpec,
                   image_shape: Optional[Tuple[int, ...]] = None
                   ) -> Tuple[Tuple[str, str], ...]:
  """`(model input, column)` of each string input that reads a data column
  (not serialized tf.Examples), and of each numeric input of
  `image_shape`'s size (`image_inputs`)."""
  images = set(image_inputs(spec, image_shape))
  return tuple((f.model_input, f.column) for f in spec.features
               if (f.dtype == "string" and f.column != RAW_RECORD_COLUMN)
               or (f.model_input, f.column) in images)


def image_inputs(spec: ScoringSpec,
                 image_shape: Optional[Tuple[int, ...]]
                 ) -> Tuple[Tuple[str, str], ...]:
  """`(model input, column)` of each numeric input holding as many values
  a row as `image_shape` (`input.image_shape`; none when it is None)."""
  if image_shape is None:
    return ()
  size = int(np.prod(image_shape))
  return tuple((f.model_input, f.column) for f in spec.features
               if f.dtype != "string" and None not in f.shape
               and int(np.prod(f.shape, dtype=np.int64)) == size)


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
  """`(file, RecordBatch)` → the previews of its rows with a wanted id (an
  `{id: {model input: preview}}` dict), when it has any."""

  def __init__(self, id_column: str, inputs: Sequence[Tuple[str, str]],
               image_shape: Optional[Tuple[int, ...]] = None):
    self._id_column = id_column
    self._inputs = tuple(inputs)
    self._image_shape = image_shape
    self._wanted: Optional[Tuple[List[str], pa.Array]] = None

  def process(self, element, wanted: List[str]):
    _, batch = element
    found = previews_lib.batch_previews(
        batch, self._id_column, self._inputs, self._ids(wanted),
        self._image_shape)
    if found:
      yield found

  def _ids(self, wanted: List[str]) -> pa.Array:
    """The wanted ids as an Arrow array, built once per side input."""
    if self._wanted is None or self._wanted[0] is not wanted:
      self._wanted = (wanted, pa.array(wanted, pa.string()))
    return self._wanted[1]


class TopCandidatesCombineFn(beam.CombineFn):
  """`previews.candidates` tables → the `k` highest-scored rows (or None).

  The accumulator holds at most `k` rows, so lifted into each bundle only
  `k` rows' bytes per bundle are shuffled.
  """

  def __init__(self, k: int):
    self._k = k

  def create_accumulator(self):
    return None

  def add_input(self, accumulator, table):
    return previews_lib.top_candidates([accumulator, table], self._k)

  def merge_accumulators(self, accumulators):
    return previews_lib.top_candidates(list(accumulators), self._k)

  def extract_output(self, accumulator):
    return accumulator


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


def _wanted_ids(top_flagged: List[Dict]) -> List[str]:
  return sorted({row["id"] for row in top_flagged})


class FetchPreviews(beam.PTransform):
  """The top flagged rows → one `lossaudit.previews.Previews`.

  The rows are looked up first among `candidates` (the highest-scored rows
  the scorer kept, bytes and all); the input files are read again only when
  some flagged row is not there, and then only for those ids.

  Args:
    files: the input files (`preflight.Plan.files`).
    input_format: `input.format` (`lossaudit.formats.names()`).
    spec: what is scored; needs an `id_column` and string inputs.
    tf_schema: the run's serialized tensorflow_metadata Schema (None where
      the format takes none: `formats.ReadRequest.schema`).
    batch_size: rows per batch read.
    candidates: a singleton PCollection of the `TopCandidatesCombineFn`
      table (or None).
    image_shape: `input.image_shape`: numeric inputs of that size are
      previewed as images.
  """

  def __init__(self, files: Sequence[str], input_format: str,
               spec: ScoringSpec, tf_schema: Optional[bytes],
               batch_size: int, candidates: beam.PCollection,
               image_shape: Optional[Tuple[int, ...]] = None):
    super().__init__()
    if not spec.id_column:
      raise ValueError("previews need an id column")
    self._files = list(files)
    self._format = formats.get(input_format)
    self._id_column = spec.id_column
    self._image_shape = image_shape
    self._inputs = preview_inputs(spec, image_shape)
    columns = list(dict.fromkeys(
        [spec.id_column] + [column for _, column in self._inputs]))
    self._request = formats.ReadRequest(
        batch_size, columns=tuple(columns), schema=(
            None if tf_schema is None else
            preview_tf_schema(tf_schema, columns)),
        metrics_prefix=_METRICS_PREFIX)
    self._candidates = candidates

  def expand(self, top_flagged):
    id_column, inputs = self._id_column, self._inputs
    image_shape = self._image_shape

    def from_candidates(top, table):
      if table is None:
        return {}
      return previews_lib.batch_previews(
          table.combine_chunks().to_batches()[0], id_column, inputs,
          pa.array(_wanted_ids(top), pa.string()), image_shape)

    found = top_flagged | "FromCandidates" >> beam.Map(
        from_candidates, table=beam.pvalue.AsSingleton(self._candidates))
    missing = top_flagged | "Missing" >> beam.Map(
        lambda top, found: [i for i in _wanted_ids(top) if i not in found],
        found=beam.pvalue.AsSingleton(found))
    files = missing | "Files" >> beam.FlatMap(
        lambda ids, files: files if ids else [], self._files)
    reread = (self._read(files)
              | "PreviewRows" >> beam.ParDo(
                  _PreviewRows(id_column, inputs, image_shape),
                  wanted=beam.pvalue.AsSingleton(missing)))
    names = tuple(model_input for model_input, _ in inputs)
    return ((found, reread)
            | "Both" >> beam.Flatten()
            | "Merge" >> beam.CombineGlobally(_MergePreviews())
            | "AsPreviews" >> beam.Map(
                lambda by_id: previews_lib.Previews(names, by_id)))

  def _read(self, files: beam.PCollection) -> beam.PCollection:
    """The files → `(file, RecordBatch)` of the id and input columns; the
    dead letters are dropped."""
    return self._format.read_files(files, self._request)
