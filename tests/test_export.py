"""`lossaudit export`: a real run's flagged rows as Label Studio tasks or
CSV."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit.export import NO_PREVIEW_IMAGE
from lossaudit.pipelines import cli
from tests.helpers import (
  noisy_probs,
  predictions_config,
  run_audit,
  upload,
  write_predictions,
)

VOCABULARY = ["cat", "dog", "emu", "yak"]
# A PNG data URI (the previews' `image` value).
PNG = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A real run on one dataset, flagging label issues and losses over 2:
  `named`, with a vocabulary; and the root."""
  root = tmp_path_factory.mktemp("export")
  probs, given, _ = noisy_probs(600, len(VOCABULARY), 0.1, seed=3)
  ids = np.char.add("r", np.arange(len(given)).astype(str))
  os.makedirs(root / "data")
  write_predictions(root / "data" / "d.parquet", ids, given, probs)
  found = {}
  found["named"] = _run(root, "named", VOCABULARY)
  found["root"] = root
  return found


def _run(root, name, vocabulary):
  config = predictions_config(
      str(root / "data" / "*.parquet"), str(root / name),
      flag={"label_issues": "confident_learning", "loss_threshold": 2.0},
      input={"label_vocabulary": vocabulary})
  return str(root / name), run_audit(config)


@pytest.fixture(scope="module")
def plain(runs):
  """The same run without a vocabulary."""
  return _run(runs["root"], "plain", None)


@pytest.fixture(scope="module")
def night2(runs):
  """`named` again with a lower loss threshold, against `named`
  (`gate.baseline`)."""
  root = runs["root"]
  config = predictions_config(
      str(root / "data" / "*.parquet"), str(root / "night2"),
      flag={"label_issues": "confident_learning", "loss_threshold": 1.5},
      input={"label_vocabulary": VOCABULARY},
      gate={"baseline": str(root / "named")})
  return str(root / "night2"), run_audit(config)


def export(capsys, *argv):
  """`lossaudit export ARGV`: its exit code, stdout and stderr."""
  code = cli.main(["export", *map(str, argv)])
  out, err = capsys.readouterr()
  return code, out, err


def flagged(run_dir):
  """The run's flagged rows, read without lossaudit, by score descending
  then id."""
  rows = pd.read_parquet(os.path.join(run_dir, "flagged"))
  return rows.sort_values(["score", "id"], ascending=[False, True],
                          ignore_index=True)


def check_task_shape(task):
  """Label Studio's JSON import format for a task with pre-annotations:
  `data`, and `predictions` of `model_version`, `score` and `result`
  items of `from_name`, `to_name`, `type` and `value`."""
  assert set(task) <= {"data", "predictions"}
  data = task["data"]
  assert {"id", "given_label", "given_label_id", "suggested_label", "score",
          "reasons"} <= set(data) <= {"id", "given_label", "given_label_id",
                                      "suggested_label", "score", "reasons",
                                      "image", "text"}
  assert isinstance(data["id"], str) and isinstance(data["given_label"], str)
  assert isinstance(data["given_label_id"], int)
  for prediction in task.get("predictions", []):
    assert set(prediction) == {"model_version", "score", "result"}
    assert isinstance(prediction["score"], float)
    for result in prediction["result"]:
      assert set(result) == {"from_name", "to_name", "type", "value"}
      assert result["type"] == "choices"
      assert isinstance(result["value"]["choices"], list)


def label_config(path):
  """The labelling config's object names and its choices by control."""
  view = ET.parse(path).getroot()
  assert view.tag == "View"
  objects = {e.get("name") for e in view if e.tag in ("Image", "Text")}
  choices = {c.get("name"): (c.get("toName"),
                             [e.get("value") for e in c.iter("Choice")])
             for c in view.iter("Choices")}
  return objects, choices


