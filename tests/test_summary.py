"""`lossaudit.summary`: `summary.json` from a hand-made `RunStatistics`,
without a pipeline."""

import dataclasses
import json
import random

import numpy as np
import pytest

from lossaudit.clean import CleanCounts
from lossaudit.confident import CellCounts
from lossaudit.config import GateConfig
from lossaudit.duplicates import Duplicates
from lossaudit.flag_counts import FlagCounts, LabelPair
from lossaudit.history import HistoryCounts
from lossaudit.label_rules import LabelRules
from lossaudit.merging import merge_all
from lossaudit.rules import Thresholds
from lossaudit.summary import RunContext, RunStatistics, build_summary
from lossaudit.timings import Timings

QUANTILES = {"0.5": 0.8, "0.99": 3.9}
LABEL_RULES = LabelRules(
    method="confident_learning", thresholds=[0.6, 0.7], label_counts=[6, 4],
    confident_joint=CellCounts.from_dense(np.array([[5, 1], [0, 4]])),
    noise_rate=[0.1, 0.0])

# What a run of 10 scored examples (1 with a non-finite loss) and 2 dead
# letters counted, as its stages give it: one field each.
PARTS = (
    RunStatistics(folds={}, history=HistoryCounts(), clean=CleanCounts(),
                  files={"losses": (), "flagged": (), "dead_letter": (),
                         "resolved": ()}),
    RunStatistics(loss={"count": 9, "nan_count": 1, "mean": 1.0,
                        "quantiles": QUANTILES, "epsilon": 0.01,
                        "cdf": [0.1, 0.8, 4.0]}),
    RunStatistics(slices={"b": {"count": 4, "nan_count": 1,
                                "quantiles": QUANTILES}}),
    RunStatistics(slices={"a": {"count": 5, "nan_count": 0,
                                "quantiles": QUANTILES}}),
    RunStatistics(folds={"2": {"count": 4, "nan_count": 0,
                               "quantiles": QUANTILES}}),
    RunStatistics(folds={"0": {"count": 5, "nan_count": 1,
                               "quantiles": QUANTILES}}),
    RunStatistics(thresholds=Thresholds.of(loss_quantile=3.5, robust_z=2.5,
                                           label_issue=LABEL_RULES)),
    RunStatistics(flag_counts=FlagCounts(2, {"robust_z": 2,
                                             "loss_quantile": 1})),
    RunStatistics(flag_counts=FlagCounts(1, {"label_issue": 1},
                                         {LabelPair(0, 1): 1})),
    RunStatistics(dead_letter_reasons={"unparseable": 1}),
    RunStatistics(dead_letter_reasons={"unparseable": 1, "bad_label": 0}),
    RunStatistics(duplicates=Duplicates(1, 2, [(2, "x")])),
    RunStatistics(timings=Timings(1, 6, 0.2, 0.2, 100.0)),
    RunStatistics(timings=Timings(1, 4, 0.3, 0.3, 101.0)),
    RunStatistics(devices=frozenset(["h2:cpu"])),
    RunStatistics(devices=frozenset(["h1:gpu"])),
    RunStatistics(files={"flagged": ("out/flagged/b",)}),
    RunStatistics(files={"flagged": ("out/flagged/a",)}),
    RunStatistics(files={"resolved": ("out/resolved/a",)}),
    RunStatistics(top_flagged=[{"id": "x", "score": 4.0}]),
    RunStatistics(history=HistoryCounts(new=2, persistent=1, resolved=1,
                                        new_rows=1, regressions=1,
                                        scored_in_both=8)),
    RunStatistics(clean=CleanCounts(kept=7, dropped=3, files=1)),
)
CONTEXT = RunContext(
    config={"model": {"folds": 3}, "flag": {"score": "loss"},
            "output": {"dir": "out"}},
    run={"runner": "DirectRunner", "run_id": "r1", "start_time": 86400.0},
    class_names=("cat", "dog"), loss_computed_from="logits")


def _merged(parts=PARTS):
  return merge_all(parts, RunStatistics())


