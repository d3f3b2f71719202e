"""Previews of flagged examples for the report: thumbnails and text snippets.

A model's string inputs hold raw text or encoded images. For the few rows
the report lists, each value becomes one small preview: an image (known by
its magic bytes) is decoded, scaled down to at most `THUMBNAIL_SIZE` pixels
and re-encoded as a PNG data URI; valid UTF-8 becomes its first
`TEXT_CHARS` characters; anything else a short note. A value that claims to
be an image but does not decode is a note too, never an error.

A numeric input named by `input.image_shape` (`[H, W]` or `[H, W, C]`,
such as MNIST's 784 numbers a row) is kept as its values (`kind` `array`)
until every row is found; `array_thumbnails` then scales all of them from
the smallest to the largest value among them, so thumbnails compare, and
encodes each as a PNG.

Previews are plain dicts (`kind` `image`, `text`, `note` or `array`), so
they pickle between workers and the report escapes what it shows.
"""

from __future__ import annotations

import base64
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit import columns as cols
from lossaudit.spec import SCORE_COLUMN

THUMBNAIL_SIZE = 96  # Largest side of a thumbnail, in pixels.
TEXT_CHARS = 200  # Characters of a text snippet.

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


class Previews(NamedTuple):
  """The previews of the report's flagged rows.

  Attributes:
    inputs: the model inputs previewed (string inputs), in model order.
    by_id: id → model input → preview dict (`image_preview`, ...).
    note: why rows have no preview (e.g. content-fingerprint ids), or None.
  """

  inputs: Tuple[str, ...]
  by_id: Dict[str, Dict[str, Dict]]
  note: Optional[str] = None


def batch_previews(batch: pa.RecordBatch, id_column: str,
                   inputs: Sequence[Tuple[str, str]],
                   wanted: pa.Array,
                   image_shape: Optional[Tuple[int, ...]] = None
                   ) -> Dict[str, Dict[str, Dict]]:
  """The previews of the rows of `batch` whose id is wanted.

  Ids are read as the scorer reads them (`columns.first_as_text`), so they
  match the scored ids. Only the matching rows are previewed, each id once.

  Args:
    batch: N rows holding `id_column` and the input columns.
    id_column: the id column.
    inputs: `(model input, column)` of each input previewed: string inputs,
      and numeric ones of `image_shape`.
    wanted: `(K,)` string ids to preview.
    image_shape: `input.image_shape`: a numeric input of that many values a
      row is an image (an `array` preview); None: numeric inputs get a
      note.

  Returns:
    id → model input → preview, for the wanted ids `batch` holds.
  """
  found = cols.optional_column(batch, id_column)
  if found is None or not len(wanted):
    return {}
  ids = cols.first_as_text(found).strings
  keep = pc.is_in(ids, value_set=wanted).fill_null(False)
  if not pc.any(keep).as_py():
    return {}
  rows = batch.filter(keep)
  ids = ids.filter(keep).to_pylist()
  _, first = np.unique(np.asarray(ids, dtype=object), return_index=True)
  rows = rows.take(pa.array(np.sort(first)))
  ids = [ids[i] for i in np.sort(first)]
  result: Dict[str, Dict[str, Dict]] = {id_: {} for id_ in ids}
  for model_input, column in inputs:
    for id_, shown in zip(ids, _column_previews(rows, column, image_shape)):
      result[id_][model_input] = shown
  return result


def _column_previews(rows: pa.RecordBatch, column: str,
                     image_shape: Optional[Tuple[int, ...]] = None):
  """One preview per row of `column` (a note for each row when the column
  is missing, or holds neither strings nor `image_shape` numbers)."""
  found = cols.optional_column(rows, column)
  if found is None:
    return [_note(f"no column {column!r}")] * rows.num_rows
  try:
    values, counts = cols.list_bytes(found)
  except TypeError as e:
    if image_shape is not None:
      return array_previews(found, image_shape)
    return [_note(str(e))] * rows.num_rows
  counts = np.maximum(counts, 0)  # A null row (-1) has no values.
  ends = np.cumsum(counts)
  return [preview_values(values[end - n:end].tolist())
          for n, end in zip(counts.tolist(), ends.tolist())]


