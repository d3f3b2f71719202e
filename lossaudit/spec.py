"""What is scored, and what a scored batch holds; no TensorFlow.

The types every stage shares: `Feature` (a model input and its column),
`LossTerm` (one output's loss), `ScoringSpec` (all a worker needs to score
batches) with the Arrow schema of scored batches (`scored_schema`), and the
names of the internal columns that travel with the rows between stages and
are never written to `losses/`.

Reading a batch for the model is `model_inputs`'; scoring it, with
TensorFlow, is `scoring`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa

from lossaudit import losses

# Internal columns: each starts with `__` (`is_internal`).
# The column of serialized tf.Examples appended to TFRecord batches for a
# model input that takes them (`model.serialized_examples_input`).
RAW_RECORD_COLUMN = "__raw_record__"
# Each row's position in its source file (the record's index in a TFRecord
# file, the row's in a Parquet file), read for `output.clean`.
POSITION_COLUMN = "__position__"
# The file each scored row was read from (with `POSITION_COLUMN`).
SOURCE_COLUMN = "__source__"
# Each scored row's `stats.slice_by` value.
SLICE_COLUMN = "__slice__"
# Each scored row's class probabilities (`ScoringSpec.keep_probs`).
PROBS_COLUMN = "__probs__"
# The score column of a candidate table: the flag rules' score.
SCORE_COLUMN = "__score__"
# With `model.select_checkpoint: heldout_loss`, each row is scored by every
# checkpoint of its fold: this column says whose (0 the oldest) until each
# fold's checkpoint is selected.
CHECKPOINT_COLUMN = "__checkpoint__"
# With `model.dynamics_path` and early AUM: each row's margin `(C,)` (the
# given label's log-probability minus the largest other) and whether the
# most probable class is the given label `(C,)`, at each checkpoint of the
# full model.
CHECKPOINT_MARGINS_COLUMN = "__checkpoint_margins__"
CHECKPOINT_CORRECT_COLUMN = "__checkpoint_correct__"

# The training-dynamics columns of `model.checkpoints`
# (`losses.training_dynamics`), and the regions of the data map.
DYNAMICS = ("confidence", "variability", "correctness", "aum")
EASY, AMBIGUOUS, HARD = "easy", "ambiguous", "hard"

# Targets of at most this many values are written with each row; larger
# ones (images, sequences) only as the L2 norm of the error.
MAX_TARGET_WIDTH = 16


def is_internal(column: str) -> bool:
  return column.startswith("__")


class Feature(NamedTuple):
  """One model input and the data column it is read from.

  Attributes:
    model_input: the model input's name.
    column: the data column.
    shape: the per-example shape (no batch axis); only the first axis may
      be None (rows of any length, padded per batch or ragged).
    dtype: the input's dtype name (`string` for text and encoded images).
    ragged: whether the model takes a `tf.RaggedTensor`.
  """

  model_input: str
  column: str
  shape: Tuple[Optional[int], ...]
  dtype: str
  ragged: bool = False


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

  @property
  def loss(self) -> Optional[losses.Loss]:
    """The record of its loss; None for a custom loss."""
    return None if self.custom else losses.LOSSES.get(self.loss_name)

  @property
  def ignore_class(self) -> Optional[int]:
    """The label Keras' `ignore_class` argument ignores, or None."""
    return None if self.custom else dict(self.args).get("ignore_class")

  def build_loss(self):
    """The per-element loss function (imports a custom one, and Keras)."""
    if self.custom:
      return losses.with_arguments(losses.import_custom_loss(self.custom),
                                   dict(self.args), self.custom)
    return losses.keras_loss(self.loss_name, self.from_logits, dict(self.args))


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
  """All a worker needs to score batches; small and picklable.

  Attributes:
    model_path: the model file or directory.
    signature: the SavedModel signature.
    features: one `Feature` per model input, in the model's order (plain
      `(model input, column, shape, dtype)` tuples are made `Feature`s).
    terms: the loss terms, one per scored output.
    id_column: the id column, None for content fingerprints.
    weight_column: the sample-weight column or None.
    slice_column: the `stats.slice_by` column or None.
    keep_probs: whether scored batches carry the class probabilities
      (`PROBS_COLUMN`, for label-issue detection).
    device: `auto`, `cpu` or `gpu` (`runtime.device`).
    pad_value: pads rows shorter than their input (`input.pad_value`);
      inputs of unknown length are padded with 0 when None.
    truncate: cuts rows longer than a fixed-length input (`input.truncate`).
    class_names: the classifier's class names by index
      (`input.label_vocabulary`), or None.
    model_paths: the model of each fold (one without folds), as each
      checkpoint's path (one without checkpoints), oldest first; empty with
      `predictions_kind`.
    model_versions: `(path, lossaudit.model.remote_version)` of each remote
      model, as the run was planned: a worker refuses a model changed since.
    fold_column: the column of each example's held-out fold, or None: then
      `lossaudit.folds.fold_of(id, len(model_paths))` with folds.
    predictions_kind: `probabilities` or `logits` of the one feature, read
      in place of a model (`model.predictions_column`); None: a model.
    positions: whether scored batches carry each row's `POSITION_COLUMN`
      and `SOURCE_COLUMN` (`output.clean`).
    regions: `(easy_confidence, ambiguous_variability)` of the data map
      (`dynamics`).
    dynamics_paths: the checkpoints of one model trained on every row
      (`model.dynamics_path`), oldest first: they score every row, and give
      the training dynamics in place of `model_paths`' checkpoints.
    select_checkpoint: whether every checkpoint of a row's fold scores it
      and the rows are scored batches of `scoring_schema()` until each
      fold's checkpoint is selected (`model.select_checkpoint:
      heldout_loss`).
    checkpoint_margins: whether scored batches carry
      `CHECKPOINT_MARGINS_COLUMN` and `CHECKPOINT_CORRECT_COLUMN` (early
      AUM).
  """

  model_path: str
  signature: str
  features: Tuple[Feature, ...]
  terms: Tuple[LossTerm, ...]
  id_column: Optional[str] = None
  weight_column: Optional[str] = None
  slice_column: Optional[str] = None
  keep_probs: bool = False
  device: str = "auto"
  pad_value: Optional[float] = None
  truncate: bool = False
  class_names: Optional[Tuple[str, ...]] = None
  model_paths: Tuple[Tuple[str, ...], ...] = ()
  model_versions: Tuple[Tuple[str, str], ...] = ()
  fold_column: Optional[str] = None
  predictions_kind: Optional[str] = None
  regions: Tuple[float, float] = (0.5, 0.2)
  positions: bool = False
  dynamics_paths: Tuple[str, ...] = ()
  select_checkpoint: bool = False
  checkpoint_margins: bool = False

  @property
  def num_folds(self) -> Optional[int]:
    """K with `model.folds`, else None."""
    return len(self.model_paths) if len(self.model_paths) > 1 else None

  @property
  def dynamics(self) -> bool:
    """Whether several checkpoints give each example training dynamics (a
    classifier's)."""
    return self.is_classification and (bool(self.dynamics_paths) or (
        bool(self.model_paths) and len(self.model_paths[0]) > 1))

  @property
  def num_dynamics_checkpoints(self) -> int:
    """The checkpoints the training dynamics come from (1: none)."""
    if self.dynamics_paths:
      return len(self.dynamics_paths)
    return len(self.model_paths[0]) if self.model_paths else 1

  @property
  def checkpoints_per_fold(self) -> int:
    """The checkpoints of each fold's model (1 without checkpoints)."""
    return len(self.model_paths[0]) if self.model_paths else 1

  @property
  def classifier(self) -> Optional[LossTerm]:
    """The first term that gives class signals, or None."""
    return next((t for t in self.terms if t.signals), None)

  @property
  def is_classification(self) -> bool:
    return self.classifier is not None

  @property
  def deviance_term(self) -> Optional[LossTerm]:
    """The one term, when its loss has a unit deviance
    (`losses.Loss.deviance`); else None."""
    if len(self.terms) != 1:
      return None
    term = self.terms[0]
    return term if term.loss and term.loss.deviance else None

  @property
  def target_term(self) -> Optional[LossTerm]:
    """The first term when it scores values, not classes (regression): its
    target and prediction go with each row. None otherwise."""
    term = self.terms[0]
    if (term.custom or term.signals or term.label_dtype != "float32" or
        losses.label_kind(term.loss_name, 2) != "regression"):
      return None
    return term

  @property
  def target_width(self) -> int:
    """Values of one example's target (1 for a scalar)."""
    return int(np.prod(self.target_term.label_shape, dtype=np.int64))

  @property
  def reads_raw_records(self) -> bool:
    """Whether a model input takes each record's serialized bytes."""
    return any(f.column == RAW_RECORD_COLUMN for f in self.features)

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
      if self.class_names:
        fields += [pa.field("given_class", pa.string()),
                   pa.field("predicted_class", pa.string())]
    if self.deviance_term:
      fields.append(pa.field("deviance", pa.float64()))
      if self.weight_column:
        fields.append(pa.field("weighted_deviance", pa.float64()))
    if self.target_term:
      fields += _target_fields(self.target_width)
    if self.num_folds:
      fields.append(pa.field("fold", pa.int64()))
    if self.dynamics:
      fields += [pa.field(name, pa.float64()) for name in DYNAMICS]
      fields.append(pa.field("region", pa.string()))
    if self.slice_column:
      fields.append(pa.field(SLICE_COLUMN, pa.string()))
    if self.keep_probs:
      fields.append(pa.field(PROBS_COLUMN, pa.list_(
          pa.float32(), self.classifier.num_classes)))
    if self.positions:
      fields += [pa.field(POSITION_COLUMN, pa.int64()),
                 pa.field(SOURCE_COLUMN, pa.string())]
    if self.checkpoint_margins:
      c = self.num_dynamics_checkpoints
      fields += [
          pa.field(CHECKPOINT_MARGINS_COLUMN, pa.list_(pa.float32(), c)),
          pa.field(CHECKPOINT_CORRECT_COLUMN, pa.list_(pa.bool_(), c))]
    return pa.schema(fields)

  def scoring_schema(self) -> pa.Schema:
    """The schema of the batches the scorer gives: `scored_schema()`, and
    with `select_checkpoint`, `CHECKPOINT_COLUMN` (int64) last."""
    schema = self.scored_schema()
    if self.select_checkpoint:
      schema = schema.append(pa.field(CHECKPOINT_COLUMN, pa.int64()))
    return schema


def _target_fields(width: int) -> List[pa.Field]:
  """`target` and `prediction` (float64, or fixed-size lists of `width`
  values), and `error_norm` (`||prediction - target||_2`) for vectors."""
  if width == 1:
    return [pa.field("target", pa.float64()),
            pa.field("prediction", pa.float64())]
  fields = []
  if width <= MAX_TARGET_WIDTH:
    fields = [pa.field(name, pa.list_(pa.float64(), width))
              for name in ("target", "prediction")]
  return fields + [pa.field("error_norm", pa.float64())]
