"""Decisions that stick: a reviewer's `keep`, `drop` or `relabel` per id.

`output.clean.decisions` names a file of them: a CSV (header
`id,action,label`) or a Label Studio export (`.json`, the tasks that
`lossaudit export --format label-studio` wrote, annotated). In `clean/` a
decision overrides the flags of its row exactly: `keep` keeps it with its
given label, flagged or not; `drop` leaves it out, flagged or not; `relabel`
keeps it with the decided label. Rows without a decision follow
`output.clean.drop_reasons` and `relabel` as before.

A run writes the decisions in force to `decisions.parquet` (`SCHEMA`), each
with the row's given label when first applied and the run that first
applied it; a later run with a baseline reads that of the newest completed
run, its gates passed or not (`pipelines.audit`), and unions it with its
own file, its own file winning per id (`union`). A decision whose
recorded given label differs from the row's given label today is stale: the
label was changed upstream since the review, so it is not applied (the row
follows the rules again) and it no longer marks the row `reviewed`.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import io
import json
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit import outputs
from lossaudit.errors import ConfigError, describe_error, short_repr

KEY = "output.clean.decisions"
KEEP, DROP, RELABEL = "keep", "drop", "relabel"
ACTIONS = (KEEP, DROP, RELABEL)
HEADER = ("id", "action", "label")
# The `lossaudit export --format label-studio` labelling config's names.
LABEL_FROM = "label"
ACTION_FROM = "action"
# `decisions.parquet`.
SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("action", pa.string()),
    pa.field("label", pa.int64()),
    pa.field("given_label", pa.int64()),
    pa.field("run_id", pa.string()),
])
# The decided rows one batch found (`found_rows`).
FOUND_SCHEMA = pa.schema([pa.field("id", pa.string()),
                          pa.field("given_label", pa.int64())])
NOT_FOUND_SHOWN = 100
_NONE = -1  # No label / given label unknown.


@dataclasses.dataclass(frozen=True, eq=False)
class Decisions:
  """The decisions in force, one per id (compared by identity: numpy
  arrays have no single truth value).

  Attributes:
    ids: `(D,)` object (str) the decided ids, distinct.
    actions: `(D,)` object (str) `keep`, `drop` or `relabel`.
    labels: `(D,)` int64 the decided label of a `relabel`, else -1.
    given_labels: `(D,)` int64 the row's given label when the decision was
      first applied, -1 when not yet applied (or unlabelled).
    run_ids: `(D,)` object (str) the run that first applied it, "" if none.
  """

  ids: np.ndarray
  actions: np.ndarray
  labels: np.ndarray
  given_labels: np.ndarray
  run_ids: np.ndarray

  def __len__(self) -> int:
    return len(self.ids)

  @classmethod
  def empty(cls) -> "Decisions":
    return cls(*(np.zeros(0, object),) * 2, *(np.zeros(0, np.int64),) * 2,
               np.zeros(0, object))

  def to_table(self) -> pa.Table:
    """As `decisions.parquet` holds them (`SCHEMA`, nulls for -1 and "")."""
    return pa.table([
        pa.array(self.ids.astype(str).tolist(), pa.string()),
        pa.array(self.actions.astype(str).tolist(), pa.string()),
        pa.array(self.labels, pa.int64(), mask=self.labels == _NONE),
        pa.array(self.given_labels, pa.int64(),
                 mask=self.given_labels == _NONE),
        pa.array(self.run_ids.astype(str).tolist(), pa.string(),
                 mask=self.run_ids.astype(str) == "")], schema=SCHEMA)

  @classmethod
  def from_table(cls, table: pa.Table) -> "Decisions":
    """From a `decisions.parquet` table."""
    def ints(name: str) -> np.ndarray:
      return np.asarray(pc.fill_null(table.column(name), _NONE).to_numpy(),
                        np.int64)

    def strings(name: str) -> np.ndarray:
      return np.asarray(pc.fill_null(table.column(name), "").to_numpy(
          zero_copy_only=False), object)

    return cls(strings("id"), strings("action"), ints("label"),
               ints("given_label"), strings("run_id"))

  @functools.cached_property
  def id_array(self) -> pa.Array:
    """The ids as Arrow strings, built once (every batch looks them up)."""
    return pa.array(self.ids.tolist(), pa.string())

  def index_of(self, ids: pa.Array) -> np.ndarray:
    """`(N,)` int64: each of `ids` `(N,)`'s decision, -1 where none."""
    if not len(self.ids):
      return np.full(len(ids), _NONE, np.int64)
    at = pc.index_in(ids, value_set=self.id_array)
    return np.asarray(pc.fill_null(at, _NONE).to_numpy(zero_copy_only=False),
                      np.int64)

  def take(self, rows: np.ndarray) -> "Decisions":
    return Decisions(*(getattr(self, f.name)[rows]
                       for f in dataclasses.fields(self)))

  def first_applied(self, found: pa.Table, run_id: str) -> "Decisions":
    """These decisions with the given label (`found`: `FOUND_SCHEMA`, the
    decided rows in today's data) and `run_id` recorded where not yet
    recorded; a stale decision keeps what it had."""
    at = self.index_of(found.column("id").combine_chunks()
                       if found.num_rows else pa.array([], pa.string()))
    hit = at >= 0
    rows, given = at[hit], np.asarray(pc.fill_null(
        found.column("given_label"), _NONE).to_numpy(), np.int64)[hit]
    fresh = self.run_ids[rows].astype(str) == ""
    given_labels, run_ids = self.given_labels.copy(), self.run_ids.copy()
    given_labels[rows[fresh]] = given[fresh]
    run_ids[rows[fresh]] = run_id
    return dataclasses.replace(self, given_labels=given_labels,
                               run_ids=run_ids)


