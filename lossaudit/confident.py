"""Confident learning (Northcutt et al., 2021) in mergeable pieces.

The definitions follow cleanlab's `filter.find_label_issues`, split so that
no step needs all the predicted probabilities in one place:

1. per-class thresholds: the mean self-confidence of the examples given each
   class (sums and counts, merged across workers);
2. the confident joint: counts of (given label, confidently guessed label),
   with the thresholds as a side input; then cleanlab's calibration;
3. `confident_learning`: an example is an issue when its confident guess is
   not its given label; `prune_by_noise_rate`: within each cell (given k,
   true j) of the calibrated joint, the `n[k, j]` examples with the largest
   margin `p_j - p_k` (each worker keeps at most `n[k, j]` candidates a cell);
4. both: an example whose given label is also the model's prediction is never
   an issue.

Shapes: N examples, K classes; `probs` is `(N, K)`, `given` `(N,)`.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

# cleanlab's constants.
FLOATING_POINT_COMPARISON = 1e-6
CONFIDENT_THRESHOLDS_LOWER_BOUND = 2 * FLOATING_POINT_COMPARISON
MISSING_CLASS_THRESHOLD = 2.0
TINY_VALUE = 1e-100


def self_confidence_sums(probs: np.ndarray, given: np.ndarray,
                         num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
  """Per-class sums of self-confidence and counts `((K,), (K,))`."""
  self_confidence = probs[np.arange(len(given)), given].astype(np.float64)
  sums = np.bincount(given, weights=self_confidence, minlength=num_classes)
  counts = np.bincount(given, minlength=num_classes)
  return sums, counts


def confident_thresholds(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Per-class thresholds `(K,)`: mean self-confidence, 2 for absent classes."""
  with np.errstate(invalid="ignore", divide="ignore"):
    means = np.where(counts > 0, sums / np.maximum(counts, 1),
                     MISSING_CLASS_THRESHOLD)
  return np.clip(means, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)


