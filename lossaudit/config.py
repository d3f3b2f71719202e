"""The typed audit configuration: loaded from YAML, validated on construction.

Every error (`lossaudit.errors.ConfigError`) names the dotted key, what was
expected and what was received, so the CLI can print it on one line and exit
2 before the pipeline starts.

What each key accepts is declared next to it, as a `Rule` in its dataclass
field's metadata (`metadata={RULE: Rule(...)}`); one validator, `_validate`,
applies the rules of a section's fields in order. Checks across fields stay
small explicit methods. A key set in the YAML or by `--set` that has no
effect in the mode the config is in (`_NO_EFFECT`: `dynamics.*` without
`model.checkpoints`, ...) is refused by `AuditConfig.from_dict`, which alone
sees which keys were set (a default is not). Checks that need the model or
the data are `lossaudit.planning`'s and `lossaudit.probe`'s.

YAML is read with `LimitedLoader`, a SafeLoader that refuses alias bombs: an
alias shares its anchor's node, so nine anchors of nine aliases each (72
aliases, 300 bytes) load in microseconds but expand to 9**9 values wherever
the config is walked (`repr` in an error message, `dataclasses.asdict`, the
config written into summary.json): a 480 KB message or a MemoryError.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import os
import re
import string
from typing import (
  Any,
  Callable,
  Collection,
  Mapping,
  Optional,
  Sequence,
  Tuple,
  Union,
)

import yaml

from lossaudit import formats, rules
from lossaudit.errors import ConfigError, one_line, short_repr
from lossaudit.validation import SCHEME as _SCHEME
from lossaudit.validation import Rule  # pylint: disable=unused-import
from lossaudit.validation import check_location as _check_location
from lossaudit.validation import fail as _fail
from lossaudit.validation import integer as _integer
from lossaudit.validation import is_number as _is_number
from lossaudit.validation import number as _number
from lossaudit.validation import one_of as _one_of

FORMATS = formats.names()
REDUCTIONS = ("mean", "sum")
FLAG_SCORES = ("loss", "deviance")
PREDICTIONS_KINDS = ("probabilities", "logits")
# `model.select_checkpoint`: the last checkpoint of each fold, or the one
# with the lowest mean loss on the fold's held-out rows.
SELECT_CHECKPOINT = ("last", "heldout_loss")
MODEL_PLACEHOLDERS = ("fold", "checkpoint")
MAX_FOLDS = 1000
MAX_CHECKPOINTS = 1000
MAX_MODELS = 1000  # Folds × checkpoints: each worker loads every one.
DEVICES = ("auto", "cpu", "gpu")

MAX_BATCH_SIZE = 1 << 20
MIN_EPSILON = 1e-6  # Smaller: the quantile sketch asks for terabytes.
MAX_NUM_SHARDS = 10_000
MAX_REPORT_ROWS = 100_000  # report.html grows by about 0.5 kB a row.
OUTPUT_PLACEHOLDERS = ("date", "run_id")
# A lock older than this is taken over; at most a year keeps time arithmetic
# (datetime.timedelta) far from overflow.
MAX_LOCK_TIMEOUT_SECONDS = 365 * 86400.0
MAX_YAML_ALIASES = 100
MAX_YAML_VALUES = 100_000  # Scalars, lists, mappings added by aliases.

_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_CUSTOM_LOSS = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")
_ACCELERATOR = re.compile(r"type:.*", re.DOTALL)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# The key of a field's `Rule` in its dataclass field metadata.
RULE = "rule"
# Its one line of help, for the config reference.
HELP = "help"


def _field(rule: Rule, default: Any = dataclasses.MISSING, *,
           default_factory: Any = dataclasses.MISSING,
           help: str = "") -> Any:  # pylint: disable=redefined-builtin
  """A dataclass field whose values `rule` checks; `help`, one line for the
  config reference (`lossaudit.config_reference`), is its `metadata[HELP]`."""
  return dataclasses.field(default=default, default_factory=default_factory,
                           metadata={RULE: rule, HELP: help})


def _validate(config: Any, prefix: str, *, first: Sequence[str] = (),
              skip: Collection[str] = ()) -> None:
  """Applies the `Rule` of each field of `config`, storing what it gives.

  Fields go in declaration order, those in `first` first; the first broken
  rule raises.

  Args:
    config: a dataclass instance (frozen: values are set through `object`).
    prefix: the dotted key of `config` ("" at the top).
    first: fields checked before the others, in this order.
    skip: fields not checked.

  Raises:
    ConfigError: naming `prefix.field`, what it expected and what it got.
  """
  fields = {f.name: f for f in dataclasses.fields(config)}
  for name in dict.fromkeys([*first, *fields]):
    rule = fields[name].metadata.get(RULE)
    if rule is None or name in skip:
      continue
    key = f"{prefix}.{name}" if prefix else name
    object.__setattr__(config, name, rule.apply(key, getattr(config, name)))


_BOOLEAN = Rule("true or false", types=(bool,))
_STRING = Rule("a string", types=(str,))
_OPTIONAL_STRING = Rule("a string or null", types=(str,), nullable=True)
_NON_EMPTY_STRING = Rule("a non-empty string", types=(str,), nonempty=True)


_GLOBS = "a non-empty glob or list of globs"
_FEATURE_COLUMNS = (
    "null, a list of column names or a mapping model input -> column")


def _check_globs(key: str, value: Union[str, Sequence[str]]) -> None:
  if not isinstance(value, str) and not all(
      isinstance(p, str) and p for p in value):
    _fail(key, _GLOBS, value)
  for pattern in (value,) if isinstance(value, str) else value:
    _check_location(key, pattern)


_VOCABULARY = ("null, a non-empty list of distinct class names or the path of"
               " a file with one class name per line")


def _check_vocabulary(key: str, value: Any) -> None:
  if isinstance(value, str):
    _check_location(key, value)
    return
  if not all(isinstance(name, str) and name for name in value):
    _fail(key, _VOCABULARY, value)
  repeated = sorted({name for name in value if value.count(name) > 1})
  if repeated:
    _fail(key, f"distinct class names; repeated: {repeated}", value)


def _check_feature_columns(key: str, value: Any) -> None:
  if isinstance(value, collections.abc.Mapping):
    ok = all(isinstance(k, str) and isinstance(v, str)
             for k, v in value.items())
  else:
    ok = all(isinstance(c, str) and c for c in value)
  if not ok:
    _fail(key, _FEATURE_COLUMNS, value)


_IMAGE_SHAPE = ("null, [H, W] or [H, W, C]: positive integers, C 1, 3 or 4,"
                " at most 4096 on a side")


def _check_image_shape(key: str, value: Sequence[Any]) -> None:
  sides = list(value)
  if (len(sides) not in (2, 3) or not all(
      isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096
      for v in sides) or (len(sides) == 3 and sides[2] not in (1, 3, 4))):
    _fail(key, _IMAGE_SHAPE, value)


@dataclasses.dataclass(frozen=True)
class InputConfig:
  pattern: Union[str, Sequence[str]] = _field(
      Rule(_GLOBS, types=(str, list, tuple), nonempty=True,
           check=_check_globs,
           convert=lambda v: v if isinstance(v, str) else tuple(v)), "",
      help="The input files: a glob or a list of globs, local or gs://.")
  format: str = _field(_one_of(FORMATS), "tfrecord",
      help="tfrecord (tf.train.Example records, plain or gzip) or parquet.")
  id_column: Optional[str] = _field(_OPTIONAL_STRING, "id",
      help=("The example id column; null: a content fingerprint (FarmHash of "
            "features and label)."))
  label_column: Optional[str] = _field(_OPTIONAL_STRING, "label",
      help=("The label: a sparse int class, a one-hot vector, a class name or"
            " a float target."))
  weight_column: Optional[str] = _field(_OPTIONAL_STRING, None,
      help=("A per-example weight column: adds weighted_loss (Keras "
            "sample_weight)."))
  feature_columns: Optional[Union[Sequence[str], Mapping[str, str]]] = _field(
      Rule(_FEATURE_COLUMNS, types=(collections.abc.Mapping, list, tuple),
           nullable=True, nonempty=True, check=_check_feature_columns,
           convert=lambda v: (dict(v) if isinstance(
               v, collections.abc.Mapping) else tuple(v))), None,
      help=("null: the model's input names; a list in model input order, or "
            "{input: column}."))
  label_vocabulary: Optional[Union[str, Sequence[str]]] = _field(
      Rule(_VOCABULARY, types=(str, list, tuple), nullable=True,
           nonempty=True, check=_check_vocabulary,
           convert=lambda v: v if isinstance(v, str) else tuple(v)), None,
      help=("Class names, a list or a file with one per line: string labels "
            "become class ids."))
  pad_value: Optional[float] = _field(_number(), None,
      help=("Pads rows of inputs of unknown length (null: 0), and of fixed-"
            "length ones when set."))
  truncate: bool = _field(_BOOLEAN, False,
      help=("Cut rows longer than a fixed-length model input (else a "
            "wrong_size dead letter)."))
  fold_column: Optional[str] = _field(
      Rule("null or a column name", types=(str,), nullable=True,
           nonempty=True), None,
      help=("An int column: each example's held-out fold (model.folds); null:"
            " fold_of(id, K)."))
  image_shape: Optional[Tuple[int, ...]] = _field(
      Rule(_IMAGE_SHAPE, types=(list, tuple), nullable=True,
           check=_check_image_shape, convert=tuple), None,
      help=("[H, W] or [H, W, C] (C 1, 3 or 4): a numeric feature of H*W*C"
            " values shown as a thumbnail in the report."))

  def __post_init__(self):
    _validate(self, "input")

  @property
  def patterns(self) -> tuple:
    return (self.pattern,) if isinstance(self.pattern, str) else self.pattern


def _check_model_path(key: str, template: str) -> None:
  """Refuses any brace in `template` but a bare `{fold}` or `{checkpoint}`."""
  expected = "a path whose only placeholders are {fold} and {checkpoint}"
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError:  # A stray "{" or "}".
    _fail(key, expected, template)
  for literal, field, spec, conversion in parsed:
    if "{" in literal or "}" in literal:
      _fail(key, expected, template)
    if field is not None and (field not in MODEL_PLACEHOLDERS or spec or
                              conversion):
      _fail(key, expected, template)


def model_placeholders(template: str) -> Tuple[str, ...]:
  """The placeholders (`fold`, `checkpoint`) in a checked `model.path`."""
  return tuple(field for _, field, _, _ in string.Formatter().parse(template)
               if field is not None)


def _check_dynamics_path(key: str, template: str) -> None:
  """A path template holding `{checkpoint}` once, and no other brace."""
  expected = ("a path holding {checkpoint} (once) and no other placeholder:"
              " the checkpoints of one model trained on every row")
  try:
    _check_model_path(key, template)
  except ConfigError:
    _fail(key, expected, template)
  if model_placeholders(template) != ("checkpoint",):
    _fail(key, expected, template)


_CHECKPOINTS = (f"null or a list of 2 to {MAX_CHECKPOINTS} distinct"
                " checkpoint names (strings or integers) filling"
                " {checkpoint}")


def _check_checkpoints(key: str, value: Sequence[Any]) -> None:
  names = [str(v) for v in value]
  if (not all(isinstance(v, (str, int)) and not isinstance(v, bool) and
              str(v) for v in value) or
      not 2 <= len(value) <= MAX_CHECKPOINTS or
      len(set(names)) != len(names)):
    _fail(key, _CHECKPOINTS, value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model, or models, that score each example.

  Attributes:
    path: a `.keras` file or SavedModel directory (local or gs://); holds
      `{fold}` with `folds` and `{checkpoint}` with `checkpoints`. Empty
      with `predictions_column`.
    folds: K: example scored by the model of its held-out fold
      (`input.fold_column`, else `lossaudit.folds.fold_of` of its id).
    checkpoints: names filling `{checkpoint}`, oldest first: every example
      is scored by each (training dynamics); the losses are the last's, or
      with `select_checkpoint: heldout_loss` each fold's best.
    predictions_column: no model: the column holds each example's class
      probabilities or logits (`predictions_kind`).
    select_checkpoint: `last`, or `heldout_loss`: each fold's rows are
      scored by its checkpoint with the lowest mean held-out loss
      (`lossaudit.checkpoint_selection`).
    dynamics_path: checkpoints of one model trained on every row, `{checkpoint}`
      filled from `checkpoints`: the training dynamics (and
      `flag.label_issues: early_aum`) come from them.
  """

  path: str = _field(Rule("a .keras file or a SavedModel directory",
                          types=(str,), location=True,
                          check=_check_model_path), "",
      help=("A .keras file or SavedModel directory, local or gs://; may hold "
            "{fold} and {checkpoint}."))
  signature: str = _field(_STRING, "serving_default",
      help="The SavedModel signature to call (SavedModel only).")
  output: Optional[str] = _field(_OPTIONAL_STRING, None,
      help=("The output to score when the model has several (loss.outputs "
            "scores several)."))
  serialized_examples_input: Optional[str] = _field(
      Rule("null or the name of a signature input", types=(str,),
           nullable=True, nonempty=True), None,
      help=("The signature input taking serialized tf.Examples; null: a lone "
            "string input 'examples'."))
  folds: Optional[int] = _field(_integer(
      2, MAX_FOLDS, f"null or an integer in [2, {MAX_FOLDS}]",
      nullable=True), None,
      help=("K: each example is scored by the model of its held-out fold; "
            "model.path holds {fold}."))
  checkpoints: Optional[Sequence[str]] = _field(
      Rule(_CHECKPOINTS, types=(list, tuple), nullable=True,
           check=_check_checkpoints,
           convert=lambda v: tuple(str(c) for c in v)), None,
      help=("Two or more names filling {checkpoint}, oldest first: training "
            "dynamics from each."))
  predictions_column: Optional[str] = _field(
      Rule("null or a column name", types=(str,), nullable=True,
           nonempty=True), None,
      help=("No model (model.path empty): a column of predicted probabilities"
            " or logits."))
  predictions_kind: str = _field(_one_of(PREDICTIONS_KINDS), "probabilities",
      help="What model.predictions_column holds: probabilities or logits.")
  select_checkpoint: str = _field(_one_of(SELECT_CHECKPOINT), "last",
      help=("Each fold's checkpoint: last, or heldout_loss (the lowest mean"
            " loss on the fold's held-out rows)."))
  dynamics_path: Optional[str] = _field(
      Rule("null or a path holding {checkpoint}", types=(str,),
           nullable=True, nonempty=True, location=True,
           check=_check_dynamics_path), None,
      help=("Checkpoints of one model trained on every row ({checkpoint} from"
            " model.checkpoints): the training dynamics."))

  def __post_init__(self):
    _validate(self, "model")
    self._check_sources()
    self._check_placeholders()

  def _check_sources(self) -> None:
    """Exactly one of a model path and a predictions column."""
    column = self.predictions_column
    if column is not None and self.path:
      raise ConfigError(
          f"model.predictions_column: expected model.path to be empty (the"
          f" predictions are read, no model runs). Received:"
          f" predictions_column={column!r} with model.path={self.path!r}")
    if column is None and not self.path:
      _fail("model.path", "a .keras file or a SavedModel directory, or"
            " model.predictions_column set", self.path)
    if column is not None and (self.folds or (
        self.checkpoints and not self.dynamics_path)):
      used = "model.folds" if self.folds else "model.checkpoints"
      raise ConfigError(
          f"{used}: needs model.path (a predictions column is already"
          f" out-of-sample or one set of predictions). Received:"
          f" model.predictions_column={column!r}")
    if column is None and self.predictions_kind != "probabilities":
      raise ConfigError(
          f"model.predictions_kind: needs model.predictions_column (a"
          f" model's outputs are described by loss.from_logits). Received:"
          f" {self.predictions_kind!r} with model.path={self.path!r}")
    per_fold = (len(self.checkpoints) if self.checkpoints and
                "checkpoint" in model_placeholders(self.path) else 1)
    models = (0 if column else (self.folds or 1) * per_fold) + (
        len(self.checkpoints or ()) if self.dynamics_path else 0)
    if models > MAX_MODELS:
      raise ConfigError(
          f"model.checkpoints: expected at most {MAX_MODELS} models in all"
          f" (model.folds × model.checkpoints), each loaded by every worker."
          f" Received: {self.folds} folds × {len(self.checkpoints)}"
          f" checkpoints = {models}")

  def _check_placeholders(self) -> None:
    """`{fold}` in the path exactly when `folds` is set; `{checkpoint}`
    exactly when `checkpoints` is (or in `dynamics_path` only)."""
    found = model_placeholders(self.path)
    if self.dynamics_path and not self.checkpoints:
      raise ConfigError(
          f"model.dynamics_path: needs model.checkpoints (the names filling"
          f" {{checkpoint}}). Received: {self.dynamics_path!r} with"
          f" model.checkpoints=None")
    for placeholder, key, value in (("fold", "folds", self.folds),
                                    ("checkpoint", "checkpoints",
                                     self.checkpoints)):
      holds = placeholder in found
      if (value is not None and not holds and
          not (placeholder == "checkpoint" and self.dynamics_path)):
        raise ConfigError(
            f"model.path: expected a path holding {{{placeholder}}}, filled"
            f" in from model.{key}. Received: {self.path!r}")
      if holds and value is None:
        raise ConfigError(
            f"model.{key}: expected a value to fill {{{placeholder}}} in"
            f" model.path {self.path!r}. Received: None")
    if self.select_checkpoint == "heldout_loss" and not (
        self.folds and "checkpoint" in found):
      raise ConfigError(
          f"model.select_checkpoint: 'heldout_loss' needs model.folds and"
          f" model.checkpoints, with {{fold}} and {{checkpoint}} in"
          f" model.path (each fold's checkpoints are compared on its"
          f" held-out rows). Received: model.path={self.path!r}, folds="
          f"{self.folds}, checkpoints={_names(self.checkpoints)}")

  def path_groups(self) -> Tuple[Tuple[str, ...], ...]:
    """Each fold's model (one without `folds`), as each checkpoint's path
    (one without `checkpoints`); empty with a predictions column."""
    if self.predictions_column:
      return ()
    folds = range(self.folds) if self.folds else (None,)
    return tuple(self.paths(fold) for fold in folds)

  def dynamics_paths(self) -> Tuple[str, ...]:
    """`dynamics_path` of each checkpoint, oldest first (none without)."""
    if not self.dynamics_path:
      return ()
    return tuple(self.dynamics_path.format(checkpoint=c)
                 for c in self.checkpoints)

  def paths(self, fold: Optional[int] = None) -> Tuple[str, ...]:
    """The model paths of `fold` (None without folds), one per checkpoint
    (oldest first) or one."""
    values = {} if fold is None else {"fold": fold}
    if "checkpoint" not in model_placeholders(self.path):
      return (self.path.format(**values),)
    return tuple(self.path.format(checkpoint=c, **values)
                 for c in self.checkpoints)


