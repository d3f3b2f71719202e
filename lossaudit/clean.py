"""The cleaned dataset: the input's own records, less the flagged ones.

The dataset is never shuffled. Each scored row carries its source file and
its position there (`__source__`, `__position__`: the record's index in a
TFRecord file, the row's in a Parquet file, known at read time). The flag
pass gives, per batch, a `FileMarks` of each source: the positions scored
(as `[start, stop)` ranges, a few per batch), those dropped, and those
relabelled with their suggested label. Marks are merged per file (small:
ranges and the flagged positions), and each input file is then read once
more and written to `clean/` with exactly the scored positions that were
not dropped: dead-lettered records were never scored, so they are never
there.

Which flags drop a row (`drop_actions`): any of `drop_reasons`; with
`relabel`, `label_issue` does not drop, and a label issue that nothing else
drops is kept with its suggested label.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lossaudit.decisions import DecisionCounts
from lossaudit.rules.label_issue import REASON as LABEL_ISSUE


def ranges_of(positions: np.ndarray) -> np.ndarray:
  """`(R, 2)` int64 `[start, stop)` runs of consecutive `positions` `(N,)`
  (any order, repeats allowed)."""
  values = np.unique(np.asarray(positions, np.int64))
  if not len(values):
    return np.zeros((0, 2), np.int64)
  breaks = np.flatnonzero(np.diff(values) != 1) + 1
  starts = values[np.concatenate([[0], breaks])]
  stops = values[np.concatenate([breaks - 1, [len(values) - 1]])] + 1
  return np.stack([starts, stops], axis=1)


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
  """`(R, 2)` ranges, sorted, with overlapping or touching ones joined."""
  if len(ranges) < 2:
    return np.asarray(ranges, np.int64).reshape(-1, 2)
  ranges = ranges[np.argsort(ranges[:, 0], kind="stable")]
  reach = np.maximum.accumulate(ranges[:, 1])
  starts = np.concatenate([[True], ranges[1:, 0] > reach[:-1]])
  first = np.flatnonzero(starts)
  last = np.concatenate([first[1:] - 1, [len(ranges) - 1]])
  return np.stack([ranges[first, 0], reach[last]], axis=1)


def in_ranges(positions: np.ndarray, ranges: np.ndarray) -> np.ndarray:
  """`(N,)` bool: each position within one of the sorted, disjoint
  `ranges`."""
  if not len(ranges):
    return np.zeros(len(positions), bool)
  at = np.searchsorted(ranges[:, 0], positions, side="right") - 1
  return (at >= 0) & (positions < ranges[np.maximum(at, 0), 1])


@dataclasses.dataclass
class FileMarks:
  """What the cleaned copy of one input file keeps.

  Attributes:
    scored: `(R, 2)` int64 sorted, disjoint `[start, stop)` ranges of the
      positions scored.
    dropped: `(D,)` int64 positions dropped (each scored).
    relabelled: `(L,)` int64 positions kept with a new label.
    labels: `(L,)` int64 their suggested labels.
  """

  scored: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0, 2), np.int64))
  dropped: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))
  relabelled: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))
  labels: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))

  def merge(self, other: "FileMarks") -> "FileMarks":
    return FileMarks(
        merge_ranges(np.concatenate([self.scored, other.scored])),
        np.concatenate([self.dropped, other.dropped]),
        np.concatenate([self.relabelled, other.relabelled]),
        np.concatenate([self.labels, other.labels]))

  @property
  def num_scored(self) -> int:
    return int((self.scored[:, 1] - self.scored[:, 0]).sum())

  def kept(self, positions: np.ndarray) -> np.ndarray:
    """`(N,)` bool: which of `positions` `(N,)` the clean copy holds."""
    return in_ranges(positions, self.scored) & ~np.isin(positions,
                                                        self.dropped)

  def new_labels(self, positions: np.ndarray) -> Dict[int, int]:
    """`{index in positions: suggested label}` of the relabelled ones."""
    hit = np.flatnonzero(np.isin(positions, self.relabelled))
    if not len(hit):
      return {}
    label_of = dict(zip(self.relabelled.tolist(), self.labels.tolist()))
    return {int(i): label_of[int(positions[i])] for i in hit}


class Actions(NamedTuple):
  """What becomes of the flagged rows of a batch.

  Attributes:
    dropped: `(F,)` bool, the rows left out of `clean/`.
    relabelled: `(F,)` bool, the rows kept with their suggested label.
  """

  dropped: np.ndarray
  relabelled: np.ndarray


def drop_actions(reasons: pa.ListArray, drop_reasons: Sequence[str],
                 relabel: bool, confident: Optional[np.ndarray] = None
                 ) -> Actions:
  """The `Actions` of F flagged rows from their `reasons` (list<string>).

  A row is dropped when one of its reasons is in `drop_reasons`. With
  `relabel`, a label issue that no other of them drops is relabelled where
  `confident` `(F,)` (the model's probability of the suggested label is
  high enough; None: everywhere), and otherwise follows `drop_reasons`.
  """
  n = len(reasons)
  sure = np.ones(n, bool) if confident is None else np.asarray(confident)
  counted = [r for r in drop_reasons if not (relabel and r == LABEL_ISSUE)]
  flat = reasons.flatten()
  rows = pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False)

  def rows_with(values: Sequence[str]) -> np.ndarray:
    hit = np.zeros(n, bool)
    if values and len(flat):
      mask = pc.is_in(flat, value_set=pa.array(list(values), pa.string()))
      hit[rows[mask.to_numpy(zero_copy_only=False)]] = True
    return hit

  dropped = rows_with(counted)
  if not relabel:
    return Actions(dropped, np.zeros(n, bool))
  issues = rows_with([LABEL_ISSUE]) & ~dropped
  if LABEL_ISSUE in drop_reasons:
    dropped |= issues & ~sure
  return Actions(dropped, issues & sure)


def file_marks(positions: np.ndarray, flagged_rows: np.ndarray,
               actions: Actions, suggested: Optional[np.ndarray]
               ) -> FileMarks:
  """The `FileMarks` of one source's scored rows.

  Args:
    positions: `(N,)` the rows' positions in their file.
    flagged_rows: `(F,)` int indices into `positions` of the flagged rows.
    actions: their `Actions`.
    suggested: `(F,)` their suggested labels (needed when any is
      relabelled).
  """
  picked = np.asarray(positions, np.int64)[flagged_rows]
  relabelled = picked[actions.relabelled]
  labels = (np.zeros(0, np.int64) if not len(relabelled) else
            np.asarray(suggested, np.int64)[actions.relabelled])
  return FileMarks(ranges_of(positions), picked[actions.dropped], relabelled,
                   labels)


@dataclasses.dataclass
class CleanCounts:
  """`clean` in `summary.json`.

  Attributes:
    kept: records written to `clean/`.
    dropped: scored records left out.
    relabelled: records written with their suggested (or decided) label.
    files: files written.
    decisions: with decisions in force (`output.clean.decisions`, or the
      baseline's), what became of them; else None.
  """

  kept: int = 0
  dropped: int = 0
  relabelled: int = 0
  files: int = 0
  decisions: Optional[DecisionCounts] = None

  def merge(self, other: "CleanCounts") -> "CleanCounts":
    decided = [d for d in (self.decisions, other.decisions) if d is not None]
    return CleanCounts(
        self.kept + other.kept, self.dropped + other.dropped,
        self.relabelled + other.relabelled, self.files + other.files,
        functools.reduce(DecisionCounts.merge, decided) if decided else None)

  def to_dict(self) -> Dict[str, Any]:
    found = {"kept": self.kept, "dropped": self.dropped,
             "relabelled": self.relabelled, "files": self.files}
    if self.decisions is not None:
      found.update(self.decisions.to_dict())
    return found


# Bytes of a file name under `clean/` (file systems allow 255), leaving room
# for the `.tmp-xxxxxxxx` suffix of the file being written.
CLEAN_NAME_BYTES = 240


def _split_extension(name: str) -> Tuple[str, str]:
  """`part-0`, `.tfrecord.gz` of `part-0.tfrecord.gz` (an extension of at
  most 24 characters, from the first dot after the first character)."""
  dot = name.find(".", 1)
  if dot > 0 and len(name) - dot <= 24:
    return name[:dot], name[dot:]
  return name, ""


def _digest(text: str) -> str:
  return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def clean_names(sources: Sequence[str]) -> Dict[str, str]:
  """The name under `clean/` of each input file: its own file name, so
  that `clean/` reads as the dataset did and a cleaned dataset audited
  again keeps its names night after night.

  Two inputs with one file name (`a/part-0.parquet`, `b/part-0.parquet`)
  each get `-` and 8 hex digits of a hash of their whole path before the
  extension, stable from run to run. A name too long for a file system
  keeps its start and extension around a hash of the whole name.
  """
  own = {source: source.rstrip("/").rsplit("/", 1)[-1] for source in sources}
  found = {source: _fitting(name) for source, name in own.items()}
  # Suffixed names are stretched until no two inputs share one: a suffixed
  # name may be another input's own (`d-167bf55b.parquet`, a cleaned file
  # fed back in beside new data).
  for digits in (8, 16, 40):
    shared = collections.Counter(found.values())
    if len(shared) == len(found):
      break
    for source, name in found.items():
      if shared[name] > 1:
        stem, extension = _split_extension(own[source])
        found[source] = _fitting(
            f"{stem}-{_digest(source)[:digits]}{extension}")
  if len(set(found.values())) != len(found):  # Only for equal paths.
    raise ValueError(f"clean_names: two inputs share a path: {sources}")
  return found


def _fitting(name: str) -> str:
  """`name`, or when too long for a file system its start and extension
  around a hash of the whole name."""
  if len(name.encode("utf-8", "surrogateescape")) <= CLEAN_NAME_BYTES:
    return name
  stem, extension = _split_extension(name)
  room = CLEAN_NAME_BYTES - len(extension.encode()) - 13
  head = stem.encode("utf-8", "surrogateescape")[:room].decode(
      errors="ignore")
  return f"{head}-{_digest(name)[:12]}{extension}"


def relabelled_value(label: int, kind: str, width: int,
                     class_names: Optional[Tuple[str, ...]]):
  """A label as its column or feature holds it: `kind` `int`, `float`,
  `string` (a class name) or `one_hot` (`width` floats)."""
  if kind == "string":
    return class_names[label]
  if kind == "one_hot":
    return [1.0 if k == label else 0.0 for k in range(width)]
  return float(label) if kind == "float" else int(label)
