"""Global and per-slice loss statistics, and the top-k losses, as combiners."""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit.errors import TooManySlicesError
from lossaudit.spec import SLICE_COLUMN
from lossaudit.stats import LossAccumulator, top_k_merge, top_k_order


def loss_values(batch: pa.RecordBatch, column: str = "loss") -> np.ndarray:
  """A loss column of a scored batch `(N,)` as float64, zero-copy."""
  return batch.column(column).to_numpy(zero_copy_only=False)


class LossStatsCombineFn(beam.CombineFn):
  """Combines batches of losses `(N,)` into `LossAccumulator.summary()`."""

  def __init__(self, epsilon: float, quantiles: Sequence[float]):
    self._epsilon = epsilon
    self._quantiles = tuple(quantiles)

  def create_accumulator(self) -> LossAccumulator:
    return LossAccumulator(self._epsilon)

  def add_input(self, accumulator: LossAccumulator,
                losses: np.ndarray) -> LossAccumulator:
    return accumulator.add(losses)

  def merge_accumulators(
      self, accumulators: Iterable[LossAccumulator]) -> LossAccumulator:
    accumulators = iter(accumulators)
    result = next(accumulators)
    for accumulator in accumulators:
      result.merge(accumulator)
    return result

  def compact(self, accumulator: LossAccumulator) -> LossAccumulator:
    return accumulator.compact()

  def extract_output(self, accumulator: LossAccumulator) -> Dict:
    return accumulator.summary(self._quantiles)


def _losses_by_slice(batch: pa.RecordBatch, column: str = "loss",
                     key: str = SLICE_COLUMN
                     ) -> Iterable[Tuple[str, np.ndarray]]:
  """Splits a scored batch's losses by the values of column `key` (the
  slice, or the fold): `(value as a string, (n,))` pairs."""
  encoded = pc.dictionary_encode(batch.column(key))
  codes = encoded.indices.to_numpy(zero_copy_only=False)
  losses = loss_values(batch, column)
  order = np.argsort(codes, kind="stable")
  bounds = np.flatnonzero(np.diff(codes[order])) + 1
  for group in np.split(order, bounds):
    if group.size:
      yield str(encoded.dictionary[int(codes[group[0]])].as_py()), \
          losses[group]


class SliceStatsCombineFn(beam.CombineFn):
  """Scored batches → `[(slice value, LossAccumulator.summary())]`, sorted.

  One accumulator holds a `LossAccumulator` per slice, and never more than
  `max_slices` of them: one slice more raises `TooManySlicesError`, so a
  column with a value per row costs `max_slices` sketches, not one each.
  """

  def __init__(self, epsilon: float, quantiles: Sequence[float],
               column: str, max_slices: int, slice_name: str = ""):
    self._epsilon = epsilon
    self._quantiles = tuple(quantiles)
    self._column = column
    self._max_slices = max_slices
    self._slice_name = slice_name

  def create_accumulator(self) -> Dict[str, LossAccumulator]:
    return {}

  def _check(self, accumulator: Dict[str, LossAccumulator]) -> None:
    if len(accumulator) > self._max_slices:
      raise TooManySlicesError(self._slice_name, self._max_slices,
                               len(accumulator))

  def add_input(self, accumulator: Dict[str, LossAccumulator],
                batch: pa.RecordBatch) -> Dict[str, LossAccumulator]:
    for name, losses in _losses_by_slice(batch, self._column):
      found = accumulator.get(name)
      if found is None:
        found = accumulator[name] = LossAccumulator(self._epsilon)
        self._check(accumulator)
      found.add(losses)
    return accumulator

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    result = next(accumulators)
    for accumulator in accumulators:
      for name, found in accumulator.items():
        mine = result.get(name)
        if mine is None:
          result[name] = found
          self._check(result)
        else:
          mine.merge(found)
    return result

  def compact(self, accumulator):
    return {name: found.compact() for name, found in accumulator.items()}

  def extract_output(self, accumulator) -> List[Tuple[str, Dict]]:
    return [(name, accumulator[name].summary(self._quantiles))
            for name in sorted(accumulator)]


