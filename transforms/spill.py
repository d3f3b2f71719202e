"""Spilling scored batches to Parquet between the passes of an audit.

Flagging needs global statistics first, so the scored batches are consumed
twice. Left in a PCollection, a local runner holds all of them in memory
until the statistics are ready (measured: about 270 bytes an example, so
peak memory grew with the dataset). Written to scratch Parquet files as they
are scored and read back file by file, memory stays flat whatever the
dataset size, and the model still runs once.
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import parquetio
from apache_beam.io.filesystems import FileSystems


def _as_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
  return pa.Table.from_batches([batch], schema=schema)


class SpillBatches(beam.PTransform):
  """RecordBatches → scratch Parquet files; outputs the file names.

  The file names are emitted once every file is complete.
  """

  def __init__(self, prefix: str, schema: pa.Schema):
    super().__init__()
    self._prefix = prefix
    self._schema = schema

  def expand(self, batches):
    return (batches
            | "ToTable" >> beam.Map(_as_table, self._schema)
            | "Write" >> parquetio.WriteToParquetBatched(
                self._prefix, self._schema, codec="none",
                file_name_suffix=".parquet"))


def read_parquet_batches(path: str,
                         batch_size: int) -> Iterable[pa.RecordBatch]:
  with FileSystems.open(path) as f:
    for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
      if batch.num_rows:
        yield batch


class ReadSpilled(beam.PTransform):
  """Scratch file names → their RecordBatches, spread over workers."""

  def __init__(self, batch_size: int):
    super().__init__()
    self._batch_size = batch_size

  def expand(self, files):
    return (files
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(read_parquet_batches, self._batch_size))
