"""Early AUM: label issues from out-of-sample probabilities and the early
checkpoints of a model trained on every row (`flag.label_issues:
early_aum`).

Per row: `y` the given label, `oof` its out-of-sample probabilities, and
for each checkpoint c of the full model (`model.dynamics_path`),
`margin[c]` (the given label's log-probability minus the largest other's)
and `correct[c]` (whether its most probable class is `y`). Then:

1. the suspects are confident learning's `prune_by_noise_rate` issues on
   `oof`;
2. `fit[c]` is the fraction of suspects checkpoint c predicts as given,
   `accuracy[c]` the fraction of all rows, `oof_accuracy` that of `oof`'s
   argmax;
3. the usable checkpoints have `fit[c] <= flag.early_aum_max_fit` and
   `accuracy[c] >= oof_accuracy`: they learned the data, not yet its
   noise. With none, the answer is the suspects (the rule falls back);
4. `a`, the early AUM, is the mean of `margin` over the usable checkpoints;
5. in each given class j, the `n_j = min(#{y = j, a < 0}, #{y = j,
   suspect})` rows with the smallest `a` are flagged, ties broken by the
   smaller id hash (`data_map.sampling_keys`).

Each step is mergeable: step 2 sums per bundle (`FitCounts`); step 5 keeps
at most `n_j` candidates per class per bundle (`SmallestPerClass`), then
the `n_j`-th smallest `(a, hash)` of each class (`ClassCut`) decides every
row. Shapes: N rows, K classes, C checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from lossaudit.confident import ranks_within
from lossaudit.merging import SummedArrays

EARLY_AUM = "early_aum"
# `flag.early_aum_max_fit`: a checkpoint predicting more of the suspects as
# given than this has begun to memorise their labels.
DEFAULT_MAX_FIT = 0.5


@dataclasses.dataclass(frozen=True)
class FitCounts(SummedArrays):
  """Step 2's sums, merged element-wise.

  Attributes:
    suspects: `(K,)` suspects per given class.
    suspects_fit: `(C,)` suspects each checkpoint predicts as given.
    correct: `(C,)` rows each checkpoint predicts as given.
    oof_correct: `()` rows whose out-of-sample argmax is the given label.
    rows: `()` rows counted.
    non_finite: `(C,)` rows whose margin at each checkpoint is not finite.
  """

  suspects: np.ndarray
  suspects_fit: np.ndarray
  correct: np.ndarray
  oof_correct: np.ndarray
  rows: np.ndarray
  non_finite: np.ndarray

  @classmethod
  def empty(cls, num_classes: int, num_checkpoints: int) -> "FitCounts":
    return cls(np.zeros(num_classes, np.int64),
               np.zeros(num_checkpoints, np.int64),
               np.zeros(num_checkpoints, np.int64), np.zeros((), np.int64),
               np.zeros((), np.int64), np.zeros(num_checkpoints, np.int64))


def fit_counts(given: np.ndarray, oof: np.ndarray, correct: np.ndarray,
               suspect: np.ndarray, margins: Optional[np.ndarray] = None
               ) -> FitCounts:
  """The `FitCounts` of N rows.

  Args:
    given: `(N,)` given labels.
    oof: `(N, K)` out-of-sample probabilities.
    correct: `(N, C)` whether checkpoint c predicts the given label.
    suspect: `(N,)` whether the row is a `prune_by_noise_rate` issue.
    margins: `(N, C)` the margins (only whether each is finite is read);
      None: all are.
  """
  correct = correct.astype(bool)
  non_finite = (np.zeros(correct.shape[1], np.int64) if margins is None
                else (~np.isfinite(margins)).sum(axis=0).astype(np.int64))
  return FitCounts(
      suspects=np.bincount(given[suspect], minlength=oof.shape[1]),
      suspects_fit=correct[suspect].sum(axis=0).astype(np.int64),
      correct=correct.sum(axis=0).astype(np.int64),
      oof_correct=np.asarray((oof.argmax(axis=1) == given).sum(), np.int64),
      rows=np.asarray(len(given), np.int64), non_finite=non_finite)


class ClassCut(NamedTuple):
  """The last row a class flags: its `(a, id hash)`; rows of the class at or
  before it (smaller `a`, or equal `a` and hash) are flagged."""

  aum: float
  id_hash: int


@dataclasses.dataclass(frozen=True)
class EarlyAumRule:
  """What the early-AUM rule decided, as the flag stage applies it.

  Attributes:
    checkpoints: the full model's checkpoint names, oldest first.
    fit: `(C,)` fraction of the suspects each checkpoint predicts as given
      (None without suspects).
    accuracy: `(C,)` fraction of all rows each predicts as given.
    oof_accuracy: the same of the out-of-sample argmax.
    max_fit: `flag.early_aum_max_fit`.
    suspects: `(K,)` suspects per given class.
    below_zero: `(K,)` rows per given class with `a < 0` (None before the
      ranking pass).
    cuts: each class's `ClassCut` (classes that flag nothing have none).
    non_finite: `(C,)` rows whose margin at each checkpoint is not finite:
      a checkpoint with more than another's (it diverged) is not usable.
  """

  checkpoints: Tuple[str, ...]
  fit: List[Optional[float]]
  accuracy: List[float]
  oof_accuracy: float
  max_fit: float
  suspects: List[int]
  below_zero: Optional[List[int]] = None
  cuts: Dict[int, ClassCut] = dataclasses.field(default_factory=dict)
  non_finite: Optional[List[int]] = None

  @property
  def usable(self) -> List[bool]:
    """`(C,)` the checkpoints `a` averages: fit at most `max_fit`, at least
    as accurate as the out-of-sample probabilities, and no more non-finite
    margins than any other checkpoint."""
    non_finite = self.non_finite or [0] * len(self.fit)
    fewest = min(non_finite)
    return [f is not None and f <= self.max_fit and acc >= self.oof_accuracy
            and bad == fewest
            for f, acc, bad in zip(self.fit, self.accuracy, non_finite)]

  @property
  def fell_back(self) -> bool:
    """No checkpoint is usable: the suspects are the answer."""
    return not any(self.usable)

  def caps(self) -> np.ndarray:
    """`(K,)` rows each class flags: `min(#{a < 0}, #suspects)`; its
    suspects when the rule fell back."""
    if self.below_zero is None:
      return np.asarray(self.suspects)
    return np.minimum(np.asarray(self.below_zero), np.asarray(self.suspects))

  def aum(self, margins: np.ndarray) -> np.ndarray:
    """`(N,)` the early AUM `a`: the mean of `margins` `(N, C)` over the
    usable checkpoints (NaN when it fell back)."""
    if self.fell_back:
      return np.full(len(margins), np.nan)
    return margins[:, np.asarray(self.usable)].astype(np.float64).mean(axis=1)

  def mask(self, aum: np.ndarray, given: np.ndarray, id_hash: np.ndarray
           ) -> np.ndarray:
    """`(N,)` the rows flagged: at or before their class's cut."""
    k = len(self.suspects)
    bound, bound_hash = np.zeros(k), np.zeros(k, np.uint64)
    has_cut = np.zeros(k, bool)
    for j, cut in self.cuts.items():
      bound[j], bound_hash[j], has_cut[j] = cut.aum, cut.id_hash, True
    mine, mine_hash = bound[given], bound_hash[given]
    with np.errstate(invalid="ignore"):
      return has_cut[given] & (
          (aum < mine) | ((aum == mine) & (id_hash <= mine_hash)))

  def to_dict(self, per_class: bool = True) -> Dict:
    """`label_issues.early_aum` in `summary.json`; without `per_class`, its
    per-class lists are null (`label_issues/classes.parquet` holds them)."""
    return {"checkpoints": list(self.checkpoints), "fit": self.fit,
            "accuracy": self.accuracy, "oof_accuracy": self.oof_accuracy,
            "usable": self.usable, "fell_back": self.fell_back,
            "max_fit": self.max_fit, "non_finite": self.non_finite,
            **{name: values if per_class else None
               for name, values in self.per_class().items()}}

  def per_class(self) -> Dict[str, Optional[List[int]]]:
    """`suspects`, `below_zero` (None when it fell back) and `flagged`,
    each `(K,)`."""
    return {"suspects": self.suspects,
            "below_zero": None if self.fell_back else self.below_zero,
            "flagged": self.caps().tolist()}


