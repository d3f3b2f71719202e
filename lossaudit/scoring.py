"""Scoring Arrow batches: per-sample losses and class signals, per batch.

`BatchScorer` is the plain handler class behind the `ScoreBatches` transform
(as Beam's ModelHandler is behind RunInference). Scoring one batch is four
parts, each its own function:

- `model_inputs.read_model_inputs`: the batch → ids, features, labels,
  weights and slices, and the rows that cannot be scored (numpy and Arrow);
- `dead_letters.from_problems`: those rows → dead-letter entries;
- `loss_graph`: one traced `tf.function` whose batch axis is unknown, so
  batches of any size reuse the same graph;
- `scored_batch`: the losses and signals → the scored RecordBatch.

Loading the model and choosing its device are `lossaudit.model`'s.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import tensorflow as tf

from lossaudit import columns as cols
from lossaudit import dead_letters, losses
from lossaudit.errors import op_error_line
from lossaudit.model import (
  AuditModel,
  PredictionsModel,
  load_models,
  select_device,
)
from lossaudit.model_inputs import (
  ModelInputs,
  Ragged,
  pad_value,
  read_model_inputs,
)
from lossaudit.spec import (
  AMBIGUOUS,
  CHECKPOINT_COLUMN,
  CHECKPOINT_CORRECT_COLUMN,
  CHECKPOINT_MARGINS_COLUMN,
  DYNAMICS,
  EASY,
  HARD,
  MAX_TARGET_WIDTH,
  POSITION_COLUMN,
  PROBS_COLUMN,
  SLICE_COLUMN,
  SOURCE_COLUMN,
  Feature,
  LossTerm,
  ScoringSpec,
)

# The model's errors that a record's data can cause: one record is rejected.
DATA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)

# Prefix of the model outputs `loss_graph(with_outputs=True)` returns.
OUTPUT_PREFIX = "output:"


class LossShapeError(ValueError):
  """A loss that does not give one value per example."""


# The loss graph: one traced function from dense feature and label tensors to
# `(N,)` losses and class signals.


def loss_graph(spec: ScoringSpec, models: Sequence[AuditModel],
               traced: Optional[Dict[str, str]] = None,
               with_outputs: bool = False,
               dynamics_models: Sequence[AuditModel] = ()
               ) -> Callable[..., Any]:
  """The spec's losses on the predictions of `models`, as one traced function.

  Its batch axis is unknown, so batches of any size reuse one graph. Builds
  the loss functions (custom ones are imported here).

  Args:
    spec: what to score.
    models: the checkpoints that score each example, oldest first (one
      model without checkpoints); the losses and class signals are the
      last's, the training dynamics everyone's.
    traced: when the function is traced, `traced["computed_from"]` is set
      to `computed_from` of the (last model's) predictions.
    with_outputs: whether to return each term's model output `(N, ...)` as
      `OUTPUT_PREFIX + output` too (the pre-run check reads them).
    dynamics_models: the checkpoints of the model trained on every row
      (`spec.dynamics_paths`): the training dynamics are theirs.

  Returns:
    A `tf.function` of `(features, labels)`: `{model input: (N,) + shape}`
    and `{term name: (N,) + label_shape}` tensors → `(N,)` tensors `loss`,
    `loss_<name>` per term and `finite` (whether the row's inputs and
    predictions are finite), plus `given_label`, `predicted_label`,
    `self_confidence`, `margin` and `probs` `(N, K)` (with `keep_probs`) for
    a classifier, and the `DYNAMICS` over several checkpoints. With
    `spec.select_checkpoint`, also `by_checkpoint`: a list of each
    checkpoint's losses and class signals (the top level holds the last's).
  """
  # A custom loss keeps AutoGraph (Python `if` on a tensor works, as it did
  # before): it is a `tf.function` of its own, traced inside this one.
  loss_fns = [tf.function(term.build_loss()) if term.custom
              else term.build_loss() for term in spec.terms]

  feature_specs = {f.model_input: _input_spec(f) for f in spec.features}
  label_specs = {
      t.name: tf.TensorSpec((None,) + tuple(t.label_shape),
                            tf.as_dtype(t.label_dtype)) for t in spec.terms
  }
  # No AutoGraph: this code has no tensor-dependent Python control flow, and
  # AutoGraph never converts `keras` (the model, its losses) anyway.
  # Converting it cost about half a second of each run's pre-run check.
  # A partial, not a closure: TensorFlow counts the traces of closures of
  # one code together, and warns of retracing at the fifth fold's graph.
  graph = functools.partial(_loss_outputs, spec, tuple(models),
                            tuple(dynamics_models), loss_fns, traced,
                            with_outputs)
  return tf.function(graph, input_signature=[feature_specs, label_specs],
                     autograph=False)


def _loss_outputs(spec: ScoringSpec, models: Sequence[AuditModel],
                  dynamics_models: Sequence[AuditModel],
                  loss_fns: List[Callable], traced: Optional[Dict[str, str]],
                  with_outputs: bool, features: Mapping[str, tf.Tensor],
                  labels: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
  """The body of `loss_graph`'s function."""
  every = [model(features) for model in models]
  if traced is not None:
    traced["computed_from"] = computed_from(spec.terms, every[-1])
  scored = features
  if spec.predictions_kind and dynamics_models:
    # The predictions are the one input of what is scored; the full model's
    # checkpoints read the others.
    column = spec.features[0].model_input
    scored = {column: features[column]}
    features = {k: v for k, v in features.items() if k != column}
  outputs = _prediction_outputs(spec, loss_fns, with_outputs, scored,
                                labels, every[-1])
  if spec.select_checkpoint:
    outputs["by_checkpoint"] = [
        _prediction_outputs(spec, loss_fns, False, scored, labels, p)
        for p in every[:-1]] + [dict(outputs)]
  if spec.classifier and (dynamics_models or len(every) > 1):
    if dynamics_models:
      every = [model(features) for model in dynamics_models]
    term = spec.classifier
    outputs.update(_dynamics(term, outputs["given_label"],
                             [_output(p, term.output) for p in every],
                             _rows_finite(list(features.values())),
                             spec.checkpoint_margins))
  return outputs


