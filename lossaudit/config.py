"""The typed audit configuration: loaded from YAML, validated on construction.

Every error names the dotted key, what was expected and what was received, so
the CLI can print it on one line and exit 2 before the pipeline starts.
Received values are shown through `reprlib` and the CLI prints messages
through `one_line`, so a 1 MB value never makes a 1 MB message.

YAML is read with `LimitedLoader`, a SafeLoader that refuses alias bombs: an
alias shares its anchor's node, so nine anchors of nine aliases each (72
aliases, 300 bytes) load in microseconds but expand to 9**9 values wherever
the config is walked (`repr` in an error message, `dataclasses.asdict`, the
config written into summary.json): a 480 KB message or a MemoryError.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import string
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import yaml

from lossaudit import errors

# Re-exported: callers of the config catch and print its errors.
from lossaudit.errors import ConfigError as ConfigError
from lossaudit.errors import describe_error as describe_error
from lossaudit.errors import one_line as one_line
from lossaudit.errors import short_repr

FORMATS = ("tfrecord", "parquet")
REDUCTIONS = ("mean", "sum")
LABEL_ISSUE_METHODS = ("confident_learning", "prune_by_noise_rate")

MAX_BATCH_SIZE = 1 << 20
MIN_EPSILON = 1e-6  # Smaller: the quantile sketch asks for terabytes.
MAX_NUM_SHARDS = 10_000
OUTPUT_PLACEHOLDERS = ("date", "run_id")
# A lock older than this is taken over; at most a year keeps time arithmetic
# (datetime.timedelta) far from overflow.
MAX_LOCK_TIMEOUT_SECONDS = 365 * 86400.0
MAX_YAML_ALIASES = 100
MAX_YAML_VALUES = 100_000  # Scalars, lists, mappings added by aliases.

# The scheme part of a URI, as Beam's FileSystems.get_scheme reads it.
_SCHEME = re.compile(r"([a-zA-Z][-a-zA-Z0-9+.]*)://")
_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_CUSTOM_LOSS = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

def _fail(key: str, expected: str, received: Any) -> None:
  raise errors.expected(key, expected, received)


def _check_type(key: str, value: Any, types: tuple, expected: str) -> None:
  if isinstance(value, bool) and bool not in types:
    _fail(key, expected, value)
  if not isinstance(value, types):
    _fail(key, expected, value)


def _check_location(key: str, value: str) -> None:
  """Refuses URIs of filesystems other than GCS (local paths pass)."""
  match = _SCHEME.match(value)
  if match and (match.group(1) != "gs" or value == "gs://"):
    _fail(key, "a local path or gs:// URI", value)


def _check_int(key: str, value: Any, low: int, high: int) -> None:
  expected = f"an integer in [{low}, {high}]"
  _check_type(key, value, (int,), expected)
  if not low <= value <= high:
    _fail(key, expected, value)


def _optional_str(key: str, value: Any) -> None:
  if value is not None:
    _check_type(key, value, (str,), "a string or null")


def _optional_number(key: str, value: Any, low: float = -math.inf,
                     high: float = math.inf, *, open_low: bool = False,
                     open_high: bool = False) -> None:
  if value is None:
    return
  _check_type(key, value, (int, float), "a number or null")
  too_low = value <= low if open_low else value < low
  too_high = value >= high if open_high else value > high
  # No math.isnan on an int: one of 400 digits would raise OverflowError.
  nan = isinstance(value, float) and math.isnan(value)
  if too_low or too_high or nan:
    left = "(" if open_low else "["
    right = ")" if open_high else "]"
    _fail(key, f"a number in {left}{low}, {high}{right}", value)


@dataclasses.dataclass(frozen=True)
class InputConfig:
  pattern: Union[str, Sequence[str]] = ""
  format: str = "tfrecord"
  id_column: Optional[str] = "id"
  label_column: Optional[str] = "label"
  weight_column: Optional[str] = None
  feature_columns: Optional[Union[Sequence[str], Mapping[str, str]]] = None

  def __post_init__(self):
    if isinstance(self.pattern, str):
      if not self.pattern:
        _fail("input.pattern", "a non-empty glob or list of globs",
              self.pattern)
    elif isinstance(self.pattern, (list, tuple)):
      if not self.pattern or not all(
          isinstance(p, str) and p for p in self.pattern):
        _fail("input.pattern", "a non-empty glob or list of globs",
              self.pattern)
      object.__setattr__(self, "pattern", tuple(self.pattern))
    else:
      _fail("input.pattern", "a non-empty glob or list of globs", self.pattern)
    for pattern in self.patterns:
      _check_location("input.pattern", pattern)
    if self.format not in FORMATS:
      _fail("input.format", f"one of {set(FORMATS)}", self.format)
    for key in ("id_column", "label_column", "weight_column"):
      _optional_str(f"input.{key}", getattr(self, key))
    fc = self.feature_columns
    if fc is None:
      return
    if isinstance(fc, Mapping):
      if not fc or not all(
          isinstance(k, str) and isinstance(v, str) for k, v in fc.items()):
        _fail("input.feature_columns",
              "null, a list of column names or a mapping model input -> column",
              fc)
      object.__setattr__(self, "feature_columns", dict(fc))
    elif isinstance(fc, (list, tuple)):
      if not fc or not all(isinstance(c, str) and c for c in fc):
        _fail("input.feature_columns",
              "null, a list of column names or a mapping model input -> column",
              fc)
      object.__setattr__(self, "feature_columns", tuple(fc))
    else:
      _fail("input.feature_columns",
            "null, a list of column names or a mapping model input -> column",
            fc)

  @property
  def patterns(self) -> tuple:
    return (self.pattern,) if isinstance(self.pattern, str) else self.pattern


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  path: str = ""
  signature: str = "serving_default"
  output: Optional[str] = None

  def __post_init__(self):
    if not isinstance(self.path, str) or not self.path:
      _fail("model.path", "a .keras file or a SavedModel directory", self.path)
    _check_location("model.path", self.path)
    _check_type("model.signature", self.signature, (str,), "a string")
    _optional_str("model.output", self.output)


def _check_loss_name(key: str, name: Any) -> None:
  from lossaudit import losses  # Local: keeps config import light.

  _check_type(key, name, (str,), "a Keras loss name")
  if losses.canonical_loss_name(name) is None:
    suggestion = difflib.get_close_matches(name, losses.SUPPORTED_LOSSES, n=1)
    hint = f" Did you mean {suggestion[0]!r}?" if suggestion else ""
    raise ConfigError(
        f"{key}: expected one of {sorted(losses.SUPPORTED_LOSSES)}."
        f" Received: {short_repr(name)}.{hint}")


def _check_loss_options(prefix: str, from_logits: Any, reduce: Any,
                        custom: Any, args: Any) -> None:
  _check_type(f"{prefix}.from_logits", from_logits, (bool,), "true or false")
  if reduce not in REDUCTIONS:
    _fail(f"{prefix}.reduce", f"one of {set(REDUCTIONS)}", reduce)
  if custom is not None:
    if not isinstance(custom, str) or not _CUSTOM_LOSS.fullmatch(custom):
      _fail(f"{prefix}.custom", "'package.module:function'", custom)
  if not isinstance(args, Mapping):
    _fail(f"{prefix}.args", "a mapping of Keras loss arguments", args)


@dataclasses.dataclass(frozen=True)
class LossOutputConfig:
  """One output of a multi-output model: its loss, labels and weight."""

  output: str = ""
  label_column: str = ""
  name: str = "mean_squared_error"
  weight: float = 1.0
  from_logits: bool = False
  reduce: str = "mean"
  args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  custom: Optional[str] = None
  index: int = 0

  def __post_init__(self):
    key = f"loss.outputs[{self.index}]"
    for field in ("output", "label_column"):
      value = getattr(self, field)
      if not isinstance(value, str) or not value:
        _fail(f"{key}.{field}", "a non-empty string", value)
    if self.custom is None:
      _check_loss_name(f"{key}.name", self.name)
    _optional_number(f"{key}.weight", self.weight, 0)
    if self.weight is None:
      _fail(f"{key}.weight", "a number >= 0", None)
    _check_loss_options(key, self.from_logits, self.reduce, self.custom,
                        self.args)
    object.__setattr__(self, "args", dict(self.args))


@dataclasses.dataclass(frozen=True)
class LossConfig:
  name: str = "sparse_categorical_crossentropy"
  from_logits: bool = False
  reduce: str = "mean"
  custom: Optional[str] = None
  outputs: Optional[Sequence[Mapping[str, Any]]] = None
  args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.custom is None and not self.outputs:
      _check_loss_name("loss.name", self.name)
    _check_loss_options("loss", self.from_logits, self.reduce, self.custom,
                        self.args)
    object.__setattr__(self, "args", dict(self.args))
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


@dataclasses.dataclass(frozen=True)
class StatsConfig:
  quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99,
                                0.999)
  epsilon: float = 0.001
  slice_by: Optional[str] = None
  weighted: bool = False

  def __post_init__(self):
    if not isinstance(self.quantiles, (list, tuple)) or not self.quantiles:
      _fail("stats.quantiles", "a non-empty list of numbers in [0, 1]",
            self.quantiles)
    for q in self.quantiles:
      if isinstance(q, bool) or not isinstance(q, (int, float)) or not (
          0 <= q <= 1):
        _fail("stats.quantiles", "a non-empty list of numbers in [0, 1]",
              self.quantiles)
    object.__setattr__(self, "quantiles",
                       tuple(sorted(set(float(q) for q in self.quantiles))))
    _optional_number("stats.epsilon", self.epsilon, MIN_EPSILON, 0.5)
    if self.epsilon is None:
      _fail("stats.epsilon", f"a number in [{MIN_EPSILON}, 0.5]",
            self.epsilon)
    _optional_str("stats.slice_by", self.slice_by)
    _check_type("stats.weighted", self.weighted, (bool,), "true or false")


@dataclasses.dataclass(frozen=True)
class FlagConfig:
  loss_quantile: Optional[float] = 0.99
  loss_threshold: Optional[float] = None
  robust_z: Optional[float] = None
  top_k: Optional[int] = None
  slice_quantile: Optional[float] = None
  label_issues: Optional[str] = None

  def __post_init__(self):
    _optional_number("flag.loss_quantile", self.loss_quantile, 0, 1)
    _optional_number("flag.loss_threshold", self.loss_threshold)
    _optional_number("flag.slice_quantile", self.slice_quantile, 0, 1)
    if self.top_k is not None:
      _check_type("flag.top_k", self.top_k, (int,), "a positive integer")
      if self.top_k < 1:
        _fail("flag.top_k", "a positive integer", self.top_k)
    _optional_number("flag.robust_z", self.robust_z, 0, open_low=True)
    if (self.label_issues is not None and
        self.label_issues not in LABEL_ISSUE_METHODS):
      _fail("flag.label_issues", f"null or one of {set(LABEL_ISSUE_METHODS)}",
            self.label_issues)


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


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """Where a run writes.

  Attributes:
    dir: a local path or gs:// URI; may hold `{date}` (UTC, YYYY-MM-DD) and
      `{run_id}` (UTC start time and a random suffix), filled in at the start.
    num_shards: files per output table; 0 lets the runner decide.
    write_losses: whether to write the per-example `losses/` table.
    overwrite: allow a non-empty `dir` that lacks lossaudit's marker (a run
      still deletes only its own files).
    lock_timeout: a lock on `dir` older than this is taken over: a positive
      number of seconds, or a string such as `"90s"`, `"30m"`, `"6h"`,
      `"2d"` (see `lock_timeout_seconds`).
  """

  dir: str = "out/audit"
  num_shards: int = 0
  write_losses: bool = True
  overwrite: bool = False
  lock_timeout: Union[str, float] = "6h"

  def __post_init__(self):
    if not isinstance(self.dir, str) or not self.dir:
      _fail("output.dir", "a local path or gs:// URI", self.dir)
    _check_location("output.dir", self.dir)
    _check_placeholders("output.dir", self.dir)
    _check_int("output.num_shards", self.num_shards, 0, MAX_NUM_SHARDS)
    _check_type("output.write_losses", self.write_losses, (bool,),
                "true or false")
    _check_type("output.overwrite", self.overwrite, (bool,), "true or false")
    seconds = _duration_seconds(self.lock_timeout)
    if seconds is None or not 0 < seconds <= MAX_LOCK_TIMEOUT_SECONDS:
      _fail("output.lock_timeout", "a duration of at most 365d: a positive"
            " number of seconds, or a string such as '90s', '30m', '6h' or"
            " '2d'", self.lock_timeout)

  @property
  def lock_timeout_seconds(self) -> float:
    """`lock_timeout` in seconds."""
    return _duration_seconds(self.lock_timeout)


@dataclasses.dataclass(frozen=True)
class GateConfig:
  """Quality gates. `baseline`: an earlier run's `output.dir`, or `latest`:
  the newest complete run (one with `summary.json`) beside this one."""

  baseline: Optional[str] = None
  max_flagged_fraction: Optional[float] = None
  max_quantile_shift: Optional[float] = None
  # The quantiles `max_quantile_shift` watches (null: all of stats.quantiles).
  # Low quantiles of a good model are near 0, where any change is large.
  shift_quantiles: Optional[Sequence[float]] = None

  def __post_init__(self):
    if self.shift_quantiles is not None:
      if not isinstance(self.shift_quantiles, (list, tuple)) or not all(
          isinstance(q, (int, float)) and not isinstance(q, bool)
          for q in self.shift_quantiles) or not self.shift_quantiles:
        _fail("gate.shift_quantiles", "null or a non-empty list of quantiles",
              self.shift_quantiles)
      object.__setattr__(self, "shift_quantiles", tuple(self.shift_quantiles))
    _optional_str("gate.baseline", self.baseline)
    if self.baseline == "":
      _fail("gate.baseline", "null, 'latest' or an earlier run's output.dir",
            self.baseline)
    if self.baseline is not None and self.baseline != "latest":
      _check_location("gate.baseline", self.baseline)
    _optional_number("gate.max_flagged_fraction", self.max_flagged_fraction,
                     0, 1)
    _optional_number("gate.max_quantile_shift", self.max_quantile_shift, 0)


DEVICES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Where the model runs.

  `device`: `auto` (a GPU when TensorFlow sees one), `cpu` or `gpu`.
  `accelerator`: a Beam resource hint put on the scoring step only (for
  runners that honour per-step hints, such as Dataflow Prime).
  `progress_seconds`: on the DirectRunner, each worker process prints a
  progress line at most this often (null: none).
  """

  device: str = "auto"
  accelerator: Optional[str] = None
  progress_seconds: Optional[float] = 5.0

  def __post_init__(self):
    _optional_number("runtime.progress_seconds", self.progress_seconds, 0,
                     open_low=True)
    if self.device not in DEVICES:
      _fail("runtime.device", f"one of {set(DEVICES)}", self.device)
    if self.accelerator is not None and (
        not isinstance(self.accelerator, str) or
        not self.accelerator.startswith("type:")):
      _fail("runtime.accelerator",
            "null or a Beam accelerator hint such as"
            " 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'",
            self.accelerator)


