"""Scoring one Arrow batch: validation, model, per-sample loss and signals.

`BatchScorer` is the plain handler class behind the `ScoreBatches` transform
(as Beam's ModelHandler is behind RunInference): it owns the model and one
traced `tf.function` whose batch axis is unknown, so batches of any size reuse
the same graph.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import (
  Any,
  Dict,
  List,
  Mapping,
  NamedTuple,
  Optional,
  Sequence,
  Tuple,
)

import numpy as np
import pyarrow as pa

from lossaudit import columns as cols
from lossaudit import losses

# Re-exported until reading and the audit import them from dead_letters.
from lossaudit.dead_letters import BAD_ID as BAD_ID
from lossaudit.dead_letters import BAD_SLICE as BAD_SLICE
from lossaudit.dead_letters import BAD_WEIGHT as BAD_WEIGHT
from lossaudit.dead_letters import LABEL_NOT_INTEGER as LABEL_NOT_INTEGER
from lossaudit.dead_letters import LABEL_OUT_OF_RANGE as LABEL_OUT_OF_RANGE
from lossaudit.dead_letters import MISSING_FEATURE as MISSING_FEATURE
from lossaudit.dead_letters import MISSING_ID as MISSING_ID
from lossaudit.dead_letters import MISSING_LABEL as MISSING_LABEL
from lossaudit.dead_letters import MISSING_WEIGHT as MISSING_WEIGHT
from lossaudit.dead_letters import NOT_A_REGULAR_FILE as NOT_A_REGULAR_FILE
from lossaudit.dead_letters import NOT_AN_EXAMPLE as NOT_AN_EXAMPLE
from lossaudit.dead_letters import UNREADABLE_FILE as UNREADABLE_FILE
from lossaudit.dead_letters import UNREADABLE_STRETCH as UNREADABLE_STRETCH
from lossaudit.dead_letters import WRONG_SIZE as WRONG_SIZE
from lossaudit.dead_letters import WRONG_TYPE as WRONG_TYPE
from lossaudit.dead_letters import dead_letter as dead_letter
from lossaudit.model import AuditModel, TensorInfo

# Columns of the scored batches that are not written to losses/.
SLICE_COLUMN = "__slice__"
PROBS_COLUMN = "__probs__"


def is_internal(column: str) -> bool:
  return column.startswith("__")


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """One model output's loss; the per-sample loss is Σ weight · term.

  Attributes:
    output: the model output it scores.
    name: suffix of its `loss_<name>` column (multi-output models).
    label_column: the column of its labels.
    loss_name: a Keras loss name (see `losses.SUPPORTED_LOSSES`).
    weight: its weight in the total loss.
    from_logits: whether the output is logits.
    reduce: `mean` or `sum` over the non-batch axes of one sample.
    args: extra Keras loss arguments, as sorted `(key, value)` pairs.
    custom: `package.module:function`, replacing `loss_name`.
    label_shape: per-example shape of the labels fed to the loss.
    label_dtype: `int64` (class indices) or `float32`.
    signals: how class signals are read (`sparse`, `categorical`, `binary`),
      None when the output is not a single-label class distribution.
    num_classes: K when `signals` is set or labels are class indices.
  """

  output: str
  name: str
  label_column: str
  loss_name: str
  weight: float = 1.0
  from_logits: bool = False
  reduce: str = "mean"
  args: Tuple[Tuple[str, Any], ...] = ()
  custom: Optional[str] = None
  label_shape: Tuple[int, ...] = ()
  label_dtype: str = "float32"
  signals: Optional[str] = None
  num_classes: Optional[int] = None

  def build_loss(self):
    if self.custom:
      return losses.import_custom_loss(self.custom)
    return losses.keras_loss(self.loss_name, self.from_logits, dict(self.args))


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
  """All a worker needs to score batches; small and picklable.

  Attributes:
    model_path: the model file or directory.
    signature: the SavedModel signature.
    features: `(model input, column, per-example shape, dtype)` per input.
    terms: the loss terms, one per scored output.
    id_column: the id column, None for content fingerprints.
    weight_column: the sample-weight column or None.
    slice_column: the `stats.slice_by` column or None.
    keep_probs: whether scored batches carry the class probabilities
      (`__probs__`, for label-issue detection).
    device: `auto`, `cpu` or `gpu` (`runtime.device`).
  """

  model_path: str
  signature: str
  features: Tuple[Tuple[str, str, Tuple[int, ...], str], ...]
  terms: Tuple[LossTerm, ...]
  id_column: Optional[str] = None
  weight_column: Optional[str] = None
  slice_column: Optional[str] = None
  keep_probs: bool = False
  device: str = "auto"

  @property
  def classifier(self) -> Optional[LossTerm]:
    """The first term that gives class signals, or None."""
    return next((t for t in self.terms if t.signals), None)

  @property
  def is_classification(self) -> bool:
    return self.classifier is not None

  @property
  def multi_output(self) -> bool:
    return len(self.terms) > 1

  def scored_schema(self) -> pa.Schema:
    """The Arrow schema of scored batches (and of `losses/` files)."""
    fields = [pa.field("id", pa.string()), pa.field("loss", pa.float64())]
    if self.weight_column:
      fields.append(pa.field("weighted_loss", pa.float64()))
    if self.multi_output:
      fields += [pa.field(f"loss_{t.name}", pa.float64()) for t in self.terms]
    if self.is_classification:
      fields += [
          pa.field("given_label", pa.int64()),
          pa.field("predicted_label", pa.int64()),
          pa.field("self_confidence", pa.float64()),
          pa.field("margin", pa.float64()),
      ]
    if self.slice_column:
      fields.append(pa.field(SLICE_COLUMN, pa.string()))
    if self.keep_probs:
      fields.append(pa.field(PROBS_COLUMN, pa.list_(
          pa.float32(), self.classifier.num_classes)))
    return pa.schema(fields)


class LossShapeError(ValueError):
  """A loss that does not give one value per example."""


def select_device(device: str) -> str:
  """The TensorFlow device to score on, for `runtime.device`.

  `auto` takes the first GPU TensorFlow sees, else the CPU; `gpu` fails
  without one. GPU memory grows on demand rather than all at once, so
  several worker threads can share one GPU.

  Raises:
    RuntimeError: `gpu` was asked for and none is visible.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  gpus = [] if device == "cpu" else tf.config.list_physical_devices("GPU")
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # Already initialised in this process.
      pass
  if device == "gpu" and not gpus:
    raise RuntimeError("runtime.device: expected a visible GPU. Received:"
                       " none (tf.config.list_physical_devices('GPU') is"
                       " empty)")
  name = "/GPU:0" if gpus else "/CPU:0"
  logging.info("lossaudit scores on %s", name)
  return name


