"""Planning a run from its config and its model's signature; no data read.

What the pipeline scores, with what loss, and which columns it reads, follows
from the config and the inputs and outputs of the loaded model alone. The
`ScoringSpec` is made in stages (`model_features`, `loss_terms`,
`assemble_spec`), which `lossaudit.preflight.plan` interleaves with the
probe's checks; `needed_columns` and `tf_schema` follow from it. What the
config alone decides, `lossaudit.config` checks when the config is made.
Every function here but `read_vocabulary` is pure: none loads a model or
reads data, and each either returns or raises ConfigError. `read_vocabulary`
reads the one file of planning, the `input.label_vocabulary` list of class
names. Checking the plan against the data is `lossaudit.probe`'s part.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit import formats, losses
from lossaudit.config import AuditConfig
from lossaudit.early_aum import EARLY_AUM
from lossaudit.errors import ConfigError, describe_error, first_line
from lossaudit.model import AuditModel, TensorInfo
from lossaudit.spec import RAW_RECORD_COLUMN, Feature, LossTerm, ScoringSpec

SERIALIZED_EXAMPLES_INPUT = "examples"


def predictions_width(config: AuditConfig, batch: Optional[pa.RecordBatch],
                      path: str,
                      class_names: Optional[Sequence[str]]) -> int:
  """How many values each row of `model.predictions_column` holds: as in
  the first row of `batch` that has them, else one per class name.

  Raises:
    ConfigError: the column is not in `batch`, holds no list of numbers, or
      its width is not the number of class names.
  """
  key, name = "model.predictions_column", config.model.predictions_column
  found = None if batch is None else batch.schema.get_field_index(name)
  width = None
  if found is not None:
    if found < 0:
      raise ConfigError(
          f"{key}: column {name!r} not found in the first {batch.num_rows}"
          f" records of {path}; found columns {sorted(batch.schema.names)}")
    column = batch.column(found)
    if not (pa.types.is_list(column.type) or
            pa.types.is_large_list(column.type) or
            pa.types.is_fixed_size_list(column.type)):
      raise ConfigError(
          f"{key}: expected a column of lists of class probabilities or"
          f" logits. Received: {name!r} of type {column.type} in {path}")
    lengths = pc.list_value_length(column).drop_null().to_numpy()
    width = int(lengths[0]) if len(lengths) else None
  if class_names is not None and width not in (None, len(class_names)):
    raise ConfigError(
        f"{key}: expected {len(class_names)} values per row, one per class"
        f" of input.label_vocabulary. Received: {width} in the first row of"
        f" {name!r} in {path}")
  width = width or (len(class_names) if class_names is not None else None)
  if not width or width < 2:
    raise ConfigError(
        f"{key}: expected rows of at least 2 class probabilities or logits."
        f" Received: {name!r} with {width or 'no'} values in the first"
        " records" + (f" of {path}" if path else ""))
  return width


def serialized_examples_input(config: AuditConfig, model: AuditModel
                              ) -> Optional[str]:
  """The model input that takes serialized tf.Examples, or None.

  `model.serialized_examples_input` names it; when null, a model whose only
  input is a string input named `examples` (the TFX / TFMA convention)
  takes them, with TFRecord input.

  Raises:
    ConfigError: the named input is not a string input of the model (that
      the input is TFRecord, `AuditConfig` checks).
  """
  key = "model.serialized_examples_input"
  name = config.model.serialized_examples_input
  if name is None:
    only = model.inputs[0] if len(model.inputs) == 1 else None
    detected = (only is not None and only.dtype == "string" and
                only.name == SERIALIZED_EXAMPLES_INPUT and not only.shape)
    return (only.name if detected and formats.get(
        config.input.format).serialized_examples else None)
  strings = [t.name for t in model.inputs if t.dtype == "string"]
  if name not in strings:
    raise ConfigError(f"{key}: expected one of the model's string inputs"
                      f" {strings}. Received: {name!r}")
  return name


def model_features(config: AuditConfig, model: AuditModel,
                   feature_columns: Any = None) -> Tuple[Feature, ...]:
  """Each model input with its data column, shape and dtype.

  The input that takes serialized tf.Examples (`serialized_examples_input`)
  reads each record's bytes; the others read their columns
  (`feature_columns`, when given, maps them; else each its own name).
  """
  serialized = serialized_examples_input(config, model)
  others = tuple(t for t in model.inputs if t.name != serialized)
  pairs = dict(feature_inputs(others, feature_columns))
  features = []
  for info in model.inputs:
    if info.name == serialized:
      if info.shape:
        raise ConfigError(
            f"model.serialized_examples_input: input {info.name!r} has shape"
            f" {(None,) + info.shape}; expected (None,), one serialized"
            " tf.Example per row")
      features.append(Feature(model_input=info.name,
                              column=RAW_RECORD_COLUMN, shape=(),
                              dtype="string"))
      continue
    if any(d is None for d in info.shape[1:]):
      raise ConfigError(
          f"model input {info.name!r} has shape {(None,) + info.shape};"
          " expected a fixed size for every axis but the batch and the"
          " first (a sequence)")
    features.append(Feature(
        model_input=info.name, column=pairs[info.name],
        shape=tuple(None if d is None else int(d) for d in info.shape),
        dtype=info.dtype, ragged=info.ragged))
  return tuple(features)


def feature_inputs(model_inputs: Tuple[TensorInfo, ...],
                   feature_columns) -> List[Tuple[str, str]]:
  """Pairs each model input with its data column.

  Args:
    model_inputs: the model's inputs.
    feature_columns: None (columns named as the inputs), a list (in the
      model's input order) or a mapping `{model input: column}`.

  Returns:
    `[(model input name, column name)]` in the model's input order.

  Raises:
    ConfigError: `feature_columns` does not name one column per input.
  """
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


def loss_terms(config: AuditConfig, model: AuditModel
               ) -> Tuple[LossTerm, ...]:
  """The loss terms: one per `loss.outputs` entry, else one for the output
  `model.output` names (or the model's only output)."""
  if config.loss.outputs:
    return tuple(
        loss_term(model, o.output, o.output, o.label_column, o.name,
                  o.weight, o.from_logits, o.reduce, o.args, o.custom,
                  f"loss.outputs[{o.index}]")
        for o in config.loss.outputs)
  loss = config.loss
  output = model.output(config.model.output)
  # Logits in a predictions column are what a model's logits output is.
  from_logits = loss.from_logits or (
      config.model.predictions_column is not None and
      config.model.predictions_kind == "logits")
  return (loss_term(model, output.name, output.name,
                    config.input.label_column, loss.name, 1.0,
                    from_logits, loss.reduce, loss.args, loss.custom,
                    "loss"),)


def loss_term(model: AuditModel, output: str, name: str, label_column: str,
              loss_name: str, weight: float, from_logits: bool, reduce: str,
              args, custom: Optional[str], key: str) -> LossTerm:
  """A loss term, with the label shape and class signals its loss implies.

  A custom loss's and CTC's labels are given the output's shape here;
  `probe.fit_custom_labels` gives them the size they have in the data.
  """
  info = model.output(output, f"{key}.output" if key != "loss" else
                      "model.output")
  shape = tuple(info.shape)
  if any(d is None for d in shape):
    raise ConfigError(
        f"model output {info.name!r} has shape {(None,) + shape}; expected a"
        " fixed size for every axis but the batch")
  shape = tuple(int(d) for d in shape)
  width = int(math.prod(shape)) if shape else 1
  canonical = losses.canonical_loss_name(loss_name)
  args = dict(args)
  if not custom:
    args = _loss_args(canonical, args, len(shape) + 1, f"{key}.args")
  term = dict(output=info.name, name=name, label_column=label_column,
              loss_name=canonical or loss_name, weight=float(weight),
              from_logits=from_logits, reduce=reduce,
              args=tuple(sorted(args.items())), custom=custom,
              label_shape=shape)
  if custom:
    return LossTerm(**term)
  kind = losses.label_kind(canonical, width)
  if kind in ("sparse", "sequence"):
    if len(shape) < (2 if kind == "sequence" else 1):
      expects = "(batch, time, classes)" if kind == "sequence" else (
          "(batch, ..., classes)")
      raise ConfigError(
          f"{key}.name: {loss_name!r} expects {expects} model outputs;"
          f" output {info.name!r} has shape {(None,) + shape}")
  if kind == "sparse":
    per_example = len(shape) == 1 and "ignore_class" not in args
    term.update(label_shape=shape[:-1], label_dtype="int64",
                num_classes=shape[-1],
                signals="sparse" if per_example else None)
  elif kind == "sequence":  # CTC: class 0 is the blank, and pads labels.
    term.update(label_shape=(shape[0],), label_dtype="int64",
                num_classes=shape[-1])
  elif kind == "categorical" and len(shape) == 1 and shape[0] >= 2:
    term.update(signals="categorical", num_classes=shape[0])
  elif kind == "binary":
    term.update(signals="binary", num_classes=2)
  return LossTerm(**term)


def _loss_args(name: str, args: Dict[str, Any], rank: int, key: str
               ) -> Dict[str, Any]:
  """`args` of Keras loss `name` on outputs of `rank` (batch axis
  included), checked: an `axis` must not hold the batch axis, and Dice and
  Tversky get every other axis when they have none.

  Raises:
    ConfigError: an `axis` holds the batch axis or is not an axis, or the
      loss does not take `args`.
  """
  if "axis" in args:
    axes = args["axis"]
    listed = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    if not listed or not all(isinstance(a, int) and not isinstance(a, bool)
                             and -rank <= a < rank for a in listed):
      raise ConfigError(
          f"{key}.axis: expected an axis or a list of axes of the outputs,"
          f" in [{-rank}, {rank}). Received: {axes!r}")
    if any(a % rank == 0 for a in listed):
      raise ConfigError(
          f"{key}.axis: expected axes within one example, 1 to {rank - 1}"
          f" (or negative): axis 0 is the batch axis, and reducing over it"
          f" mixes examples. Received: {axes!r}")
    if isinstance(axes, list):
      args["axis"] = tuple(axes)
  elif name in losses.PER_EXAMPLE_AXIS and rank > 1:
    args["axis"] = tuple(range(1, rank))
  try:
    losses.keras_loss(name, False, args)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"{key}: {name!r} does not take {args!r}:"
                      f" {first_line(e)}") from None
  return args


def assemble_spec(config: AuditConfig, features: Tuple[Feature, ...],
                  terms: Tuple[LossTerm, ...],
                  class_names: Optional[Tuple[str, ...]] = None
                  ) -> ScoringSpec:
  """The `ScoringSpec` of `features` and `terms`.

  Args:
    class_names: `input.label_vocabulary`, read (`read_vocabulary`).

  Raises:
    ConfigError: `flag.label_issues` is set but no term gives class signals,
      or `class_names` are not one per class of the classifier.
  """
  if class_names is not None:
    check_vocabulary(class_names, terms)
  if config.flag.label_issues and not any(t.signals for t in terms):
    raise ConfigError(
        f"flag.label_issues: needs a classification loss (sparse or"
        f" categorical crossentropy, or binary crossentropy on one sigmoid"
        f" output). Received: {config.flag.label_issues!r} with loss"
        f" {[t.custom or t.loss_name for t in terms]}")
  _check_pad_value(config.input.pad_value, features)
  if config.output.write_probabilities and not any(t.signals for t in terms):
    raise ConfigError(
        f"output.write_probabilities: needs a classification loss (class"
        f" probabilities). Received: loss"
        f" {[t.custom or t.loss_name for t in terms]}")
  # Selecting each fold's checkpoint by its held-out loss takes any loss;
  # training dynamics (and the AUM rules) take class probabilities.
  dynamics = config.model.checkpoints and (
      config.model.select_checkpoint != "heldout_loss"
      or config.model.dynamics_path or config.flag.aum_quantile is not None
      or config.flag.aum_below is not None)
  if dynamics and not any(t.signals for t in terms):
    raise ConfigError(
        f"model.checkpoints: needs a classification loss (training dynamics"
        f" are the given label's probabilities). Received: loss"
        f" {[t.custom or t.loss_name for t in terms]}")
  return ScoringSpec(
      model_path=config.model.path,
      signature=config.model.signature,
      features=tuple(features),
      terms=tuple(terms),
      id_column=config.input.id_column,
      weight_column=config.input.weight_column,
      slice_column=config.stats.slice_by,
      keep_probs=(config.flag.label_issues is not None
                  or config.output.write_probabilities),
      # The launcher may have no GPU: it checks on the CPU, workers decide.
      device=config.runtime.device,
      pad_value=config.input.pad_value,
      truncate=config.input.truncate,
      class_names=class_names,
      model_paths=config.model.path_groups(),
      fold_column=config.input.fold_column,
      predictions_kind=(config.model.predictions_kind
                        if config.model.predictions_column else None),
      regions=(config.dynamics.easy_confidence,
               config.dynamics.ambiguous_variability),
      positions=config.output.clean is not None,
      dynamics_paths=config.model.dynamics_paths(),
      select_checkpoint=config.model.select_checkpoint == "heldout_loss",
      checkpoint_margins=config.flag.label_issues == EARLY_AUM,
  )


_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16",
                   "uint32", "uint64")


