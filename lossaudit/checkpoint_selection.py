"""Early stopping after the fact: each fold's checkpoint by held-out loss.

With `model.folds`, `model.checkpoints` and `model.select_checkpoint:
heldout_loss`, every checkpoint of fold k scores the rows whose fold is k
(its held-out rows) in the one scoring pass. `L[k, c]`, the mean loss of
checkpoint c of fold k over those rows, is the held-out (noisy) loss a
training loop with early stopping would have watched; fold k's rows then
take their probabilities, losses and class signals from `argmin_c L[k, c]`
(the first checkpoint on a tie), and every later rule reads those.

A row's loss counts when it is finite; a checkpoint with more non-finite
losses than another checkpoint of its fold (it diverged on rows the other
scores) is never selected. Shapes: K folds, C checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import List, NamedTuple

import numpy as np

from lossaudit.merging import SummedArrays


@dataclasses.dataclass(frozen=True)
class HeldoutSums(SummedArrays):
  """Held-out losses per (fold, checkpoint), merged by element-wise sums.

  Attributes:
    sums: the finite losses summed `(K, C)` float64.
    counts: how many were finite `(K, C)`.
    non_finite: how many were not `(K, C)`.
  """

  sums: np.ndarray
  counts: np.ndarray
  non_finite: np.ndarray

  @classmethod
  def empty(cls, num_folds: int, num_checkpoints: int) -> "HeldoutSums":
    shape = (num_folds, num_checkpoints)
    return cls(np.zeros(shape), np.zeros(shape, np.int64),
               np.zeros(shape, np.int64))


def heldout_sums(loss: np.ndarray, fold: np.ndarray, checkpoint: np.ndarray,
                 num_folds: int, num_checkpoints: int) -> HeldoutSums:
  """The `HeldoutSums` of scored rows.

  Args:
    loss: `(N,)` each row's loss at one checkpoint of its fold.
    fold: `(N,)` the row's (held-out) fold, in `[0, K)`.
    checkpoint: `(N,)` which checkpoint gave `loss`, in `[0, C)`.
    num_folds: K.
    num_checkpoints: C.
  """
  cells = fold.astype(np.int64) * num_checkpoints + checkpoint
  size = num_folds * num_checkpoints
  finite = np.isfinite(loss)
  shape = (num_folds, num_checkpoints)
  return HeldoutSums(
      np.bincount(cells[finite], weights=loss[finite].astype(np.float64),
                  minlength=size).reshape(shape),
      np.bincount(cells[finite], minlength=size).reshape(shape),
      np.bincount(cells[~finite], minlength=size).reshape(shape))


class CheckpointSelection(NamedTuple):
  """Each fold's checkpoint, and the held-out losses it was picked by.

  Attributes:
    selected: `(K,)` the index of each fold's checkpoint, oldest first.
    heldout_loss: `(K, C)` the mean finite held-out loss of each; None
      where a fold has no finite loss at that checkpoint.
    rows: `(K,)` the held-out rows of each fold.
  """

  selected: List[int]
  heldout_loss: List[List[float]]
  rows: List[int]


def select(sums: HeldoutSums) -> CheckpointSelection:
  """Per fold, the checkpoint with the lowest mean held-out loss.

  Ties (and a fold with no rows) go to the first checkpoint; checkpoints
  with more non-finite losses than the fold's fewest are not candidates.
  """
  with np.errstate(invalid="ignore", divide="ignore"):
    means = np.where(sums.counts > 0, sums.sums / np.maximum(sums.counts, 1),
                     np.nan)
  fewest = sums.non_finite.min(axis=1, keepdims=True)
  candidate = np.where((sums.non_finite == fewest) & ~np.isnan(means), means,
                       np.inf)
  selected = np.argmin(candidate, axis=1)
  return CheckpointSelection(
      selected=selected.astype(int).tolist(),
      heldout_loss=[[None if np.isnan(v) else float(v) for v in row]
                    for row in means],
      rows=(sums.counts + sums.non_finite)[:, 0].astype(int).tolist())


def selected_rows(fold: np.ndarray, checkpoint: np.ndarray,
                  selected: List[int]) -> np.ndarray:
  """`(N,)` whether each scored row is its fold's selected checkpoint's."""
  return np.asarray(selected, np.int64)[fold] == checkpoint
