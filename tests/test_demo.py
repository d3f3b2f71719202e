"""The demo end to end: real digits, a trained model, flipped labels found."""

import json
import os

import pytest

from lossaudit import ownership
from lossaudit.pipelines import demo


def test_demo_finds_the_flipped_labels(tmp_path, capsys, monkeypatch):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  demo_dir = tmp_path / "demo"
  assert demo.main(["--output", str(demo_dir)]) == 0
  out = demo_dir / "out" / "demo"
  summary = json.loads((out / "summary.json").read_text())
  assert summary["examples_read"] == 899
  assert summary["examples_scored"] == 899
  truth = json.loads(
      (demo_dir / "data" / "demo" / "flipped_ids.json").read_text())
  assert len(truth["flipped_ids"]) == 90
  printed = capsys.readouterr().out
  assert "Flipped labels: 90 of 899" in printed
  precision = float(printed.split("precision ")[1].split(",")[0])
  recall = float(printed.split("recall ")[1].split()[0])
  assert precision >= 0.8 and recall >= 0.8
  for name in ("report.html", "losses", "flagged", "dead_letter"):
    assert os.path.exists(out / name)
  # Everything under --output, laid out as configs/demo.yaml names it.
  assert sorted(os.listdir(tmp_path)) == ["cwd", "demo"]
  assert os.listdir(cwd) == []
  assert sorted(os.listdir(demo_dir)) == ["data", "models", "out"]
  assert os.listdir(demo_dir / "models") == ["demo.keras"]


def _tree(directory):
  """`{relative path: bytes}` of every file under `directory`."""
  return {os.path.relpath(os.path.join(root, n), directory):
          open(os.path.join(root, n), "rb").read()
          for root, _, names in os.walk(directory) for n in names}


@pytest.fixture
def user_files(tmp_path):
  """A directory of the user's files: `mine/notes.txt`, `mine/data.csv`."""
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  (mine / "data.csv").write_text("a,b\n1,2\n")
  return mine


def _refused(argv, capsys, message):
  assert demo.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.err == f"lossaudit: error: {message}\n"
  assert "Building" not in captured.out


def test_demo_refuses_an_audit_directory_with_user_files(tmp_path, capsys,
                                                        monkeypatch):
  audit_dir = tmp_path / "out" / "demo"
  audit_dir.mkdir(parents=True)
  (audit_dir / "data.csv").write_text("a,b\n1,2\n")
  monkeypatch.chdir(tmp_path)
  before = _tree(tmp_path)
  _refused([], capsys,
           "--output: expected a new or empty directory, or an earlier run's"
           " (with .lossaudit-run.json). Received: 'out/demo' (holds files"
           " lossaudit did not write, such as 'data.csv')")
  assert _tree(tmp_path) == before
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_demo_refuses_an_output_that_is_a_file(tmp_path, user_files, capsys):
  output = user_files / "notes.txt"
  _refused(["--output", str(output)],
           capsys, f"--output: expected a directory. Received: '{output}'"
           " (a file)")
  assert output.read_text() == "keep me"


def test_demo_refuses_a_bucket(capsys):
  _refused(["--output", "gs://bucket/demo"], capsys,
           "--output: expected a local directory (the demo builds its data"
           " and model there). Received: 'gs://bucket/demo'")


def test_demo_refuses_data_with_user_files(tmp_path, user_files, capsys):
  before = _tree(tmp_path)
  _refused(["--output", str(tmp_path / "out"), "--data", str(user_files),
            "--model", str(tmp_path / "m.keras")], capsys,
           "--data: expected a new or empty directory, or one holding only"
           " the demo's part-*.tfrecord.gz and flipped_ids.json. Received:"
           f" '{user_files}' (holds 'data.csv')")
  assert _tree(tmp_path) == before


def test_demo_refuses_data_that_is_a_file(tmp_path, user_files, capsys):
  data = user_files / "notes.txt"
  _refused(["--output", str(tmp_path / "out"), "--data", str(data)], capsys,
           f"--data: expected a directory. Received: '{data}' (a file)")
  assert data.read_text() == "keep me"


def test_demo_refuses_data_in_the_output_directory(tmp_path, capsys):
  same = str(tmp_path / "out" / "demo")
  _refused(["--output", str(tmp_path), "--data", same], capsys,
           f"--data: expected a directory other than the audit's output."
           f" Received: '{same}'")
  assert os.listdir(tmp_path) == []


def test_demo_refuses_a_model_directory(tmp_path, user_files, capsys):
  before = _tree(tmp_path)
  _refused(["--output", str(tmp_path / "out"), "--data", str(tmp_path / "d"),
            "--model", str(user_files)], capsys,
           f"--model: expected a .keras file. Received: '{user_files}' (a"
           " directory)")
  assert _tree(tmp_path) == before
  assert sorted(os.listdir(tmp_path)) == ["mine"]


def test_demo_accepts_its_own_earlier_files(tmp_path):
  # What build and a run left: shards, the truth, the marker, a model.
  data, out = tmp_path / "data", tmp_path / "out"
  data.mkdir()
  out.mkdir()
  for index in range(demo.NUM_SHARDS):
    (data / f"part-{index:05d}-of-00004.tfrecord.gz").write_bytes(b"")
  (data / "flipped_ids.json").write_text("{}")
  (out / ownership.MARKER).write_text("{}")
  (out / "mine.txt").write_text("a run deletes only its own files")
  (tmp_path / "m.keras").write_bytes(b"")
  demo.check_paths(str(out), str(data), str(tmp_path / "m.keras"))
  demo.check_paths(str(tmp_path / "new"), str(tmp_path / "new-data"),
                   str(tmp_path / "new.keras"))
  empty = tmp_path / "empty"
  empty.mkdir()
  demo.check_paths(str(empty), str(data), str(tmp_path / "m.keras"))
