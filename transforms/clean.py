"""`WriteCleanFiles`: each input file read once more and written to `clean/`
without its dropped records (see `lossaudit.clean`).

TFRecord: the records kept are written byte for byte, framed and CRC'd as
TensorFlow frames them, in the input file's compression; a relabelled one is
its tf.train.Example re-serialized with the label feature changed. Parquet:
the rows kept, with the input file's schema (metadata included) and codec;
a relabelled row has the suggested label in the label column. Each file is
written under a temporary name and renamed when whole.
"""

from __future__ import annotations

import struct
import uuid
from typing import Dict, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tensorflow.core.example import example_pb2

from lossaudit import clean, outputs, tfrecord
from lossaudit.clean import CleanCounts, FileMarks
from lossaudit.merging import merge_all

_PLAIN = CompressionTypes.UNCOMPRESSED
_READ_BATCH = 4096


class CleanTarget(NamedTuple):
  """Where and how `clean/` is written.

  Attributes:
    directory: where `clean/` is written (the run's staging folder).
    files: the input files (`clean.clean_names` names their copies).
    format: `tfrecord` or `parquet`.
    label_column: the label column or feature a relabel rewrites.
    class_names: the class names by index, for string labels.
    num_classes: K, for one-hot labels.
  """

  directory: str
  files: Tuple[str, ...]
  format: str
  label_column: Optional[str] = None
  class_names: Optional[Tuple[str, ...]] = None
  num_classes: Optional[int] = None


def frame(record: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, its masked CRC."""
  length = struct.pack("<Q", len(record))
  return b"".join((length, struct.pack("<I", tfrecord.masked_crc(length)),
                   record, struct.pack("<I", tfrecord.masked_crc(record))))


def relabelled_example(record: bytes, target: CleanTarget, label: int
                       ) -> bytes:
  """`record` with its label feature set to class `label`, in the kind the
  feature has (int64, a class name, one-hot floats or one float)."""
  example = example_pb2.Example.FromString(record)
  feature = example.features.feature[target.label_column]
  kind = feature.WhichOneof("kind")
  if kind == "bytes_list":
    feature.bytes_list.value[:] = [
        clean.relabelled_value(label, "string", 0, target.class_names
                               ).encode("utf-8")]
  elif kind == "float_list" and len(feature.float_list.value) > 1:
    feature.float_list.value[:] = clean.relabelled_value(
        label, "one_hot", len(feature.float_list.value), None)
  elif kind == "float_list":
    feature.float_list.value[:] = [float(label)]
  else:
    feature.int64_list.value[:] = [int(label)]
  return example.SerializeToString()


def _write_tfrecord(source: str, path: str, marks: FileMarks,
                    target: CleanTarget) -> CleanCounts:
  counts = CleanCounts(files=1)
  position = 0
  with FileSystems.create(
      path, compression_type=tfrecord.compression_of(source)) as f:
    for item in tfrecord.tf_data_batches(source, _READ_BATCH):
      if isinstance(item, tfrecord.Unreadable):
        position = item.record + 1
        continue
      positions = np.arange(position, position + len(item))
      position += len(item)
      kept = marks.kept(positions)
      labels = marks.new_labels(positions)
      # One write a batch: the compressor takes large pieces.
      f.write(b"".join(frame(
          relabelled_example(item[i], target, labels[i]) if i in labels
          else item[i]) for i in np.flatnonzero(kept)))
      counts.kept += int(kept.sum())
      counts.relabelled += len(labels)
  return counts


def _relabelled_column(column: pa.ChunkedArray, labels: Dict[int, int],
                       target: CleanTarget) -> pa.Array:
  values = column.to_pylist()
  value_type = column.type
  if pa.types.is_dictionary(value_type):
    value_type = value_type.value_type
  if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
    kind = "string"
  elif pa.types.is_floating(value_type):
    kind = "float"
  elif (pa.types.is_list(value_type) or pa.types.is_large_list(value_type)
        or pa.types.is_fixed_size_list(value_type)):
    kind = "one_hot"
  else:
    kind = "int"
  for i, label in labels.items():
    values[i] = clean.relabelled_value(label, kind, target.num_classes or 0,
                                       target.class_names)
  return pa.array(values, value_type).cast(column.type)


def _write_parquet(source: str, path: str, marks: FileMarks,
                   target: CleanTarget) -> CleanCounts:
  counts = CleanCounts(files=1)
  with FileSystems.open(source, compression_type=_PLAIN) as f:
    parquet = pq.ParquetFile(f)
    schema = parquet.schema_arrow
    metadata = parquet.metadata
    codec = (metadata.row_group(0).column(0).compression.lower()
             if metadata.num_row_groups and metadata.num_columns else "snappy")
    with FileSystems.create(path, compression_type=_PLAIN) as out:
      writer = pq.ParquetWriter(out, schema, compression=codec)
      first = 0
      for index in range(metadata.num_row_groups):
        table = parquet.read_row_group(index)
        positions = np.arange(first, first + table.num_rows)
        first += table.num_rows
        kept = marks.kept(positions)
        labels = marks.new_labels(positions)
        if labels:
          column = schema.get_field_index(target.label_column)
          table = table.set_column(
              column, schema.field(column),
              _relabelled_column(table.column(column), labels, target))
        table = table.filter(pa.array(kept))
        if table.num_rows:
          writer.write_table(table)
        counts.kept += table.num_rows
        counts.relabelled += len(labels)
      writer.close()
  return counts


class _WriteCleanFileFn(beam.DoFn):
  """`(source, FileMarks)` → its copy under `clean/`; one `CleanCounts`."""

  def __init__(self, target: CleanTarget):
    self._target = target
    self._names = clean.clean_names(target.files)

  def process(self, element: Tuple[str, FileMarks]):
    source, marks = element
    target = self._target
    path = outputs.join(target.directory, outputs.CLEAN, self._names[source])
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    write = _write_tfrecord if target.format == "tfrecord" else _write_parquet
    counts = write(source, temporary, marks, target)
    FileSystems.rename([temporary], [path])
    counts.dropped = len(np.unique(marks.dropped))
    yield counts


class WriteCleanFiles(beam.PTransform):
  """`(source, FileMarks)` per input file → `clean/` copies; outputs one
  `CleanCounts`."""

  def __init__(self, target: CleanTarget):
    super().__init__()
    self._target = target

  def expand(self, marks):
    return (marks
            | "Spread" >> beam.Reshuffle()
            | "WriteCleanFiles" >> beam.ParDo(_WriteCleanFileFn(self._target))
            | "SumCounts" >> beam.CombineGlobally(
                merge_all, empty=CleanCounts()))
