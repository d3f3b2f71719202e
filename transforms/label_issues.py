"""Distributed confident learning: thresholds, the joint, cell rankings.

Each stage reduces scored batches to K or K×K numbers (or at most n
candidates per cell) per bundle, merged by combiners; nothing gathers
examples or an N×K array. See `lossaudit/confident.py` for the math.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from lossaudit import METRICS_NAMESPACE, confident, early_aum
from lossaudit.data_map import sampling_keys
from lossaudit.early_aum import EARLY_AUM, FitCounts
from lossaudit.label_rules import (
  PRUNE_BY_NOISE_RATE,
  LabelRules,
  checkpoint_arrays,
  class_arrays,
)
from lossaudit.merging import SummedArrays, merge_all
from lossaudit.rules import Thresholds
from lossaudit.stats import top_k_merge
from lossaudit.transforms.spill import ReadSpilled, in_global_window


@dataclasses.dataclass(frozen=True)
class _ClassSums(SummedArrays):
  """Per given class: self-confidences summed `(K,)`, and examples `(K,)`."""

  sums: np.ndarray
  counts: np.ndarray


@dataclasses.dataclass(frozen=True)
class _JointCounts:
  """The raw confident joint's non-zero cells, given-label counts `(K,)`,
  the rows left out for a non-finite probability or loss `()`, and each
  cell's margin histogram `(K, K, bins)` (`prune_by_noise_rate` at the few
  classes `confident.margin_bin_count` gives bins; else `(0,)`). O(non-zero
  cells + K) at any K."""

  joint: confident.CellCounts
  labels: np.ndarray
  non_finite: np.ndarray
  margins: np.ndarray

  def merge(self, other: "_JointCounts") -> "_JointCounts":
    return _JointCounts(self.joint.merge(other.joint),
                        self.labels + other.labels,
                        self.non_finite + other.non_finite,
                        self.margins + other.margins)


def _no_class_sums(k: int) -> _ClassSums:
  return _ClassSums(np.zeros(k), np.zeros(k, dtype=np.int64))


def _no_joint_counts(k: int, bins: int = 0) -> _JointCounts:
  return _JointCounts(confident.CellCounts.empty(k),
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
      self._candidates = confident.CellCandidates(rules.prune_counts,
                                                  cuts=rules.cuts)
    arrays = class_arrays(batch, self._k).finite_rows()
    self._candidates.add(arrays.probs, arrays.given, arrays.ids)

  def finish_bundle(self):
    if self._candidates is None:
      return
    for cell, n, values, kept in self._candidates.cells():
      self._emitted.inc(len(values))
      yield in_global_window((cell, CellTop(n, values, kept)))


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


class _FitCountsFn(beam.DoFn):
  """Per bundle: early AUM's `FitCounts` (the suspects, and how many of
  them and of all rows each checkpoint fits)."""

  def __init__(self, num_classes: int, num_checkpoints: int):
    self._k = num_classes
    self._c = num_checkpoints

  def start_bundle(self):
    self._counts = FitCounts.empty(self._k, self._c)

  def process(self, batch: pa.RecordBatch, rules: LabelRules):
    every = class_arrays(batch, self._k)
    arrays = every.finite_rows()
    suspect, _ = rules.issue_mask(arrays.probs, arrays.given, arrays.ids)
    margins, correct = (a[every.finite] for a in checkpoint_arrays(batch))
    self._counts = self._counts.merge(early_aum.fit_counts(
        arrays.given, arrays.probs, correct, suspect, margins))

  def finish_bundle(self):
    yield in_global_window(self._counts)


class AumCandidates(NamedTuple):
  """Rows with `a < 0` per class: counted `(K,)`, and each class's
  smallest `limits[j]` `(a, id hash)` (`early_aum.SmallestPerClass`)."""

  below_zero: np.ndarray
  given: np.ndarray
  aum: np.ndarray
  id_hash: np.ndarray
  limits: np.ndarray

  def merge(self, other: "AumCandidates") -> "AumCandidates":
    """Both counts, and each class's smallest `limits[j]` of both."""
    given, aum, hashes = early_aum.top_per_class(
        *(np.concatenate(pair) for pair in zip(
            (self.given, self.aum, self.id_hash),
            (other.given, other.aum, other.id_hash))), self.limits)
    return AumCandidates(self.below_zero + other.below_zero, given, aum,
                          hashes, self.limits)