_SECTIONS = {
    "input": InputConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "stats": StatsConfig,
    "flag": FlagConfig,
    "output": OutputConfig,
    "gate": GateConfig,
    "runtime": RuntimeConfig,
}


@dataclasses.dataclass(frozen=True)
class AuditConfig:
  """The whole audit configuration. See CONTRACT.md for every key."""

  input: InputConfig
  model: ModelConfig
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  batch_size: int = 1024
  stats: StatsConfig = dataclasses.field(default_factory=StatsConfig)
  flag: FlagConfig = dataclasses.field(default_factory=FlagConfig)
  output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
  gate: GateConfig = dataclasses.field(default_factory=GateConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

  def __post_init__(self):
    _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
    if self.flag.slice_quantile is not None and self.stats.slice_by is None:
      raise ConfigError(
          "flag.slice_quantile: needs stats.slice_by to be set. Received:"
          " stats.slice_by=None")
    unknown = set(self.gate.shift_quantiles or ()) - set(self.stats.quantiles)
    if unknown:
      _fail("gate.shift_quantiles", f"quantiles of stats.quantiles"
            f" {list(self.stats.quantiles)}", list(self.gate.shift_quantiles))
    if self.stats.weighted and self.input.weight_column is None:
      raise ConfigError(
          "stats.weighted: needs input.weight_column to be set. Received:"
          " input.weight_column=None")

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any]) -> "AuditConfig":
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
    return cls(**kwargs)

  def to_dict(self) -> dict:
    return _plain(dataclasses.asdict(self))

  def with_output_dir(self, directory: str) -> "AuditConfig":
    return dataclasses.replace(
        self, output=dataclasses.replace(self.output, dir=directory))


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


class LimitedLoader(yaml.SafeLoader):
  """A `yaml.SafeLoader` that refuses alias bombs before constructing values.

  It counts alias references while composing, then how many values expanding
  every alias would add to the document (each shared node counted once per
  reference, in linear time); a recursive alias is refused too. A long
  document without aliases adds nothing and passes.

  Raises:
    YamlLimitError: more than `MAX_YAML_ALIASES` alias references, aliases
      adding more than `MAX_YAML_VALUES` values, or a recursive alias.
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
    return node


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
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  if not isinstance(path, str) or not path:
    raise ConfigError(
        f"--config: expected a YAML file. Received: {short_repr(path)}")
  _check_location("--config", path)
  remote = _SCHEME.match(path) is not None
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