def union(older: Optional[Decisions], newer: Optional[Decisions]
          ) -> Optional[Decisions]:
  """`older` (a baseline's) with `newer` (this run's file); `newer` wins
  per id. A decision the same in both keeps `older`'s first application."""
  if older is None or not len(older):
    return newer
  if newer is None:
    return older
  at = older.index_of(newer.id_array)
  same = at >= 0
  same[same] = ((older.actions[at[same]] == newer.actions[same])
                & (older.labels[at[same]] == newer.labels[same]))
  newer = dataclasses.replace(
      newer,
      given_labels=np.where(same, older.given_labels[np.maximum(at, 0)],
                            newer.given_labels),
      run_ids=np.where(same, older.run_ids[np.maximum(at, 0)],
                       newer.run_ids))
  left = older.take(np.flatnonzero(~np.isin(
      older.ids.astype(str), newer.ids.astype(str))))
  return Decisions(*(np.concatenate([getattr(left, f.name),
                                     getattr(newer, f.name)])
                     for f in dataclasses.fields(Decisions)))


class Applied(NamedTuple):
  """The decisions on the rows of one batch.

  Attributes:
    decided: `(N,)` bool, rows with a decision that applies (not stale).
    actions: `(N,)` object (str), their action ("" where none).
    labels: `(N,)` int64, the decided label of a relabel (-1 elsewhere).
    stale: `(N,)` bool, rows whose decision is stale (given label changed).
  """

  decided: np.ndarray
  actions: np.ndarray
  labels: np.ndarray
  stale: np.ndarray


def apply(decisions: Decisions, ids: pa.Array,
          given_labels: Optional[np.ndarray]) -> Applied:
  """The decisions on rows `ids` `(N,)` with `given_labels` `(N,)` int64
  (-1 unlabelled; None: no labels)."""
  at = decisions.index_of(ids)
  has = at >= 0
  rows = np.maximum(at, 0)
  recorded = (decisions.given_labels[rows] if len(decisions)
              else np.full(len(at), _NONE, np.int64))
  given = (np.full(len(at), _NONE, np.int64) if given_labels is None
           else np.asarray(given_labels, np.int64))
  stale = has & (recorded != _NONE) & (recorded != given)
  decided = has & ~stale
  actions = np.where(decided, decisions.actions[rows] if len(decisions)
                     else "", "").astype(object)
  labels = np.where(decided & (actions == RELABEL),
                    decisions.labels[rows] if len(decisions) else _NONE,
                    _NONE).astype(np.int64)
  return Applied(decided, actions, labels, stale)


def reviewed(decisions: Optional[Decisions], ids: pa.Array,
             given_labels: Optional[np.ndarray]) -> np.ndarray:
  """`(N,)` bool: rows `ids` `(N,)` with a `keep` decision made on the
  given label they have now (`given_labels` `(N,)`)."""
  if decisions is None or not len(decisions):
    return np.zeros(len(ids), bool)
  applied = apply(decisions, ids, given_labels)
  return applied.decided & (applied.actions == KEEP)