class Problem(NamedTuple):
  """One kind of problem found in some rows of a batch of N rows.

  Attributes:
    rows: `(N,)` bool, the rows that have it.
    reason: its dead-letter reason code.
    message: what is wrong, for a person; `{value}` stands for the row's
      entry of `values`.
    values: `(N,)` numpy or Arrow array, the value each row's message
      names; None when the message names none.
  """

  rows: np.ndarray
  reason: str
  message: str
  values: Any = None


def _format_value(value: Any) -> str:
  """A value as a message shows it: 2 not 2.0, float32 9.99 as 9.99, text
  quoted and bytes escaped (b'\\xff')."""
  if isinstance(value, pa.Scalar):
    value = value.as_py()
  if isinstance(value, (str, bytes)):
    return repr(value)
  if (isinstance(value, (float, np.floating)) and np.isfinite(value) and
      float(value).is_integer()):
    return str(int(value))
  return str(value)


def _missing(n: int, what: str, name: str, reason: str) -> Problem:
  return Problem(np.ones(n, dtype=bool), reason, f"missing {what} {name!r}")


def _dense(batch: pa.RecordBatch, name: str, what: str, missing: str,
           shape: Tuple[int, ...], dtype: np.dtype,
           expected: Optional[str] = None
           ) -> Tuple[np.ndarray, List[Problem]]:
  """Reads column `name` as `(N,) + shape` values of `dtype`.

  Args:
    batch: N rows.
    name: the column.
    what: `feature`, `label` or `weight`, for messages.
    missing: the reason code of a missing value.
    shape: the per-example shape.
    dtype: numpy dtype of the values.
    expected: the value type messages expect; `dtype`'s name when None.

  Returns:
    `(values, problems)`: values `(N,) + shape`, zero in the rows that are
    missing, of the wrong size or not numbers.
  """
  n, shape = batch.num_rows, tuple(shape)
  expected = expected or np.dtype(dtype).name
  found = cols.optional_column(batch, name)
  if found is None:
    return np.zeros((n,) + shape, dtype), [_missing(n, what, name, missing)]
  wrong_type = (f"{what} {name!r} has type {found.type}, expected {expected}"
                " values")
  width = _width(shape)
  try:
    dense = cols.dense_numbers(found, width, dtype)
  except (ValueError, TypeError, pa.ArrowException):
    return np.zeros((n,) + shape, dtype), [
        Problem(np.ones(n, dtype=bool), WRONG_TYPE, wrong_type)]
  counts = dense.counts
  problems = [Problem(counts < 0, missing, f"missing {what} {name!r}")]
  wrong = (counts >= 0) & (counts != width)
  if wrong.any():
    problems.append(Problem(wrong, WRONG_SIZE, f"{what} {name!r} has {{value}}"
                            f" values, expected {width}", counts))
  if dense.not_numbers.any():
    if dense.not_numbers[counts == width].all():
      # Not one value parses: the column's type is wrong, not a value.
      problems.append(Problem(dense.not_numbers, WRONG_TYPE, wrong_type))
    else:
      subject = f"feature {name!r} value" if what == "feature" else what
      problems.append(Problem(dense.not_numbers, WRONG_TYPE,
                              f"{subject} {{value}} is not a number",
                              dense.text))
  return dense.values.reshape((n,) + shape), problems


