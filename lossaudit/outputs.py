"""The output directory: layout, clean re-runs, and small JSON/HTML files.

Works on local paths and gs:// alike through Beam's `FileSystems`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

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


def join(directory: str, *parts: str) -> str:
  return FileSystems.join(directory, *parts)


def shard_prefix(directory: str, kind: str) -> str:
  """`DIR/losses/part`: Beam appends `-SSSSS-of-NNNNN.parquet`."""
  return join(directory, kind, "part")


def scratch_prefix(directory: str) -> str:
  """Prefix of the files spilled between passes; removed when a run ends."""
  return join(directory, SCRATCH, "scored")


def remove_scratch(directory: str) -> None:
  scratch = join(directory, SCRATCH)
  if FileSystems.exists(scratch):
    FileSystems.delete([scratch])


def prepare(directory: str) -> None:
  """Makes `directory` ready for a run, before the pipeline starts.

  Removes `summary.json` first (so an interrupted re-run never looks
  complete), then the shards and files of any earlier run, so shards of two
  runs never mix; checks that the directory can be written.

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
  stale = [join(directory, name) for name in (SUMMARY, REPORT, DRIFT)]
  for kind in _SHARD_DIRS:
    stale += [m.path for m in FileSystems.match(
        [join(directory, kind, "*")])[0].metadata_list]
  stale = [path for path in stale if FileSystems.exists(path)]
  if stale:
    FileSystems.delete(stale)
  remove_scratch(directory)


def write_text(path: str, text: str) -> None:
  with FileSystems.create(path, mime_type="text/plain") as f:
    f.write(text.encode("utf-8"))


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_json(path: str) -> Any:
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))
