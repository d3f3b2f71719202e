"""Reading sharded datasets into `(source file, Arrow RecordBatch)` pairs.

Both readers spread the work over workers (TFRecord by file, Parquet by row
group), and both keep the file name, which dead-letter entries need.
tf.train.Examples are decoded in C++ by tfx_bsl's
`ExamplesToRecordBatchDecoder` (the decoder behind TFXIO's `TFExampleRecord`)
with a schema derived from the model, so only the needed features are parsed.
Parquet is not read through Beam's `ReadAllFromParquetBatched`: one file that
is not Parquet fails the whole run there, while here it is one dead letter.
"""

from __future__ import annotations

from typing import (
  Any,
  Dict,
  Iterable,
  Iterator,
  List,
  NamedTuple,
  Optional,
  Sequence,
  Tuple,
  Union,
)

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2
from tensorflow_metadata.proto.v0 import schema_pb2

from lossaudit import METRICS_NAMESPACE, dead_letters, prefetch, tfrecord
from lossaudit.errors import explained
from lossaudit.formats.parquet_io import open_file, read_row_group
from lossaudit.model_inputs import with_raw_records
from lossaudit.spec import POSITION_COLUMN

# Each stage after reading pays a fixed cost per element (a few Arrow and
# numpy calls): elements of this many rows keep it small beside the model's
# work, while the model still takes `batch_size` rows a call. Measured on 1M
# short texts, batch_size 1024: 11.5 s with elements of 1,024 rows, 8.6 s
# with 8,192. Elements hold at most ELEMENT_BYTES of records (or of a Parquet
# row group's columns), unless one batch_size of them is larger.
ELEMENT_ROWS = 8192
ELEMENT_BYTES = 64 << 20


def element_rows(batch_size: int) -> int:
  """Rows per element read, for model batches of `batch_size` rows."""
  return max(batch_size, ELEMENT_ROWS)


Item = Union[List[bytes], tfrecord.Unreadable]


def _gathered(items: Iterable[Item], rows: int) -> Iterator[Item]:
  """The record lists of `items` gathered up to `rows` records and
  `ELEMENT_BYTES` (a list larger alone is kept whole); an `Unreadable`
  passes through in its place."""
  pending: List[bytes] = []
  size = 0
  for item in items:
    if isinstance(item, tfrecord.Unreadable):
      if pending:
        yield pending
        pending, size = [], 0
      yield item
      continue
    item_size = sum(map(len, item))
    if pending and (len(pending) + len(item) > rows or
                    size + item_size > ELEMENT_BYTES):
      yield pending
      pending, size = [], 0
    pending += item
    size += item_size
  if pending:
    yield pending


class _Piece(NamedTuple):
  """What reading one stretch of a file gave.

  Attributes:
    records_read: records read (decodable or not).
    unreadable: unreadable stretches or files met (0 or 1).
    outputs: `(file, RecordBatch)` pairs and dead-letter `TaggedOutput`s.
  """

  records_read: int
  unreadable: int
  outputs: List[Union[Tuple[str, pa.RecordBatch], beam.pvalue.TaggedOutput]]


_KINDS = {schema_pb2.BYTES: "bytes_list", schema_pb2.INT: "int64_list",
          schema_pb2.FLOAT: "float_list"}


class _Decoder:
  """tfx_bsl's `ExamplesToRecordBatchDecoder` for one schema.

  A decoder that failed once fails the next batch too (tfx_bsl 1.21 keeps
  half-built columns), so every failure gets a fresh one.
  """

  def __init__(self, schema: bytes):
    self._schema = schema
    # Each feature's tf.train.Feature kind, as the schema decodes it.
    self.kinds = {f.name: _KINDS.get(f.type) for f in
                  schema_pb2.Schema.FromString(schema).feature}
    self._renew()

  def _renew(self):
    from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

    self._decoder = example_coder.ExamplesToRecordBatchDecoder(self._schema)

  def decode(self, records: List[bytes]) -> pa.RecordBatch:
    try:
      return self._decoder.DecodeBatch(records)
    except Exception:  # pylint: disable=broad-except
      self._renew()
      raise


