"""Planning a run from its config and its model's signature; no data read.

What the pipeline scores, with what loss, and which columns it reads, follows
from the config and the inputs and outputs of the loaded model alone. The
`ScoringSpec` is made in stages (`check_labels`, `model_features`,
`loss_terms`, `assemble_spec`), which `lossaudit.preflight.plan` interleaves
with the probe's checks; `needed_columns` and `tf_schema` follow from it.
Every function here is pure: none loads a model or reads data, and each
either returns or raises ConfigError. Checking the plan against the data is
`lossaudit.probe`'s part.
"""

from __future__ import annotations

import math
from typing import Callable, List, Mapping, Optional, Tuple

import pyarrow as pa

from lossaudit import losses
from lossaudit.config import AuditConfig
from lossaudit.errors import ConfigError
from lossaudit.model import AuditModel, TensorInfo
from lossaudit.scoring import Feature, LossTerm, ScoringSpec


def check_labels(config: AuditConfig) -> None:
  """A loss needs labels: a label column or per-output ones."""
  if config.input.label_column is None and not config.loss.outputs:
    raise ConfigError("input.label_column: expected a column name; a loss"
                      " needs labels. Received: None")


def model_features(config: AuditConfig, model: AuditModel
                   ) -> Tuple[Feature, ...]:
  """Each model input with its data column, fixed shape and dtype."""
  pairs = feature_inputs(model.inputs, config.input.feature_columns)
  features = []
  for info, (name, column) in zip(model.inputs, pairs):
    if any(d is None for d in info.shape):
      raise ConfigError(
          f"model input {name!r} has shape {(None,) + info.shape}; expected a"
          " fixed size for every axis but the batch")
    if info.dtype == "string":
      raise ConfigError(
          f"model input {name!r} takes strings; expected numeric inputs")
    features.append(Feature(model_input=name, column=column,
                            shape=tuple(int(d) for d in info.shape),
                            dtype=info.dtype))
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
  return (loss_term(model, output.name, output.name,
                    config.input.label_column, loss.name, 1.0,
                    loss.from_logits, loss.reduce, loss.args, loss.custom,
                    "loss"),)


def loss_term(model: AuditModel, output: str, name: str, label_column: str,
              loss_name: str, weight: float, from_logits: bool, reduce: str,
              args, custom: Optional[str], key: str) -> LossTerm:
  """A loss term, with the label shape and class signals its loss implies.

  A custom loss's labels are given the output's shape here;
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
  term = dict(output=info.name, name=name, label_column=label_column,
              loss_name=canonical or loss_name, weight=float(weight),
              from_logits=from_logits, reduce=reduce,
              args=tuple(sorted(dict(args).items())), custom=custom,
              label_shape=shape)
  if custom:
    return LossTerm(**term)
  kind = losses.label_kind(canonical, width)
  if kind == "sparse":
    if not shape:
      raise ConfigError(
          f"{key}.name: {loss_name!r} expects (batch, ..., classes) model"
          f" outputs; output {info.name!r} has shape (None,)")
    term.update(label_shape=shape[:-1], label_dtype="int64",
                num_classes=shape[-1],
                signals="sparse" if len(shape) == 1 else None)
  elif kind == "categorical" and len(shape) == 1 and shape[0] >= 2:
    term.update(signals="categorical", num_classes=shape[0])
  elif kind == "binary":
    term.update(signals="binary", num_classes=2)
  return LossTerm(**term)


def assemble_spec(config: AuditConfig, features: Tuple[Feature, ...],
                  terms: Tuple[LossTerm, ...]) -> ScoringSpec:
  """The `ScoringSpec` of `features` and `terms`.

  Raises:
    ConfigError: `flag.label_issues` is set but no term gives class signals.
  """
  if config.flag.label_issues and not any(t.signals for t in terms):
    raise ConfigError(
        f"flag.label_issues: needs a classification loss (sparse or"
        f" categorical crossentropy, or binary crossentropy on one sigmoid"
        f" output). Received: {config.flag.label_issues!r} with loss"
        f" {[t.custom or t.loss_name for t in terms]}")
  return ScoringSpec(
      model_path=config.model.path,
      signature=config.model.signature,
      features=tuple(features),
      terms=tuple(terms),
      id_column=config.input.id_column,
      weight_column=config.input.weight_column,
      slice_column=config.stats.slice_by,
      keep_probs=config.flag.label_issues is not None,
      # The launcher may have no GPU: it checks on the CPU, workers decide.
      device=config.runtime.device,
  )


def needed_columns(spec: ScoringSpec) -> Tuple[str, ...]:
  """The columns to read: features, labels, id, weight and slice, once."""
  names = [f.column for f in spec.features]
  names += [t.label_column for t in spec.terms]
  names += [spec.id_column, spec.weight_column, spec.slice_column]
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

  defaults = {f.column: schema_pb2.FLOAT for f in spec.features}
  for term in spec.terms:
    defaults[term.label_column] = (schema_pb2.INT if term.label_dtype ==
                                   "int64" else schema_pb2.FLOAT)
  for name in (spec.id_column, spec.slice_column):
    if name:
      defaults[name] = schema_pb2.BYTES
  if spec.weight_column:
    defaults[spec.weight_column] = schema_pb2.FLOAT
  schema = schema_pb2.Schema()
  for name in needed_columns(spec):
    feature = schema.feature.add(name=name)
    type_ = value_type(name)
    feature.type = defaults[name] if type_ is None else tf_type(type_)
  return schema.SerializeToString()
