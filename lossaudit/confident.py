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

Shapes: N examples, K classes; `probs` is `(N, K)`, `given` `(N,)`. The
joint and the per-cell counts are sparse (`CellCounts`): at K = 10,000 a
dense K×K array is 800 MB, and a joint has about K + (label issues) non-zero
cells. Each sparse step gives bit for bit what cleanlab's dense one does.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

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


@dataclasses.dataclass(frozen=True)
class CellCounts:
  """A `(K, K)` matrix of counts by its non-zero cells, rows first.

  Attributes:
    num_classes: K.
    cells: `(M,)` int64 cell codes `row * K + column`, sorted, unique.
    counts: `(M,)` their counts (int64; float64 before rounding).
  """

  num_classes: int
  cells: np.ndarray
  counts: np.ndarray

  @classmethod
  def empty(cls, num_classes: int) -> "CellCounts":
    return cls(num_classes, np.zeros(0, np.int64), np.zeros(0, np.int64))

  @classmethod
  def of_pairs(cls, rows: np.ndarray, columns: np.ndarray,
               num_classes: int) -> "CellCounts":
    """How often each `(rows[i], columns[i])` occurs `(N,)`."""
    cells, counts = np.unique(
        np.asarray(rows, np.int64) * num_classes + columns,
        return_counts=True)
    return cls(num_classes, cells, counts.astype(np.int64))

  @classmethod
  def from_dense(cls, matrix: np.ndarray) -> "CellCounts":
    """The non-zero cells of a `(K, K)` matrix."""
    matrix = np.asarray(matrix)
    cells = np.flatnonzero(matrix)
    return cls(len(matrix), cells.astype(np.int64), matrix.reshape(-1)[cells])

  def merge(self, other: "CellCounts") -> "CellCounts":
    """Both, summed cell by cell."""
    cells, inverse = np.unique(np.concatenate([self.cells, other.cells]),
                               return_inverse=True)
    counts = np.zeros(len(cells), np.result_type(self.counts, other.counts))
    np.add.at(counts, inverse, np.concatenate([self.counts, other.counts]))
    return CellCounts(self.num_classes, cells, counts)

  @property
  def rows(self) -> np.ndarray:
    """Each cell's row `(M,)` (the given label)."""
    return self.cells // self.num_classes

  @property
  def columns(self) -> np.ndarray:
    """Each cell's column `(M,)`."""
    return self.cells % self.num_classes

  def row_sums(self) -> np.ndarray:
    """`(K,)`, exact for integer counts below 2**53."""
    return np.bincount(self.rows, weights=self.counts,
                       minlength=self.num_classes)

  def diagonal(self) -> np.ndarray:
    """`(K,)` in the counts' dtype."""
    diagonal = np.zeros(self.num_classes, self.counts.dtype)
    on = self.rows == self.columns
    diagonal[self.rows[on]] = self.counts[on]
    return diagonal

  def nonzero(self) -> "CellCounts":
    """Without the cells that count 0."""
    keep = self.counts != 0
    return CellCounts(self.num_classes, self.cells[keep], self.counts[keep])

  def to_dense(self) -> np.ndarray:
    """`(K, K)`: for small K only."""
    dense = np.zeros(self.num_classes ** 2, self.counts.dtype)
    dense[self.cells] = self.counts
    return dense.reshape(self.num_classes, self.num_classes)

  def total(self) -> int:
    return int(self.counts.sum())


def joint_counts(given: np.ndarray, guess: np.ndarray, confident: np.ndarray,
                 num_classes: int) -> CellCounts:
  """Counts of (given label, confident guess), confident rows only."""
  return CellCounts.of_pairs(given[confident], guess[confident], num_classes)


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


# Rows of a sparse matrix made dense at a time, and the size of the blocks
# `dense_order_sum` adds densely: small enough to hold at any K.
_DENSE_BLOCK = 1 << 20


def dense_order_sum(positions: np.ndarray, values: np.ndarray,
                    length: int) -> float:
  """`np.sum` of a float64 array of `length` zeros but `values` `(M,)` at
  `positions` `(M,)` (sorted, unique), bit for bit, without building it.

  numpy adds a contiguous float64 array pairwise, splitting it in halves
  (rounded down to a multiple of 8) down to blocks of at most 128: the
  order, and so the rounding, depends on where each value sits. A part
  with no value adds 0.0, which changes no sum; a part of at most
  `_DENSE_BLOCK` is made dense and added by numpy itself.
  """
  def part(lo: int, n: int) -> float:
    a, b = np.searchsorted(positions, [lo, lo + n])
    if a == b:
      return 0.0
    if n <= _DENSE_BLOCK:
      dense = np.zeros(n)
      dense[positions[a:b] - lo] = values[a:b]
      return np.sum(dense)
    half = n // 2
    half -= half % 8
    return part(lo, half) + part(lo + half, n - half)

  return float(part(0, length))


