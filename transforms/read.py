"""Reading sharded datasets into `(source file, Arrow RecordBatch)` pairs.

Both readers are Beam file sources that a runner splits across workers
(TFRecord by file, Parquet by row group), and both keep the file name, which
dead-letter entries need. tf.train.Examples are decoded in C++ by tfx_bsl's
`ExamplesToRecordBatchDecoder` (the decoder behind TFXIO's `TFExampleRecord`)
with a schema derived from the model, so only the needed features are parsed.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import parquetio, tfrecordio
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from lossaudit.scoring import dead_letter

DEAD_LETTER = "dead_letter"
_NAMESPACE = "lossaudit"


class _BatchRecordsPerFile(beam.DoFn):
  """Groups `(file, record)` pairs into lists of up to `batch_size` per file.

  Batches are flushed at the end of each bundle, as `BatchElements` does, so
  no state outlives a bundle.
  """

  def __init__(self, batch_size: int):
    self._batch_size = batch_size

  def start_bundle(self):
    self._buffers: Dict[str, List[bytes]] = {}

  def process(self, element: Tuple[str, bytes]):
    source, record = element
    buffer = self._buffers.setdefault(source, [])
    buffer.append(record)
    if len(buffer) >= self._batch_size:
      del self._buffers[source]
      yield source, buffer

  def finish_bundle(self):
    for source, buffer in self._buffers.items():
      yield WindowedValue((source, buffer), window.GlobalWindow().max_timestamp(),
                          [window.GlobalWindow()])
    self._buffers = {}


class _DecodeExamples(beam.DoFn):
  """Decodes serialized tf.train.Examples into one RecordBatch per list.

  A record that is not a tf.train.Example goes to the dead letter; the rest of
  its batch is decoded.
  """

  def __init__(self, schema: bytes):
    self._schema = schema
    self._records_read = Metrics.counter(_NAMESPACE, "records_read")
    self._undecodable = Metrics.counter(_NAMESPACE, "records_undecodable")

  def setup(self):
    from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

    self._decoder = example_coder.ExamplesToRecordBatchDecoder(self._schema)

  def process(self, element: Tuple[str, List[bytes]]):
    source, records = element
    self._records_read.inc(len(records))
    try:
      yield source, self._decoder.DecodeBatch(records)
      return
    except Exception:  # pylint: disable=broad-except
      pass
    good = []
    for index, record in enumerate(records):
      try:
        self._decoder.DecodeBatch([record])
        good.append(record)
      except Exception as e:  # pylint: disable=broad-except
        self._undecodable.inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER,
            dead_letter(source, None,
                        f"record {index} of its batch is not a"
                        f" tf.train.Example: {str(e).splitlines()[0]}"))
    if good:
      yield source, self._decoder.DecodeBatch(good)


class ReadTFExampleBatches(beam.PTransform):
  """Reads TFRecord files of tf.train.Example as `(file, RecordBatch)`.

  Outputs: the main output of batches, and `dead_letter` entries.
  """

  def __init__(self, patterns: Sequence[str], schema: bytes, batch_size: int):
    super().__init__()
    self._patterns = list(patterns)
    self._schema = schema
    self._batch_size = batch_size

  def expand(self, pbegin):
    return (pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "ReadRecords" >> tfrecordio.ReadAllFromTFRecord(
                with_filename=True)
            | "BatchPerFile" >> beam.ParDo(
                _BatchRecordsPerFile(self._batch_size))
            | "Decode" >> beam.ParDo(_DecodeExamples(self._schema)).with_outputs(
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
