"""Writing the outputs: Parquet and JSONL shards, then summary and report."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, iobase, textio
from apache_beam.io.filesystem import CompressionTypes

from lossaudit import outputs, ownership
from lossaudit.config import AuditConfig, DynamicsConfig
from lossaudit.early_aum import EARLY_AUM
from lossaudit.label_rules import classes_table, joint_table, pairs_table
from lossaudit.merging import merge_all
from lossaudit.previews import Previews, array_thumbnails, previews_table
from lossaudit.report import render_report
from lossaudit.spec import PROBS_COLUMN, is_internal
from lossaudit.summary import RunContext, RunStatistics, Summary, build_summary
from lossaudit.transforms.spill import in_global_window


def public_schema(schema: pa.Schema) -> pa.Schema:
  """`schema` without the internal (`__...`) columns."""
  return pa.schema([f for f in schema if not is_internal(f.name)])


# `losses/`' column of the class probabilities (`output.write_probabilities`).
PROBABILITIES = "probabilities"


def losses_schema(scored_schema: pa.Schema, probabilities: bool,
                  early_aum: bool = False) -> pa.Schema:
  """The columns of `losses/`: the public ones, with `early_aum` each row's
  early AUM (`lossaudit.early_aum`), and with `probabilities` the class
  probabilities `(K,)` float32 of each row."""
  schema = public_schema(scored_schema)
  if early_aum:
    schema = schema.append(pa.field(EARLY_AUM, pa.float64()))
  if probabilities:
    schema = schema.append(pa.field(
        PROBABILITIES, scored_schema.field(PROBS_COLUMN).type))
  return schema


# A row group of the Parquet outputs holds up to this many rows, or bytes
# (scored batches are small: one Parquet write per batch cost 0.4 ms and
# made files of thousands of tiny row groups).
ROW_GROUP_ROWS = 1 << 17
ROW_GROUP_BYTES = 64 << 20


class _ToRowGroups(beam.DoFn):
  """RecordBatches → `pa.Table`s of `schema`, each one Parquet row group.

  A bundle's batches are gathered up to `ROW_GROUP_ROWS` rows or
  `ROW_GROUP_BYTES`; columns outside `schema` (internal ones) are dropped.
  """

  def __init__(self, schema: pa.Schema):
    self._schema = schema

  def start_bundle(self):
    self._reset()

  def _reset(self):
    self._batches: List[pa.RecordBatch] = []
    self._rows = self._bytes = 0

  def process(self, batch: pa.RecordBatch):
    if not batch.num_rows:
      return
    batch = batch.select(self._schema.names)
    self._batches.append(batch)
    self._rows += batch.num_rows
    self._bytes += batch.nbytes
    if self._rows >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
      yield self._table()

  def finish_bundle(self):
    if self._batches:
      yield in_global_window(self._table())

  def _table(self) -> pa.Table:
    table = pa.Table.from_batches(self._batches, schema=self._schema)
    self._reset()
    return table


class _RowGroupWriter:
  """A Parquet file whose row groups are encoded on a thread of their own.

  `write` hands a table to the thread and returns once the one before it
  is written: the caller scores the next batches while a row group is
  encoded and compressed (pyarrow releases the GIL), and at most one table
  waits besides the one it is building. The thread's errors are raised by
  the next `write` or by `close`.
  """

  def __init__(self, file_handle, schema: pa.Schema, codec: str):
    self._file = file_handle
    self._writer = pq.ParquetWriter(file_handle, schema, compression=codec)
    self._thread = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="lossaudit-parquet")
    self._pending: Optional[concurrent.futures.Future] = None

  def write(self, table: pa.Table):
    self._wait()
    self._pending = self._thread.submit(self._writer.write_table, table)

  def _wait(self):
    pending, self._pending = self._pending, None
    if pending is not None:
      pending.result()

  def close(self):
    """Writes the footer and closes the file; a failed write's error is the
    one raised (the writer is closed all the same, before its file)."""
    try:
      self._wait()
      self._writer.close()
    except Exception:
      with contextlib.suppress(Exception):
        self._writer.close()
      raise
    finally:
      self._thread.shutdown()
      self._file.close()


class _ParquetSink(filebasedsink.FileBasedSink):
  """Beam's Parquet sink of tables, each a row group written by a thread."""

  def __init__(self, file_path_prefix: str, schema: pa.Schema, codec: str,
               num_shards: int):
    super().__init__(
        file_path_prefix, coder=None, file_name_suffix=".parquet",
        num_shards=num_shards, mime_type="application/x-parquet",
        compression_type=CompressionTypes.UNCOMPRESSED)
    self._schema = schema
    self._codec = codec

  def open(self, temp_path):
    return _RowGroupWriter(super().open(temp_path), self._schema,
                           self._codec)

  def write_record(self, file_handle, value):
    file_handle.write(value)

  def close(self, file_handle):
    file_handle.close()