class _ReadTFExampleFile(beam.DoFn):
  """Reads one TFRecord file of tf.train.Examples as RecordBatches.

  Records are read `batch_size` at a time and decoded in elements of up to
  `element_rows(batch_size)` rows; a record that is not a tf.train.Example,
  or a damaged stretch of the file, goes to the dead letter.
  """

  def __init__(self, schema: bytes, batch_size: int, raw_records: bool,
               metrics_prefix: str = "", positions: bool = False,
               id_column: Optional[str] = None):
    self._schema = schema
    self._batch_size = batch_size
    self._raw_records = raw_records
    self._positions = positions
    self._id_column = id_column
    self._records_read = Metrics.counter(METRICS_NAMESPACE,
                                         f"{metrics_prefix}records_read")
    self._unreadable = Metrics.counter(
        METRICS_NAMESPACE, f"{metrics_prefix}unreadable_stretches")

  def process(self, path: str):
    # Reading and decoding the next elements overlaps the steps fused after
    # this one (the model); counters stay on this thread, as Beam needs.
    for piece in prefetch.prefetched(self._pieces(path)):
      self._records_read.inc(piece.records_read)
      self._unreadable.inc(piece.unreadable)
      yield from piece.outputs

  def _pieces(self, path: str) -> Iterator[_Piece]:
    """Runs on the prefetch thread, with a decoder of its own."""
    decoder = _Decoder(self._schema)
    position = 0  # Of the next record in the file.
    try:
      for item in _gathered(
          tfrecord.tf_data_batches(path, self._batch_size),
          element_rows(self._batch_size)):
        if isinstance(item, tfrecord.Unreadable):
          position = item.record + 1
          yield _Piece(records_read=0, unreadable=1, outputs=[
              beam.pvalue.TaggedOutput(
                  dead_letters.TAG, dead_letters.dead_letter(
                      path, None, item.describe(),
                      dead_letters.UNREADABLE_RECORD if item.one_record
                      else dead_letters.UNREADABLE_STRETCH))])
          continue
        yield _Piece(records_read=len(item), unreadable=0,
                     outputs=self._decoded(decoder, path, item, position))
        position += len(item)
    except Exception as e:  # pylint: disable=broad-except
      yield _Piece(records_read=0, unreadable=1,
                   outputs=[_unreadable_file(path, e)])

  def _decoded(self, decoder: _Decoder, path: str, records: List[bytes],
               first: int) -> List[Any]:
    """`records` (the first at position `first` of the file) decoded as one
    batch; those the decoder refuses are found by halves (a few calls, not
    one a record) and dead-lettered."""
    good, dead, pending = [], [], [(first, records)]
    while pending:
      start, part = pending.pop(0)
      try:
        batch = decoder.decode(part)
      except Exception as e:  # pylint: disable=broad-except
        if len(part) > 1:
          half = len(part) // 2
          pending[:0] = [(start, part[:half]), (start + half, part[half:])]
          continue
        reason, what, id_, column = _why_undecodable(
            part[0], decoder.kinds, self._id_column)
        dead.append(beam.pvalue.TaggedOutput(
            dead_letters.TAG, dead_letters.dead_letter(
                path, id_, explained(what, e), reason, column)))
        continue
      good.append((start, part, batch))
    positions = [np.arange(start, start + len(part)) for start, part, _ in good]
    if len(good) > 1:  # Decoded once more, together, as one batch.
      kept = [record for _, part, _ in good for record in part]
      good = [(first, kept, decoder.decode(kept))]
    outputs = []
    for _, part, batch in good:
      if self._raw_records:
        batch = with_raw_records(batch, part)
      if self._positions:
        batch = with_positions(batch, np.concatenate(positions))
      outputs.append((path, batch))
    return outputs + dead


def with_positions(batch: pa.RecordBatch, positions: np.ndarray
                   ) -> pa.RecordBatch:
  """`batch` with each row's position in its file as `POSITION_COLUMN`."""
  return batch.append_column(POSITION_COLUMN,
                             pa.array(positions, pa.int64()))


def _why_undecodable(record: bytes, kinds: Dict[str, Optional[str]],
                     id_column: Optional[str]
                     ) -> Tuple[str, str, Optional[str], Optional[str]]:
  """`(reason code, description, id, column)` of a record the decoder
  refused (the column: the feature stored as another kind, when found).

  The description names the first feature (in the schema's order) stored
  as another kind than `kinds` says; the id is the record's first value of
  `id_column` when that is of its kind (and UTF-8), else None.
  """
  try:
    example = example_pb2.Example.FromString(record)
  except DecodeError:
    return dead_letters.NOT_AN_EXAMPLE, "not a tf.train.Example", None, None
  features = example.features.feature
  stored = {name: features[name].WhichOneof("kind") for name in kinds
            if name in features}
  wrong = next((name for name, kind in stored.items()
                if kind is not None and kind != kinds[name]), None)
  what = ("a feature has the wrong type" if wrong is None else
          f"feature {wrong!r} has the wrong type")
  return (dead_letters.WRONG_TYPE, what,
          _record_id(features, kinds, id_column), wrong)


