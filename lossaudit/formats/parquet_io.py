"""Opening Parquet files and reading their row groups: what the Parquet
format (`lossaudit.formats.parquet`) and the pipeline's reader
(`transforms.read.ReadParquetBatches`) share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
  import pyarrow as pa
  import pyarrow.parquet as pq


def open_file(path: str):
  """`path` opened for reading as it is stored (no decompression)."""
  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems
  # pylint: enable=g-import-not-at-top

  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_row_group(parquet: "pq.ParquetFile", index: int,
                   columns: Optional[Sequence[str]]) -> "pa.Table":
  """Row group `index` of `parquet`: `columns` (None: all), those the file
  has, dictionary columns decoded."""
  from lossaudit import columns as cols  # pylint: disable=g-import-not-at-top

  columns = columns and [c for c in columns
                         if c in parquet.schema_arrow.names]
  return cols.without_dictionaries(
      parquet.read_row_group(index, columns=columns))
