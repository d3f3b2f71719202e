"""`LabelRules`: what confident learning found, as the flag stage applies it.

`FindLabelIssues` (lossaudit/transforms/label_issues.py) computes the rules
in passes over the scored batches; `FlagExamples` applies them to each batch
(`issue_mask`), and `summary.json` records them (`to_dict`). See
`lossaudit/confident.py` for the math.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from lossaudit import confident
from lossaudit.early_aum import EARLY_AUM, EarlyAumRule
from lossaudit.spec import (
  CHECKPOINT_CORRECT_COLUMN,
  CHECKPOINT_MARGINS_COLUMN,
  PROBS_COLUMN,
)

if TYPE_CHECKING:
  import pyarrow as pa

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
    confident_joint: the calibrated confident joint `(K, K)`, given label by
      confidently guessed label.
    noise_rate: the estimated fraction of each given class that is
      mislabeled `(K,)`.
    prune_counts: `prune_by_noise_rate` (and `early_aum`'s suspects) only:
      how many issues each cell `(K, K)` holds.
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
  confident_joint: List[List[int]]
  noise_rate: List[float]
  prune_counts: Optional[List[List[int]]] = None
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
  def _cell_bounds(self) -> Tuple[np.ndarray, Dict]:
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

  def to_dict(self) -> Dict:
    """`label_issues` in `summary.json`, less `issues_by_pair` (which the
    flag counts give: `FlagCounts.pairs_to_dict`)."""
    return {"method": self.method, "thresholds": self.thresholds,
            "label_counts": self.label_counts,
            "confident_joint": self.confident_joint,
            "noise_rate": self.noise_rate,
            "non_finite_left_out": self.non_finite_left_out,
            **({} if self.early_aum is None else
               {"early_aum": self.early_aum.to_dict()})}
