"""Distributed confident learning: thresholds, the joint, cell rankings.

Each stage reduces scored batches to K or K×K numbers (or at most n
candidates per cell) per bundle, merged by combiners; nothing gathers
examples or an N×K array. See `lossaudit/confident.py` for the math.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from lossaudit import METRICS_NAMESPACE, confident
from lossaudit.label_rules import PRUNE_BY_NOISE_RATE, LabelRules, class_arrays
from lossaudit.merging import merge_all
from lossaudit.stats import top_k_merge
from lossaudit.transforms.spill import ReadSpilled, in_global_window


class _SummedArrays:
  """Numpy arrays (dataclass fields) that merge by element-wise sums."""

  def merge(self, other):
    return type(self)(*(getattr(self, f.name) + getattr(other, f.name)
                        for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class _ClassSums(_SummedArrays):
  """Per given class: self-confidences summed `(K,)`, and examples `(K,)`."""

  sums: np.ndarray
  counts: np.ndarray


@dataclasses.dataclass(frozen=True)
class _JointCounts(_SummedArrays):
  """Raw confident-joint counts `(K, K)`, given-label counts `(K,)`, the
  rows left out for a non-finite probability or loss `()`, and each cell's
  margin histogram `(K, K, bins)` (`prune_by_noise_rate`; else `(0,)`)."""

  joint: np.ndarray
  labels: np.ndarray
  non_finite: np.ndarray
  margins: np.ndarray


def _no_class_sums(k: int) -> _ClassSums:
  return _ClassSums(np.zeros(k), np.zeros(k, dtype=np.int64))


def _no_joint_counts(k: int, bins: int = 0) -> _JointCounts:
  return _JointCounts(np.zeros((k, k), dtype=np.int64),
                      np.zeros(k, dtype=np.int64), np.zeros((), np.int64),
                      np.zeros((k, k, bins) if bins else 0, np.int64))


class _JointCountsFn(beam.DoFn):
  """Per bundle: raw confident-joint counts `(K, K)`, label counts `(K,)`,
  and with `bins`, each cell's margin histogram `(K, K, bins)`."""

  def __init__(self, num_classes: int, bins: int = 0):
    self._k = num_classes
    self._bins = bins

  def start_bundle(self):
    self._counts = _no_joint_counts(self._k, self._bins)

  def process(self, batch: pa.RecordBatch, thresholds: List[float]):
    every = class_arrays(batch, self._k)
    arrays = every.finite_rows()
    guess, ok = confident.confident_guess(arrays.probs,
                                          np.asarray(thresholds))
    self._counts = self._counts.merge(_JointCounts(
        confident.joint_counts(arrays.given, guess, ok, self._k),
        np.bincount(arrays.given, minlength=self._k),
        np.asarray(len(every.given) - len(arrays.given), np.int64),
        confident.margin_histogram(arrays.probs, arrays.given, self._bins)
        if self._bins else np.zeros(0, np.int64)))

  def finish_bundle(self):
    yield in_global_window(self._counts)


class _CellCandidatesFn(beam.DoFn):
  """Per bundle: each cell's top `n[k, j]` (margin, id) candidates.

  What the bundles emit (and `TopNPerCell` shuffles) is bounded by the label
  issues, not by the data: a bundle emits at most `n[k, j]` candidates a
  cell, so at most `sum(prune_counts)` off the diagonal; and only rows at or
  above their cell's cut-off bin, so all bundles together emit fewer than
  `n[k, j]` plus the rows of that bin a cell (see
  `confident.CellCandidates`). The `label_issue_candidates` counter counts
  them.
  """

  def __init__(self, num_classes: int):
    self._k = num_classes
    self._emitted = Metrics.counter(METRICS_NAMESPACE,
                                    "label_issue_candidates")

  def start_bundle(self):
    self._candidates = None

  def process(self, batch: pa.RecordBatch, rules: LabelRules):
    if self._candidates is None:
      self._candidates = confident.CellCandidates(
          np.asarray(rules.prune_counts), cuts=rules.cuts)
    arrays = class_arrays(batch, self._k).finite_rows()
    self._candidates.add(arrays.probs, arrays.given, arrays.ids)

  def finish_bundle(self):
    if self._candidates is None:
      return
    prune = self._candidates.prune
    for cell, values, kept in self._candidates.cells():
      self._emitted.inc(len(values))
      yield in_global_window((cell, CellTop(int(prune[cell]), values, kept)))


class CellTop(NamedTuple):
  """A cell's best candidates: its largest margins first.

  Attributes:
    n: how many the cell keeps (`prune[k, j]`).
    margins: at most `n` margins `p_j - p_k`, largest first.
    ids: their ids (ties: smaller id first).
  """

  n: int
  margins: np.ndarray
  ids: np.ndarray