def found_rows(ids: pa.Array, given_labels: Optional[np.ndarray],
               applied: Applied) -> pa.RecordBatch:
  """`FOUND_SCHEMA` rows of a batch's decided rows, stale ones included."""
  hit = applied.decided | applied.stale
  given = (np.full(int(hit.sum()), _NONE, np.int64) if given_labels is None
           else np.asarray(given_labels, np.int64)[hit])
  return pa.RecordBatch.from_arrays(
      [pc.filter(ids, pa.array(hit)).cast(pa.string()),
       pa.array(given, pa.int64(), mask=given == _NONE)],
      schema=FOUND_SCHEMA)


@dataclasses.dataclass
class DecisionCounts:
  """`clean.decisions_applied` and `clean.decisions_not_found`.

  Attributes:
    keep, drop, relabel: decided rows found in the data, by action (rows:
      an id that repeats counts each time).
    stale: decided rows not applied: their given label changed since.
    not_found: decided ids not in the data.
    not_found_ids: up to `NOT_FOUND_SHOWN` of them, sorted.
  """

  keep: int = 0
  drop: int = 0
  relabel: int = 0
  stale: int = 0
  not_found: int = 0
  not_found_ids: Tuple[str, ...] = ()

  def merge(self, other: "DecisionCounts") -> "DecisionCounts":
    return DecisionCounts(
        self.keep + other.keep, self.drop + other.drop,
        self.relabel + other.relabel, self.stale + other.stale,
        self.not_found + other.not_found,
        tuple(sorted(self.not_found_ids + other.not_found_ids)
              )[:NOT_FOUND_SHOWN])

  def to_dict(self) -> Dict[str, Any]:
    return {
        "decisions_applied": {
            "total": self.keep + self.drop + self.relabel, "keep": self.keep,
            "drop": self.drop, "relabel": self.relabel, "stale": self.stale},
        "decisions_not_found": {"count": self.not_found,
                                "ids": list(self.not_found_ids)}}


def count_applied(applied: Applied) -> DecisionCounts:
  """The `DecisionCounts` of one batch's rows (not `not_found`)."""
  actions = applied.actions[applied.decided]
  return DecisionCounts(keep=int((actions == KEEP).sum()),
                        drop=int((actions == DROP).sum()),
                        relabel=int((actions == RELABEL).sum()),
                        stale=int(applied.stale.sum()))


def not_found(decisions: Decisions, found: pa.Table) -> DecisionCounts:
  """The decided ids absent from `found` (every decided row of the data)."""
  seen = (found.column("id").combine_chunks() if found.num_rows else
          pa.array([], pa.string()))
  missing = ~pc.is_in(decisions.id_array, value_set=seen).to_numpy(
      zero_copy_only=False)
  shown = np.sort(decisions.ids[missing].astype(str))[:NOT_FOUND_SHOWN]
  return DecisionCounts(not_found=int(missing.sum()),
                        not_found_ids=tuple(shown.tolist()))


# Reading a decisions file.


def _fail(path: str, where: str, expected: str, received: Any) -> None:
  raise ConfigError(f"{KEY}: {path}: {where}: expected {expected}."
                    f" Received: {short_repr(received)}")


def read(path: str, class_names: Optional[Sequence[str]] = None,
         num_classes: Optional[int] = None) -> Decisions:
  """The decisions of the file `path` (local or gs://): `.csv` or a Label
  Studio export (`.json`).

  Args:
    class_names: the class names by index (`input.label_vocabulary`): a
      label is one of them, or an index.
    num_classes: the number of classes, when known: an index is below it.

  Raises:
    ConfigError: naming `output.clean.decisions`, the file and the line
      (the task, for Label Studio) at fault.
  """
  lower = path.lower()
  if not (lower.endswith(".csv") or lower.endswith(".json")):
    raise ConfigError(
        f"{KEY}: expected a .csv (header id,action,label) or a Label Studio"
        f" export (.json). Received: {short_repr(path)}")
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      data = f.read()
  except Exception as error:  # pylint: disable=broad-except
    missing = not FileSystems.exists(path)
    raise ConfigError(
        f"{KEY}: expected a readable file. Received: {short_repr(path)}"
        f" ({'not found' if missing else type(error).__name__})") from None
  labels = _Labels(path, class_names, num_classes)
  if lower.endswith(".csv"):
    return _read_csv(path, data, labels)
  return _read_label_studio(path, data, labels)


