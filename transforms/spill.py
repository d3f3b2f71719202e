"""Spilling scored batches to scratch files between the passes of an audit.

Flagging needs global statistics first, so the scored batches are consumed
more than once. Left in a PCollection, a local runner holds all of them in
memory until the statistics are ready (measured: about 270 bytes an example,
so peak memory grew with the dataset). Written to scratch files as they are
scored and read back file by file, memory stays flat, and the model still
runs once.

The scratch files are Arrow IPC streams, not Parquet: writing and reading
them is close to a memory copy (Parquet took 7 s to write 1M examples × 100
class probabilities, IPC well under one). Each bundle writes one file and
emits its name only when the bundle succeeds, so a retried bundle never
contributes a partial file.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from lossaudit import METRICS_NAMESPACE, progress

# Beam counters (namespace `METRICS_NAMESPACE`): what the spill writes to
# scratch, and what the passes after it read back (every pass counted, so
# `SPILL_BYTES_REREAD` is the passes times `SPILL_BYTES_WRITTEN`). Bytes are
# the record batches' Arrow IPC sizes (`pa.ipc.get_record_batch_size`).
SPILL_BYTES_WRITTEN = "spill_bytes_written"
SPILL_ROWS_WRITTEN = "spill_rows_written"
SPILL_BYTES_REREAD = "spill_bytes_reread"
SPILL_ROWS_REREAD = "spill_rows_reread"


class _SizeCounters:
  """A bytes and a rows counter, counted a batch at a time."""

  def __init__(self, bytes_name: str, rows_name: str):
    self._bytes = Metrics.counter(METRICS_NAMESPACE, bytes_name)
    self._rows = Metrics.counter(METRICS_NAMESPACE, rows_name)

  def count(self, batch: pa.RecordBatch) -> None:
    self._bytes.inc(pa.ipc.get_record_batch_size(batch))
    self._rows.inc(batch.num_rows)


class _SpillFn(beam.DoFn):
  """Writes a bundle's RecordBatches to one IPC file; emits its path."""

  def __init__(self, prefix: str, schema: pa.Schema):
    self._prefix = prefix
    self._schema = schema

  def setup(self):
    self._written = _SizeCounters(SPILL_BYTES_WRITTEN, SPILL_ROWS_WRITTEN)

  def start_bundle(self):
    self._spill = None

  def process(self, batch: pa.RecordBatch):
    if self._spill is None:
      self._spill = open_spill(self._prefix, self._schema)
    self._spill.writer.write_batch(batch)
    self._written.count(batch)

  def finish_bundle(self):
    if self._spill is None:
      return
    self._spill.close()
    yield in_global_window(self._spill.path)


class SpillFile(NamedTuple):
  """A scratch file being written.

  Attributes:
    path: its name.
    file: the open file.
    writer: an Arrow IPC stream writer on `file`.
  """

  path: str
  file: Any
  writer: pa.ipc.RecordBatchStreamWriter

  def close(self) -> None:
    self.writer.close()
    self.file.close()


def open_spill(prefix: str, schema: pa.Schema) -> SpillFile:
  """A new scratch file `prefix-*`, for RecordBatches of `schema`."""
  path = f"{prefix}-{uuid.uuid4().hex}.arrows"
  f = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
  return SpillFile(path, f, pa.ipc.new_stream(f, schema))


def in_global_window(value) -> WindowedValue:
  """`value` as `finish_bundle` must emit it in a batch pipeline."""
  return WindowedValue(value, window.GlobalWindow().max_timestamp(),
                       [window.GlobalWindow()])


class SpillBatches(beam.PTransform):
  """RecordBatches → scratch IPC files; outputs the file names."""

  def __init__(self, prefix: str, schema: pa.Schema):
    super().__init__()
    self._prefix = prefix
    self._schema = schema

  def expand(self, batches):
    return batches | "Write" >> beam.ParDo(_SpillFn(self._prefix,
                                                    self._schema))


def read_spilled(path: str) -> Iterable[pa.RecordBatch]:
  with FileSystems.open(path,
                        compression_type=CompressionTypes.UNCOMPRESSED) as f:
    yield from pa.ipc.open_stream(f)


class _ReadSpilledFn(beam.DoFn):
  """A scratch file's RecordBatches; counts them as the pass's progress."""

  def __init__(self, stage: Optional[str], progress_interval: Optional[float]):
    self._stage = stage
    self._progress_interval = progress_interval if stage else None

  def setup(self):
    progress.enable(self._progress_interval)
    self._reread = _SizeCounters(SPILL_BYTES_REREAD, SPILL_ROWS_REREAD)

  def start_bundle(self):
    if self._progress_interval:
      progress.begin(self._stage)

  def process(self, path: str, total: Optional[int] = None):
    for batch in read_spilled(path):
      self._reread.count(batch)
      yield batch  # The steps fused after this one handle it first.
      if self._progress_interval:
        progress.add_pass(self._stage, batch.num_rows, total)


class ReadSpilled(beam.PTransform):
  """Scratch file names → their RecordBatches, spread over workers.

  Args:
    stage: the pass's name in its progress lines (`lossaudit.progress`);
      None: no lines.
    progress_interval: seconds between progress lines, at least (None:
      none).
    total: a singleton PCollection of the examples spilled, told in the
      progress lines; None: not told.
  """

  def __init__(self, stage: Optional[str] = None,
               progress_interval: Optional[float] = None,
               total: Optional[beam.PCollection] = None):
    super().__init__()
    self._stage = stage
    self._progress_interval = progress_interval
    self._total = total

  def expand(self, files):
    side = ({} if self._total is None
            else {"total": beam.pvalue.AsSingleton(self._total)})
    return (files
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(
                _ReadSpilledFn(self._stage, self._progress_interval), **side))


class CountRows(beam.PTransform):
  """RecordBatches → a singleton: how many rows they hold."""

  def expand(self, batches):
    return (batches
            | "Rows" >> beam.Map(lambda batch: batch.num_rows)
            | "Sum" >> beam.CombineGlobally(sum))