def test_label_studio_one_task_per_label_issue(runs, tmp_path, capsys):
  run_dir, summary = runs["named"]
  out = tmp_path / "review.json"
  code, printed, _ = export(capsys, run_dir, "--format", "label-studio",
                            "--output", out, "--reasons", "label_issue")
  assert code == 0
  tasks = json.loads(out.read_text())
  rows = flagged(run_dir)
  issues = rows[rows["reasons"].map(lambda r: "label_issue" in r)]
  assert len(issues) == summary["flagged"]["by_reason"]["label_issue"] > 10
  assert len(tasks) == len(issues)
  assert [t["data"]["id"] for t in tasks] == list(issues["id"])
  for task, (_, row) in zip(tasks, issues.iterrows()):
    check_task_shape(task)
    assert task["data"]["given_label"] == VOCABULARY[row["given_label"]]
    assert task["data"]["given_label_id"] == row["given_label"]
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == f"lossaudit {summary['run_id']}"
    assert prediction["score"] == pytest.approx(row["score"])
    (result,) = prediction["result"]
    assert result["value"]["choices"] == [
        VOCABULARY[int(row["suggested_label"])]]
    assert result["from_name"] == "label" and result["to_name"] == "id_text"
  config = f"{out}.label-config.xml"
  assert f"labelling config: {config}" in printed
  objects, choices = label_config(config)
  assert objects == {"id_text"}
  assert choices == {"label": ("id_text", VOCABULARY),
                     "action": ("id_text", ["drop"])}


# Without a vocabulary in every run: tests/test_review_workflow.py.
@pytest.mark.slow
def test_label_studio_every_flagged_row_without_a_vocabulary(plain, tmp_path,
                                                              capsys):
  run_dir, summary = plain
  out = tmp_path / "all.json"
  assert export(capsys, run_dir, "--format", "label-studio", "--output",
                out)[0] == 0
  tasks = json.loads(out.read_text())
  rows = flagged(run_dir)
  assert len(tasks) == len(rows) == summary["flagged"]["total"]
  with_suggestion = rows["suggested_label"].notna()
  assert 0 < with_suggestion.sum() < len(rows)
  for task, (_, row), suggested in zip(tasks, rows.iterrows(),
                                       with_suggestion):
    check_task_shape(task)
    assert task["data"]["given_label"] == str(row["given_label"])
    assert ("predictions" in task) == suggested
    if suggested:
      assert task["predictions"][0]["result"][0]["value"]["choices"] == [
          str(int(row["suggested_label"]))]
    else:
      assert task["data"]["suggested_label"] == ""
  _, choices = label_config(f"{out}.label-config.xml")
  assert choices["label"][1] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("name", [
    "named", pytest.param("plain", marks=pytest.mark.slow)])
def test_csv_adds_up_to_the_flagged_rows(runs, request, tmp_path, capsys,
                                         name):
  run_dir, summary = (runs["named"] if name == "named" else
                      request.getfixturevalue("plain"))
  rows = flagged(run_dir)
  every = tmp_path / "all.csv"
  assert export(capsys, run_dir, "--format", "csv", "--output", every)[0] == 0
  found = pd.read_csv(every, keep_default_na=False, dtype=str)
  assert list(found.columns) == [
      "id", "given_label", "given_class", "suggested_label",
      "suggested_class", "score", "reasons", "status"]
  assert list(found["id"]) == list(rows["id"])
  assert len(found) == summary["flagged"]["total"]
  assert list(found["given_label"]) == [str(k) for k in rows["given_label"]]
  assert list(found["suggested_label"]) == [
      "" if pd.isna(k) else str(int(k)) for k in rows["suggested_label"]]
  names = VOCABULARY if name == "named" else None
  assert list(found["given_class"]) == [
      names[k] if names else "" for k in rows["given_label"]]
  assert list(found["suggested_class"]) == [
      "" if pd.isna(k) or not names else names[int(k)]
      for k in rows["suggested_label"]]
  assert list(found["reasons"]) == [";".join(r) for r in rows["reasons"]]
  np.testing.assert_allclose(found["score"].astype(float), rows["score"])
  assert set(found["status"]) == {""}
  # Each reason's rows, and the rows of both, add up.
  counts = {}
  for reason in summary["flagged"]["by_reason"]:
    out = tmp_path / f"{reason}.csv"
    assert export(capsys, run_dir, "--format", "csv", "--output", out,
                  "--reasons", reason)[0] == 0
    counts[reason] = len(pd.read_csv(out))
  assert counts == summary["flagged"]["by_reason"]
  both = tmp_path / "both.csv"
  assert export(capsys, run_dir, "--format", "csv", "--output", both,
                "--reasons", ",".join(counts))[0] == 0
  assert len(pd.read_csv(both)) == len(rows)


