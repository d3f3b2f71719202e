"""Owning `output.dir`: a marker, a lock, and the only code that deletes.

A run deletes only what lossaudit wrote. Before anything is read, it claims
its output directory:

1. `.`, the home directory and filesystem roots (a bucket's root) are
   refused, always; so is a symbolic link at any path lossaudit writes
   there (`WRITTEN_PATHS`): a run never writes or deletes through a link.
2. The lock `.lossaudit-lock.json` is created atomically (local: an exclusive
   create; gs://: an object written with the precondition
   `ifGenerationMatch=0` through google-cloud-storage). It holds the run id,
   host, pid and start time. A second run is refused, naming the holder; a
   lock whose process is gone (same host) or older than `output.lock_timeout`
   is taken over with a warning.
3. A directory that holds anything but no marker `.lossaudit-run.json` (so
   files lossaudit did not write) is refused unless `output.overwrite: true`.

Once the pre-run checks pass, `Claim.clear_previous` deletes what earlier runs
wrote, chosen by name, never a whole directory: shards
`part-SSSSS-of-NNNNN.parquet|jsonl` in `losses/`, `flagged/` and
`dead_letter/`, Beam's temporary shard directories there, `summary.json`,
`report.html`, `drift.json` and their temporary names, and earlier runs'
scratch. A user's `losses/mine.py` survives even `overwrite: true`. Then it
writes the marker. `Claim.release` removes this run's scratch and the lock;
scratch lives under `.scratch/<run id>/`, so no run can delete another's.

A job on a remote runner (Dataflow, a Flex Template launch, a classic
template) claims its directory in its own first step (`RunInfo.in_job`), as
the job, not the process that launched it: the launcher only checks, with
`check_claimable`, and deletes nothing. While the job runs, its steps
refresh the lock (`refresh`), so a job longer than `output.lock_timeout` keeps
it; a job that fails leaves it to go stale, and its scratch to the next run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import time
import uuid
from typing import Callable, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from lossaudit import outputs
from lossaudit.errors import ConfigError, describe_error

MARKER = ".lossaudit-run.json"
LOCK = ".lossaudit-lock.json"
# Seconds a gs:// lock request may take, retries included: a run without
# usable credentials stops in seconds, not minutes.
GCS_DEADLINE = 8.0

_RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
_TEMPORARY = r"\.tmp-[0-9a-f]{8}"
_BEAM_TEMP = r"beam-temp-part-[0-9a-f]{32}"  # Beam's folder for a write.
# A file Beam writes there: `<uuid4>.<prefix's base name><suffix>`.
_BEAM_TEMP_FILE = (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                   r"[0-9a-f]{12}\.part(?:\.parquet|\.jsonl)?")
# Paths relative to `output.dir` that lossaudit writes, and nothing else.
_OWN = re.compile(
    rf"(?:{'|'.join(re.escape(n) for n in outputs.TOP_LEVEL_FILES)})"
    rf"(?:{_TEMPORARY})?"
    rf"|(?:{'|'.join(re.escape(k) for k in outputs.SHARD_DIRS)})/"
    r"(?:part-\d{5}-of-\d{5}\.(?:parquet|jsonl)"
    rf"|{_BEAM_TEMP}/{_BEAM_TEMP_FILE})"
    # Earlier versions' names in `clean/`; today's are listed in
    # `outputs.CLEAN_MANIFEST` (see `clean_files`).
    rf"|{re.escape(outputs.CLEAN)}/part-\d{{5}}-of-\d{{5}}-[^/]+"
    rf"|{re.escape(outputs.SCRATCH)}/{_RUN_ID}/.+")


def is_own_output(relative: str) -> bool:
  """Whether `relative` (a path under `output.dir`) is a name lossaudit
  writes."""
  return _OWN.fullmatch(relative) is not None


def _pid_namespace() -> str:
  """This process's PID namespace (`pid:[4026531836]` on Linux; "" where
  there is none to read): a pid means a process only inside it."""
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return ""


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """Who holds a lock, or wrote a marker."""

  run_id: str
  host: str
  pid: int
  started: float  # Seconds since the epoch.
  pid_namespace: str = ""
  # Held by a job's workers (`claim(in_job=True)`): its pid tells nothing
  # of the job, and only the timeout, from the last refresh, frees it.
  in_job: bool = False
  refreshed: float = 0.0  # When the job last refreshed it (epoch seconds).

  @classmethod
  def this_process(cls, run_id: str, started: float,
                   in_job: bool = False) -> "RunInfo":
    return cls(run_id, socket.gethostname(), os.getpid(), started,
               _pid_namespace(), in_job)

  def to_json(self) -> bytes:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
    found = {"run_id": self.run_id, "host": self.host, "pid": self.pid,
             "pid_namespace": self.pid_namespace, "started": self.started,
             "started_utc": started}
    if self.in_job:
      found["in_job"] = True
    if self.in_job or self.refreshed:
      found["refreshed"] = self.refreshed
    return json.dumps(found, indent=2).encode("utf-8")

  @classmethod
  def from_json(cls, data: bytes) -> Optional["RunInfo"]:
    """The holder a lock file names; None when it cannot be read (being
    written, or damaged)."""
    try:
      found = json.loads(data.decode("utf-8"))
      holder = cls(str(found["run_id"]), str(found["host"]),
                   int(found["pid"]), float(found["started"]),
                   str(found.get("pid_namespace", "")),
                   found.get("in_job", False) is True,
                   float(found.get("refreshed", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
      return None
    if not (0 < holder.pid < 1 << 31 and 0 <= holder.started < 1e11
            and 0 <= holder.refreshed < 1e11):
      return None  # Not a time or a pid: as unreadable as garbage.
    return holder

  @property
  def last_seen(self) -> float:
    """When the holder last said it was alive (started or refreshed)."""
    return max(self.started, self.refreshed)

  def describe(self) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
    return (f"run {self.run_id} (host {self.host}, pid {self.pid}, started"
            f" {started})")


@dataclasses.dataclass(frozen=True)
class _Held:
  """A lock as found: its raw content, holder, and how to delete exactly
  that version of it."""

  data: bytes
  holder: Optional[RunInfo]
  written: float  # When the lock was written (file time), epoch seconds.
  version: object  # local: the bytes; gs://: the object generation.


class _LocalLock:
  """`DIR/.lossaudit-lock.json` on a local disk."""

  def __init__(self, directory: str):
    self.path = self.location = os.path.join(directory, LOCK)

  def create(self, data: bytes) -> bool:
    """Writes the lock if there is none; False when one exists."""
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    return True

  def read(self) -> Optional[_Held]:
    try:
      with open(self.path, "rb") as f:
        data = f.read()
        written = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
      return None
    return _Held(data, RunInfo.from_json(data), written, data)

  def delete(self, held: _Held) -> bool:
    """Deletes the lock if it is still `held`; False when it changed."""
    aside = f"{self.path}.{uuid.uuid4().hex}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    with open(aside, "rb") as f:
      same = f.read() == held.version
    if not same:  # Another run took it over first: put its lock back.
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
    os.remove(aside)
    return same

  def replace(self, held: _Held, data: bytes) -> bool:
    """Rewrites the lock with `data` if it is still `held`; False when it
    changed or went."""
    aside = f"{self.path}.{uuid.uuid4().hex}"
    with open(aside, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    current = self.read()
    if current is None or current.version != held.version:
      os.remove(aside)
      return False
    os.replace(aside, self.path)
    return True


class _GcsLock:
  """`gs://bucket/DIR/.lossaudit-lock.json`, through google-cloud-storage."""

  def __init__(self, directory: str):
    from google.api_core import exceptions, retry  # pylint: disable=g-import-not-at-top
    from google.cloud import storage  # pylint: disable=g-import-not-at-top

    self._exceptions = exceptions
    bucket, _, prefix = directory[len("gs://"):].partition("/")
    self._client = storage.Client()
    self._bucket = self._client.bucket(bucket)
    self._name = f"{prefix.rstrip('/')}/{LOCK}" if prefix else LOCK
    self._prefix = f"{prefix.rstrip('/')}/" if prefix else ""
    self.location = f"gs://{bucket}/{self._name}"
    self._retry = retry.Retry(deadline=GCS_DEADLINE, timeout=GCS_DEADLINE)

  def create(self, data: bytes) -> bool:
    # The precondition makes the create atomic on GCS. The GCS emulator
    # ignores it: looking first, and reading the lock back after, keep runs
    # there apart too, unless they start within milliseconds.
    if self.read() is not None:
      return False
    blob = self._bucket.blob(self._name)
    try:
      blob.upload_from_string(data, content_type="application/json",
                              if_generation_match=0, retry=self._retry,
                              timeout=GCS_DEADLINE)
    except self._exceptions.PreconditionFailed:
      return False
    found = self.read()
    return found is not None and found.data == data

  def read(self) -> Optional[_Held]:
    blob = self._bucket.get_blob(self._name, retry=self._retry,
                                 timeout=GCS_DEADLINE)
    if blob is None:
      return None
    try:
      data = blob.download_as_bytes(if_generation_match=blob.generation,
                                    retry=self._retry, timeout=GCS_DEADLINE)
    except (self._exceptions.NotFound, self._exceptions.PreconditionFailed):
      return None
    written = blob.time_created.timestamp() if blob.time_created else 0.0
    return _Held(data, RunInfo.from_json(data), written, blob.generation)

  def delete(self, held: _Held) -> bool:
    try:
      self._bucket.blob(self._name).delete(
          if_generation_match=held.version, retry=self._retry,
          timeout=GCS_DEADLINE)
    except (self._exceptions.NotFound, self._exceptions.PreconditionFailed):
      return False
    return True

  def replace(self, held: _Held, data: bytes) -> bool:
    try:
      self._bucket.blob(self._name).upload_from_string(
          data, content_type="application/json",
          if_generation_match=held.version, retry=self._retry,
          timeout=GCS_DEADLINE)
    except (self._exceptions.NotFound, self._exceptions.PreconditionFailed):
      return False
    return True

  def has_other_objects(self) -> bool:
    """Whether the directory holds anything but the marker, the lock and
    runs' scratch (a job's steps may write theirs before its claim step)."""
    names = {f"{self._prefix}{MARKER}", self._name}
    listing = self._client.list_blobs(
        self._bucket, prefix=self._prefix, delimiter="/", retry=self._retry,
        timeout=GCS_DEADLINE)
    for page in listing.pages:
      if any(blob.name not in names for blob in page):
        return True
      folders = {p[len(self._prefix):-1] for p in page.prefixes}
      if folders - {outputs.SCRATCH}:
        return True
    if f"{self._prefix}{outputs.SCRATCH}/" in listing.prefixes:
      return _gcs_scratch_is_foreign(self._client, self._bucket,
                                     f"{self._prefix}{outputs.SCRATCH}/",
                                     self._retry)
    return False


@contextlib.contextmanager
def _quiet_http_retries():
  """Without credentials that work, each retry of a token request logs a
  warning; the one-line error after them says it all."""
  logger = logging.getLogger("urllib3.connectionpool")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _is_gcs(directory: str) -> bool:
  return directory.startswith("gs://")


def _process_alive(holder: RunInfo) -> Optional[bool]:
  """Whether `holder`'s process still exists; None when this process cannot
  tell: another host, or another PID namespace (containers may share a host
  name and a disk, each with its own pids)."""
  if (holder.in_job or holder.host != socket.gethostname() or
      holder.pid_namespace != _pid_namespace()):
    return None
  try:
    os.kill(holder.pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def check_not_protected(directory: str) -> None:
  """Refuses `.`, the home directory and filesystem roots as `output.dir`.

  Raises:
    ConfigError: naming `output.dir`.
  """
  if _is_gcs(directory):
    bucket_root = not directory[len("gs://"):].partition("/")[2].strip("/")
    if bucket_root:
      raise ConfigError(
          "output.dir: expected a directory inside a bucket; a run never"
          f" takes a whole bucket. Received: {directory!r}")
    return
  if directory.startswith("~"):
    raise ConfigError(
        "output.dir: expected a path as it is; lossaudit does not expand '~'"
        " (write the home directory's path, or a path relative to the"
        f" current directory). Received: {directory!r}")
  path = os.path.realpath(directory)
  protected = {
      os.path.realpath(os.getcwd()): "the current directory",
      os.path.realpath(os.path.expanduser("~")): "the home directory",
  }
  what = protected.get(path)
  if what is None and os.path.dirname(path) == path:
    what = "a filesystem root"
  if what is not None:
    raise ConfigError(
        f"output.dir: expected a directory of its own; {directory!r} is"
        f" {what}, which a run never takes. Received: {directory!r}")


class Claim:
  """This run's hold on `output.dir`; see the module docstring.

  Use `claim()` to get one. `release()` is safe to call more than once.
  """

  def __init__(self, directory: str, run: RunInfo, lock,
               created: Optional[str]):
    self.directory = directory
    self.run = run
    self._lock = lock
    self._created = created  # The topmost directory the claim created.
    self._released = False
    # Whether the run's baseline is this directory's earlier run, whose
    # copy a run that does not complete, or fails its gates, keeps.
    self.keep_baseline_copy = False

  def clear_previous(self) -> List[str]:
    """Deletes the outputs of earlier runs (by name), not this run's
    scratch, and writes the marker.

    Returns:
      The paths deleted.
    """
    refuse_unsafe_paths(self.directory)  # One made since the claim.
    own_scratch = f"{outputs.SCRATCH}/{self.run.run_id}/"
    clean = [outputs.join(self.directory, outputs.CLEAN, name)
             for name in outputs.clean_manifest(self.directory)]
    clean = [path for path in clean if FileSystems.exists(path)]
    if clean:
      delete_files(clean)
      if not _is_gcs(self.directory):
        _remove_empty_dirs(os.path.dirname(clean[0]), self.directory)
    deleted = clean + remove_own_files(
        self.directory, lambda rel: not rel.startswith(own_scratch))
    outputs.write_text(outputs.join(self.directory, MARKER),
                       self.run.to_json().decode("utf-8") + "\n")
    return deleted

  def release(self) -> None:
    """Removes this run's scratch and its lock (only if still its own)."""
    if self._released:
      return
    self._released = True
    summary = outputs.join(self.directory, outputs.SUMMARY)
    passed = FileSystems.exists(summary) and outputs.gate_passed(summary)
    # A run stopped after it cleared its own baseline, or failing its
    # gates, keeps the copy (`outputs.kept_baseline`).
    keep = self.keep_baseline_copy and not passed
    remove_scratch(self.directory, self.run.run_id,
                   keep=outputs.KEPT_BASELINE if keep else None)
    held = self._lock.read()
    if held is not None and held.holder and (
        held.holder.run_id == self.run.run_id):
      self._lock.delete(held)
    if self._created:  # A failed set-up leaves no empty directories.
      _remove_empty_dirs(self.directory, os.path.dirname(self._created))