def _names(checkpoints: Optional[Sequence[str]]) -> Optional[list]:
  return None if checkpoints is None else list(checkpoints)


def _check_loss_name(key: str, name: str) -> None:
  from lossaudit import losses  # Local: keeps config import light.

  reason = losses.NOT_PER_SAMPLE.get(name.lower())
  if reason:
    raise ConfigError(
        f"{key}: {name!r} has no per-sample loss: {reason}. Received:"
        f" {name!r}")
  if losses.canonical_loss_name(name) is None:
    suggestion = difflib.get_close_matches(name, losses.SUPPORTED_LOSSES, n=1)
    hint = f" Did you mean {suggestion[0]!r}?" if suggestion else ""
    raise ConfigError(
        f"{key}: expected one of {sorted(losses.SUPPORTED_LOSSES)}."
        f" Received: {short_repr(name)}.{hint}")


def _check_loss_term(key: str, term: Any) -> None:
  """Checks a `loss` or `loss.outputs[i]` section's fields together: no
  argument lossaudit sets itself in `args`, the values of Keras arguments
  that have bounds, and `from_logits` only for a loss of logits."""
  from lossaudit import losses  # Local: keeps config import light.

  if term.custom is not None:
    return
  for arg, instead in losses.RESERVED_ARGS.items():
    if arg in term.args:
      raise ConfigError(
          f"{key}.args.{arg}: expected {instead.format(key=key)}. Received:"
          f" {key}.args={short_repr(dict(term.args))}")
  for arg, value in term.args.items():
    if arg in losses.ARGUMENT_VALUES:
      what, holds = losses.ARGUMENT_VALUES[arg]
      if not holds(value):
        _fail(f"{key}.args.{arg}", what, value)
  name = losses.canonical_loss_name(term.name)
  if term.from_logits and name not in losses.TAKES_FROM_LOGITS:
    raise ConfigError(
        f"{key}.from_logits: expected false: {term.name!r} takes no logits"
        f" (only {list(losses.TAKES_FROM_LOGITS)} do). Received: true")


