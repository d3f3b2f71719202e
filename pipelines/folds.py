"""`lossaudit folds`: every id of a config's input, with its held-out fold.

```
lossaudit folds --config FILE.yaml --output DIR [--set KEY=VALUE ...]
                [Beam options ...]
```

Reads the ids of `input.pattern` (`input.format`, `input.id_column`) and
writes `DIR/part-SSSSS-of-NNNNN.parquet` shards of `(id: string, fold:
int64)`, the fold being `lossaudit.folds.fold_of(id, model.folds)`: the fold
whose model an audit with that config scores the example with. Training
model k on the rows whose fold is not k makes every audit score
out-of-sample. Rows without an id, or whose id is not UTF-8, are skipped
and counted, as the audit dead-letters them.

`DIR` is held like `lossaudit run` holds `output.dir` (`lossaudit.ownership`:
the marker, the lock). It must be new, empty, or written by an earlier
`lossaudit folds` (its marker, and only the names this command writes);
anything else is exit 2, and nothing there is touched. A re-run deletes the
earlier shards, by name, before writing its own, so shards never mix.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from lossaudit import (
  METRICS_NAMESPACE,
  dead_letters,
  formats,
  inputs,
  outputs,
  ownership,
  quiet,
)
from lossaudit import columns as cols
from lossaudit.config import AuditConfig, load_config
from lossaudit.errors import ConfigError
from lossaudit.pipelines import command

FOLDS_FLAGS = ("--config", "--set", "--output")
SCHEMA = pa.schema([("id", pa.string()), ("fold", pa.int64())])
# Names relative to DIR that `lossaudit folds` writes: its shards and Beam's
# temporary files of a write that did not finish. With the marker and the
# lock, nothing else may be in DIR.
_SHARD = re.compile(r"part-\d{5}-of-\d{5}\.parquet")
_BEAM_TEMP = re.compile(r"beam-temp-part-[0-9a-f]{32}/[^/]+")
_MARKERS = re.compile(
    rf"(?:{re.escape(ownership.MARKER)}(?:\.tmp-[0-9a-f]{{8}})?"
    rf"|{re.escape(ownership.LOCK)})")
# Beam counters of the run (namespace `METRICS_NAMESPACE`).
WRITTEN, MISSING_ID, ID_NOT_UTF8, UNREADABLE = (
    "folds_rows_written", "folds_missing_id", "folds_id_not_utf8",
    "folds_unreadable")


class _Parser(argparse.ArgumentParser):
  """argparse, telling a bad argument as a `ConfigError` (one line, exit 2)
  rather than printing its usage."""

  def error(self, message):
    missing = re.fullmatch(r"the following arguments are required: (.*)",
                           message)
    if missing:
      raise ConfigError(f"{missing[1]}: expected a value (required)."
                        " Received: none")
    # pylint: disable-next=protected-access
    raise ConfigError(command.beam_value_error(message))


def parse_args(argv: Optional[Sequence[str]] = None):
  """`--config`, `--output`, `--set` and the Beam options that pass on."""
  parser = _Parser(
      prog="lossaudit folds", allow_abbrev=False,
      description="Write (id, fold) Parquet shards: the fold of each id of"
      " the config's input, fold_of(id, model.folds).")
  parser.add_argument("--config", required=True, help="YAML config file")
  parser.add_argument("--output", required=True, metavar="DIR",
                      help="directory for part-*.parquet (new or empty)")
  parser.add_argument(
      "--set", action="append", default=[], metavar="KEY=VALUE",
      help="override one dotted config key (value parsed as YAML)")
  parser.add_argument(
      "--verbose", action="store_true",
      help="show TensorFlow's start-up log lines (oneDNN, CUDA)")
  return parser.parse_known_args(argv)


class _AssignFolds(beam.DoFn):
  """`(file, RecordBatch)` → a RecordBatch of `SCHEMA`: the rows with an id,
  and `fold_of` their ids, in one call a batch."""

  def __init__(self, id_column: str, num_folds: int):
    self._id_column = id_column
    self._num_folds = num_folds
    self._written = Metrics.counter(METRICS_NAMESPACE, WRITTEN)
    self._missing = Metrics.counter(METRICS_NAMESPACE, MISSING_ID)
    self._not_utf8 = Metrics.counter(METRICS_NAMESPACE, ID_NOT_UTF8)

  def process(self, element: Tuple[str, pa.RecordBatch]):
    from lossaudit.folds import fold_of  # pylint: disable=g-import-not-at-top

    _, batch = element
    column = cols.optional_column(batch, self._id_column)
    if column is None:
      self._missing.inc(batch.num_rows)
      return
    text = cols.first_as_text(column)  # Null where missing or not UTF-8.
    ids = text.strings.filter(text.strings.is_valid())
    not_utf8 = int(text.not_utf8.sum())
    self._not_utf8.inc(not_utf8)
    self._missing.inc(batch.num_rows - len(ids) - not_utf8)
    if not len(ids):
      return
    self._written.inc(len(ids))
    yield pa.RecordBatch.from_arrays(
        [ids, pa.array(fold_of(ids, self._num_folds))], schema=SCHEMA)


class _Count(beam.DoFn):
  """Counts its elements in the Beam counter `name`; outputs nothing."""

  def __init__(self, name: str):
    self._counter = Metrics.counter(METRICS_NAMESPACE, name)

  def process(self, unused_element):
    self._counter.inc()
    return ()


def build(p: beam.Pipeline, config: AuditConfig, files: Sequence[str],
          output: str, schema: Optional[bytes]) -> None:
  """Read ids → assign folds → write `output/part-*.parquet`.

  Args:
    p: the pipeline to add the steps to.
    config: the resolved config (input, `model.folds`, batch size, shards).
    files: the input files to read, `(F,)`.
    output: `--output`.
    schema: a serialized tensorflow_metadata Schema decoding only the id
      column (`id_schema`), for a format that stores no types.
  """
  # TensorFlow loads with the readers: imported once the config is good.
  # pylint: disable=g-import-not-at-top
  from lossaudit.transforms.write import WriteParquetShards
  # pylint: enable=g-import-not-at-top

  read = p | "ReadIds" >> formats.get(config.input.format).read(
      files, formats.ReadRequest(config.batch_size,
                                 columns=(config.input.id_column,),
                                 schema=schema))
  _ = (read[dead_letters.TAG]
       | "CountUnreadable" >> beam.ParDo(_Count(UNREADABLE)))
  _ = (read["batches"]
       | "AssignFolds" >> beam.ParDo(_AssignFolds(config.input.id_column,
                                                  config.model.folds))
       # Kind "": the shards sit in `output` itself.
       | "WriteShards" >> WriteParquetShards(output, "", SCHEMA,
                                             config.output.num_shards))


def id_schema(column: str, value_type: Optional[pa.DataType]) -> bytes:
  """A serialized tensorflow_metadata Schema decoding only `column`: as
  the ints or floats the first records hold, else as bytes."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2

  schema = schema_pb2.Schema()
  feature = schema.feature.add(name=column)
  feature.type = (
      schema_pb2.INT if value_type and pa.types.is_integer(value_type) else
      schema_pb2.FLOAT if value_type and pa.types.is_floating(value_type)
      else schema_pb2.BYTES)
  return schema.SerializeToString()