def claim(directory: str, run: RunInfo, *, overwrite: bool,
          lock_timeout: float,
          clock: Callable[[], float] = time.time) -> Claim:
  """Takes `directory` for `run`: refuses it, or locks it.

  Args:
    directory: `output.dir`, local or gs://.
    run: this run.
    overwrite: `output.overwrite`: take a non-empty directory without the
      marker (still deleting only lossaudit's own files).
    lock_timeout: seconds after which another run's lock is taken over.
    clock: the time now, in seconds since the epoch.

  Raises:
    ConfigError: a protected or foreign directory, another run's lock, or a
      location that cannot be written.
  """
  check_not_protected(directory)
  refuse_unsafe_paths(directory)
  _refuse_foreign(directory, overwrite)
  created = None
  try:
    if not _is_gcs(directory):
      created = _first_missing(directory)
      os.makedirs(directory, exist_ok=True)
    lock = _lock_for(directory)
    with _quiet_http_retries():
      _acquire(lock, run, lock_timeout, clock)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"output.dir: expected a writable location. Received:"
        f" {directory!r} ({describe_error(e)})") from None
  result = Claim(directory, run, lock, created)
  try:
    _refuse_foreign(directory, overwrite, lock)
  except ConfigError:
    result.release()
    raise
  return result