@pytest.mark.slow
def test_csv_status_against_a_baseline(runs, night2, tmp_path, capsys):
  run_dir, summary = night2
  out = tmp_path / "night2.csv"
  assert export(capsys, run_dir, "--format", "csv", "--output", out)[0] == 0
  found = pd.read_csv(out, keep_default_na=False)
  before = set(flagged(runs["named"][0])["id"])
  assert list(found["status"]) == [
      "persistent" if i in before else "new" for i in found["id"]]
  assert (found["status"] == "new").sum() == summary["flagged"]["new"] > 0
  assert (found["status"] == "persistent").sum() == len(before)


def write_previews(run_dir, rows):
  pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
      ("id", pa.string()), ("input", pa.string()), ("kind", pa.string()),
      ("value", pa.string()), ("more", pa.int64())])),
                 os.path.join(run_dir, "previews.parquet"))


def copy_run(runs, tmp_path, name="named"):
  copied = str(tmp_path / "run")
  shutil.copytree(runs[name][0], copied)
  return copied


def test_images_from_previews(runs, tmp_path, capsys):
  run_dir = copy_run(runs, tmp_path)
  ids = list(flagged(run_dir)["id"])
  # Every row an image (two inputs: the first by name is shown), one a note.
  write_previews(run_dir, [
      {"id": i, "input": "b_pixels", "kind": "image", "value": f"{PNG}{i}",
       "more": 0} for i in ids] + [
           {"id": i, "input": "a_pixels", "kind": "image", "value": PNG,
            "more": 0} for i in ids[:3]] + [
                {"id": ids[0], "input": "c", "kind": "note", "value": "x",
                 "more": 0}])
  out = tmp_path / "images.json"
  assert export(capsys, run_dir, "--format", "label-studio", "--output",
                out)[0] == 0
  tasks = json.loads(out.read_text())
  assert [t["data"]["image"] for t in tasks] == (
      [PNG] * 3 + [f"{PNG}{i}" for i in ids[3:]])
  assert not any("text" in t["data"] for t in tasks)
  assert {t["predictions"][0]["result"][0]["to_name"]
          for t in tasks if "predictions" in t} == {"image"}
  objects, choices = label_config(f"{out}.label-config.xml")
  assert objects == {"image", "id_text"}
  assert choices["label"][0] == choices["action"][0] == "image"
  view = ET.parse(f"{out}.label-config.xml").getroot()
  assert view.find("Image").get("value") == "$image"


def test_images_of_some_rows_the_others_blank(runs, tmp_path, capsys):
  """Previews cover the report's rows only (report.max_rows): the tasks
  beyond get a blank image, so every task keeps the Image view, and the
  command says how many."""
  run_dir = copy_run(runs, tmp_path)
  ids = list(flagged(run_dir)["id"])
  write_previews(run_dir, [{"id": i, "input": "pixels", "kind": "image",
                            "value": f"{PNG}{i}", "more": 0}
                           for i in ids[:5]])
  out = tmp_path / "some.json"
  code, told, _ = export(capsys, run_dir, "--format", "label-studio",
                         "--output", out)
  assert code == 0
  tasks = json.loads(out.read_text())
  assert [t["data"]["image"] for t in tasks] == [
      f"{PNG}{i}" for i in ids[:5]] + [NO_PREVIEW_IMAGE] * (len(ids) - 5)
  objects, choices = label_config(f"{out}.label-config.xml")
  assert objects == {"image", "id_text"} and choices["label"][0] == "image"
  assert (f"{len(ids) - 5} of the {len(ids)} tasks have no image among the"
          " run's previews (beyond report.max_rows)") in told