def _output(predictions: Mapping[str, tf.Tensor], name: str) -> tf.Tensor:
  """Output `name` of a model, or its only output (a full model's
  checkpoints beside a predictions column)."""
  if name in predictions or len(predictions) != 1:
    return predictions[name]
  return next(iter(predictions.values()))


def _prediction_outputs(spec: ScoringSpec, loss_fns: List[Callable],
                        with_outputs: bool, features: Mapping[str, tf.Tensor],
                        labels: Mapping[str, tf.Tensor],
                        predictions: Mapping[str, tf.Tensor]
                        ) -> Dict[str, tf.Tensor]:
  """The losses and class signals of one checkpoint's `predictions`."""
  outputs = {"finite": _rows_finite(
      list(features.values()) +
      [predictions[term.output] for term in spec.terms])}
  outputs.update(_term_losses(spec.terms, loss_fns, labels, predictions))
  if with_outputs:
    outputs.update({OUTPUT_PREFIX + t.output: predictions[t.output]
                    for t in spec.terms})
  if spec.deviance_term:
    term = spec.deviance_term
    outputs["deviance"] = losses.reduce_per_sample(losses.unit_deviance(
        term.loss_name, labels[term.name], predictions[term.output],
        dict(term.args)), term.reduce)
  if spec.target_term:
    outputs.update(_targets(labels[spec.target_term.name],
                            predictions[spec.target_term.output]))
  if spec.classifier:
    term = spec.classifier
    outputs.update(_class_signals(term, labels[term.name],
                                  predictions[term.output], spec.keep_probs))
  return outputs