def _check_pad_value(value: Optional[float],
                     features: Sequence[Feature]) -> None:
  """An integer model input is padded with an integer it can hold.

  Raises:
    ConfigError: `input.pad_value` is not a whole number, or out of the
      range of an integer input's dtype.
  """
  if value is None:
    return
  for feature in features:
    if feature.dtype not in _INTEGER_DTYPES:
      continue
    info = np.iinfo(feature.dtype)
    if not (float(value).is_integer() and info.min <= value <= info.max):
      raise ConfigError(
          f"input.pad_value: expected an integer in [{info.min}, {info.max}]"
          f" for model input {feature.model_input!r} ({feature.dtype})."
          f" Received: {value!r}")


def check_vocabulary(class_names: Tuple[str, ...],
                     terms: Tuple[LossTerm, ...]) -> None:
  """One class name per class of each term with class labels.

  Raises:
    ConfigError: a term has class labels of another number of classes, or
      none has class labels.
  """
  key = "input.label_vocabulary"
  classified = [t for t in terms if t.num_classes is not None and
                t.signals in ("sparse", "binary") and
                math.prod(t.label_shape) == 1]
  if not classified:
    raise ConfigError(
        f"{key}: needs a classification loss with one class index per"
        f" example (sparse or binary crossentropy). Received:"
        f" {len(class_names)} class names with loss"
        f" {[t.custom or t.loss_name for t in terms]}")
  for term in classified:
    if term.num_classes != len(class_names):
      raise ConfigError(
          f"{key}: expected {term.num_classes} class names, one per class of"
          f" model output {term.output!r}. Received: {len(class_names)}")


