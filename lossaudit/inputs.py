"""Expanding `input.pattern` once: each file once, never lossaudit's outputs.

The globs are expanded before the run, with Beam's own matching, and the
pipeline reads exactly that list. A file matched by two overlapping globs (or
reached twice through `.`, `..` or a symbolic link) is read once. Special
files (FIFOs, devices, sockets) and directories are set apart, never opened:
opening a FIFO blocks forever. And since a run must never read what it or an
earlier run wrote, a glob that can match this run's outputs, or a file inside
a directory holding lossaudit's marker, stops the run before it starts;
but for an earlier run's cleaned dataset (`clean/`), which is there to be
read.
"""

from __future__ import annotations

import os
import re
import stat
import time
from typing import (
  Any,
  Callable,
  Dict,
  List,
  NamedTuple,
  Optional,
  Sequence,
  Tuple,
)

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from lossaudit import outputs, progress
from lossaudit.errors import ConfigError, describe_error
from lossaudit.ownership import LOCK, MARKER

# Names under `output.dir` standing for all that a run writes there.
_OUTPUT_SAMPLES = (
    "", MARKER, LOCK, *outputs.TOP_LEVEL_FILES,
    *(f"{kind}/part-00000-of-00001.parquet" for kind in outputs.SHARD_DIRS),
    f"{outputs.DEAD_LETTER}/part-00000-of-00001.jsonl",
    f"{outputs.LOSSES}/beam-temp-part-0/0",
    f"{outputs.SCRATCH}/20260101T000000Z-000000/scored-0.arrows",
)


# The cleaned dataset of an earlier run (`output.clean`) is a dataset
# handed back to be used: it may be read, the rest of that run's outputs
# not.
_CLEAN_COPY = re.compile(
    rf"{re.escape(outputs.CLEAN)}/[^/]+(?<!\.tmp-[0-9a-f]{{8}})")


class InputFiles(NamedTuple):
  """What the globs matched.

  Attributes:
    files: regular files to read, in glob order, each once.
    not_regular: matched paths that are not regular files (dead-lettered
      `not_a_regular_file`, never opened).
  """

  files: Tuple[str, ...]
  not_regular: Tuple[str, ...]


def _is_remote(path: str) -> bool:
  return "://" in path


def _absolute(path: str) -> str:
  return path if _is_remote(path) else os.path.abspath(path)


def _matchable(pattern: str) -> str:
  """`pattern` as Beam can match it: Beam matches a local glob whose first
  part is a wildcard (`*.parquet`, `*/d.parquet`) against nothing, so that
  one is made absolute; the others stay as written (the paths matched are
  the files' names in the outputs)."""
  first = pattern.split("/", 1)[0]
  if _is_remote(pattern) or not any(c in first for c in "*?["):
    return pattern
  return os.path.abspath(pattern)


def _spellings(path: str) -> Tuple[str, ...]:
  """`path` as written (absolute) and with symbolic links resolved: a glob
  over `in/**` reaches `link/out` when `link` points at `in`."""
  if _is_remote(path):
    return (path,)
  return tuple(dict.fromkeys((os.path.abspath(path), os.path.realpath(path))))


def expand(patterns: Sequence[str], output_dir: str,
           clock: Callable[[], float] = time.monotonic) -> InputFiles:
  """Expands the globs of `input.pattern` for a run writing to `output_dir`.

  A glob of many files prints a progress line every
  `progress.CHECK_SECONDS` (by `clock`) while its files are checked.

  Raises:
    ConfigError: a glob that cannot be read or matches nothing, or input
      that overlaps the output (see the module docstring).
  """
  _refuse_globs_over_output(patterns, output_dir)
  seen = set()
  files: List[str] = []
  not_regular: List[str] = []
  for pattern in patterns:
    try:
      matched = FileSystems.match([_matchable(pattern)])[0].metadata_list
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"input.pattern: expected a readable glob. Received: {pattern!r}"
          f" ({describe_error(e)})") from None
    if not matched:
      raise ConfigError(f"input.pattern: no file matches {pattern!r}")
    _refuse_a_directory(pattern, matched)
    ticker = progress.Ticker(f"checking the files {pattern!r} matched",
                             len(matched), clock=clock)
    for done, path in enumerate(sorted(m.path for m in matched)):
      ticker.tick(done)
      _refuse_undecodable_name(pattern, path)
      key = path if _is_remote(path) else os.path.realpath(path)
      if key in seen:
        continue
      seen.add(key)
      (files if _is_regular(path) else not_regular).append(path)
  _refuse_inputs_in_outputs(files + not_regular, output_dir, clock)
  return InputFiles(tuple(files), tuple(not_regular))