def _dynamics(term: LossTerm, given: tf.Tensor, outputs: List[tf.Tensor],
              inputs_finite: tf.Tensor, with_checkpoints: bool = False
              ) -> Dict[str, tf.Tensor]:
  """`losses.training_dynamics` of the C checkpoints' `outputs` `(N, ...)`,
  and `dynamics_finite` `(N,)`: whether their inputs (`inputs_finite`) and
  every checkpoint's output are finite (a NaN input can give a finite
  output: `relu(NaN)` is 0).
  `with_checkpoints`: also each checkpoint's `checkpoint_margins`,
  `checkpoint_correct` and `checkpoint_finite` (whether its output is)
  `(N, C)`.

  Each checkpoint is reduced to `(N,)` values before they are stacked, so
  a step holds `(C, N)`, never `(C, N, K)`.
  """
  parts = [losses.given_label_signals(
      losses.class_probabilities(y, term.signals, term.from_logits),
      losses.class_log_probabilities(y, term.signals, term.from_logits),
      given) for y in outputs]
  stacked = {key: tf.stack([part[key] for part in parts])
             for key in parts[0]}
  result = losses.training_dynamics(**stacked)
  result["dynamics_finite"] = _rows_finite(outputs) & inputs_finite
  if with_checkpoints:
    result["checkpoint_margins"] = tf.transpose(stacked["margin"])
    result["checkpoint_correct"] = tf.transpose(stacked["correct"]) > 0
    result["checkpoint_finite"] = tf.stack(
        [_rows_finite([y]) & inputs_finite for y in outputs], axis=1)
  return result


def computed_from(terms: Tuple[LossTerm, ...],
                  predictions: Mapping[str, tf.Tensor]) -> str:
  """`logits` when there is a crossentropy and every one is computed from
  logits, else `outputs`.

  Keras computes a crossentropy from the logits of a softmax or sigmoid
  output layer (the `_keras_logits` its activation leaves on the output,
  or its op), as `fit` does: no probability is clipped at 1e-7. A SavedModel
  signature returns only the probabilities: they are clipped. Other losses
  are computed from the outputs as they are.
  """
  crossentropies = [t for t in terms if t.loss and t.loss.logits_op]
  for term in crossentropies:
    output = predictions[term.output]
    op = getattr(getattr(output, "op", None), "type", None)
    # Keras' own rule (`_get_logits`): logits left by any Keras activation,
    # or the loss's own activation op (`losses.Loss.logits_op`).
    from_activation = (hasattr(output, "_keras_logits") or
                       op == term.loss.logits_op)
    if not (term.from_logits or from_activation):
      return "outputs"
  return "logits" if crossentropies else "outputs"


def _input_spec(feature: Feature):
  """The tensor spec of one batched model input."""
  shape = (None,) + tuple(feature.shape)
  if feature.ragged:
    return tf.RaggedTensorSpec(shape, tf.as_dtype(feature.dtype),
                               ragged_rank=1, row_splits_dtype=tf.int64)
  return tf.TensorSpec(shape, tf.as_dtype(feature.dtype))


def model_feeds(spec: ScoringSpec, features: Mapping[str, Any]
                ) -> Dict[str, Any]:
  """`features` as the model takes them: a `Ragged` feature padded with
  `spec.pad_value` (0 when None), or a `tf.RaggedTensor`."""
  feeds = {}
  for feature in spec.features:
    value = features[feature.model_input]
    if isinstance(value, Ragged):
      if feature.ragged:
        value = tf.RaggedTensor.from_row_lengths(value.values, value.lengths)
      else:
        value = value.padded(pad_value(spec, feature))
    feeds[feature.model_input] = value
  return feeds


def _term_losses(terms: Tuple[LossTerm, ...], loss_fns: List[Callable],
                 labels: Mapping[str, tf.Tensor],
                 predictions: Mapping[str, tf.Tensor]
                 ) -> Dict[str, tf.Tensor]:
  """`loss_<name>` `(N,)` of each term, and `loss` `(N,)`: Σ weight · term."""
  outputs = {}
  total = None
  for term, loss_fn in zip(terms, loss_fns):
    label = labels[term.name]
    kept = None if term.ignore_class is None else tf.not_equal(
        label, tf.cast(term.ignore_class, label.dtype))
    part = losses.reduce_per_sample(
        loss_fn(label, predictions[term.output]), term.reduce, kept)
    outputs[f"loss_{term.name}"] = part
    weighted = part if term.weight == 1 else part * term.weight
    total = weighted if total is None else total + weighted
  outputs["loss"] = total
  return outputs