def _record_id(features, kinds: Dict[str, Optional[str]],
               id_column: Optional[str]) -> Optional[str]:
  """The first value of `id_column` in a record's `features`, as text;
  None when it is missing, of another kind than `kinds` says, or bytes
  that are not UTF-8."""
  if id_column is None or id_column not in features:
    return None
  kind = features[id_column].WhichOneof("kind")
  if kind is None or kind != kinds.get(id_column):
    return None
  values = getattr(features[id_column], kind).value
  if not values:
    return None
  if kind == "bytes_list":
    try:
      return values[0].decode("utf-8")
    except UnicodeDecodeError:
      return None
  return str(values[0])


class ReadTFExampleBatches(beam.PTransform):
  """Reads TFRecord files of tf.train.Example as `(file, RecordBatch)`.

  Files are spread over workers (a TFRecord file cannot be split: records
  are found only by walking it). Outputs: the main output of batches, and
  `dead_letter` entries. With `raw_records`, each batch also holds its
  records' bytes (`spec.RAW_RECORD_COLUMN`), for a model that takes
  serialized tf.Examples. With `id_column`, a record dead-lettered for a
  feature of the wrong type carries its id when that one is readable.
  """

  def __init__(self, files: Sequence[str], schema: bytes, batch_size: int,
               raw_records: bool = False, positions: bool = False,
               id_column: Optional[str] = None):
    super().__init__()
    self._files = list(files)
    self._schema = schema
    self._batch_size = batch_size
    self._raw_records = raw_records
    self._positions = positions
    self._id_column = id_column

  def expand(self, pbegin):
    return read_tfrecord_files(
        pbegin | "Files" >> beam.Create(self._files), self._schema,
        self._batch_size, self._raw_records, positions=self._positions,
        id_column=self._id_column)


def read_tfrecord_files(files: beam.PCollection, schema: bytes,
                        batch_size: int, raw_records: bool = False,
                        metrics_prefix: str = "", positions: bool = False,
                        id_column: Optional[str] = None):
  """The TFRecord files of the PCollection `files`, read as
  `ReadTFExampleBatches` reads them, its steps added in the caller's scope.

  Returns:
    The outputs `batches` and `dead_letters.TAG`.
  """
  return (files
          | "Spread" >> beam.Reshuffle()
          | "ReadAndDecode" >> beam.ParDo(_ReadTFExampleFile(
              schema, batch_size, raw_records, metrics_prefix,
              positions=positions, id_column=id_column)).with_outputs(
                  dead_letters.TAG, main="batches"))


def _unreadable_file(path: str, error: Exception):
  return beam.pvalue.TaggedOutput(dead_letters.TAG, dead_letters.dead_letter(
      path, None, explained(f"unreadable file: {type(error).__name__}",
                            error), dead_letters.UNREADABLE_FILE))


class _ListRowGroups(beam.DoFn):
  """A Parquet file → `(file, row group)` for each of its row groups."""

  def process(self, path: str):
    try:
      with open_file(path) as f:
        num_row_groups = pq.ParquetFile(f).num_row_groups
    except Exception as e:  # pylint: disable=broad-except
      yield _unreadable_file(path, e)
      return
    for index in range(num_row_groups):
      yield path, index


