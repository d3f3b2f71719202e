"""Checks made before the pipeline starts, and the reading schema they derive.

Reads a first small batch of the data, loads the model, and scores that batch
with the real scorer, so that a column that does not exist, a model that does
not fit the data or a loss that cannot be computed stops the run with exit 2
and a one-line message, instead of failing on a worker an hour later.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit import columns as cols
from lossaudit import inputs, losses, tfrecord
from lossaudit.config import (
  AuditConfig,
  ConfigError,
  describe_error,
  short_repr,
)
from lossaudit.model import AuditModel
from lossaudit.scoring import (
  LABEL_OUT_OF_RANGE,
  BatchScorer,
  LossShapeError,
  LossTerm,
  ScoringSpec,
  feature_inputs,
)

PROBE_RECORDS = 64
# Labels outside the model's classes in at least this share of the first
# records stop the run: the model and the data do not match.
CLASS_MISMATCH_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the pre-run checks found: the files, the spec and the schema."""

  files: Tuple[str, ...]  # Regular files to read.
  not_regular: Tuple[str, ...]  # Matched, never opened: dead letters.
  spec: ScoringSpec
  tf_schema: Optional[bytes]  # Serialized tensorflow_metadata Schema.
  columns: Tuple[str, ...]  # Columns to read.


def read_tfrecords(path: str, limit: int) -> List[bytes]:
  """The first records of a TFRecord file (up to `limit`, fewer if damaged).

  Raises:
    ValueError: when not even the first record can be read.
  """
  for item in tfrecord.read_batches(path, limit,
                                    tfrecord.compression_of(path)):
    if isinstance(item, tfrecord.Unreadable):
      raise ValueError(item.describe())
    return item
  return []


def _probe_batch(config: AuditConfig, files: Sequence[str]
                 ) -> Tuple[Optional[pa.RecordBatch], Optional[str]]:
  """The first few records of the dataset as one batch, and their file.

  A file that cannot be read is passed over (the run dead-letters it), unless
  no file can be read at all: then the data is not what the config says.
  """
  failures = []
  for path in files:
    try:
      if config.input.format == "tfrecord":
        records = read_tfrecords(path, PROBE_RECORDS)
        if not records:
          continue
        return _decode_probe(records), path
      with FileSystems.open(path,
                            compression_type=CompressionTypes.UNCOMPRESSED
                            ) as f:
        parquet = pq.ParquetFile(f)
        if parquet.metadata.num_rows == 0:
          continue
        first = next(parquet.iter_batches(batch_size=PROBE_RECORDS))
        return first, path
    except Exception as e:  # pylint: disable=broad-except
      failures.append((path, e))
  if failures and len(failures) == len(files):
    path, e = failures[0]
    raise ConfigError(
        f"input.pattern: expected {config.input.format} files. None of the"
        f" {len(files)} matched files could be read; {path!r}:"
        f" {describe_error(e)}")
  return None, None


def _decode_probe(records: Sequence[bytes]) -> pa.RecordBatch:
  """tf.train.Examples as one batch, decoded with no schema.

  When they do not decode together (a feature typed differently in some of
  them), the largest group of records whose features agree on their types
  is the batch (on a tie, the group of the first decodable record); the
  others are dead-lettered by the pipeline like any wrong-typed record.

  Raises:
    Whatever the decoder raises when not one record decodes.
  """
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top

  new_decoder = example_coder.ExamplesToRecordBatchDecoder
  try:
    return new_decoder().DecodeBatch(list(records))
  except Exception as e:  # pylint: disable=broad-except
    error = e
  # A decoder that failed once keeps half-built columns (tfx_bsl 1.21):
  # a fresh one after every failure.
  groups: List[Tuple[dict, List[bytes]]] = []  # (name → type, records)
  decoder = new_decoder()
  for record in records:
    try:
      schema = decoder.DecodeBatch([record]).schema
    except Exception:  # pylint: disable=broad-except
      decoder = new_decoder()
      continue
    types = {f.name: f.type for f in schema if not pa.types.is_null(f.type)}
    for group_types, members in groups:
      if all(group_types.get(n, t) == t for n, t in types.items()):
        group_types.update(types)
        members.append(record)
        break
    else:
      groups.append((types, [record]))
  if not groups:
    raise error
  _, largest = max(groups, key=lambda g: len(g[1]))  # First on a tie.
  return new_decoder().DecodeBatch(largest)


def plan(config: AuditConfig) -> Plan:
  """Runs every pre-run check and returns what the pipeline needs."""
  found = inputs.expand(config.input.patterns, config.output.dir)
  model = AuditModel(config.model.path, config.model.signature)
  probe, probe_file = _probe_batch(config, found.files)
  spec = _scoring_spec(config, model, probe, probe_file)
  if probe is not None:
    _check_scoring(config, spec, model, probe, probe_file)
  return Plan(files=found.files, not_regular=found.not_regular, spec=spec,
              tf_schema=_tf_schema(spec, probe),
              columns=_needed_columns(spec))