def _targets(label: tf.Tensor, y_pred: tf.Tensor) -> Dict[str, tf.Tensor]:
  """`target` and `prediction` `(N, W)` float64, and `error_norm` `(N,)`."""
  rows = tf.shape(y_pred)[0]
  target = tf.reshape(tf.cast(label, tf.float64), [rows, -1])
  prediction = tf.reshape(tf.cast(y_pred, tf.float64), [rows, -1])
  return {"target": target, "prediction": prediction,
          "error_norm": tf.norm(prediction - target, axis=1)}


def _class_signals(term: LossTerm, label: tf.Tensor, y_pred: tf.Tensor,
                   keep_probs: bool) -> Dict[str, tf.Tensor]:
  """The given and predicted labels `(N,)` int64, self-confidence and margin
  `(N,)` of a classifier term, and its probabilities `(N, K)` as `probs`
  with `keep_probs`."""
  probs = losses.class_probabilities(y_pred, term.signals, term.from_logits)
  if term.signals == "categorical":
    given = tf.argmax(label, axis=1, output_type=tf.int64)
  else:
    given = tf.cast(tf.reshape(label, [-1]), tf.int64)
  outputs = {"given_label": given}
  outputs.update(losses.classification_signals(probs, given))
  if keep_probs:
    outputs["probs"] = probs
  return outputs


def _rows_finite(tensors: List[tf.Tensor]) -> tf.Tensor:
  """`(N,)` bool: whether every float value of row n of each `(N, ...)` is
  finite."""
  finite = None
  tensors = [x for x in tensors if x.dtype != tf.string] or tensors[:1]
  for x in tensors:
    if not x.dtype.is_floating:
      continue
    if isinstance(x, tf.RaggedTensor):
      x = x.to_tensor()  # Padded with 0, which is finite.
    rows = tf.reduce_all(
        tf.math.is_finite(tf.reshape(x, [tf.shape(x)[0], -1])), axis=1)
    finite = rows if finite is None else finite & rows
  if finite is None:
    first = tensors[0]
    rows = first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(
        first)[0]
    finite = tf.ones([rows], tf.bool)
  return finite


def _check_loss_shapes(terms: Tuple[LossTerm, ...],
                       result: Mapping[str, np.ndarray], n: int) -> None:
  """Raises LossShapeError unless each term's loss is `(n,)`."""
  for term in terms:
    shape = result[f"loss_{term.name}"].shape
    if shape != (n,):
      raise LossShapeError(
          f"{term.custom or term.loss_name!r} must return one loss per"
          f" example, shape ({n},); it returned shape {shape}")


def _nan_where_not_finite(result: Dict[str, Any],
                          dynamics_finite: Optional[np.ndarray] = None
                          ) -> Dict[str, Any]:
  """`result` without `finite`: its losses NaN in the rows not `finite`, its
  training dynamics NaN where a checkpoint's output is not finite
  (`dynamics_finite`) either, and each checkpoint's margin NaN (and not
  correct) where its own output is not.

  Keras losses clip probabilities, which can turn a NaN prediction into a
  finite loss: an example with a non-finite input or (last) prediction gets
  a NaN loss instead, so it is counted and flagged `non_finite`.
  """
  finite = result.pop("finite")
  dynamics = (finite if dynamics_finite is None else dynamics_finite) & (
      finite)
  if not finite.all():
    for key in [k for k in result
                if k in ("loss", "deviance") or k.startswith("loss_")]:
      result[key] = np.where(finite, result[key], np.nan)
  if not dynamics.all():
    for key in DYNAMICS:
      if key in result:
        result[key] = np.where(dynamics, result[key], np.nan)
  if "checkpoint_finite" in result:  # Each checkpoint's own, for early AUM.
    each = result.pop("checkpoint_finite") & finite[:, None]
    result["checkpoint_margins"] = np.where(
        each, result["checkpoint_margins"], np.nan)
    result["checkpoint_correct"] &= each
  return result