class WriteParquetShards(beam.PTransform):
  """RecordBatches → `DIR/KIND/part-SSSSS-of-NNNNN.parquet`.

  Each row group is encoded off the thread that scores and flags (see
  `_RowGroupWriter`). Outputs the PCollection of written file names.
  """

  def __init__(self, directory: str, kind: str, schema: pa.Schema,
               num_shards: int = 0):
    super().__init__()
    self._prefix = outputs.shard_prefix(directory, kind)
    self._schema = schema
    self._num_shards = num_shards

  def expand(self, batches):
    return (batches
            | "ToRowGroups" >> beam.ParDo(_ToRowGroups(self._schema))
            | "Write" >> iobase.Write(_ParquetSink(
                self._prefix, self._schema, codec="snappy",
                num_shards=self._num_shards)))


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
  """Writes `drift.json` and `report.html`, then `summary.json`, last.

  The merged statistics arrive as a side input that waits for every write
  to finalize (the names of the files written are among them): the
  presence of `summary.json` means the run is complete.
  """

  def __init__(self, directory: str, context: RunContext,
               dynamics: Optional[DynamicsConfig] = None,
               release_when: Optional[str] = None,
               release_lock: bool = False):
    self._directory = directory
    self._release_when = release_when
    self._release_lock = release_lock
    self._context = context
    self._run = context.run
    self._baseline = context.baseline
    self._dynamics = dynamics or DynamicsConfig()

  def process(self, unused_trigger, *, statistics: RunStatistics):
    built = build_summary(
        statistics, self._context,
        # From `run()`'s start, as `timings.startup.total` counts.
        seconds=time.time() - self._run.get("wall_start",
                                            self._run["start_time"]))
    summary, found = built.document, built.drift
    self._hand_back(summary)
    if built.label_rules is not None:
      self._write_label_issues(built, summary)
    previews = built.previews
    if previews is not None and previews.by_id:
      previews = previews._replace(by_id=array_thumbnails(previews.by_id))
      self._write_previews(previews, summary)
    if found is not None:
      outputs.write_json(outputs.join(self._directory, outputs.DRIFT), found)
    outputs.write_text(
        outputs.join(self._directory, outputs.REPORT),
        render_report(summary, built.cdf, built.top_flagged,
                      found, previews=previews, data_map=built.data_map,
                      label_classes=built.label_classes,
                      flag_counts=built.flag_counts,
                      easy_confidence=self._dynamics.easy_confidence,
                      ambiguous_variability=(
                          self._dynamics.ambiguous_variability)))
    baseline = self._baseline
    # A run failing its gates keeps the copy of its own directory's earlier
    # run: the next run is judged against it (`outputs.kept_baseline`).
    keep = (baseline is not None and not summary.get("gate", {}).get(
        "passed", True) and outputs.same_dir(baseline.dir, self._directory))
    ownership.remove_scratch(self._directory, self._run["run_id"],
                             keep=outputs.KEPT_BASELINE if keep else None)
    outputs.write_json(outputs.join(self._directory, outputs.SUMMARY), summary)
    if self._release_lock:  # The job took it (`ClaimOutputDir`).
      ownership.release_lock(self._directory, self._run["run_id"])
    yield summary

  def _write_label_issues(self, built: Summary, summary: Dict) -> None:
    """Writes `label_issues/joint.parquet`, `classes.parquet` and
    `pairs.parquet` whole, and names them in `summary["files"]`."""
    names = self._context.class_names
    tables = {outputs.JOINT: joint_table(built.label_rules.confident_joint,
                                         names),
              outputs.CLASSES: classes_table(built.label_classes),
              outputs.PAIRS: pairs_table(built.flag_counts.top_pairs(),
                                         names)}
    for name, table in tables.items():
      sink = pa.BufferOutputStream()
      pq.write_table(table, sink)
      outputs.write_bytes(outputs.join(self._directory, name),
                          sink.getvalue().to_pybytes())
    summary["files"][outputs.LABEL_ISSUES] = [
        outputs.join(self._directory, name) for name in tables]

  def _write_previews(self, previews: Previews, summary: Dict) -> None:
    """Writes `previews.parquet` (the report rows' thumbnails and text, for
    `lossaudit export`) and names it in `summary["files"]`."""
    path = outputs.join(self._directory, outputs.PREVIEWS)
    sink = pa.BufferOutputStream()
    pq.write_table(previews_table(previews.by_id), sink)
    outputs.write_bytes(path, sink.getvalue().to_pybytes())
    summary["files"]["previews"] = [path]

  def _hand_back(self, summary: Dict) -> None:
    """Moves the staged `clean/`, `relabelled/` and `weights/` into
    `output.dir` when the gates passed (or `output.clean.when: always`);
    else leaves them to be removed with the scratch, and says why in
    `summary["clean"]["withheld_because"]`."""
    if self._release_when is None:
      return
    gate = summary.get("gate") or {"passed": True, "failures": []}
    handed_back = gate["passed"] or self._release_when == "always"
    promoted = (outputs.promote_staged(self._directory, self._run["run_id"])
                if handed_back else {})
    has_clean = "clean" in summary  # `output.clean` is set.
    for kind in (outputs.RELABELLED, outputs.WEIGHTS):
      if kind in summary["files"]:
        summary["files"][kind] = promoted.get(kind, [])
    if has_clean:
      summary["files"][outputs.CLEAN] = promoted.get(outputs.CLEAN, [])
    if has_clean or not handed_back:
      summary.setdefault("clean", {}).update(
          written=has_clean and handed_back,
          withheld_because=None if handed_back else (
              "the gates failed (output.clean.when: passed): "
              + "; ".join(gate["failures"])))