class _Labels:
  """Labels as written (a class name or an index) → indices."""

  def __init__(self, path: str, class_names: Optional[Sequence[str]],
               num_classes: Optional[int]):
    self.path = path
    self.names = list(class_names) if class_names else None
    self.num_classes = (len(self.names) if self.names else num_classes)

  def expected(self) -> str:
    if self.names:
      return (f"a class of input.label_vocabulary or an index below"
              f" {len(self.names)}")
    if self.num_classes:
      return f"a class index from 0 to {self.num_classes - 1}"
    return "a class index (an integer >= 0)"

  def indices(self, values: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """`(N,)` int64 indices of `values` `(N,)` (strings), and `(N,)` bool
    which are known classes."""
    n = len(values)
    index = np.full(n, _NONE, np.int64)
    if self.names:
      at = pc.index_in(values, value_set=pa.array(self.names, pa.string()))
      index = np.asarray(pc.fill_null(at, _NONE).to_numpy(
          zero_copy_only=False), np.int64)
    digits = pc.match_substring_regex(values, r"^\s*[0-9]{1,18}\s*$")
    digits = np.asarray(pc.fill_null(digits, False).to_numpy(
        zero_copy_only=False), bool) & (index == _NONE)
    if digits.any():
      index[digits] = np.asarray(pc.cast(pc.utf8_trim_whitespace(
          pc.filter(values, pa.array(digits))), pa.int64()).to_numpy(),
                                 np.int64)
    known = index >= 0
    if self.num_classes:
      known &= index < self.num_classes
    return index, known


def _read_csv(path: str, data: bytes, labels: _Labels) -> Decisions:
  """A decisions CSV: line 1 `id,action,label`; a line per decision."""
  # Spreadsheets save "CSV UTF-8" with a byte-order mark, and may quote
  # every field; the header names the columns only after both are undone.
  data = data[len(codecs.BOM_UTF8):] if data.startswith(
      codecs.BOM_UTF8) else data
  first = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
  header = tuple(c.strip() for c in next(csv.reader([first]), []))
  if header != HEADER:
    _fail(path, "line 1", "the header id,action,label", first)
  try:
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=list(HEADER),
                                        skip_rows=1),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in HEADER},
            strings_can_be_null=False))
  except pa.ArrowInvalid as error:
    _fail(path, "reading", "3 comma-separated columns on each line",
          str(error).splitlines()[0])
  ids = pc.utf8_trim_whitespace(table.column("id").combine_chunks())
  actions = pc.utf8_lower(pc.utf8_trim_whitespace(
      table.column("action").combine_chunks()))
  written = pc.utf8_trim_whitespace(table.column("label").combine_chunks())

  def line(row: int) -> str:
    return f"line {int(row) + 2}"  # Line 1 is the header.

  empty_id = np.flatnonzero(pc.equal(ids, "").to_numpy(zero_copy_only=False))
  if len(empty_id):
    _fail(path, line(empty_id[0]), "an id", "")
  bad = np.flatnonzero(~pc.is_in(actions, value_set=pa.array(
      list(ACTIONS))).to_numpy(zero_copy_only=False))
  if len(bad):
    _fail(path, line(bad[0]), "action keep, drop or relabel",
          table.column("action")[int(bad[0])].as_py())
  return _checked(path, ids, actions, written, labels, line)


def _checked(path: str, ids: pa.Array, actions: pa.Array, written: pa.Array,
             labels: _Labels, where) -> Decisions:
  """`Decisions` from `(N,)` strings, with each relabel's label a known
  class and no id decided two ways; `where(row)` names a row."""
  relabel = pc.equal(actions, RELABEL).to_numpy(zero_copy_only=False)
  blank = pc.equal(written, "").to_numpy(zero_copy_only=False)
  missing = np.flatnonzero(relabel & blank)
  if len(missing):
    _fail(path, where(missing[0]), "a label for relabel", "")
  index, known = labels.indices(written)
  unknown = np.flatnonzero(relabel & ~known)
  if len(unknown):
    _fail(path, where(unknown[0]), labels.expected(),
          written[int(unknown[0])].as_py())
  index = np.where(relabel, index, _NONE)
  id_values = np.asarray(ids.to_numpy(zero_copy_only=False), object)
  action_values = np.asarray(actions.to_numpy(zero_copy_only=False), object)
  order = np.argsort(id_values.astype(str), kind="stable")
  sorted_ids = id_values[order].astype(str)
  repeat = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
  differs = ((action_values[order][repeat]
              != action_values[order][repeat - 1])
             | (index[order][repeat] != index[order][repeat - 1]))
  if differs.any():
    row = int(order[repeat][differs].min())
    _fail(path, where(row), f"one decision per id; id {id_values[row]!r}"
          " is decided another way before", f"{action_values[row]}"
          + (f" {written[row].as_py()}" if relabel[row] else ""))
  _, first = np.unique(id_values.astype(str), return_index=True)
  first = np.sort(first)
  n = len(first)
  return Decisions(id_values[first].astype(str).astype(object),
                   action_values[first], index[first].astype(np.int64),
                   np.full(n, _NONE, np.int64), np.full(n, "", object))