class BatchScorer:
  """Scores Arrow record batches with one model and its loss terms.

  Reading a batch (`model_inputs`), its dead letters (`dead_letters`), the
  loss graph (`loss_graph`) and the scored batch (`scored_batch`) are each
  their own function; this class holds the model and the traced graph.

  Args:
    spec: what to score and how.
    model: an already loaded model (the pre-run check passes its own);
      loaded from `spec.model_path` when None.
    model_checked: whether the model is known to score this data (the
      pre-run check scored some of it): then a part whose every row fails
      alone is rejected row by row too (a shard of corrupt images), rather
      than raised as the model's error.
    max_rows: rows per call of the model (`batch_size`; a batch scored may
      hold more); None: a whole batch at a time. Halved on running out of
      memory.
    models: already loaded models `[fold][checkpoint]` (`load_models`), in
      place of `model`; with `spec.dynamics_paths`, their checkpoints are
      one more group, last (as `spec_models` gives them).
    with_outputs: whether `score_arrays` returns the model outputs too (see
      `loss_graph`).
  """

  def __init__(self, spec: ScoringSpec, model: Optional[AuditModel] = None,
               model_checked: bool = False, max_rows: Optional[int] = None,
               models: Optional[Sequence[Sequence[AuditModel]]] = None,
               with_outputs: bool = False):
    self.spec = spec
    self.model_checked = model_checked
    self.max_rows = max_rows
    self.halvings = 0
    self._lock = threading.Lock()
    self._thread = threading.local()
    self.device = select_device(spec.device)
    self._traced: Dict[str, str] = {}
    with tf.device(self.device):
      if models is None:
        models = ((model,),) if model is not None else spec_models(spec)
      self.models = models
      groups, dynamics = (models[:-1], models[-1]) if (
          spec.dynamics_paths) else (models, ())
      # One graph per fold; each holds every checkpoint's model.
      self._scores = [loss_graph(spec, group, self._traced, with_outputs,
                                 dynamics)
                      for group in groups]

  @property
  def computed_from(self) -> Optional[str]:
    """`logits` or `outputs` (see `computed_from`); None before the first
    batch is scored."""
    return self._traced.get("computed_from")

  def score_arrays(self, features: Mapping[str, np.ndarray],
                   labels: Mapping[str, np.ndarray], fold: int = 0
                   ) -> Dict[str, np.ndarray]:
    """Runs the traced function of `fold`'s model on dense arrays; returns
    `(N,)` numpy arrays.

    Raises:
      LossShapeError: when a loss does not give one value per example.
    """
    with tf.device(self.device):
      result = tf.nest.map_structure(lambda v: v.numpy(), self._scores[fold](
          model_feeds(self.spec, features), dict(labels)))
    n = len(next(iter(labels.values())))
    each = result.pop("by_checkpoint", None)
    _check_loss_shapes(self.spec.terms, result, n)
    dynamics_finite = result.pop("dynamics_finite", None)
    if each is not None:
      result["by_checkpoint"] = [_nan_where_not_finite(part)
                                 for part in each]
    return _nan_where_not_finite(result, dynamics_finite)

  def score(self, source: str, batch: pa.RecordBatch
           ) -> Tuple[Optional[pa.RecordBatch], List[Dict[str, Any]]]:
    """Scores one batch read from `source`.

    Rows that cannot be scored (see `read_model_inputs`) become dead-letter
    entries; the rest are scored together (see `score_inputs`).

    Returns:
      `(scored, dead_letters)`: the scored batch (schema `scored_schema()`),
      None when no row could be scored, and the dead-letter entries.
    """
    checked = read_model_inputs(self.spec, batch)
    if self.spec.positions:
      checked = checked._replace(inputs=checked.inputs._replace(
          source=source))
    dead = dead_letters.from_problems(source, checked.inputs.ids,
                                      checked.problems, checked.bad)
    if checked.bad.all():
      return None, dead
    inputs = checked.inputs
    if inputs.folds is not None:  # Each fold's good rows together, in order.
      good = np.flatnonzero(~checked.bad)
      order = good[np.argsort(inputs.folds[good], kind="stable")]
      if len(order) != len(checked.bad) or (np.diff(order) < 0).any():
        inputs = inputs.take(order)
    elif checked.bad.any():
      inputs = inputs.rows(~checked.bad)
    scored, rejected = self.score_inputs(inputs)
    dead += [dead_letters.dead_letter(
        source, None if inputs.ids is None else inputs.ids[row].as_py(),
        message, dead_letters.MODEL_ERROR) for row, message in rejected]
    return scored, dead

  def score_inputs(self, inputs: ModelInputs
                   ) -> Tuple[Optional[pa.RecordBatch], List[Tuple[int, str]]]:
    """Scores N rows, in consecutive parts of `max_rows` (the last fewer).

    With folds, the rows are sorted by fold and each part is one fold's,
    scored by its model.

    A data error of the model (`DATA_ERRORS`: a corrupt image in
    `decode_png`, ...) on a part splits it in halves until the rows that
    raise it are alone; those are rejected and the others scored. When every
    row of several fails alone and the model is not `model_checked`, the
    error is not the data's, and it is raised. Running out of memory halves
    `max_rows` for the rest of this scorer's life and scores the part again;
    a single row that does not fit is rejected.

    Returns:
      `(scored, rejected)`: the scored rows in order (None when none), and
      `(row, the error on one line)` of each rejected row.

    Raises:
      LossShapeError: a loss does not give one value per example.
    """
    n = len(next(iter(inputs.labels.values())))
    parts, rejected, errors = [], [], []
    # Row ranges [start, stop) still to score, in order.
    pending = [(0, n)] if inputs.folds is None else _runs(inputs.folds)
    while pending:
      start, stop = pending.pop(0)
      size = stop - start
      if self.max_rows and size > self.max_rows:
        pending[:0] = [(at, min(at + self.max_rows, stop))
                       for at in range(start, stop, self.max_rows)]
        continue
      part = inputs if size == n else inputs.slice(start, stop)
      fold = 0 if inputs.folds is None else int(inputs.folds[start])
      try:
        result = self.score_arrays(part.features, part.labels, fold)
      except tf.errors.ResourceExhaustedError as e:
        if size == 1:  # This one record does not fit: it alone is lost.
          errors.append(e)
          rejected.append((start, op_error_line(e)))
          continue
        self._halve(size)
        pending.insert(0, (start, stop))
        continue
      except DATA_ERRORS as e:
        if size > 1:
          middle = start + size // 2
          pending[:0] = [(start, middle), (middle, stop)]
          continue
        errors.append(e)
        rejected.append((start, op_error_line(e)))
        continue
      parts.append(scored_batch(self.spec, part, result))
    if not parts and len(rejected) > 1 and not self.model_checked:
      raise errors[0]
    if not parts:
      return None, rejected
    if len(parts) == 1:
      return parts[0], rejected
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0], \
        rejected

  def _halve(self, rows: int) -> None:
    """Scores at most `rows // 2` rows at a time from now on (the threads
    sharing this scorer too)."""
    with self._lock:
      self.max_rows = min(self.max_rows or rows, rows) // 2 or 1
      self.halvings += 1
      self._thread.halvings = self.halvings_in_thread() + 1
    logging.warning("lossaudit: out of memory scoring %d rows; batches are"
                    " now at most %d rows", rows, self.max_rows)

  def halvings_in_thread(self) -> int:
    """How many times this thread halved `max_rows` (for its metric)."""
    return getattr(self._thread, "halvings", 0)


