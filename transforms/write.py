"""Writing the outputs: Parquet and JSONL shards, then summary and report."""

from __future__ import annotations

import json
import time
from typing import Dict

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import parquetio, textio

from lossaudit import outputs
from lossaudit.report import build_summary, render_report
from lossaudit.scoring import is_internal


def public_schema(schema: pa.Schema) -> pa.Schema:
  """`schema` without the internal (`__...`) columns."""
  return pa.schema([f for f in schema if not is_internal(f.name)])


def _as_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
  internal = [c for c in batch.schema.names if c not in schema.names]
  if internal:
    batch = batch.drop_columns(internal)
  return pa.Table.from_batches([batch], schema=schema)


class WriteParquetShards(beam.PTransform):
  """RecordBatches → `DIR/KIND/part-SSSSS-of-NNNNN.parquet`.

  Outputs the PCollection of written file names.
  """

  def __init__(self, directory: str, kind: str, schema: pa.Schema,
               num_shards: int = 0):
    super().__init__()
    self._prefix = outputs.shard_prefix(directory, kind)
    self._schema = schema
    self._num_shards = num_shards

  def expand(self, batches):
    return (batches
            | "ToTable" >> beam.Map(_as_table, self._schema)
            | "Write" >> parquetio.WriteToParquetBatched(
                self._prefix, self._schema, codec="snappy",
                file_name_suffix=".parquet", num_shards=self._num_shards))


class WriteDeadLetters(beam.PTransform):
  """Dead-letter dicts → `DIR/dead_letter/part-SSSSS-of-NNNNN.jsonl`."""

  def __init__(self, directory: str, num_shards: int = 0):
    super().__init__()
    self._prefix = outputs.shard_prefix(directory, outputs.DEAD_LETTER)
    self._num_shards = num_shards

  def expand(self, entries):
    return (entries
            | "ToJson" >> beam.Map(json.dumps, sort_keys=True)
            | "Write" >> textio.WriteToText(
                self._prefix, file_name_suffix=".jsonl",
                num_shards=self._num_shards))


class _WriteSummaryFn(beam.DoFn):
  """Writes `report.html`, then `summary.json`, once every shard is written.

  The written file lists arrive as side inputs, so this step runs only after
  every write has finalized: the presence of `summary.json` means the run is
  complete.
  """

  def __init__(self, directory: str, config: Dict, runner: str,
               start_time: float):
    self._directory = directory
    self._config = config
    self._runner = runner
    self._start_time = start_time

  def process(self, unused_trigger, loss_stats, slice_stats, thresholds,
              flag_counts, dead_lettered, top_flagged, devices, losses_files,
              flagged_files, dead_letter_files):
    summary = build_summary(
        loss_stats=loss_stats,
        slice_stats=dict(slice_stats),
        thresholds=thresholds,
        flag_counts=flag_counts,
        dead_lettered=dead_lettered,
        config=self._config,
        runner=self._runner,
        seconds=time.time() - self._start_time,
        devices=sorted(set(devices)),
        files={
            outputs.LOSSES: sorted(losses_files),
            outputs.FLAGGED: sorted(flagged_files),
            outputs.DEAD_LETTER: sorted(dead_letter_files),
        })
    outputs.write_text(
        outputs.join(self._directory, outputs.REPORT),
        render_report(summary, loss_stats.get("cdf", []), top_flagged))
    outputs.remove_scratch(self._directory)
    outputs.write_json(outputs.join(self._directory, outputs.SUMMARY), summary)
    yield summary


class WriteSummary(beam.PTransform):
  """Writes `report.html` and `summary.json` last; outputs the summary.

  Args:
    directory: `output.dir`.
    config: the resolved config as a dict.
    runner: the runner's name.
    start_time: `time.time()` when the run started.
    side: singleton or list PCollections keyed as `_WriteSummaryFn.process`
      takes them.
  """

  def __init__(self, directory: str, config: Dict, runner: str,
               start_time: float, *, loss_stats, slice_stats, thresholds,
               flag_counts, dead_lettered, top_flagged, devices,
               written: Dict[str, beam.PCollection]):
    super().__init__()
    self._fn = _WriteSummaryFn(directory, config, runner, start_time)
    self._singletons = [loss_stats, thresholds, flag_counts, dead_lettered,
                        top_flagged]
    self._slice_stats = slice_stats
    self._devices = devices
    self._written = written

  def expand(self, pbegin):
    p = beam.pvalue.AsSingleton
    loss_stats, thresholds, flag_counts, dead_lettered, top_flagged = (
        self._singletons)
    return (pbegin
            | "Trigger" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                self._fn, p(loss_stats), beam.pvalue.AsList(self._slice_stats),
                p(thresholds), p(flag_counts), p(dead_lettered), p(top_flagged),
                beam.pvalue.AsList(self._devices),
                *[beam.pvalue.AsList(self._written[k]) for k in (
                    outputs.LOSSES, outputs.FLAGGED, outputs.DEAD_LETTER)]))
