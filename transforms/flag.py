"""`FlagExamples`: the flag rules applied to scored batches.

The rules need global statistics, which reach this stage as a side input, so
the model never runs twice.
"""

from __future__ import annotations

import collections
from typing import List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from lossaudit import METRICS_NAMESPACE, clean, decisions, rules, weights
from lossaudit.clean import FileMarks
from lossaudit.data_map import DataMap, DataMapCombineFn, sample_rows
from lossaudit.decisions import Decisions
from lossaudit.flag_counts import FlagCounts, LabelPair
from lossaudit.label_rules import class_arrays
from lossaudit.merging import merge_all
from lossaudit.rules import Thresholds, label_issue
from lossaudit.spec import (
  POSITION_COLUMN,
  PROBS_COLUMN,
  SLICE_COLUMN,
  SOURCE_COLUMN,
)
from lossaudit.weights import WeightRule

_CARRIED = ("given_label", "predicted_label", "self_confidence",
            "given_class", "predicted_class", "target", "prediction",
            "error_norm", "deviance", "fold", "aum", "region")


def flagged_schema(scored_schema: pa.Schema) -> pa.Schema:
  """Schema of `flagged/` rows: id, loss, reasons, score, class signals.

  With label issues on (the scored batches carry probabilities),
  `suggested_label` too; and `suggested_class` when the scored batches
  carry class names (`given_class`, with `input.label_vocabulary`); and
  `slice`, the row's `stats.slice_by` value, when one is set.
  """
  fields = [
      pa.field("id", pa.string()),
      pa.field("loss", pa.float64()),
      pa.field("reasons", pa.list_(pa.string())),
      pa.field("score", pa.float64()),
  ]
  fields += [scored_schema.field(c) for c in _CARRIED
             if c in scored_schema.names]
  if PROBS_COLUMN in scored_schema.names:
    fields.append(pa.field("suggested_label", pa.int64()))
    if "given_class" in scored_schema.names:
      fields.append(pa.field("suggested_class", pa.string()))
  if SLICE_COLUMN in scored_schema.names:
    fields.append(pa.field("slice", pa.string()))
  return pa.schema(fields)


def flag_batch(batch: pa.RecordBatch, thresholds: Thresholds,
               schema: pa.Schema, column: str = "loss",
               class_names: Optional[Sequence[str]] = None
               ) -> pa.RecordBatch:
  """The flagged rows of one scored batch, each with every reason once.

  The rules compare `column` (`loss`, or `weighted_loss` under
  `stats.weighted`); `score` orders the flagged rows by suspicion: that
  value, +inf when it is not finite; `-log(self_confidence)` for a label
  issue; `-aum` for a row only the AUM rules flag.

  Args:
    batch: a scored batch.
    thresholds: the rules.
    schema: `flagged_schema` of the scored schema.
    column: the loss column the rules compare.
    class_names: the class names by index (`input.label_vocabulary`);
      needed when `schema` has `suggested_class`.

  Raises:
    ValueError: `schema` has `suggested_class` and `class_names` is None.
  """
  return flagged_rows(batch, thresholds, schema, column, class_names)[0]


def flagged_rows(batch: pa.RecordBatch, thresholds: Thresholds,
                 schema: pa.Schema, column: str = "loss",
                 class_names: Optional[Sequence[str]] = None
                 ) -> Tuple[pa.RecordBatch, np.ndarray]:
  """`flag_batch`'s flagged rows, and which rows of `batch` they are
  `(N,)` bool."""
  if "suggested_class" in schema.names and class_names is None:
    raise ValueError("flag_batch: the flagged schema has suggested_class;"
                     " expected class_names. Received: None")
  ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                   dtype=object)
  scored = rules.Rows(batch, batch.column(column).to_numpy(
      zero_copy_only=False), ids)
  masks = rules.flag_masks(scored, thresholds)
  score = rules.scores(scored, masks, thresholds)
  names = np.array([name for name, _ in masks])
  matrix = np.stack([mask for _, mask in masks], axis=1)
  flagged = matrix.any(axis=1)
  rows = np.flatnonzero(flagged)
  hits = matrix[rows]
  offsets = np.concatenate([[0], np.cumsum(hits.sum(axis=1))]).astype(np.int32)
  reasons = pa.ListArray.from_arrays(
      pa.array(offsets),
      pa.array(names.astype(str)).take(pa.array(np.nonzero(hits)[1])))
  picked = pa.array(rows, type=pa.int64())
  arrays = [batch.column("id").take(picked), batch.column("loss").take(picked),
            reasons, pa.array(score[rows])]
  arrays += [batch.column(c).take(picked) for c in _CARRIED
             if c in schema.names]
  if "suggested_label" in schema.names:
    is_issue = dict(masks)[label_issue.REASON][rows]
    suggested_label = pa.array(scored.suggested[rows].astype(np.int64),
                               mask=~is_issue)
    arrays.append(suggested_label)
    if "suggested_class" in schema.names:
      arrays.append(pa.array(list(class_names), pa.string()).take(
          suggested_label))
  if "slice" in schema.names:
    arrays.append(batch.column(SLICE_COLUMN).take(picked))
  return pa.RecordBatch.from_arrays(arrays, schema=schema), flagged