def _runs(values: np.ndarray) -> List[Tuple[int, int]]:
  """The `[start, stop)` ranges of equal consecutive `values` `(N,)`."""
  if not len(values):
    return [(0, 0)]
  cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
  bounds = [0, *cuts.tolist(), len(values)]
  return list(zip(bounds[:-1], bounds[1:]))


def spec_models(spec: ScoringSpec) -> Tuple[Tuple[Any, ...], ...]:
  """The models of `spec`, `[fold][checkpoint]`: loaded from its paths, or
  a `PredictionsModel` reading its first feature; then with
  `spec.dynamics_paths`, their checkpoints as one more group."""
  dynamics = (spec.dynamics_paths,) if spec.dynamics_paths else ()
  if spec.predictions_kind:
    feature = spec.features[0]
    found = ((PredictionsModel(feature.column, feature.shape[0]),),)
    return found + (load_models(
        dynamics, spec.signature, spec.device,
        pinned=dict(spec.model_versions), dynamics_last=True)
                    if dynamics else ())
  return load_models((spec.model_paths or ((spec.model_path,),)) + dynamics,
                     spec.signature, spec.device,
                     pinned=dict(spec.model_versions),
                     dynamics_last=bool(dynamics))


def regions(confidence: np.ndarray, variability: np.ndarray,
            thresholds: Tuple[float, float]) -> pa.Array:
  """The data-map region of each row `(N,)`: `ambiguous` when its
  variability is at least `thresholds[1]`, else `easy` when its confidence
  is at least `thresholds[0]`, else `hard`; null when either is NaN."""
  easy, ambiguous = thresholds
  codes = np.where(variability >= ambiguous, 1,
                   np.where(confidence >= easy, 0, 2))
  names = np.array([EASY, AMBIGUOUS, HARD], dtype=object)
  return pa.array(names[codes], pa.string(), mask=~(
      np.isfinite(confidence) & np.isfinite(variability)))


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _hashable(value: Any) -> np.ndarray:
  """A feature `(N, ...)` as fixed-size numeric rows for `cols.fingerprints`:
  strings become their 64-bit fingerprints, and a `Ragged` feature one
  64-bit hash of each row's length and values (so a row hashes the same
  whatever the batch it is in)."""
  if isinstance(value, Ragged):
    n, m = len(value.lengths), len(value.values)
    flat = _hashable(value.values.reshape(
        m, int(np.prod(value.values.shape[1:], dtype=np.int64))))
    flat = flat.reshape(m, int(np.prod(flat.shape[1:], dtype=np.int64)))
    words = np.ascontiguousarray(flat).view(np.uint8).reshape(
        m, flat.shape[1] * flat.dtype.itemsize)
    per_value = cols.fingerprints_u64(words)
    starts = np.cumsum(value.lengths) - value.lengths
    position = (np.arange(len(per_value)) -
                np.repeat(starts, value.lengths)).astype(np.uint64)
    with np.errstate(over="ignore"):
      terms = per_value * (_HASH_MULTIPLIER ** (position + np.uint64(1)))
    hashes = value.lengths.astype(np.uint64) * _HASH_MULTIPLIER
    np.add.at(hashes, np.repeat(np.arange(n), value.lengths), terms)
    return hashes
  if value.dtype == object:
    return cols.fingerprints_u64(value.reshape(-1)).reshape(len(value), -1)
  return value