def _lock_for(directory: str):
  return _GcsLock(directory) if _is_gcs(directory) else _LocalLock(directory)


def _acquire(lock, run: RunInfo, lock_timeout: float,
             clock: Callable[[], float]) -> None:
  data = run.to_json()
  if lock.create(data):
    return
  held = lock.read()
  if held is None:  # Released between the two calls.
    if lock.create(data):
      return
    held = lock.read()
  if (run.in_job and held and held.holder
      and held.holder.run_id == run.run_id and lock.replace(held, data)):
    return  # The job's claim step, retried after it took the lock.
  reason = _stale(held, lock_timeout, clock) if held else None
  if reason and lock.delete(held) and lock.create(data):
    logging.warning("lossaudit: took over the lock on output.dir from %s:"
                    " %s", _who(held), reason)
    return
  raise _held_error(held)


def _who(held: Optional[_Held]) -> str:
  return (held.holder.describe() if held and held.holder else
          "a run whose lock cannot be read")


def _held_error(held: Optional[_Held]) -> ConfigError:
  return ConfigError(
      f"output.dir: expected no other run writing there; {_who(held)} holds"
      f" its lock {LOCK} (wait for it to end, or delete the lock if that run"
      " is dead)")


def check_claimable(directory: str, *, overwrite: bool, lock_timeout: float,
                    clock: Callable[[], float] = time.time) -> None:
  """What `claim` would refuse, checked without writing or deleting
  anything: what a launcher checks for the job that will claim
  `directory` itself (`claim(in_job=True)`).

  Raises:
    ConfigError: as `claim` does.
  """
  check_not_protected(directory)
  refuse_unsafe_paths(directory)
  _refuse_foreign(directory, overwrite)
  if not _is_gcs(directory) and not os.path.isdir(directory):
    _refuse_unwritable(directory)
    return
  try:
    lock = _lock_for(directory)
    with _quiet_http_retries():
      held = lock.read()
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"output.dir: expected a readable location. Received:"
        f" {directory!r} ({describe_error(e)})") from None
  if held is not None and _stale(held, lock_timeout, clock) is None:
    raise _held_error(held)
  _refuse_foreign(directory, overwrite, lock)


