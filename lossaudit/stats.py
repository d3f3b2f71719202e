"""Mergeable loss statistics: moments and a quantile sketch with an error bound.

`LossAccumulator` is the tiny state of the `LossStats` combiner: count, mean
and M2 (merged with Chan et al.'s parallel formula), min, max, the number of
non-finite losses, and tfx_bsl's C++ `QuantilesSketch`, whose quantiles have
rank error at most `epsilon`.
"""

from __future__ import annotations

import math
import pickle
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
from tfx_bsl.sketches import QuantilesSketch

# Upper bound on the number of values a sketch sees; sizes its buffers.
MAX_SKETCH_ELEMENTS = 2**40
# Finest grid of quantiles read from a sketch.
MAX_GRID = 1_000_000


def quantile_grid(quantiles: Sequence[float], epsilon: float) -> int:
  """The number of equal steps M such that every q*M is (nearly) integral.

  The sketch answers on a grid of M+1 equally spaced ranks, so this picks the
  smallest multiple of the quantiles' common denominator (each quantile as a
  fraction with denominator at most MAX_GRID) that is at least 1/epsilon,
  capped at MAX_GRID. A quantile then lies within 1/MAX_GRID of a grid point,
  far inside the sketch's own rank error.
  """
  step = 1
  for q in quantiles:
    step = math.lcm(step, Fraction(q).limit_denominator(MAX_GRID).denominator)
  if step > MAX_GRID:
    return MAX_GRID
  return min(MAX_GRID, step * max(1, math.ceil(1.0 / (epsilon * step))))


class LossAccumulator:
  """Running statistics of a stream of losses; merged across workers."""

  __slots__ = ("count", "mean", "m2", "min", "max", "nan_count", "sketch",
               "epsilon")

  def __init__(self, epsilon: float):
    self.epsilon = epsilon
    self.count = 0
    self.mean = 0.0
    self.m2 = 0.0
    self.min = math.inf
    self.max = -math.inf
    self.nan_count = 0
    self.sketch = QuantilesSketch(epsilon, MAX_SKETCH_ELEMENTS, 1)

  def add(self, losses: np.ndarray) -> "LossAccumulator":
    """Adds a batch of losses `(N,)`; non-finite ones are only counted."""
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    finite = np.isfinite(losses)
    if not finite.all():
      self.nan_count += int((~finite).sum())
      losses = losses[finite]
    n = losses.size
    if n == 0:
      return self
    batch_mean = float(losses.mean())
    batch_m2 = float(((losses - batch_mean)**2).sum())
    self._merge_moments(n, batch_mean, batch_m2)
    self.min = min(self.min, float(losses.min()))
    self.max = max(self.max, float(losses.max()))
    self.sketch.AddValues(pa.array(losses))
    return self

  def _merge_moments(self, n: int, mean: float, m2: float) -> None:
    total = self.count + n
    delta = mean - self.mean
    self.mean += delta * n / total
    self.m2 += m2 + delta * delta * self.count * n / total
    self.count = total

  def merge(self, other: "LossAccumulator") -> "LossAccumulator":
    if other.count:
      self._merge_moments(other.count, other.mean, other.m2)
      self.min = min(self.min, other.min)
      self.max = max(self.max, other.max)
      self.sketch.Merge(other.sketch)
    self.nan_count += other.nan_count
    return self

  def compact(self) -> "LossAccumulator":
    self.sketch.Compact()
    return self

  def __getstate__(self):
    return {s: getattr(self, s) for s in self.__slots__}

  def __setstate__(self, state):
    for key, value in state.items():
      setattr(self, key, value)

  def quantile_values(self, num_steps: int) -> np.ndarray:
    """Quantiles at ranks 0, 1/M, ..., 1 `(M+1,)`, leaving this sketch usable.

    Reading quantiles finalizes a tfx_bsl sketch, so a copy is read.
    """
    if self.count == 0:
      return np.full(num_steps + 1, np.nan)
    sketch = pickle.loads(pickle.dumps(self.sketch))
    values = sketch.GetQuantiles(num_steps).flatten().to_numpy()
    return np.asarray(values, dtype=np.float64)

  def summary(self, quantiles: Sequence[float],
              histogram_steps: int = 200) -> Dict:
    """The statistics as a JSON-ready dict (keys of `summary.json` → `loss`).

    Quantile keys are the quantiles as written in the config (`"0.99"`).
    `cdf` holds `histogram_steps + 1` evenly spaced quantiles for the report.
    """
    steps = quantile_grid(quantiles, self.epsilon)
    grid = self.quantile_values(steps)
    values = {
        format_quantile(q): _finite_or_none(grid[int(round(q * steps))])
        for q in quantiles
    }
    coarse = self.quantile_values(histogram_steps) if self.count else []
    median, mad = median_and_mad(grid) if self.count else (None, None)
    return {
        "count": self.count,
        "mean": self.mean if self.count else None,
        "std": math.sqrt(self.m2 / self.count) if self.count else None,
        "min": self.min if self.count else None,
        "max": self.max if self.count else None,
        "nan_count": self.nan_count,
        "quantiles": values,
        "epsilon": self.epsilon,
        "median": median,
        "mad": mad,
        "cdf": [_finite_or_none(v) for v in coarse],
    }


def median_and_mad(grid: np.ndarray) -> Tuple[float, float]:
  """Median and median absolute deviation from a sketch's quantile grid.

  Args:
    grid: `(M+1,)` values at ranks 0, 1/M, ..., 1.

  Returns:
    `(median, mad)`: MAD is the smallest distance m from the median whose
    interval [median - m, median + m] holds half the grid, so it carries the
    sketch's rank error (plus 1/M).
  """
  steps = len(grid) - 1
  median = float(grid[int(round(0.5 * steps))])
  distances = np.unique(np.abs(grid - median))
  inside = (np.searchsorted(grid, median + distances, side="right") -
            np.searchsorted(grid, median - distances, side="left"))
  enough = np.flatnonzero(inside >= 0.5 * (steps + 1))
  return median, float(distances[enough[0]])


def format_quantile(q: float) -> str:
  """`0.99` → `"0.99"`, `0.5` → `"0.5"`, `1.0` → `"1"`: as written in YAML."""
  return f"{q:.10g}" if q not in (0.0, 1.0) else str(int(q))


def _finite_or_none(value: float) -> Optional[float]:
  value = float(value)
  return value if math.isfinite(value) else None


def top_k_merge(losses: np.ndarray, ids: np.ndarray,
                k: int) -> Tuple[np.ndarray, np.ndarray]:
  """The k largest losses, ties broken by the smaller id.

  Args:
    losses: `(N,)` float losses.
    ids: `(N,)` string ids.
    k: how many to keep.

  Returns:
    `(losses, ids)` of the kept rows `(min(N, k),)`, largest loss first.
  """
  order = top_k_order(losses, ids, k)
  return losses[order], ids[order]


def top_k_order(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
  """Indices `(min(N, k),)` of the k largest `values` `(N,)`, largest first,
  ties broken by the smaller of `ids` `(N,)`."""
  candidates = np.arange(values.size)
  if k <= 0:
    return candidates[:0]
  if values.size > k:
    kth = np.partition(values, values.size - k)[values.size - k]
    candidates = np.flatnonzero(values >= kth)
  order = np.lexsort((ids[candidates], -values[candidates]))[:k]
  return candidates[order]