def scored_batch(spec: ScoringSpec, inputs: ModelInputs,
                 result: Mapping[str, Any]) -> pa.RecordBatch:
  """The scored batch of N rows, schema `spec.scoring_schema()`.

  With `spec.select_checkpoint`, each row once per checkpoint of its fold
  (oldest first, `CHECKPOINT_COLUMN` saying which): C·N rows.

  Args:
    spec: what was scored.
    inputs: the N rows scored; rows without ids get content fingerprints.
    result: `BatchScorer.score_arrays`' `(N,)` arrays.
  """
  if inputs.ids is None:
    inputs = inputs._replace(ids=cols.fingerprints(
        *map(_hashable, inputs.features.values()), *inputs.labels.values()))
  if not spec.select_checkpoint:
    return _scored_rows(spec, inputs, result)
  shared = {k: v for k, v in result.items() if k != "by_checkpoint"}
  parts = []
  for checkpoint, own in enumerate(result["by_checkpoint"]):
    rows = _scored_rows(spec, inputs, {**shared, **own})
    parts.append(rows.append_column(CHECKPOINT_COLUMN, pa.array(
        np.full(rows.num_rows, checkpoint, np.int64))))
  return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _scored_rows(spec: ScoringSpec, inputs: ModelInputs,
                 result: Mapping[str, np.ndarray]) -> pa.RecordBatch:
  """The scored batch of N rows with ids, schema `spec.scored_schema()`."""
  loss = result["loss"].astype(np.float64)
  arrays = {"id": inputs.ids, "loss": pa.array(loss)}
  if spec.weight_column:
    arrays["weighted_loss"] = pa.array(loss * inputs.weights)
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
    if spec.class_names:
      names = pa.array(spec.class_names, pa.string())
      arrays["given_class"] = names.take(arrays["given_label"])
      arrays["predicted_class"] = names.take(arrays["predicted_label"])
  if spec.deviance_term:
    deviance = result["deviance"].astype(np.float64)
    arrays["deviance"] = pa.array(deviance)
    if spec.weight_column:
      arrays["weighted_deviance"] = pa.array(deviance * inputs.weights)
  if spec.target_term:
    arrays.update(_target_arrays(result, spec.target_width))
  if spec.num_folds:
    arrays["fold"] = pa.array(inputs.folds.astype(np.int64))
  if spec.dynamics:
    for name in DYNAMICS:
      arrays[name] = pa.array(result[name].astype(np.float64))
    arrays["region"] = regions(result["confidence"], result["variability"],
                               spec.regions)
  if spec.slice_column:
    arrays[SLICE_COLUMN] = inputs.slices
  if spec.keep_probs:
    probs = np.ascontiguousarray(result["probs"], dtype=np.float32)
    arrays[PROBS_COLUMN] = pa.FixedSizeListArray.from_arrays(
        pa.array(probs.reshape(-1)), probs.shape[1])
  if spec.positions:
    # None in batches not read from a file (the pre-run probe's).
    arrays[POSITION_COLUMN] = pa.array(inputs.positions, pa.int64()) if (
        inputs.positions is not None) else pa.nulls(len(loss), pa.int64())
    arrays[SOURCE_COLUMN] = pa.array([inputs.source] * len(loss),
                                     pa.string())
  if spec.checkpoint_margins:
    margins = np.ascontiguousarray(result["checkpoint_margins"], np.float32)
    correct = np.ascontiguousarray(result["checkpoint_correct"], bool)
    c = margins.shape[1]
    arrays[CHECKPOINT_MARGINS_COLUMN] = pa.FixedSizeListArray.from_arrays(
        pa.array(margins.reshape(-1)), c)
    arrays[CHECKPOINT_CORRECT_COLUMN] = pa.FixedSizeListArray.from_arrays(
        pa.array(correct.reshape(-1)), c)
  return pa.RecordBatch.from_arrays(list(arrays.values()),
                                    schema=spec.scored_schema())


def _target_arrays(result: Mapping[str, np.ndarray], width: int
                   ) -> Dict[str, pa.Array]:
  """The target columns of the scored schema (`ScoringSpec.scored_schema`)
  of `result`'s `(N, width)` targets and predictions."""
  if width == 1:
    return {name: pa.array(result[name].reshape(-1))
            for name in ("target", "prediction")}
  arrays = {}
  if width <= MAX_TARGET_WIDTH:
    arrays = {name: pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(result[name]).reshape(-1)), width)
              for name in ("target", "prediction")}
  arrays["error_norm"] = pa.array(result["error_norm"])
  return arrays
