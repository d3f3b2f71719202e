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
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from lossaudit import clean, decisions, formats, outputs
from lossaudit.clean import CleanCounts, FileMarks
from lossaudit.decisions import FOUND_SCHEMA, DecisionCounts, Decisions
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


def _gather_found(parts) -> Tuple[pa.Table, DecisionCounts]:
  """`(found rows, DecisionCounts)` pairs as one: the rows concatenated, the
  counts summed (associative: Beam calls it on its own results too)."""
  tables, counts = [], []
  for rows, count in parts:
    tables.append(pa.Table.from_batches([rows]) if isinstance(
        rows, pa.RecordBatch) else rows)
    counts.append(count)
  return (pa.concat_tables(tables) if tables else FOUND_SCHEMA.empty_table(),
          merge_all(counts, DecisionCounts()))


class _WriteDecisionsFn(beam.DoFn):
  """`(found rows, DecisionCounts)` of every batch → `decisions.parquet`;
  one `CleanCounts` with the decisions' counts."""

  def __init__(self, directory: str, run_id: str):
    self._directory = directory
    self._run_id = run_id

  def process(self, element: Tuple[pa.Table, DecisionCounts],
              decided: Decisions):
    found, counts = element
    decisions.write(outputs.join(self._directory, outputs.DECISIONS),
                    decided.first_applied(found, self._run_id))
    yield CleanCounts(decisions=counts.merge(decisions.not_found(decided,
                                                                 found)))


class WriteDecisions(beam.PTransform):
  """The decided rows each batch found (`FlagExamples`' `decided`) →
  `decisions.parquet` at the top of `directory` (the decisions in force,
  each with the given label and run of its first application); outputs one
  `CleanCounts` holding only the decisions' counts.

  Args:
    directory: `output.dir`.
    run_id: this run's id.
    decided: a singleton PCollection of the `Decisions` in force.
  """

  def __init__(self, directory: str, run_id: str, decided):
    super().__init__()
    self._directory = directory
    self._run_id = run_id
    self._decided = decided

  def expand(self, found):
    return (found
            | "GatherDecided" >> beam.CombineGlobally(_gather_found)
            | "WriteDecisions" >> beam.ParDo(
                _WriteDecisionsFn(self._directory, self._run_id),
                decided=beam.pvalue.AsSingleton(self._decided)))
