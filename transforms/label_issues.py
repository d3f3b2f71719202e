"""Distributed confident learning: thresholds, the joint, cell rankings.

Each stage reduces scored batches to K or K×K numbers (or at most n
candidates per cell) per bundle, merged by combiners; nothing gathers
examples or an N×K array. See `lossaudit/confident.py` for the math.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from lossaudit import confident
from lossaudit.label_rules import PRUNE_BY_NOISE_RATE, LabelRules
from lossaudit.scoring import PROBS_COLUMN
from lossaudit.stats import top_k_merge
from lossaudit.transforms.spill import ReadSpilled, in_global_window


class ClassArrays(NamedTuple):
  """A scored batch's class signals.

  Attributes:
    probs: `(N, K)` class probabilities.
    given: `(N,)` given labels.
    ids: `(N,)` ids.
  """

  probs: np.ndarray
  given: np.ndarray
  ids: np.ndarray


def class_arrays(batch: pa.RecordBatch, num_classes: int) -> ClassArrays:
  """The class signals of a scored batch, zero-copy."""
  probs = batch.column(PROBS_COLUMN).flatten().to_numpy(
      zero_copy_only=False).reshape(batch.num_rows, num_classes)
  given = batch.column("given_label").to_numpy(zero_copy_only=False)
  ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                   dtype=object)
  return ClassArrays(probs, given, ids)


@dataclasses.dataclass(frozen=True)
class _ClassSums:
  """Per given class: self-confidences summed `(K,)`, and examples `(K,)`."""

  sums: np.ndarray
  counts: np.ndarray

  def merge(self, other: "_ClassSums") -> "_ClassSums":
    return _ClassSums(self.sums + other.sums, self.counts + other.counts)


@dataclasses.dataclass(frozen=True)
class _JointCounts:
  """Raw confident-joint counts `(K, K)` and given-label counts `(K,)`."""

  joint: np.ndarray
  labels: np.ndarray

  def merge(self, other: "_JointCounts") -> "_JointCounts":
    return _JointCounts(self.joint + other.joint, self.labels + other.labels)


def _merge_all(parts: Iterable):
  """`parts` merged in order (each has `merge`), or None for none."""
  parts = iter(parts)
  total = next(parts, None)
  for part in parts:
    total = total.merge(part)
  return total


class _JointCountsFn(beam.DoFn):
  """Per bundle: raw confident-joint counts `(K, K)` and label counts `(K,)`."""

  def __init__(self, num_classes: int):
    self._k = num_classes

  def start_bundle(self):
    self._joint = np.zeros((self._k, self._k), dtype=np.int64)
    self._labels = np.zeros(self._k, dtype=np.int64)

  def process(self, batch: pa.RecordBatch, thresholds: List[float]):
    arrays = class_arrays(batch, self._k)
    guess, ok = confident.confident_guess(arrays.probs,
                                          np.asarray(thresholds))
    self._joint += confident.joint_counts(arrays.given, guess, ok, self._k)
    self._labels += np.bincount(arrays.given, minlength=self._k)

  def finish_bundle(self):
    yield in_global_window(_JointCounts(self._joint, self._labels))


class _CellCandidatesFn(beam.DoFn):
  """Per bundle: each cell's top `n[k, j]` (margin, id) candidates."""

  def __init__(self, num_classes: int):
    self._k = num_classes

  def start_bundle(self):
    self._candidates = None

  def process(self, batch: pa.RecordBatch, joint: LabelRules):
    if self._candidates is None:
      self._candidates = confident.CellCandidates(
          np.asarray(joint.prune_counts))
    arrays = class_arrays(batch, self._k)
    self._candidates.add(arrays.probs, arrays.given, arrays.ids)

  def finish_bundle(self):
    if self._candidates is None:
      return
    prune = self._candidates.prune
    for cell, values, kept in self._candidates.cells():
      yield in_global_window((cell, (int(prune[cell]), values, kept)))