def calibrated_joint(raw: CellCounts, label_counts: np.ndarray
                     ) -> CellCounts:
  """The calibrated confident joint (rows: given, columns: true).

  Each row is rescaled to the number of examples given that label, the whole
  to the number of examples, and rounded keeping row totals: cleanlab's
  `calibrate_confident_joint` on `compute_confident_joint`'s counts (whose
  diagonal is at least 1), made dense a block of rows at a time.
  """
  k = raw.num_classes
  label_counts = np.asarray(label_counts)
  diagonal = CellCounts(k, np.arange(k, dtype=np.int64) * (k + 1),
                        np.zeros(k, np.int64))
  joint = raw.merge(diagonal)
  on = joint.rows == joint.columns
  counts = joint.counts.astype(float)
  counts[on] = np.clip(counts[on], 1, None)
  rows = joint.rows
  row_sums = np.bincount(rows, weights=counts, minlength=k)
  # cleanlab's `(cj.T / row_sums * label_counts).T`, element by element.
  scaled = counts / np.clip(row_sums, TINY_VALUE, None)[rows] * (
      label_counts[rows])
  # That array is row-major (a transpose of an operation on a transpose):
  # numpy adds it in the cells' order.
  total = dense_order_sum(joint.cells, scaled, k * k)
  scaled = scaled / np.clip(total, TINY_VALUE, None) * label_counts.sum()
  return _round_rows(CellCounts(k, joint.cells, scaled)).nonzero()