def candidates(batch: pa.RecordBatch, scored: pa.RecordBatch,
               id_column: str, columns: Sequence[str], score_column: str,
               k: int, above: float = -np.inf) -> Optional[pa.Table]:
  """The `k` highest-scored rows of one scored batch, as read: their id and
  string columns from `batch`, and their score.

  Flagged rows are ordered by this score (non-finite: +inf), so the report's
  top flagged rows are among the `k` highest-scored rows of the run
  whenever the top `k` are flagged, as under `flag.loss_quantile`.

  Args:
    batch: the N rows read.
    scored: its M <= N scored rows (`ScoringSpec.scored_schema`).
    id_column: the id column of `batch`.
    columns: the string input columns of `batch`.
    score_column: the scored column the flags compare (`loss`, ...).
    k: how many rows to keep.
    above: only rows scored higher are kept (`RunningTop.bar`: rows that
      cannot be among the `k` highest).

  Returns:
    Up to `k` rows: `id_column`, `columns` as read, and `SCORE_COLUMN`;
    None when no row was scored above `above`.
  """
  if not scored.num_rows:
    return None
  scores = scored.column(score_column).to_numpy(zero_copy_only=False)
  scores = np.where(np.isfinite(scores), scores, np.inf)
  higher = np.flatnonzero(scores > above)
  if not higher.size:
    return None
  top = higher[np.argsort(-scores[higher], kind="stable")[:k]]
  ids = cols.first_as_text(batch.column(id_column)).strings
  rows = pc.index_in(scored.column("id").take(pa.array(top)),
                     value_set=ids)
  found = rows.is_valid()
  rows, top = rows.filter(found), top[found.to_numpy(zero_copy_only=False)]
  present = [c for c in columns if c in batch.schema.names]
  return pa.table([ids.take(rows)] + [_as_byte_lists(batch.column(c).take(rows))
                                     for c in present] +
                  [pa.array(scores[top], pa.float64())],
                  names=[id_column, *present, SCORE_COLUMN])


class RunningTop:
  """The `k` highest scores of the candidates kept so far.

  A row scored at or below `bar` cannot be among the `k` highest, so
  `candidates(..., above=bar)` skips it: after the first batches, most
  batches keep no row and cost one comparison.
  """

  def __init__(self, k: int):
    self._k = k
    self._scores = np.empty(0)  # Ascending, at most k.

  @property
  def bar(self) -> float:
    """The k-th highest score kept; -inf while fewer than k are kept."""
    return float(self._scores[0]) if len(self._scores) == self._k else (
        -np.inf)

  def add(self, table: pa.Table) -> None:
    """Counts the scores of a `candidates` table as kept."""
    scores = table.column(SCORE_COLUMN).to_numpy()
    self._scores = np.sort(np.concatenate([self._scores, scores]))[-self._k:]


def _as_byte_lists(column: pa.Array) -> pa.Array:
  """A string or bytes column, scalar or list, as `large_list<large_binary>`
  (so the candidates of every file concatenate); a column of other values is
  kept as it is."""
  try:
    values, counts = cols.list_bytes(column)
  except TypeError:
    return column
  lengths = np.maximum(counts, 0)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  return pa.LargeListArray.from_arrays(
      pa.array(offsets), pa.array(list(values), pa.large_binary()),
      mask=pa.array(counts < 0))


