"""`lossaudit plan`: the passes, bytes and worker-hours a run would take.

  lossaudit plan --config C [--set KEY=VALUE ...] --rows N [--classes K]
      [--rows-per-second R] [--bytes-per-row B] [--rows-per-bundle M]
      [--issue-rate F]

Nothing runs and no model loads: the figures follow from the config
(`lossaudit.cost`). The input's first file, when it can be read, gives the
bytes of input a row and the length of an id (its Parquet footer and first
row group's ids; a TFRecord input gives neither: `--bytes-per-row`), and a
predictions column its number of classes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence, Tuple

from lossaudit import cost
from lossaudit.config import AuditConfig, load_config
from lossaudit.errors import ConfigError, describe_error, one_line
from lossaudit.pipelines.arguments import add_config_args


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one `lossaudit plan: error:` line, exit 2."""

  def error(self, message):
    self.exit(2, f"lossaudit plan: error: {one_line(message)}\n")


def _positive_int(flag: str, allow_zero: bool = False):
  def parse(text: str) -> int:
    try:
      value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
      value = None
    if value is None or value < (0 if allow_zero else 1):
      raise ConfigError(
          f"{flag}: expected an integer >= {0 if allow_zero else 1}."
          f" Received: {text!r}")
    return value
  return parse


def _positive_number(flag: str, at_most: Optional[float] = None):
  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      value = None
    if (value is None or not value > 0 or value == float("inf")
        or (at_most is not None and value > at_most)):
      bound = f" and <= {at_most:g}" if at_most is not None else ""
      raise ConfigError(f"{flag}: expected a number > 0{bound}."
                        f" Received: {text!r}")
    return value
  return parse


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = _Parser(
      prog="lossaudit plan", allow_abbrev=False,
      description="The passes, bytes and worker-hours a run would take.")
  add_config_args(parser)
  parser.add_argument("--rows", required=True,
                      help="examples the run would read")
  parser.add_argument(
      "--classes", help="classes K (0: not a classifier); default: the"
      " config's input.label_vocabulary, or the width of its"
      " model.predictions_column in the input's first file")
  parser.add_argument(
      "--rows-per-second",
      default=str(cost.DEFAULT_ROWS_PER_SECOND),
      help="one worker's end-to-end rate (default: %(default)s, measured"
      " on a predictions column; a model's is usually slower)")
  parser.add_argument(
      "--bytes-per-row",
      help="input bytes a row (default: from the input's first Parquet"
      f" file, else {cost.DEFAULT_INPUT_BYTES_PER_ROW})")
  parser.add_argument(
      "--rows-per-bundle", default=str(cost.ROWS_PER_BUNDLE),
      help="rows a bundle holds (default: %(default)s)")
  parser.add_argument(
      "--issue-rate", default=str(cost.DEFAULT_ISSUE_RATE),
      help="label issues among the rows (default: %(default)s)")
  return parser.parse_args(argv)


class _Sample:
  """What the input's first file tells, where it can be read."""

  bytes_per_row: Optional[float] = None
  id_length: Optional[float] = None
  predictions_width: Optional[int] = None


def sample_input(config: AuditConfig) -> _Sample:
  """The input's first file's bytes a row, mean id length and predictions
  width, as far as its format tells them without reading every record
  (`Format.head`); fields left None where it cannot be read."""
  # pylint: disable=g-import-not-at-top
  import pyarrow as pa
  import pyarrow.compute as pc

  from lossaudit import formats
  # pylint: enable=g-import-not-at-top

  sample = _Sample()
  columns = [c for c in (config.input.id_column,
                         config.model.predictions_column) if c]
  try:
    head = formats.get(config.input.format).head(config.input.patterns[0],
                                                 columns)
  except Exception:  # pylint: disable=broad-except
    return sample  # Unreadable: the stated defaults are used.
  if head is None or not head.num_rows:
    return sample
  sample.bytes_per_row = head.size_in_bytes / head.num_rows
  group = head.columns
  if group is None:
    return sample
  if config.input.id_column in group.column_names:
    ids = group.column(config.input.id_column)
    if pa.types.is_string(ids.type) and len(ids):
      sample.id_length = pc.mean(pc.utf8_length(ids)).as_py()
  name = config.model.predictions_column
  if name in group.column_names:
    column = group.column(name).type
    if pa.types.is_fixed_size_list(column):
      sample.predictions_width = column.list_size
    elif pa.types.is_list(column) and group.num_rows:
      first = group.column(name).chunk(0)[0].as_py()
      sample.predictions_width = len(first) if first is not None else None
  return sample