# Shared by `loss` and each of `loss.outputs`.
_LOSS_NAME = Rule("a Keras loss name", types=(str,), check=_check_loss_name)
_REDUCE = _one_of(REDUCTIONS)
_CUSTOM = Rule("'package.module:function'", types=(str,), nullable=True,
               pattern=_CUSTOM_LOSS)
_LOSS_ARGS = Rule("a mapping of Keras loss arguments",
                  types=(collections.abc.Mapping,), convert=dict)


@dataclasses.dataclass(frozen=True)
class LossOutputConfig:
  """One output of a multi-output model: its loss, labels and weight."""

  output: str = _field(_NON_EMPTY_STRING, "",
      help="The model output this term scores.")
  label_column: str = _field(_NON_EMPTY_STRING, "",
      help="The column holding this output's labels.")
  name: str = _field(_LOSS_NAME, "mean_squared_error",
      help="The Keras loss of this output (as loss.name).")
  weight: float = _field(_number(0, nullable=False,
                                 null_expected="a number >= 0"), 1.0,
      help="This term's weight in loss = sum of weight * part.")
  from_logits: bool = _field(_BOOLEAN, False,
      help="Whether this output holds logits (as loss.from_logits).")
  reduce: str = _field(_REDUCE, "mean",
      help="How this term reduces over a sample's non-batch axes: mean or sum.")
  args: Mapping[str, Any] = _field(_LOSS_ARGS, default_factory=dict,
      help="More arguments of this output's loss (as loss.args).")
  custom: Optional[str] = _field(_CUSTOM, None,
      help=("A custom loss for this output, package.module:function (as "
            "loss.custom)."))
  index: int = 0

  def __post_init__(self):
    # A custom loss needs no Keras name; `custom` is checked before `args`.
    _validate(self, f"loss.outputs[{self.index}]",
              first=("output", "label_column", "name", "weight",
                     "from_logits", "reduce", "custom"),
              skip=() if self.custom is None else ("name",))
    _check_loss_term(f"loss.outputs[{self.index}]", self)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  name: str = _field(_LOSS_NAME, "sparse_categorical_crossentropy",
      help=("The Keras loss (or an alias such as mse) the model was trained "
            "with."))
  from_logits: bool = _field(_BOOLEAN, False,
      help="Whether the model's output holds logits rather than probabilities.")
  reduce: str = _field(_REDUCE, "mean",
      help=("How one sample's loss reduces over its non-batch axes: mean (as "
            "Keras) or sum."))
  custom: Optional[str] = _field(_CUSTOM, None,
      help=("A custom per-sample loss, package.module:function taking "
            "(y_true, y_pred)."))
  outputs: Optional[Sequence[Mapping[str, Any]]] = None  # _parse_outputs.
  args: Mapping[str, Any] = _field(_LOSS_ARGS, default_factory=dict,
      help=("More loss arguments (label_smoothing, delta, ignore_class, ...);"
            " keywords to a custom loss."))
  from_logits_check: bool = _field(_BOOLEAN, True,
      help=("Refuse outputs that are not what from_logits says, seen on the "
            "first records."))

  def __post_init__(self):
    # The name is unused with a custom loss or per-output losses.
    unused = self.custom is not None or self.outputs
    _validate(self, "loss", skip=("name",) if unused else ())
    self._parse_outputs()
    if not self.outputs:
      _check_loss_term("loss", self)

  def _parse_outputs(self) -> None:
    """`outputs` as a tuple of `LossOutputConfig`, each output once."""
    if self.outputs is None:
      return
    if not isinstance(self.outputs, (list, tuple)) or not self.outputs:
      _fail("loss.outputs", "null or a non-empty list of {output,"
            " label_column, name, weight, from_logits}", self.outputs)
    parsed = []
    valid = [f.name for f in dataclasses.fields(LossOutputConfig)
             if f.name != "index"]
    for index, item in enumerate(self.outputs):
      if isinstance(item, LossOutputConfig):
        parsed.append(item)
        continue
      if not isinstance(item, Mapping):
        _fail(f"loss.outputs[{index}]", "a mapping", item)
      _reject_unknown(f"loss.outputs[{index}].", item, valid)
      parsed.append(LossOutputConfig(**item, index=index))
    names = [o.output for o in parsed]
    if len(set(names)) != len(names):
      _fail("loss.outputs", "each model output at most once", names)
    object.__setattr__(self, "outputs", tuple(parsed))