def test_text_previews_of_some_rows(runs, tmp_path, capsys):
  run_dir = copy_run(runs, tmp_path)
  ids = list(flagged(run_dir)["id"])
  write_previews(run_dir, [{"id": i, "input": "review", "kind": "text",
                            "value": f"text of {i} <b>&</b>", "more": 0}
                           for i in ids[::2]])
  out = tmp_path / "text.json"
  assert export(capsys, run_dir, "--format", "label-studio", "--output",
                out)[0] == 0
  tasks = json.loads(out.read_text())
  assert [t["data"].get("text") for t in tasks] == [
      f"text of {i} <b>&</b>" if k % 2 == 0 else None
      for k, i in enumerate(ids)]
  # Not every task has text: the choices are made on the id.
  objects, choices = label_config(f"{out}.label-config.xml")
  assert objects == {"id_text"} and choices["label"][0] == "id_text"


def test_an_export_is_replaced_and_nothing_else(runs, tmp_path, capsys):
  run_dir = runs["named"][0]
  out = tmp_path / "review.json"
  for _ in range(2):
    assert export(capsys, run_dir, "--format", "label-studio", "--output",
                  out)[0] == 0
  first = out.read_text()
  assert export(capsys, run_dir, "--format", "label-studio", "--output", out,
                "--reasons", "label_issue")[0] == 0
  assert len(json.loads(out.read_text())) < len(json.loads(first))
  csv = tmp_path / "review.csv"
  for _ in range(2):
    assert export(capsys, run_dir, "--format", "csv", "--output", csv)[0] == 0
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_on_gcs_as_locally(runs, tmp_path, capsys, gcs):
  run_dir = runs["named"][0]
  remote = f"{gcs}/export-run"
  upload(run_dir, remote)
  local = tmp_path / "local.json"
  assert export(capsys, run_dir, "--format", "label-studio", "--output",
                local)[0] == 0
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  for fmt, name in (("label-studio", "tasks.json"), ("csv", "rows.csv")):
    target = f"{remote}-out/{name}"
    assert export(capsys, remote, "--format", fmt, "--output", target)[0] == 0
    with FileSystems.open(target) as f:
      got = f.read()
    mine = tmp_path / f"mine-{name}"
    assert export(capsys, run_dir, "--format", fmt, "--output", mine)[0] == 0
    assert got == mine.read_bytes()
  with FileSystems.open(f"{remote}-out/tasks.json.label-config.xml") as f:
    assert f.read() == (tmp_path / "local.json.label-config.xml").read_bytes()


# Errors: exit 2 with one line naming the argument.


def test_a_directory_without_a_run(tmp_path, capsys):
  code, _, err = export(capsys, tmp_path, "--format", "csv", "--output",
                        tmp_path / "x.csv")
  assert code == 2
  assert err == (
      "lossaudit: error: export: RUN_DIR: expected the output.dir of a"
      f" completed run (one with summary.json). Received: {str(tmp_path)!r}\n")


def test_unknown_reasons(runs, tmp_path, capsys):
  code, _, err = export(capsys, runs["named"][0], "--format", "csv",
                        "--output", tmp_path / "x.csv", "--reasons",
                        "label_issue,label_isue")
  assert code == 2 and err.count("\n") == 1
  assert err.startswith(
      "lossaudit: error: export: --reasons: expected a comma-separated list"
      " of flag reasons from ['")
  assert "'label_issue'" in err and "'loss_threshold'" in err
  assert err.endswith(
      "Received: 'label_issue,label_isue' (unknown: 'label_isue')\n")
  code, _, err = export(capsys, runs["named"][0], "--format", "csv",
                        "--output", tmp_path / "x.csv", "--reasons", "")
  assert code == 2 and err.endswith("Received: ''\n")
  assert not os.path.exists(tmp_path / "x.csv")


@pytest.mark.parametrize("kind", ["directory", "other file", "link",
                                  "reserved", "under a file", "config"])
