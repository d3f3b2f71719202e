"""Parquet files (`input.format: parquet`).

Files are opened by `open_file` (through Beam's `FileSystems`: local, gs://
alike), split by row group for the pipeline
(`transforms.read.ReadParquetBatches`), and read with dictionary columns
decoded (`columns.without_dictionaries`), by the pipeline and the probe
alike. The footer tells `lossaudit plan` a file's rows without reading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence

from lossaudit.formats.base import CleanTarget, FileHead, Format, ReadRequest
from lossaudit.formats.parquet_io import open_file

if TYPE_CHECKING:
  import apache_beam as beam
  import pyarrow as pa

  from lossaudit.clean import CleanCounts, FileMarks


def _relabelled_column(column: "pa.ChunkedArray", labels: Dict[int, int],
                       target: CleanTarget) -> "pa.Array":
  # pylint: disable=g-import-not-at-top
  import pyarrow as pa

  from lossaudit import clean
  # pylint: enable=g-import-not-at-top

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


class Parquet(Format):
  """Parquet files, read by row group."""

  name = "parquet"

  def read(self, files: Sequence[str], request: ReadRequest
           ) -> "beam.PTransform":
    from lossaudit.transforms.read import ReadParquetBatches  # pylint: disable=g-import-not-at-top

    return ReadParquetBatches(files, request.columns, request.batch_size,
                              positions=request.positions)

  def read_files(self, files: "beam.PCollection", request: ReadRequest
                 ) -> "beam.PCollection":
    from lossaudit.transforms.read import read_parquet_files  # pylint: disable=g-import-not-at-top

    return read_parquet_files(
        files, request.columns, request.batch_size,
        metrics_prefix=request.metrics_prefix,
        positions=request.positions)["batches"]

  def first_rows(self, path: str, rows: int) -> Optional["pa.RecordBatch"]:
    # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq

    from lossaudit import columns as cols
    # pylint: enable=g-import-not-at-top

    with open_file(path) as f:
      parquet = pq.ParquetFile(f)
      if parquet.metadata.num_rows == 0:
        return None
      first = next(parquet.iter_batches(batch_size=rows))
      return cols.without_dictionaries(first)

  def write_clean(self, source: str, path: str, marks: "FileMarks",
                  target: CleanTarget) -> "CleanCounts":
    """The rows kept, with `source`'s schema (metadata included) and codec;
    a relabelled row has the suggested label in the label column."""
    # pylint: disable=g-import-not-at-top
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from lossaudit.clean import CleanCounts
    # pylint: enable=g-import-not-at-top

    counts = CleanCounts(files=1)
    with open_file(source) as f:
      parquet = pq.ParquetFile(f)
      schema = parquet.schema_arrow
      metadata = parquet.metadata
      codec = (metadata.row_group(0).column(0).compression.lower()
               if metadata.num_row_groups and metadata.num_columns
               else "snappy")
      with FileSystems.create(
          path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
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

  def head(self, pattern: str, columns: Sequence[str]
           ) -> Optional[FileHead]:
    """The first matching file's footer, and its first row group's
    `columns` (those it has)."""
    # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems
    # pylint: enable=g-import-not-at-top

    found = FileSystems.match([pattern], limits=[1])
    metadata = found[0].metadata_list[0]
    with open_file(metadata.path) as f:
      parquet = pq.ParquetFile(f)
      rows = parquet.metadata.num_rows
      present = [c for c in columns if c in parquet.schema_arrow.names]
      group = (parquet.read_row_group(0, columns=present)
               if rows and present else None)
    return FileHead(metadata.path, metadata.size_in_bytes, rows, group)


FORMAT = Parquet()