def _check_quantiles(key: str, value: Sequence[Any]) -> None:
  if not all(_is_number(q) and 0 <= q <= 1 for q in value):
    _fail(key, "a non-empty list of numbers in [0, 1]", value)


@dataclasses.dataclass(frozen=True)
class StatsConfig:
  quantiles: Sequence[float] = _field(
      Rule("a non-empty list of numbers in [0, 1]", types=(list, tuple),
           nonempty=True, check=_check_quantiles,
           convert=lambda v: tuple(sorted(set(float(q) for q in v)))),
      (0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999),
      help="The loss quantiles summary.json and the report give.")
  epsilon: float = _field(_number(MIN_EPSILON, 0.5, nullable=False), 0.001,
      help="The quantile sketch's rank-error bound.")
  slice_by: Optional[str] = _field(_OPTIONAL_STRING, None,
      help=("A column: count and quantiles per value (slices), and "
            "flag.slice_quantile."))
  # Distinct values of slice_by a run holds statistics for: more stop it.
  max_slices: int = _field(_integer(1, math.inf, "a positive integer"), 1000,
      help=("The most distinct stats.slice_by values a run holds statistics "
            "for."))
  weighted: bool = _field(_BOOLEAN, False,
      help="Statistics and flags on weighted_loss rather than loss.")

  def __post_init__(self):
    _validate(self, "stats")


class FlagConfig:
  """`flag`: the settings of every flag rule, then `score`.

  The rule settings are the registered rules' (`lossaudit.rules`): each
  `Setting` is a field with its `Rule`, declared by `_declare_flag_fields`
  whenever the registry changes, so `flag.<key>` reads as any config key.

  Attributes:
    score: the column the rules compare: `loss` or `deviance`.
  """

  @property
  def needs_global_statistics(self) -> bool:
    """Whether a rule compares each row with something known only once
    every row is scored (a quantile, the median, the top k, label-issue
    thresholds); `loss_threshold` and `aum_below` alone do not."""
    return rules.needs_global_statistics(self)

  def __post_init__(self):
    # The order errors have always been reported in.
    _validate(self, "flag", first=("loss_quantile", "loss_threshold",
                                   "slice_quantile", "top_k"))


# What `dataclasses.dataclass` adds to a class: removed before it runs on
# `FlagConfig` again.
_DATACLASS_ATTRIBUTES = (
    "__init__", "__repr__", "__eq__", "__hash__", "__setattr__",
    "__delattr__", "__match_args__", "__dataclass_fields__",
    "__dataclass_params__")
_SCORE = rules.Setting("score", _one_of(FLAG_SCORES), "loss",
                       "the column the rules compare: loss or deviance",
                       "str")


def _declare_flag_fields() -> None:
  """Makes `FlagConfig` a frozen dataclass of the registered rules'
  settings, then `score`."""
  cls = FlagConfig
  for name in (*getattr(cls, "__dataclass_fields__", {}),
               *_DATACLASS_ATTRIBUTES):
    if name in cls.__dict__:
      delattr(cls, name)
  annotations = {}
  for setting in (*rules.settings(), _SCORE):
    annotations[setting.key] = setting.annotation
    setattr(cls, setting.key,
            _field(setting.rule, setting.default, help=setting.help))
  cls.__annotations__ = annotations
  dataclasses.dataclass(frozen=True)(cls)


_declare_flag_fields()
rules.on_change(_declare_flag_fields)


def _check_placeholders(key: str, template: str) -> None:
  """Refuses any brace in `template` but a bare `{date}` or `{run_id}`.

  `str.format` would also fill in `{date.year}`, `{date!r}`, `{date:%Y}` or
  `{date.__class__.__mro__}` (attribute lookups on the value), and `{0}` or
  `{}` fail only when the directory is filled in.
  """
  expected = ("a path whose only placeholders are {date} and {run_id}")
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError:  # A stray "{" or "}".
    _fail(key, expected, template)
  for literal, field, spec, conversion in parsed:
    if "{" in literal or "}" in literal:  # Escaped: "{{" or "}}".
      _fail(key, expected, template)
    if field is None:
      continue
    if field not in OUTPUT_PLACEHOLDERS or spec or conversion:
      _fail(key, expected, template)


def _duration_seconds(value: Any) -> Optional[float]:
  """Seconds in a duration: a number of seconds, or a string of a number
  and a unit `s`, `m`, `h` or `d` (`"90s"`, `"30m"`, `"6h"`, `"2d"`); None
  when `value` is neither."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if not isinstance(value, str):
    return None
  match = _DURATION.fullmatch(value.strip())
  if not match:
    return None
  return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_LOCK_TIMEOUT = ("a duration of at most 365d: a positive number of seconds,"
                 " or a string such as '90s', '30m', '6h' or '2d'")


def _check_duration(key: str, value: Any) -> None:
  seconds = _duration_seconds(value)
  if seconds is None or not 0 < seconds <= MAX_LOCK_TIMEOUT_SECONDS:
    _fail(key, _LOCK_TIMEOUT, value)


WEIGHT_SCHEMES = ("drop_flagged", "downweight_flagged", "loss_bins")
CLEAN_WHEN = ("passed", "always")


def _check_reasons(key: str, value: Sequence[Any]) -> None:
  """Each of `value` a registered rule's reason (`lossaudit.rules`)."""
  reasons = rules.reasons()
  unknown = [r for r in value if r not in reasons]
  if unknown:
    suggestion = difflib.get_close_matches(str(unknown[0]), reasons, n=1)
    hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
    _fail(key, f"a list of flag reasons, each one of {list(reasons)}"
          + hint, list(value))


_REASONS = Rule("null or a non-empty list of flag reasons",
                types=(list, tuple), nullable=True, nonempty=True,
                check=_check_reasons, convert=tuple)