def _refuse_unwritable(directory: str) -> None:
  """Refuses a local `directory` that could not be made: its nearest
  existing ancestor is not a directory this process can write in.

  Raises:
    ConfigError: as `claim` words it.
  """
  path = os.path.abspath(directory)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  problem = None
  if not os.path.isdir(path):
    problem = f"{path!r} is not a directory"
  elif not os.access(path, os.W_OK | os.X_OK):
    problem = f"{path!r} cannot be written"
  if problem:
    raise ConfigError(
        f"output.dir: expected a writable location. Received:"
        f" {directory!r} ({problem})")


def refresh(directory: str, run_id: str, now: float,
            min_age: float = 0.0) -> bool:
  """Writes `now` into the lock of `directory` as its `refreshed` time, if
  run `run_id` holds it and last refreshed it (or took it) `min_age`
  seconds ago or more: the many workers of a job read the lock, and only
  the first to find it that old writes it.

  Returns:
    Whether the lock was refreshed (False: not held by that run, refreshed
    recently, or taken over in between).
  """
  lock = _lock_for(directory)
  held = lock.read()
  if held is None or held.holder is None or held.holder.run_id != run_id:
    return False
  if now - held.holder.last_seen < min_age:
    return False
  refreshed = dataclasses.replace(held.holder, refreshed=now)
  return lock.replace(held, refreshed.to_json())


