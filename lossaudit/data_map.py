"""The data map of training dynamics: a deterministic sample, charted.

Dataset cartography (Swayamdipta et al., 2020) places each example by its
`variability` (x: the std over checkpoints of the probability of its given
label) and `confidence` (y: their mean), coloured by `correctness` (the
fraction of checkpoints that predict the given label). A run of millions of
examples draws at most `DATA_MAP_POINTS` of them: those with the smallest
sampling keys, a 64-bit fingerprint of each id. The sample is therefore the
same whatever the batching, bundling or merge order, and the same examples
are drawn in every run over the same ids.

`sample_rows` samples one batch, `merge` (or `DataMapCombineFn`) combines
samples, `data_map_chart` gives what the report charts. The CombineFn is
the only part that needs Beam: it subclasses `beam.CombineFn`, so Beam is
imported here;
`lossaudit.report` imports this module only when it draws a data map.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, NamedTuple, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit.columns import fingerprints_u64

# The most points a data map draws (the sample size).
DATA_MAP_POINTS = 5000

# Correctness is drawn in 6 colours, for the nearest of 0, 0.2, ..., 1.0
# (red: no checkpoint predicts the given label; blue: every one does).
CORRECTNESS_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
CORRECTNESS_COLOURS = ("#b2182b", "#d6604d", "#f4a582", "#92c5de", "#4393c3",
                       "#2166ac")

_Values = Union[np.ndarray, pa.Array, pa.ChunkedArray, Sequence]


class DataMap(NamedTuple):
  """A sample of the data map: the rows with the smallest sampling keys.

  Attributes:
    keys: `(M,)` uint64 sampling keys (fingerprints of the ids), ascending.
    confidence: `(M,)` float64, mean probability of the given label over
      the checkpoints.
    variability: `(M,)` float64, its std over the checkpoints.
    correctness: `(M,)` float64, fraction of checkpoints that predict the
      given label.
    flagged: `(M,)` bool, whether a flag rule flagged the row.
    total: how many rows the sample was drawn from (rows with finite
      confidence, variability and correctness).
  """

  keys: np.ndarray
  confidence: np.ndarray
  variability: np.ndarray
  correctness: np.ndarray
  flagged: np.ndarray
  total: int

  @classmethod
  def empty(cls) -> "DataMap":
    """The sample of no rows."""
    return cls(np.zeros(0, np.uint64), np.zeros(0), np.zeros(0), np.zeros(0),
               np.zeros(0, bool), 0)

  @property
  def points(self) -> int:
    """M, the rows in the sample."""
    return len(self.keys)


def _numpy(values: _Values, dtype) -> np.ndarray:
  """`values` `(N,)` (numpy, Arrow or a sequence) as a numpy array."""
  if isinstance(values, (pa.Array, pa.ChunkedArray)):
    values = values.to_numpy(zero_copy_only=False)
  return np.asarray(values, dtype=dtype).reshape(-1)


def _id_bytes(ids: _Values) -> np.ndarray:
  """The ids `(N,)` as an object array of their UTF-8 bytes (null: b"")."""
  if isinstance(ids, pa.ChunkedArray):
    ids = ids.combine_chunks()
  elif not isinstance(ids, pa.Array):
    ids = pa.array(np.asarray(ids).reshape(-1))
  if pa.types.is_large_string(ids.type) or pa.types.is_large_binary(ids.type):
    ids = ids.cast(pa.large_binary())
  elif not pa.types.is_binary(ids.type):
    if not pa.types.is_string(ids.type):
      ids = ids.cast(pa.string())  # Numbers: their decimal text.
    ids = ids.cast(pa.binary())
  ids = pc.fill_null(ids, pa.scalar(b"", ids.type))
  return np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)


def sampling_keys(ids: _Values) -> np.ndarray:
  """The sampling key `(N,)` uint64 of each id: the FarmHash fingerprint
  (`tf.fingerprint`) of its UTF-8 bytes."""
  ids = _id_bytes(ids)
  if not ids.size:
    return np.zeros(0, np.uint64)
  return fingerprints_u64(ids)


def _smallest(columns: List[np.ndarray], total: int, k: int) -> DataMap:
  """The `k` rows of `columns` (keys, confidence, variability, correctness,
  flagged; each `(N,)`) first in order of key, ties broken by the values
  in that order: a total order, so the selection does not depend on how
  the rows were split or in which order the parts were merged."""
  if k < 0:
    raise ValueError(f"data map: expected k >= 0. Received: k={k}")
  keys = columns[0]
  if keys.size > k:
    if k == 0:
      return DataMap.empty()._replace(total=total)
    bound = np.partition(keys, k - 1)[k - 1]
    keep = np.flatnonzero(keys <= bound)  # k rows or more, with the ties.
    columns = [c[keep] for c in columns]
  order = np.lexsort(columns[::-1])[:k]
  return DataMap(*(c[order] for c in columns), total=int(total))


def sample_rows(ids: _Values, confidence: _Values, variability: _Values,
                correctness: _Values, flagged: _Values,
                k: int = DATA_MAP_POINTS) -> DataMap:
  """The sample of one batch: its k rows with the smallest sampling keys.

  Rows whose confidence, variability or correctness is not finite (NaN,
  ±inf, null) cannot be drawn: they are left out, of `total` too.

  Args:
    ids: `(N,)` example ids: an Arrow string or binary array, or a numpy
      array of str, bytes or objects.
    confidence: `(N,)` mean probability of the given label.
    variability: `(N,)` its std over the checkpoints.
    correctness: `(N,)` fraction of checkpoints predicting the given label.
    flagged: `(N,)` bool, the rows a flag rule flagged.
    k: the most rows kept.

  Returns:
    A `DataMap` of min(k, finite rows) rows, sorted by key.

  Raises:
    ValueError: the columns differ in length, or k < 0.
  """
  columns = [
      _numpy(confidence, np.float64), _numpy(variability, np.float64),
      _numpy(correctness, np.float64), _numpy(flagged, bool)]
  keys = sampling_keys(ids)
  lengths = {len(keys)} | {len(c) for c in columns}
  if len(lengths) != 1:
    raise ValueError(
        "sample_rows: expected ids, confidence, variability, correctness and"
        f" flagged of one length. Received lengths {len(keys)},"
        f" {', '.join(str(len(c)) for c in columns)}")
  finite = np.isfinite(np.stack(columns[:3])).all(axis=0)
  if not finite.all():
    keys, columns = keys[finite], [c[finite] for c in columns]
  return _smallest([keys] + columns, len(keys), k)


def merge_all(maps: Iterable[DataMap], k: int = DATA_MAP_POINTS) -> DataMap:
  """The sample of the union of samples: their k smallest keys; totals are
  summed."""
  maps = list(maps)
  if not maps:
    return DataMap.empty()
  columns = [np.concatenate([m[i] for m in maps]) for i in range(5)]
  return _smallest(columns, sum(int(m.total) for m in maps), k)


def merge(a: DataMap, b: DataMap, k: int = DATA_MAP_POINTS) -> DataMap:
  """The sample of two samples' rows: their k smallest keys; totals are
  summed."""
  return merge_all([a, b], k)


class DataMapCombineFn(beam.CombineFn):
  """`DataMap` pieces (`sample_rows` of each batch) → one `DataMap`.

  The accumulator is a `DataMap` of at most k rows (about 33 bytes each).
  """

  def __init__(self, k: int = DATA_MAP_POINTS):
    if k < 0:
      raise ValueError(f"DataMapCombineFn: expected k >= 0. Received: k={k}")
    self._k = k

  def create_accumulator(self) -> DataMap:
    return DataMap.empty()

  def add_input(self, accumulator: DataMap, piece: DataMap) -> DataMap:
    return merge_all([accumulator, piece], self._k)

  def merge_accumulators(self, accumulators: Iterable[DataMap]) -> DataMap:
    return merge_all(accumulators, self._k)

  def compact(self, accumulator: DataMap) -> DataMap:
    return accumulator

  def extract_output(self, accumulator: DataMap) -> DataMap:
    return accumulator


# Drawing ---------------------------------------------------------------------


def _tick_step(high: float) -> float:
  """A round step (1, 2 or 5 × 10^n) giving about 5 ticks over [0, high]."""
  raw = high / 5
  magnitude = 10.0 ** math.floor(math.log10(raw))
  return next(m * magnitude for m in (1, 2, 5, 10)
              if m * magnitude >= raw * (1 - 1e-9))


def correctness_levels(correctness: np.ndarray) -> np.ndarray:
  """The index `(M,)` into `CORRECTNESS_LEVELS` nearest each correctness."""
  levels = len(CORRECTNESS_LEVELS) - 1
  return np.clip(np.rint(np.nan_to_num(correctness) * levels), 0,
                 levels).astype(np.int64)


def _points(variability: np.ndarray, confidence: np.ndarray) -> List:
  """`[[variability, confidence], ...]` `(M, 2)`, to 4 decimals."""
  return np.round(np.stack([variability, confidence], axis=1),
                  4).tolist()


def data_map_chart(data_map: DataMap, *, easy_confidence: float = 0.5,
                   ambiguous_variability: float = 0.2) -> Dict[str, Any]:
  """What the report's data-map chart draws: the points, as numbers only
  (no ids).

  x is variability over [0, `x_max`] (at least 0.5, a round step above the
  largest variability), y confidence over [0, 1]. Points are grouped by
  their correctness rounded to the nearest of `CORRECTNESS_LEVELS`; flagged
  points are drawn again as rings. The regions: `ambiguous` right of
  variability `ambiguous_variability`, else `easy` above confidence
  `easy_confidence`, `hard` below.

  Args:
    data_map: the sample, `M` points.
    easy_confidence: the confidence above which a not-ambiguous example is
      easy.
    ambiguous_variability: the variability from which an example is
      ambiguous.

  Returns:
    `{"levels": [{"correctness", "colour", "points": (M_i, 2)}, ...],
    "flagged": (F, 2), "x_max", "easy_confidence", "ambiguous_variability",
    "shown", "total"}`.
  """
  variability = np.asarray(data_map.variability, np.float64)
  confidence = np.asarray(data_map.confidence, np.float64)
  high = max(0.5, float(variability.max())) if variability.size else 0.5
  step = _tick_step(high)
  high = math.ceil(high / step * (1 - 1e-12)) * step
  variability = np.clip(variability, 0.0, high)
  confidence = np.clip(confidence, 0.0, 1.0)
  level = correctness_levels(np.asarray(data_map.correctness, np.float64))
  flagged = np.asarray(data_map.flagged, bool)
  return {
      "levels": [{"correctness": value, "colour": colour,
                  "points": _points(variability[level == i],
                                    confidence[level == i])}
                 for i, (value, colour) in enumerate(zip(
                     CORRECTNESS_LEVELS, CORRECTNESS_COLOURS))],
      "flagged": _points(variability[flagged], confidence[flagged]),
      "x_max": float(high),
      "easy_confidence": float(easy_confidence),
      "ambiguous_variability": float(ambiguous_variability),
      "shown": int(data_map.points),
      "total": int(data_map.total),
  }