def _first_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`(N,)`: for each row of `values` `(N, W)`, its first value where `mask`
  `(N, W)` is set (its first value when none is)."""
  return values[np.arange(len(values)), mask.argmax(axis=1)]


def _class_labels(batch: pa.RecordBatch, term: LossTerm
                  ) -> Tuple[np.ndarray, List[Problem]]:
  """Reads class labels `(N,) + term.label_shape` and checks each is a class.

  Labels are checked before any cast to an integer type: a floating column
  is read in its own float type and a text column as float64, so 2.5 or NaN
  is reported rather than read as class 2 or as the smallest int64. Integer
  columns are read as they are, exact for every int64.

  Returns:
    `(labels, problems)`: labels of `term.label_dtype`, zero in the rows
    that are not classes.
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
  values, problems = _dense(batch, term.label_column, "label", MISSING_LABEL,
                            term.label_shape, dtype, term.label_dtype)
  per_row = values.reshape(n, _width(term.label_shape))
  classes = f"expected an integer class in [0, {term.num_classes})"
  integral = np.ones(per_row.shape, dtype=bool)
  if per_row.dtype.kind == "f":
    integral = np.isfinite(per_row) & (per_row == np.floor(per_row))
    if not integral.all():
      problems.append(Problem(
          ~integral.all(axis=1), LABEL_NOT_INTEGER,
          f"label {{value}} is not an integer class: {classes}",
          _first_where(per_row, ~integral)))
      per_row = np.where(integral, per_row, 0)
  outside = (per_row < 0) | (per_row >= term.num_classes)
  problems.append(Problem(outside.any(axis=1), LABEL_OUT_OF_RANGE,
                          f"label {{value}} out of range: {classes}",
                          _first_where(per_row, outside)))
  return per_row.astype(term.label_dtype).reshape(values.shape), problems