def release_job(directory: str, run_id: str,
                keep_baseline_copy: bool = False) -> None:
  """What `Claim.release` does, for a job that ran on this machine and
  claimed `directory` itself (`claim(in_job=True)`), once it has ended
  (completed, failed or interrupted): removes run `run_id`'s scratch (but
  the baseline copy it keeps, as `Claim.release` does) and its lock, if it
  took it."""
  held = Claim(directory, RunInfo(run_id, "", 1, 0.0), _lock_for(directory),
               None)
  held.keep_baseline_copy = keep_baseline_copy
  held.release()


def release_lock(directory: str, run_id: str) -> None:
  """Deletes the lock of `directory` if run `run_id` holds it: the last
  step of a job that claimed its directory itself."""
  lock = _lock_for(directory)
  held = lock.read()
  if held is not None and held.holder and held.holder.run_id == run_id:
    lock.delete(held)


def _stale(held: _Held, lock_timeout: float,
           clock: Callable[[], float]) -> Optional[str]:
  """Why the lock `held` may be taken over; None when it may not."""
  holder = held.holder
  alive = _process_alive(holder) if holder else None
  if alive is False:
    return "its process is gone"
  # A run seen to be alive keeps its lock however long it takes; the
  # timeout is for holders this process cannot see.
  seen = holder.last_seen if holder else held.written
  if alive is None and clock() - seen > lock_timeout:
    if holder and holder.refreshed:
      return (f"its job last refreshed it more than output.lock_timeout"
              f" ({lock_timeout:g} s) ago")
    return f"it is older than output.lock_timeout ({lock_timeout:g} s)"
  return None


# Paths relative to `output.dir` that lossaudit writes through or reads
# back: none may be a symbolic link. A parent comes before its children.
WRITTEN_PATHS = (outputs.LABEL_ISSUES, *outputs.TOP_LEVEL_FILES, MARKER,
                 LOCK, outputs.SCRATCH, outputs.CLEAN,
                 *sorted(outputs.SHARD_DIRS, key=lambda k: k.count("/")))