class CellTopNCombineFn(beam.CombineFn):
  """Merges a cell's candidates, keeping the top n; extracts the n-th.

  Inputs and accumulators are `CellTop`s (or `(n, margins, ids)` tuples).
  """

  def create_accumulator(self) -> CellTop:
    return CellTop(0, np.zeros(0), np.zeros(0, dtype=object))

  def add_input(self, accumulator: CellTop, candidates) -> CellTop:
    return self.merge_accumulators([accumulator, CellTop(*candidates)])

  def merge_accumulators(self, accumulators: Iterable[CellTop]) -> CellTop:
    accumulators = list(accumulators)
    n = max(a.n for a in accumulators)
    margins, ids = top_k_merge(
        np.concatenate([a.margins for a in accumulators]),
        np.concatenate([a.ids for a in accumulators]), n)
    return CellTop(n, margins, ids)

  def extract_output(self, accumulator: CellTop
                     ) -> Optional[Tuple[float, str]]:
    if not len(accumulator.margins):
      return None
    return float(accumulator.margins[-1]), str(accumulator.ids[-1])


def _finish_joint(counts: _JointCounts, method: str,
                  thresholds: List[float]) -> LabelRules:
  joint = confident.calibrated_joint(counts.joint, counts.labels)
  prune = (confident.prune_counts(joint, counts.labels)
           if method == PRUNE_BY_NOISE_RATE else None)
  bins = counts.margins.shape[-1] if counts.margins.ndim == 3 else 0
  return LabelRules(
      method=method,
      thresholds=list(map(float, thresholds)),
      label_counts=counts.labels.tolist(),
      confident_joint=joint.tolist(),
      noise_rate=confident.noise_rates(joint).tolist(),
      prune_counts=None if prune is None else prune.tolist(),
      non_finite_left_out=int(counts.non_finite),
      margin_bins=bins if prune is not None else 0,
      cut_bins=(confident.cut_bins(counts.margins, prune).tolist()
                if prune is not None and bins else None))


def _thresholds(sums: _ClassSums) -> List[float]:
  """Per-class self-confidence thresholds `(K,)` (2 for an absent class)."""
  return confident.confident_thresholds(sums.sums, sums.counts).tolist()


def _self_confidence_sums(batch: pa.RecordBatch,
                          num_classes: int) -> _ClassSums:
  arrays = class_arrays(batch, num_classes).finite_rows()
  sums, counts = confident.self_confidence_sums(arrays.probs, arrays.given,
                                                num_classes)
  return _ClassSums(sums=sums, counts=counts)


def _with_cells(rules: LabelRules,
                cells: Iterable[Tuple[Tuple[int, int],
                                      Optional[Tuple[float, str]]]]
                ) -> LabelRules:
  """`rules` with each cell's n-th `(margin, id)`, from `((k, j), n-th)`
  pairs."""
  return dataclasses.replace(
      rules, cells={tuple(k): v for k, v in cells if v is not None})


class ScoredBatches(NamedTuple):
  """What `FindLabelIssues` reads: the scored batches, twice over.

  Attributes:
    scored: the scored RecordBatches.
    spilled: the names of the scratch files `SpillBatches` wrote them to.
  """

  scored: beam.PCollection
  spilled: beam.PCollection


class FindLabelIssues(beam.PTransform):
  """`ScoredBatches` → the label-issue rules (a singleton `LabelRules`).

  The first pass (the thresholds) reads the batches as they are scored;
  each later pass needs the one before as a side input, so reads the
  batches back from the scratch files.

  Args:
    method: `confident_learning` or `prune_by_noise_rate`.
    num_classes: K.
    progress_interval: seconds between progress lines of the passes that
      read the batches back, at least (None: none).
    total: a singleton, how many rows the batches hold (told in those
      progress lines), or None. Not a field of `ScoredBatches`: Beam takes
      every field of a tuple input as a PCollection.
  """

  def __init__(self, method: str, num_classes: int,
               progress_interval: Optional[float] = None,
               total: Optional[beam.PCollection] = None):
    super().__init__()
    self._method = method
    self._k = num_classes
    self._progress_interval = progress_interval
    self._total = total

  def expand(self, batches: ScoredBatches):
    k = self._k
    bins = (confident.margin_bin_count(k)
            if self._method == PRUNE_BY_NOISE_RATE else 0)
    thresholds = (batches.scored
                  | "SelfConfidence" >> beam.Map(_self_confidence_sums, k)
                  | "SumSelfConfidence" >> beam.CombineGlobally(
                      merge_all, empty=_no_class_sums(k))
                  | "Thresholds" >> beam.Map(_thresholds))
    thresholds = beam.pvalue.AsSingleton(thresholds)
    rules = (batches.spilled
             | "RereadForJoint" >> ReadSpilled(
                 "label issues, confident joint", self._progress_interval,
                 self._total)
             | "JointCounts" >> beam.ParDo(_JointCountsFn(k, bins),
                                           thresholds=thresholds)
             | "SumJoint" >> beam.CombineGlobally(
                 merge_all, empty=_no_joint_counts(k, bins))
             | "Calibrate" >> beam.Map(_finish_joint, method=self._method,
                                       thresholds=thresholds))
    if self._method != PRUNE_BY_NOISE_RATE:
      return rules | "NoCells" >> beam.Map(_with_cells, cells=[])
    cells = (batches.spilled
             | "RereadForCells" >> ReadSpilled(
                 "label issues, cell rankings", self._progress_interval,
                 self._total)
             | "CellCandidates" >> beam.ParDo(
                 _CellCandidatesFn(k), rules=beam.pvalue.AsSingleton(rules))
             | "TopNPerCell" >> beam.CombinePerKey(CellTopNCombineFn()))
    return rules | "WithCells" >> beam.Map(
        _with_cells, cells=beam.pvalue.AsList(cells))