def top_candidates(tables: Sequence[Optional[pa.Table]], k: int
                   ) -> Optional[pa.Table]:
  """The `k` highest-scored rows of several `candidates` tables."""
  tables = [t for t in tables if t is not None and t.num_rows]
  if not tables:
    return None
  table = pa.concat_tables(tables, promote_options="permissive")
  if table.num_rows <= k and len(tables) == 1:
    return table
  order = pc.sort_indices(table, [(SCORE_COLUMN, "descending")])
  return table.take(order[:k])


def merge(previews: Sequence[Dict[str, Dict[str, Dict]]]
          ) -> Dict[str, Dict[str, Dict]]:
  """Several `batch_previews` results as one; the first preview of an id
  wins."""
  merged: Dict[str, Dict[str, Dict]] = {}
  for part in previews:
    for id_, shown in part.items():
      merged.setdefault(id_, shown)
  return merged


def image_format(value: bytes) -> Optional[str]:
  """The image format `value` starts like (`PNG`, `JPEG`, `GIF`, `BMP`), or
  None."""
  for magic, name in _MAGIC:
    if value.startswith(magic):
      return name
  # "BM", the file size, then two reserved 16-bit fields that are zero: text
  # that happens to start with "BM" has no NUL bytes there.
  if value[:2] == b"BM" and len(value) >= 26 and value[6:10] == bytes(4):
    return "BMP"
  return None


def preview(value: bytes) -> Dict:
  """One value of a string input → its preview.

  Args:
    value: the raw bytes of one value.

  Returns:
    `{"kind": "image", "uri": "data:image/png;base64,...", "width": w,
    "height": h, "format": "JPEG", "bytes": n}` for an image,
    `{"kind": "text", "text": snippet, "chars": n}` for UTF-8 text (the
    snippet is the first `TEXT_CHARS` characters, with "…" when cut), else
    `{"kind": "note", "text": "..."}`.
  """
  value = bytes(value)
  found = image_format(value)
  if found:
    try:
      return thumbnail(value, found)
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
      return _note(f"{len(value):,} bytes: a {found} image that does not"
                   f" decode ({first[:120]})")
  try:
    text = value.decode("utf-8")
  except UnicodeDecodeError:
    return _note(f"{len(value):,} bytes, neither an image nor UTF-8 text")
  snippet = text[:TEXT_CHARS] + ("…" if len(text) > TEXT_CHARS else "")
  return {"kind": "text", "text": snippet, "chars": len(text)}


def preview_values(values: Sequence[bytes]) -> Dict:
  """The values of one row of a string input → one preview.

  One value is previewed as it is; several text values are joined with
  spaces (tokens); otherwise the first is previewed and `more` counts the
  rest.
  """
  if not values:
    return _note("no value")
  if len(values) == 1:
    return preview(values[0])
  if not any(image_format(bytes(v)) for v in values):
    joined = b" ".join(bytes(v) for v in values)
    try:
      joined.decode("utf-8")
    except UnicodeDecodeError:
      pass
    else:
      return preview(joined)
  return dict(preview(values[0]), more=len(values) - 1)


