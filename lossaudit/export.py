"""A completed run's flagged rows for review: Label Studio tasks or CSV.

Reads `summary.json`, the `flagged/` shards, the class names and, when
present, `previews.parquet` of a run's output.dir (local or gs://), and
builds what `lossaudit export` writes: a Label Studio tasks file with its
labelling config, or a CSV. No Beam pipeline runs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from lossaudit import outputs, rules
from lossaudit.errors import ConfigError, describe_error, short_repr

LABEL_STUDIO = "label-studio"
CSV = "csv"
FORMATS = (LABEL_STUDIO, CSV)
# The labelling config is written beside the tasks file, as FILE + this.
LABEL_CONFIG_SUFFIX = ".label-config.xml"
# The report rows' previews, at the top of a run's output.dir.
PREVIEWS = "previews.parquet"
CSV_COLUMNS = ("id", "given_label", "given_class", "suggested_label",
               "suggested_class", "score", "reasons", "status")
# How every file this module writes begins: how `lossaudit export` knows
# a file it may replace, from its first bytes.
TASKS_START = '[{"data": {"id": '
EMPTY_TASKS = "[]\n"
CSV_HEADER = ",".join(f'"{c}"' for c in CSV_COLUMNS)
LABEL_CONFIG_START = "<!-- lossaudit export: Label Studio labelling config -->"
# The previews a task shows (`previews.parquet`'s `kind`; a `note` is not).
PREVIEW_KINDS = ("image", "text")
# The Choices of a task's actions besides its label.
DROP = "drop"

_PLAIN = CompressionTypes.UNCOMPRESSED
_WANTED = ("id", "score", "reasons", "given_label", "given_class",
           "predicted_label", "suggested_label", "suggested_class", "status")


@dataclasses.dataclass(frozen=True)
class Run:
  """What an export reads of a completed run.

  Attributes:
    directory: its output.dir.
    run_id: its run id.
    flagged: its flagged rows (`_WANTED`'s columns that it has), in shard
      order.
    class_names: `(K,)` class names with a vocabulary, else None.
    num_classes: K for a classification run, else None.
    known_reasons: the reasons a row can be flagged for.
  """

  directory: str
  run_id: str
  flagged: pa.Table
  class_names: Optional[List[str]]
  num_classes: Optional[int]
  known_reasons: tuple


def read_run(directory: str) -> Run:
  """The flagged rows and class names of the completed run in `directory`.

  Raises:
    ConfigError: naming RUN_DIR when it holds no completed run, or its
      `flagged/` files are not a run's.
  """
  summary = outputs.read_summary(directory, "RUN_DIR")
  id_column = summary.get("config", {}).get("input", {}).get("id_column")
  files = outputs.shard_files(directory, outputs.FLAGGED)
  outputs.check_flagged_outputs("RUN_DIR", directory, summary, files,
                                id_column)
  if summary["flagged"]["total"] and not files:
    raise ConfigError(
        f"RUN_DIR: expected the {outputs.FLAGGED}/ files of a completed run"
        f" ({summary['flagged']['total']} flagged rows). Received:"
        f" {directory!r} (no {outputs.FLAGGED}/part-* files)")
  tables = []
  for path in files:
    with FileSystems.open(path, compression_type=_PLAIN) as f:
      found = pq.ParquetFile(f)
      names = [c for c in _WANTED if c in found.schema_arrow.names]
      tables.append(found.read(columns=names))
  flagged = (pa.concat_tables(tables, promote_options="default") if tables
             else pa.table({"id": pa.array([], pa.string()),
                            "score": pa.array([], pa.float64()),
                            "reasons": pa.array([], pa.list_(pa.string()))}))
  names = _class_names(directory, summary)
  issues = summary.get("label_issues") or {}
  num_classes = (len(names) if names else issues.get("num_classes"))
  if num_classes is None and "given_label" in flagged.column_names:
    seen = [pc.max(flagged.column(c)).as_py()
            for c in ("given_label", "predicted_label")
            if c in flagged.column_names]
    seen = [k for k in seen if k is not None]
    num_classes = max(seen) + 1 if seen else None
  known = tuple(rules.reasons()) + tuple(
      r for r in summary["flagged"].get("by_reason", {})
      if r not in rules.reasons())
  return Run(directory, str(summary.get("run_id", "")), flagged, names,
             num_classes, known)


def _class_names(directory: str, summary: Dict[str, Any]
                 ) -> Optional[List[str]]:
  """The run's class names: `summary.json`'s (up to 1,000 classes), else
  `label_issues/classes.parquet`'s `name` column; None without a
  vocabulary."""
  names = summary.get("class_names") or (
      summary.get("label_issues") or {}).get("class_names")
  if names:
    return [str(n) for n in names]
  path = outputs.join(directory, outputs.CLASSES)
  if not FileSystems.exists(path):
    return None
  with FileSystems.open(path, compression_type=_PLAIN) as f:
    table = pq.read_table(f)
  if "name" not in table.column_names:
    return None
  table = table.sort_by("class")
  return [str(n) for n in table.column("name").to_pylist()]


def check_reasons(value: Optional[str], known: Sequence[str]
                  ) -> Optional[List[str]]:
  """The reasons of `--reasons R,...`; None (every flagged row) when not
  given.

  Raises:
    ConfigError: naming --reasons, when a name is not a reason.
  """
  if value is None:
    return None
  given = [r.strip() for r in value.split(",")]
  unknown = [r for r in given if r not in known]
  if not given or unknown or not all(given):
    raise ConfigError(
        f"--reasons: expected a comma-separated list of flag reasons from"
        f" {list(known)}. Received: {short_repr(value)}"
        + (f" (unknown: {', '.join(map(repr, unknown))})"
           if [r for r in unknown if r] else ""))
  return given


def select(flagged: pa.Table, reasons: Optional[Sequence[str]]) -> pa.Table:
  """The rows of `flagged` with any of `reasons` (all when None), by score
  descending, ties by id.

  Args:
    flagged: `(N,)` rows with `id`, `score` and `reasons`.
    reasons: reason names, or None.

  Returns:
    `(M,)` rows, M <= N.
  """
  if reasons is not None:
    column = flagged.column("reasons").combine_chunks()
    hit = pc.is_in(pc.list_flatten(column),
                   value_set=pa.array(list(reasons), pa.string()))
    rows = pc.unique(pc.filter(pc.list_parent_indices(column), hit))
    flagged = flagged.take(rows)
  return flagged.sort_by([("score", "descending"), ("id", "ascending")])


def read_previews(directory: str) -> Optional[Dict[str, pa.Table]]:
  """`previews.parquet` of the run: one image and one text per id (the
  first input's by name), or None when the run has none.

  Returns:
    By kind (`image`, `text`), a table of `id` and `value` (a data URI, or
    the text), one row per id.

  Raises:
    ConfigError: naming RUN_DIR when the file is not the previews of a run.
  """
  path = outputs.join(directory, PREVIEWS)
  if not FileSystems.exists(path):
    return None
  needed = {"id", "input", "kind", "value"}
  try:
    with FileSystems.open(path, compression_type=_PLAIN) as f:
      table = pq.read_table(f)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"RUN_DIR: expected {PREVIEWS} to be the previews of a run;"
        f" it is not Parquet ({describe_error(e, 60)}). Received:"
        f" {directory!r}") from None
  if not needed <= set(table.column_names):
    raise ConfigError(
        f"RUN_DIR: expected {PREVIEWS} to have the columns {sorted(needed)};"
        f" it lacks {sorted(needed - set(table.column_names))}. Received:"
        f" {directory!r}")
  # The first row of each id and kind is found on the short columns; only
  # those rows' values (data URIs, some KB each) are then taken.
  keys = table.select(["id", "input", "kind"]).append_column(
      "row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
  keys = keys.sort_by([("id", "ascending"), ("input", "ascending")])
  values = table.column("value")
  found = {}
  for kind in PREVIEW_KINDS:
    first = keys.filter(pc.equal(keys.column("kind"), kind)).group_by(
        "id", use_threads=False).aggregate([("row", "first")])
    found[kind] = pa.table({"id": first.column("id"),
                            "value": values.take(first.column("row_first"))})
  return found


def _with_previews(rows: pa.Table,
                   previews: Optional[Dict[str, pa.Table]]) -> pa.Table:
  """`rows` with `image` and `text` columns (null without a preview), in
  their order."""
  for kind in PREVIEW_KINDS:
    found = None if previews is None else previews[kind]
    if found is None or not rows.num_rows:
      column = pa.nulls(rows.num_rows, pa.string())
    else:
      at = pc.index_in(rows.column("id"), value_set=found.column("id"))
      column = found.column("value").take(at)
    rows = rows.append_column(kind, column)
  return rows


def _names(labels: pa.Array, class_names: Optional[Sequence[str]]
           ) -> pa.Array:
  """The classes of `labels` `(N,)` as shown: their names, else the ids as
  text; null where a label is null or not a class."""
  if class_names is None:
    return pc.cast(labels, pa.string())
  k = len(class_names)
  inside = pc.and_(pc.greater_equal(labels, 0), pc.less(labels, k))
  safe = pc.if_else(inside, labels, pa.scalar(None, labels.type))
  return pa.array(list(class_names), pa.string()).take(safe)


def _column(rows: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
  if name in rows.column_names:
    return rows.column(name).combine_chunks()
  return pa.nulls(rows.num_rows, type_)


def to_csv(rows: pa.Table, class_names: Optional[Sequence[str]]) -> bytes:
  """The CSV of the selected rows: `CSV_COLUMNS`, one line a row.

  Args:
    rows: `(M,)` selected flagged rows.
    class_names: `(K,)` class names, or None (then the `*_class` columns
      are empty).
  """
  given = _column(rows, "given_label", pa.int64())
  suggested = _column(rows, "suggested_label", pa.int64())
  table = pa.table({
      "id": rows.column("id"),
      "given_label": given,
      "given_class": (_names(given, class_names) if class_names
                      else pa.nulls(rows.num_rows, pa.string())),
      "suggested_label": suggested,
      "suggested_class": (_names(suggested, class_names) if class_names
                          else pa.nulls(rows.num_rows, pa.string())),
      "score": rows.column("score"),
      "reasons": pc.binary_join(rows.column("reasons"), ";"),
      "status": _column(rows, "status", pa.string()),
  })
  sink = io.BytesIO()
  pa_csv.write_csv(table, sink, pa_csv.WriteOptions(
      quoting_style="needed"))
  return sink.getvalue()


def _finite(value: Optional[float]) -> Optional[float]:
  """JSON has no infinity: a score that is not finite is null."""
  return value if value is not None and math.isfinite(value) else None


# The image of a task whose row has none among the run's previews (beyond
# `report.max_rows`): an 8x8 light grey PNG, so the config's Image view
# applies to every task.
NO_PREVIEW_IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAI"
                    "CAAAAADhZOFXAAAAEElEQVR4nGO8wwABTAwUMQA/jADsNtxXAgAAAABJ"
                    "RU5ErkJggg==")


def task_object(rows: pa.Table) -> str:
  """The Label Studio object the tasks' label choices refer to: `image`
  when some row has an image preview and none has text (the others get
  `NO_PREVIEW_IMAGE`), `text` when every row has a text preview, else
  `id_text` (the id, shown as text)."""
  if not rows.num_rows:
    return "id_text"
  images = rows.num_rows - rows.column("image").null_count
  texts = rows.num_rows - rows.column("text").null_count
  if images and not texts:
    return "image"
  if texts == rows.num_rows:
    return "text"
  return "id_text"


def label_studio(run: Run, rows: pa.Table,
                 previews: Optional[Dict[str, pa.Table]]
                 ) -> Tuple[List[Dict[str, Any]], str]:
  """Label Studio tasks of the selected rows, one a row, in their order,
  and the labelling config that matches them.

  A row with a suggested label (a label issue) gets one prediction: that
  label's choice, scored with the row's score. Images (data URIs) and text
  come from the run's previews.

  Args:
    run: the run (`read_run`).
    rows: `(M,)` selected flagged rows of `run`, with `given_label`.
    previews: `read_previews`'s table, or None.

  Returns:
    `(M,)` task objects (Label Studio's JSON import format), and the
    `label_config`.
  """
  rows = _with_previews(rows, previews)
  to_name = task_object(rows)
  given = _column(rows, "given_label", pa.int64())
  suggested = _column(rows, "suggested_label", pa.int64())
  columns = {
      "id": rows.column("id").to_pylist(),
      "given": _names(given, run.class_names).to_pylist(),
      "given_id": given.to_pylist(),
      "suggested": _names(suggested, run.class_names).to_pylist(),
      "score": rows.column("score").to_pylist(),
      "reasons": pc.binary_join(rows.column("reasons"), ", ").to_pylist(),
      "image": rows.column("image").to_pylist(),
      "text": rows.column("text").to_pylist(),
  }
  tasks = []
  model_version = f"lossaudit {run.run_id}"
  for i in range(rows.num_rows):
    score = _finite(columns["score"][i])
    data = {"id": columns["id"][i], "given_label": columns["given"][i],
            "given_label_id": columns["given_id"][i],
            "suggested_label": columns["suggested"][i] or "",
            "score": score, "reasons": columns["reasons"][i]}
    for kind in ("image", "text"):
      if columns[kind][i] is not None:
        data[kind] = columns[kind][i]
    if to_name == "image" and "image" not in data:
      data["image"] = NO_PREVIEW_IMAGE
    task = {"data": data}
    if columns["suggested"][i] is not None:
      task["predictions"] = [{
          "model_version": model_version, "score": score,
          "result": [{"from_name": "label", "to_name": to_name,
                      "type": "choices",
                      "value": {"choices": [columns["suggested"][i]]}}]}]
    tasks.append(task)
  return tasks, label_config(classes_shown(run), to_name)


def tasks_json(tasks: Sequence[Dict[str, Any]]) -> bytes:
  """The tasks file: a JSON list, one task a line (`TASKS_START` first)."""
  if not tasks:
    return EMPTY_TASKS.encode("utf-8")
  out = io.BytesIO()
  encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
  for i, task in enumerate(tasks):
    out.write(b"[" if i == 0 else b",\n")
    out.write(encoder.encode(task).encode("utf-8"))
  out.write(b"]\n")
  return out.getvalue()


def label_config(classes: Sequence[str], to_name: str) -> str:
  """The Label Studio labelling config matching the tasks.

  Args:
    classes: `(K,)` every class as the tasks show it.
    to_name: `task_object` of the tasks.

  Returns:
    The `<View>` XML: the image or text (when the tasks all have one), the
    id, given label, suggested label and reasons, a `label` choice per
    class and an `action` choice `drop`.
  """
  lines = [LABEL_CONFIG_START, "<View>"]
  if to_name == "image":
    lines.append('  <Image name="image" value="$image"/>')
  elif to_name == "text":
    lines.append('  <Text name="text" value="$text"/>')
  lines += ['  <Text name="id_text" value="$id"/>',
            '  <Header value="Given: $given_label. Suggested:'
            ' $suggested_label. Score $score ($reasons)" size="6"/>',
            f'  <Choices name="label" toName="{to_name}" choice="single"'
            ' showInline="true">']
  lines += [f"    <Choice value={quoteattr(c)}/>" for c in classes]
  lines += ["  </Choices>",
            f'  <Choices name="action" toName="{to_name}" choice="single">',
            f'    <Choice value="{DROP}"/>',
            "  </Choices>", "</View>", ""]
  return "\n".join(lines)


def classes_shown(run: Run) -> List[str]:
  """Every class of `run` as the tasks show it: its name, else its id."""
  if run.class_names:
    return list(run.class_names)
  return [str(k) for k in range(run.num_classes or 0)]


def is_export(path: str) -> bool:
  """Whether the file at `path` begins as a file `lossaudit export` wrote
  (its first bytes only are read)."""
  try:
    with FileSystems.open(path, compression_type=_PLAIN) as f:
      start = f.read(256).decode("utf-8", errors="replace")
  except Exception:  # pylint: disable=broad-except
    return False
  return start.startswith((TASKS_START, EMPTY_TASKS, CSV_HEADER,
                           LABEL_CONFIG_START))