class LossStats(beam.PTransform):
  """Scored batches → one statistics dict (and one per slice).

  Outputs a dict with `global` (a singleton PCollection) and, when
  `by_slice`, `slices` (`(slice value, statistics)` pairs), and when
  `by_fold`, `folds` (`(fold as a string, statistics)` pairs).

  Args:
    epsilon: rank-error bound of the quantiles.
    quantiles: the quantiles to report.
    by_slice: whether to compute per-slice statistics too.
    column: the loss column (`loss`, or `weighted_loss` for weighted stats).
    by_fold: whether to compute per-fold statistics too (`model.folds`).
    max_slices: `stats.max_slices`: more slices fail the run
      (`TooManySlicesError`).
    slice_name: the `stats.slice_by` column, for that error.
  """

  def __init__(self, epsilon: float, quantiles: Sequence[float],
               by_slice: bool = False, column: str = "loss",
               by_fold: bool = False, max_slices: int = 1000,
               slice_name: str = ""):
    super().__init__()
    self._max_slices = max_slices
    self._slice_name = slice_name
    self._epsilon = epsilon
    self._quantiles = quantiles
    self._by_slice = by_slice
    self._by_fold = by_fold
    self._column = column

  def expand(self, scored):
    combine = LossStatsCombineFn(self._epsilon, self._quantiles)
    result = {
        "global": (scored
                   | "Losses" >> beam.Map(loss_values, self._column)
                   | "Combine" >> beam.CombineGlobally(combine))
    }
    if self._by_slice:
      # One accumulator of at most max_slices sketches, not one per key:
      # a column with a value per row stops the run, not the machine.
      result["slices"] = (
          scored
          | "CombineSlices" >> beam.CombineGlobally(SliceStatsCombineFn(
              self._epsilon, self._quantiles, self._column,
              self._max_slices, self._slice_name))
          | "Slices" >> beam.FlatMap(lambda pairs: pairs))
    if self._by_fold:
      result["folds"] = (scored
                         | "LossesByFold" >> beam.FlatMap(
                             _losses_by_slice, self._column, "fold")
                         | "CombinePerFold" >> beam.CombinePerKey(combine))
    return result


class TopKCombineFn(beam.CombineFn):
  """The k rows with the largest `value_column`, ties broken by smaller id.

  The accumulator holds at most k `(value, id)` pairs as numpy arrays; each
  batch is reduced with `np.partition` before it is merged.
  Extracts `[(value, id)]`, largest first.
  """

  def __init__(self, k: int, value_column: str = "loss"):
    self._k = k
    self._column = value_column

  def create_accumulator(self):
    return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=object)

  def add_input(self, accumulator, batch: pa.RecordBatch):
    values = batch.column(self._column).to_numpy(zero_copy_only=False)
    ids = np.asarray(batch.column("id").to_numpy(zero_copy_only=False),
                     dtype=object)
    finite = np.isfinite(values)
    values, ids = top_k_merge(values[finite], ids[finite], self._k)
    return self.merge_accumulators([accumulator, (values, ids)])

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    values = np.concatenate([a[0] for a in accumulators])
    ids = np.concatenate([a[1] for a in accumulators])
    return top_k_merge(values, ids, self._k)

  def extract_output(self, accumulator):
    values, ids = accumulator
    return [(float(v), str(i)) for v, i in zip(values, ids)]


class TopRowsCombineFn(beam.CombineFn):
  """The k rows with the largest `value_column` (NaN last), whole.

  Like `TopKCombineFn`, but keeps every column: the accumulator is an Arrow
  table of at most k rows. Extracts the rows as dicts, largest first.
  """

  def __init__(self, k: int, value_column: str):
    self._k = k
    self._column = value_column

  def create_accumulator(self):
    return None

  def add_input(self, accumulator, batch: pa.RecordBatch):
    return self.merge_accumulators([accumulator, self._top(
        pa.Table.from_batches([batch]))])

  def merge_accumulators(self, accumulators):
    tables = [t for t in accumulators if t is not None]
    if not tables:
      return None
    return self._top(pa.concat_tables(tables))

  def _top(self, table: pa.Table) -> pa.Table:
    values = np.nan_to_num(table.column(self._column).to_numpy(),
                           nan=-np.inf)
    ids = np.asarray(table.column("id").to_numpy(), dtype=object)
    return table.take(pa.array(top_k_order(values, ids, self._k)))

  def extract_output(self, accumulator):
    return [] if accumulator is None else accumulator.to_pylist()
