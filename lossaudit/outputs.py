"""The output directory: layout, and small JSON/HTML files written whole.

Works on local paths and gs:// alike through Beam's `FileSystems`. What a
run may delete there, and its lock, are in `lossaudit.ownership`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit.errors import ConfigError, describe_error

LOSSES = "losses"
FLAGGED = "flagged"
DEAD_LETTER = "dead_letter"
RESOLVED = "resolved"
CLEAN = "clean"  # The cleaned dataset: files named as the input's.
RELABELLED = "relabelled"
WEIGHTS = "weights"
SCORED_IDS = "scored_ids"  # The ids a run scored, when losses/ is off.
SUMMARY = "summary.json"
REPORT = "report.html"
DRIFT = "drift.json"
SCRATCH = ".scratch"
# The names of the files promoted into `clean/`, written before they are
# (`clean/` holds nothing but the dataset's files).
CLEAN_MANIFEST = ".lossaudit-clean.json"
# Where a run stages `clean/`, `relabelled/` and `weights/` (under its
# scratch) until its gates have passed (`promote_staged`).
STAGE = "stage"
# Earlier versions wrote the relabelled rows inside `clean/`.
_OLD_RELABELLED = "clean/relabelled"
SHARD_DIRS = (LOSSES, FLAGGED, DEAD_LETTER, RESOLVED, RELABELLED, WEIGHTS,
              SCORED_IDS, _OLD_RELABELLED)
# The label-issue rules in full, beside `summary.json`'s bounded account.
LABEL_ISSUES = "label_issues"
JOINT = f"{LABEL_ISSUES}/joint.parquet"
CLASSES = f"{LABEL_ISSUES}/classes.parquet"
PAIRS = f"{LABEL_ISSUES}/pairs.parquet"
# The thumbnails and text of the report's flagged rows (`lossaudit export`).
PREVIEWS = "previews.parquet"
# The reviewed decisions in force (`lossaudit.decisions`).
DECISIONS = "decisions.parquet"
TOP_LEVEL_FILES = (SUMMARY, REPORT, DRIFT, CLEAN_MANIFEST, JOINT, CLASSES,
                   PAIRS, PREVIEWS, DECISIONS)


_DIGIT = "[0-9]"
_DATE_GLOB = f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2}"
_RUN_ID_GLOB = f"{_DIGIT * 8}T{_DIGIT * 6}Z-*"


def new_run_id(now: datetime.datetime) -> str:
  """`20261123T031500Z-1a2b3c`: sorts by start time, unique per run."""
  return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def expand_dir(template: str, now: datetime.datetime, run_id: str) -> str:
  """`output.dir` with `{date}` and `{run_id}` filled in."""
  return template.format(date=f"{now:%Y-%m-%d}", run_id=run_id)


def latest_complete_run(template: str,
                        exclude: Optional[str] = None, *,
                        passed: bool = True) -> Optional[str]:
  """The newest earlier run of `template` that completed and whose gates
  passed (or that had none; any gate result when not `passed`), or None.

  Runs are the directories the template can expand to (placeholders match
  any date and run id) that hold a `summary.json`, newest by the date and
  run id in their names, then by that file's time (`_start_in_name`); one
  whose `gate.passed` is false is never a baseline, so a failed
  night retried against the same history fails again. `exclude` (this
  run's own directory) is left out. With no placeholders, that is the
  template's own directory: call this before `Claim.clear_previous` clears
  it.
  """
  if not _is_gcs(template):  # Beam matches `{date}/...` against nothing.
    template = os.path.abspath(template)
  started = _start_in_name(template)
  if _is_gcs(template) and template != template.format(date="", run_id=""):
    candidates = _gcs_summaries(template, started)
  else:
    pattern = join(template.format(date=_DATE_GLOB, run_id=_RUN_ID_GLOB),
                   SUMMARY)
    candidates = [sorted(FileSystems.match([pattern])[0].metadata_list,
                         reverse=True, key=lambda m: (
                             started(m.path), m.last_updated_in_seconds,
                             m.path))]
  for group in candidates:
    for newest in group:
      directory = newest.path[:-len(SUMMARY)].rstrip("/")
      if exclude is not None and same_dir(directory, exclude):
        continue
      if not passed or gate_passed(newest.path):
        return directory
  return None


_PLACEHOLDER_REGEX = {"{date}": r"\d{4}-\d{2}-\d{2}",
                      "{run_id}": r"\d{8}T\d{6}Z-[0-9a-f]{6}"}


def gcs_run_dirs(template: str) -> List[str]:
  """The directories a gs:// `template` expands to, found a level at a
  time by listing with a delimiter: what grows with the nights is one name
  a run, not every object of every run.

  Returns:
    `gs://bucket/...` paths, without a trailing slash.
  """
  from google.cloud import storage  # pylint: disable=g-import-not-at-top

  bucket, _, path = template[len("gs://"):].partition("/")
  client = storage.Client()
  prefixes = [""]
  for part in filter(None, path.split("/")):
    if "{" not in part:
      prefixes = [f"{prefix}{part}/" for prefix in prefixes]
      continue
    regex = re.compile("".join(
        _PLACEHOLDER_REGEX.get(piece, re.escape(piece))
        for piece in re.split(r"(\{date\}|\{run_id\})", part)))
    found = []
    for prefix in prefixes:
      listing = client.list_blobs(bucket, prefix=prefix, delimiter="/")
      for _ in listing.pages:  # The prefixes arrive with the pages.
        pass
      found += sorted(name for name in listing.prefixes
                      if regex.fullmatch(name[len(prefix):-1]))
    prefixes = found
  return [f"gs://{bucket}/{prefix.rstrip('/')}" for prefix in prefixes]


def _gcs_summaries(template: str, started) -> Iterator[List]:
  """The `summary.json` metadata of the runs of the gs:// `template`, in
  groups of runs that started at the same time as their names say, newest
  first; each group newest first by the summary's time."""
  by_start: Dict[str, List[str]] = {}
  for directory in gcs_run_dirs(template):
    by_start.setdefault(started(directory + "/"), []).append(directory)
  for start in sorted(by_start, reverse=True):
    found = [m for d in by_start[start]
             for m in FileSystems.match([join(d, SUMMARY)])[0].metadata_list]
    yield sorted(found, reverse=True,
                 key=lambda m: (m.last_updated_in_seconds, m.path))


def _start_in_name(template: str):
  """A function of a run's path (of `template`) giving when the run started
  as its name says: its run id (`20261207T023000Z-...`, which sorts by
  start time), else its date as `20261207`, else "". Runs are ordered by it
  before their summary's time, which a copy or a `touch` changes."""
  parts = re.split(r"(\{date\}|\{run_id\})", template)
  named = set()
  regex = ""
  for part in parts:
    name = part[1:-1] if part in ("{date}", "{run_id}") else None
    if name is None:
      regex += re.escape(part)
    elif name in named:
      regex += f"(?P={name})"
    else:
      named.add(name)
      regex += (r"(?P<date>\d{4}-\d{2}-\d{2})" if name == "date"
                else r"(?P<run_id>\d{8}T\d{6}Z-[0-9a-f]{6})")
  compiled = re.compile(regex.rstrip("/") + "/")

  def started(path: str) -> str:
    found = compiled.search(path)
    if found is None:
      return ""
    groups = found.groupdict()
    return groups.get("run_id") or (groups.get("date") or "").replace("-", "")

  return started


def same_dir(a: str, b: str) -> bool:
  """Whether `a` and `b` name one directory (links resolved, locally)."""
  if _is_gcs(a) or _is_gcs(b):
    return a.rstrip("/") == b.rstrip("/")
  return os.path.realpath(a) == os.path.realpath(b)


def gate_passed(summary_path: str) -> bool:
  """Whether the run of `summary_path` passed its gates (true without
  gates; false when the summary cannot be read)."""
  try:
    gate = read_json(summary_path).get("gate")
  except Exception:  # pylint: disable=broad-except
    return False
  return not isinstance(gate, dict) or gate.get("passed") is not False


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


def kept_baseline(directory: str
                  ) -> Optional[Tuple[Dict[str, Any], Tuple[str, ...],
                                      Optional[Tuple[str, ...]],
                                      Optional[str]]]:
  """The summary, `flagged/`, scored-id and `decisions.parquet` copies of
  the baseline that an earlier run of `directory` kept in its scratch, or
  None; the ids are None when that baseline had none, the decisions when it
  had none.

  A run whose baseline is its own output.dir clears that run's outputs
  before it starts; stopped before it completes, or failing its gates, it
  leaves its copy of them so that the next run still has the flag history
  it was judged against. The newest such copy.
  """
  pattern = join(directory, SCRATCH, "*", f"{KEPT_BASELINE}-summary.json")
  found = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  for path in reversed(found):
    try:
      summary = read_json(path)
    except (ValueError, UnicodeDecodeError, OSError):
      continue
    prefix = path[:-len("-summary.json")]

    def copies(name: str) -> Tuple[str, ...]:
      return tuple(sorted(m.path for m in FileSystems.match(
          [f"{prefix}-{name}"])[0].metadata_list))

    ids = copies("ids-[0-9]*.parquet")
    decided = copies(DECISIONS)
    return (summary, copies("[0-9]*.parquet"),
            ids if ids or not summary.get("examples_scored") else None,
            decided[0] if decided else None)
  return None


def scored_id_files(directory: str) -> Optional[List[str]]:
  """Files with an `id` column of every id the run in `directory` scored:
  its `scored_ids/` shards, else its `losses/` shards; None when it wrote
  neither."""
  for kind in (SCORED_IDS, LOSSES):
    found = shard_files(directory, kind)
    if found:
      return found
  return None


def scratch_prefix(directory: str, run_id: str, kind: str) -> str:
  """Prefix of the `kind` files run `run_id` spills between passes; removed
  when the run ends (`ownership.remove_scratch`)."""
  return join(directory, SCRATCH, run_id, kind)


def stage_dir(directory: str, run_id: str) -> str:
  """Where run `run_id` writes `clean/`, `relabelled/` and `weights/` until
  its gates pass (`promote_staged`)."""
  return join(directory, SCRATCH, run_id, STAGE)


def relative_files(directory: str) -> List[Tuple[str, str]]:
  """`(path, path relative to directory)` of every file under it."""
  base = directory.rstrip("/") + "/"
  if _is_gcs(directory):
    found = FileSystems.match([base + "**"])[0].metadata_list
    paths = [m.path for m in found]
  else:
    paths = [os.path.join(root, name)
             for root, _, names in os.walk(directory) for name in names]
  return [(p, p[len(base):]) for p in paths if p.startswith(base)]


def promote_staged(directory: str, run_id: str) -> Dict[str, List[str]]:
  """Moves what run `run_id` staged into `directory`, each file to the same
  relative path; the names going into `clean/` are first recorded in
  `CLEAN_MANIFEST` (what a later run may delete there).

  Returns:
    The final paths, by folder (`clean`, `relabelled`, `weights`).
  """
  staged = relative_files(stage_dir(directory, run_id))
  clean = {rel.split("/", 1)[1] for _, rel in staged
           if rel.startswith(CLEAN + "/")}
  if clean:
    # A retried step finds part of the stage moved, and this run's list.
    write_json(join(directory, CLEAN_MANIFEST),
               {"files": sorted(clean | set(clean_manifest(directory)))})
  targets = [join(directory, rel) for _, rel in staged]
  if not _is_gcs(directory):
    for folder in {os.path.dirname(t) for t in targets}:
      os.makedirs(folder, exist_ok=True)
  if staged:
    FileSystems.rename([p for p, _ in staged], targets)
  promoted: Dict[str, List[str]] = {}
  for (_, rel), target in zip(staged, targets):
    promoted.setdefault(rel.split("/", 1)[0], []).append(target)
  return {kind: sorted(paths) for kind, paths in promoted.items()}


def clean_manifest(directory: str) -> List[str]:
  """The `clean/` file names an earlier run promoted (`CLEAN_MANIFEST`);
  none when it is missing or damaged. Only plain names, never a path."""
  try:
    found = read_json(join(directory, CLEAN_MANIFEST))["files"]
  except Exception:  # pylint: disable=broad-except
    return []
  if not isinstance(found, list):
    return []
  return [name for name in found if isinstance(name, str) and name
          and "/" not in name and "\\" not in name
          and name not in (".", "..")]


def _is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def write_text(path: str, text: str) -> None:
  """Writes `path` whole or not at all: a reader never sees half a file.

  The text goes to a temporary name first, then is renamed over `path`
  (an atomic replace on a local disk; on object stores a copy, itself
  atomic, and a delete).
  """
  write_bytes(path, text.encode("utf-8"), "text/plain")


def write_bytes(path: str, data: bytes,
                mime_type: str = "application/octet-stream") -> None:
  """Writes `path` whole or not at all, as `write_text`."""
  temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with FileSystems.create(temporary, mime_type=mime_type,
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(data)
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