def _refuse_a_directory(pattern: str, matched: Sequence[Any]) -> None:
  """Refuses a pattern that matches only one local directory: its files, as
  a Parquet dataset's folder holds them, are what was meant."""
  if len(matched) != 1 or _is_remote(matched[0].path):
    return
  path = matched[0].path
  if os.path.isdir(path):
    raise ConfigError(
        f"input.pattern: expected a glob of files. Received: {pattern!r},"
        f" which matches only the directory {path!r}; did you mean"
        f" {os.path.join(path, '*')!r}?")


def _refuse_undecodable_name(pattern: str, path: str) -> None:
  """Refuses a matched file whose name is not UTF-8 (Python holds its bad
  bytes as lone surrogates, which Beam cannot encode)."""
  try:
    path.encode("utf-8")
  except UnicodeEncodeError:
    shown = os.fsencode(path) if not _is_remote(path) else path.encode(
        "utf-8", "backslashreplace")
    raise ConfigError(
        f"input.pattern: expected file names that are valid UTF-8; {pattern!r}"
        f" matches one that is not. Received: {shown!r}") from None


def check_model_paths(groups: Sequence[Sequence[str]]) -> None:
  """Refuses a local model path that does not exist, before TensorFlow
  loads (a remote one is found missing when it is copied to load it).

  Args:
    groups: each fold's model paths, one a checkpoint
      (`ModelConfig.path_groups`).

  Raises:
    ConfigError: naming `model.path` and the first missing path.
  """
  for path in (p for group in groups for p in group):
    if not _is_remote(path) and not os.path.exists(path):
      raise ConfigError(
          f"model.path: expected a .keras file or a SavedModel directory."
          f" Received: {path!r} (no such file or directory)")


def _is_regular(path: str) -> bool:
  """Whether `path` is a regular file; objects in a bucket always are."""
  if _is_remote(path):
    return True
  try:
    return stat.S_ISREG(os.stat(path).st_mode)
  except OSError:
    return True  # Gone or unreadable: reading it dead-letters it, saying why.


def _refuse_globs_over_output(patterns: Sequence[str],
                              output_dir: str) -> None:
  """Refuses a glob that could match what a run writes in `output_dir`."""
  samples = [f"{base.rstrip('/')}/{name}".rstrip("/")
             for base in _spellings(output_dir) for name in _OUTPUT_SAMPLES]
  for pattern in patterns:
    regex = re.compile(FileSystem.translate_pattern(_absolute(pattern)))
    hit = next((s for s in samples if regex.match(s)), None)
    if hit is not None:
      raise ConfigError(
          f"input.pattern: {pattern!r} can match lossaudit's own outputs in"
          f" output.dir ({hit!r}); expected input and output that do not"
          f" overlap. Received: output.dir={output_dir!r}")


def _refuse_inputs_in_outputs(paths: Sequence[str], output_dir: str,
                              clock: Callable[[], float]) -> None:
  """Refuses matched files under `output_dir`, or under any directory that
  holds lossaudit's marker (an earlier run's outputs)."""
  bases = [b.rstrip("/") + "/" for b in _spellings(output_dir)]
  owners: Dict[str, Optional[str]] = {}
  ticker = progress.Ticker("checking where the input files are",
                           len(paths), clock=clock)
  for done, path in enumerate(paths):
    ticker.tick(done)
    where = _spellings(path)[-1]
    if any(w.startswith(b) for w in _spellings(path) for b in bases):
      raise ConfigError(
          f"input.pattern: matches {path!r}, inside output.dir; expected"
          f" input and output that do not overlap. Received:"
          f" output.dir={output_dir!r}")
    owner = _owner(_parent(where), owners)
    if owner is not None and not _CLEAN_COPY.fullmatch(
        where[len(owner):].lstrip("/")):
      raise ConfigError(
          f"input.pattern: matches {path!r}, written by an earlier lossaudit"
          f" run ({owner!r} holds {MARKER}); a run never reads lossaudit's"
          " outputs. Expected a glob over the dataset only")


def _owner(directory: str, cache: Dict[str, Optional[str]]) -> Optional[str]:
  """The nearest directory at or above `directory` that holds the marker."""
  if not directory:
    return None
  if directory not in cache:
    marked = FileSystems.exists(outputs.join(directory, MARKER))
    cache[directory] = directory if marked else _owner(_parent(directory),
                                                       cache)
  return cache[directory]


def _parent(path: str) -> str:
  """The directory holding `path`; "" above a bucket or filesystem root."""
  if _is_remote(path):
    scheme, _, rest = path.partition("://")
    rest = rest.rstrip("/")
    return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else ""
  parent = os.path.dirname(path.rstrip("/") or "/")
  return "" if parent == path else parent