# The output tag of `FlagExamples`' data-map samples.
DATA_MAP = "data_map"


def data_map_sample(batch: pa.RecordBatch, flagged: np.ndarray) -> DataMap:
  """The data-map points of a scored batch with training dynamics (at most
  `DATA_MAP_POINTS`, by id hash), marked where `flagged` `(N,)`."""
  return sample_rows(batch.column("id"), batch.column("confidence"),
                     batch.column("variability"), batch.column("correctness"),
                     flagged)


# The output tags of `FlagExamples`' clean-dataset marks and relabelled rows.
MARKS = "marks"
RELABELLED = "relabelled"
# `(FOUND_SCHEMA batch, DecisionCounts)` of the decided rows of a batch.
DECIDED = "decided"
WEIGHTS = "weights"
_RELABELLED_FIELDS = (pa.field("id", pa.string()),
                      pa.field("given_label", pa.int64()),
                      pa.field("suggested_label", pa.int64()),
                      pa.field("suggested_probability", pa.float64()))
_RELABELLED_NAMES = (pa.field("given_class", pa.string()),
                     pa.field("suggested_class", pa.string()))


def relabelled_schema(class_names: Optional[Sequence[str]]) -> pa.Schema:
  """`relabelled/`: id, old and new label, the model's probability of the
  new one; and the class names with a vocabulary."""
  return pa.schema(list(_RELABELLED_FIELDS)
                   + (list(_RELABELLED_NAMES) if class_names else []))


class CleanRule(NamedTuple):
  """Which flags `clean/` leaves out (`output.clean`).

  Attributes:
    drop_reasons: the reasons that drop a row.
    relabel: keep label issues with their suggested label instead, where
      the model gives it at least `min_probability`.
    min_probability: `output.clean.relabel_min_probability`.
    class_names: the class names by index, or None.
  """

  drop_reasons: Tuple[str, ...]
  relabel: bool
  min_probability: float = 0.9
  class_names: Optional[Tuple[str, ...]] = None


def clean_marks(batch: pa.RecordBatch, flagged: pa.RecordBatch,
                rows: np.ndarray, rule: CleanRule,
                decided: Optional[Decisions] = None
                ) -> Tuple[List[Tuple[str, FileMarks]],
                           Optional[pa.RecordBatch],
                           Optional[decisions.Applied]]:
  """`(source, FileMarks)` of each source file of a scored batch, its
  relabelled rows (`relabelled_schema`; None without `rule.relabel` or
  decisions), and the decisions on its rows (None without).

  A decision overrides the flags of its row (`lossaudit.decisions`): keep,
  drop, or keep with the decided label.

  Args:
    batch: a scored batch with `POSITION_COLUMN` and `SOURCE_COLUMN`.
    flagged: its flagged rows (`flagged_rows`).
    rows: `(N,)` bool, which rows of `batch` `flagged` holds.
    decided: the decisions in force, or None.
  """
  n = batch.num_rows
  flagged_at = np.flatnonzero(rows)
  suggested = probs = None
  if "suggested_label" in flagged.schema.names:
    suggested = np.asarray(pc.fill_null(flagged.column("suggested_label"), 0
                                        ).to_numpy(zero_copy_only=False))
  confident = None
  if rule.relabel:
    width = len(batch.column(PROBS_COLUMN).flatten()) // max(n, 1)
    probs = class_arrays(batch, width).probs
    chosen = probs[flagged_at, suggested]
    # Compared in the model's precision: float32(0.9) < 0.9.
    confident = chosen >= chosen.dtype.type(rule.min_probability)
  actions = clean.drop_actions(
      flagged.column("reasons"), rule.drop_reasons, rule.relabel, confident)
  # The flags' actions on every row of the batch, then the decisions'.
  dropped, relabelled = np.zeros(n, bool), np.zeros(n, bool)
  labels = np.zeros(n, np.int64)
  dropped[flagged_at] = actions.dropped
  relabelled[flagged_at] = actions.relabelled
  if suggested is not None:
    labels[flagged_at] = suggested
  applied = None
  given = _given(batch)
  if decided is not None and len(decided):
    applied = decisions.apply(decided, batch.column("id"), given)
    on = applied.decided
    dropped[on] = applied.actions[on] == decisions.DROP
    relabelled[on] = applied.actions[on] == decisions.RELABEL
    labels[on] = np.maximum(applied.labels[on], 0)
  positions = batch.column(POSITION_COLUMN).to_numpy(zero_copy_only=False)
  sources = batch.column(SOURCE_COLUMN)
  marks = []
  for source in pc.unique(sources).to_pylist():
    mine = pc.equal(sources, source).to_numpy(zero_copy_only=False)
    marks.append((source, clean.file_marks(
        positions[mine], np.arange(int(mine.sum())),
        clean.Actions(dropped[mine], relabelled[mine]), labels[mine])))
  listed = None
  if rule.relabel or applied is not None:
    listed = _relabelled_rows(batch, relabelled, labels, given, probs,
                              rule.class_names)
  return marks, listed, applied