# A vocabulary file is read whole before the run; past this, it is no list
# of class names.
VOCABULARY_BYTES = 16 << 20


def read_vocabulary(value) -> Optional[Tuple[str, ...]]:
  """`input.label_vocabulary` as class names: the list itself, or the lines
  of the file it names (local or gs://; blank lines at the end ignored).

  Raises:
    ConfigError: the file is not a regular file or cannot be read, is larger
      than `VOCABULARY_BYTES`, is not UTF-8, is empty or repeats a name.
  """
  if value is None or not isinstance(value, str):
    return value
  from apache_beam.io.filesystem import CompressionTypes  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  key = "input.label_vocabulary"
  if "://" not in value and os.path.exists(value) and not os.path.isfile(
      value):  # A FIFO would block, /dev/zero never end.
    raise ConfigError(f"{key}: expected a regular file with one class name per"
                      f" line. Received: {value!r} (not a regular file)")
  try:
    with FileSystems.open(value, compression_type=(
        CompressionTypes.UNCOMPRESSED)) as f:
      data = f.read(VOCABULARY_BYTES + 1)
    if len(data) > VOCABULARY_BYTES:
      raise ConfigError(
          f"{key}: expected a file of at most {VOCABULARY_BYTES:,} bytes of"
          f" class names. Received: {value!r} (larger)")
    text = data.decode("utf-8-sig")  # A byte-order mark is no name.
  except ConfigError:
    raise
  except UnicodeDecodeError:
    raise ConfigError(f"{key}: expected a UTF-8 text file with one class name"
                      f" per line. Received: {value!r} (not UTF-8)") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"{key}: expected a readable file with one class name per line."
        f" Received: {value!r} ({describe_error(e)})") from None
  names = tuple(line.rstrip("\r") for line in text.rstrip("\r\n").split("\n"))
  if not text.strip() or not all(names):
    raise ConfigError(f"{key}: expected one non-empty class name per line."
                      f" Received: {value!r} ({len(names)} lines, a blank"
                      " one among them)" if text.strip() else
                      f"{key}: expected one class name per line. Received:"
                      f" {value!r} (an empty file)")
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ConfigError(f"{key}: expected distinct class names. Received:"
                      f" {value!r}, which repeats {repeated}")
  return names