# Of those, the folders (the rest are files).
_WRITTEN_FOLDERS = frozenset((outputs.LABEL_ISSUES, outputs.SCRATCH,
                              outputs.CLEAN, *outputs.SHARD_DIRS))


def refuse_unsafe_paths(directory: str) -> None:
  """Refuses a local `directory` where a folder or file that lossaudit
  writes (`WRITTEN_PATHS`) is a symbolic link (a run would write through
  it, over a file elsewhere, or into its own input), or is a file where
  lossaudit writes a folder, or the reverse (the run would fail when it
  came to write there, perhaps after hours). `directory` itself may be a
  link to a directory.

  Raises:
    ConfigError: naming the link and its target, or the path in the way.
  """
  if _is_gcs(directory):
    return
  for relative in WRITTEN_PATHS:
    path = os.path.join(directory, relative)
    if os.path.islink(path):
      try:
        target = os.readlink(path)
      except OSError as e:
        target = f"unreadable: {describe_error(e)}"
      raise ConfigError(
          "output.dir: expected no symbolic link where lossaudit writes (a"
          f" run never writes through one). Received: {path!r} -> {target!r}")
    folder = relative in _WRITTEN_FOLDERS
    if os.path.lexists(path) and os.path.isdir(path) != folder:
      raise ConfigError(
          f"output.dir: expected {'a folder' if folder else 'a file'} or"
          f" nothing at {path!r}, where lossaudit writes its"
          f" {'files' if folder else 'file'}. Received: a"
          f" {'file' if folder else 'folder'} (move it elsewhere)")


def _gcs_scratch_is_foreign(client, bucket, prefix: str, retry) -> bool:
  """Whether the gs:// `.scratch/` folder `prefix` holds anything but
  runs' folders."""
  listing = client.list_blobs(bucket, prefix=prefix, delimiter="/",
                              retry=retry, timeout=GCS_DEADLINE)
  for page in listing.pages:
    if any(True for _ in page) or any(
        not re.fullmatch(_RUN_ID, p[len(prefix):-1]) for p in page.prefixes):
      return True
  return False


def _only_folders_named(folder: str, pattern: str) -> bool:
  """Whether the local `folder` holds nothing but folders (no links) whose
  names match `pattern`."""
  if os.path.islink(folder) or not os.path.isdir(folder):
    return False
  return all(re.fullmatch(pattern, name)
             and not os.path.islink(os.path.join(folder, name))
             and os.path.isdir(os.path.join(folder, name))
             for name in os.listdir(folder))


def _written_before_a_claim(directory: str, name: str) -> bool:
  """Whether `name` in the local `directory` is what a job's own steps may
  write there before its claim step: runs' scratch folders, or a shard
  folder holding only Beam's temporary folders (a file sink makes its
  temporary folder as the job starts)."""
  folder = os.path.join(directory, name)
  if name == outputs.SCRATCH:
    return _only_folders_named(folder, _RUN_ID)
  return name in outputs.SHARD_DIRS and _only_folders_named(folder,
                                                            _BEAM_TEMP)