def decide(counts: FitCounts, checkpoints: Tuple[str, ...],
           max_fit: float) -> EarlyAumRule:
  """Steps 2 and 3: the rule from the merged `FitCounts`."""
  suspects = int(counts.suspects.sum())
  rows = max(int(counts.rows), 1)
  return EarlyAumRule(
      checkpoints=tuple(checkpoints),
      # No suspect: no fit to measure, no checkpoint usable.
      fit=(counts.suspects_fit / suspects).tolist() if suspects else
      [None] * len(counts.suspects_fit),
      accuracy=(counts.correct / rows).tolist(),
      oof_accuracy=float(counts.oof_correct) / rows,
      max_fit=max_fit,
      non_finite=counts.non_finite.astype(int).tolist(),
      suspects=counts.suspects.astype(int).tolist())


class SmallestPerClass:
  """Each class's `n_j` smallest `(a, id hash)` rows with `a < 0` seen so
  far: a bundle's candidates for step 5.

  Since `n_j` is at most the class's suspects, what a bundle keeps and
  emits is bounded by the suspects, not by the data. Ties are broken by the
  hash (a total order), so a bundle's kept rows hold every row of the
  class's overall smallest `n_j` that it saw.

  Args:
    limits: `(K,)` the most each class keeps (its suspects).
    buffer_limit: entries held before compacting; default
      `max(4 * sum(limits), 2**18)`.
  """

  def __init__(self, limits: np.ndarray, buffer_limit: Optional[int] = None):
    self.limits = np.asarray(limits, np.int64)
    self.below_zero = np.zeros(len(self.limits), np.int64)
    self._limit = buffer_limit or max(4 * int(self.limits.sum()), 1 << 18)
    self._parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    self._size = 0

  def add(self, aum: np.ndarray, given: np.ndarray, id_hash: np.ndarray
          ) -> None:
    """Adds N rows: `aum`, `given` and `id_hash`, each `(N,)`."""
    with np.errstate(invalid="ignore"):
      negative = aum < 0
    self.below_zero += np.bincount(given[negative],
                                   minlength=len(self.limits))
    keep = negative & (self.limits[given] > 0)
    if keep.any():
      self._parts.append((given[keep], aum[keep].astype(np.float64),
                          id_hash[keep].astype(np.uint64)))
      self._size += int(keep.sum())
      if self._size > self._limit:
        self.compact()

  def compact(self) -> None:
    """Cuts each class to its smallest `limits[j]`."""
    if len(self._parts) < 2 and self._size <= int(self.limits.sum()):
      return
    given, aum, hashes = (np.concatenate(p) for p in zip(*self._parts))
    given, aum, hashes = top_per_class(given, aum, hashes, self.limits)
    self._parts = [(given, aum, hashes)]
    self._size = len(given)

  def candidates(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(given, aum, id_hash)` `(M,)` each: each class's smallest
    `limits[j]`, sorted by class, then `a`, then hash."""
    if not self._parts:
      return (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint64))
    given, aum, hashes = (np.concatenate(p) for p in zip(*self._parts))
    return top_per_class(given, aum, hashes, self.limits)


def top_per_class(given: np.ndarray, aum: np.ndarray, id_hash: np.ndarray,
                  limits: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The `limits[j]` smallest `(aum, id_hash)` rows of each class j, sorted
  by class, `aum`, then hash; each argument `(M,)` but `limits` `(K,)`."""
  order = np.lexsort((id_hash, aum, given))
  given, aum, id_hash = given[order], aum[order], id_hash[order]
  keep = ranks_within(given) < np.asarray(limits)[given]
  return given[keep], aum[keep], id_hash[keep]


def class_cuts(given: np.ndarray, aum: np.ndarray, id_hash: np.ndarray,
               caps: np.ndarray) -> Dict[int, ClassCut]:
  """Each class's `ClassCut`: the `caps[j]`-th smallest of its candidates
  (all bundles' `SmallestPerClass.candidates`, merged)."""
  given, aum, id_hash = top_per_class(given, aum, id_hash, caps)
  cuts = {}
  last = np.r_[given[1:] != given[:-1], True] if len(given) else given
  for row in np.flatnonzero(last):
    cuts[int(given[row])] = ClassCut(float(aum[row]), int(id_hash[row]))
  return cuts