def needed_columns(spec: ScoringSpec) -> Tuple[str, ...]:
  """The columns to read: features, labels, id, weight and slice, once."""
  names = [f.column for f in spec.features if f.column != RAW_RECORD_COLUMN]
  names += [t.label_column for t in spec.terms]
  names += [spec.id_column, spec.weight_column, spec.slice_column,
            spec.fold_column]
  return tuple(dict.fromkeys(n for n in names if n))


def tf_schema(spec: ScoringSpec,
              value_type: Callable[[str], Optional[pa.DataType]] = (
                  lambda name: None)) -> bytes:
  """A serialized tensorflow_metadata Schema decoding only the needed
  features.

  Args:
    spec: what is scored.
    value_type: the value type a column has in the data, None when unknown
      (`probe.Sample.value_type`); ids and slices may be bytes or ints.
      Columns of unknown type get the type the model and the loss imply.
  """
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top

  def tf_type(type_: pa.DataType) -> int:
    if pa.types.is_integer(type_):
      return schema_pb2.INT
    if pa.types.is_floating(type_):
      return schema_pb2.FLOAT
    return schema_pb2.BYTES

  defaults = {f.column: schema_pb2.BYTES if f.dtype == "string" else
              schema_pb2.INT if f.dtype.startswith(("int", "uint")) else
              schema_pb2.FLOAT for f in spec.features}
  for term in spec.terms:
    defaults[term.label_column] = (
        schema_pb2.BYTES if spec.class_names and term.num_classes else
        schema_pb2.INT if term.label_dtype == "int64" else schema_pb2.FLOAT)
  for name in (spec.id_column, spec.slice_column):
    if name:
      defaults[name] = schema_pb2.BYTES
  if spec.fold_column:
    defaults[spec.fold_column] = schema_pb2.INT
  if spec.weight_column:
    defaults[spec.weight_column] = schema_pb2.FLOAT
  schema = schema_pb2.Schema()
  for name in needed_columns(spec):
    feature = schema.feature.add(name=name)
    type_ = value_type(name)
    feature.type = defaults[name] if type_ is None else tf_type(type_)
  return schema.SerializeToString()


def check_image_shape(config: AuditConfig, spec: ScoringSpec) -> None:
  """`input.image_shape` names as many values as a numeric input holds.

  Raises:
    ConfigError: no numeric input of a fixed size fits it.
  """
  shape = config.input.image_shape
  if shape is None:
    return
  size = math.prod(shape)
  numeric = [f for f in spec.features if f.dtype != "string"]
  sizes = {f.column: (math.prod(f.shape) if None not in f.shape else None)
           for f in numeric}
  if size in sizes.values():
    return
  held = ", ".join(f"{column} ({'any number of' if n is None else n} values)"
                   for column, n in sizes.items()) or "none"
  raise ConfigError(
      f"input.image_shape: expected the shape of a numeric input, as many"
      f" values as a row of it holds. Received: {list(shape)} ({size}"
      f" values); the numeric inputs: {held}")