def _scoring_spec(config: AuditConfig, model: AuditModel,
                  probe: Optional[pa.RecordBatch],
                  probe_file: Optional[str]) -> ScoringSpec:
  inp = config.input
  if inp.label_column is None and not config.loss.outputs:
    raise ConfigError("input.label_column: expected a column name; a loss"
                      " needs labels. Received: None")
  pairs = feature_inputs(model.inputs, inp.feature_columns)
  features = []
  for info, (name, column) in zip(model.inputs, pairs):
    if any(d is None for d in info.shape):
      raise ConfigError(
          f"model input {name!r} has shape {(None,) + info.shape}; expected a"
          " fixed size for every axis but the batch")
    if info.dtype == "string":
      raise ConfigError(
          f"model input {name!r} takes strings; expected numeric inputs")
    features.append((name, column, tuple(int(d) for d in info.shape),
                     info.dtype))
  if probe is not None:
    present = set(probe.schema.names)
    wanted = [("input.id_column", inp.id_column),
              ("input.weight_column", inp.weight_column),
              ("stats.slice_by", config.stats.slice_by)]
    if config.loss.outputs:
      wanted += [(f"loss.outputs[{o.index}].label_column", o.label_column)
                 for o in config.loss.outputs]
    else:
      wanted.append(("input.label_column", inp.label_column))
    wanted += [(f"feature column for model input {n!r}", c)
               for n, c, _, _ in features]
    for key, column in wanted:
      if column is not None and column not in present:
        raise ConfigError(
            f"{key}: column {column!r} not found in the first"
            f" {probe.num_rows} records of {probe_file}; found columns"
            f" {sorted(present)}")

  if config.loss.outputs:
    terms = tuple(
        _loss_term(model, o.output, o.output, o.label_column, o.name,
                   o.weight, o.from_logits, o.reduce, o.args, o.custom,
                   f"loss.outputs[{o.index}]", probe)
        for o in config.loss.outputs)
  else:
    output = model.output(config.model.output)
    terms = (_loss_term(model, output.name, output.name, inp.label_column,
                        config.loss.name, 1.0, config.loss.from_logits,
                        config.loss.reduce, config.loss.args,
                        config.loss.custom, "loss", probe),)
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
      terms=terms,
      id_column=inp.id_column,
      weight_column=inp.weight_column,
      slice_column=config.stats.slice_by,
      keep_probs=config.flag.label_issues is not None,
      # The launcher may have no GPU: it checks on the CPU, workers decide.
      device=config.runtime.device,
  )


def _loss_term(model: AuditModel, output: str, name: str, label_column: str,
               loss_name: str, weight: float, from_logits: bool, reduce: str,
               args, custom: Optional[str], key: str,
               probe: Optional[pa.RecordBatch]) -> LossTerm:
  """A loss term, with the label shape and class signals its loss implies."""
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
    if probe is not None and label_column in probe.schema.names:
      term["label_shape"] = _custom_label_shape(probe, label_column, shape)
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


def _custom_label_shape(probe: pa.RecordBatch, column: str,
                        out_shape: Tuple[int, ...]) -> Tuple[int, ...]:
  """Labels of a custom loss keep the size they have in the data."""
  counts = cols.value_counts(probe.column(column))
  width = int(counts.max()) if len(counts) else 1
  if width == (int(math.prod(out_shape)) if out_shape else 1):
    return out_shape
  return () if width == 1 else (width,)


