"""TFRecord files of tf.train.Examples (`input.format: tfrecord`).

Records are read by `record_batches` (`lossaudit.tfrecord`: tf.data's C++
reader where it can, a CRC-checking walker elsewhere): the pipeline, the
probe's first rows and `clean/` all read through it. The pipeline decodes
them with the run's schema (`transforms.read.ReadTFExampleBatches`); the
probe, which finds the types, with none (`decode_examples`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

from lossaudit.formats.base import CleanTarget, Format, ReadRequest

if TYPE_CHECKING:
  import apache_beam as beam
  import pyarrow as pa

  from lossaudit.clean import CleanCounts, FileMarks
  from lossaudit.tfrecord import Unreadable

# Records a batch when `clean/` copies a file.
CLEAN_READ_BATCH = 4096


def record_batches(path: str, batch_size: int
                   ) -> Iterator[List[bytes] | "Unreadable"]:
  """Lists of up to `batch_size` records of `path`, each damaged stretch
  an `Unreadable` in its place (`lossaudit.tfrecord.tf_data_batches`)."""
  from lossaudit import tfrecord  # pylint: disable=g-import-not-at-top

  return tfrecord.tf_data_batches(path, batch_size)


def first_records(path: str, limit: int) -> List[bytes]:
  """The first records of a TFRecord file (up to `limit`, fewer if damaged).

  A record whose framing is sound but whose data fails its CRC is passed
  over, as the run dead-letters it and reads on.

  Raises:
    ValueError: when not even the first record can be read.
  """
  from lossaudit import tfrecord  # pylint: disable=g-import-not-at-top

  for item in record_batches(path, limit):
    if isinstance(item, tfrecord.Unreadable):
      if item.one_record:
        continue
      raise ValueError(item.describe())
    return item
  return []


def decode_examples(records: Sequence[bytes], raw_records: bool = False
                    ) -> "pa.RecordBatch":
  """tf.train.Examples as one batch, decoded with no schema; with
  `raw_records`, each record's bytes too, as `RAW_RECORD_COLUMN`.

  When they do not decode together (a feature typed differently in some of
  them), the largest group of records whose features agree on their types
  is the batch (on a tie, the group of the first decodable record); the
  others are dead-lettered by the pipeline like any wrong-typed record.

  Raises:
    Whatever the decoder raises when not one record decodes.
  """
  # pylint: disable=g-import-not-at-top
  import pyarrow as pa
  from tfx_bsl.coders import example_coder

  from lossaudit.model_inputs import with_raw_records
  # pylint: enable=g-import-not-at-top

  new_decoder = example_coder.ExamplesToRecordBatchDecoder

  def decoded(kept: List[bytes]) -> pa.RecordBatch:
    batch = new_decoder().DecodeBatch(kept)
    return with_raw_records(batch, kept) if raw_records else batch

  try:
    return decoded(list(records))
  except Exception as e:  # pylint: disable=broad-except
    error = e
  # A decoder that failed once keeps half-built columns (tfx_bsl 1.21):
  # a fresh one after every failure.
  groups: List[Tuple[dict, List[bytes]]] = []  # (name → type, records)
  decoder = new_decoder()
  for record in records:
    try:
      schema = decoder.DecodeBatch([record]).schema
    except Exception:  # pylint: disable=broad-except
      decoder = new_decoder()
      continue
    types = {f.name: f.type for f in schema if not pa.types.is_null(f.type)}
    for group_types, members in groups:
      if all(group_types.get(n, t) == t for n, t in types.items()):
        group_types.update(types)
        members.append(record)
        break
    else:
      groups.append((types, [record]))
  if not groups:
    raise error
  _, largest = max(groups, key=lambda g: len(g[1]))  # First on a tie.
  return decoded(largest)


def frame(record: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, its masked CRC."""
  from lossaudit.tfrecord import masked_crc  # pylint: disable=g-import-not-at-top

  length = struct.pack("<Q", len(record))
  return b"".join((length, struct.pack("<I", masked_crc(length)),
                   record, struct.pack("<I", masked_crc(record))))


def relabelled_example(record: bytes, target: CleanTarget, label: int) -> bytes:
  """`record` with its label feature (`target.label_column`) set to class
  `label`, in the kind the feature has (int64, a class name, one-hot
  floats or one float)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow.core.example import example_pb2

  from lossaudit import clean
  # pylint: enable=g-import-not-at-top

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


class TFRecord(Format):
  """TFRecord files of tf.train.Examples, plain or gzip."""

  name = "tfrecord"
  serialized_examples = True

  def read(self, files: Sequence[str], request: ReadRequest
           ) -> "beam.PTransform":
    from lossaudit.transforms.read import ReadTFExampleBatches  # pylint: disable=g-import-not-at-top

    return ReadTFExampleBatches(
        files, request.schema, request.batch_size,
        raw_records=request.raw_records, positions=request.positions,
        id_column=request.id_column)

  def read_files(self, files: "beam.PCollection", request: ReadRequest
                 ) -> "beam.PCollection":
    from lossaudit.transforms.read import read_tfrecord_files  # pylint: disable=g-import-not-at-top

    return read_tfrecord_files(
        files, request.schema, request.batch_size, request.raw_records,
        metrics_prefix=request.metrics_prefix, positions=request.positions,
        id_column=request.id_column)["batches"]

  def first_rows(self, path: str, rows: int) -> Optional["pa.RecordBatch"]:
    records = first_records(path, rows)
    return decode_examples(records, raw_records=True) if records else None

  def write_clean(self, source: str, path: str, marks: "FileMarks",
                  target: CleanTarget) -> "CleanCounts":
    """The records kept, byte for byte, framed and CRC'd as TensorFlow frames
    them, in `source`'s compression; a relabelled one re-serialized with
    its label feature changed. Damaged stretches are left out."""
    # pylint: disable=g-import-not-at-top
    import numpy as np
    from apache_beam.io.filesystems import FileSystems

    from lossaudit import tfrecord
    from lossaudit.clean import CleanCounts
    # pylint: enable=g-import-not-at-top

    counts = CleanCounts(files=1)
    position = 0
    with FileSystems.create(
        path, compression_type=tfrecord.compression_of(source)) as f:
      for item in record_batches(source, CLEAN_READ_BATCH):
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


FORMAT = TFRecord()
