"""`LabelRules`: what confident learning found, as the flag stage applies it.

`FindLabelIssues` (lossaudit/transforms/label_issues.py) computes the rules
in passes over the scored batches; `FlagExamples` applies them to each batch
(`issue_mask`), and `summary.json` records them (`to_dict`). See
`lossaudit/confident.py` for the math.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from lossaudit import confident
from lossaudit.early_aum import EARLY_AUM, EarlyAumRule
from lossaudit.flag_counts import LabelPair
from lossaudit.spec import (
  CHECKPOINT_CORRECT_COLUMN,
  CHECKPOINT_MARGINS_COLUMN,
  PROBS_COLUMN,
)

_, PRUNE_BY_NOISE_RATE = confident.LABEL_ISSUE_METHODS
# The methods whose issues (early AUM's suspects) rank the cells.
_RANKS_CELLS = (PRUNE_BY_NOISE_RATE, EARLY_AUM)

class ClassArrays(NamedTuple):
  """A scored batch's class signals.

  Attributes:
    probs: `(N, K)` class probabilities.
    given: `(N,)` given labels.
    ids: `(N,)` ids.
    finite: `(N,)` whether the row's probabilities and loss are finite:
      the others (flagged `non_finite`) are left out of confident learning.
  """

  probs: np.ndarray
  given: np.ndarray
  ids: np.ndarray
  finite: np.ndarray

  def finite_rows(self) -> "ClassArrays":
    """The rows that are `finite`."""
    if self.finite.all():
      return self
    keep = self.finite
    return ClassArrays(self.probs[keep], self.given[keep], self.ids[keep],
                       keep[keep])


def class_arrays(batch: pa.RecordBatch, num_classes: int) -> ClassArrays:
  """The class signals of a scored batch, zero-copy."""
  probs = batch.column(PROBS_COLUMN).flatten().to_numpy(
      zero_copy_only=False).reshape(batch.num_rows, num_classes)
  given = batch.column("given_label").to_numpy(zero_copy_only=False)
  ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                   dtype=object)
  loss = batch.column("loss").to_numpy(zero_copy_only=False)
  finite = np.isfinite(probs).all(axis=1) & np.isfinite(loss)
  return ClassArrays(probs, given, ids, finite)


def checkpoint_arrays(batch: pa.RecordBatch
                      ) -> Tuple[np.ndarray, np.ndarray]:
  """`(margins, correct)` `(N, C)` of the full model's checkpoints
  (`ScoringSpec.checkpoint_margins`), zero-copy where Arrow allows."""
  found = []
  for name in (CHECKPOINT_MARGINS_COLUMN, CHECKPOINT_CORRECT_COLUMN):
    column = batch.column(name)
    found.append(column.flatten().to_numpy(zero_copy_only=False).reshape(
        batch.num_rows, column.type.list_size))
  return found[0], found[1]


# Each cell's n-th `(margin, id)`, by `(given k, true j)`.
CellLast = Dict[Tuple[int, int], Tuple[float, str]]


@dataclasses.dataclass(frozen=True)
class LabelRules:
  """The label-issue rules of one run (K classes).

  Attributes:
    method: `confident_learning`, `prune_by_noise_rate` or `early_aum`.
    thresholds: per-class self-confidence thresholds `(K,)`.
    label_counts: how many examples were given each class `(K,)`.
    confident_joint: the calibrated confident joint, given label by
      confidently guessed label (its non-zero cells).
    noise_rate: the estimated fraction of each given class that is
      mislabeled `(K,)`.
    prune_counts: `prune_by_noise_rate` (and `early_aum`'s suspects) only:
      how many issues each off-diagonal cell holds (those with any).
    cells: the same only: each cell's n-th `(margin, id)`.
    margin_bins: the same only: the bins of each cell's margin histogram
      (`confident.margin_bin_count`; 0: none).
    cut_bins: the same only: each cell's cut-off bin `(K, K)`
      (`confident.cut_bins`), or None without a histogram.
    non_finite_left_out: the examples left out of the thresholds, the joint
      and the ranking for a non-finite probability or loss (each is flagged
      `non_finite`).
    early_aum: `early_aum` only: what it decided; its issues replace the
      suspects (`issue_mask`) unless it fell back.
  """

  method: str
  thresholds: List[float]
  label_counts: List[int]
  confident_joint: confident.CellCounts
  noise_rate: List[float]
  prune_counts: Optional[confident.CellCounts] = None
  cells: CellLast = dataclasses.field(default_factory=dict)
  non_finite_left_out: int = 0
  margin_bins: int = 0
  cut_bins: Optional[List[List[int]]] = None
  early_aum: Optional[EarlyAumRule] = None

  @property
  def cuts(self) -> Optional[Tuple[np.ndarray, int]]:
    """`(cut_bins (K, K), margin_bins)` as `confident.CellCandidates` takes
    them, or None."""
    if self.cut_bins is None:
      return None
    return np.asarray(self.cut_bins), self.margin_bins

  @property
  def num_classes(self) -> int:
    return len(self.thresholds)

  @functools.cached_property
  def _cell_bounds(self) -> confident.CellBounds:
    # Computed once per object: a side input is one object for many batches.
    return confident.cell_bounds(self.cells, self.num_classes)

  def issue_mask(self, probs: np.ndarray, given: np.ndarray, ids: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Which examples are label issues, and the label each should have.

    Args:
      probs: `(N, K)` class probabilities.
      given: `(N,)` given labels.
      ids: `(N,)` ids (tie breaks inside a cell).

    Returns:
      `(mask (N,), suggested (N,))`; `suggested` is -1 where not an issue.
    """
    return confident.issue_mask(
        probs, given, ids, self.thresholds,
        cells=self._cell_bounds if self.method in _RANKS_CELLS else None)

  def early_aum_issues(self, arrays: ClassArrays, margins: np.ndarray,
                       id_hash: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Early AUM's issues, when it did not fall back.

    Args:
      arrays: the batch's class signals `(N,)`.
      margins: `(N, C)` the full model's margins at each checkpoint.
      id_hash: `(N,)` the ids' `data_map.sampling_keys`.

    Returns:
      `(mask (N,), suggested (N,))`: `suggested` is -1 where not an issue
      (as `confident.suggested_labels` else).
    """
    aum = self.early_aum.aum(margins)
    mask = self.early_aum.mask(aum, arrays.given, id_hash) & arrays.finite
    suggested = np.full(len(mask), -1)
    suggested[mask] = confident.suggested_labels(
        arrays.probs[mask], arrays.given[mask], np.asarray(self.thresholds))
    return mask, suggested

  def to_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict:
    """`label_issues` in `summary.json`, less `issues_by_pair` (which the
    flag counts give: `FlagCounts.pairs_to_dict`).

    Its size is bounded at any K: the joint in full only up to
    `DENSE_JOINT_CLASSES` classes, the per-class lists only up to
    `PER_CLASS_CLASSES` (null beyond: `label_issues/joint.parquet` and
    `classes.parquet` hold them), and always its `TOP_CELLS` largest cells
    off the diagonal.
    """
    k = self.num_classes
    per_class = k <= PER_CLASS_CLASSES
    joint = self.confident_joint
    return {"method": self.method,
            "num_classes": k,
            "thresholds": self.thresholds if per_class else None,
            "label_counts": self.label_counts if per_class else None,
            "confident_joint": (joint.to_dense().tolist()
                                if k <= DENSE_JOINT_CLASSES else None),
            "joint_cells": len(joint.cells),
            "joint_total": joint.total(),
            "top_cells": top_cells(joint, TOP_CELLS, class_names),
            "noise_rate": self.noise_rate if per_class else None,
            "non_finite_left_out": self.non_finite_left_out,
            **({} if self.early_aum is None else
               {"early_aum": self.early_aum.to_dict(per_class=per_class)})}


# Bounds on `label_issues` in `summary.json` (at most some 100 KB each).
DENSE_JOINT_CLASSES = 100
PER_CLASS_CLASSES = 1000
TOP_CELLS = 100


def top_cells(joint: confident.CellCounts, most: int,
              class_names: Optional[Sequence[str]] = None) -> List[Dict]:
  """The at most `most` off-diagonal cells of `joint` with the largest
  counts (ties: the smaller cell first), as `{given, suggested, count}`,
  with `given_name` and `suggested_name` when `class_names` are set."""
  off = joint.rows != joint.columns
  cells, counts = joint.cells[off], joint.counts[off]
  order = np.lexsort((cells, -counts))[:most]
  k = joint.num_classes
  found = []
  for cell, count in zip(cells[order].tolist(), counts[order].tolist()):
    entry = {"given": cell // k, "suggested": cell % k, "count": count}
    if class_names is not None:
      entry.update(given_name=class_names[cell // k],
                   suggested_name=class_names[cell % k])
    found.append(entry)
  return found


def class_columns(rules: LabelRules, issues_by_given: Sequence[int],
                  class_names: Optional[Sequence[str]] = None
                  ) -> Dict[str, list]:
  """Each class's numbers, as `label_issues/classes.parquet` holds them.

  Returns:
    Columns, each `(K,)`: `class`, `name` (with `class_names`),
    `label_count`, `threshold`, `noise_rate`, `label_issues` (flagged, by
    given label), and with early AUM `early_aum_suspects`,
    `early_aum_below_zero` (null when it fell back) and `early_aum_flagged`.
  """
  k = rules.num_classes
  columns = {"class": list(range(k))}
  if class_names is not None:
    columns["name"] = list(class_names)
  columns.update(label_count=list(rules.label_counts),
                 threshold=list(rules.thresholds),
                 noise_rate=list(rules.noise_rate),
                 label_issues=list(issues_by_given))
  if rules.early_aum is not None:
    for name, values in rules.early_aum.per_class().items():
      columns[f"early_aum_{name}"] = (list(values) if values is not None
                                      else [None] * k)
  return columns


def classes_table(columns: Dict[str, list]) -> pa.Table:
  """`label_issues/classes.parquet`, from `class_columns`."""
  types = {"class": pa.int64(), "name": pa.string(),
           "label_count": pa.int64(), "threshold": pa.float64(),
           "noise_rate": pa.float64(), "label_issues": pa.int64()}
  return pa.table({name: pa.array(values, types.get(name, pa.int64()))
                   for name, values in columns.items()})


def joint_table(joint: confident.CellCounts,
                class_names: Optional[Sequence[str]] = None) -> pa.Table:
  """`label_issues/joint.parquet`: the calibrated confident joint's non-zero
  cells, `given`, `suggested` (the confidently guessed label), `count`, and
  with `class_names` `given_name` and `suggested_name`."""
  columns = {"given": pa.array(joint.rows, pa.int64()),
             "suggested": pa.array(joint.columns, pa.int64()),
             "count": pa.array(joint.counts, pa.int64())}
  if class_names is not None:
    names = pa.array(list(class_names), pa.string())
    columns["given_name"] = names.take(columns["given"])
    columns["suggested_name"] = names.take(columns["suggested"])
  return pa.table(columns)


def pairs_table(pairs: Sequence[Tuple[LabelPair, int]],
                class_names: Optional[Sequence[str]] = None) -> pa.Table:
  """`label_issues/pairs.parquet`: the flagged label issues by (given,
  suggested) pair: `given`, `suggested`, `label_issues`, and with
  `class_names` `given_name` and `suggested_name`.

  Args:
    pairs: `(LabelPair, issues)`, in the order written
      (`FlagCounts.top_pairs()`: most first).
  """
  given = pa.array([p.given for p, _ in pairs], pa.int64())
  suggested = pa.array([p.suggested for p, _ in pairs], pa.int64())
  columns = {"given": given, "suggested": suggested,
             "label_issues": pa.array([n for _, n in pairs], pa.int64())}
  if class_names is not None:
    names = pa.array(list(class_names), pa.string())
    columns["given_name"] = names.take(given)
    columns["suggested_name"] = names.take(suggested)
  return pa.table(columns)