def _check_config(config: AuditConfig) -> None:
  """K and the ids: `model.folds` and `input.id_column` are set."""
  if config.model.folds is None:
    raise ConfigError(
        "model.folds: expected K, an integer >= 2 (the number of folds"
        " lossaudit folds assigns). Received: None")
  if config.input.id_column is None:
    raise ConfigError(
        "input.id_column: expected the id column (lossaudit folds hashes"
        " ids). Received: None")
  if config.input.fold_column is not None:
    raise ConfigError(
        f"input.fold_column: expected null for lossaudit folds (an audit of"
        f" this config reads the folds from that column, not from"
        f" fold_of). Received: {config.input.fold_column!r}")


def _files(directory: str) -> List[str]:
  """The paths of the files under `directory`, relative to it; [] when it
  does not exist."""
  base = directory.rstrip("/") + "/"
  if FileSystems.get_scheme(directory):
    found = FileSystems.match([base + "**"])[0].metadata_list
    paths = [m.path for m in found]
  else:
    paths = [os.path.join(root, name)
             for root, _, names in os.walk(directory) for name in names]
  return [p[len(base):] for p in paths if p.startswith(base)]


def _own_files(relative: Sequence[str]) -> List[str]:
  """The shards and Beam temporary files of an earlier run, of `relative`."""
  return [r for r in relative
          if _SHARD.fullmatch(r) or _BEAM_TEMP.fullmatch(r)]


def check_output(directory: str) -> None:
  """Refuses an `--output` holding files `lossaudit folds` did not write.

  Raises:
    ConfigError: a non-empty directory without lossaudit's marker, or with
      names this command does not write, or a path that is a file.
  """
  if not directory:
    raise ConfigError("--output: expected a directory. Received: ''")
  if not FileSystems.get_scheme(directory) and os.path.isfile(directory):
    raise ConfigError(f"--output: expected a directory. Received:"
                      f" {directory!r} (a file)")
  relative = _files(directory)
  names = set(relative) - {ownership.LOCK}
  if not names:
    return
  foreign = sorted(set(relative) - set(_own_files(relative)) -
                   {r for r in relative if _MARKERS.fullmatch(r)})
  if ownership.MARKER not in names or foreign:
    example = foreign[0] if foreign else sorted(names)[0]
    raise ConfigError(
        f"--output: expected a new or empty directory, or one an earlier"
        f" lossaudit folds wrote; it holds {example!r}, which lossaudit folds"
        f" did not write, and is left untouched. Received: {directory!r}")


