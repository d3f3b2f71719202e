"""Reading sharded datasets into `(source file, Arrow RecordBatch)` pairs.

Both readers spread the work over workers (TFRecord by file, Parquet by row
group through Beam's file source), and both keep the file name, which
dead-letter entries need. tf.train.Examples are decoded in C++ by tfx_bsl's
`ExamplesToRecordBatchDecoder` (the decoder behind TFXIO's `TFExampleRecord`)
with a schema derived from the model, so only the needed features are parsed.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import parquetio
from apache_beam.metrics import Metrics

from lossaudit import tfrecord
from lossaudit.scoring import dead_letter

DEAD_LETTER = "dead_letter"
_NAMESPACE = "lossaudit"


class _ReadTFExampleFile(beam.DoFn):
  """Reads one TFRecord file of tf.train.Examples as RecordBatches.

  Each batch of up to `batch_size` records is decoded at once; a record that
  is not a tf.train.Example, or a damaged stretch of the file, goes to the
  dead letter.
  """

  def __init__(self, schema: bytes, batch_size: int):
    self._schema = schema
    self._batch_size = batch_size
    self._records_read = Metrics.counter(_NAMESPACE, "records_read")
    self._unreadable = Metrics.counter(_NAMESPACE, "unreadable_stretches")

  def setup(self):
    from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

    self._decoder = example_coder.ExamplesToRecordBatchDecoder(self._schema)

  def process(self, path: str):
    try:
      for item in tfrecord.tf_data_batches(path, self._batch_size):
        if isinstance(item, tfrecord.Unreadable):
          self._unreadable.inc()
          yield beam.pvalue.TaggedOutput(
              DEAD_LETTER, dead_letter(path, None, item.describe()))
          continue
        self._records_read.inc(len(item))
        yield from self._decode(path, item)
    except Exception as e:  # pylint: disable=broad-except
      self._unreadable.inc()
      yield beam.pvalue.TaggedOutput(
          DEAD_LETTER, dead_letter(path, None, f"unreadable file:"
                                   f" {type(e).__name__}: {_first_line(e)}"))

  def _decode(self, path: str, records: List[bytes]):
    try:
      yield path, self._decoder.DecodeBatch(records)
      return
    except Exception:  # pylint: disable=broad-except
      pass
    good = []
    for record in records:
      try:
        self._decoder.DecodeBatch([record])
        good.append(record)
      except Exception as e:  # pylint: disable=broad-except
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER, dead_letter(path, None, "not a tf.train.Example:"
                                     f" {_first_line(e)}"))
    if good:
      yield path, self._decoder.DecodeBatch(good)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else ""


class ReadTFExampleBatches(beam.PTransform):
  """Reads TFRecord files of tf.train.Example as `(file, RecordBatch)`.

  Files are spread over workers (a TFRecord file cannot be split: records
  are found only by walking it). Outputs: the main output of batches, and
  `dead_letter` entries.
  """

  def __init__(self, files: Sequence[str], schema: bytes, batch_size: int):
    super().__init__()
    self._files = list(files)
    self._schema = schema
    self._batch_size = batch_size

  def expand(self, pbegin):
    return (pbegin
            | "Files" >> beam.Create(self._files)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndDecode" >> beam.ParDo(_ReadTFExampleFile(
                self._schema, self._batch_size)).with_outputs(
                    DEAD_LETTER, main="batches"))


def _split_table(element: Tuple[str, pa.Table], batch_size: int,
                 counter) -> Iterable[Tuple[str, pa.RecordBatch]]:
  source, table = element
  counter.inc(table.num_rows)
  for batch in table.combine_chunks().to_batches(max_chunksize=batch_size):
    if batch.num_rows:
      yield source, batch


class ReadParquetBatches(beam.PTransform):
  """Reads Parquet files as `(file, RecordBatch)`, split by row group.

  Outputs: the main output of batches, and (always empty, for symmetry with
  TFRecord) `dead_letter` entries.
  """

  def __init__(self, patterns: Sequence[str], columns: Optional[Sequence[str]],
               batch_size: int):
    super().__init__()
    self._patterns = list(patterns)
    self._columns = list(columns) if columns else None
    self._batch_size = batch_size

  def expand(self, pbegin):
    counter = Metrics.counter(_NAMESPACE, "records_read")
    batches = (pbegin
               | "Patterns" >> beam.Create(self._patterns)
               | "ReadTables" >> parquetio.ReadAllFromParquetBatched(
                   columns=self._columns, with_filename=True)
               | "Rebatch" >> beam.FlatMap(_split_table, self._batch_size,
                                           counter))
    dead = pbegin | "NoDeadLetters" >> beam.Create([])
    return {"batches": batches, DEAD_LETTER: dead}