@dataclasses.dataclass(frozen=True)
class CleanConfig:
  """`output.clean`: a copy of the input without the flagged examples.

  Attributes:
    drop_reasons: the flag reasons that drop an example (null: all).
    relabel: keep examples flagged only as `label_issue`, with the
      suggested label, where the model gives that label at least
      `relabel_min_probability`; a less certain label issue follows
      `drop_reasons`.
    relabel_min_probability: see `relabel`.
    when: `passed`: `clean/` (and `weights/`) are handed back only by a run
      whose gates all pass; `always`: by every completed run.
    decisions: a file of reviewed decisions (`lossaudit.decisions`), or
      None.
  """

  drop_reasons: Optional[Sequence[str]] = _field(_REASONS, None,
      help=("The flag reasons that drop an example from clean/; null: every "
            "reason."))
  relabel: bool = _field(_BOOLEAN, False,
      help=("Keep label issues with the suggested label when the model is "
            "sure enough."))
  relabel_min_probability: float = _field(_number(0, 1, nullable=False),
                                          0.9,
      help="The least probability of the suggested label that relabels.")
  when: str = _field(_one_of(CLEAN_WHEN), "passed",
      help=("passed: clean/ and weights/ only from a run whose gates pass; "
            "always: from every run."))
  decisions: Optional[str] = _field(
      Rule("null or a .csv or Label Studio .json file, local or gs://",
           types=(str,), nullable=True, nonempty=True, location=True), None,
      help=("Reviewed decisions (CSV id,action,label or a Label Studio"
            " export) that override the flags in clean/."))

  def __post_init__(self):
    _validate(self, "output.clean")

  @property
  def dropping(self) -> Tuple[str, ...]:
    return tuple(self.drop_reasons or rules.reasons())


@dataclasses.dataclass(frozen=True)
class WeightsConfig:
  """`output.weights`: `(id, weight)` of every scored example.

  Attributes:
    scheme: `drop_flagged` (0 flagged, else 1), `downweight_flagged`
      (`factor` flagged, else 1) or `loss_bins` (the loss's bin, 0 for the
      easiest `1/bins` of examples to `bins - 1`).
    factor: the weight of a flagged example (`downweight_flagged`).
    bins: how many loss bins (`loss_bins`; 10: deciles).
    reasons: the flag reasons that count (null: all).
  """

  scheme: str = _field(_one_of(WEIGHT_SCHEMES), "drop_flagged",
      help=("drop_flagged (0 or 1), downweight_flagged (factor or 1) or "
            "loss_bins (the loss's bin)."))
  factor: float = _field(_number(0, 1, nullable=False), 0.1,
      help="The weight of a flagged example with downweight_flagged.")
  bins: int = _field(_integer(2, 1000), 10,
      help="How many equal-count loss bins loss_bins uses (0: the easiest).")
  reasons: Optional[Sequence[str]] = _field(_REASONS, None,
      help="The flag reasons that count; null: every reason.")

  def __post_init__(self):
    _validate(self, "output.weights")

  @property
  def counting(self) -> Tuple[str, ...]:
    return tuple(self.reasons or rules.reasons())


def _sub_config(key: str, value: Any, cls: type) -> Any:
  """`value` (a mapping, or None) as `cls`."""
  if value is None or isinstance(value, cls):
    return value
  names = sorted(f.name for f in dataclasses.fields(cls))
  if not isinstance(value, Mapping):
    _fail(key, f"null or a mapping of {names}", value)
  _reject_unknown(f"{key}.", value, names)
  return cls(**value)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """Where a run writes.

  Attributes:
    dir: a local path or gs:// URI; may hold `{date}` (UTC, YYYY-MM-DD) and
      `{run_id}` (UTC start time and a random suffix), filled in at the start.
    num_shards: files per output table; 0 lets the runner decide.
    write_losses: whether to write the per-example `losses/` table.
    write_probabilities: whether `losses/` gets `probabilities`, those the
      label issues use (out-of-fold with `model.folds`).
    overwrite: allow a non-empty `dir` that lacks lossaudit's marker (a run
      still deletes only its own files).
    lock_timeout: a lock on `dir` older than this is taken over: a positive
      number of seconds, or a string such as `"90s"`, `"30m"`, `"6h"`,
      `"2d"` (see `lock_timeout_seconds`).
  """

  dir: str = _field(Rule("a local path or gs:// URI", types=(str,),
                         nonempty=True, location=True,
                         check=_check_placeholders), "out/audit",
      help=("Where the run writes, local or gs://; may hold {date} and "
            "{run_id}."))
  num_shards: int = _field(_integer(0, MAX_NUM_SHARDS), 0,
      help="Files per output table; 0: the runner decides.")
  write_losses: bool = _field(_BOOLEAN, True,
      help=("Write losses/, one row per scored example (false: scored_ids/ "
            "keeps the ids)."))
  write_probabilities: bool = _field(_BOOLEAN, False,
      help="losses/ gets the probabilities the label issues use.")
  overwrite: bool = _field(_BOOLEAN, False,
      help=("Take a non-empty dir without lossaudit's marker (still deletes "
            "only its own files)."))
  lock_timeout: Union[str, float] = _field(
      Rule(_LOCK_TIMEOUT, check=_check_duration), "6h",
      help=("Another run's lock older than this is taken over: seconds, or "
            "90s, 30m, 6h, 2d."))
  clean: Optional[CleanConfig] = None  # Parsed in __post_init__.
  weights: Optional[WeightsConfig] = None

  def __post_init__(self):
    _validate(self, "output")
    object.__setattr__(self, "clean",
                       _sub_config("output.clean", self.clean, CleanConfig))
    object.__setattr__(self, "weights", _sub_config(
        "output.weights", self.weights, WeightsConfig))

  @property
  def lock_timeout_seconds(self) -> float:
    """`lock_timeout` in seconds."""
    return _duration_seconds(self.lock_timeout)


def _check_baseline(key: str, value: str) -> None:
  if value == "":
    _fail(key, "null, 'latest' or an earlier run's output.dir", value)
  if value != "latest":
    _check_location(key, value)


def _check_numbers(key: str, value: Sequence[Any]) -> None:
  if not all(_is_number(q) for q in value):
    _fail(key, "null or a non-empty list of quantiles", value)


