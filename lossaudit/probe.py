"""The data probe: the first records of the data, checked against the plan.

`read_sample` reads a first small batch of the data; `check_columns`,
`fit_custom_labels` and `check_scoring` hold it against what
`lossaudit.planning` derived from the config and the model, scoring it with
the real scorer. So a column that does not exist, a model that does not fit
the data or a loss that cannot be computed stops the run with exit 2 and a
one-line message, instead of failing on a worker an hour later.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import tensorflow as tf

from lossaudit import columns as cols
from lossaudit import formats, losses, progress
from lossaudit.config import AuditConfig
from lossaudit.dead_letters import BAD_PREDICTION, LABEL_OUT_OF_RANGE
from lossaudit.errors import (
  ConfigError,
  describe_error,
  first_line,
  op_error_line,
  short_repr,
)
from lossaudit.model import AuditModel
from lossaudit.model_inputs import NO_SLICE, ModelInputs, read_model_inputs
from lossaudit.planning import SERIALIZED_EXAMPLES_INPUT
from lossaudit.scoring import (
  DATA_ERRORS,
  OUTPUT_PREFIX,
  BatchScorer,
  LossShapeError,
)
from lossaudit.spec import RAW_RECORD_COLUMN, Feature, LossTerm, ScoringSpec

# The models of a run, `[fold][checkpoint]` (`model.load_models`).
Models = Sequence[Sequence[AuditModel]]

PROBE_RECORDS = 64
# Labels outside the model's classes in at least this share of the first
# records stop the run: the model and the data do not match.
CLASS_MISMATCH_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class Sample:
  """The first records of the dataset, as one batch, and their file."""

  batch: pa.RecordBatch
  path: str

  @property
  def num_rows(self) -> int:
    return self.batch.num_rows

  @property
  def columns(self) -> List[str]:
    return self.batch.schema.names

  def value_type(self, name: str) -> Optional[pa.DataType]:
    """The value type of column `name`; None when it is absent (or named
    twice) or all null."""
    column = cols.optional_column(self.batch, name)
    if column is None or pa.types.is_null(cols.column_type(column)):
      return None
    return cols.column_type(column)


def read_sample(config: AuditConfig, files: Sequence[str],
                clock: Callable[[], float] = time.monotonic
                ) -> Optional[Sample]:
  """The first few records of the dataset; None when every file is empty.

  Many empty files first print a progress line every
  `progress.CHECK_SECONDS` (by `clock`).

  A file that cannot be read is passed over (the run dead-letters it), unless
  no file can be read at all: then the data is not what the config says.

  Raises:
    ConfigError: not one of `files` could be read.
  """
  input_format = formats.get(config.input.format)
  failures = []
  ticker = progress.Ticker("looking for the first records", len(files),
                           clock=clock)
  for done, path in enumerate(files):
    ticker.tick(done)
    try:
      first = input_format.first_rows(path, PROBE_RECORDS)
      if first is not None:
        return Sample(first, path)
    except Exception as e:  # pylint: disable=broad-except
      failures.append((path, e))
  if failures and len(failures) == len(files):
    path, e = failures[0]
    raise ConfigError(
        f"input.pattern: expected {config.input.format} files. None of the"
        f" {len(files)} matched files could be read; {path!r}:"
        f" {describe_error(e)}")
  return None


def _other_columns(config: AuditConfig) -> set:
  """The columns the config gives a role other than a model input."""
  inp, model = config.input, config.model
  named = {inp.id_column, inp.label_column, inp.weight_column,
           inp.fold_column, config.stats.slice_by, model.predictions_column,
           RAW_RECORD_COLUMN}
  named |= {o.label_column for o in config.loss.outputs or ()}
  return {c for c in named if c is not None}


# The names Keras gives an unnamed `keras.Input` (`input_layer_3`; Keras 2:
# `input_1`).
_KERAS_INPUT_NAME = re.compile(r"input(?:_layer)?(?:_\d+)?")


def match_lone_input(config: AuditConfig, features: Sequence[Feature],
                     sample: Sample) -> Tuple[Feature, ...]:
  """`features`, with a one-input model's input read from the data's one
  candidate column when the input has a name Keras made up (an unnamed
  `keras.Input` is `input_layer`, `input_layer_3`) and no column has it. A
  candidate is a column the config gives no other role (id, label, weight,
  fold, slice). With `input.feature_columns` set, or
  none or several candidates, `features` are returned as they are
  (`check_columns` then names `input.feature_columns`)."""
  if (config.input.feature_columns is not None or len(features) != 1
      or not _KERAS_INPUT_NAME.fullmatch(features[0].model_input)
      or features[0].column in sample.columns):
    return tuple(features)
  candidates = [c for c in sample.columns if c not in _other_columns(config)]
  if len(candidates) != 1:
    return tuple(features)
  return (features[0]._replace(column=candidates[0]),)


def check_columns(config: AuditConfig, features: Sequence[Feature],
                  sample: Sample) -> None:
  """Every column the config and the model's inputs name is in `sample`.

  Raises:
    ConfigError: naming the first key whose column is missing.
  """
  inp = config.input
  present = set(sample.columns) - {RAW_RECORD_COLUMN}
  wanted = [("input.id_column", inp.id_column),
            ("input.weight_column", inp.weight_column),
            ("stats.slice_by", config.stats.slice_by)]
  if config.loss.outputs:
    wanted += [(f"loss.outputs[{o.index}].label_column", o.label_column)
               for o in config.loss.outputs]
  else:
    wanted.append(("input.label_column", inp.label_column))
  named = config.input.feature_columns is not None
  wanted += [(f"feature column for model input {f.model_input!r}", f.column)
             for f in features if f.column != RAW_RECORD_COLUMN and named]
  for key, column in wanted:
    if column is not None and column not in present:
      raise ConfigError(
          f"{key}: column {column!r} not found in the first"
          f" {sample.num_rows} records of {sample.path}; found columns"
          f" {sorted(present)}")
  for f in features:
    if f.column == RAW_RECORD_COLUMN or f.column in present:
      continue
    if (not formats.get(config.input.format).serialized_examples and
        len(features) == 1 and
        f.dtype == "string" and
        f.model_input == SERIALIZED_EXAMPLES_INPUT == f.column):
      raise ConfigError(
          "model.serialized_examples_input: the model's only input,"
          " 'examples', is a string input, which usually takes serialized"
          " tf.Examples; they need input.format 'tfrecord'. Received:"
          f" input.format {config.input.format!r}, and no column"
          f" 'examples' in {sample.path}")
    candidates = sorted(present - _other_columns(config))
    raise ConfigError(
        f"input.feature_columns: expected a column for each model input"
        f" (null reads the columns named as the inputs); no column is named"
        f" {f.column!r} in the first {sample.num_rows} records of"
        f" {sample.path}. Set input.feature_columns: {{{f.model_input}:"
        f" COLUMN}}, COLUMN one of {candidates}")


# A sample of at least this many rows, every one with its own slice value,
# shows a column with a value per row (an id): refused before the run.
MIN_ROWS_ONE_SLICE_EACH = 50


def check_slices(config: AuditConfig, sample: Sample) -> None:
  """Refuses a `stats.slice_by` column whose values in `sample` show more
  slices than `stats.max_slices`: more distinct values than that already,
  or (in 50 rows or more) a value of its own on every row, when that many
  rows all distinct are unlikely from `max_slices` values or fewer (n rows
  drawn from K equally common values are all distinct with probability at
  most exp(-n(n-1)/2K); refused when n(n-1)/2 >= K).

  Raises:
    ConfigError: naming stats.slice_by and stats.max_slices.
  """
  stats = config.stats
  column = cols.optional_column(sample.batch, stats.slice_by)
  if column is None:
    return
  values = cols.first_as_text(column).strings.fill_null(NO_SLICE)
  distinct = len(set(values.to_pylist()))
  rows = sample.num_rows
  one_each = (rows >= MIN_ROWS_ONE_SLICE_EACH and distinct == rows and
              rows * (rows - 1) // 2 >= stats.max_slices)
  if distinct <= stats.max_slices and not one_each:
    return
  found = f"{distinct} distinct values in the first {rows} records"
  if one_each:
    found += ", one per record"
  raise ConfigError(
      f"stats.slice_by: expected at most stats.max_slices"
      f" ({stats.max_slices}) slices (each holds statistics in memory and"
      f" summary.json). Received: column {short_repr(stats.slice_by)} with"
      f" {found}; slice by a coarser column or raise stats.max_slices")


def fit_custom_labels(terms: Sequence[LossTerm], sample: Sample
                      ) -> Tuple[LossTerm, ...]:
  """`terms`, the labels of each custom loss and of CTC keeping the size
  they have in `sample` (when its column is there)."""
  return tuple(
      dataclasses.replace(term, label_shape=_custom_label_shape(
          sample.batch, term))
      if (term.custom or term.loss_name == "ctc") and
      term.label_column in sample.columns else term
      for term in terms)


def _custom_label_shape(batch: pa.RecordBatch, term: LossTerm
                        ) -> Tuple[int, ...]:
  """Labels of a custom loss keep the size they have in the data; CTC's
  are `(label length,)`, padded with 0 (its blank class) to one length."""
  counts = cols.value_counts(batch.column(term.label_column))
  width = int(counts.max()) if len(counts) else 1
  if term.loss_name == "ctc":
    return (max(width, 1),)
  out_shape = term.label_shape
  if width == (int(math.prod(out_shape)) if out_shape else 1):
    return out_shape
  return () if width == 1 else (width,)


def check_scoring(config: AuditConfig, spec: ScoringSpec, models: Models,
                  sample: Sample) -> Optional[str]:
  """Scores `sample` with the real scorer and `models` (`[fold][checkpoint]`,
  `model.load_models`); any failure is exit 2.

  A custom loss is the user's code, imported and first called here: whatever
  it raises, SystemExit and any Exception alike (only KeyboardInterrupt goes
  through), is a ConfigError naming its key (`loss.custom` or
  `loss.outputs[i].custom`), the exception type and its first line. With
  several custom losses, the one that fails is found by scoring each alone.

  Returns:
    `logits` or `outputs`: what the losses were computed from
    (`scoring.computed_from`); None when no record reached the model.

  Raises:
    ConfigError: the loss cannot be built, the model does not fit the data,
      no record of `sample` can be scored, or many labels are outside the
      model's classes.
  """
  _build_custom_losses(_custom_terms(config, spec))
  scorer = _cpu_scorer(spec, models)
  try:
    with warnings.catch_warnings():
      # The checks below say the same in one line, with the key to change.
      warnings.filterwarnings("ignore", _KERAS_ONE_CLASS_WARNING)
      if config.loss.from_logits_check:
        warnings.filterwarnings("ignore", _KERAS_FROM_LOGITS_WARNING)
      scored, dead = scorer.score(sample.path, sample.batch)
  except KeyboardInterrupt:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    error = _scoring_error(config, spec, models, sample, e)
    if error is None:
      raise
    raise error from None
  none_scored = None
  if scored is None and dead:
    none_scored = ConfigError(
        f"input: none of the first {sample.num_rows} records of"
        f" {sample.path} can be scored; first problem: {dead[0]['error']}")
    # Predictions of the other kind are told by the output checks below.
    if not (spec.predictions_kind and config.loss.from_logits_check and any(
        d["reason"] == BAD_PREDICTION for d in dead)):
      raise none_scored
  _check_classes(sample.num_rows, sample.path, dead)
  checked = losses.DENSE_CLASSIFICATION + losses.DEVIANCE_LOSSES + (
      losses.TAKES_PROBABILITIES if config.loss.from_logits_check else ())
  outputs = None
  if any(not t.custom and t.loss_name in checked for t in spec.terms):
    outputs = _sample_outputs(spec, scorer, sample)
  if outputs is not None:
    _check_output_shapes(config, spec, outputs)
    _check_means(config, spec, outputs, sample.num_rows)
    if config.loss.from_logits_check:
      _check_outputs(config, spec, outputs, sample.num_rows)
  if none_scored is not None:
    raise none_scored
  if spec.num_folds:
    _check_every_fold(spec, scorer, sample)
  return scorer.computed_from


def _sample_outputs(spec: ScoringSpec, scorer: BatchScorer,
                    sample: Sample) -> Optional[Dict[str, np.ndarray]]:
  """Each model output `(n, ...)` on the sample's n good rows, those the
  model takes (a corrupt image is left out, found by halves as the scorer
  finds it); None when no row is good."""
  read = read_model_inputs(spec, sample.batch)
  bad = read.bad
  # Rows of a predictions column that are not of its kind are dead-lettered
  # one by one; but when they are most of the sample, the kind is wrong, as
  # `_check_outputs` says.
  wrong = next((p.rows for p in read.problems
                if p.reason == BAD_PREDICTION), None)
  if wrong is not None and 2 * wrong.sum() > (~bad).sum() + wrong.sum():
    bad = bad & ~wrong
  if bad.all():
    return None
  parts = _outputs_by_halves(spec, scorer, read.inputs.rows(~bad),
                             int((~bad).sum()))
  if not parts:
    return None
  return {term.output: np.concatenate([p[term.output] for p in parts])
          for term in spec.terms}


def _outputs_by_halves(spec: ScoringSpec, scorer: BatchScorer,
                       inputs: ModelInputs, n: int
                       ) -> List[Dict[str, np.ndarray]]:
  try:
    result = scorer.score_arrays(inputs.features, inputs.labels)
  except DATA_ERRORS:
    if n == 1:
      return []
    half = n // 2
    return (_outputs_by_halves(spec, scorer, inputs.slice(0, half), half) +
            _outputs_by_halves(spec, scorer, inputs.slice(half, n), n - half))
  return [{term.output: np.asarray(result[OUTPUT_PREFIX + term.output])
           for term in spec.terms}]


def _check_output_shapes(config: AuditConfig, spec: ScoringSpec,
                         outputs: Dict[str, np.ndarray]) -> None:
  """A categorical crossentropy of one output unit is 0 for every row.

  Raises:
    ConfigError: naming the term's loss name, with the binary loss to use.
  """
  for key, term in zip(_term_keys(config), spec.terms):
    values = outputs[term.output]
    if (not term.custom and term.loss_name in losses.DENSE_CLASSIFICATION
        and values.ndim > 1 and values.shape[-1] == 1):
      binary = term.loss_name.replace("categorical", "binary")
      raise ConfigError(
          f"{key}.name: expected {binary} for output {term.output!r} of one"
          f" unit: {term.loss_name} over one class is 0 for every example."
          f" Received: {term.loss_name!r}")


def _check_means(config: AuditConfig, spec: ScoringSpec,
                 outputs: Dict[str, np.ndarray], num_rows: int) -> None:
  """Count and positive regression losses read the output as a mean mu > 0
  (an exp or softplus output layer); a linear output gives negative losses
  and deviances.

  Raises:
    ConfigError: naming the term's loss name and the smallest output seen.
  """
  for key, term in zip(_term_keys(config), spec.terms):
    if term.custom or term.loss_name not in losses.DEVIANCE_LOSSES:
      continue
    values = outputs[term.output]
    finite = values[np.isfinite(values)]
    poisson = term.loss_name == "poisson"
    outside = finite < 0 if poisson else finite <= 0
    if outside.any():
      raise ConfigError(
          f"{key}.name: {term.loss_name!r} reads output {term.output!r} as a"
          f" mean mu {'>= 0' if poisson else '> 0'} (an exp or softplus"
          f" output layer), but it has values down to {finite.min():.4g} in"
          f" the first {num_rows} records ({outside.mean():.0%} of its"
          f" values); expected a model of such means. Received:"
          f" {term.loss_name!r}")


def _check_outputs(config: AuditConfig, spec: ScoringSpec,
                   outputs: Dict[str, np.ndarray], num_rows: int) -> None:
  """Each loss of probabilities gets probabilities, and each of logits
  gets logits: on the sample's rows, an output read as probabilities must
  be in [0, 1] and, when it is one distribution over classes, sum to 1; an
  output read as logits must not look like that.

  Raises:
    ConfigError: naming `from_logits` (or `model.predictions_kind`) of the
      term at fault, what was expected and what the outputs hold.
  """
  checked = [(key, t) for key, t in zip(_term_keys(config), spec.terms)
             if not t.custom and t.loss_name in losses.TAKES_PROBABILITIES]
  for key, term in checked:
    values = outputs[term.output]
    distribution = (term.loss_name not in losses.BINARY_CLASSIFICATION and
                    values.ndim > 1 and values.shape[-1] > 1)
    seen = losses.output_range(values, distribution)
    if seen is None or seen.probabilities != term.from_logits:
      continue
    where = f"in the first {num_rows} records ({seen.describe()})"
    if spec.predictions_kind:
      kind = "logits" if term.from_logits else "probabilities"
      looks = "look like probabilities" if term.from_logits else (
          "are not probabilities")
      raise ConfigError(
          f"model.predictions_kind: expected"
          f" {'probabilities' if term.from_logits else 'logits'}: the values"
          f" of {config.model.predictions_column!r} {looks} {where}."
          f" Received: {kind!r} ({_SKIP})")
    if term.from_logits:
      raise ConfigError(
          f"{key}.from_logits: expected false: output {term.output!r} looks"
          f" like probabilities {where}. Received: true ({_SKIP})")
    if term.loss_name not in losses.TAKES_FROM_LOGITS:
      raise ConfigError(
          f"{key}.name: {term.loss_name!r} takes probabilities, and output"
          f" {term.output!r} is not probabilities {where}; expected a softmax"
          f" output. Received: {term.loss_name!r}")
    raise ConfigError(
        f"{key}.from_logits: expected true: output {term.output!r} is not"
        f" probabilities {where}. Received: false ({_SKIP})")


_SKIP = "loss.from_logits_check: false skips this check"
_KERAS_FROM_LOGITS_WARNING = (
    r".*received `from_logits=True`, but the `output` argument was produced")
_KERAS_ONE_CLASS_WARNING = r".*expected y_pred.shape to be .* num_classes > 1"


FOLD_PROBE_ROWS = 8


def _check_every_fold(spec: ScoringSpec, scorer: BatchScorer,
                      sample: Sample) -> None:
  """Every fold's model scores a few rows of `sample`, whatever their folds
  (the first records may miss a fold).

  Raises:
    ConfigError: a fold's model fails on them, naming its path.
  """
  checked = read_model_inputs(spec, sample.batch)
  inputs = checked.inputs.rows(~checked.bad)
  rows = min(FOLD_PROBE_ROWS, len(checked.bad) - int(checked.bad.sum()))
  if not rows:
    return
  part = inputs.slice(0, rows)
  for fold, paths in enumerate(spec.model_paths):
    try:
      scorer.score_arrays(part.features, part.labels, fold)
    except KeyboardInterrupt:
      raise
    except Exception as e:  # pylint: disable=broad-except
      cause = (op_error_line(e) if isinstance(e, tf.errors.OpError)
               else describe_error(e))
      raise ConfigError(
          f"model.path: the model of fold {fold}, {paths[-1]!r}, does not"
          f" fit the data of {sample.path}: {cause}") from None


def _term_keys(config: AuditConfig) -> List[str]:
  """The config key of each loss term, in order: `loss.outputs[i]`, or
  `loss` for the one term of `loss`."""
  if config.loss.outputs:
    return [f"loss.outputs[{o.index}]" for o in config.loss.outputs]
  return ["loss"]


def _custom_terms(config: AuditConfig, spec: ScoringSpec
                  ) -> List[Tuple[str, LossTerm]]:
  """`(key, term)` of each term with a custom loss; `key` is its
  `....custom` config key."""
  return [(f"{prefix}.custom", term)
          for prefix, term in zip(_term_keys(config), spec.terms)
          if term.custom]


def _build_custom_losses(custom: Sequence[Tuple[str, LossTerm]]) -> None:
  """Imports each custom loss, one by one, to name the one that fails.

  Raises:
    ConfigError: naming the key of the first loss that cannot be built.
  """
  for key, term in custom:
    try:
      term.build_loss()
    except KeyboardInterrupt:
      raise
    except losses.LossArgumentsError as e:
      raise ConfigError(f"{key[:-len('custom')]}args: {e}") from None
    except BaseException as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{key}: could not build the loss: {describe_error(e)}; expected an"
          " importable 'package.module:function'. Received:"
          f" {short_repr(term.custom)}") from None


def _cpu_scorer(spec: ScoringSpec, models: Models) -> BatchScorer:
  """The real scorer of `spec` on `models`, on the CPU; it returns the
  model outputs too (`_check_outputs` reads them).

  Raises:
    ConfigError: the loss graph cannot be built.
  """
  try:
    return BatchScorer(dataclasses.replace(spec, device="cpu"),
                       models=models, with_outputs=True)
  except (ImportError, AttributeError, TypeError, ValueError) as e:
    key = "loss.custom" if any(t.custom for t in spec.terms) else "loss"
    raise ConfigError(
        f"{key}: could not build the loss: {type(e).__name__}:"
        f" {first_line(e)}") from None


def _failing_custom(spec: ScoringSpec, models: Models, sample: Sample,
                    error: BaseException, custom: Sequence[Tuple[str, LossTerm]]
                    ) -> Optional[Tuple[str, LossTerm]]:
  """`(key, term)` of the custom loss behind `error` (raised scoring
  `sample` with `spec`), or None.

  With several terms, each custom loss scores `sample` alone, on the CPU;
  the first that fails is the one. When none fails alone, an error that is
  not an Exception (SystemExit, ...) is still put down to the first.
  """
  if not custom:
    return None
  if len(spec.terms) == 1:
    return custom[0]
  for key, term in custom:
    alone = dataclasses.replace(spec, device="cpu", terms=(term,),
                                keep_probs=False)
    try:
      BatchScorer(alone, models=models).score(sample.path, sample.batch)
    except KeyboardInterrupt:
      raise
    except BaseException:  # pylint: disable=broad-except
      return key, term
  return None if isinstance(error, Exception) else custom[0]


def _scoring_error(config: AuditConfig, spec: ScoringSpec, models: Models,
                   sample: Sample, error: BaseException
                   ) -> Optional[ConfigError]:
  """The ConfigError `error`, raised scoring `sample`, stops the run with;
  None when it is not an Exception and no custom loss raised it (it is then
  raised as it is)."""
  custom = _custom_terms(config, spec)
  if isinstance(error, LossShapeError):
    key = next((f"{prefix}.{'custom' if t.custom else 'name'}"
                for prefix, t in zip(_term_keys(config), spec.terms)
                if str(error).startswith(repr(t.custom or t.loss_name))),
               "loss.custom" if custom else "loss.name")
    return ConfigError(f"{key}: {error}")
  culprit = _failing_custom(spec, models, sample, error, custom)
  if culprit:
    key, term = culprit
    return ConfigError(
        f"{key}: {short_repr(term.custom)} failed on the first"
        f" {sample.num_rows} records of {sample.path}:"
        f" {describe_error(error)}")
  if not isinstance(error, Exception):
    return None
  if isinstance(error, tf.errors.OpError):
    cause = op_error_line(error)
    if isinstance(error, DATA_ERRORS):
      cause += (f"; every one of the first {sample.num_rows} records failed"
                " alone (a record the model rejects is a dead letter only"
                " when others score)")
  else:
    cause = describe_error(error)
  if spec.predictions_kind:
    subject = (f"model.predictions_column: the predictions in"
               f" {config.model.predictions_column!r}")
  else:
    subject = f"model.path: the model {config.model.path!r}"
  return ConfigError(
      f"{subject} do{'' if spec.predictions_kind else 'es'} not fit the"
      f" data of {sample.path} with loss"
      f" {[t.custom or t.loss_name for t in spec.terms]}: {cause}")


def _check_classes(num_rows: int, path: str, dead: Sequence[dict]) -> None:
  """A few labels out of range are bad records (dead letters); many mean the
  model was trained on other classes than the data has."""
  out_of_range = [d for d in dead if d["reason"] == LABEL_OUT_OF_RANGE]
  if len(out_of_range) < max(1, CLASS_MISMATCH_SHARE * num_rows):
    return
  raise ConfigError(
      f"input.label_column: {len(out_of_range)} of the first {num_rows}"
      f" labels of {path} are outside the model's classes (first:"
      f" {out_of_range[0]['error']}); expected a model trained on the"
      " data's classes")