def _classes(config: AuditConfig, given: Optional[str],
             sample: _Sample) -> int:
  """K: as `--classes` gives it, checked against what the config and the
  input tell; else as they tell."""
  told, source = None, None
  vocabulary = config.input.label_vocabulary
  if isinstance(vocabulary, (list, tuple)):
    told, source = len(vocabulary), "input.label_vocabulary"
  elif isinstance(vocabulary, str):
    from lossaudit.planning import read_vocabulary  # pylint: disable=g-import-not-at-top
    told, source = len(read_vocabulary(vocabulary)), "input.label_vocabulary"
  elif sample.predictions_width:
    told, source = sample.predictions_width, (
        f"model.predictions_column {config.model.predictions_column!r} in"
        " the input's first file")
  if given is not None:
    classes = _positive_int("--classes", allow_zero=True)(given)
    if told is not None and classes != told:
      raise ConfigError(f"--classes: expected {told}, as {source} has it."
                        f" Received: {classes}")
    if config.flag.label_issues and classes < 2:
      raise ConfigError(
          "--classes: expected at least 2 with flag.label_issues"
          f" ({config.flag.label_issues}). Received: {classes}")
    return classes
  if told is not None:
    return told
  raise ConfigError(
      "--classes: expected the number of classes (0: not a classifier);"
      " the config names no input.label_vocabulary and no readable"
      " model.predictions_column, and the model is not loaded. Received:"
      " None")


def _refuse_label_issues_without_classes(config: AuditConfig) -> None:
  """What `run` refuses once it knows the loss terms, from the config alone:
  label issues with no classification loss (a custom loss gives no class
  signals).

  Raises:
    ConfigError: naming flag.label_issues, as `run` words it.
  """
  if not config.flag.label_issues:
    return
  from lossaudit import losses  # pylint: disable=g-import-not-at-top

  terms = config.loss.outputs or (config.loss,)
  names = [t.custom or t.name for t in terms]
  classifying = (losses.SPARSE_CLASSIFICATION + losses.DENSE_CLASSIFICATION
                 + losses.BINARY_CLASSIFICATION)
  if not any(t.custom is None and losses.canonical_loss_name(t.name)
             in classifying for t in terms):
    raise ConfigError(
        f"flag.label_issues: needs a classification loss (sparse or"
        f" categorical crossentropy, or binary crossentropy on one sigmoid"
        f" output). Received: {config.flag.label_issues!r} with loss"
        f" {[losses.canonical_loss_name(n) or n for n in names]}")


def make_plan(argv: Sequence[str]) -> Tuple[cost.CostPlan, AuditConfig]:
  """The plan of `lossaudit plan`'s arguments.

  Raises:
    ConfigError: a bad config or flag value.
  """
  args = parse_args(argv)
  config = load_config(args.config, args.set)
  _refuse_label_issues_without_classes(config)
  rows = _positive_int("--rows")(args.rows)
  rows_per_second = _positive_number("--rows-per-second")(
      args.rows_per_second)
  rows_per_bundle = _positive_int("--rows-per-bundle")(args.rows_per_bundle)
  issue_rate = _positive_number("--issue-rate", at_most=1)(args.issue_rate)
  bytes_per_row = (None if args.bytes_per_row is None else
                   _positive_number("--bytes-per-row")(args.bytes_per_row))
  # The input is sampled only for what the flags do not tell.
  sample = (sample_input(config) if None in (bytes_per_row, args.classes)
            else _Sample())
  classes = _classes(config, args.classes, sample)
  if bytes_per_row is None and sample.bytes_per_row is None:
    print(f"lossaudit: warning: no input file read for its size"
          f" ({config.input.format} input, input.pattern"
          f" {config.input.patterns[0]!r}); planned at"
          f" {cost.DEFAULT_INPUT_BYTES_PER_ROW:,} bytes a row: pass"
          " --bytes-per-row", file=sys.stderr)
  plan = cost.plan_cost(
      config, rows, classes, rows_per_second=rows_per_second,
      input_bytes_per_row=(bytes_per_row or sample.bytes_per_row
                           or cost.DEFAULT_INPUT_BYTES_PER_ROW),
      id_length=round(sample.id_length or cost.DEFAULT_ID_LENGTH),
      rows_per_bundle=rows_per_bundle, issue_rate=issue_rate)
  return plan, config


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    plan, _ = make_plan(argv)
  except ConfigError as e:
    print(f"lossaudit: error: {one_line(str(e))}", file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except
    print(f"lossaudit: error: {one_line(describe_error(e))}",
          file=sys.stderr)
    return 2
  print(cost.plan_table(plan))
  return 0


if __name__ == "__main__":
  sys.exit(main())
