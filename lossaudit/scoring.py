"""Scoring one Arrow batch: validation, model, per-sample loss and signals.

`BatchScorer` is the plain handler class behind the `ScoreBatches` transform
(as Beam's ModelHandler is behind RunInference): it owns the model and one
traced `tf.function` whose batch axis is unknown, so batches of any size reuse
the same graph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa

from lossaudit import columns as cols
from lossaudit import losses
from lossaudit.model import AuditModel, TensorInfo

# Columns of the scored batches that are not written to losses/.
SLICE_COLUMN = "__slice__"


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
  """All a worker needs to score batches; small and picklable.

  Attributes:
    model_path: the model file or directory.
    signature: the SavedModel signature.
    output: the scored model output, None for the only one.
    features: `(model input, column, per-example shape, dtype)` per input.
    label_column: the label column.
    label_kind: `sparse`, `categorical`, `binary` or `regression`.
    label_shape: per-example shape of the labels fed to the loss.
    num_classes: K for classification, else None.
    loss_name: a Keras loss name.
    from_logits: whether the output is logits.
    reduce: `mean` or `sum` over non-batch axes.
    loss_args: extra Keras loss arguments.
    custom_loss: `package.module:function`, replacing `loss_name`.
    id_column: the id column, None for content fingerprints.
    weight_column: the sample-weight column or None.
    slice_column: the `stats.slice_by` column or None.
  """

  model_path: str
  signature: str
  output: Optional[str]
  features: Tuple[Tuple[str, str, Tuple[int, ...], str], ...]
  label_column: str
  label_kind: str
  label_shape: Tuple[int, ...]
  num_classes: Optional[int]
  loss_name: str
  from_logits: bool
  reduce: str
  loss_args: Tuple[Tuple[str, Any], ...] = ()
  custom_loss: Optional[str] = None
  id_column: Optional[str] = None
  weight_column: Optional[str] = None
  slice_column: Optional[str] = None

  @property
  def is_classification(self) -> bool:
    return self.label_kind != "regression"

  def scored_schema(self) -> pa.Schema:
    """The Arrow schema of scored batches (and of `losses/` files)."""
    fields = [pa.field("id", pa.string()), pa.field("loss", pa.float64())]
    if self.weight_column:
      fields.append(pa.field("weighted_loss", pa.float64()))
    if self.is_classification:
      fields += [
          pa.field("given_label", pa.int64()),
          pa.field("predicted_label", pa.int64()),
          pa.field("self_confidence", pa.float64()),
          pa.field("margin", pa.float64()),
      ]
    if self.slice_column:
      fields.append(pa.field(SLICE_COLUMN, pa.string()))
    return pa.schema(fields)


class LossShapeError(ValueError):
  """A loss that does not give one value per example."""


def dead_letter(source: str, id_: Optional[str], error: str) -> Dict[str, Any]:
  """One dead-letter entry, as written to `dead_letter/*.jsonl`."""
  return {"source": source, "id": id_, "error": error}


def _width(shape: Tuple[int, ...]) -> int:
  return int(math.prod(shape)) if shape else 1


class BatchScorer:
  """Scores Arrow record batches with one model and one loss.

  Args:
    spec: what to score and how.
    model: an already loaded model (the pre-run check passes its own);
      loaded from `spec.model_path` when None.
  """

  def __init__(self, spec: ScoringSpec, model: Optional[AuditModel] = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    self.spec = spec
    self.model = model or AuditModel(spec.model_path, spec.signature,
                                     spec.output)
    if spec.custom_loss:
      self._loss_fn = losses.import_custom_loss(spec.custom_loss)
    else:
      self._loss_fn = losses.keras_loss(spec.loss_name, spec.from_logits,
                                        dict(spec.loss_args))
    feature_specs = {
        name: tf.TensorSpec((None,) + tuple(shape), tf.as_dtype(dtype))
        for name, _, shape, dtype in spec.features
    }
    label_dtype = tf.int64 if spec.label_kind == "sparse" else tf.float32
    label_spec = tf.TensorSpec((None,) + tuple(spec.label_shape), label_dtype)
    self._score = tf.function(
        self._score_graph, input_signature=[feature_specs, label_spec])

  def _score_graph(self, features, labels):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    spec = self.spec
    y_pred = self.model(features)
    per_sample = self._loss_fn(labels, y_pred)
    outputs = {"loss": losses.reduce_per_sample(per_sample, spec.reduce)}
    if spec.is_classification:
      probs = losses.class_probabilities(y_pred, spec.label_kind,
                                         spec.from_logits)
      if spec.label_kind == "categorical":
        given = tf.argmax(labels, axis=1, output_type=tf.int64)
      else:
        given = tf.cast(tf.reshape(labels, [-1]), tf.int64)
      outputs["given_label"] = given
      outputs.update(losses.classification_signals(probs, given))
    return outputs

  def score_arrays(self, features: Mapping[str, np.ndarray],
                   labels: np.ndarray) -> Dict[str, np.ndarray]:
    """Runs the traced function on dense arrays; returns `(N,)` numpy arrays."""
    result = {k: v.numpy() for k, v in self._score(dict(features),
                                                   labels).items()}
    n = len(labels)
    if result["loss"].shape != (n,):
      name = self.spec.custom_loss or self.spec.loss_name
      raise LossShapeError(
          f"{name!r} must return one loss per example, shape ({n},); it"
          f" returned shape {result['loss'].shape}")
    return result

  def score(self, source: str, batch: pa.RecordBatch
           ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]]]:
    """Scores one batch read from `source`.

    Rows that cannot be scored (a missing or mis-sized feature, label or
    weight, a class label out of range) become dead-letter entries; the rest
    are scored together.

    Returns:
      `(scored, dead_letters)`: the scored batch (schema `scored_schema()`),
      None when no row could be scored, and the dead-letter entries.
    """
    spec = self.spec
    n = batch.num_rows
    problems: List[Tuple[np.ndarray, str]] = []

    def column(name: str, what: str):
      found = cols.optional_column(batch, name)
      if found is None:
        problems.append((np.ones(n, dtype=bool), f"missing {what} {name!r}"))
      return found

    def dense(name: str, what: str, shape, dtype) -> np.ndarray:
      width = _width(shape)
      found = column(name, what)
      if found is None:
        return np.zeros((n,) + tuple(shape), dtype=dtype)
      values, counts = cols.dense_values(found, width, dtype)
      problems.append((counts < 0, f"missing {what} {name!r}"))
      wrong = (counts >= 0) & (counts != width)
      if wrong.any():
        problems.append((wrong, f"{what} {name!r} has {{count}} values,"
                         f" expected {width}", counts))
      return values.reshape((n,) + tuple(shape))

    ids = None
    if spec.id_column:
      id_col = column(spec.id_column, "id column")
      if id_col is not None:
        ids = cols.first_as_string(id_col)
        problems.append((ids.is_null().to_numpy(zero_copy_only=False),
                         f"missing id column {spec.id_column!r}"))
    features = {
        name: dense(col, "feature", shape, np.dtype(dtype))
        for name, col, shape, dtype in spec.features
    }
    label_dtype = np.int64 if spec.label_kind == "sparse" else np.float32
    labels = dense(spec.label_column, "label", spec.label_shape, label_dtype)
    if spec.label_kind in ("sparse", "binary"):
      flat = labels.reshape(n)
      out_of_range = ~((flat >= 0) & (flat < spec.num_classes)) | (
          flat != np.floor(flat))
      problems.append(
          (out_of_range, f"label {{label}} out of range: expected an integer"
           f" class in [0, {spec.num_classes})", flat))
    weights = None
    if spec.weight_column:
      weights = dense(spec.weight_column, "weight", (), np.float64)
    slices = None
    if spec.slice_column:
      slice_col = cols.optional_column(batch, spec.slice_column)
      slices = (pa.nulls(n, pa.string()) if slice_col is None else
                cols.first_as_string(slice_col))
      slices = slices.fill_null("(missing)")

    bad = np.zeros(n, dtype=bool)
    for mask, *_ in problems:
      bad |= mask
    dead = self._dead_letters(source, ids, problems, bad)
    if bad.all():
      return None, dead
    if bad.any():
      keep = ~bad
      features = {k: v[keep] for k, v in features.items()}
      labels = labels[keep]
      keep_arrow = pa.array(keep)
      ids = ids.filter(keep_arrow) if ids is not None else None
      weights = weights[keep] if weights is not None else None
      slices = slices.filter(keep_arrow) if slices is not None else None
    if ids is None:
      ids = cols.fingerprints(*[features[name] for name, *_ in spec.features],
                              labels)
    result = self.score_arrays(features, labels)
    return self._to_record_batch(ids, result, weights, slices), dead

  @staticmethod
  def _dead_letters(source, ids, problems, bad) -> List[Dict[str, Any]]:
    entries = []
    for row in np.flatnonzero(bad):
      reasons = []
      for mask, message, *values in problems:
        if mask[row]:
          if values:
            value = values[0][row]
            value = int(value) if float(value).is_integer() else float(value)
            message = message.format(count=value, label=value)
          reasons.append(message)
      id_ = ids[int(row)].as_py() if ids is not None else None
      entries.append(dead_letter(source, id_, "; ".join(reasons)))
    return entries

  def _to_record_batch(self, ids, result, weights, slices) -> pa.RecordBatch:
    spec = self.spec
    loss = result["loss"].astype(np.float64)
    arrays = {"id": ids, "loss": pa.array(loss)}
    if spec.weight_column:
      arrays["weighted_loss"] = pa.array(loss * weights)
    if spec.is_classification:
      arrays["given_label"] = pa.array(result["given_label"].astype(np.int64))
      arrays["predicted_label"] = pa.array(
          result["predicted_label"].astype(np.int64))
      arrays["self_confidence"] = pa.array(
          result["self_confidence"].astype(np.float64))
      arrays["margin"] = pa.array(result["margin"].astype(np.float64))
    if spec.slice_column:
      arrays[SLICE_COLUMN] = slices
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
