"""Writing the outputs: Parquet and JSONL shards, then summary and report."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, iobase, textio
from apache_beam.io.filesystem import CompressionTypes

from lossaudit import drift, outputs, ownership
from lossaudit.clean import CleanCounts
from lossaudit.config import AuditConfig, DynamicsConfig, GateConfig
from lossaudit.data_map import DataMap
from lossaudit.duplicates import Duplicates
from lossaudit.flag_counts import FlagCounts
from lossaudit.history import HistoryCounts
from lossaudit.previews import Previews
from lossaudit.report import build_summary, render_report
from lossaudit.rules import Thresholds
from lossaudit.spec import PROBS_COLUMN, is_internal
from lossaudit.timings import Timings
from lossaudit.transforms.spill import in_global_window


def public_schema(schema: pa.Schema) -> pa.Schema:
  """`schema` without the internal (`__...`) columns."""
  return pa.schema([f for f in schema if not is_internal(f.name)])


# `losses/`' column of the class probabilities (`output.write_probabilities`).
PROBABILITIES = "probabilities"


def losses_schema(scored_schema: pa.Schema, probabilities: bool) -> pa.Schema:
  """The columns of `losses/`: the public ones, and with `probabilities`
  the class probabilities `(K,)` float32 of each row."""
  schema = public_schema(scored_schema)
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

  The written file lists arrive as side inputs, so this step runs only after
  every write has finalized: the presence of `summary.json` means the run is
  complete.
  """

  def __init__(self, directory: str, config: Dict, gate: GateConfig,
               run: Dict, baseline: Optional[drift.Baseline],
               class_names: Optional[Sequence[str]] = None,
               loss_computed_from: Optional[str] = None,
               dynamics: Optional[DynamicsConfig] = None,
               release_when: Optional[str] = None,
               release_lock: bool = False):
    self._directory = directory
    self._release_when = release_when
    self._release_lock = release_lock
    self._config = config
    self._gate = gate
    self._run = run
    self._baseline = baseline
    self._class_names = list(class_names) if class_names else None
    self._loss_computed_from = loss_computed_from
    self._dynamics = dynamics or DynamicsConfig()

  def process(self, unused_trigger, *, loss_stats: Dict,
              slice_stats: List[Tuple[str, Dict]], thresholds: Thresholds,
              flag_counts: FlagCounts, top_flagged: List[Dict],
              duplicates: Optional[Duplicates], timings: Optional[Timings],
              dead_letter_reasons: List[Tuple[str, int]],
              devices: List[str], losses_files: List[str],
              flagged_files: List[str], dead_letter_files: List[str],
              previews: Optional[Previews] = None,
              data_map: Optional[DataMap] = None,
              fold_stats: Optional[List[Tuple[str, Dict]]] = None,
              flag_history: Optional[HistoryCounts] = None,
              resolved_files: Sequence[str] = (),
              top_new_flagged: Sequence[Dict] = (),
              weights_files: Optional[Sequence[str]] = None,
              relabelled_files: Optional[Sequence[str]] = None,
              scored_ids_files: Optional[Sequence[str]] = None,
              clean_counts: Optional[CleanCounts] = None):
    summary = build_summary(
        loss_stats=loss_stats,
        slice_stats=dict(slice_stats),
        fold_stats=None if fold_stats is None else dict(fold_stats),
        num_folds=self._config["model"].get("folds"),
        thresholds=thresholds,
        flag_counts=flag_counts,
        dead_letter_reasons=dict(dead_letter_reasons),
        duplicates=duplicates,
        config=self._config,
        run=self._run,
        # From `run()`'s start, as `timings.startup.total` counts.
        seconds=time.time() - self._run.get("wall_start",
                                            self._run["start_time"]),
        timings=timings,
        devices=sorted(set(devices)),
        class_names=self._class_names,
        loss_computed_from=self._loss_computed_from,
        files={
            outputs.LOSSES: sorted(losses_files),
            outputs.FLAGGED: sorted(flagged_files),
            outputs.DEAD_LETTER: sorted(dead_letter_files),
            **({outputs.RESOLVED: sorted(resolved_files)}
               if flag_history is not None else {}),
            **({outputs.WEIGHTS: sorted(weights_files)}
               if weights_files is not None else {}),
            **({outputs.RELABELLED: sorted(relabelled_files)}
               if relabelled_files is not None else {}),
            **({outputs.SCORED_IDS: sorted(scored_ids_files)}
               if scored_ids_files is not None else {}),
        })
    if clean_counts is not None:
      summary["clean"] = dict(
          clean_counts.to_dict(),
          adds_up=(clean_counts.kept + clean_counts.dropped
                   == summary["examples_scored"]))
    if flag_history is not None:
      summary["flagged"].update(flag_history.to_dict(
          self._baseline is None or self._baseline.ids_known))
      summary["flag_history"] = {
          "baseline": self._baseline.dir if self._baseline else None,
          "baseline_run_id": (self._baseline.run_id if self._baseline
                              else None)}
    if data_map is not None:
      summary["data_map"] = {"points": data_map.points,
                             "total": int(data_map.total)}
    found = self._drift(summary)
    self._hand_back(summary)
    if found is not None:
      outputs.write_json(outputs.join(self._directory, outputs.DRIFT), found)
    outputs.write_text(
        outputs.join(self._directory, outputs.REPORT),
        render_report(summary, loss_stats.get("cdf", []), top_flagged,
                      found, previews=previews, data_map=data_map,
                      top_new_flagged=top_new_flagged,
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

  def _drift(self, summary: Dict) -> Optional[Dict]:
    """The comparison with the baseline and the gates, when any is set;
    records the outcome in `summary["gate"]`."""
    gate = self._gate
    if all(v is None for v in dataclasses.astuple(gate)):
      return None
    baseline = self._baseline
    found = drift.compare(
        summary, baseline.summary if baseline else None,
        max_flagged_fraction=gate.max_flagged_fraction,
        max_quantile_shift=gate.max_quantile_shift,
        shift_quantiles=gate.shift_quantiles,
        max_new_flagged_fraction=gate.max_new_flagged_fraction,
        max_regression_fraction=gate.max_regression_fraction,
        current_dir=self._directory,
        baseline_dir=baseline.dir if baseline else None)
    failures = drift.failed_gates(found)
    summary["gate"] = {"baseline": baseline.dir if baseline else None,
                       "passed": found["passed"], "failures": failures,
                       "failed": failures,
                       "skipped": drift.skipped_gates(found)}
    return found


class WriteSummary(beam.PTransform):
  """Writes `drift.json`, `report.html` and `summary.json` last.

  Outputs the summary. Every input but the first four is a PCollection,
  read whole as a side input of the one step that writes.

  Args:
    directory: `output.dir`.
    config: the resolved config (`summary.json` records it as a dict).
    run: `run_id`, `start_time` (`time.time()`) and `runner` of this run;
      `wall_start`, when `run()` began (`timings.wall_seconds` counts from
      it; default `start_time`).
    baseline: the run to compare with, or None.
    class_names: the class names by index (`input.label_vocabulary`), or
      None.
    loss_computed_from: `logits` or `outputs`: what the crossentropy was
      computed from (`preflight.Plan.loss_computed_from`), or None.
    loss_stats: one `LossAccumulator.summary()`.
    slice_stats: `(slice, LossAccumulator.summary())` pairs, or None (no
      PCollection) without slices.
    thresholds: one `Thresholds`.
    flag_counts: one `FlagCounts`.
    top_flagged: one list of the top flagged rows, as dicts.
    timings: one `Timings`, or none.
    duplicates: one `Duplicates`, or none.
    dead_letter_reasons: `(reason, count)` pairs.
    devices: `host:device` of each scoring DoFn.
    written: the names of the files written, by `outputs.LOSSES`,
      `outputs.FLAGGED` and `outputs.DEAD_LETTER` (None: nothing written).
    previews: one `Previews` of the top flagged rows' string inputs, or
      None (no PCollection) when the model has none.
    data_map: one `DataMap` (`DataMapCombineFn`) of the examples' training
      dynamics, drawn in the report (its regions by `config.dynamics`) and
      counted in `summary.json` as `data_map`; or None (no PCollection)
      without `model.checkpoints`.
    fold_stats: `(fold, LossAccumulator.summary())` pairs, or None (no
      PCollection) without `model.folds`.
    flag_history: one `HistoryCounts`, or None (no PCollection) without
      `gate.baseline`; `written` then has `outputs.RESOLVED` too.
    top_new_flagged: one list of the top new flags, as dicts (with
      `flag_history`).
    clean_counts: one `CleanCounts`, or None (no PCollection) without
      `output.clean`. `written` may have `outputs.RELABELLED`
      (`output.clean.relabel`), `outputs.WEIGHTS` (`output.weights`) and
      `outputs.SCORED_IDS`.
    release_lock: delete the lock once `summary.json` is written: the job
      took it (`lossaudit.transforms.claim.ClaimOutputDir`).
  """

  def __init__(self, directory: str, config: AuditConfig, run: Dict,
               baseline: Optional[drift.Baseline], *, loss_stats,
               slice_stats, thresholds, flag_counts, top_flagged, timings,
               duplicates, dead_letter_reasons, devices,
               written: Dict[str, Optional[beam.PCollection]],
               class_names: Optional[Sequence[str]] = None,
               loss_computed_from: Optional[str] = None,
               previews: Optional[beam.PCollection] = None,
               data_map: Optional[beam.PCollection] = None,
               fold_stats: Optional[beam.PCollection] = None,
               flag_history: Optional[beam.PCollection] = None,
               top_new_flagged: Optional[beam.PCollection] = None,
               clean_counts: Optional[beam.PCollection] = None,
               release_lock: bool = False):
    super().__init__()
    clean, weights = config.output.clean, config.output.weights
    self._fn = _WriteSummaryFn(
        directory, config.to_dict(), config.gate, run, baseline, class_names,
        loss_computed_from, config.dynamics,
        release_when=(clean.when if clean else "passed"
                      if weights else None),
        release_lock=release_lock)
    one = beam.pvalue.AsSingleton

    def many(pcoll: Optional[beam.PCollection]):
      return [] if pcoll is None else beam.pvalue.AsList(pcoll)

    self._side_inputs = dict(
        loss_stats=one(loss_stats),
        slice_stats=many(slice_stats),
        thresholds=one(thresholds),
        flag_counts=one(flag_counts),
        top_flagged=one(top_flagged),
        duplicates=one(duplicates, default_value=None),
        timings=one(timings, default_value=None),
        dead_letter_reasons=many(dead_letter_reasons),
        devices=many(devices),
        losses_files=many(written[outputs.LOSSES]),
        flagged_files=many(written[outputs.FLAGGED]),
        dead_letter_files=many(written[outputs.DEAD_LETTER]))
    if previews is not None:
      self._side_inputs["previews"] = one(previews)
    if data_map is not None:
      self._side_inputs["data_map"] = one(data_map)
    if fold_stats is not None:
      self._side_inputs["fold_stats"] = many(fold_stats)
    if flag_history is not None:
      self._side_inputs.update(
          flag_history=one(flag_history),
          resolved_files=many(written[outputs.RESOLVED]),
          top_new_flagged=one(top_new_flagged))
    if clean_counts is not None:
      self._side_inputs["clean_counts"] = one(clean_counts)
    for kind in (outputs.RELABELLED, outputs.WEIGHTS, outputs.SCORED_IDS):
      if written.get(kind) is not None:
        self._side_inputs[f"{kind}_files"] = many(written[kind])

  def expand(self, pbegin):
    return (pbegin
            | "Trigger" >> beam.Create([None])
            | "Write" >> beam.ParDo(self._fn, **self._side_inputs))