def _check_scoring(config: AuditConfig, spec: ScoringSpec, model: AuditModel,
                   probe: pa.RecordBatch, probe_file: str) -> None:
  """Scores the probe batch with the real scorer; any failure is exit 2.

  A custom loss is the user's code, imported and first called here: whatever
  it raises, SystemExit and any Exception alike (only KeyboardInterrupt goes
  through), is a ConfigError naming its key (`loss.custom` or
  `loss.outputs[i].custom`), the exception type and its first line. With
  several custom losses, the one that fails is found by scoring each alone.
  """
  prefixes = ([f"loss.outputs[{o.index}]" for o in config.loss.outputs]
              if config.loss.outputs else ["loss"])
  custom = [(f"{prefix}.custom", term)
            for prefix, term in zip(prefixes, spec.terms) if term.custom]
  for key, term in custom:  # One by one, to name the one that fails.
    try:
      term.build_loss()
    except KeyboardInterrupt:
      raise
    except BaseException as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{key}: could not build the loss: {describe_error(e)}; expected an"
          " importable 'package.module:function'. Received:"
          f" {short_repr(term.custom)}") from None
  cpu = dataclasses.replace(spec, device="cpu")

  def failing_custom(error: BaseException):
    """`(key, term)` of the custom loss behind `error`, or None."""
    if not custom:
      return None
    if len(spec.terms) == 1:
      return custom[0]
    for key, term in custom:
      alone = dataclasses.replace(cpu, terms=(term,), keep_probs=False)
      try:
        BatchScorer(alone, model=model).score(probe_file, probe)
      except KeyboardInterrupt:
        raise
      except BaseException:  # pylint: disable=broad-except
        return key, term
    return None if isinstance(error, Exception) else custom[0]

  try:
    scorer = BatchScorer(cpu, model=model)
  except (ImportError, AttributeError, TypeError, ValueError) as e:
    key = "loss.custom" if any(t.custom for t in spec.terms) else "loss"
    raise ConfigError(
        f"{key}: could not build the loss: {type(e).__name__}:"
        f" {_first_line(e)}") from None
  try:
    scored, dead = scorer.score(probe_file, probe)
  except KeyboardInterrupt:
    raise
  except LossShapeError as e:
    key = next((f"{prefix}.{'custom' if t.custom else 'name'}"
                for prefix, t in zip(prefixes, spec.terms)
                if str(e).startswith(repr(t.custom or t.loss_name))),
               "loss.custom" if custom else "loss.name")
    raise ConfigError(f"{key}: {e}") from None
  except BaseException as e:  # pylint: disable=broad-except
    culprit = failing_custom(e)
    if culprit:
      key, term = culprit
      raise ConfigError(
          f"{key}: {short_repr(term.custom)} failed on the first"
          f" {probe.num_rows} records of {probe_file}:"
          f" {describe_error(e)}") from None
    if not isinstance(e, Exception):
      raise
    raise ConfigError(
        f"model.path: the model {config.model.path!r} does not fit the data"
        f" of {probe_file} with loss"
        f" {[t.custom or t.loss_name for t in spec.terms]}:"
        f" {describe_error(e)}") from None
  if scored is None and dead:
    raise ConfigError(
        f"input: none of the first {probe.num_rows} records of {probe_file}"
        f" can be scored; first problem: {dead[0]['error']}")
  _check_classes(probe.num_rows, probe_file, dead)


def _check_classes(num_rows: int, probe_file: str,
                   dead: Sequence[dict]) -> None:
  """A few labels out of range are bad records (dead letters); many mean the
  model was trained on other classes than the data has."""
  out_of_range = [d for d in dead if d["reason"] == LABEL_OUT_OF_RANGE]
  if len(out_of_range) < max(1, CLASS_MISMATCH_SHARE * num_rows):
    return
  raise ConfigError(
      f"input.label_column: {len(out_of_range)} of the first {num_rows}"
      f" labels of {probe_file} are outside the model's classes (first:"
      f" {out_of_range[0]['error']}); expected a model trained on the"
      " data's classes")


def _needed_columns(spec: ScoringSpec) -> Tuple[str, ...]:
  names = [c for _, c, _, _ in spec.features]
  names += [t.label_column for t in spec.terms]
  names += [spec.id_column, spec.weight_column, spec.slice_column]
  return tuple(dict.fromkeys(n for n in names if n))


def _tf_schema(spec: ScoringSpec,
               probe: Optional[pa.RecordBatch]) -> bytes:
  """A tensorflow_metadata Schema for decoding only the needed features.

  Feature types come from the first records when there are any (ids and
  slices may be bytes or ints), else from the model and the loss.
  """
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top

  def tf_type(type_: pa.DataType) -> int:
    if pa.types.is_integer(type_):
      return schema_pb2.INT
    if pa.types.is_floating(type_):
      return schema_pb2.FLOAT
    return schema_pb2.BYTES

  defaults = {c: schema_pb2.FLOAT for _, c, _, _ in spec.features}
  for term in spec.terms:
    defaults[term.label_column] = (schema_pb2.INT if term.label_dtype ==
                                   "int64" else schema_pb2.FLOAT)
  for name in (spec.id_column, spec.slice_column):
    if name:
      defaults[name] = schema_pb2.BYTES
  if spec.weight_column:
    defaults[spec.weight_column] = schema_pb2.FLOAT
  schema = schema_pb2.Schema()
  for name in _needed_columns(spec):
    feature = schema.feature.add(name=name)
    column = cols.optional_column(probe, name) if probe is not None else None
    if column is not None and not pa.types.is_null(cols.column_type(column)):
      feature.type = tf_type(cols.column_type(column))
    else:
      feature.type = defaults[name]
  return schema.SerializeToString()


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