class WriteSummary(beam.PTransform):
  """Writes `drift.json`, `report.html` and `summary.json` last.

  Takes the PCollections of `RunStatistics` that the stages of the run
  give (each with the fields it counted), merges them into one, read whole
  as the one side input of the step that writes. Outputs the summary.

  Args:
    directory: `output.dir`.
    config: the resolved config.
    context: what `summary.json` records of the run besides its statistics
      (`run` in it: `run_id`, `start_time` (`time.time()`) and `runner`;
      `wall_start`, when `run()` began: `timings.wall_seconds` counts from
      it; default `start_time`).
    release_lock: delete the lock once `summary.json` is written: the job
      took it (`lossaudit.transforms.claim.ClaimOutputDir`).
  """

  def __init__(self, directory: str, config: AuditConfig,
               context: RunContext, release_lock: bool = False):
    super().__init__()
    clean, weights = config.output.clean, config.output.weights
    self._fn = _WriteSummaryFn(
        directory, context, config.dynamics,
        release_when=(clean.when if clean else "passed"
                      if weights else None),
        release_lock=release_lock)

  def expand(self, statistics: Tuple[beam.PCollection, ...]):
    merged = (statistics
              | "Statistics" >> beam.Flatten()
              | "MergeStatistics" >> beam.CombineGlobally(
                  merge_all, empty=RunStatistics()))
    return (statistics[0].pipeline
            | "Trigger" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                self._fn, statistics=beam.pvalue.AsSingleton(merged)))
