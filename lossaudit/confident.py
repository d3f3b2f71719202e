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
   margin `p_j - p_k`. The joint's pass also counts each cell's margins in
   a few bins (`margin_histogram`), so each cell's cut-off bin is known
   (`cut_bins`) before the ranking pass, which keeps only the rows at or
   above it, at most `n[k, j]` a cell per worker (`CellCandidates`);
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

# `flag.label_issues`: the methods of cleanlab's `find_label_issues`.
LABEL_ISSUE_METHODS = ("confident_learning", "prune_by_noise_rate")


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


# A cell's margin histogram has at most MAX_MARGIN_BINS bins, and all K²
# together at most MARGIN_HISTOGRAM_BUDGET counts (128 KB: each bundle of the
# joint's pass ships them); with under MIN_MARGIN_BINS a cell (over 64
# classes), there is none, and only each bundle's own top n bounds what it
# emits. Measured at 1M rows × 10 classes: 32 bins put the cut-offs within
# about 5% of the issues (64: 2%, 16: 22%).
MAX_MARGIN_BINS = 32
MARGIN_HISTOGRAM_BUDGET = 1 << 14
MIN_MARGIN_BINS = 4


def margin_bin_count(num_classes: int) -> int:
  """Bins of each cell's margin histogram for K classes (0: none)."""
  bins = min(MAX_MARGIN_BINS, MARGIN_HISTOGRAM_BUDGET // num_classes**2)
  return bins if bins >= MIN_MARGIN_BINS else 0


def margin_bins(m: np.ndarray, bins: int) -> np.ndarray:
  """The bin `(N, K)` of each margin `(N, K)`: `bins` equal widths over
  [-1, 1], never lower for a larger margin (each step is monotonic)."""
  scaled = (m.astype(np.float32) + np.float32(1)) * np.float32(bins / 2)
  return np.clip(scaled, 0, bins - 1).astype(np.int64)


def margin_histogram(probs: np.ndarray, given: np.ndarray, bins: int,
                     chunk: int = 1 << 18) -> np.ndarray:
  """How many rows of each cell `(given k, true j)` fall in each margin bin
  `(K, K, bins)`: a row given k counts once in every cell (k, j). Counted
  `chunk // K` rows at a time, so a large batch takes little more memory."""
  k = probs.shape[1]
  counts = np.zeros(k * k * bins, dtype=np.int64)
  step = max(1, chunk // k)
  for lo in range(0, len(given), step):
    part = given[lo:lo + step]
    cells = part[:, None] * k + np.arange(k)
    codes = cells * bins + margin_bins(margins(probs[lo:lo + step], part),
                                       bins)
    counts += np.bincount(codes.reshape(-1), minlength=counts.size)
  return counts.reshape(k, k, bins)


def cut_bins(histogram: np.ndarray, prune: np.ndarray) -> np.ndarray:
  """Each cell's cut-off bin `(K, K)`: the highest whose rows, with those of
  the bins above it, number at least `prune[k, j]` (0 when the cell has
  fewer). A cell's top n all lie at or above it, and at most
  `prune[k, j] - 1` plus the rows of the cut-off bin do.

  Args:
    histogram: `(K, K, bins)` as `margin_histogram`, over all rows.
    prune: `(K, K)` counts, as `prune_counts`.
  """
  at_or_above = np.cumsum(histogram[..., ::-1], axis=-1)[..., ::-1]
  enough = at_or_above >= np.asarray(prune)[..., None]
  return np.maximum(enough.sum(axis=-1) - 1, 0)


class CellCandidates:
  """Each cell's best `prune[k, j]` (margin, id) candidates seen so far.

  Only rows at or above a cell's cut-off bin (`cut_bins`) are candidates of
  it. Entries below a full cell's current n-th margin are dropped as batches
  arrive, so after the first few batches little is kept; the buffer is
  compacted (sorted per cell, cut to n) when it grows.

  Bounds (K classes, n = `prune[k, j]`, S = `sum(prune)` off the diagonal):

  - emitted by a bundle: `cells()` yields at most n candidates a cell, so at
    most S, the number of rows the cells keep in the end, whatever the
    bundle's size. Ties are broken by id (a total order), so the bundle's
    top n holds every row of the cell's overall top n that it saw.
  - emitted by all bundles together, with `cuts`: at most the rows at or
    above the cell's cut-off bin, fewer than n plus that bin's rows, however
    many bundles there are.
  - held: at most `buffer_limit` (row, cell) pairs plus one chunk's, as a
    large batch is added `buffer_limit // K` rows at a time.

  Args:
    prune: `(K, K)` counts indexed [given, true], as `prune_counts`.
    buffer_limit: entries kept before compacting; default
      `max(4 * S, 2**18)`.
    cuts: `(cut_bins (K, K), bins)`: each cell's cut-off bin of
      `margin_bins(., bins)`, over all rows; None: every row is a candidate.
  """

  def __init__(self, prune: np.ndarray, buffer_limit: Optional[int] = None,
               cuts: Optional[Tuple[np.ndarray, int]] = None):
    self.prune = np.array(prune)
    self._cuts = None if cuts is None else (np.asarray(cuts[0]), cuts[1])
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
    step = max(1, self._limit // len(self.prune))
    for lo in range(0, len(given), step):
      self._add(probs[lo:lo + step], given[lo:lo + step], ids[lo:lo + step])

  def _add(self, probs: np.ndarray, given: np.ndarray, ids: np.ndarray):
    k = len(self.prune)
    m = margins(probs, given)
    keep = self._active[given] & (m >= self.floor[given])
    if self._cuts is not None:
      cut, bins = self._cuts
      keep &= margin_bins(m, bins) >= cut[given]
    rows, cols = np.nonzero(keep)
    if rows.size:
      self._parts.append((given[rows] * k + cols, m[rows, cols].astype(
          np.float64), ids[rows]))
      self._size += rows.size
      if self._size > self._limit:
        self.compact()

  def compact(self) -> None:
    """Cuts each cell to its best n and raises the floors of full cells."""
    if not self._parts:
      return
    cells = np.concatenate([p[0] for p in self._parts])
    values = np.concatenate([p[1] for p in self._parts])
    ids = np.concatenate([p[2] for p in self._parts])
    order = np.lexsort((ids, -values, cells))
    cells, values, ids = cells[order], values[order], ids[order]
    keep = ranks_within(cells) < self.prune.reshape(-1)[cells]
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


def ranks_within(groups: np.ndarray) -> np.ndarray:
  """Each element's rank `(M,)` within its run of equal `groups` `(M,)`
  (sorted by group): 0 for the first of a group."""
  if not groups.size:
    return np.zeros(0, np.int64)
  starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
  lengths = np.diff(np.r_[starts, groups.size])
  return np.arange(groups.size) - np.repeat(starts, lengths)


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