def _weights(batch: pa.RecordBatch,
             name: str) -> Tuple[np.ndarray, List[Problem]]:
  """Reads sample weights `(N,)` float64; each must be finite and >= 0."""
  weights, problems = _dense(batch, name, "weight", MISSING_WEIGHT, (),
                             np.dtype(np.float64))
  invalid = ~(np.isfinite(weights) & (weights >= 0))
  if invalid.any():
    problems.append(Problem(invalid, BAD_WEIGHT, "weight {value} is not a"
                            " valid sample weight: expected a finite number"
                            " >= 0", weights))
  return weights, problems


def _ids(batch: pa.RecordBatch,
         name: str) -> Tuple[Optional[pa.Array], List[Problem]]:
  """Reads ids `(N,)` as strings, null in the rows with a problem."""
  found = cols.optional_column(batch, name)
  if found is None:
    return None, [_missing(batch.num_rows, "id column", name, MISSING_ID)]
  text = cols.first_as_text(found)
  missing = text.strings.is_null().to_numpy(zero_copy_only=False)
  problems = [Problem(missing & ~text.not_utf8, MISSING_ID,
                      f"missing id column {name!r}")]
  if text.not_utf8.any():
    problems.append(Problem(text.not_utf8, BAD_ID,
                            "id is not valid UTF-8: {value}", text.raw))
  return text.strings, problems


def _slices(batch: pa.RecordBatch,
            name: str) -> Tuple[pa.Array, List[Problem]]:
  """Reads slice values `(N,)` as strings; `(missing)` where there is none."""
  found = cols.optional_column(batch, name)
  if found is None:
    return pa.nulls(batch.num_rows, pa.string()).fill_null("(missing)"), []
  text = cols.first_as_text(found)
  problems = []
  if text.not_utf8.any():
    problems.append(Problem(text.not_utf8, BAD_SLICE,
                            f"slice {name!r} is not valid UTF-8: {{value}}",
                            text.raw))
  return text.strings.fill_null("(missing)"), problems