def thumbnail(value: bytes, found: str = "image") -> Dict:
  """Encoded image bytes → an image preview scaled to at most
  `THUMBNAIL_SIZE` pixels on its longer side (never enlarged).

  Raises:
    tf.errors.InvalidArgumentError: the bytes do not decode.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  image = tf.io.decode_image(value, expand_animations=False)  # (H, W, C)
  height, width = int(image.shape[0]), int(image.shape[1])
  if not height or not width:
    raise ValueError(f"empty image {width}x{height}")
  scale = min(1.0, THUMBNAIL_SIZE / max(height, width))
  size = (max(1, round(height * scale)), max(1, round(width * scale)))
  if size != (height, width):
    image = tf.image.resize(image, size, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  png = tf.io.encode_png(image).numpy()
  return {"kind": "image",
          "uri": "data:image/png;base64," + base64.b64encode(png).decode(),
          "width": size[1], "height": size[0], "format": found,
          "bytes": len(value)}


def _note(text: str) -> Dict:
  return {"kind": "note", "text": text}


def array_previews(column: pa.Array, image_shape: Tuple[int, ...]
                   ) -> List[Dict]:
  """One `array` preview per row of a numeric column `(N,)` of lists: its
  values as float32 `(H*W*C,)`, or a note when a row holds another number
  of values."""
  size = int(np.prod(image_shape))
  if isinstance(column, pa.ChunkedArray):
    column = column.combine_chunks()
  try:
    counts = cols.value_counts(column)
    values = np.asarray(cols.flat_values(column).to_numpy(
        zero_copy_only=False), np.float32)
  except (TypeError, ValueError, pa.ArrowException) as e:
    return [_note(f"not numbers ({e})")] * len(column)
  ends = np.cumsum(np.maximum(counts, 0))
  return [{"kind": "array", "values": values[end - n:end],
           "shape": tuple(image_shape)} if n == size else
          _note(f"{max(n, 0)} values, not the {size} of input.image_shape"
                f" {list(image_shape)}")
          for n, end in zip(counts.tolist(), ends.tolist())]


# Thumbnails of arrays this small are drawn larger, pixel for pixel.
_MIN_ARRAY_SIDE = 48


def array_thumbnails(by_id: Dict[str, Dict[str, Dict]]
                     ) -> Dict[str, Dict[str, Dict]]:
  """`by_id` with each `array` preview as an image: every array of an input
  scaled from the smallest to the largest finite value of that input among
  them to 0..255, then PNG-encoded (non-finite values are black)."""
  arrays: Dict[str, List[np.ndarray]] = {}
  for shown in by_id.values():
    for name, found in shown.items():
      if found["kind"] == "array":
        arrays.setdefault(name, []).append(found["values"])
  ranges = {}
  for name, values in arrays.items():
    every = np.concatenate(values)
    finite = every[np.isfinite(every)]
    ranges[name] = ((float(finite.min()), float(finite.max()))
                    if finite.size else (0.0, 1.0))
  return {id_: {name: (_array_image(found, *ranges[name])
                       if found["kind"] == "array" else found)
                for name, found in shown.items()}
          for id_, shown in by_id.items()}


def _array_image(found: Dict, low: float, high: float) -> Dict:
  """An `array` preview as an `image` preview, `low`..`high` to 0..255."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  shape = tuple(found["shape"])
  values = np.nan_to_num(np.asarray(found["values"], np.float64), nan=low,
                         posinf=high, neginf=low)
  scaled = (values - low) / (high - low) if high > low else values * 0.0
  pixels = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
  pixels = pixels.reshape(shape if len(shape) == 3 else (*shape, 1))
  png = tf.io.encode_png(pixels).numpy()
  height, width = shape[:2]
  zoom = max(1, _MIN_ARRAY_SIDE // max(height, width))
  return {"kind": "image",
          "uri": "data:image/png;base64," + base64.b64encode(png).decode(),
          "width": width * zoom, "height": height * zoom,
          "format": f"{height}x{width} array", "bytes": len(png)}


PREVIEWS_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("input", pa.string()),
    pa.field("kind", pa.string()), pa.field("value", pa.string()),
    pa.field("more", pa.int64())])


def previews_table(by_id: Dict[str, Dict[str, Dict]]) -> pa.Table:
  """The previews as `previews.parquet` holds them (`PREVIEWS_SCHEMA`): a
  row per id and input; `value` is the image's data URI or the text."""
  rows = [(id_, name, found["kind"],
           found["uri"] if found["kind"] == "image" else found["text"],
           int(found.get("more", 0)))
          for id_, shown in by_id.items() for name, found in shown.items()]
  return pa.Table.from_arrays(
      [pa.array(column, field.type) for column, field in zip(
          zip(*rows) if rows else [[]] * len(PREVIEWS_SCHEMA),
          PREVIEWS_SCHEMA)], schema=PREVIEWS_SCHEMA)