class CellTopNCombineFn(beam.CombineFn):
  """Merges a cell's candidates, keeping the top n; extracts the n-th."""

  def create_accumulator(self):
    return 0, np.zeros(0), np.zeros(0, dtype=object)

  def add_input(self, accumulator, candidates):
    return self.merge_accumulators([accumulator, candidates])

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    n = max(a[0] for a in accumulators)
    values, ids = top_k_merge(
        np.concatenate([a[1] for a in accumulators]),
        np.concatenate([a[2] for a in accumulators]), n)
    return n, values, ids

  def extract_output(self, accumulator):
    _, values, ids = accumulator
    return (float(values[-1]), str(ids[-1])) if len(values) else None


def _finish_joint(counts: Optional[_JointCounts], method: str,
                  thresholds: List[float], num_classes: int) -> LabelRules:
  if counts is None:
    counts = _JointCounts(
        np.zeros((num_classes, num_classes), dtype=np.int64),
        np.zeros(num_classes, dtype=np.int64))
  joint = confident.calibrated_joint(counts.joint, counts.labels)
  return LabelRules(
      method=method,
      thresholds=list(map(float, thresholds)),
      label_counts=counts.labels.tolist(),
      confident_joint=joint.tolist(),
      noise_rate=confident.noise_rates(joint).tolist(),
      prune_counts=(confident.prune_counts(joint, counts.labels).tolist()
                    if method == PRUNE_BY_NOISE_RATE else None))


def _thresholds(sums: Optional[_ClassSums], num_classes: int) -> List[float]:
  """Per-class self-confidence thresholds `(K,)`."""
  if sums is None:
    return [confident.MISSING_CLASS_THRESHOLD] * num_classes
  return confident.confident_thresholds(sums.sums, sums.counts).tolist()


def _self_confidence_sums(batch: pa.RecordBatch,
                          num_classes: int) -> _ClassSums:
  arrays = class_arrays(batch, num_classes)
  sums, counts = confident.self_confidence_sums(arrays.probs, arrays.given,
                                                num_classes)
  return _ClassSums(sums=sums, counts=counts)


def _with_cells(joint: LabelRules,
                cells: Iterable[Tuple[Tuple[int, int],
                                      Optional[Tuple[float, str]]]]
                ) -> LabelRules:
  """`joint` with each cell's n-th `(margin, id)`, from `((k, j), n-th)`
  pairs."""
  return dataclasses.replace(
      joint, cells={tuple(k): v for k, v in cells if v is not None})


class FindLabelIssues(beam.PTransform):
  """The scored batches → the label-issue rules (a singleton `LabelRules`).

  Takes `{"scored": the scored RecordBatches, "spilled": the names of the
  scratch files SpillBatches wrote them to}`. The first pass (the
  thresholds) reads the batches as they are scored; each later pass needs
  the one before as a side input, so reads the batches back from the files.

  Args:
    method: `confident_learning` or `prune_by_noise_rate`.
    num_classes: K.
  """

  def __init__(self, method: str, num_classes: int):
    super().__init__()
    self._method = method
    self._k = num_classes

  def expand(self, inputs: Dict[str, beam.PCollection]):
    k = self._k
    thresholds = (inputs["scored"]
                  | "SelfConfidence" >> beam.Map(_self_confidence_sums, k)
                  | "SumSelfConfidence" >> beam.CombineGlobally(_merge_all)
                  | "Thresholds" >> beam.Map(_thresholds, k))
    thresholds = beam.pvalue.AsSingleton(thresholds)
    joint = (inputs["spilled"]
             | "RereadForJoint" >> ReadSpilled()
             | "JointCounts" >> beam.ParDo(_JointCountsFn(k),
                                           thresholds=thresholds)
             | "SumJoint" >> beam.CombineGlobally(_merge_all)
             | "Calibrate" >> beam.Map(_finish_joint, method=self._method,
                                       thresholds=thresholds, num_classes=k))
    if self._method != PRUNE_BY_NOISE_RATE:
      return joint | "NoCells" >> beam.Map(_with_cells, cells=[])
    cells = (inputs["spilled"]
             | "RereadForCells" >> ReadSpilled()
             | "CellCandidates" >> beam.ParDo(
                 _CellCandidatesFn(k), joint=beam.pvalue.AsSingleton(joint))
             | "TopNPerCell" >> beam.CombinePerKey(CellTopNCombineFn()))
    return joint | "WithCells" >> beam.Map(
        _with_cells, cells=beam.pvalue.AsList(cells))