def _refuse_foreign(directory: str, overwrite: bool, lock=None) -> None:
  """Refuses a non-empty directory without the marker, unless `overwrite`."""
  if overwrite:
    return
  if _is_gcs(directory):
    if lock is None:
      return  # Checked once the lock (and its client) exists.
    foreign = lock.has_other_objects() and not FileSystems.exists(
        outputs.join(directory, MARKER))
  else:
    try:
      names = set(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
      return  # Creating it fails, or not, when the lock is taken.
    others = {name for name in names - {LOCK}
              if not _written_before_a_claim(directory, name)}
    foreign = bool(others) and MARKER not in names
  if foreign:
    raise ConfigError(
        "output.dir: holds files lossaudit did not write; choose a new or"
        " empty directory (or set output.overwrite: true, which still"
        f" deletes only lossaudit's own files). Received: {directory!r}")


# gs:// deletes go 100 to a batch request (Beam's GCS filesystem); this
# many batches at a time: a run's scratch is some 65 objects a bundle.
_DELETE_BATCH = 100
_DELETE_THREADS = 8


def delete_files(paths: Sequence[str]) -> None:
  """Deletes `paths` (files), gs:// ones in concurrent batch requests."""
  if len(paths) <= _DELETE_BATCH or not _is_gcs(paths[0]):
    if paths:
      FileSystems.delete(list(paths))
    return
  batches = [list(paths[i:i + _DELETE_BATCH])
             for i in range(0, len(paths), _DELETE_BATCH)]
  with concurrent.futures.ThreadPoolExecutor(_DELETE_THREADS) as pool:
    for done in pool.map(FileSystems.delete, batches):
      del done  # Raises what a batch raised.


def remove_own_files(directory: str,
                     which: Callable[[str], bool]) -> List[str]:
  """Deletes the files under `directory` that lossaudit writes and `which`
  accepts (by relative path); then the directories that this left empty,
  and Beam's empty temporary folders that `which` accepts (by relative path
  ending in `/`).

  Returns:
    The paths deleted.
  """
  local = not _is_gcs(directory)
  # os.walk enters no linked folder (followlinks=False); a link to a file
  # is listed, and deleting it deletes the link, not its target.
  doomed = [(p, rel) for p, rel in outputs.relative_files(directory)
            if is_own_output(rel) and which(rel) and not (
                local and _through_link(directory, os.path.dirname(rel)))]
  if doomed:
    delete_files([p for p, _ in doomed])
  if not _is_gcs(directory):
    # A run stopped before its first write leaves Beam's temporary
    # directory empty: no file names it, so it is found by its own name.
    parents = {os.path.dirname(p) for p, _ in doomed} | {
        os.path.join(directory, rel) for rel in _own_temp_dirs(directory)
        if which(rel + "/")}
    for parent in sorted(parents, key=len, reverse=True):
      _remove_empty_dirs(parent, directory)
  return [p for p, _ in doomed]


def remove_named(directory: str, relative: Sequence[str]) -> None:
  """Deletes the files `relative` to `directory` that another lossaudit
  command wrote and named itself (`lossaudit folds`' shards), then the
  local folders this left empty."""
  if not relative:
    return
  FileSystems.delete([outputs.join(directory, r) for r in relative])
  if not _is_gcs(directory):
    for folder in sorted({os.path.dirname(r) for r in relative} - {""}):
      _remove_empty_dirs(os.path.join(directory, folder), directory)


def _own_temp_dirs(directory: str) -> List[str]:
  """The Beam temporary directories of the shard folders of the local
  `directory`, relative to it."""
  found = []
  for kind in outputs.SHARD_DIRS:
    folder = os.path.join(directory, kind)
    if _through_link(directory, kind):
      continue  # Never into a linked folder.
    try:
      names = os.listdir(folder)
    except OSError:
      continue
    found += [f"{kind}/{name}" for name in names
              if re.fullmatch(_BEAM_TEMP, name)
              and not os.path.islink(os.path.join(folder, name))
              and os.path.isdir(os.path.join(folder, name))]
  return found


def _through_link(directory: str, relative: str) -> bool:
  """Whether `directory/relative` or a folder on the way (below
  `directory`) is a symbolic link."""
  path = directory
  for part in filter(None, relative.split("/")):
    path = os.path.join(path, part)
    if os.path.islink(path):
      return True
  return False


def _remove_empty_dirs(path: str, stop: str) -> None:
  """Removes `path` and its parents while they are empty, up to `stop`
  (excluded)."""
  path, stop = os.path.abspath(path), os.path.abspath(stop)
  while path != stop and path.startswith(stop + os.sep):
    try:
      os.rmdir(path)  # Only an empty one.
    except OSError:
      return
    path = os.path.dirname(path)


def _first_missing(directory: str) -> Optional[str]:
  """The topmost ancestor of `directory` (or itself) that does not exist."""
  missing = None
  path = os.path.abspath(directory)
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def remove_scratch(directory: str, run_id: str,
                   keep: Optional[str] = None) -> None:
  """Deletes the scratch files of run `run_id`, but those whose names
  start with `keep`."""
  prefix = f"{outputs.SCRATCH}/{run_id}/"
  kept = prefix + keep if keep else None
  remove_own_files(directory, lambda rel: rel.startswith(prefix) and not (
      kept and rel.startswith(kept)))
  if not _is_gcs(directory):  # Folders emptied by a move (the stage).
    own = os.path.join(directory, outputs.SCRATCH, run_id)
    for root, _, _ in sorted(os.walk(own), key=lambda w: -len(w[0])):
      _remove_empty_dirs(root, directory)
