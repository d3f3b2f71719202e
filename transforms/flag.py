"""`FlagExamples`: the flag rules applied to scored batches.

The rules need global statistics, which reach this stage as a side input, so
the model never runs twice.
"""

from __future__ import annotations

import collections
from typing import Dict, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from lossaudit.stats import flag_masks

_NAMESPACE = "lossaudit"
_CARRIED = ("given_label", "predicted_label", "self_confidence")


def flagged_schema(scored_schema: pa.Schema) -> pa.Schema:
  """Schema of `flagged/` rows: id, loss, reasons, score, class signals."""
  fields = [
      pa.field("id", pa.string()),
      pa.field("loss", pa.float64()),
      pa.field("reasons", pa.list_(pa.string())),
      pa.field("score", pa.float64()),
  ]
  fields += [scored_schema.field(c) for c in _CARRIED
             if c in scored_schema.names]
  return pa.schema(fields)


def flag_batch(batch: pa.RecordBatch, thresholds: Dict, schema: pa.Schema,
               column: str = "loss") -> pa.RecordBatch:
  """The flagged rows of one scored batch, each with every reason once.

  The rules compare `column` (`loss`, or `weighted_loss` under
  `stats.weighted`); `score` orders the flagged rows by suspicion: that
  value, +inf when it is not finite.
  """
  losses = batch.column(column).to_numpy(zero_copy_only=False)
  ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                   dtype=object)
  rules = flag_masks(losses, ids, thresholds)
  names = np.array([name for name, _ in rules])
  matrix = np.stack([mask for _, mask in rules], axis=1)
  flagged = matrix.any(axis=1)
  rows = np.flatnonzero(flagged)
  hits = matrix[rows]
  offsets = np.concatenate([[0], np.cumsum(hits.sum(axis=1))]).astype(np.int32)
  reasons = pa.ListArray.from_arrays(
      pa.array(offsets),
      pa.array(names.astype(str)).take(pa.array(np.nonzero(hits)[1])))
  picked = pa.array(rows, type=pa.int64())
  value = losses[rows]
  arrays = [batch.column("id").take(picked), batch.column("loss").take(picked),
            reasons, pa.array(np.where(np.isfinite(value), value, np.inf))]
  arrays += [batch.column(c).take(picked) for c in _CARRIED
             if c in schema.names]
  return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _FlagFn(beam.DoFn):

  def __init__(self, schema: pa.Schema, column: str):
    self._schema = schema
    self._column = column
    self._flagged = Metrics.counter(_NAMESPACE, "examples_flagged")

  def process(self, batch: pa.RecordBatch, thresholds: Dict):
    flagged = flag_batch(batch, thresholds, self._schema, self._column)
    if flagged.num_rows:
      self._flagged.inc(flagged.num_rows)
      yield flagged


def count_reasons(batch: pa.RecordBatch) -> Dict[str, int]:
  """`{reason: count}` of a flagged batch, plus `total`."""
  counts = collections.Counter(
      batch.column("reasons").flatten().to_numpy(zero_copy_only=False))
  counts = {str(k): int(v) for k, v in counts.items()}
  counts["total"] = batch.num_rows
  return counts


def sum_counts(counts: Iterable[Dict[str, int]]) -> Dict[str, int]:
  total: Dict[str, int] = collections.Counter()
  for c in counts:
    total.update(c)
  return dict(total)


class FlagExamples(beam.PTransform):
  """Scored batches → flagged batches (schema `flagged_schema`).

  Args:
    thresholds: a singleton PCollection of `rule_thresholds()`.
    scored_schema: the schema of the scored batches.
    column: the loss column the rules compare.
  """

  def __init__(self, thresholds, scored_schema: pa.Schema,
               column: str = "loss"):
    super().__init__()
    self._thresholds = thresholds
    self._schema = flagged_schema(scored_schema)
    self._column = column

  def expand(self, scored):
    return scored | "Flag" >> beam.ParDo(
        _FlagFn(self._schema, self._column),
        beam.pvalue.AsSingleton(self._thresholds))