def _naming_output(error: ConfigError) -> ConfigError:
  """An error of `ownership` or `inputs` about `output.dir`, naming
  `--output` instead."""
  return ConfigError(str(error).replace("output.dir", "--output"))


def _claim(directory: str, config: AuditConfig,
           run_id: str, start: float) -> ownership.Claim:
  """`ownership.claim` of `--output`: the lock, and its checks."""
  try:
    return ownership.claim(
        directory, ownership.RunInfo.this_process(run_id, start),
        overwrite=False, lock_timeout=config.output.lock_timeout_seconds)
  except ConfigError as e:
    raise _naming_output(e) from None


def run(argv: Optional[Sequence[str]] = None
        ) -> Tuple[str, Dict[str, int]]:
  """Writes the folds.

  Args:
    argv: the arguments after `lossaudit folds`.

  Returns:
    `--output`, and the counts by name (`WRITTEN`, `MISSING_ID`,
    `ID_NOT_UTF8`, `UNREADABLE`); empty when the runner reports no metrics.

  Raises:
    ConfigError: a bad config, input or `--output`, before the pipeline
      starts.
  """
  known, beam_args = parse_args(argv)
  command.check_beam_args(beam_args, FOLDS_FLAGS)
  config = load_config(known.config, known.set)
  _check_config(config)
  output = known.output
  options = PipelineOptions(beam_args)
  FileSystems.set_options(options)
  try:
    ownership.check_not_protected(output)
  except ConfigError as e:
    raise _naming_output(e) from None
  check_output(output)
  try:
    found = inputs.expand(config.input.patterns, output)
  except ConfigError as e:
    raise _naming_output(e) from None
  # TensorFlow loads and starts here, once the config is known to be good,
  # its start-up lines held back.
  with quiet.tensorflow_start_up_lines(known.verbose):
    from lossaudit import probe  # pylint: disable=g-import-not-at-top

    quiet.start_tensorflow()
    sample = probe.read_sample(config, found.files)
  column = config.input.id_column
  if sample is not None and column not in sample.columns:
    raise ConfigError(
        f"input.id_column: column {column!r} not found in the first"
        f" {sample.num_rows} records of {sample.path}; found columns"
        f" {sorted(set(sample.columns) - {probe.RAW_RECORD_COLUMN})}")
  schema = id_schema(column, sample and sample.value_type(column))
  start = time.time()
  now = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
  claim = _claim(output, config, outputs.new_run_id(now), start)
  with command.ending_workers_then(claim.release):
    command.runner_name(options)
    p = command.new_pipeline(options)
    build(p, config, found.files, output, schema)
    # Last, once nothing is left to refuse: writes the marker, then the
    # earlier shards go.
    check_output(output)  # Again, under the lock.
    claim.clear_previous()
    ownership.remove_named(output, _own_files(_files(output)))
    result = p.run()
    result.wait_until_finish()
    counters = command.run_metrics(result).get("counters", {})
    if counters:
      counters[UNREADABLE] = (counters.get(UNREADABLE, 0) +
                              len(found.not_regular))
    return output, counters


def summary_line(counts: Dict[str, int], output: str) -> str:
  """One line: rows written, rows skipped (and why), records unread."""
  if not counts:
    return (f"lossaudit: wrote the folds to {output} (this runner reports"
            " no counts)")
  missing, not_utf8 = counts.get(MISSING_ID, 0), counts.get(ID_NOT_UTF8, 0)
  line = (f"lossaudit: wrote {counts.get(WRITTEN, 0):,} rows (id, fold) to"
          f" {output}; skipped {missing + not_utf8:,} rows ({missing:,}"
          f" without an id, {not_utf8:,} whose id is not UTF-8)")
  unreadable = counts.get(UNREADABLE, 0)
  if unreadable:
    line += (f"; {unreadable:,} unreadable (records, stretches of a file"
             " or files)")
  return line


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns the exit code."""
  if "--verbose" not in (sys.argv[1:] if argv is None else argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Why: audit.main.
  logging.getLogger().setLevel(logging.WARNING)
  code, result = command.run_command(
      lambda: run(argv), "the job stopped and its lock is removed (run it"
      " again for the folds)")
  if code is not None:
    return code
  output, counts = result
  print(summary_line(counts, output))
  return 0


if __name__ == "__main__":
  sys.exit(main())
