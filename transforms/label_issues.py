"""Distributed confident learning: thresholds, the joint, cell rankings.

Each stage reduces scored batches to K or K×K numbers (or at most n
candidates per cell) per bundle, merged by combiners; nothing gathers
examples or an N×K array. See `lossaudit/confident.py` for the math.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from lossaudit import confident
from lossaudit.scoring import PROBS_COLUMN
from lossaudit.stats import top_k_merge


def class_arrays(batch: pa.RecordBatch, num_classes: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(probs (N, K), given (N,), ids (N,))` of a scored batch, zero-copy."""
  probs = batch.column(PROBS_COLUMN).flatten().to_numpy(
      zero_copy_only=False).reshape(batch.num_rows, num_classes)
  given = batch.column("given_label").to_numpy(zero_copy_only=False)
  ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                   dtype=object)
  return probs, given, ids


def _sum_arrays(parts: Iterable[Tuple[np.ndarray, ...]]):
  total = None
  for part in parts:
    total = part if total is None else tuple(a + b for a, b in zip(total,
                                                                   part))
  return total


def _global(value):
  return WindowedValue(value, window.GlobalWindow().max_timestamp(),
                       [window.GlobalWindow()])


class _JointCountsFn(beam.DoFn):
  """Per bundle: raw confident-joint counts `(K, K)` and label counts `(K,)`."""

  def __init__(self, num_classes: int):
    self._k = num_classes

  def start_bundle(self):
    self._joint = np.zeros((self._k, self._k), dtype=np.int64)
    self._labels = np.zeros(self._k, dtype=np.int64)

  def process(self, batch: pa.RecordBatch, thresholds: Dict):
    probs, given, _ = class_arrays(batch, self._k)
    guess, ok = confident.confident_guess(
        probs, np.asarray(thresholds["thresholds"]))
    self._joint += confident.joint_counts(given, guess, ok, self._k)
    self._labels += np.bincount(given, minlength=self._k)

  def finish_bundle(self):
    yield _global((self._joint, self._labels))


class _CellCandidatesFn(beam.DoFn):
  """Per bundle: each cell's top `n[k, j]` (margin, id) candidates."""

  def __init__(self, num_classes: int):
    self._k = num_classes

  def start_bundle(self):
    self._candidates = None

  def process(self, batch: pa.RecordBatch, joint: Dict):
    if self._candidates is None:
      self._candidates = confident.CellCandidates(
          np.asarray(joint["prune_counts"]))
    self._candidates.add(*class_arrays(batch, self._k))

  def finish_bundle(self):
    if self._candidates is None:
      return
    prune = self._candidates.prune
    for cell, values, kept in self._candidates.cells():
      yield _global((cell, (int(prune[cell]), values, kept)))


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


def _finish_joint(counts, method: str, thresholds: Dict,
                  num_classes: int) -> Dict:
  if counts is None:
    counts = (np.zeros((num_classes, num_classes), dtype=np.int64),
              np.zeros(num_classes, dtype=np.int64))
  raw, label_counts = counts
  joint = confident.calibrated_joint(raw, label_counts)
  result = {
      "method": method,
      "thresholds": list(map(float, thresholds["thresholds"])),
      "label_counts": label_counts.tolist(),
      "confident_joint": joint.tolist(),
      "noise_rate": confident.noise_rates(joint).tolist(),
  }
  if method == "prune_by_noise_rate":
    result["prune_counts"] = confident.prune_counts(joint,
                                                    label_counts).tolist()
  return result


def _thresholds(sums_counts, num_classes: int) -> Dict:
  if sums_counts is None:
    return {"thresholds": [confident.MISSING_CLASS_THRESHOLD] * num_classes}
  sums, counts = sums_counts
  return {"thresholds": confident.confident_thresholds(sums, counts).tolist()}


def _self_confidence_sums(batch: pa.RecordBatch, num_classes: int):
  probs, given, _ = class_arrays(batch, num_classes)
  return confident.self_confidence_sums(probs, given, num_classes)


def _with_cells(joint: Dict, cells) -> Dict:
  return dict(joint, cells={tuple(k): v for k, v in cells if v is not None})


class FindLabelIssues(beam.PTransform):
  """Scored batches → the label-issue rules (a singleton dict).

  Args:
    method: `confident_learning` or `prune_by_noise_rate`.
    num_classes: K.
    reread: a callable giving a fresh PCollection of the scored batches for
      each pass that needs an earlier pass's result as side input.
  """

  def __init__(self, method: str, num_classes: int, reread):
    super().__init__()
    self._method = method
    self._k = num_classes
    self._reread = reread

  def expand(self, scored):
    k = self._k
    thresholds = (scored
                  | "SelfConfidence" >> beam.Map(_self_confidence_sums, k)
                  | "SumSelfConfidence" >> beam.CombineGlobally(_sum_arrays)
                  | "Thresholds" >> beam.Map(_thresholds, k))
    thresholds = beam.pvalue.AsSingleton(thresholds)
    joint = (self._reread("ForJoint")
             | "JointCounts" >> beam.ParDo(_JointCountsFn(k), thresholds)
             | "SumJoint" >> beam.CombineGlobally(_sum_arrays)
             | "Calibrate" >> beam.Map(_finish_joint, self._method,
                                       thresholds, k))
    if self._method != "prune_by_noise_rate":
      return joint | "NoCells" >> beam.Map(_with_cells, [])
    cells = (self._reread("ForCells")
             | "CellCandidates" >> beam.ParDo(
                 _CellCandidatesFn(k), beam.pvalue.AsSingleton(joint))
             | "TopNPerCell" >> beam.CombinePerKey(CellTopNCombineFn()))
    return joint | "WithCells" >> beam.Map(_with_cells,
                                           beam.pvalue.AsList(cells))