def test_bad_output(runs, tmp_path, capsys, kind):
  path = tmp_path / "out.json"
  mine = b"{\"mine\": 1}\n"
  if kind == "directory":
    path.mkdir()
    expected = (f"--output: expected a file path for the export. Received:"
                f" {str(path)!r} (a directory)")
  elif kind == "other file":
    path.write_bytes(mine)
    expected = ("--output: expected a new file, or an export lossaudit"
                " wrote: the file there is something else, and export does"
                f" not overwrite it. Received: {str(path)!r}")
  elif kind == "link":
    os.symlink(tmp_path / "elsewhere.json", path)
    expected = ("--output: expected a new file, or an export lossaudit wrote:"
                " the path is not a regular file (a FIFO, device, socket or"
                " symbolic link), which export never opens or replaces."
                f" Received: {str(path)!r}")
  elif kind == "reserved":
    path = tmp_path / "summary.json"
    expected = ("--output: expected a file name other than lossaudit's own"
                " outputs ['summary.json', 'report.html',"
                " '.lossaudit-run.json', '.lossaudit-lock.json']. Received:"
                f" {str(path)!r}")
  elif kind == "under a file":
    (tmp_path / "file").write_bytes(mine)
    path = tmp_path / "file" / "out.json"
    expected = ("--output: expected a location where the export can be"
                f" written. Received: {str(path)!r} (Not a directory)")
  else:
    config = tmp_path / "out.json.label-config.xml"
    config.write_bytes(mine)
    expected = ("--output: expected a new file, or an export lossaudit"
                " wrote: the file there is something else, and export does"
                f" not overwrite it. Received: {str(config)!r}")
  code, _, err = export(capsys, runs["named"][0], "--format", "label-studio",
                        "--output", path)
  assert (code, err) == (2, f"lossaudit: error: export: {expected}\n")
  if kind in ("other file", "config"):
    assert sorted(os.listdir(tmp_path)) == [
        "out.json" if kind == "other file" else "out.json.label-config.xml"]
    assert (tmp_path / os.listdir(tmp_path)[0]).read_bytes() == mine


def test_label_studio_needs_class_labels(runs, tmp_path, capsys):
  run_dir = copy_run(runs, tmp_path)
  for name in os.listdir(os.path.join(run_dir, "flagged")):
    path = os.path.join(run_dir, "flagged", name)
    table = pq.read_table(path)
    pq.write_table(table.select(["id", "loss", "reasons", "score"]), path)
  code, _, err = export(capsys, run_dir, "--format", "label-studio",
                        "--output", tmp_path / "x.json")
  assert (code, err) == (2, (
      "lossaudit: error: export: --format: expected csv for a run without"
      " class labels (Label Studio tasks are labelled with a class)."
      " Received: 'label-studio'\n"))
  assert export(capsys, run_dir, "--format", "csv", "--output",
                tmp_path / "x.csv")[0] == 0


def test_a_run_without_its_flagged_files(runs, tmp_path, capsys):
  run_dir = copy_run(runs, tmp_path)
  shutil.rmtree(os.path.join(run_dir, "flagged"))
  total = runs["named"][1]["flagged"]["total"]
  code, _, err = export(capsys, run_dir, "--format", "csv", "--output",
                        tmp_path / "x.csv")
  assert (code, err) == (2, (
      "lossaudit: error: export: RUN_DIR: expected the flagged/ files of a"
      f" completed run ({total} flagged rows). Received: {run_dir!r} (no"
      " flagged/part-* files)\n"))


def test_bad_previews(runs, tmp_path, capsys):
  run_dir = copy_run(runs, tmp_path)
  previews = os.path.join(run_dir, "previews.parquet")
  with open(previews, "wb") as f:
    f.write(b"not parquet")
  code, _, err = export(capsys, run_dir, "--format", "label-studio",
                        "--output", tmp_path / "x.json")
  assert code == 2 and err.count("\n") == 1
  assert err.startswith(
      "lossaudit: error: export: RUN_DIR: expected previews.parquet to be"
      " the previews of a run; it is not Parquet (")
  assert err.endswith(f"). Received: {run_dir!r}\n")
  pq.write_table(pa.table({"id": ["r1"], "value": ["x"]}), previews)
  code, _, err = export(capsys, run_dir, "--format", "label-studio",
                        "--output", tmp_path / "x.json")
  assert (code, err) == (2, (
      "lossaudit: error: export: RUN_DIR: expected previews.parquet to have"
      " the columns ['id', 'input', 'kind', 'value']; it lacks ['input',"
      f" 'kind']. Received: {run_dir!r}\n"))
  assert not os.path.exists(tmp_path / "x.json")


def test_help_lists_export(capsys):
  assert cli.main(["--help"]) == 0
  lines = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("  export ")]
  assert lines == [
      "  export   write flagged rows for review: Label Studio or CSV"]