def _round_rows(matrix: CellCounts) -> CellCounts:
  """`round_preserving_row_totals` of the dense matrix, a block of rows at
  a time (its ties broken exactly as on the dense rows)."""
  k = matrix.num_classes
  step = max(1, _DENSE_BLOCK // k)
  rows = matrix.rows
  cells, counts = [], []
  for lo in range(0, k, step):
    hi = min(k, lo + step)
    a, b = np.searchsorted(rows, [lo, hi])
    block = np.zeros((hi - lo) * k)
    block[matrix.cells[a:b] - lo * k] = matrix.counts[a:b]
    rounded = round_preserving_row_totals(block.reshape(hi - lo, k))
    found = np.flatnonzero(rounded)
    cells.append(found + lo * k)
    counts.append(rounded.reshape(-1)[found])
  return CellCounts(k, np.concatenate(cells).astype(np.int64),
                    np.concatenate(counts).astype(np.int64))


def prune_counts(joint: CellCounts, label_counts: np.ndarray,
                 min_per_class: int = 1) -> CellCounts:
  """How many issues to take from each cell, indexed [given, true]: the
  off-diagonal cells with at least one.

  cleanlab's `_keep_at_least_n_per_class` on the transposed joint: each
  class keeps at least `min_per_class` examples, and a class with no more
  than that many examples gives none. Its final rounding leaves integer
  counts as they are, so it is left out.
  """
  k = joint.num_classes
  rows, columns = joint.rows, joint.columns
  diagonal = joint.diagonal().astype(float)
  increase = np.maximum(diagonal, min_per_class) - diagonal
  # Per given class, its non-zero cells but one (at least 1).
  per_row = np.maximum(np.bincount(rows[joint.counts != 0], minlength=k)
                       - 1.0, 1.0)
  off = rows != columns
  values = joint.counts[off] - increase[rows[off]] / per_row[rows[off]]
  values[values < 0] = 0
  prune = values.astype(int)
  prune[np.asarray(label_counts)[rows[off]] <= min_per_class] = 0
  keep = prune > 0
  return CellCounts(k, joint.cells[off][keep], prune[keep].astype(np.int64))


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


def cut_bins(histogram: np.ndarray, prune: CellCounts) -> np.ndarray:
  """Each cell's cut-off bin `(K, K)`: the highest whose rows, with those of
  the bins above it, number at least `prune[k, j]` (0 when the cell has
  fewer). A cell's top n all lie at or above it, and at most
  `prune[k, j] - 1` plus the rows of the cut-off bin do.

  Args:
    histogram: `(K, K, bins)` as `margin_histogram`, over all rows (only
      for the few classes `margin_bin_count` gives bins).
    prune: counts as `prune_counts`.
  """
  at_or_above = np.cumsum(histogram[..., ::-1], axis=-1)[..., ::-1]
  enough = at_or_above >= prune.to_dense()[..., None]
  return np.maximum(enough.sum(axis=-1) - 1, 0)


class CellIndex(NamedTuple):
  """Cells `(M,)` grouped by row, to find a row's cells in O(its cells).

  Attributes:
    starts: `(K + 1,)` where each row's cells start.
    columns: `(M,)` each cell's column.
  """

  starts: np.ndarray
  columns: np.ndarray

  @classmethod
  def of(cls, cells: np.ndarray, num_classes: int) -> "CellIndex":
    """`cells`: sorted codes `row * K + column`."""
    rows = cells // num_classes
    return cls(np.searchsorted(rows, np.arange(num_classes + 1)),
               cells % num_classes)

  def pairs(self, given: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`(example (P,), cell (P,))`: each example with each cell of its row."""
    first = self.starts[given]
    sizes = self.starts[given + 1] - first
    example = np.repeat(np.arange(len(given)), sizes)
    within = np.arange(len(example)) - np.repeat(np.cumsum(sizes) - sizes,
                                                 sizes)
    return example, first[example] + within


def pair_margins(probs: np.ndarray, given: np.ndarray, example: np.ndarray,
                 column: np.ndarray) -> np.ndarray:
  """`p_j - p_given` `(P,)` of example `example[i]` and class `column[i]`,
  in the probabilities' dtype (as `margins`)."""
  return probs[example, column] - probs[example, given[example]]


class CellCandidates:
  """Each cell's best `prune[k, j]` (margin, id) candidates seen so far.

  Only rows at or above a cell's cut-off bin (`cut_bins`) are candidates of
  it. Entries below a full cell's current n-th margin are dropped as batches
  arrive, so after the first few batches little is kept; the buffer is
  compacted (sorted per cell, cut to n) when it grows. A row is looked at
  only in the cells of its given label that keep any: O(those) per row,
  never O(K).

  Bounds (K classes, n = `prune[k, j]`, S = `sum(prune)` off the diagonal):

  - emitted by a bundle: `cells()` yields at most n candidates a cell, so at
    most S, the number of rows the cells keep in the end, whatever the
    bundle's size. Ties are broken by id (a total order), so the bundle's
    top n holds every row of the cell's overall top n that it saw.
  - emitted by all bundles together, with `cuts`: at most the rows at or
    above the cell's cut-off bin, fewer than n plus that bin's rows, however
    many bundles there are.
  - held: at most `buffer_limit` (row, cell) pairs plus one chunk's, as a
    large batch is added `buffer_limit // (cells a row has)` rows at a time.

  Args:
    prune: counts indexed [given, true], as `prune_counts`.
    buffer_limit: entries kept before compacting; default
      `max(4 * S, 2**18)`.
    cuts: `(cut_bins (K, K), bins)`: each cell's cut-off bin of
      `margin_bins(., bins)`, over all rows; None: every row is a candidate.
  """

  def __init__(self, prune: CellCounts, buffer_limit: Optional[int] = None,
               cuts: Optional[Tuple[np.ndarray, int]] = None):
    k = prune.num_classes
    active = (prune.rows != prune.columns) & (prune.counts > 0)
    self._cells = prune.cells[active]
    self._n = prune.counts[active].astype(np.int64)
    self._index = CellIndex.of(self._cells, k)
    self._k = k
    self._cuts = None if cuts is None else (
        np.asarray(cuts[0]).reshape(-1)[self._cells], cuts[1])
    # Margins are float32 differences of float32 probabilities; float32
    # floors compare exactly and halve the memory traffic.
    self._floor = np.full(len(self._cells), -np.inf, dtype=np.float32)
    self._limit = buffer_limit or max(4 * int(self._n.sum()), 1 << 18)
    self._widest = int(np.diff(self._index.starts).max(initial=0))
    self._parts = []
    self._size = 0

  def add(self, probs: np.ndarray, given: np.ndarray, ids: np.ndarray):
    """Adds a batch: `probs (N, K)`, `given (N,)`, `ids (N,)`."""
    step = max(1, self._limit // max(1, self._widest))
    for lo in range(0, len(given), step):
      self._add(probs[lo:lo + step], given[lo:lo + step], ids[lo:lo + step])

  def _add(self, probs: np.ndarray, given: np.ndarray, ids: np.ndarray):
    example, cell = self._index.pairs(given)
    m = pair_margins(probs, given, example, self._index.columns[cell])
    keep = m >= self._floor[cell]
    if self._cuts is not None:
      cut, bins = self._cuts
      keep &= margin_bins(m, bins) >= cut[cell]
    if keep.any():
      self._parts.append((cell[keep], m[keep].astype(np.float64),
                          ids[example[keep]]))
      self._size += int(keep.sum())
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
    keep = ranks_within(cells) < self._n[cells]
    cells, values, ids = cells[keep], values[keep], ids[keep]
    self._parts = [(cells, values, ids)]
    self._size = cells.size
    last = np.r_[cells[1:] != cells[:-1], True]
    full = last & (np.bincount(cells, minlength=len(self._n))[cells]
                   == self._n[cells])
    self._floor[cells[full]] = values[full]

  def cells(self) -> Iterator[Tuple[Tuple[int, int], int, np.ndarray,
                                    np.ndarray]]:
    """Yields `((k, j), n, margins, ids)` per cell, largest margin first."""
    self.compact()
    if not self._parts:
      return
    cells, values, ids = self._parts[0]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], cells.size]):
      code = int(self._cells[cells[lo]])
      yield ((code // self._k, code % self._k), int(self._n[cells[lo]]),
             values[lo:hi], ids[lo:hi])


def ranks_within(groups: np.ndarray) -> np.ndarray:
  """Each element's rank `(M,)` within its run of equal `groups` `(M,)`
  (sorted by group): 0 for the first of a group."""
  if not groups.size:
    return np.zeros(0, np.int64)
  starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
  lengths = np.diff(np.r_[starts, groups.size])
  return np.arange(groups.size) - np.repeat(starts, lengths)


class CellBounds(NamedTuple):
  """Each ranked cell's n-th `(margin, id)`, grouped by given label.

  Attributes:
    index: the cells (`CellIndex`).
    margins: `(M,)` float32 n-th margins.
    ids: `(M,)` their ids.
  """

  index: CellIndex
  margins: np.ndarray
  ids: np.ndarray


def cell_bounds(cell_last: Dict[Tuple[int, int], Tuple[float, str]],
                num_classes: int) -> CellBounds:
  """`CellBounds` of `{(k, j): (n-th margin, its id)}`."""
  if isinstance(cell_last, CellBounds):
    return cell_last
  keys = sorted(cell_last)
  cells = np.array([g * num_classes + j for g, j in keys], np.int64)
  return CellBounds(
      CellIndex.of(cells, num_classes),
      np.array([cell_last[key][0] for key in keys], np.float32),
      np.array([cell_last[key][1] for key in keys] or [], dtype=object))


def in_cell_top(probs: np.ndarray, given: np.ndarray, ids: np.ndarray,
                cell_last) -> np.ndarray:
  """Whether each example is within one of its cells' top n `(N,)`.

  Args:
    cell_last: the n-th `(margin, id)` of each cell `(given k, true j)`, or
      `cell_bounds` of it.
  """
  bounds = cell_bounds(cell_last, probs.shape[1])
  example, cell = bounds.index.pairs(given)
  m = pair_margins(probs, given, example, bounds.index.columns[cell])
  bound = bounds.margins[cell]
  hit = np.zeros(len(given), bool)
  hit[example[m > bound]] = True
  for e in np.flatnonzero(m == bound):
    if ids[example[e]] <= bounds.ids[cell[e]]:
      hit[example[e]] = True
  return hit


def suggested_labels(probs: np.ndarray, given: np.ndarray,
                     thresholds: np.ndarray) -> np.ndarray:
  """The confident guess, or else the most likely other class `(N,)`."""
  guess, confident = confident_guess(probs, thresholds)
  others = probs.astype(np.float64, copy=True)
  others[np.arange(len(given)), given] = -np.inf
  fallback = others.argmax(axis=1)
  return np.where(confident & (guess != given), guess, fallback)


def noise_rates(joint: CellCounts) -> np.ndarray:
  """Estimated fraction of each given class that is mislabeled `(K,)`."""
  totals = joint.row_sums()
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
