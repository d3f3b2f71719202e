"""The output directory: layout, and small JSON/HTML files written whole.

Works on local paths and gs:// alike through Beam's `FileSystems`. What a
run may delete there, and its lock, are in `lossaudit.ownership`.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import uuid
from typing import Any, Dict, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit.errors import ConfigError, describe_error

LOSSES = "losses"
FLAGGED = "flagged"
DEAD_LETTER = "dead_letter"
RESOLVED = "resolved"
CLEAN = "clean"  # The cleaned dataset: `clean.clean_name` files.
RELABELLED = "clean/relabelled"
WEIGHTS = "weights"
SUMMARY = "summary.json"
REPORT = "report.html"
DRIFT = "drift.json"
SCRATCH = ".scratch"
SHARD_DIRS = (LOSSES, FLAGGED, DEAD_LETTER, RESOLVED, RELABELLED, WEIGHTS)
TOP_LEVEL_FILES = (SUMMARY, REPORT, DRIFT)


_DIGIT = "[0-9]"
_DATE_GLOB = f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2}"
_RUN_ID_GLOB = f"{_DIGIT * 8}T{_DIGIT * 6}Z-*"


def new_run_id(now: datetime.datetime) -> str:
  """`20261123T031500Z-1a2b3c`: sorts by start time, unique per run."""
  return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def expand_dir(template: str, now: datetime.datetime, run_id: str) -> str:
  """`output.dir` with `{date}` and `{run_id}` filled in."""
  return template.format(date=f"{now:%Y-%m-%d}", run_id=run_id)


def latest_complete_run(template: str) -> Optional[str]:
  """The newest earlier run of `template` that completed, or None.

  Runs are the directories the template can expand to (placeholders match
  any date and run id) that hold a `summary.json`; the newest by that file's
  time. With no placeholders, that is the template's own directory: call
  this before `Claim.clear_previous` clears it.
  """
  pattern = join(template.format(date=_DATE_GLOB, run_id=_RUN_ID_GLOB),
                 SUMMARY)
  found = FileSystems.match([pattern])[0].metadata_list
  if not found:
    return None
  newest = max(found, key=lambda m: (m.last_updated_in_seconds, m.path))
  return newest.path[:-len(SUMMARY)].rstrip("/")


# What `drift.compare` and the report read from a baseline's summary.json,
# and the type each must have.
_SUMMARY_KEYS = ((("examples_read",), int), (("examples_scored",), int),
                 (("examples_dead_lettered",), int),
                 (("loss", "quantiles"), dict), (("flagged", "total"), int),
                 (("config", "stats"), dict))


def read_summary(directory: str, key: str) -> Dict[str, Any]:
  """The `summary.json` of the completed run in `directory`.

  Raises:
    ConfigError: naming `key` when the directory holds no complete run, or
      its `summary.json` is not a regular file, not JSON or not a lossaudit
      summary.
  """
  path = join(directory, SUMMARY)
  expected = (f"{key}: expected the output.dir of a completed run (one with"
              f" {SUMMARY}). Received: {directory!r}")
  if not FileSystems.exists(path):
    raise ConfigError(expected)
  if not FileSystems.get_scheme(path) and not stat.S_ISREG(
      os.stat(path).st_mode):
    raise ConfigError(f"{expected} (its {SUMMARY} is not a regular file)")
  try:
    summary = read_json(path)
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigError(f"{expected} (its {SUMMARY} is not JSON:"
                      f" {str(e).splitlines()[0][:100]})") from None
  for keys, type_ in _SUMMARY_KEYS:
    node = summary
    for part in keys:
      node = node.get(part) if isinstance(node, dict) else None
    if node is None:
      raise ConfigError(f"{expected} (its {SUMMARY} is not a lossaudit"
                        f" summary: it has no {'.'.join(keys)!r})")
    if not isinstance(node, type_) or isinstance(node, bool):
      what = "an integer" if type_ is int else "a mapping"
      raise ConfigError(f"{expected} (its {SUMMARY} is not a lossaudit"
                        f" summary: {'.'.join(keys)!r} is not {what})")
  quantiles = summary["loss"]["quantiles"]
  if not all(v is None or (isinstance(v, (int, float))
                           and not isinstance(v, bool))
             for v in quantiles.values()):
    raise ConfigError(f"{expected} (its {SUMMARY} is not a lossaudit summary:"
                      " 'loss.quantiles' holds values that are not numbers)")
  return summary


def join(directory: str, *parts: str) -> str:
  return FileSystems.join(directory, *parts)


def shard_prefix(directory: str, kind: str) -> str:
  """`DIR/losses/part`: Beam appends `-SSSSS-of-NNNNN.parquet`."""
  return join(directory, kind, "part")


def shard_files(directory: str, kind: str) -> list:
  """The `part-*` files under `DIR/KIND/`, sorted."""
  found = FileSystems.match([shard_prefix(directory, kind) + "-*"])[0]
  return sorted(m.path for m in found.metadata_list)


# The scratch copy of a run's own baseline (its output.dir's earlier run):
# `KEPT_BASELINE-NNNNN.parquet` flags and `KEPT_BASELINE-summary.json`.
KEPT_BASELINE = "baseline-flagged"


def kept_baseline(directory: str) -> Optional[Tuple[Dict[str, Any],
                                                   Tuple[str, ...]]]:
  """The summary and `flagged/` copies of the earlier run of `directory`
  that an interrupted run kept in its scratch, or None.

  A run whose baseline is its own output.dir clears that run's outputs
  before it starts; stopped before it completes, it leaves its copy of them
  so that the next run still has the flag history. The newest such copy.
  """
  pattern = join(directory, SCRATCH, "*", f"{KEPT_BASELINE}-summary.json")
  found = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  for path in reversed(found):
    try:
      summary = read_json(path)
    except (ValueError, UnicodeDecodeError, OSError):
      continue
    prefix = path[:-len("-summary.json")]
    flagged = sorted(m.path for m in FileSystems.match(
        [f"{prefix}-[0-9]*.parquet"])[0].metadata_list)
    return summary, tuple(flagged)
  return None


def scratch_prefix(directory: str, run_id: str, kind: str) -> str:
  """Prefix of the `kind` files run `run_id` spills between passes; removed
  when the run ends (`ownership.remove_scratch`)."""
  return join(directory, SCRATCH, run_id, kind)


def write_text(path: str, text: str) -> None:
  """Writes `path` whole or not at all: a reader never sees half a file.

  The text goes to a temporary name first, then is renamed over `path`
  (an atomic replace on a local disk; on object stores a copy, itself
  atomic, and a delete).
  """
  temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with FileSystems.create(temporary, mime_type="text/plain",
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(text.encode("utf-8"))
  FileSystems.rename([temporary], [path])


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_json(path: str) -> Any:
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def check_flagged_outputs(key: str, directory: str, summary: Dict[str, Any],
                          flagged_files: Sequence[str],
                          id_column: Optional[str]) -> None:
  """Refuses a run (a baseline) whose flags cannot be matched with today's:
  one that identified examples by another `input.id_column`, or whose
  `flagged/` files are not lossaudit's Parquet flags. Checked before the
  run, so that a bad baseline costs nothing of the earlier outputs.

  Raises:
    ConfigError: naming `key`, what was expected and what was found.
  """
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  recorded = summary.get("config", {}).get("input", {})
  if "id_column" in recorded and recorded["id_column"] != id_column:
    raise ConfigError(
        f"{key}: expected a run with input.id_column {id_column!r}: flags are"
        f" matched by id, and the baseline's ids are of"
        f" {recorded['id_column']!r}. Received: {directory!r}")
  needed = {"id", "reasons", "loss"}
  for path in flagged_files:
    try:
      with FileSystems.open(
          path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        names = set(pq.ParquetFile(f).schema_arrow.names)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{key}: expected the {FLAGGED}/ files of a completed run;"
          f" {_in_run(path)!r} is not Parquet ({describe_error(e, 60)})."
          f" Received: {directory!r}") from None
    if not needed <= names:
      raise ConfigError(
          f"{key}: expected the {FLAGGED}/ files of a completed run, with"
          f" the columns {sorted(needed)}; {_in_run(path)!r} lacks"
          f" {sorted(needed - names)}. Received: {directory!r}")


def _in_run(path: str) -> str:
  """`flagged/part-...` of a shard's path: the part named in messages."""
  return "/".join(path.rstrip("/").split("/")[-2:])