def _rows_finite(tensors) -> "tf.Tensor":
  """`(N,)` bool: whether every float value of row n of each `(N, ...)` is
  finite."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  finite = None
  for x in tensors:
    if not x.dtype.is_floating:
      continue
    rows = tf.reduce_all(
        tf.math.is_finite(tf.reshape(x, [tf.shape(x)[0], -1])), axis=1)
    finite = rows if finite is None else finite & rows
  if finite is None:
    finite = tf.ones([tf.shape(tensors[0])[0]], tf.bool)
  return finite


def _width(shape: Tuple[int, ...]) -> int:
  return int(math.prod(shape)) if shape else 1


class BatchScorer:
  """Scores Arrow record batches with one model and its loss terms.

  Args:
    spec: what to score and how.
    model: an already loaded model (the pre-run check passes its own);
      loaded from `spec.model_path` when None.
  """

  def __init__(self, spec: ScoringSpec, model: Optional[AuditModel] = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    self.spec = spec
    self.device = select_device(spec.device)
    with tf.device(self.device):
      self._build(model)

  def _build(self, model: Optional[AuditModel]) -> None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    spec = self.spec
    self.model = model or AuditModel(spec.model_path, spec.signature)
    self._loss_fns = [term.build_loss() for term in spec.terms]
    feature_specs = {
        name: tf.TensorSpec((None,) + tuple(shape), tf.as_dtype(dtype))
        for name, _, shape, dtype in spec.features
    }
    label_specs = {
        t.name: tf.TensorSpec((None,) + tuple(t.label_shape),
                              tf.as_dtype(t.label_dtype)) for t in spec.terms
    }
    self._score = tf.function(
        self._score_graph, input_signature=[feature_specs, label_specs])

  def _score_graph(self, features, labels):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    predictions = self.model(features)
    outputs = {"finite": _rows_finite(
        list(features.values()) +
        [predictions[term.output] for term in self.spec.terms])}
    total = None
    for term, loss_fn in zip(self.spec.terms, self._loss_fns):
      y_pred = predictions[term.output]
      part = losses.reduce_per_sample(loss_fn(labels[term.name], y_pred),
                                      term.reduce)
      outputs[f"loss_{term.name}"] = part
      weighted = part if term.weight == 1 else part * term.weight
      total = weighted if total is None else total + weighted
      if term is self.spec.classifier:
        label = labels[term.name]
        probs = losses.class_probabilities(y_pred, term.signals,
                                           term.from_logits)
        if term.signals == "categorical":
          given = tf.argmax(label, axis=1, output_type=tf.int64)
        else:
          given = tf.cast(tf.reshape(label, [-1]), tf.int64)
        outputs["given_label"] = given
        outputs.update(losses.classification_signals(probs, given))
        if self.spec.keep_probs:
          outputs["probs"] = probs
    outputs["loss"] = total
    return outputs

  def score_arrays(self, features: Mapping[str, np.ndarray],
                   labels: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs the traced function on dense arrays; returns `(N,)` numpy arrays.

    Raises:
      LossShapeError: when a loss does not give one value per example.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    with tf.device(self.device):
      result = {k: v.numpy() for k, v in self._score(dict(features),
                                                     dict(labels)).items()}
    n = len(next(iter(labels.values())))
    for term in self.spec.terms:
      shape = result[f"loss_{term.name}"].shape
      if shape != (n,):
        raise LossShapeError(
            f"{term.custom or term.loss_name!r} must return one loss per"
            f" example, shape ({n},); it returned shape {shape}")
    # Keras losses clip probabilities, which can turn a NaN prediction into a
    # finite loss: an example with a non-finite input or prediction gets a
    # NaN loss instead, so it is counted and flagged `non_finite`.
    finite = result.pop("finite")
    if not finite.all():
      for key in [k for k in result if k == "loss" or k.startswith("loss_")]:
        result[key] = np.where(finite, result[key], np.nan)
    return result

  def score(self, source: str, batch: pa.RecordBatch
           ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]]]:
    """Scores one batch read from `source`.

    Rows that cannot be scored (a missing, mis-sized or mistyped feature,
    label or weight; an id or slice that is not UTF-8; a class label that is
    not an integer or out of range; a weight that is not finite or is
    negative) become dead-letter entries; the rest are scored together.

    Returns:
      `(scored, dead_letters)`: the scored batch (schema `scored_schema()`),
      None when no row could be scored, and the dead-letter entries.
    """
    spec = self.spec
    n = batch.num_rows
    problems: List[Problem] = []
    ids = None
    if spec.id_column:
      ids, found = _ids(batch, spec.id_column)
      problems += found
    features = {}
    for name, column, shape, dtype in spec.features:
      features[name], found = _dense(batch, column, "feature",
                                     MISSING_FEATURE, shape, np.dtype(dtype))
      problems += found
    labels = {}
    for term in spec.terms:
      if term.signals in ("sparse", "binary") or term.label_dtype == "int64":
        labels[term.name], found = _class_labels(batch, term)
      else:
        labels[term.name], found = _dense(
            batch, term.label_column, "label", MISSING_LABEL,
            term.label_shape, np.dtype(term.label_dtype))
      problems += found
    weights = None
    if spec.weight_column:
      weights, found = _weights(batch, spec.weight_column)
      problems += found
    slices = None
    if spec.slice_column:
      slices, found = _slices(batch, spec.slice_column)
      problems += found

    bad = np.zeros(n, dtype=bool)
    for problem in problems:
      bad |= problem.rows
    dead = self._dead_letters(source, ids, problems, bad)
    if bad.all():
      return None, dead
    if bad.any():
      keep = ~bad
      features = {k: v[keep] for k, v in features.items()}
      labels = {k: v[keep] for k, v in labels.items()}
      keep_arrow = pa.array(keep)
      ids = ids.filter(keep_arrow) if ids is not None else None
      weights = weights[keep] if weights is not None else None
      slices = slices.filter(keep_arrow) if slices is not None else None
    if ids is None:
      ids = cols.fingerprints(*[features[name] for name, *_ in spec.features],
                              *labels.values())
    result = self.score_arrays(features, labels)
    return self._to_record_batch(ids, result, weights, slices), dead

  @staticmethod
  def _dead_letters(source: str, ids: Optional[pa.Array],
                    problems: Sequence[Problem],
                    bad: np.ndarray) -> List[Dict[str, Any]]:
    """One entry per `bad` row `(N,)`: the first problem's reason, and every
    problem's message."""
    entries = []
    for row in np.flatnonzero(bad).tolist():
      found = [p for p in problems if p.rows[row]]
      messages = [p.message if p.values is None else
                  p.message.replace("{value}", _format_value(p.values[row]))
                  for p in found]
      id_ = ids[row].as_py() if ids is not None else None
      entries.append(dead_letter(source, id_, "; ".join(messages),
                                 found[0].reason))
    return entries

  def _to_record_batch(self, ids, result, weights, slices) -> pa.RecordBatch:
    spec = self.spec
    loss = result["loss"].astype(np.float64)
    arrays = {"id": ids, "loss": pa.array(loss)}
    if spec.weight_column:
      arrays["weighted_loss"] = pa.array(loss * weights)
    if spec.multi_output:
      for term in spec.terms:
        key = f"loss_{term.name}"
        arrays[key] = pa.array(result[key].astype(np.float64))
    if spec.is_classification:
      arrays["given_label"] = pa.array(result["given_label"].astype(np.int64))
      arrays["predicted_label"] = pa.array(
          result["predicted_label"].astype(np.int64))
      arrays["self_confidence"] = pa.array(
          result["self_confidence"].astype(np.float64))
      arrays["margin"] = pa.array(result["margin"].astype(np.float64))
    if spec.slice_column:
      arrays[SLICE_COLUMN] = slices
    if spec.keep_probs:
      probs = np.ascontiguousarray(result["probs"], dtype=np.float32)
      arrays[PROBS_COLUMN] = pa.FixedSizeListArray.from_arrays(
          pa.array(probs.reshape(-1)), probs.shape[1])
    return pa.RecordBatch.from_arrays(list(arrays.values()),
                                      schema=spec.scored_schema())


def feature_inputs(model_inputs: Tuple[TensorInfo, ...],
                   feature_columns) -> List[Tuple[str, str]]:
  """Pairs each model input with its data column.

  Args:
    model_inputs: the model's inputs.
    feature_columns: None (columns named as the inputs), a list (in the
      model's input order) or a mapping `{model input: column}`.

  Returns:
    `[(model input name, column name)]` in the model's input order.
  """
  from lossaudit.config import ConfigError  # pylint: disable=g-import-not-at-top

  names = [t.name for t in model_inputs]
  if feature_columns is None:
    return [(n, n) for n in names]
  if isinstance(feature_columns, Mapping):
    missing = [n for n in names if n not in feature_columns]
    extra = [k for k in feature_columns if k not in names]
    if missing or extra:
      raise ConfigError(
          f"input.feature_columns: expected a column for each model input"
          f" {names}. Received: {dict(feature_columns)!r}")
    return [(n, feature_columns[n]) for n in names]
  if len(feature_columns) != len(names):
    raise ConfigError(
        f"input.feature_columns: expected {len(names)} columns, one per model"
        f" input {names}. Received: {list(feature_columns)!r}")
  return list(zip(names, feature_columns))