def _relabelled_rows(batch: pa.RecordBatch, relabelled: np.ndarray,
                     labels: np.ndarray, given: Optional[np.ndarray],
                     probs: Optional[np.ndarray],
                     class_names: Optional[Sequence[str]]
                     ) -> pa.RecordBatch:
  """The `relabelled_schema` rows of a scored batch's rows `relabelled`
  `(N,)` bool, with new `labels` `(N,)`, `given` labels `(N,)` and the
  model's `probs` `(N, K)` (None: null probabilities)."""
  at = np.flatnonzero(relabelled)
  new = labels[at]
  old = (np.full(len(at), -1, np.int64) if given is None else given[at])
  probability = (pa.nulls(len(at), pa.float64()) if probs is None else
                 pa.array(probs[at, new], pa.float64()))
  arrays = [batch.column("id").take(pa.array(at)),
            pa.array(old, pa.int64(), mask=old < 0), pa.array(new, pa.int64()),
            probability]
  if class_names:
    names = pa.array(list(class_names), pa.string())
    arrays += [names.take(arrays[1]), names.take(arrays[2])]
  return pa.RecordBatch.from_arrays(arrays,
                                    schema=relabelled_schema(class_names))


def weights_batch(batch: pa.RecordBatch, flagged: pa.RecordBatch,
                  rows: np.ndarray, rule: WeightRule, column: str,
                  loss_stats: Optional[dict]) -> pa.RecordBatch:
  """`(id, weight)` of every row of a scored batch (`weights.SCHEMA`).

  Args:
    flagged: its flagged rows; `rows` `(N,)` bool, which they are.
    column: the loss column the statistics are of (`loss_bins`).
    loss_stats: the `LossAccumulator.summary()` of `column` (`loss_bins`).
  """
  counted = np.zeros(batch.num_rows, bool)
  counted[np.flatnonzero(rows)] = clean.drop_actions(
      flagged.column("reasons"), rule.reasons, relabel=False).dropped
  losses = batch.column(column).to_numpy(zero_copy_only=False)
  weight = weights.example_weights(
      rule, counted, losses,
      None if loss_stats is None else weights.bin_edges(rule, loss_stats))
  return pa.RecordBatch.from_arrays([batch.column("id"), pa.array(weight)],
                                    schema=weights.SCHEMA)


def _given(batch: pa.RecordBatch) -> Optional[np.ndarray]:
  """`(N,)` int64 the batch's given labels (-1 null), or None."""
  if "given_label" not in batch.schema.names:
    return None
  return np.asarray(pc.fill_null(batch.column("given_label"), -1).to_numpy(
      zero_copy_only=False), np.int64)


class _FlagFn(beam.DoFn):

  def __init__(self, schema: pa.Schema, column: str,
               class_names: Optional[Sequence[str]], data_map: bool = False,
               clean_rule: Optional[CleanRule] = None,
               weight_rule: Optional[WeightRule] = None):
    self._schema = schema
    self._column = column
    self._class_names = class_names
    self._data_map = data_map
    self._clean_rule = clean_rule
    self._weight_rule = weight_rule
    self._flagged = Metrics.counter(METRICS_NAMESPACE, "examples_flagged")

  def process(self, batch: pa.RecordBatch, thresholds: Thresholds,
              loss_stats: Optional[dict] = None,
              decided: Optional[Decisions] = None):
    flagged, rows = flagged_rows(batch, thresholds, self._schema,
                                 self._column, self._class_names)
    if self._weight_rule is not None:
      yield beam.pvalue.TaggedOutput(WEIGHTS, weights_batch(
          batch, flagged, rows, self._weight_rule, self._column,
          loss_stats))
    if self._data_map:
      yield beam.pvalue.TaggedOutput(DATA_MAP, data_map_sample(batch, rows))
    if self._clean_rule is not None:
      marks, relabelled, applied = clean_marks(batch, flagged, rows,
                                               self._clean_rule, decided)
      for mark in marks:
        yield beam.pvalue.TaggedOutput(MARKS, mark)
      if relabelled is not None and relabelled.num_rows:
        yield beam.pvalue.TaggedOutput(RELABELLED, relabelled)
      if applied is not None and (applied.decided | applied.stale).any():
        yield beam.pvalue.TaggedOutput(DECIDED, (
            decisions.found_rows(batch.column("id"), _given(batch), applied),
            decisions.count_applied(applied)))
    if flagged.num_rows:
      self._flagged.inc(flagged.num_rows)
      yield flagged