class _ReadRowGroup(beam.DoFn):
  """`(file, row group)` → `(file, RecordBatch)`s of up to
  `element_rows(batch_size)` rows and about `ELEMENT_BYTES`.

  Only the needed columns that the file has are read: a missing column
  dead-letters its rows when they are scored, naming the column.
  """

  def __init__(self, columns: Optional[Sequence[str]], batch_size: int,
               metrics_prefix: str = "", positions: bool = False):
    self._columns = list(columns) if columns else None
    self._batch_size = batch_size
    self._positions = positions
    self._records_read = Metrics.counter(METRICS_NAMESPACE,
                                         f"{metrics_prefix}records_read")
    self._unreadable = Metrics.counter(
        METRICS_NAMESPACE, f"{metrics_prefix}unreadable_stretches")

  def process(self, element: Tuple[str, int]):
    path, index = element
    try:
      with open_file(path) as f:
        parquet = pq.ParquetFile(f)
        table = read_row_group(parquet, index, self._columns)
        first = sum(parquet.metadata.row_group(i).num_rows
                    for i in range(index))
    except Exception as e:  # pylint: disable=broad-except
      self._unreadable.inc()
      yield beam.pvalue.TaggedOutput(
          dead_letters.TAG, dead_letters.dead_letter(
              path, None, explained(
                  f"unreadable row group {index}: {type(e).__name__}", e),
              dead_letters.UNREADABLE_STRETCH))
      return
    self._records_read.inc(table.num_rows)
    rows = element_rows(self._batch_size)
    if table.nbytes > ELEMENT_BYTES:
      rows = max(self._batch_size,
                 min(rows, ELEMENT_BYTES * table.num_rows // table.nbytes))
    for batch in table.combine_chunks().to_batches(max_chunksize=rows):
      if batch.num_rows:
        if self._positions:
          batch = with_positions(
              batch, np.arange(first, first + batch.num_rows))
        first += batch.num_rows
        yield path, batch


class ReadParquetBatches(beam.PTransform):
  """Reads Parquet files as `(file, RecordBatch)`, split by row group.

  Outputs: the main output of batches, and `dead_letter` entries for a file
  that is not Parquet or a row group that cannot be read.
  """

  def __init__(self, files: Sequence[str], columns: Optional[Sequence[str]],
               batch_size: int, positions: bool = False):
    super().__init__()
    self._files = list(files)
    self._columns = columns
    self._batch_size = batch_size
    self._positions = positions

  def expand(self, pbegin):
    read = read_parquet_files(pbegin | "Files" >> beam.Create(self._files),
                              self._columns, self._batch_size,
                              positions=self._positions)
    dead = read[dead_letters.TAG] | "DeadLetters" >> beam.Flatten()
    return {"batches": read["batches"], dead_letters.TAG: dead}


def read_parquet_files(files: beam.PCollection,
                       columns: Optional[Sequence[str]], batch_size: int,
                       metrics_prefix: str = "", positions: bool = False
                       ) -> Dict[str, Any]:
  """The Parquet files of the PCollection `files`, read as
  `ReadParquetBatches` reads them, its steps added in the caller's scope.

  Returns:
    `{"batches": the batches, dead_letters.TAG: (the dead letters of
    listing row groups, those of reading them)}`.
  """
  row_groups = (files
                | "ListRowGroups" >> beam.ParDo(
                    _ListRowGroups()
                    ).with_outputs(dead_letters.TAG, main="groups"))
  read = (row_groups.groups
          | "Spread" >> beam.Reshuffle()
          | "ReadRowGroups" >> beam.ParDo(_ReadRowGroup(
              columns, batch_size, metrics_prefix,
              positions=positions)).with_outputs(
                  dead_letters.TAG, main="batches"))
  return {"batches": read.batches,
          dead_letters.TAG: (row_groups[dead_letters.TAG],
                             read[dead_letters.TAG])}


class _ReadFormatFile(beam.DoFn):
  """A file → `(file, RecordBatch)`s by its format's `Format.batches`; a
  file that fails to read is one dead letter (its batches before it are
  kept)."""

  def __init__(self, input_format: Any, request: Any):
    self._format = input_format
    self._request = request
    prefix = request.metrics_prefix
    self._records_read = Metrics.counter(METRICS_NAMESPACE,
                                         f"{prefix}records_read")
    self._unreadable = Metrics.counter(METRICS_NAMESPACE,
                                       f"{prefix}unreadable_stretches")

  def process(self, path: str):
    first = 0
    try:
      for batch in self._format.batches(path, self._request):
        if not batch.num_rows:
          continue
        self._records_read.inc(batch.num_rows)
        if self._request.positions:
          batch = with_positions(
              batch, np.arange(first, first + batch.num_rows))
        first += batch.num_rows
        yield path, batch
    except Exception as e:  # pylint: disable=broad-except
      self._unreadable.inc()
      yield _unreadable_file(path, e)


def read_format_files(input_format: Any, files: beam.PCollection,
                      request: Any):
  """The files of the PCollection `files`, each read by
  `input_format.batches` (a `lossaudit.formats.Format`, with
  `formats.ReadRequest` `request`), its steps added in the caller's scope.

  Returns:
    The outputs `batches` and `dead_letters.TAG`.
  """
  return (files
          | "Spread" >> beam.Reshuffle()
          | "ReadFiles" >> beam.ParDo(_ReadFormatFile(
              input_format, request)).with_outputs(
                  dead_letters.TAG, main="batches"))


class ReadFormatFiles(beam.PTransform):
  """Reads `files` by their format's `Format.batches` as `(file,
  RecordBatch)`, a file a worker at a time (the default reader of a
  format). Outputs: `batches`, and `dead_letter` entries."""

  def __init__(self, input_format: Any, files: Sequence[str], request: Any):
    super().__init__()
    self._format = input_format
    self._files = list(files)
    self._request = request

  def expand(self, pbegin):
    return read_format_files(
        self._format, pbegin | "Files" >> beam.Create(self._files),
        self._request)