@dataclasses.dataclass(frozen=True)
class GateConfig:
  """Quality gates. `baseline`: an earlier run's `output.dir`, or `latest`:
  the newest earlier complete run (one with `summary.json`) beside this
  one whose gates passed (or that had none)."""

  baseline: Optional[str] = _field(
      Rule("a string or null", types=(str,), nullable=True,
           check=_check_baseline), None,
      help=("An earlier run's output.dir, or latest (the newest earlier run "
            "that passed); turns on flag history."))
  max_flagged_fraction: Optional[float] = _field(_number(0, 1), None,
      help="Fail (exit 3) when flagged / examples scored exceeds it.")
  max_quantile_shift: Optional[float] = _field(_number(0), None,
      help=("Fail when a watched loss quantile moves by more than this "
            "fraction."))
  # Fail when the flags the baseline did not have, over examples_scored,
  # exceed it (flag history: gate.baseline).
  max_new_flagged_fraction: Optional[float] = _field(_number(0, 1), None,
      help=("Fail when the flags the baseline did not have, over examples "
            "scored, exceed it."))
  # Fail when the new flags on ids the baseline scored (and did not flag),
  # over the ids scored in both runs, exceed it.
  max_regression_fraction: Optional[float] = _field(_number(0, 1), None,
      help=("Fail when new flags on ids both runs scored, over those ids, "
            "exceed it."))
  # The quantiles `max_quantile_shift` watches (null: all of stats.quantiles).
  # Low quantiles of a good model are near 0, where any change is large.
  shift_quantiles: Optional[Sequence[float]] = _field(
      Rule("null or a non-empty list of quantiles", types=(list, tuple),
           nullable=True, nonempty=True, check=_check_numbers,
           convert=tuple), None,
      help=("The quantiles max_quantile_shift watches; null: all of "
            "stats.quantiles."))

  def __post_init__(self):
    _validate(self, "gate", first=("shift_quantiles",))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Where the model runs.

  `device`: `auto` (a GPU when TensorFlow sees one), `cpu` or `gpu`.
  `accelerator`: a Beam resource hint put on the scoring step only (for
  runners that honour per-step hints, such as Dataflow Prime).
  `progress_seconds`: on the DirectRunner, each worker process prints a
  progress line at most this often (null: none).
  """

  device: str = _field(_one_of(DEVICES), "auto",
      help=("Where the model runs: auto (a GPU when TensorFlow sees one), cpu"
            " or gpu."))
  accelerator: Optional[str] = _field(
      Rule("null or a Beam accelerator hint such as"
           " 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'",
           types=(str,), nullable=True, pattern=_ACCELERATOR), None,
      help="A Beam accelerator resource hint on the scoring step only.")
  progress_seconds: Optional[float] = _field(_number(0, open_low=True), 10.0,
      help=("DirectRunner: a progress line at most this often per worker; "
            "null: none."))

  def __post_init__(self):
    _validate(self, "runtime", first=("progress_seconds",))


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  """The regions of the data map (`model.checkpoints`), after Swayamdipta
  et al. (2020): `ambiguous` when `variability >= ambiguous_variability`,
  else `easy` when `confidence >= easy_confidence`, else `hard`."""

  easy_confidence: float = _field(_number(0, 1, nullable=False), 0.5,
      help="Data map: easy when confidence >= this (and not ambiguous).")
  ambiguous_variability: float = _field(_number(0, 0.5, nullable=False),
                                        0.2,
      help="Data map: ambiguous when variability >= this.")

  def __post_init__(self):
    _validate(self, "dynamics")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """`report.html`: how many flagged rows it lets a reviewer browse."""

  max_rows: int = _field(_integer(0, MAX_REPORT_ROWS), 10_000,
      help=("Flagged rows browsable in report.html (the top by score beyond "
            "it); 0: none."))

  def __post_init__(self):
    _validate(self, "report")


_SECTIONS = {
    "input": InputConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "stats": StatsConfig,
    "flag": FlagConfig,
    "output": OutputConfig,
    "gate": GateConfig,
    "runtime": RuntimeConfig,
    "dynamics": DynamicsConfig,
    "report": ReportConfig,
}


@dataclasses.dataclass(frozen=True)
class AuditConfig:
  """The whole audit configuration: one section a field; each key of a
  section is a field of its dataclass, with its default and the `Rule` its
  values must follow."""

  input: InputConfig
  model: ModelConfig
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  batch_size: int = _field(_integer(1, MAX_BATCH_SIZE), 1024,
      help="Rows per model call.")
  stats: StatsConfig = dataclasses.field(default_factory=StatsConfig)
  flag: FlagConfig = dataclasses.field(default_factory=FlagConfig)
  output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
  gate: GateConfig = dataclasses.field(default_factory=GateConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  dynamics: DynamicsConfig = dataclasses.field(
      default_factory=DynamicsConfig)
  report: ReportConfig = dataclasses.field(default_factory=ReportConfig)

  def __post_init__(self):
    _validate(self, "")
    self._check_folds()
    self._check_predictions()
    self._check_rules()
    self._check_deviance()
    self._check_shift_quantiles()
    self._check_weights()
    self._check_clean()
    self._check_labels()
    self._check_serialized_examples()

  def _check_clean(self) -> None:
    """Relabelling needs label issues to take the labels from; the gates
    on new flags need a baseline; probabilities are written in losses/."""
    for key in ("max_new_flagged_fraction", "max_regression_fraction"):
      if getattr(self.gate, key) is not None and self.gate.baseline is None:
        raise ConfigError(
            f"gate.{key}: needs gate.baseline (the run whose flags and ids"
            f" are compared with). Received: {key}={getattr(self.gate, key)}"
            " with gate.baseline=None")
    if self.output.write_probabilities and not self.output.write_losses:
      raise ConfigError(
          "output.write_probabilities: needs output.write_losses (the"
          " probabilities are a column of losses/). Received:"
          " write_probabilities=true with write_losses=false")
    clean = self.output.clean
    if clean is not None and clean.relabel and not self.flag.label_issues:
      raise ConfigError(
          "output.clean.relabel: needs flag.label_issues (the suggested"
          " labels). Received: relabel=true with flag.label_issues=None")

  def _check_folds(self) -> None:
    """A fold column scores by folds; folds need a fold for each example."""
    folds, column = self.model.folds, self.input.fold_column
    if column is not None and folds is None:
      raise ConfigError(
          f"input.fold_column: needs model.folds to be set. Received:"
          f" input.fold_column={column!r} with model.folds=None")
    if folds is not None and column is None and self.input.id_column is None:
      raise ConfigError(
          "model.folds: needs input.fold_column or input.id_column (the"
          " fold of an example is fold_of(its id)). Received: both null")

  def _check_predictions(self) -> None:
    """A predictions column is the one input; its kind sets from_logits."""
    column = self.model.predictions_column
    if column is None:
      return
    if (self.input.feature_columns is not None and
        not self.model.dynamics_path):
      raise ConfigError(
          f"input.feature_columns: expected null with"
          f" model.predictions_column and no model.dynamics_path (the column"
          f" is the only input). Received: {self.input.feature_columns!r}")
    if self.loss.from_logits and self.model.predictions_kind != "logits":
      raise ConfigError(
          f"loss.from_logits: expected false with model.predictions_kind"
          f" 'probabilities' (set predictions_kind: logits for logits)."
          f" Received: true with model.predictions_column={column!r}")

  def _check_rules(self) -> None:
    """What each flag rule that is on needs from other sections."""
    for rule in rules.registered():
      if rule.enabled(self.flag):
        rule.check_config(self)

  def _check_deviance(self) -> None:
    """`flag.score: deviance` needs one loss that has a deviance."""
    from lossaudit import losses  # Local: keeps config import light.

    if self.flag.score != "deviance":
      return
    loss = self.loss
    name = None if loss.custom or loss.outputs else (
        losses.canonical_loss_name(loss.name))
    if name not in losses.DEVIANCE_LOSSES:
      received = ("loss.custom" if loss.custom else "loss.outputs"
                  if loss.outputs else f"loss.name={loss.name!r}")
      raise ConfigError(
          f"flag.score: 'deviance' needs loss.name to be one of"
          f" {list(losses.DEVIANCE_LOSSES)} (count and positive regression)."
          f" Received: flag.score='deviance' with {received}")

  def _check_shift_quantiles(self) -> None:
    """The gate watches quantiles that the stats compute."""
    unknown = set(self.gate.shift_quantiles or ()) - set(self.stats.quantiles)
    if unknown:
      _fail("gate.shift_quantiles", f"quantiles of stats.quantiles"
            f" {list(self.stats.quantiles)}", list(self.gate.shift_quantiles))

  def _check_weights(self) -> None:
    """Weighted stats need a weight column."""
    if self.stats.weighted and self.input.weight_column is None:
      raise ConfigError(
          "stats.weighted: needs input.weight_column to be set. Received:"
          " input.weight_column=None")

  def _check_labels(self) -> None:
    """A loss needs labels: a label column or per-output ones."""
    if self.input.label_column is None and not self.loss.outputs:
      raise ConfigError("input.label_column: expected a column name; a loss"
                        " needs labels. Received: None")

  def _check_serialized_examples(self) -> None:
    """Serialized tf.Examples are TFRecord records."""
    name = self.model.serialized_examples_input
    if (name is not None and
        not formats.get(self.input.format).serialized_examples):
      raise ConfigError(
          f"model.serialized_examples_input: needs input.format 'tfrecord'"
          f" (Parquet rows are not serialized tf.Examples). Received:"
          f" {name!r} with input.format {self.input.format!r}")

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any]) -> "AuditConfig":
    """The config of `raw` (the YAML as read, `--set` applied).

    Raises:
      ConfigError: a key unknown or missing, a value its rule refuses, or a
        key set in `raw` that has no effect in the config's mode.
    """
    if not isinstance(raw, Mapping):
      _fail("config", "a YAML mapping", raw)
    _reject_unknown("", raw, [f.name for f in dataclasses.fields(cls)])
    for required in ("input", "model"):
      if raw.get(required) is None:
        raise ConfigError(f"{required}: expected a mapping. Received: None")
    kwargs = {}
    for key, value in raw.items():
      section = _SECTIONS.get(key)
      if section is None:
        kwargs[key] = value
        continue
      if value is None:
        value = {}
      if not isinstance(value, Mapping):
        _fail(key, "a mapping", value)
      _reject_unknown(f"{key}.", value,
                      [f.name for f in dataclasses.fields(section)])
      kwargs[key] = section(**value)
    config = cls(**kwargs)
    _refuse_without_effect(config, raw)
    return config

  def to_dict(self) -> dict:
    return _plain(dataclasses.asdict(self))

  def with_output_dir(self, directory: str) -> "AuditConfig":
    return dataclasses.replace(
        self, output=dataclasses.replace(self.output, dir=directory))


def _set_value(raw: Any, key: str) -> Any:
  """What the config as read (YAML and `--set`) gives the dotted `key`;
  None when it gives nothing (a null sets nothing)."""
  for part in key.split("."):
    if not isinstance(raw, Mapping):
      return None
    raw = raw.get(part)
  return raw


def _with_outputs(what: str) -> Callable[[AuditConfig], Optional[str]]:
  return lambda config: (f"with loss.outputs (each of loss.outputs sets its"
                         f" own {what})" if config.loss.outputs else None)


def _with_scheme(reads: str) -> Callable[[AuditConfig], Optional[str]]:
  def mode(config: AuditConfig) -> Optional[str]:
    scheme = config.output.weights.scheme
    return (None if scheme == reads else f"with output.weights.scheme"
            f" {scheme!r} (only {reads!r} reads it)")
  return mode


def _with_custom(prefix: str, why: str
                 ) -> Callable[[Any], Optional[str]]:
  return lambda term: (f"with {prefix}.custom ({why})"
                       if term.custom is not None else None)


def _no_model_runs(config: AuditConfig) -> bool:
  """Predictions are read from a column, and no checkpoint runs either."""
  model = config.model
  return bool(model.predictions_column) and not model.dynamics_path


_CHECKPOINTS_ONLY = ("without model.checkpoints (the data map of training"
                     " dynamics needs them)")
_CUSTOM_NAME = "the custom loss is computed instead"
_CUSTOM_LOGITS = ("a custom loss gets the model's outputs as they are; give"
                  " it arguments in args")

# Keys that do nothing in some modes, in the order they are checked: each
# with the mode it is in, as a phrase, or None where it has an effect.
_NO_EFFECT: Tuple[Tuple[str, Callable[[AuditConfig], Optional[str]]], ...] = (
    ("input.label_column", _with_outputs("label_column")),
    ("model.output", _with_outputs("output")),
    ("loss.name", _with_outputs("name")),
    ("loss.from_logits", _with_outputs("from_logits")),
    ("loss.reduce", _with_outputs("reduce")),
    ("loss.args", _with_outputs("args")),
    ("loss.custom", _with_outputs("custom")),
    ("loss.name", lambda c: _with_custom("loss", _CUSTOM_NAME)(c.loss)),
    ("loss.from_logits",
     lambda c: _with_custom("loss", _CUSTOM_LOGITS)(c.loss)),
    ("model.signature", lambda c: "with model.predictions_column (no model"
     " runs)" if _no_model_runs(c) else None),
    ("model.signature", lambda c: "with a .keras model.path (only a"
     " SavedModel has signatures)" if (c.model.path or "").endswith(".keras")
     else None),
    ("runtime.device", lambda c: "with model.predictions_column (no model"
     " runs)" if _no_model_runs(c) else None),
    ("runtime.accelerator", lambda c: "with model.predictions_column (no"
     " model runs)" if _no_model_runs(c) else None),
    ("flag.early_aum_max_fit", lambda c: None
     if c.flag.label_issues == "early_aum" else
     "without flag.label_issues 'early_aum' (only that method reads it)"),
    ("model.predictions_kind", lambda c: None if c.model.predictions_column
     else "without model.predictions_column (a model's outputs are described"
     " by loss.from_logits)"),
    ("stats.max_slices", lambda c: None if c.stats.slice_by else
     "without stats.slice_by (there are no slices)"),
    ("output.clean.relabel_min_probability",
     lambda c: None if c.output.clean.relabel else
     "without output.clean.relabel (only relabelling reads it)"),
    ("output.weights.factor", _with_scheme("downweight_flagged")),
    ("output.weights.bins", _with_scheme("loss_bins")),
    ("output.weights.reasons", lambda c: (
        "with output.weights.scheme 'loss_bins' (its weights are loss bins,"
        " not flags)" if c.output.weights.scheme == "loss_bins" else None)),
    ("dynamics.easy_confidence", lambda c: None if c.model.checkpoints else
     _CHECKPOINTS_ONLY),
    ("dynamics.ambiguous_variability",
     lambda c: None if c.model.checkpoints else _CHECKPOINTS_ONLY),
)


def _refuse_without_effect(config: AuditConfig, raw: Mapping[str, Any]
                           ) -> None:
  """Refuses a key the user set (in `raw`, the config as read) that has no
  effect in the mode `config` is in; a default is not set.

  Raises:
    ConfigError: `key: has no effect <mode> (<why>). Received: <value>`.
  """
  for key, mode in _NO_EFFECT:
    value = _set_value(raw, key)
    phrase = None if value is None else mode(config)
    if phrase is not None:
      raise ConfigError(
          f"{key}: has no effect {phrase}. Received: {short_repr(value)}")
  for key in ("output.clean.drop_reasons", "output.weights.reasons"):
    off = [reason for reason in _set_value(raw, key) or ()
           if not rules.get(reason).enabled(config.flag)]
    if off:
      raise ConfigError(
          f"{key}: has no effect for {off[0]!r}, a rule that is off in this"
          f" config (no row is flagged for it). Received:"
          f" {short_repr(_set_value(raw, key))}")
  outputs = _set_value(raw, "loss.outputs")
  for index, term in enumerate(config.loss.outputs or ()):
    item = outputs[index] if isinstance(outputs, (list, tuple)) else None
    prefix = f"loss.outputs[{index}]"
    for field, why in (("name", _CUSTOM_NAME),
                       ("from_logits", _CUSTOM_LOGITS)):
      value = _set_value(item, field)
      phrase = None if value is None else _with_custom(prefix, why)(term)
      if phrase is not None:
        raise ConfigError(f"{prefix}.{field}: has no effect {phrase}."
                          f" Received: {short_repr(value)}")


def _plain(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def _reject_unknown(prefix: str, raw: Mapping[str, Any],
                    valid: Sequence[str]) -> None:
  for key in raw:
    if key not in valid:
      suggestion = difflib.get_close_matches(str(key), valid, n=1)
      hint = f" Did you mean {prefix}{suggestion[0]}?" if suggestion else ""
      raise ConfigError(
          f"{prefix}{one_line(str(key), 80)}: unknown config key; expected"
          f" one of {sorted(valid)}.{hint}")


class YamlLimitError(yaml.YAMLError):
  """YAML whose aliases are too many, recursive, or expand too far.

  Its message says what was received; `expected` completes "expected YAML
  ...".
  """

  expected = (
      f"without recursive or heavily nested aliases (at most"
      f" {MAX_YAML_ALIASES} alias references, adding at most"
      f" {MAX_YAML_VALUES} values once expanded)")


class YamlNestingError(YamlLimitError):
  """YAML nested deeper than the parser's recursion can go."""

  expected = "nested less deeply"