def _read_label_studio(path: str, data: bytes, labels: _Labels
                       ) -> Decisions:
  """A Label Studio export (JSON) of lossaudit's tasks: per task its last
  annotation not cancelled; `drop` under `action` drops; else the `label`
  choice keeps (the given class) or relabels (another). Tasks without such
  an annotation are left undecided."""
  try:
    tasks = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as error:
    _fail(path, "reading", "a Label Studio JSON export (a list of tasks)",
          str(error))
  if not isinstance(tasks, list):
    _fail(path, "reading", "a Label Studio JSON export (a list of tasks)",
          type(tasks).__name__)
  rows: List[Tuple[str, str, str]] = []
  places: List[int] = []
  for number, task in enumerate(tasks):
    decided = _task_decision(path, number, task, labels)
    if decided is not None:
      rows.append(decided)
      places.append(number)
  ids, actions, written = (pa.array([r[i] for r in rows], pa.string())
                           for i in range(3))
  return _checked(path, ids, actions, written, labels,
                  lambda row: f"task {places[int(row)]}")


def _task_decision(path: str, number: int, task: Any, labels: _Labels
                   ) -> Optional[Tuple[str, str, str]]:
  """`(id, action, label as written)` of one exported task, or None."""
  where = f"task {number}"
  task_data = task.get("data") if isinstance(task, dict) else None
  if not isinstance(task_data, dict) or task_data.get("id") in (None, ""):
    _fail(path, where, "a task with data.id (a lossaudit export)",
          task if not isinstance(task, dict) else sorted(task))
  annotations = task.get("annotations") or []
  if not isinstance(annotations, list):
    _fail(path, where, "annotations, a list", annotations)
  annotations = [a for a in annotations
                 if isinstance(a, dict) and not a.get("was_cancelled")]
  if not annotations:
    return None
  results = annotations[-1].get("result") or []
  if not isinstance(results, list):
    _fail(path, where, "an annotation's result, a list", results)
  choices: Dict[str, List[str]] = {}
  for result in results:
    if isinstance(result, dict) and result.get("type") == "choices":
      value = result.get("value") or {}
      if not isinstance(value, dict):
        _fail(path, where, "a result's value, an object with choices", value)
      chosen = value.get("choices")
      if not isinstance(chosen, (list, type(None))):
        _fail(path, where, "a result's value.choices, a list", chosen)
      choices.setdefault(result.get("from_name"), []).extend(chosen or ())
  task_id = str(task_data["id"])
  if DROP in choices.get(ACTION_FROM, ()):
    return task_id, DROP, ""
  chosen = choices.get(LABEL_FROM)
  if not chosen:
    return None
  given = task_data.get("given_label_id")
  if not isinstance(given, int):
    _fail(path, where, "data.given_label_id, an integer", given)
  index, known = labels.indices(pa.array([str(chosen[-1])], pa.string()))
  if known[0] and int(index[0]) == given:
    return task_id, KEEP, ""
  return task_id, RELABEL, str(chosen[-1])


def write(path: str, decided: Decisions) -> None:
  """Writes `decided` to `path` (`decisions.parquet`), whole."""
  sink = pa.BufferOutputStream()
  pq.write_table(decided.to_table(), sink)
  outputs.write_bytes(path, sink.getvalue().to_pybytes())


def read_parquet(path: str, key: str) -> Decisions:
  """A `decisions.parquet` a run wrote.

  Raises:
    ConfigError: naming `key`, when it cannot be read as one.
  """
  try:
    with FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      table = pq.read_table(f, columns=SCHEMA.names)
    return Decisions.from_table(table.cast(SCHEMA))
  except Exception as error:  # pylint: disable=broad-except
    raise ConfigError(
        f"{key}: expected its {outputs.DECISIONS} as lossaudit writes it"
        f" ({', '.join(SCHEMA.names)}). Received: {short_repr(path)}"
        f" ({describe_error(error)})") from None
