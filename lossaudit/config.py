"""The typed audit configuration: loaded from YAML, validated on construction.

Every error names the dotted key, what was expected and what was received, so
the CLI can print it on one line and exit 2 before the pipeline starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from typing import Any, Mapping, Optional, Sequence, Union

import yaml


class ConfigError(ValueError):
  """A bad configuration or set-up, detected before the pipeline runs."""


FORMATS = ("tfrecord", "parquet")
REDUCTIONS = ("mean", "sum")
LABEL_ISSUE_METHODS = ("confident_learning", "prune_by_noise_rate")


def _fail(key: str, expected: str, received: Any) -> None:
  raise ConfigError(f"{key}: expected {expected}. Received: {received!r}")


def _check_type(key: str, value: Any, types: tuple, expected: str) -> None:
  if isinstance(value, bool) and bool not in types:
    _fail(key, expected, value)
  if not isinstance(value, types):
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
  if too_low or too_high or math.isnan(value):
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
        _fail("input.pattern", "a non-empty glob or list of globs", self.pattern)
    elif isinstance(self.pattern, (list, tuple)):
      if not self.pattern or not all(
          isinstance(p, str) and p for p in self.pattern):
        _fail("input.pattern", "a non-empty glob or list of globs",
              self.pattern)
      object.__setattr__(self, "pattern", tuple(self.pattern))
    else:
      _fail("input.pattern", "a non-empty glob or list of globs", self.pattern)
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
        f" Received: {name!r}.{hint}")


def _check_loss_options(prefix: str, from_logits: Any, reduce: Any,
                        custom: Any, args: Any) -> None:
  _check_type(f"{prefix}.from_logits", from_logits, (bool,), "true or false")
  if reduce not in REDUCTIONS:
    _fail(f"{prefix}.reduce", f"one of {set(REDUCTIONS)}", reduce)
  if custom is not None:
    if not isinstance(custom, str) or ":" not in custom:
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
    _optional_number("stats.epsilon", self.epsilon, 0, 0.5, open_low=True)
    if self.epsilon is None:
      _fail("stats.epsilon", "a number in (0, 0.5]", self.epsilon)
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


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """Where a run writes. `dir` may hold `{date}` (UTC, YYYY-MM-DD) and
  `{run_id}` (UTC start time and a random suffix), filled in at the start."""

  dir: str = "out/audit"
  num_shards: int = 0
  write_losses: bool = True

  def __post_init__(self):
    if not isinstance(self.dir, str) or not self.dir:
      _fail("output.dir", "a local path or gs:// URI", self.dir)
    try:
      self.dir.format(date="", run_id="")
    except (KeyError, IndexError, ValueError):
      _fail("output.dir", "a path whose only placeholders are {date} and"
            " {run_id}", self.dir)
    _check_type("output.num_shards", self.num_shards, (int,),
                "an integer >= 0")
    if self.num_shards < 0:
      _fail("output.num_shards", "an integer >= 0", self.num_shards)
    _check_type("output.write_losses", self.write_losses, (bool,),
                "true or false")


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
    _check_type("batch_size", self.batch_size, (int,), "an integer >= 1")
    if self.batch_size < 1:
      _fail("batch_size", "an integer >= 1", self.batch_size)
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
          f"{prefix}{key}: unknown config key; expected one of"
          f" {sorted(valid)}.{hint}")


def apply_override(raw: dict, assignment: str) -> None:
  """Applies one `--set dotted.key=value` to a raw config dict, in place.

  The value is parsed as YAML, so `--set flag.top_k=10` gives an int and
  `--set flag.loss_quantile=null` turns a rule off.
  """
  if "=" not in assignment:
    raise ConfigError(
        f"--set: expected KEY=VALUE. Received: {assignment!r}")
  key, _, text = assignment.partition("=")
  key = key.strip()
  parts = key.split(".")
  if not key or not all(parts):
    raise ConfigError(f"--set: expected a dotted key. Received: {key!r}")
  try:
    value = yaml.safe_load(text) if text else None
  except yaml.YAMLError as e:
    raise ConfigError(
        f"--set {key}: expected a YAML value. Received: {text!r}"
        f" ({str(e).splitlines()[0]})") from None
  node = raw
  for part in parts[:-1]:
    child = node.get(part)
    if child is None:
      child = node[part] = {}
    if not isinstance(child, dict):
      raise ConfigError(
          f"--set {key}: {part!r} is not a mapping. Received: {child!r}")
    node = child
  node[parts[-1]] = value


def load_config(path: str, overrides: Sequence[str] = ()) -> AuditConfig:
  """Reads a YAML config file (safely; local or gs://) and applies `--set`
  overrides."""
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top

  remote = "://" in path
  if not (FileSystems.exists(path) if remote else os.path.isfile(path)):
    raise ConfigError(f"--config: expected a YAML file. Received: {path!r}"
                      " (no such file)")
  with (FileSystems.open(path) if remote else open(path, "rb")) as f:
    try:
      raw = yaml.safe_load(f.read().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
      raise ConfigError(
          f"--config {path}: expected valid YAML."
          f" Received: {' '.join(str(e).split())}") from None
  if raw is None:
    raw = {}
  if not isinstance(raw, dict):
    raise ConfigError(
        f"--config {path}: expected a YAML mapping. Received: {raw!r}")
  for assignment in overrides:
    apply_override(raw, assignment)
  return AuditConfig.from_dict(raw)
