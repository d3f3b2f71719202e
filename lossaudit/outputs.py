"""The output directory: layout, clean re-runs, and small JSON/HTML files.

Works on local paths and gs:// alike through Beam's `FileSystems`.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit.config import ConfigError

LOSSES = "losses"
FLAGGED = "flagged"
DEAD_LETTER = "dead_letter"
SUMMARY = "summary.json"
REPORT = "report.html"
DRIFT = "drift.json"
SCRATCH = ".scratch"
_SHARD_DIRS = (LOSSES, FLAGGED, DEAD_LETTER)


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
  this before `prepare` clears it.
  """
  pattern = join(template.format(date=_DATE_GLOB, run_id=_RUN_ID_GLOB),
                 SUMMARY)
  found = FileSystems.match([pattern])[0].metadata_list
  if not found:
    return None
  newest = max(found, key=lambda m: (m.last_updated_in_seconds, m.path))
  return newest.path[:-len(SUMMARY)].rstrip("/")


def read_summary(directory: str, key: str) -> Any:
  """The `summary.json` of the run in `directory`.

  Raises:
    ConfigError: naming `key` when the directory holds no complete run.
  """
  path = join(directory, SUMMARY)
  if not FileSystems.exists(path):
    raise ConfigError(
        f"{key}: expected the output.dir of a completed run (one with"
        f" {SUMMARY}). Received: {directory!r}")
  return read_json(path)


def join(directory: str, *parts: str) -> str:
  return FileSystems.join(directory, *parts)


def shard_prefix(directory: str, kind: str) -> str:
  """`DIR/losses/part`: Beam appends `-SSSSS-of-NNNNN.parquet`."""
  return join(directory, kind, "part")


def scratch_prefix(directory: str, kind: str) -> str:
  """Prefix of the `kind` files spilled between passes; removed when a run
  ends."""
  return join(directory, SCRATCH, kind)


def _remove_tree(path: str) -> None:
  """Deletes a directory (on object stores: a prefix) and all under it."""
  path = path.rstrip("/")
  if FileSystems.get_scheme(path):
    FileSystems.delete([path + "/"])  # Recursive; quiet when there is none.
  elif FileSystems.exists(path):
    FileSystems.delete([path])


def remove_scratch(directory: str) -> None:
  _remove_tree(join(directory, SCRATCH))


def prepare(directory: str) -> None:
  """Makes `directory` ready for a run, before the pipeline starts.

  Removes `summary.json` first (so an interrupted re-run never looks
  complete), then the shards, files and half-written temporary shards of any
  earlier run, so shards of two runs never mix; checks that the directory
  can be written.

  Raises:
    ConfigError: when the directory cannot be written.
  """
  probe = join(directory, f".lossaudit-write-check-{uuid.uuid4().hex}")
  try:
    if not FileSystems.exists(directory):
      FileSystems.mkdirs(directory)
    with FileSystems.create(probe) as f:
      f.write(b"ok")
    FileSystems.delete([probe])
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"output.dir: expected a writable location. Received: {directory!r}"
        f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    ) from None
  for name in (SUMMARY, REPORT, DRIFT):
    if FileSystems.exists(join(directory, name)):
      FileSystems.delete([join(directory, name)])
  for kind in _SHARD_DIRS:
    _remove_tree(join(directory, kind))
  remove_scratch(directory)


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
