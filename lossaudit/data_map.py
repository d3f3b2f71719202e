"""The data map of training dynamics: a deterministic sample, drawn as SVG.

Dataset cartography (Swayamdipta et al., 2020) places each example by its
`variability` (x: the std over checkpoints of the probability of its given
label) and `confidence` (y: their mean), coloured by `correctness` (the
fraction of checkpoints that predict the given label). A run of millions of
examples draws at most `DATA_MAP_POINTS` of them: those with the smallest
sampling keys, a 64-bit fingerprint of each id. The sample is therefore the
same whatever the batching, bundling or merge order, and the same examples
are drawn in every run over the same ids.

`sample_rows` samples one batch, `merge` (or `DataMapCombineFn`) combines
samples, `data_map_svg` draws one. The CombineFn is the only part that needs
Beam: it subclasses `beam.CombineFn`, so Beam is imported here;
`lossaudit.report` imports this module only when it draws a data map.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, List, NamedTuple, Sequence, Union

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


def _fmt(value: float) -> str:
  """A coordinate, to 1 decimal."""
  return f"{value:.1f}"


def _coordinates(values: np.ndarray) -> np.ndarray:
  """Pixel coordinates `(M,)` as text `(M,)`, to 1 decimal ("12.0")."""
  return np.round(values, 1).astype(str)


def _concat(*parts) -> np.ndarray:
  """Element-wise concatenation of strings and string arrays `(M,)`."""
  return functools.reduce(np.strings.add, parts)


def _circles(x: np.ndarray, y: np.ndarray, radius: float) -> str:
  """`<circle>` elements at pixel coordinates `x`, `y` `(M,)`."""
  if not x.size:
    return ""
  return "".join(_concat('<circle cx="', _coordinates(x), '" cy="',
                         _coordinates(y), f'" r="{radius:g}"/>').tolist())


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


def data_map_svg(data_map: DataMap, width: int = 720, height: int = 440, *,
                 easy_confidence: float = 0.5,
                 ambiguous_variability: float = 0.2) -> str:
  """The data map as an inline SVG scatter plot (no script, no network).

  x is variability over [0, max(0.5, largest variability)], y confidence
  over [0, 1]. Each point is coloured by its correctness, rounded to the
  nearest of 0, 0.2, ..., 1.0 (a legend names the colours); flagged points
  get a black ring. Dashed lines mark the regions: `ambiguous` right of
  variability `ambiguous_variability`, else `easy` above confidence
  `easy_confidence`, `hard` below. Only numbers are drawn (no ids).

  Elements for tests and styling: `<svg id="data-map">`; each point is a
  `<circle>` in a `<g class="points">` (one group per colour, with
  `data-correctness`); each flagged point a `<circle>` in
  `<g class="flagged">`; the caption a `<text class="caption">`.

  Args:
    data_map: the sample, `M` points.
    width, height: the size of the drawing, in pixels.
    easy_confidence: the confidence above which a not-ambiguous example is
      easy.
    ambiguous_variability: the variability from which an example is
      ambiguous.
  """
  left, right, top, bottom = 56, 150, 16, 64
  plot_w, plot_h = width - left - right, height - top - bottom
  if plot_w <= 0 or plot_h <= 0:
    raise ValueError(f"data_map_svg: expected width > {left + right} and"
                     f" height > {top + bottom}. Received: {width}x{height}")
  variability = np.asarray(data_map.variability, np.float64)
  confidence = np.asarray(data_map.confidence, np.float64)
  high = max(0.5, float(variability.max())) if variability.size else 0.5
  step = _tick_step(high)
  high = math.ceil(high / step * (1 - 1e-12)) * step
  bottom_y = top + plot_h

  def px(v):
    return left + np.clip(v, 0.0, high) / high * plot_w

  def py(c):
    return top + (1.0 - np.clip(c, 0.0, 1.0)) * plot_h

  parts = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"'
           ' fill="#fafafa" stroke="#bbb"/>']
  # Ticks and their labels.
  x_ticks = np.round(np.arange(0.0, high + step / 2, step), 10)
  for t in x_ticks:
    x = _fmt(px(t))
    parts.append(f'<line x1="{x}" x2="{x}" y1="{bottom_y}"'
                 f' y2="{bottom_y + 4}" stroke="#555"/><text x="{x}"'
                 f' y="{bottom_y + 16}" font-size="11"'
                 f' text-anchor="middle">{t:g}</text>')
  for t in np.round(np.arange(0.0, 1.05, 0.2), 10):
    y = _fmt(py(t))
    parts.append(f'<line x1="{left - 4}" x2="{left}" y1="{y}" y2="{y}"'
                 f' stroke="#555"/><text x="{left - 7}" y="{py(t) + 4:.1f}"'
                 f' font-size="11" text-anchor="end">{t:g}</text>')
  # Axis titles.
  mid_y = _fmt(top + plot_h / 2)
  parts.append(
      f'<text x="{left + plot_w / 2:.1f}" y="{bottom_y + 34}" font-size="12"'
      ' text-anchor="middle">variability (std over checkpoints of the'
      ' probability of the given label)</text>'
      f'<text x="14" y="{mid_y}" font-size="12" text-anchor="middle"'
      f' transform="rotate(-90 14 {mid_y})">confidence (mean probability of'
      ' the given label)</text>')
  # The points, one group per correctness colour; the region guides
  # over them, then the flagged rings.
  x, y = px(variability), py(confidence)
  level = correctness_levels(np.asarray(data_map.correctness, np.float64))
  for i, (value, colour) in enumerate(zip(CORRECTNESS_LEVELS,
                                          CORRECTNESS_COLOURS)):
    chosen = level == i
    if chosen.any():
      parts.append(f'<g class="points" data-correctness="{value:g}"'
                   f' fill="{colour}" fill-opacity="0.8">'
                   f"{_circles(x[chosen], y[chosen], 2)}</g>")
  # Region guides: ambiguous right of the vertical line; left of it, easy
  # above the horizontal line and hard below.
  guide = 'stroke="#444" stroke-dasharray="5 3" fill="none"'
  label = ('font-size="11" font-weight="bold" fill="#333" stroke="#fff"'
           ' stroke-width="3" paint-order="stroke"')
  ambiguous = float(ambiguous_variability)
  easy = float(easy_confidence)
  split = min(max(ambiguous, 0.0), high) if math.isfinite(ambiguous) else high
  if 0.0 < split < high:
    gx = _fmt(px(split))
    parts.append(f'<line class="guide" x1="{gx}" x2="{gx}" y1="{top}"'
                 f' y2="{bottom_y}" {guide}/><text x="{px(split) + 4:.1f}"'
                 f' y="{top + 13}" {label}>ambiguous</text>')
  if math.isfinite(easy) and 0.0 < easy < 1.0 and split > 0.0:
    gy = _fmt(py(easy))
    parts.append(f'<line class="guide" x1="{left}" x2="{_fmt(px(split))}"'
                 f' y1="{gy}" y2="{gy}" {guide}/>'
                 f'<text x="{left + 4}" y="{top + 13}" {label}>easy</text>'
                 f'<text x="{left + 4}" y="{bottom_y - 5}" {label}>hard'
                 "</text>")
  flagged = np.asarray(data_map.flagged, bool)
  if flagged.any():
    parts.append('<g class="flagged" fill="none" stroke="#111"'
                 f' stroke-width="1">{_circles(x[flagged], y[flagged], 4.5)}'
                 "</g>")
  # The legend.
  lx = left + plot_w + 18
  legend = [f'<text x="{lx}" y="{top + 12}" font-size="12">correctness'
            "</text>"]
  for i, (value, colour) in enumerate(zip(CORRECTNESS_LEVELS,
                                          CORRECTNESS_COLOURS)):
    ly = top + 30 + 18 * i
    legend.append(f'<circle cx="{lx + 6}" cy="{ly - 4}" r="5"'
                  f' fill="{colour}"/><text x="{lx + 18}" y="{ly}"'
                  f' font-size="11">≈ {value:.1f}</text>')
  ly = top + 30 + 18 * len(CORRECTNESS_LEVELS) + 10
  legend.append(f'<circle cx="{lx + 6}" cy="{ly - 4}" r="4.5" fill="none"'
                f' stroke="#111"/><text x="{lx + 18}" y="{ly}"'
                ' font-size="11">flagged</text>')
  parts.append(f'<g class="legend">{"".join(legend)}</g>')
  parts.append(
      f'<text class="caption" x="{left}" y="{height - 8}" font-size="12">'
      f"{data_map.points:,} of {int(data_map.total):,} examples shown"
      " (sampled by id hash)</text>")
  return (f'<svg id="data-map" xmlns="http://www.w3.org/2000/svg"'
          f' width="{width}" height="{height}"'
          f' viewBox="0 0 {width} {height}" role="img" aria-label="data map:'
          ' confidence against variability, coloured by correctness">'
          f'<title>data map (training dynamics)</title>{"".join(parts)}'
          "</svg>")
