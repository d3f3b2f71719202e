"""Flagging scored batches: every reason once, counted."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from lossaudit.flag_counts import FlagCounts, LabelPair
from lossaudit.merging import merge_all
from lossaudit.rules import Thresholds
from lossaudit.rules.top_k import TopKBound
from lossaudit.transforms.flag import (
  FlagExamples,
  count_reasons,
  flag_batch,
  flagged_schema,
)

SCORED = pa.schema([("id", pa.string()), ("loss", pa.float64()),
                    ("given_label", pa.int64())])


def _scored(ids, losses):
  return pa.RecordBatch.from_arrays(
      [pa.array(ids), pa.array(losses, pa.float64()),
       pa.array(range(len(ids)), pa.int64())], schema=SCORED)


def test_flag_batch_lists_each_reason_once():
  batch = _scored(list("abcde"), [0.1, 2.0, float("nan"), 5.0, 3.0])
  thresholds = Thresholds.of(loss_quantile=2.5, loss_threshold=1.0,
                             top_k=TopKBound(5.0, "d"))
  flagged = flag_batch(batch, thresholds, flagged_schema(SCORED))
  got = flagged.to_pydict()
  np.testing.assert_array_equal(got.pop("loss"), [2.0, np.nan, 5.0, 3.0])
  assert got == {
      "id": ["b", "c", "d", "e"],
      "reasons": [["loss_threshold"], ["non_finite"],
                  ["loss_quantile", "loss_threshold", "top_k"],
                  ["loss_quantile", "loss_threshold"]],
      "score": [2.0, float("inf"), 5.0, 3.0],
      "given_label": [1, 2, 3, 4],
  }
  assert count_reasons(flagged) == FlagCounts(
      total=4, by_reason={"loss_threshold": 3, "non_finite": 1,
                          "loss_quantile": 2, "top_k": 1})


def test_nothing_flagged_gives_an_empty_batch():
  flagged = flag_batch(_scored(["a"], [1.0]), Thresholds.of(loss_threshold=3.0),
                       flagged_schema(SCORED))
  assert flagged.num_rows == 0


def test_flag_examples_with_side_input_thresholds():
  with TestPipeline() as p:
    thresholds = p | "T" >> beam.Create([Thresholds.of(loss_threshold=1.5)])
    flagged = (p | beam.Create([_scored(["a", "b"], [1.0, 2.0]),
                                _scored(["c"], [3.0])])
               | FlagExamples(thresholds, SCORED))
    counts = (flagged | beam.Map(count_reasons)
              | beam.CombineGlobally(merge_all, empty=FlagCounts()))
    assert_that(counts, equal_to([
        FlagCounts(total=2, by_reason={"loss_threshold": 2})]))


def test_flag_counts_merge_and_write_summary_json():
  a = FlagCounts(total=3, by_reason={"top_k": 2, "label_issue": 1},
                 by_pair={LabelPair(10, 2): 1})
  b = FlagCounts(total=2, by_reason={"label_issue": 2},
                 by_pair={LabelPair(2, 1): 1, LabelPair(10, 2): 1})
  merged = merge_all([a, b], FlagCounts())
  assert merged == FlagCounts(
      total=5, by_reason={"top_k": 2, "label_issue": 3},
      by_pair={LabelPair(10, 2): 2, LabelPair(2, 1): 1})
  assert merge_all([], FlagCounts()) == FlagCounts()
  assert merged.to_dict() == {"total": 5,
                              "by_reason": {"label_issue": 3, "top_k": 2}}
  # Sorted as strings, as summary.json always listed them.
  assert list(merged.pairs_to_dict().items()) == [("10->2", 2), ("2->1", 1)]
  summary = {"flagged": merged.to_dict(),
             "label_issues": {"issues_by_pair": merged.pairs_to_dict()}}
  assert FlagCounts.from_summary(summary) == merged
  np.testing.assert_array_equal(merged.issue_matrix(11)[[10, 2], [2, 1]],
                                [2, 1])
  assert merged.issues_by_given(11) == [0, 0, 1] + [0] * 7 + [2]
  # Class 2 is in 3 issues (given once, suggested twice), 10 in 2, 1 in 1.
  assert merged.most_involved(2) == [2, 10]
  np.testing.assert_array_equal(merged.issue_matrix(11, [2, 10]),
                                [[0, 0], [2, 0]])
  assert merged.top_pairs(1) == [(LabelPair(10, 2), 2)]
  tied = FlagCounts(by_pair={LabelPair(3, 1): 4, LabelPair(1, 3): 4})
  assert tied.top_pairs(5) == [(LabelPair(1, 3), 4), (LabelPair(3, 1), 4)]