def count_reasons(batch: pa.RecordBatch) -> FlagCounts:
  """The counts of a flagged batch: its rows, each reason, and for label
  issues each (given, suggested) pair."""
  reasons = collections.Counter(
      batch.column("reasons").flatten().to_numpy(zero_copy_only=False))
  pairs = {}
  if "suggested_label" in batch.schema.names:
    issues = batch.filter(pc.is_valid(batch.column("suggested_label")))
    pairs = collections.Counter(map(LabelPair._make, zip(
        issues.column("given_label").to_pylist(),
        issues.column("suggested_label").to_pylist())))
  return FlagCounts(
      total=batch.num_rows,
      by_reason={str(k): int(v) for k, v in reasons.items()},
      by_pair={pair: int(n) for pair, n in pairs.items()})


class FlagExamples(beam.PTransform):
  """Scored batches → flagged batches (schema `flagged_schema`).

  Args:
    thresholds: a singleton PCollection of `Thresholds`.
    scored_schema: the schema of the scored batches.
    column: the loss column the rules compare.
    class_names: the class names by index (`input.label_vocabulary`), or
      None; they name `suggested_class`.
    data_map: whether to sample the data map too (scored batches with
      training dynamics): then the output has `data_map`, one `DataMap` of
      every batch.
    clean_rule: with `output.clean` (scored batches with positions): the
      output has `marks`, `(source, FileMarks)` merged per source file, and
      `relabelled`, the rows kept with a new label (`relabelled_schema`).
    weight_rule: with `output.weights`: the output has `weights`, `(id,
      weight)` batches of every row (`lossaudit.weights.SCHEMA`).
    loss_stats: a singleton `LossAccumulator.summary()` of `column`, for
      `loss_bins` weights.
    decisions: a singleton `Decisions` in force (with `clean_rule`): they
      override the flags in the marks; the output has `decided`, `(found
      rows, DecisionCounts)` of each batch with decided rows.

  The output is the flagged batches; with any of `data_map`, `clean_rule`
  or `weight_rule`, a dict of them as `flagged` and the other outputs.
  """

  def __init__(self, thresholds, scored_schema: pa.Schema,
               column: str = "loss",
               class_names: Optional[Sequence[str]] = None,
               data_map: bool = False,
               clean_rule: Optional[CleanRule] = None,
               weight_rule: Optional[WeightRule] = None,
               loss_stats=None, decisions=None):
    super().__init__()
    self._decisions = decisions
    self._data_map = data_map
    self._clean_rule = clean_rule
    self._weight_rule = weight_rule
    self._loss_stats = loss_stats
    self._thresholds = thresholds
    self._schema = flagged_schema(scored_schema)
    self._column = column
    self._class_names = tuple(class_names) if class_names else None
    if ("suggested_class" in self._schema.names and
        self._class_names is None):
      raise ValueError("FlagExamples: the scored batches carry class names"
                       " (given_class); expected class_names. Received:"
                       " None")

  def expand(self, scored):
    side_inputs = {"thresholds": beam.pvalue.AsSingleton(self._thresholds)}
    if self._weight_rule is not None and self._loss_stats is not None:
      side_inputs["loss_stats"] = beam.pvalue.AsSingleton(self._loss_stats)
    if self._clean_rule is not None and self._decisions is not None:
      side_inputs["decided"] = beam.pvalue.AsSingleton(self._decisions)
    flag = beam.ParDo(
        _FlagFn(self._schema, self._column, self._class_names,
                self._data_map, self._clean_rule, self._weight_rule),
        **side_inputs)
    if not (self._data_map or self._clean_rule or self._weight_rule):
      return scored | "Flag" >> flag
    result = scored | "Flag" >> flag.with_outputs(
        DATA_MAP, MARKS, RELABELLED, WEIGHTS, DECIDED, main="flagged")
    found = {"flagged": result.flagged}
    if self._data_map:
      found[DATA_MAP] = result[DATA_MAP] | "CombineDataMap" >> (
          beam.CombineGlobally(DataMapCombineFn()))
    if self._clean_rule is not None:
      found[MARKS] = result[MARKS] | "MergeMarks" >> beam.CombinePerKey(
          lambda marks: merge_all(marks, FileMarks()))
      found[RELABELLED] = result[RELABELLED]
      found[DECIDED] = result[DECIDED]
    if self._weight_rule is not None:
      found[WEIGHTS] = result[WEIGHTS]
    return found
