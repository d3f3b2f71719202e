"""`WriteCleanFiles`: each input file read once more and written to `clean/`
without its dropped records (see `lossaudit.clean`).

The input's format writes each copy (`Format.write_clean`: TFRecord keeps
the records byte for byte, Parquet the file's schema and codec). Each file
is written under a temporary name and renamed when whole.
"""

from __future__ import annotations

import uuid
from typing import Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from lossaudit import clean, formats, outputs
from lossaudit.clean import CleanCounts, FileMarks
from lossaudit.formats.base import CleanTarget
from lossaudit.merging import merge_all


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
    counts = formats.get(target.format).write_clean(source, temporary, marks,
                                                    target)
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