class SmallestAumCombineFn(beam.CombineFn):
  """Bundles' `AumCandidates` → all rows': what is kept stays bounded by
  the suspects, whatever the number of bundles. None for no bundle."""

  def create_accumulator(self) -> Optional[AumCandidates]:
    return None

  def add_input(self, accumulator, candidates: AumCandidates):
    return candidates if accumulator is None else accumulator.merge(
        candidates)

  def merge_accumulators(self, accumulators):
    found = [a for a in accumulators if a is not None]
    return functools.reduce(AumCandidates.merge, found) if found else None

  def extract_output(self, accumulator):
    return accumulator


class _AumCandidatesFn(beam.DoFn):
  """Per bundle: each class's smallest early-AUM rows, at most its
  suspects (so what a bundle emits is bounded by them)."""

  def __init__(self, num_classes: int):
    self._k = num_classes
    self._emitted = Metrics.counter(METRICS_NAMESPACE,
                                    "label_issue_candidates")

  def start_bundle(self):
    self._smallest = None

  def process(self, batch: pa.RecordBatch, rules: LabelRules):
    rule = rules.early_aum
    if rule.fell_back:  # No early AUM to rank.
      return
    if self._smallest is None:
      self._smallest = early_aum.SmallestPerClass(np.asarray(rule.suspects))
    every = class_arrays(batch, self._k)
    keep = every.finite
    margins = checkpoint_arrays(batch)[0][keep]
    self._smallest.add(rule.aum(margins), every.given[keep],
                       sampling_keys(every.ids[keep]))

  def finish_bundle(self):
    if self._smallest is None:
      return
    given, aum, hashes = self._smallest.candidates()
    self._emitted.inc(len(given))
    yield in_global_window(AumCandidates(self._smallest.below_zero, given,
                                          aum, hashes,
                                          self._smallest.limits))


def _with_cuts(rules: LabelRules, candidates: Optional[AumCandidates]
               ) -> LabelRules:
  """`rules` with early AUM's per-class counts and cuts, from all rows'
  candidates (None: no row)."""
  rule = rules.early_aum
  if rule.fell_back:  # No early AUM: nothing below zero was counted.
    return rules
  if candidates is None:
    return dataclasses.replace(rules, early_aum=dataclasses.replace(
        rule, below_zero=[0] * len(rule.suspects)))
  rule = dataclasses.replace(
      rule, below_zero=candidates.below_zero.astype(int).tolist())
  rule = dataclasses.replace(rule, cuts=early_aum.class_cuts(
      candidates.given, candidates.aum, candidates.id_hash, rule.caps()))
  return dataclasses.replace(rules, early_aum=rule)


def _with_fit(rules: LabelRules, counts: FitCounts,
              checkpoints: Tuple[str, ...], max_fit: float) -> LabelRules:
  return dataclasses.replace(rules, early_aum=early_aum.decide(
      counts, checkpoints, max_fit))