def test_the_summary_of_hand_made_statistics():
  built = build_summary(_merged(), CONTEXT, seconds=4.0)
  document = built.document
  versions = document.pop("versions")
  assert set(versions) >= {"python", "lossaudit", "apache-beam"}
  empty = {"count": 0, "quantiles": {"0.5": None, "0.99": None}}
  assert document == {
      "examples_read": 12,
      "examples_scored": 10,
      "examples_dead_lettered": 2,
      "dead_letter": {"by_reason": {"bad_label": 0, "unparseable": 2}},
      "duplicate_ids": 1,
      "duplicate_id_rows": 2,
      "duplicate_id_examples": [{"id": "x", "count": 2}],
      "loss": {"count": 9, "nan_count": 1, "mean": 1.0,
               "quantiles": QUANTILES, "epsilon": 0.01,
               "computed_from": "logits", "score": "loss"},
      "slices": {"a": {"count": 5, "quantiles": QUANTILES},
                 "b": {"count": 5, "quantiles": QUANTILES}},
      "folds": {"0": {"count": 6, "quantiles": QUANTILES}, "1": empty,
                "2": {"count": 4, "quantiles": QUANTILES}},
      "thresholds": {"loss_quantile": 3.5, "robust_z": 2.5},
      "flagged": {"total": 3, "by_reason": {"label_issue": 1,
                                            "loss_quantile": 1,
                                            "robust_z": 2},
                  "new": 2, "persistent": 1, "resolved": 1,
                  "baseline_not_scored": 0, "new_rows": 1,
                  "regressions": 1, "scored_in_both": 8,
                  "reviewed": 0},
      "label_issues": {"method": "confident_learning", "num_classes": 2,
                       "thresholds": [0.6, 0.7], "label_counts": [6, 4],
                       "confident_joint": [[5, 1], [0, 4]],
                       "joint_cells": 3, "joint_total": 10,
                       "top_cells": [{"given": 0, "suggested": 1,
                                      "count": 1, "given_name": "cat",
                                      "suggested_name": "dog"}],
                       "noise_rate": [0.1, 0.0], "non_finite_left_out": 0,
                       "issues_by_pair": {"0->1": 1}, "issue_pairs": 1,
                       "issues_by_given": [1, 0],
                       "class_names": ["cat", "dog"]},
      "class_names": ["cat", "dog"],
      "config": CONTEXT.config,
      "runner": "DirectRunner",
      "run_id": "r1",
      "started": "1970-01-02T00:00:00+00:00",
      "devices": ["h1:gpu", "h2:cpu"],
      "seconds": 4.0,
      "timings": {"wall_seconds": 4.0, "examples_per_second": 2.5,
                  "scoring_seconds": 0.5, "batches": 2,
                  "mean_batch_ms": 250.0, "slowest_batch_ms": 300.0,
                  "batch_rows": 10, "first_batch_time": 100.0},
      "files": {"losses": [], "flagged": ["out/flagged/a", "out/flagged/b"],
                "dead_letter": [], "resolved": ["out/resolved/a"]},
      "clean": {"kept": 7, "dropped": 3, "relabelled": 0, "files": 1,
                "adds_up": True},
      "flag_history": {"baseline": None, "baseline_run_id": None},
  }
  # summary.json's keys are written in this order.
  assert list(document) == [
      "examples_read", "examples_scored", "examples_dead_lettered",
      "dead_letter", "duplicate_ids", "duplicate_id_rows",
      "duplicate_id_examples", "loss", "slices", "folds", "thresholds",
      "flagged", "label_issues", "class_names", "config", "runner", "run_id",
      "started", "devices", "seconds", "timings", "files", "clean",
      "flag_history"]
  assert list(document["files"]) == ["losses", "flagged", "dead_letter",
                                     "resolved"]
  assert list(document["slices"]) == ["a", "b"]
  # No gate is set: no drift.json. What the report draws beside it:
  assert built.drift is None
  assert built.cdf == [0.1, 0.8, 4.0]
  assert built.top_flagged == [{"id": "x", "score": 4.0}]
  assert built.previews is None and built.data_map is None


