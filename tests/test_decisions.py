"""Decisions files: the CSV, Label Studio exports, every error, the union."""

import json
import re

import numpy as np
import pyarrow as pa
import pytest

from lossaudit import decisions
from lossaudit.decisions import Decisions
from lossaudit.errors import ConfigError
from tests.helpers import upload

NAMES = ("cat", "dog", "bird")


def _csv(tmp_path, text, name="decisions.csv"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _as_dict(found: Decisions):
  return {i: (a, int(label)) for i, a, label in zip(
      found.ids, found.actions, found.labels)}


def test_csv_with_class_names_and_indices(tmp_path):
  path = _csv(tmp_path, "id,action,label\n"
              "a,keep,\n"
              "b,drop,cat\n"
              " c , Relabel , dog \n"
              "d,relabel,2\n"
              "a,keep,dog\n")  # The same decision twice, a label ignored.
  found = decisions.read(path, NAMES)
  assert _as_dict(found) == {"a": ("keep", -1), "b": ("drop", -1),
                             "c": ("relabel", 1), "d": ("relabel", 2)}
  assert list(found.ids) == ["a", "b", "c", "d"]
  assert (found.given_labels == -1).all()


def test_csv_without_class_names_takes_indices(tmp_path):
  path = _csv(tmp_path, "id,action,label\nx,relabel,7\n")
  assert _as_dict(decisions.read(path)) == {"x": ("relabel", 7)}


@pytest.mark.parametrize("text, names, num_classes, message", [
    ("id,action\na,keep\n", NAMES, None,
     r"line 1: expected the header id,action,label. Received: 'id,action'"),
    ("id,action,label\na,keep,\nb,keep,\nc,keep,\nd,keep,\ne,keep,\n"
     "f,dorp,\n", NAMES, None,
     r"line 7: expected action keep, drop or relabel. Received: 'dorp'"),
    ("id,action,label\na,keep,\nb,relabel,\n", NAMES, None,
     r"line 3: expected a label for relabel. Received: ''"),
    ("id,action,label\na,relabel,cow\n", NAMES, None,
     r"line 2: expected a class of input.label_vocabulary or an index below"
     r" 3. Received: 'cow'"),
    ("id,action,label\na,relabel,3\n", None, 3, r"line 2: expected a class"
     r" index from 0 to 2. Received: '3'"),
    ("id,action,label\na,relabel,-1\n", None, None, r"line 2: expected a"
     r" class index \(an integer >= 0\). Received: '-1'"),
    ("id,action,label\na,keep,\nb,keep,\na,drop,\n", NAMES, None,
     r"line 4: expected one decision per id; id 'a' is decided another way"
     r" before. Received: 'drop'"),
    ("id,action,label\na,relabel,cat\na,relabel,dog\n", NAMES, None,
     r"line 3: expected one decision per id.*Received: 'relabel dog'"),
    ("id,action,label\n,keep,\n", NAMES, None,
     r"line 2: expected an id. Received: ''"),
    ("id,action,label\na,keep\n", NAMES, None,
     r"reading: expected 3 comma-separated columns on each line"),
])
def test_csv_errors_name_the_key_file_and_line(tmp_path, text, names,
                                                num_classes, message):
  path = _csv(tmp_path, text)
  with pytest.raises(ConfigError) as raised:
    decisions.read(path, names, num_classes)
  text = str(raised.value)
  assert "\n" not in text
  assert text.startswith(f"output.clean.decisions: {path}: ")
  assert re.search(message, text), text


def test_missing_unreadable_and_unknown_kind(tmp_path):
  with pytest.raises(ConfigError, match=r"^output.clean.decisions: expected"
                     r" a readable file. Received: '.*nope.csv' \(not found\)"):
    decisions.read(str(tmp_path / "nope.csv"))
  folder = tmp_path / "folder.csv"
  folder.mkdir()
  with pytest.raises(ConfigError, match=r"expected a readable file.*"
                     r"folder.csv' \((?!not found)"):
    decisions.read(str(folder))
  with pytest.raises(ConfigError, match=r"^output.clean.decisions: expected"
                     r" a .csv \(header id,action,label\) or a Label Studio"
                     r" export \(.json\). Received: '.*d.txt'"):
    decisions.read(str(tmp_path / "d.txt"))


def _annotation(choices, cancelled=False, action=None):
  """One annotation as Label Studio's export writes it (guide/task_format:
  id, result, was_cancelled, ground_truth, created_at, lead_time, task)."""
  result = [{"id": "r1", "from_name": "label", "to_name": "image",
             "type": "choices", "origin": "manual",
             "value": {"choices": choices}}] if choices else []
  if action:
    result.append({"id": "r2", "from_name": "action", "to_name": "image",
                   "type": "choices", "origin": "manual",
                   "value": {"choices": [action]}})
  return {"id": 1001, "completed_by": 1, "result": result,
          "was_cancelled": cancelled, "ground_truth": False,
          "created_at": "2026-12-01T10:00:00.000000Z",
          "updated_at": "2026-12-01T10:00:00.000000Z", "lead_time": 4.2,
          "prediction": {}, "result_count": 0, "task": 1, "project": 3,
          "parent_prediction": None, "parent_annotation": None}


def _task(number, row_id, given, annotations):
  """A task as `lossaudit export --format label-studio` writes it, exported
  back from Label Studio with its annotations (JSON export)."""
  return {
      "id": number, "annotations": annotations, "file_upload": None,
      "drafts": [], "predictions": [7], "meta": {}, "inner_id": number,
      "total_annotations": len(annotations), "cancelled_annotations": 0,
      "total_predictions": 1, "comment_count": 0,
      "created_at": "2026-12-01T09:00:00.000000Z",
      "updated_at": "2026-12-01T10:00:00.000000Z", "project": 3,
      "updated_by": None, "comment_authors": [],
      "data": {"id": row_id, "given_label": NAMES[given],
               "given_label_id": given, "suggested_label": "bird",
               "score": 3.5, "reasons": "label_issue",
               "image": "data:image/png;base64,iVBORw0KGgo="}}


def test_label_studio_export(tmp_path):
  tasks = [
      _task(1, "kept", 0, [_annotation(["cat"])]),
      _task(2, "relabelled", 0, [_annotation(["bird"])]),
      _task(3, "dropped", 1, [_annotation(["dog"], action="drop")]),
      _task(4, "undecided", 1, []),
      _task(5, "cancelled", 1, [_annotation(["bird"], cancelled=True)]),
      # The last annotation not cancelled counts.
      _task(6, "changed", 2, [_annotation(["cat"]), _annotation(["bird"]),
                              _annotation(["dog"], cancelled=True)]),
  ]
  path = tmp_path / "export.json"
  path.write_text(json.dumps(tasks))
  assert _as_dict(decisions.read(str(path), NAMES)) == {
      "kept": ("keep", -1), "relabelled": ("relabel", 2),
      "dropped": ("drop", -1), "changed": ("keep", -1)}


def test_label_studio_without_vocabulary_shows_ids(tmp_path):
  task = _task(1, "x", 0, [_annotation(["2"])])
  task["data"]["given_label"] = "0"
  path = tmp_path / "export.json"
  path.write_text(json.dumps([task]))
  assert _as_dict(decisions.read(str(path), None, 3)) == {
      "x": ("relabel", 2)}


@pytest.mark.parametrize("content, message", [
    ("{not json", r"reading: expected a Label Studio JSON export \(a list of"
     r" tasks\)"),
    ('{"a": 1}', r"reading: expected a Label Studio JSON export.*'dict'"),
    ('[{"data": {}}]', r"task 0: expected a task with data.id"),
    (json.dumps([_task(1, "a", 0, [_annotation(["cow"])])]),
     r"task 0: expected a class of input.label_vocabulary.*'cow'"),
])
def test_label_studio_errors(tmp_path, content, message):
  path = tmp_path / "export.json"
  path.write_text(content)
  with pytest.raises(ConfigError, match=r"^output.clean.decisions: .*"
                     + message):
    decisions.read(str(path), NAMES)


def test_label_studio_needs_the_given_label_id(tmp_path):
  task = _task(1, "a", 0, [_annotation(["dog"])])
  del task["data"]["given_label_id"]
  path = tmp_path / "export.json"
  path.write_text(json.dumps([task]))
  with pytest.raises(ConfigError, match=r"task 0: expected"
                     r" data.given_label_id, an integer. Received: None"):
    decisions.read(str(path), NAMES)


def _decisions(rows):
  ids, actions, labels, given, runs = zip(*rows)
  return Decisions(np.array(ids, object), np.array(actions, object),
                   np.array(labels, np.int64), np.array(given, np.int64),
                   np.array(runs, object))


def test_union_newer_wins_and_keeps_first_application():
  older = _decisions([("a", "keep", -1, 0, "night1"),
                      ("b", "drop", -1, 1, "night1"),
                      ("c", "relabel", 2, 0, "night1")])
  newer = _decisions([("a", "keep", -1, -1, ""),  # Same: first kept.
                      ("b", "keep", -1, -1, ""),  # Changed: newer's.
                      ("d", "drop", -1, -1, "")])
  found = decisions.union(older, newer)
  table = found.to_table().sort_by("id").to_pylist()
  assert table == [
      {"id": "a", "action": "keep", "label": None, "given_label": 0,
       "run_id": "night1"},
      {"id": "b", "action": "keep", "label": None, "given_label": None,
       "run_id": None},
      {"id": "c", "action": "relabel", "label": 2, "given_label": 0,
       "run_id": "night1"},
      {"id": "d", "action": "drop", "label": None, "given_label": None,
       "run_id": None}]
  assert decisions.union(None, newer) is newer
  assert decisions.union(older, None) is older
  again = Decisions.from_table(found.to_table())
  assert again.to_table().equals(found.to_table())


def test_apply_first_applied_and_stale():
  found = _decisions([("a", "keep", -1, 0, "night1"),
                      ("b", "relabel", 2, -1, ""),
                      ("c", "drop", -1, 1, "night1")])
  ids = pa.array(["x", "a", "b", "c"])
  given = np.array([0, 0, 1, 2])  # c's label changed from 1 to 2.
  applied = decisions.apply(found, ids, given)
  assert applied.decided.tolist() == [False, True, True, False]
  assert applied.stale.tolist() == [False, False, False, True]
  assert applied.actions.tolist() == ["", "keep", "relabel", ""]
  assert applied.labels.tolist() == [-1, -1, 2, -1]
  assert decisions.reviewed(found, ids, given).tolist() == [
      False, True, False, False]
  assert decisions.reviewed(found, ids, np.array([0, 1, 1, 2])).tolist() == [
      False, False, False, False]
  assert decisions.count_applied(applied) == decisions.DecisionCounts(
      keep=1, relabel=1, stale=1)
  rows = pa.Table.from_batches([decisions.found_rows(ids, given, applied)])
  assert rows.to_pylist() == [{"id": "a", "given_label": 0},
                              {"id": "b", "given_label": 1},
                              {"id": "c", "given_label": 2}]
  recorded = found.first_applied(rows, "night2").to_table().to_pylist()
  assert [(r["id"], r["given_label"], r["run_id"]) for r in recorded] == [
      ("a", 0, "night1"), ("b", 1, "night2"), ("c", 1, "night1")]


def test_not_found_counts_and_shows_at_most_100():
  many = _decisions([(f"id{i:03d}", "drop", -1, -1, "") for i in range(150)])
  found = pa.table({"id": ["id000", "id149"]})
  counts = decisions.not_found(many, found)
  assert counts.not_found == 148
  assert counts.not_found_ids[:2] == ("id001", "id002")
  assert len(counts.not_found_ids) == 100
  merged = counts.merge(decisions.DecisionCounts(keep=2, drop=1))
  assert merged.to_dict() == {
      "decisions_applied": {"total": 3, "keep": 2, "drop": 1, "relabel": 0,
                            "stale": 0},
      "decisions_not_found": {"count": 148,
                              "ids": list(counts.not_found_ids)}}


def test_decisions_and_decisions_parquet_on_gcs(tmp_path, gcs):
  local = _csv(tmp_path, "id,action,label\na,relabel,dog\nb,drop,\n")
  upload(local, f"{gcs}/review/decisions.csv")
  found = decisions.read(f"{gcs}/review/decisions.csv", NAMES)
  assert _as_dict(found) == {"a": ("relabel", 1), "b": ("drop", -1)}
  decisions.write(f"{gcs}/run/decisions.parquet", found)
  again = decisions.read_parquet(f"{gcs}/run/decisions.parquet",
                                 "gate.baseline")
  assert again.to_table().equals(found.to_table())
  with pytest.raises(ConfigError, match=r"^output.clean.decisions: expected"
                     r" a readable file. Received: 'gs://.*/none.csv' \(not"
                     r" found\)$"):
    decisions.read(f"{gcs}/review/none.csv", NAMES)


def test_a_damaged_decisions_parquet_names_the_key(tmp_path):
  path = tmp_path / "decisions.parquet"
  path.write_bytes(b"not parquet")
  with pytest.raises(ConfigError, match=r"^gate.baseline: expected its"
                     r" decisions.parquet as lossaudit writes it \(id, action,"
                     r" label, given_label, run_id\). Received: '.*'"
                     r" \(ArrowInvalid"):
    decisions.read_parquet(str(path), "gate.baseline")


@pytest.mark.parametrize("text", [
    "id, action, label\nrow-1, drop,\n",
    "\ufeffid,action,label\nrow-1,drop,\n",
    '"id","action","label"\n"row-1","drop",""\n',
    "\ufeff\"id\",\"action\",\"label\"\r\nrow-1,drop,\r\n",
])
def test_csv_header_as_spreadsheets_save_it(tmp_path, text):
  """A header with spaces, a UTF-8 byte-order mark (Excel's "CSV UTF-8")
  or quoted fields is the header."""
  path = tmp_path / "decisions.csv"
  path.write_bytes(text.encode("utf-8"))
  assert _as_dict(decisions.read(str(path), NAMES)) == {
      "row-1": ("drop", -1)}


@pytest.mark.parametrize("change, message", [
    ({"annotations": 5}, r"task 0: expected annotations, a list. Received: 5"),
    ({"annotations": [{"result": 7}]},
     r"task 0: expected an annotation's result, a list. Received: 7"),
    ({"annotations": [{"result": [{"from_name": "label", "type": "choices",
                                   "value": ["dog"]}]}]},
     r"task 0: expected a result's value, an object with choices."
     r" Received: \['dog'\]"),
    ({"annotations": [{"result": [{"from_name": "label", "type": "choices",
                                   "value": {"choices": "dog"}}]}]},
     r"task 0: expected a result's value.choices, a list. Received: 'dog'"),
])
def test_label_studio_odd_shapes_name_the_task(tmp_path, change, message):
  task = _task(1, "a", 0, [])
  task.update(change)
  path = tmp_path / "export.json"
  path.write_text(json.dumps([task]))
  with pytest.raises(ConfigError, match=r"^output.clean.decisions: .*"
                     + message + "$"):
    decisions.read(str(path), NAMES)