def confident_guess(probs: np.ndarray, thresholds: np.ndarray
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """The confidently guessed label of each example.

  Returns:
    `(guess (N,), confident (N,))`: with several classes at or above their
    threshold, the argmax; with one, that class; `confident` is False when
    none is.
  """
  above = probs >= thresholds - FLOATING_POINT_COMPARISON
  num_above = above.sum(axis=1)
  guess = np.where(num_above > 1, probs.argmax(axis=1), above.argmax(axis=1))
  return guess, num_above > 0


def joint_counts(given: np.ndarray, guess: np.ndarray, confident: np.ndarray,
                 num_classes: int) -> np.ndarray:
  """Counts `(K, K)` of (given label, confident guess), confident rows only."""
  cells = given[confident] * num_classes + guess[confident]
  return np.bincount(cells, minlength=num_classes * num_classes).reshape(
      num_classes, num_classes)


def round_preserving_sum(values: np.ndarray) -> np.ndarray:
  """Rounds `(K,)` floats to ints whose sum is the rounded original sum."""
  floats = np.asarray(values, dtype=float)
  ints = floats.round()
  target = np.sum(floats).round()
  total = np.sum(ints).round()
  while abs(total - target) > FLOATING_POINT_COMPARISON:
    diff = np.round(target - total)
    step = -1 if diff < 0 else 1
    changes = min(int(abs(diff)), len(floats))
    for i in np.argsort(floats - ints)[::-step][:changes]:
      ints[i] += step
    total = np.sum(ints).round()
  return ints.astype(int)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
  return np.apply_along_axis(round_preserving_sum, 1, matrix).astype(int)


def calibrated_joint(raw: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
  """The calibrated confident joint `(K, K)` (rows: given, columns: true).

  Each row is rescaled to the number of examples given that label, the whole
  to the number of examples, and rounded keeping row totals.
  """
  joint = raw.astype(float).copy()
  np.fill_diagonal(joint, np.clip(joint.diagonal(), 1, None))
  calibrated = (joint.T / np.clip(joint.sum(axis=1), TINY_VALUE, None) *
                label_counts).T
  calibrated = (calibrated / np.clip(calibrated.sum(), TINY_VALUE, None) *
                label_counts.sum())
  return round_preserving_row_totals(calibrated)


def prune_counts(joint: np.ndarray, label_counts: np.ndarray,
                 min_per_class: int = 1) -> np.ndarray:
  """How many issues to take from each cell `(K, K)`, indexed [given, true].

  cleanlab's `_keep_at_least_n_per_class` on the transposed joint: each
  class keeps at least `min_per_class` examples, and a class with no more
  than that many examples gives none.
  """
  matrix = joint.T.astype(float)
  diagonal = np.diagonal(matrix)
  new_diagonal = np.maximum(diagonal, min_per_class)
  increase = new_diagonal - diagonal
  per_column = np.maximum(np.count_nonzero(matrix, axis=0) - 1.0, 1.0)
  matrix = matrix - increase / per_column
  matrix[matrix < 0] = 0
  np.fill_diagonal(matrix, new_diagonal)
  matrix = matrix.astype(int)  # cleanlab's _reduce_prune_counts at frac 1.
  prune = round_preserving_row_totals(matrix).astype(int).T
  prune[label_counts <= min_per_class] = 0
  return prune


def keeps_given_label(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
  """Whether the prediction is the given label (ties to given), `(N,)`."""
  bonus = probs.copy()  # In the probabilities' dtype, as cleanlab does.
  bonus[np.arange(len(given)), given] += FLOATING_POINT_COMPARISON
  return bonus.argmax(axis=1) == given


def margins(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
  """`p_j - p_given` for every class j `(N, K)`."""
  return probs - probs[np.arange(len(given)), given][:, None]


class CellCandidates:
  """Each cell's best `prune[k, j]` (margin, id) candidates seen so far.

  Entries below a full cell's current n-th margin are dropped as batches
  arrive, so after the first few batches little is kept; the buffer is
  compacted (sorted per cell, cut to n) when it grows, so memory stays
  within a small multiple of the number of issues, `sum(prune)`.

  Args:
    prune: `(K, K)` counts indexed [given, true], as `prune_counts`.
    buffer_limit: entries kept before compacting; default
      `max(4 * sum(prune), 2**18)`.
  """

  def __init__(self, prune: np.ndarray, buffer_limit: Optional[int] = None):
    self.prune = np.array(prune)
    k = len(self.prune)
    np.fill_diagonal(self.prune, 0)
    self._active = self.prune > 0
    # Margins are float32 differences of float32 probabilities; float32
    # floors compare exactly and halve the memory traffic.
    self.floor = np.full((k, k), -np.inf, dtype=np.float32)
    self._limit = buffer_limit or max(4 * int(self.prune.sum()), 1 << 18)
    self._parts = []
    self._size = 0

  def add(self, probs: np.ndarray, given: np.ndarray, ids: np.ndarray):
    """Adds a batch: `probs (N, K)`, `given (N,)`, `ids (N,)`."""
    k = len(self.prune)
    m = margins(probs, given)
    keep = self._active[given] & (m >= self.floor[given])
    rows, cols = np.nonzero(keep)
    if rows.size:
      self._parts.append((given[rows] * k + cols, m[rows, cols].astype(
          np.float64), ids[rows]))
      self._size += rows.size
      if self._size > self._limit:
        self.compact()

  def compact(self) -> None:
    if not self._parts:
      return
    cells = np.concatenate([p[0] for p in self._parts])
    values = np.concatenate([p[1] for p in self._parts])
    ids = np.concatenate([p[2] for p in self._parts])
    order = np.lexsort((ids, -values, cells))
    cells, values, ids = cells[order], values[order], ids[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    lengths = np.diff(np.r_[starts, cells.size])
    rank = np.arange(cells.size) - np.repeat(starts, lengths)
    keep = rank < self.prune.reshape(-1)[cells]
    cells, values, ids = cells[keep], values[keep], ids[keep]
    self._parts = [(cells, values, ids)]
    self._size = cells.size
    full = np.flatnonzero(np.bincount(cells, minlength=self.prune.size) ==
                          self.prune.reshape(-1))
    last = np.r_[cells[1:] != cells[:-1], True]
    nth = dict(zip(cells[last], values[last]))
    flat = self.floor.reshape(-1)
    for cell in full:
      if self.prune.reshape(-1)[cell] > 0:
        flat[cell] = nth[cell]

  def cells(self) -> Iterator[Tuple[Tuple[int, int], np.ndarray, np.ndarray]]:
    """Yields `((k, j), margins, ids)` per cell, largest margin first."""
    self.compact()
    if not self._parts:
      return
    cells, values, ids = self._parts[0]
    k = len(self.prune)
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], cells.size]):
      cell = int(cells[lo])
      yield (cell // k, cell % k), values[lo:hi], ids[lo:hi]


def cell_bounds(cell_last: Dict[Tuple[int, int], Tuple[float, str]],
                num_classes: int) -> Tuple[np.ndarray, Dict]:
  """Each cell's n-th margin as a `(K, K)` array (+inf: no cell), and ids."""
  if isinstance(cell_last, tuple):
    return cell_last
  last = np.full((num_classes, num_classes), np.inf, dtype=np.float32)
  last_id = {}
  for (g, j), (margin, id_) in cell_last.items():
    last[g, j] = margin
    last_id[(g, j)] = id_
  return last, last_id


def in_cell_top(probs: np.ndarray, given: np.ndarray, ids: np.ndarray,
                cell_last) -> np.ndarray:
  """Whether each example is within one of its cells' top n `(N,)`.

  Args:
    cell_last: the n-th `(margin, id)` of each cell `(given k, true j)`, or
      `cell_bounds` of it.
  """
  last, last_id = cell_bounds(cell_last, probs.shape[1])
  m = margins(probs, given)
  bound = last[given]
  hit = (m > bound).any(axis=1)
  for row, j in zip(*np.nonzero(m == bound)):
    if ids[row] <= last_id[(int(given[row]), int(j))]:
      hit[row] = True
  return hit


def suggested_labels(probs: np.ndarray, given: np.ndarray,
                     thresholds: np.ndarray) -> np.ndarray:
  """The confident guess, or else the most likely other class `(N,)`."""
  guess, confident = confident_guess(probs, thresholds)
  others = probs.astype(np.float64, copy=True)
  others[np.arange(len(given)), given] = -np.inf
  fallback = others.argmax(axis=1)
  return np.where(confident & (guess != given), guess, fallback)


def noise_rates(joint: np.ndarray) -> np.ndarray:
  """Estimated fraction of each given class that is mislabeled `(K,)`."""
  totals = joint.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    rates = 1.0 - joint.diagonal() / totals
  return np.where(totals > 0, rates, 0.0)


def issue_mask(probs: np.ndarray, given: np.ndarray, ids: np.ndarray,
               thresholds: Sequence[float], cells=None
               ) -> Tuple[np.ndarray, np.ndarray]:
  """Which examples are label issues, and the label each should have.

  Args:
    probs: `(N, K)` class probabilities.
    given: `(N,)` given labels.
    ids: `(N,)` ids (tie breaks inside a cell).
    thresholds: per-class self-confidence thresholds `(K,)`.
    cells: `prune_by_noise_rate`: each cell's n-th `(margin, id)`, or
      `cell_bounds` of it; None (the default): `confident_learning`.

  Returns:
    `(mask (N,), suggested (N,))`; `suggested` is -1 where not an issue.
  """
  thresholds = np.asarray(thresholds)
  if cells is None:
    guess, ok = confident_guess(probs, thresholds)
    mask = ok & (guess != given)
  else:
    mask = in_cell_top(probs, given, ids, cells)
  rows = np.flatnonzero(mask)
  mask[rows[keeps_given_label(probs[rows], given[rows])]] = False
  suggested = np.full(len(given), -1)
  suggested[mask] = suggested_labels(probs[mask], given[mask], thresholds)
  return mask, suggested
