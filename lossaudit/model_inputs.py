"""An Arrow batch → the model's inputs, with the problems of each row.

Pure numpy and Arrow, no TensorFlow: `read_model_inputs` reads the ids,
features, labels, sample weights and slices a `ScoringSpec` names from one
RecordBatch, column by column and never row by row, and says which rows
cannot be scored and why (`dead_letters.Problem`s). Scoring the rest is
`scoring.BatchScorer`'s part.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit import columns as cols
from lossaudit import losses
from lossaudit.dead_letters import (
  BAD_FOLD,
  BAD_ID,
  BAD_PREDICTION,
  BAD_SLICE,
  BAD_WEIGHT,
  LABEL_NOT_INTEGER,
  LABEL_OUT_OF_RANGE,
  MISSING_FEATURE,
  MISSING_ID,
  MISSING_LABEL,
  MISSING_WEIGHT,
  WRONG_SIZE,
  WRONG_TYPE,
  Problem,
)
from lossaudit.spec import (
  POSITION_COLUMN,
  RAW_RECORD_COLUMN,
  Feature,
  LossTerm,
  ScoringSpec,
)

# What a row with no slice value is counted under.
NO_SLICE = "(missing)"


def with_raw_records(batch: pa.RecordBatch, records: List[bytes]
                     ) -> pa.RecordBatch:
  """`batch` decoded from `records`, with their bytes as
  `RAW_RECORD_COLUMN`."""
  return batch.append_column(RAW_RECORD_COLUMN,
                             pa.array(records, pa.large_binary()))


class Ragged(NamedTuple):
  """Rows of different lengths: their values, flat, and each row's length.

  Attributes:
    values: `(M,) + inner` values of every row in order, M = Σ lengths.
    lengths: `(N,)` int64 rows' lengths along their first axis.
  """

  values: np.ndarray
  lengths: np.ndarray

  def rows(self, keep: np.ndarray) -> Ragged:
    """The rows where `keep` `(N,)` bool is set."""
    return Ragged(self.values[np.repeat(keep, self.lengths)],
                  self.lengths[keep])

  def slice(self, start: int, stop: int) -> Ragged:
    """Rows `start` to `stop` (excluded)."""
    ends = np.cumsum(self.lengths)
    first = int(ends[start - 1]) if start else 0
    last = int(ends[stop - 1]) if stop > start else first
    return Ragged(self.values[first:last], self.lengths[start:stop])

  def take(self, order: np.ndarray) -> Ragged:
    """Rows `order` `(M,)` int, in that order."""
    lengths = self.lengths[order]
    starts = np.cumsum(self.lengths) - self.lengths
    moved = starts[order] - (np.cumsum(lengths) - lengths)
    index = np.arange(int(lengths.sum())) + np.repeat(moved, lengths)
    return Ragged(self.values[index], lengths)

  def padded(self, pad_value: Any) -> np.ndarray:
    """`(N, L) + inner`, L the longest row's length, rows padded at the end
    with `pad_value`."""
    n, inner = len(self.lengths), self.values.shape[1:]
    longest = int(self.lengths.max()) if n else 0
    out = np.full((n, longest) + inner, pad_value, dtype=self.values.dtype)
    row_of = np.repeat(np.arange(n), self.lengths)
    starts = np.cumsum(self.lengths) - self.lengths
    out[row_of, np.arange(len(row_of)) - np.repeat(starts, self.lengths)] = (
        self.values)
    return out


class Column(NamedTuple):
  """One column read for the model, with what was wrong in its rows.

  Attributes:
    values: `(N, ...)` numpy or `(N,)` Arrow array; a row with a problem
      holds zero (numpy) or null (Arrow ids).
    problems: the problems found, each naming its rows.
  """

  values: Any
  problems: List[Problem]


class ModelInputs(NamedTuple):
  """What the model, its losses and the scored batch need of N rows.

  Attributes:
    features: `{model input: (N,) + shape}` arrays, in the spec's order;
      a `Ragged` for an input whose first axis has no fixed size. String
      inputs are object arrays of `bytes`.
    labels: `{term name: (N,) + label_shape}` arrays, in the spec's order.
    ids: `(N,)` Arrow strings; None when the spec has no id column (the
      ids are then content fingerprints of the features and labels), and
      when the batch lacks the spec's id column (every row is then a dead
      letter, with no id).
    weights: `(N,)` float64 sample weights; None without a weight column.
    slices: `(N,)` Arrow strings; None without a slice column.
    folds: `(N,)` int64 held-out folds in `[0, K)`; None without folds.
    positions: `(N,)` int64 positions in the source file
      (`POSITION_COLUMN`); None unless the batch has them.
    source: the file the rows were read from, with `positions`.
  """

  features: Dict[str, np.ndarray]
  labels: Dict[str, np.ndarray]
  ids: Optional[pa.Array] = None
  weights: Optional[np.ndarray] = None
  slices: Optional[pa.Array] = None
  folds: Optional[np.ndarray] = None
  positions: Optional[np.ndarray] = None
  source: Optional[str] = None

  def rows(self, keep: np.ndarray) -> ModelInputs:
    """The rows where `keep` `(N,)` bool is set."""
    return self.take(np.flatnonzero(keep))

  def take(self, order: np.ndarray) -> ModelInputs:
    """Rows `order` `(M,)` int, in that order."""
    order_arrow = pa.array(order)
    return ModelInputs(
        features={k: v.take(order) if isinstance(v, Ragged) else v[order]
                  for k, v in self.features.items()},
        labels={k: v[order] for k, v in self.labels.items()},
        ids=None if self.ids is None else self.ids.take(order_arrow),
        weights=None if self.weights is None else self.weights[order],
        slices=None if self.slices is None else self.slices.take(order_arrow),
        folds=None if self.folds is None else self.folds[order],
        positions=None if self.positions is None else self.positions[order],
        source=self.source)

  def slice(self, start: int, stop: int) -> ModelInputs:
    """Rows `start` to `stop` (excluded), without copying."""
    size = stop - start
    return ModelInputs(
        features={k: v.slice(start, stop) if isinstance(v, Ragged)
                  else v[start:stop] for k, v in self.features.items()},
        labels={k: v[start:stop] for k, v in self.labels.items()},
        ids=None if self.ids is None else self.ids.slice(start, size),
        weights=None if self.weights is None else self.weights[start:stop],
        slices=None if self.slices is None else self.slices.slice(start,
                                                                  size),
        folds=None if self.folds is None else self.folds[start:stop],
        positions=(None if self.positions is None
                   else self.positions[start:stop]),
        source=self.source)


class CheckedBatch(NamedTuple):
  """A batch of N rows read for the model.

  Attributes:
    inputs: every row's inputs; zero (or null) where a row has a problem.
    problems: what is wrong, in the order found: features, labels, weights,
      slices, after the ids (a dead letter's reason is its first problem).
    bad: `(N,)` bool, the rows with at least one problem.
  """

  inputs: ModelInputs
  problems: List[Problem]
  bad: np.ndarray


def read_model_inputs(spec: ScoringSpec,
                      batch: pa.RecordBatch) -> CheckedBatch:
  """Reads and checks the columns `spec` names from `batch` (N rows).

  A row cannot be scored when a feature, label or weight is missing, of the
  wrong size or not a number; when its id or slice is not UTF-8; when a
  class label is not an integer or out of range; or when a weight is not
  finite or is negative.
  """
  problems: List[Problem] = []

  def values(column: Column) -> Any:
    """`column`'s values; its problems join `problems`, in reading order."""
    problems.extend(column.problems)
    return column.values

  ids = values(_ids(batch, spec.id_column)) if spec.id_column else None
  features = {f.model_input: values(_feature(batch, f, spec))
              for f in spec.features}
  labels = {term.name: values(_labels(batch, term, spec.class_names))
            for term in spec.terms}
  weights = (values(_weights(batch, spec.weight_column))
             if spec.weight_column else None)
  slices = (values(_slices(batch, spec.slice_column))
            if spec.slice_column else None)
  folds = (values(_folds(batch, spec, ids)) if spec.num_folds else None)
  positions = None
  if POSITION_COLUMN in batch.schema.names:
    positions = np.asarray(batch.column(POSITION_COLUMN).to_numpy(
        zero_copy_only=False), np.int64)
  bad = np.zeros(batch.num_rows, dtype=bool)
  for problem in problems:
    bad |= problem.rows
  if spec.predictions_kind:
    feature = spec.features[0]
    wrong = _bad_predictions(spec, features[feature.model_input], bad)
    if wrong is not None:
      problems.append(wrong)
      bad |= wrong.rows
  return CheckedBatch(
      ModelInputs(features, labels, ids, weights, slices, folds, positions),
      problems, bad)


# How far a row of probabilities may sum from 1.
PROBABILITY_SUM_TOLERANCE = 1e-3


def _bad_predictions(spec: ScoringSpec, values: np.ndarray,
                     bad: np.ndarray) -> Optional[Problem]:
  """The rows of `model.predictions_column` `(N, K)` (those not `bad`
  already) that are not what `predictions_kind` says: with `probabilities`,
  a value outside [0, 1] or NaN, or (one distribution over K classes, as
  for any loss but a binary one) a sum off 1 by more than
  `PROBABILITY_SUM_TOLERANCE`; with `logits`, a value that is not finite.
  None when every row is sound."""
  rows = np.asarray(values, np.float64).reshape(len(values), -1)
  if spec.predictions_kind == "logits":
    wrong = ~np.isfinite(rows).all(axis=1)
    what = "holds a logit that is not finite"
  else:
    with np.errstate(invalid="ignore"):
      wrong = ~((rows >= 0) & (rows <= 1)).all(axis=1)
      if rows.shape[1] > 1 and not any(
          t.loss_name in losses.BINARY_CLASSIFICATION for t in spec.terms):
        wrong |= ~(np.abs(rows.sum(axis=1) - 1) <= PROBABILITY_SUM_TOLERANCE)
    what = ("is not a probability vector (values in [0, 1] summing to 1"
            f" within {PROBABILITY_SUM_TOLERANCE:g})")
  wrong &= ~bad
  if not wrong.any():
    return None
  shown = np.empty(len(rows), dtype=object)
  for row in np.flatnonzero(wrong).tolist():
    shown[row] = [float(f"{v:.6g}") for v in rows[row].tolist()]
  return Problem(wrong, BAD_PREDICTION,
                 f"prediction {{value}} in {spec.features[0].column!r}"
                 f" {what}; model.predictions_kind: {spec.predictions_kind}",
                 shown, column=spec.features[0].column)


def _missing(n: int, what: str, name: str, reason: str) -> Problem:
  return Problem(np.ones(n, dtype=bool), reason, f"missing {what} {name!r}")


def _width(shape: Tuple[int, ...]) -> int:
  return int(math.prod(shape)) if shape else 1


def _dense(batch: pa.RecordBatch, name: str, what: str, missing: str,
           shape: Tuple[int, ...], dtype: np.dtype,
           expected: Optional[str] = None,
           size_hints: Optional[Mapping[int, str]] = None) -> Column:
  """Reads column `name` as `(N,) + shape` values of `dtype`.

  Args:
    batch: N rows.
    name: the column.
    what: `feature`, `label` or `weight`, for messages.
    missing: the reason code of a missing value.
    shape: the per-example shape.
    dtype: numpy dtype of the values.
    expected: the value type messages expect; `dtype`'s name when None.
    size_hints: `{size: the likely fix}` added to the message of the rows
      holding that many values (not the expected number).

  Returns:
    Values `(N,) + shape`, zero in the rows that are missing, of the wrong
    size or not numbers.
  """
  n, shape = batch.num_rows, tuple(shape)
  expected = expected or np.dtype(dtype).name
  found = cols.optional_column(batch, name)
  if found is None:
    return Column(np.zeros((n,) + shape, dtype),
                  [_missing(n, what, name, missing)])
  wrong_type = (f"{what} {name!r} has type {found.type}, expected {expected}"
                " values")
  width = _width(shape)
  try:
    dense = cols.dense_numbers(found, width, dtype)
  except (ValueError, TypeError, pa.ArrowException):
    return Column(np.zeros((n,) + shape, dtype),
                  [Problem(np.ones(n, dtype=bool), WRONG_TYPE, wrong_type)])
  counts = dense.counts
  problems = [Problem(counts < 0, missing, f"missing {what} {name!r}")]
  wrong = (counts >= 0) & (counts != width)
  message = f"{what} {name!r} has {{value}} values, expected {width}"
  for size, hint in (size_hints or {}).items():
    hinted = wrong & (counts == size)
    if hinted.any():
      problems.append(Problem(hinted, WRONG_SIZE, f"{message}: {hint}",
                              counts))
      wrong &= ~hinted
  if wrong.any():
    problems.append(Problem(wrong, WRONG_SIZE, message, counts))
  if dense.not_numbers.any():
    if dense.not_numbers[counts == width].all():
      # Not one value parses: the column's type is wrong, not a value.
      problems.append(Problem(dense.not_numbers, WRONG_TYPE, wrong_type))
    else:
      subject = f"feature {name!r} value" if what == "feature" else what
      problems.append(Problem(dense.not_numbers, WRONG_TYPE,
                              f"{subject} {{value}} is not a number",
                              dense.text))
  return Column(dense.values.reshape((n,) + shape), problems)


def _feature(batch: pa.RecordBatch, feature: Feature,
             spec: ScoringSpec) -> Column:
  """Reads one model input's column: `(N,) + shape`, or a `Ragged` when its
  first axis has no fixed size."""
  fixed = all(d is not None for d in feature.shape)
  if (fixed and feature.dtype != "string" and spec.pad_value is None and
      not spec.truncate):
    return _dense(batch, feature.column, "feature", MISSING_FEATURE,
                  feature.shape, np.dtype(feature.dtype))
  read = _lists(batch, feature)
  if not fixed or not isinstance(read.values, Ragged):
    return read
  return _fit_rows(read, feature, spec)


def _lists(batch: pa.RecordBatch, feature: Feature) -> Column:
  """Reads a feature whose rows may differ in length, as a `Ragged` over its
  first axis (inner axes fixed); `values` is None when none can be read."""
  n, name = batch.num_rows, feature.column
  found = cols.optional_column(batch, name)
  if found is None:
    return Column(None, [_missing(n, "feature", name, MISSING_FEATURE)])
  strings = feature.dtype == "string"
  expected = "string or bytes" if strings else feature.dtype
  text = None
  try:
    if strings:
      flat, counts = cols.list_bytes(found)
      not_numbers = np.zeros(n, dtype=bool)
    else:
      dense = cols.list_numbers(found, np.dtype(feature.dtype))
      flat, counts = dense.values, dense.counts
      not_numbers, text = dense.not_numbers, dense.text
  except (ValueError, TypeError, pa.ArrowException):
    return Column(None, [Problem(
        np.ones(n, dtype=bool), WRONG_TYPE,
        f"feature {name!r} has type {found.type}, expected {expected}"
        " values")])
  inner = tuple(feature.shape[1:]) if feature.shape else ()
  width = _width(inner)
  lengths = np.maximum(counts, 0)
  problems = [Problem(counts < 0, MISSING_FEATURE,
                      f"missing feature {name!r}")]
  uneven = lengths % width != 0
  if uneven.any():
    problems.append(Problem(uneven, WRONG_SIZE, f"feature {name!r} has"
                            f" {{value}} values, expected a multiple of"
                            f" {width}", counts))
    keep = np.repeat(~uneven, lengths)
    flat, lengths = flat[keep], np.where(uneven, 0, lengths)
  if not_numbers.any():
    problems.append(Problem(not_numbers, WRONG_TYPE,
                            f"feature {name!r} value {{value}} is not a"
                            " number", text))
  return Column(Ragged(flat.reshape((-1,) + inner), lengths // width),
                problems)


def _fit_rows(read: Column, feature: Feature, spec: ScoringSpec) -> Column:
  """A fixed-shape feature read as `Ragged` rows → `(N,) + shape`: rows of
  another length are padded with `spec.pad_value` (when set) or cut to
  length (with `spec.truncate`); the others are `wrong_size`."""
  rows, problems = read.values, list(read.problems)
  missing = next(p.rows for p in problems if p.reason == MISSING_FEATURE)
  shape = tuple(feature.shape)
  length = shape[0] if shape else 1
  lengths = rows.lengths
  short, long = lengths < length, lengths > length
  wrong = (short if spec.pad_value is None else np.zeros_like(short)) | (
      long if not spec.truncate else np.zeros_like(long))
  if wrong.any():
    wrong &= ~missing
    problems.append(Problem(
        wrong, WRONG_SIZE, f"feature {feature.column!r} has {{value}}"
        f" values, expected {_width(shape)}",
        lengths * _width(shape[1:])))
  fitted = Ragged(rows.values[_within(lengths, length)],
                  np.minimum(lengths, length))
  pad = pad_value(spec, feature)
  values = fitted.padded(pad)
  if values.shape[1] < length:
    values = np.concatenate([values, np.full(
        (len(lengths), length - values.shape[1]) + values.shape[2:], pad,
        dtype=values.dtype)], axis=1)
  return Column(values.reshape((len(lengths),) + shape), problems)


def pad_value(spec: ScoringSpec, feature: Feature) -> Any:
  """What pads `feature`'s short rows: `spec.pad_value` (0 when None), or
  the empty string for a string input."""
  if feature.dtype == "string":
    return b""
  return spec.pad_value or 0


def _within(lengths: np.ndarray, length: int) -> np.ndarray:
  """`(Σ lengths,)` bool: each value of a row is among its first `length`."""
  starts = np.cumsum(lengths) - lengths
  position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
  return position < length


def _labels(batch: pa.RecordBatch, term: LossTerm,
            class_names: Optional[Tuple[str, ...]] = None) -> Column:
  """Reads the labels `(N,) + term.label_shape` of one loss term: class
  indices are checked to be classes, other labels only to be numbers.
  With `class_names`, a text column holds class names."""
  if term.signals in ("sparse", "binary") or term.label_dtype == "int64":
    found = cols.optional_column(batch, term.label_column)
    if (class_names and found is not None and
        cols.is_text(cols.column_type(found))):
      return _named_labels(batch.num_rows, found, term, class_names)
    return _class_labels(batch, term)
  read = _dense(batch, term.label_column, "label", MISSING_LABEL,
                term.label_shape, np.dtype(term.label_dtype),
                size_hints=_size_hints(term))
  bound = term.loss.target_bound if term.loss else None
  if bound is None:
    return read
  low, strict, what = bound
  per_row = read.values.reshape(batch.num_rows, -1)
  outside = per_row <= low if strict else per_row < low
  if not outside.any():
    return read
  problems = read.problems + [Problem(
      outside.any(axis=1), LABEL_OUT_OF_RANGE,
      f"label {{value}} out of range: {term.loss_name} expects {what}",
      _first_where(per_row, outside))]
  return Column(np.where(outside, 0, per_row).astype(read.values.dtype)
                .reshape(read.values.shape), problems)



def _size_hints(term: LossTerm) -> Dict[int, str]:
  """The likely fix of labels of the wrong size: class indices with a loss
  of one-hot labels, or one-hot labels with a loss of class indices."""
  if term.signals == "categorical":
    return {1: "class indices (one integer a row) need"
               " sparse_categorical_crossentropy"}
  if term.signals == "sparse" and term.num_classes != 1:
    return {term.num_classes: "one-hot labels (one value per class) need"
                              " categorical_crossentropy"}
  return {}


def _first_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`(N,)`: for each row of `values` `(N, W)`, its first value where `mask`
  `(N, W)` is set (its first value when none is)."""
  return values[np.arange(len(values)), mask.argmax(axis=1)]


def _class_labels(batch: pa.RecordBatch, term: LossTerm) -> Column:
  """Reads class labels `(N,) + term.label_shape` and checks each is a class.

  Labels are checked before any cast to an integer type: a floating column
  is read in its own float type and a text column as float64, so 2.5 or NaN
  is reported rather than read as class 2 or as the smallest int64. Integer
  columns are read as they are, exact for every int64.

  Returns:
    Labels of `term.label_dtype`, zero in the rows that are not classes.
  """
  n = batch.num_rows
  dtype = np.dtype(term.label_dtype)
  found = cols.optional_column(batch, term.label_column)
  if found is not None:
    type_ = cols.column_type(found)
    if pa.types.is_floating(type_):
      dtype = np.dtype(type_.to_pandas_dtype())
    elif not (pa.types.is_integer(type_) or pa.types.is_boolean(type_) or
              pa.types.is_null(type_)):
      dtype = np.dtype(np.float64)
  read = _dense(batch, term.label_column, "label", MISSING_LABEL,
                term.label_shape, dtype, term.label_dtype,
                size_hints=_size_hints(term))
  problems = read.problems
  per_row = read.values.reshape(n, _width(term.label_shape))
  classes = f"expected an integer class in [0, {term.num_classes})"
  if per_row.dtype.kind == "f":
    integral = np.isfinite(per_row) & (per_row == np.floor(per_row))
    if not integral.all():
      problems.append(Problem(
          ~integral.all(axis=1), LABEL_NOT_INTEGER,
          f"label {{value}} is not an integer class: {classes}",
          _first_where(per_row, ~integral)))
      per_row = np.where(integral, per_row, 0)
  outside = (per_row < 0) | (per_row >= term.num_classes)
  if term.ignore_class is not None:
    outside &= per_row != term.ignore_class
    classes += f" or ignore_class {term.ignore_class}"
  problems.append(Problem(outside.any(axis=1), LABEL_OUT_OF_RANGE,
                          f"label {{value}} out of range: {classes}",
                          _first_where(per_row, outside)))
  return Column(per_row.astype(term.label_dtype).reshape(read.values.shape),
                problems)


def _named_labels(n: int, found: pa.Array, term: LossTerm,
                  class_names: Tuple[str, ...]) -> Column:
  """Class names `(N,)` → their indices in `class_names`; a name that is not
  there is `label_out_of_range`."""
  name = term.label_column
  text = cols.first_as_text(found)
  index = pc.index_in(text.strings, value_set=pa.array(class_names))
  counts = cols.value_counts(found)
  missing = counts <= 0
  problems = [Problem(missing, MISSING_LABEL, f"missing label {name!r}")]
  wrong = counts > 1
  if wrong.any():
    problems.append(Problem(wrong, WRONG_SIZE, "label has {value} values,"
                            " expected 1 class name", counts))
  unknown = (index.is_null().to_numpy(zero_copy_only=False) & ~missing &
             ~wrong)
  if unknown.any():
    problems.append(Problem(
        unknown, LABEL_OUT_OF_RANGE, "label {value} is not a class of"
        f" input.label_vocabulary ({len(class_names)} classes)", text.raw))
  labels = index.fill_null(0).to_numpy(zero_copy_only=False)
  return Column(labels.astype(term.label_dtype).reshape(
      (n,) + tuple(term.label_shape)), problems)


def _weights(batch: pa.RecordBatch, name: str) -> Column:
  """Reads sample weights `(N,)` float64; each must be finite and >= 0."""
  read = _dense(batch, name, "weight", MISSING_WEIGHT, (),
                np.dtype(np.float64))
  weights, problems = read.values, read.problems
  invalid = ~(np.isfinite(weights) & (weights >= 0))
  if invalid.any():
    problems.append(Problem(invalid, BAD_WEIGHT, "weight {value} is not a"
                            " valid sample weight: expected a finite number"
                            " >= 0", weights))
  return Column(weights, problems)


def _ids(batch: pa.RecordBatch, name: str) -> Column:
  """Reads ids `(N,)` as Arrow strings, null in the rows with a problem
  (values None when the column is missing)."""
  found = cols.optional_column(batch, name)
  if found is None:
    return Column(None,
                  [_missing(batch.num_rows, "id column", name, MISSING_ID)])
  text = cols.first_as_text(found)
  missing = text.strings.is_null().to_numpy(zero_copy_only=False)
  problems = [Problem(missing & ~text.not_utf8, MISSING_ID,
                      f"id is null (column {name!r})")]
  if text.not_utf8.any():
    problems.append(Problem(text.not_utf8, BAD_ID,
                            "id is not valid UTF-8: {value}", text.raw))
  return Column(text.strings, problems)


def _folds(batch: pa.RecordBatch, spec: ScoringSpec,
           ids: Optional[pa.Array]) -> Column:
  """Each row's held-out fold `(N,)` int64: its `spec.fold_column`, which
  must be an integer in `[0, K)`, else `fold_of` its id."""
  k = spec.num_folds
  if spec.fold_column is None:
    if ids is None:  # No id column: every row is already a dead letter.
      return Column(np.zeros(batch.num_rows, np.int64), [])
    from lossaudit.folds import fold_of  # pylint: disable=g-import-not-at-top
    return Column(fold_of(ids.fill_null(""), k), [])
  read = _dense(batch, spec.fold_column, "fold", BAD_FOLD, (),
                np.dtype(np.float64))
  values, problems = read.values, read.problems
  bad = ~((values >= 0) & (values < k) & (values == np.floor(values)))
  if bad.any():
    problems.append(Problem(bad, BAD_FOLD, f"fold {{value}} is not an integer"
                            f" in [0, {k})", values))
  return Column(np.where(bad, 0, values).astype(np.int64), problems)


def _slices(batch: pa.RecordBatch, name: str) -> Column:
  """Reads slice values `(N,)` as Arrow strings; `NO_SLICE` where a row has
  none."""
  found = cols.optional_column(batch, name)
  if found is None:
    return Column(pa.nulls(batch.num_rows, pa.string()).fill_null(NO_SLICE),
                  [])
  text = cols.first_as_text(found)
  problems = []
  if text.not_utf8.any():
    problems.append(Problem(text.not_utf8, BAD_SLICE,
                            f"slice {name!r} is not valid UTF-8: {{value}}",
                            text.raw))
  return Column(text.strings.fill_null(NO_SLICE), problems)