def test_what_is_off_has_no_key():
  document = build_summary(RunStatistics(
      loss={"count": 0, "nan_count": 0, "quantiles": {"0.5": None}},
      thresholds=Thresholds()), RunContext(
          config={"model": {}, "output": {"dir": "out"}},
          run={"runner": "DirectRunner", "run_id": "r2", "start_time": 0.0}),
      seconds=0.0).document
  for key in ("folds", "clean", "flag_history", "data_map", "gate"):
    assert key not in document
  assert document["label_issues"] is None and document["class_names"] is None
  assert document["loss"]["score"] == "loss"
  assert document["files"] == {} and document["devices"] == []
  assert document["flagged"] == {"total": 0, "by_reason": {}}
  assert document["timings"]["examples_per_second"] is None


def test_the_parts_merge_in_any_order():
  first = build_summary(_merged(), CONTEXT, seconds=1.0).document
  for seed in range(5):
    order = list(PARTS)
    random.Random(seed).shuffle(order)
    # Beam merges partial merges too.
    halves = (_merged(order[:9]), _merged(order[9:]))
    assert build_summary(_merged(halves), CONTEXT,
                         seconds=1.0).document == first


def test_a_statistic_computed_once_may_not_arrive_twice():
  with pytest.raises(ValueError, match="computed once arrived twice"):
    RunStatistics(thresholds=Thresholds()).merge(
        RunStatistics(thresholds=Thresholds()))


def test_a_gate_writes_drift_and_its_outcome():
  context = RunContext(CONTEXT.config, CONTEXT.run,
                       gate=GateConfig(max_flagged_fraction=0.2))
  built = build_summary(_merged(), context, seconds=1.0)
  # 3 flagged of 10 scored: 0.3 > 0.2.
  assert built.drift["passed"] is False
  gate = built.document["gate"]
  assert list(built.document)[-1] == "gate"
  assert gate["baseline"] is None and gate["passed"] is False
  assert gate["failed"] == gate["failures"] == [
      "gate max_flagged_fraction failed: 0.3 > 0.2, by 0.1"]
  assert gate["skipped"] == []


def test_label_issues_stay_bounded_with_many_pairs_and_classes():
  """12,000 label pairs over 1,500 classes: summary.json keeps the 10,000
  pairs with the most issues and no per-class lists; the full numbers go
  to the report and the label_issues/ files."""
  k = 1500
  rng = np.random.default_rng(0)
  cells = rng.choice(k * k, 12_000, replace=False)
  by_pair = {LabelPair(int(c // k), int(c % k)): int(n) for c, n in zip(
      cells, rng.integers(1, 50, len(cells)))}
  rules = LabelRules(
      method="confident_learning", thresholds=[0.5] * k,
      label_counts=[100] * k,
      confident_joint=CellCounts.from_dense(np.diag(np.full(k, 100))),
      noise_rate=[0.0] * k)
  parts = [p for p in PARTS if not isinstance(p.thresholds, Thresholds)
           and not p.flag_counts.total]
  parts += [RunStatistics(thresholds=Thresholds.of(label_issue=rules)),
            RunStatistics(flag_counts=FlagCounts(
                sum(by_pair.values()), {"label_issue": sum(by_pair.values())},
                by_pair))]
  built = build_summary(_merged(parts), dataclasses.replace(
      CONTEXT, class_names=tuple(f"c{i}" for i in range(k))), seconds=1.0)
  issues = built.document["label_issues"]
  top = sorted(by_pair.items(), key=lambda kv: (-kv[1], kv[0]))[:10_000]
  assert issues["issues_by_pair"] == {p.key(): n for p, n in top}
  assert issues["issue_pairs"] == 12_000
  assert issues["issues_by_given"] is None and issues["thresholds"] is None
  assert built.document["class_names"] is None
  given = np.zeros(k, int)
  for pair, n in by_pair.items():
    given[pair.given] += n
  assert built.label_classes["label_issues"] == given.tolist()
  assert built.flag_counts.by_pair == by_pair
  assert len(json.dumps(built.document)) < 400_000