def _finish_joint(counts: _JointCounts, method: str,
                  thresholds: List[float]) -> LabelRules:
  joint = confident.calibrated_joint(counts.joint, counts.labels)
  prune = (confident.prune_counts(joint, counts.labels)
           if method in (PRUNE_BY_NOISE_RATE, EARLY_AUM) else None)
  bins = counts.margins.shape[-1] if counts.margins.ndim == 3 else 0
  return LabelRules(
      method=method,
      thresholds=list(map(float, thresholds)),
      label_counts=counts.labels.tolist(),
      confident_joint=joint,
      noise_rate=confident.noise_rates(joint).tolist(),
      prune_counts=prune,
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

  With `early_aum`, `prune_by_noise_rate`'s issues are its suspects, and
  two more passes follow: the checkpoints' fit (`FitCounts`), then each
  class's smallest early-AUM rows (`lossaudit/early_aum.py`).

  Args:
    method: `confident_learning`, `prune_by_noise_rate` or `early_aum`.
    num_classes: K.
    progress_interval: seconds between progress lines of the passes that
      read the batches back, at least (None: none).
    total: a singleton, how many rows the batches hold (told in those
      progress lines), or None. Not a field of `ScoredBatches`: Beam takes
      every field of a tuple input as a PCollection.
    checkpoints: `early_aum`: the full model's checkpoint names.
    max_fit: `early_aum`: `flag.early_aum_max_fit`.
  """

  def __init__(self, method: str, num_classes: int,
               progress_interval: Optional[float] = None,
               total: Optional[beam.PCollection] = None,
               checkpoints: Tuple[str, ...] = (),
               max_fit: float = early_aum.DEFAULT_MAX_FIT):
    super().__init__()
    self._method = method
    self._k = num_classes
    self._progress_interval = progress_interval
    self._total = total
    self._checkpoints = tuple(checkpoints)
    self._max_fit = max_fit

  def expand(self, batches: ScoredBatches):
    k = self._k
    bins = (confident.margin_bin_count(k)
            if self._method in (PRUNE_BY_NOISE_RATE, EARLY_AUM) else 0)
    thresholds = (batches.scored
                  | "SelfConfidence" >> beam.Map(_self_confidence_sums, k)
                  | "SumSelfConfidence" >> beam.CombineGlobally(
                      merge_all, empty=_no_class_sums(k))
                  | "Thresholds" >> beam.Map(_thresholds))
    thresholds = beam.pvalue.AsSingleton(thresholds)
    rules = (batches.spilled
             | "RereadForJoint" >> self._reread_pass("confident joint")
             | "JointCounts" >> beam.ParDo(_JointCountsFn(k, bins),
                                           thresholds=thresholds)
             | "SumJoint" >> beam.CombineGlobally(
                 merge_all, empty=_no_joint_counts(k, bins))
             | "Calibrate" >> beam.Map(_finish_joint, method=self._method,
                                       thresholds=thresholds))
    if self._method == confident.LABEL_ISSUE_METHODS[0]:
      return rules | "NoCells" >> beam.Map(_with_cells, cells=[])
    cells = (batches.spilled
             | "RereadForCells" >> self._reread_pass("cell rankings")
             | "CellCandidates" >> beam.ParDo(
                 _CellCandidatesFn(k), rules=beam.pvalue.AsSingleton(rules))
             | "TopNPerCell" >> beam.CombinePerKey(CellTopNCombineFn()))
    rules = rules | "WithCells" >> beam.Map(
        _with_cells, cells=beam.pvalue.AsList(cells))
    if self._method != EARLY_AUM:
      return rules
    c = len(self._checkpoints)
    fit = (batches.spilled
           | "RereadForFit" >> self._reread_pass("early AUM, checkpoint fit")
           | "FitCounts" >> beam.ParDo(_FitCountsFn(k, c),
                                       rules=beam.pvalue.AsSingleton(rules))
           | "SumFitCounts" >> beam.CombineGlobally(
               merge_all, empty=FitCounts.empty(k, c)))
    rules = rules | "UsableCheckpoints" >> beam.Map(
        _with_fit, counts=beam.pvalue.AsSingleton(fit),
        checkpoints=self._checkpoints, max_fit=self._max_fit)
    candidates = (batches.spilled
                  | "RereadForAum" >> self._reread_pass(
                      "early AUM, rankings")
                  | "AumCandidates" >> beam.ParDo(
                      _AumCandidatesFn(k),
                      rules=beam.pvalue.AsSingleton(rules))
                  | "SmallestAum" >> beam.CombineGlobally(
                      SmallestAumCombineFn()))
    return rules | "EarlyAumCuts" >> beam.Map(
        _with_cuts, candidates=beam.pvalue.AsSingleton(candidates))

  def _reread_pass(self, what: str) -> beam.PTransform:
    """Reads the spilled batches back for one pass, `what` in its progress
    lines."""
    return ReadSpilled(f"label issues, {what}", self._progress_interval,
                       self._total)



def with_early_aum(batch: pa.RecordBatch, thresholds: Thresholds
                   ) -> pa.RecordBatch:
  """`batch` with each row's early AUM appended as `early_aum` (float64;
  null where the rule fell back, or the row is left out of it)."""
  rules = thresholds.label_issues
  arrays = class_arrays(batch, rules.num_classes)
  aum = rules.early_aum.aum(checkpoint_arrays(batch)[0])
  aum = np.where(arrays.finite, aum, np.nan)
  return batch.append_column(EARLY_AUM, pa.array(aum, pa.float64(),
                                                 from_pandas=True))
