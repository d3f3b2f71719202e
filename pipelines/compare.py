"""`lossaudit compare BASELINE_DIR CURRENT_DIR`: drift and quality gates.

Reads the two runs' `summary.json`, writes `drift.json` (into CURRENT_DIR
unless `--output` says otherwise) and exits 3 when a gate fails. The gates
are the current run's `gate:` config unless given here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import stat
import sys
import tempfile
import uuid
from typing import Callable, Dict, List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit import drift, outputs, ownership
from lossaudit.config import GateConfig
from lossaudit.errors import ConfigError, describe_error, short_repr
from lossaudit.history import HistoryCounts

_PLAIN = CompressionTypes.UNCOMPRESSED

# lossaudit's own file names that --output must not take (drift.json is what
# it writes).
RESERVED_OUTPUTS = (outputs.SUMMARY, outputs.REPORT, ownership.MARKER,
                    ownership.LOCK)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="lossaudit compare",
      description="Compare a run with a baseline run; exit 3 when a gate"
      " fails.")
  parser.add_argument("baseline", metavar="BASELINE_DIR",
                      help="output.dir of the earlier run")
  parser.add_argument("current", metavar="CURRENT_DIR",
                      help="output.dir of the run to check")
  parser.add_argument("--max-flagged-fraction", type=float, default=None,
                      help="fail when flagged.total / examples_scored"
                      " exceeds it (default: the current run's gate config)")
  parser.add_argument("--max-quantile-shift", type=float, default=None,
                      help="fail when a loss quantile moves by more than this"
                      " fraction (default: the current run's gate config)")
  parser.add_argument("--max-new-flagged-fraction", type=float,
                      default=None, help="fail when flags the baseline did"
                      " not have, over examples_scored, exceed it (default:"
                      " the current run's gate config)")
  parser.add_argument("--max-regression-fraction", type=float,
                      default=None, help="fail when new flags on ids the"
                      " baseline scored, over the ids both scored, exceed it"
                      " (default: the current run's gate config; measured"
                      " only when CURRENT_DIR was run against BASELINE_DIR)")
  parser.add_argument("--shift-quantiles", type=float, nargs="+",
                      default=None, help="the quantiles --max-quantile-shift"
                      " watches (default: the current run's gate config, or"
                      " all)")
  parser.add_argument("--output", default=None,
                      help="where to write drift.json (default:"
                      " CURRENT_DIR/drift.json)")
  return parser.parse_args(argv)


def compare_runs(args: argparse.Namespace) -> dict:
  """The drift document of `args.current` against `args.baseline`.

  Raises:
    ConfigError: a directory without a complete run, or a bad gate value.
  """
  baseline = outputs.read_summary(args.baseline, "BASELINE_DIR")
  current = outputs.read_summary(args.current, "CURRENT_DIR")
  id_column = current.get("config", {}).get("input", {}).get("id_column")
  for key, directory, summary in (("BASELINE_DIR", args.baseline, baseline),
                                  ("CURRENT_DIR", args.current, current)):
    outputs.check_flagged_outputs(
        key, directory, summary,
        outputs.shard_files(directory, outputs.FLAGGED), id_column)
  configured = current.get("config", {}).get("gate", {})
  gate = GateConfig(
      max_flagged_fraction=_pick(args.max_flagged_fraction,
                                 configured.get("max_flagged_fraction")),
      max_quantile_shift=_pick(args.max_quantile_shift,
                               configured.get("max_quantile_shift")),
      shift_quantiles=_pick(args.shift_quantiles,
                            configured.get("shift_quantiles")),
      max_new_flagged_fraction=_pick(
          args.max_new_flagged_fraction,
          configured.get("max_new_flagged_fraction")),
      max_regression_fraction=_pick(
          args.max_regression_fraction,
          configured.get("max_regression_fraction")))
  if args.shift_quantiles is not None or (
      gate.max_quantile_shift is not None and gate.shift_quantiles):
    key = ("--shift-quantiles" if args.shift_quantiles is not None else
           "gate.shift_quantiles")
    check_shift_quantiles(key, gate.shift_quantiles, baseline, current)
  recorded = (current.get("flag_history") or {}).get("baseline")
  if recorded is None or recorded.rstrip("/") != args.baseline.rstrip("/"):
    counts = history_of_dirs(args.baseline, baseline, args.current, current)
    flagged = {k: v for k, v in current["flagged"].items()
               if k not in HistoryCounts().to_dict()}
    # New rows and regressions are told apart by `lossaudit run` only.
    current = dict(current, flagged=dict(
        flagged, **(counts.to_dict(ids_known=False) if counts else {})))
  return drift.compare(
      current, baseline, max_flagged_fraction=gate.max_flagged_fraction,
      max_quantile_shift=gate.max_quantile_shift,
      shift_quantiles=gate.shift_quantiles,
      max_new_flagged_fraction=gate.max_new_flagged_fraction,
      max_regression_fraction=gate.max_regression_fraction,
      current_dir=args.current, baseline_dir=args.baseline)


def _ids(files: Sequence[str]) -> pa.ChunkedArray:
  """The `id` column of Parquet `files`."""
  chunks = []
  for path in files:
    with FileSystems.open(path, compression_type=_PLAIN) as f:
      chunks += pq.read_table(f, columns=["id"]).column("id").chunks
  return pa.chunked_array(chunks, pa.string())


def history_of_dirs(baseline_dir: str, baseline: Dict, current_dir: str,
                    current: Dict) -> Optional[HistoryCounts]:
  """New, persistent and resolved flags of two runs' outputs, by id.

  A run made with another baseline (or none) has no history against this
  one, so it is worked out here from the `flagged/` ids of both runs and
  the current `losses/` ids (read one file at a time against the baseline's
  flagged ids; without `losses/`, no flag counts as resolved). None when a
  run with flags has no `flagged/` files.
  """
  files = [outputs.shard_files(baseline_dir, outputs.FLAGGED),
           outputs.shard_files(current_dir, outputs.FLAGGED)]
  if any(not found and summary["flagged"]["total"]
         for found, summary in zip(files, (baseline, current))):
    return None
  base = pc.unique(_ids(files[0]))
  now = _ids(files[1])
  in_base = pc.is_in(now, value_set=base)
  persistent = int(pc.sum(in_base).as_py() or 0)
  gone = pc.filter(base, pc.invert(pc.is_in(base, value_set=pc.unique(now))))
  scored = 0
  for path in outputs.shard_files(current_dir, outputs.LOSSES):
    ids = _ids([path])
    hit = pc.unique(pc.filter(ids, pc.is_in(ids, value_set=gone)))
    gone = pc.filter(gone, pc.invert(pc.is_in(gone, value_set=hit)))
    scored += len(hit)
  return HistoryCounts(new=len(now) - persistent, persistent=persistent,
                       resolved=scored, not_scored=len(gone))


def _pick(given, configured):
  return configured if given is None else given


def _quantiles(summary: Dict) -> List[float]:
  """The loss quantiles in a summary (its keys are strings such as "0.99")."""
  found = []
  for key in summary["loss"]["quantiles"]:
    try:
      found.append(float(key))
    except (TypeError, ValueError):
      pass
  return found


def check_shift_quantiles(key: str, shift_quantiles: Sequence[float],
                          baseline: Dict, current: Dict) -> None:
  """Refuses a watched quantile outside [0, 1] or missing from either
  summary: the gate would watch nothing and pass with value None.

  Raises:
    ConfigError: naming `key` and the quantiles both runs have.
  """
  both = sorted(set(_quantiles(baseline)) & set(_quantiles(current)))
  if not all(0 <= q <= 1 and q in both for q in shift_quantiles):
    raise ConfigError(
        f"{key}: expected quantiles in [0, 1] that both runs computed"
        f" {both}. Received: {short_repr(list(shift_quantiles))}")


# A drift.json is a few kilobytes; a larger file is not one, and is not
# read to find out.
_MAX_DRIFT_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class OutputKind:
  """What a command writes to its `--output`, as its messages name it.

  Attributes:
    name: the file, in "a file path for {name}" (`drift.json`).
    ours: one such file, in "a new file, or {ours} lossaudit wrote".
    command: the command, in "{command} does not overwrite it".
    is_ours: whether the file at a path is one lossaudit wrote (and may be
      replaced); it is never given a file over `max_bytes`.
    max_bytes: the size over which a file is not one (None: any size).
  """

  name: str
  ours: str
  command: str
  is_ours: Callable[[str], bool]
  max_bytes: Optional[int] = None


def check_output(path: str, kind: Optional[OutputKind] = None) -> None:
  """Refuses an --output that is a directory, one of lossaudit's own files
  (a run's summary.json, report.html, marker or lock), an existing file
  that is not a drift.json (or `kind`'s file), anything but a regular file
  (a FIFO, device, socket or symbolic link: its type is read with `lstat`,
  and it is never opened), or a local location that cannot be written.

  Raises:
    ConfigError: naming --output.
  """
  kind = kind or DRIFT_OUTPUT
  if not path:
    raise ConfigError(f"--output: expected a file path for {kind.name}."
                      " Received: '' (an empty path)")
  if path.endswith("/") or (
      not path.startswith("gs://") and os.path.isdir(path)):
    raise ConfigError(f"--output: expected a file path for {kind.name}."
                      f" Received: {short_repr(path)} (a directory)")
  name = path.rsplit("/", 1)[-1]
  if name in RESERVED_OUTPUTS:
    raise ConfigError(
        f"--output: expected a file name other than lossaudit's own outputs"
        f" {list(RESERVED_OUTPUTS)}. Received: {short_repr(path)}")
  if FileSystems.get_scheme(path):
    exists = FileSystems.exists(path)
  else:
    exists = _check_local_output(path, kind)
  if exists and not kind.is_ours(path):
    raise ConfigError(
        f"--output: expected a new file, or {kind.ours} lossaudit wrote:"
        f" the file there is something else, and {kind.command} does not"
        f" overwrite it. Received: {short_repr(path)}")


def _check_local_output(path: str, kind: OutputKind) -> bool:
  """Whether the local `path` exists as a regular file that may be
  `kind`'s; refuses any other file type, and a location where no file can
  be created.

  Raises:
    ConfigError: naming --output.
  """
  try:
    found = os.lstat(path)
  except FileNotFoundError:
    found = None
  except OSError as e:  # A parent that is a file, no search permission.
    raise _unwritable(path, e, kind=kind) from None
  if found is not None:
    if not stat.S_ISREG(found.st_mode):
      raise ConfigError(
          f"--output: expected a new file, or {kind.ours} lossaudit wrote:"
          " the path is not a regular file (a FIFO, device, socket or"
          f" symbolic link), which {kind.command} never opens or replaces."
          f" Received: {short_repr(path)}")
    if kind.max_bytes is not None and found.st_size > kind.max_bytes:
      raise ConfigError(
          f"--output: expected a new file, or {kind.ours} lossaudit wrote:"
          f" the file there is {found.st_size} bytes, not {kind.ours}, and"
          f" {kind.command} does not overwrite it."
          f" Received: {short_repr(path)}")
  # The folder that will hold it: the nearest one that exists must be a
  # directory this process can create a file in.
  folder = os.path.dirname(os.path.abspath(path))
  while not os.path.lexists(folder):
    folder = os.path.dirname(folder)
  try:
    fd, probe = tempfile.mkstemp(prefix=".lossaudit-probe-", dir=folder)
  except OSError as e:
    raise _unwritable(path, e, kind=kind) from None
  os.close(fd)
  os.remove(probe)
  return found is not None


def _unwritable(path: str, error: OSError, key: str = "--output",
                kind: Optional[OutputKind] = None) -> ConfigError:
  why = error.strerror or describe_error(error)
  name = (kind or DRIFT_OUTPUT).name
  return ConfigError(f"{key}: expected a location where {name} can"
                     f" be written. Received: {short_repr(path)} ({why})")


def write_output(path: str, found: dict, key: str = "--output") -> None:
  """Writes the drift document to `path` whole or not at all: a failed
  write leaves no temporary file behind.

  Raises:
    ConfigError: naming `key` (--output, or CURRENT_DIR for its
      drift.json), when `path` cannot be written.
  """
  text = json.dumps(found, indent=2, sort_keys=False) + "\n"
  write_file(path, text.encode("utf-8"), key)


def write_file(path: str, data: bytes, key: str = "--output",
               kind: Optional[OutputKind] = None) -> None:
  """Writes `data` to `path` whole or not at all, through a temporary name
  renamed over it (`outputs.write_bytes` on gs://): a failed write leaves
  no temporary file behind.

  Raises:
    ConfigError: naming `key` when `path` cannot be written.
  """
  name = (kind or DRIFT_OUTPUT).name
  if FileSystems.get_scheme(path):
    try:
      outputs.write_bytes(path, data, "text/plain")
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f"{key}: expected a location where {name} can be written."
          f" Received: {short_repr(path)} ({describe_error(e)})") from None
    return
  folder = os.path.dirname(os.path.abspath(path))
  temporary = None
  try:
    os.makedirs(folder, exist_ok=True)
    base = f"{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}"
    fd = os.open(os.path.join(folder, base),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    temporary = os.path.join(folder, base)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(temporary, path)  # Never opens what is at `path`.
    temporary = None
  except OSError as e:
    raise _unwritable(path, e, key, kind) from None
  finally:
    if temporary is not None:
      with contextlib.suppress(OSError):
        os.remove(temporary)


def _is_drift_document(path: str) -> bool:
  try:
    found = outputs.read_json(path)
  except Exception:  # pylint: disable=broad-except
    return False
  return isinstance(found, dict) and _DRIFT_KEYS <= set(found)


_DRIFT_KEYS = {"baseline", "current", "quantiles", "flagged_rate"}

DRIFT_OUTPUT = OutputKind("drift.json", "a drift.json", "compare",
                          _is_drift_document, _MAX_DRIFT_BYTES)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point; returns 0, 2 (bad input) or 3 (gate failed)."""
  args = parse_args(argv)
  try:
    if args.output is not None:
      check_output(args.output)
    found = compare_runs(args)
  except ConfigError as e:
    print(f"lossaudit: error: compare: {e}", file=sys.stderr)
    return 2
  path = args.output or outputs.join(args.current, outputs.DRIFT)
  try:
    write_output(path, found,
                 "--output" if args.output else "CURRENT_DIR")
  except ConfigError as e:
    print(f"lossaudit: error: compare: {e}", file=sys.stderr)
    return 2
  rate = found["flagged_rate"]
  print(f"lossaudit: flagged rate {rate['baseline']:.4%} ->"
        f" {rate['current']:.4%}")
  shifts = {q: d["shift"] for q, d in found["quantiles"].items()
            if d["shift"] is not None}
  if shifts:
    worst = max(shifts, key=shifts.get)
    print(f"lossaudit: largest quantile shift: q{worst} moved"
          f" {shifts[worst]:.2%}")
  flags = found["flag_history"]
  if flags:
    print(f"lossaudit: flags: {flags['new']} new, {flags['persistent']}"
          f" persistent, {flags['resolved']} resolved")
  for g in found["gates"]:
    verdict = "passed" if g["passed"] else "FAILED"
    print(f"lossaudit: gate {g['gate']}: {verdict}"
          f" (value {g['value']}, limit {g['limit']})")
  print(f"lossaudit: wrote {path}")
  if not found["passed"]:
    print("lossaudit: " + "\nlossaudit: ".join(drift.failed_gates(found)),
          file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(main())