class YamlDuplicateKeyError(yaml.YAMLError):
  """A mapping that holds the same key twice (PyYAML keeps the last).

  Attributes:
    path: the dotted key of the mapping ("" for the document itself;
      `[i]` for the items of a list, as in `loss.outputs[0]`).
    key: the key held twice.
    line: the 1-based line of its second occurrence.
    first_line: the line of its first.
  """

  def __init__(self, path: str, key: Any, line: int, first_line: int):
    super().__init__(f"duplicate key {short_repr(key)} (line {line})")
    self.path = path
    self.key = key
    self.line = line
    self.first_line = first_line

  def received(self, lines: bool = True) -> str:
    """`duplicate key 'k' (line N, first on line M)` (no lines unless
    `lines`), to follow "Received: "."""
    where = (f" (line {self.line}, first on line {self.first_line})"
             if lines else "")
    return f"duplicate key {short_repr(self.key)}{where}"


class LimitedLoader(yaml.SafeLoader):
  """A `yaml.SafeLoader` that refuses alias bombs and duplicate keys before
  constructing values.

  It counts alias references while composing, then how many values expanding
  every alias would add to the document (each shared node counted once per
  reference, in linear time); a recursive alias is refused too. A long
  document without aliases adds nothing and passes. A key written twice in
  one mapping is refused (keys given by a `<<` merge may still be
  overridden).

  Raises:
    YamlLimitError: more than `MAX_YAML_ALIASES` alias references, aliases
      adding more than `MAX_YAML_VALUES` values, or a recursive alias.
    YamlDuplicateKeyError: a key twice in one mapping.
  """

  def __init__(self, stream):
    super().__init__(stream)
    self._aliases = 0

  def compose_node(self, parent, index):
    if self.check_event(yaml.AliasEvent):
      self._aliases += 1
      if self._aliases > MAX_YAML_ALIASES:
        raise YamlLimitError(
            f"more than {MAX_YAML_ALIASES} alias references")
    return super().compose_node(parent, index)

  def compose_document(self):
    node = super().compose_document()
    if self._aliases:
      expanded, distinct = _expanded_size(node)
      if expanded - distinct > MAX_YAML_VALUES:
        raise YamlLimitError(
            f"aliases that add {expanded - distinct} values once expanded")
    if node is not None:
      self._check_duplicate_keys(node)
    return node

  def _check_duplicate_keys(self, root: yaml.Node) -> None:
    """Refuses a mapping under `root` that holds a key twice; each node is
    visited once (aliases share theirs)."""
    seen = set()
    stack = [(root, "")]
    while stack:
      node, path = stack.pop()
      if id(node) in seen:
        continue
      seen.add(id(node))
      if isinstance(node, yaml.SequenceNode):
        stack.extend((item, f"{path}[{i}]")
                     for i, item in reversed(list(enumerate(node.value))))
        continue
      if not isinstance(node, yaml.MappingNode):
        continue
      lines = {}
      children = []
      for key_node, value_node in node.value:
        if (not isinstance(key_node, yaml.ScalarNode) or
            key_node.tag == "tag:yaml.org,2002:merge"):
          continue
        # Compared as constructed: `1` and `0x1`, `true` and `True` are one.
        key = self.construct_object(key_node)
        line = key_node.start_mark.line + 1
        try:
          first = lines.get(key)
        except TypeError:  # Unhashable: refused when the mapping is built.
          continue
        if first is not None:
          raise YamlDuplicateKeyError(path, key, line, first)
        lines[key] = line
        children.append((value_node, f"{path}.{key}" if path else str(key)))
      stack.extend(reversed(children))


# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent
# without a dot (`1e-3`, `1E3`, `-2e+5`) or a signed leading dot (`-.5`).
# Either a dot or an exponent is required, so digits alone (`089`) stay what
# YAML 1.1 makes of them; the 1.1 float and int resolvers are tried first.
_YAML12_FLOAT = re.compile(
    r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"
    r"|^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$")
LimitedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT,
                                    list("-+.0123456789"))


def _expanded_size(root: yaml.Node) -> Tuple[int, int]:
  """`(values with every alias expanded, distinct nodes)` under `root`.

  Raises:
    YamlLimitError: a node holds itself (a recursive alias).
  """
  sizes = {}
  open_nodes = set()

  def size(node: yaml.Node) -> int:
    key = id(node)
    if key in sizes:
      return sizes[key]
    if key in open_nodes:
      raise YamlLimitError("a recursive alias (an anchor used inside itself)")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
      children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
      children = node.value
    else:
      children = ()
    sizes[key] = 1 + sum(size(child) for child in children)
    open_nodes.discard(key)
    return sizes[key]

  return size(root), len(sizes)


def load_yaml(text: str) -> Any:
  """Parses YAML safely (no Python objects) with `LimitedLoader`.

  Raises:
    yaml.YAMLError: invalid YAML.
    YamlLimitError: an alias bomb; YamlNestingError: nesting deeper than
      Python's recursion limit.
    YamlDuplicateKeyError: a key twice in one mapping.
  """
  try:
    return yaml.load(text, Loader=LimitedLoader)
  except RecursionError:
    raise YamlNestingError("nesting deeper than Python's recursion limit"
                           ) from None


def apply_override(raw: dict, assignment: str) -> None:
  """Applies one `--set dotted.key=value` to a raw config dict, in place.

  The value is parsed as YAML, so `--set flag.top_k=10` gives an int and
  `--set flag.loss_quantile=null` turns a rule off.
  """
  if "=" not in assignment:
    raise ConfigError(
        f"--set: expected KEY=VALUE. Received: {short_repr(assignment)}")
  key, _, text = assignment.partition("=")
  key = key.strip()
  parts = key.split(".")
  if not key or not all(parts):
    raise ConfigError(
        f"--set: expected a dotted key. Received: {short_repr(key)}")
  shown = one_line(key, 80)
  try:
    value = load_yaml(text) if text else None
  except YamlLimitError as e:
    raise ConfigError(
        f"--set {shown}: expected a YAML value {e.expected}. Received: {e}"
        ) from None
  except YamlDuplicateKeyError as e:
    inner = f".{one_line(e.path, 80)}" if e.path else ""
    raise ConfigError(
        f"--set {shown}{inner}: expected each key once. Received:"
        f" {e.received(lines=False)}") from None
  except yaml.YAMLError as e:
    raise ConfigError(
        f"--set {shown}: expected a YAML value. Received:"
        f" {short_repr(text)} ({one_line(str(e), 160)})"
        ) from None
  node = raw
  for part in parts[:-1]:
    child = node.get(part)
    if child is None:
      child = node[part] = {}
    if not isinstance(child, dict):
      raise ConfigError(
          f"--set {shown}: {short_repr(part)} is not a mapping. Received:"
          f" {short_repr(child)}")
    node = child
  node[parts[-1]] = value


def load_config(path: str, overrides: Sequence[str] = ()) -> AuditConfig:
  """Reads a YAML config file (safely; local or gs://) and applies `--set`
  overrides."""
  if not isinstance(path, str) or not path:
    raise ConfigError(
        f"--config: expected a YAML file. Received: {short_repr(path)}")
  _check_location("--config", path)
  remote = _SCHEME.match(path) is not None
  if remote:  # Beam loads in a second: only for a config that needs it.
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  # Any existing path but a directory: `--config <(...)` is a pipe.
  if not (FileSystems.exists(path) if remote else os.path.exists(path)):
    raise ConfigError(f"--config: expected a YAML file. Received:"
                      f" {short_repr(path)} (no such file)")
  if not remote and os.path.isdir(path):
    raise ConfigError(f"--config: expected a YAML file. Received:"
                      f" {short_repr(path)} (a directory)")
  with (FileSystems.open(path) if remote else open(path, "rb")) as f:
    data = f.read()
  try:
    raw = load_yaml(data.decode("utf-8"))
  except YamlLimitError as e:
    raise ConfigError(
        f"--config {path}: expected YAML {e.expected}. Received: {e}"
        ) from None
  except YamlDuplicateKeyError as e:
    key = one_line(e.path, 80) if e.path else f"--config {path}"
    raise ConfigError(f"{key}: expected each key once. Received:"
                      f" {e.received()}") from None
  except (yaml.YAMLError, UnicodeDecodeError) as e:
    raise ConfigError(
        f"--config {path}: expected valid YAML."
        f" Received: {one_line(str(e), 240)}") from None
  if raw is None:
    raw = {}
  if not isinstance(raw, dict):
    raise ConfigError(
        f"--config {path}: expected a YAML mapping. Received:"
        f" {short_repr(raw)}")
  for assignment in overrides:
    apply_override(raw, assignment)
  return AuditConfig.from_dict(raw)
