"""What an input format is: the `Format` base class and what it reads.

A format's module (`lossaudit.formats.tfrecord`, `.parquet`) says how its
files are read in batches (by the pipeline, and the first rows by the
probe), written again without some rows (`clean/`), and what `lossaudit
plan` can tell from a file without reading it all. Modules here import no
Beam, TensorFlow or pyarrow at import time (`lossaudit.config` imports the
registry): each method imports what it needs.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import (
  TYPE_CHECKING,
  ClassVar,
  Iterator,
  NamedTuple,
  Optional,
  Sequence,
  Tuple,
)

if TYPE_CHECKING:
  import apache_beam as beam
  import pyarrow as pa

  from lossaudit.clean import CleanCounts, FileMarks


@dataclasses.dataclass(frozen=True)
class ReadRequest:
  """What to read of a dataset's files.

  Attributes:
    batch_size: rows the model takes a call (elements hold at least as
      many, `transforms.read.element_rows`).
    columns: the columns to read; None: all.
    schema: a serialized tensorflow_metadata Schema of `columns`, the type
      each is decoded as, for a format that stores no types
      (`planning.tf_schema`); None where the format ignores it.
    raw_records: also each record's bytes (`model_inputs.RAW_RECORD_COLUMN`),
      where the format has serialized records (`Format.serialized_examples`).
    positions: also each row's position in its file
      (`model_inputs.POSITION_COLUMN`).
    id_column: the id a dead letter names, where the format can read it.
    metrics_prefix: prefix of the Beam counters the read counts into.
  """

  batch_size: int
  columns: Optional[Tuple[str, ...]] = None
  schema: Optional[bytes] = None
  raw_records: bool = False
  positions: bool = False
  id_column: Optional[str] = None
  metrics_prefix: str = ""


@dataclasses.dataclass(frozen=True)
class FileHead:
  """What a file's metadata tells without reading its rows
  (`Format.head`).

  Attributes:
    path: the file.
    size_in_bytes: its size on storage.
    num_rows: its rows.
    columns: the asked-for columns it has, read from the first row group
      (or the first rows); None when it has none of them.
  """

  path: str
  size_in_bytes: int
  num_rows: int
  columns: Optional["pa.Table"] = None


class CleanTarget(NamedTuple):
  """Where and how `clean/` is written.

  Attributes:
    directory: where `clean/` is written (the run's staging folder).
    files: the input files (`clean.clean_names` names their copies).
    format: `input.format` (`lossaudit.formats.names()`).
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


class Format(abc.ABC):
  """One input format (`input.format`).

  Attributes:
    name: its `input.format` value.
    serialized_examples: whether its rows are serialized tf.train.Examples,
      which a model input can take whole (`model.serialized_examples_input`).
  """

  name: ClassVar[str]
  serialized_examples: ClassVar[bool] = False

  def batches(self, path: str, request: ReadRequest
              ) -> Iterator["pa.RecordBatch"]:
    """The rows of the file `path` in batches of about
    `transforms.read.element_rows(request.batch_size)` rows, with
    `request.columns` (None: all) as the file has them.

    The one reader of a format that keeps the default `read`, `read_files`
    and `first_rows` (TFRecord and Parquet read their own way: by record,
    by row group).

    Raises:
      What reading raises: the rest of the file is one dead letter.
    """
    raise NotImplementedError(f"input.format {self.name!r} reads no batches")

  def read(self, files: Sequence[str], request: ReadRequest
           ) -> "beam.PTransform":
    """A PTransform reading `files` from a pipeline's start (by default,
    each file through `batches`, spread over workers).

    Returns:
      A PTransform of the pipeline's begin whose outputs are `batches`, of
      `(file, pa.RecordBatch)` with `request.columns`, and
      `dead_letters.TAG`, of dead-letter entries.
    """
    from lossaudit.transforms.read import ReadFormatFiles  # pylint: disable=g-import-not-at-top

    return ReadFormatFiles(self, files, request)

  def read_files(self, files: "beam.PCollection", request: ReadRequest
                 ) -> "beam.PCollection":
    """`(file, pa.RecordBatch)` of the files of the PCollection `files`,
    read as `read` reads them; dead letters are dropped. Its steps are added
    in the caller's scope."""
    from lossaudit.transforms.read import read_format_files  # pylint: disable=g-import-not-at-top

    return read_format_files(self, files, request)["batches"]

  def first_rows(self, path: str, rows: int) -> Optional["pa.RecordBatch"]:
    """Up to the first `rows` rows of `path`, every column, each column of
    the type the file gives it (with `RAW_RECORD_COLUMN` where the format
    has serialized records); None when the file has no rows.

    Read by the reader the pipeline uses (by default `batches`). Raises
    what reading raises when the file cannot be read (the probe passes it
    over).
    """
    for batch in self.batches(path, ReadRequest(rows)):
      if batch.num_rows:
        return batch.slice(0, rows)
    return None

  @abc.abstractmethod
  def write_clean(self, source: str, path: str, marks: "FileMarks",
                  target: CleanTarget) -> "CleanCounts":
    """Writes `source` to `path` without the rows `marks` drops, and with
    the labels it changes (as `target` says)."""

  def head(self, pattern: str, columns: Sequence[str]
           ) -> Optional[FileHead]:
    """What the first file matching `pattern` tells of its rows without
    reading them all: its row count and the first row group's `columns`;
    None where the format cannot tell without reading every record (the
    default).

    Raises what matching or reading raises (`lossaudit plan` then uses its
    defaults).
    """
    del pattern, columns
    return None

  def __repr__(self) -> str:
    return f"<format {self.name}>"
