"""The demo end to end: real digits, a trained model, flipped labels found."""

import hashlib
import json
import os

import pytest

from lossaudit import ownership
from lossaudit.errors import ConfigError
from lossaudit.pipelines import demo


@pytest.mark.slow  # 12 s: builds the demo and audits it, as scripts/demo does.
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
  model = demo_dir / "models" / "demo.keras"
  assert truth["model"] == os.path.realpath(model)
  # A rerun overwrites its own model, and reads only the audit's own flagged
  # shards: a user's file there is kept, and not read.
  (out / "flagged" / "mine.csv").write_text("id\nnot-a-digit\n")
  assert demo.main(["--output", str(demo_dir)]) == 0
  assert "Flipped labels: 90 of 899" in capsys.readouterr().out
  assert (out / "flagged" / "mine.csv").read_text() == "id\nnot-a-digit\n"
  truth = json.loads(
      (demo_dir / "data" / "demo" / "flipped_ids.json").read_text())
  assert truth["model_sha256"] == demo.model_record(model)["model_sha256"]


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
           " the demo's 4 part-NNNNN-of-00004.tfrecord.gz and flipped_ids.json."
           f" Received: '{user_files}' (holds 'data.csv')")
  assert _tree(tmp_path) == before


def test_demo_refuses_data_with_other_shards(tmp_path, capsys, monkeypatch):
  # Shards of another layout are the user's: never overwritten, nor audited.
  monkeypatch.chdir(tmp_path)
  (tmp_path / "d").mkdir()
  for index in range(8):
    (tmp_path / "d" / f"part-{index:05d}-of-00008.tfrecord.gz").write_text(
        "theirs")
  before = _tree(tmp_path)
  _refused(["--output", "o", "--data", "d"], capsys,
           "--data: expected a new or empty directory, or one holding only"
           " the demo's 4 part-NNNNN-of-00004.tfrecord.gz and flipped_ids.json."
           " Received: 'd' (holds 'part-00000-of-00008.tfrecord.gz')")
  assert _tree(tmp_path) == before


def test_demo_refuses_data_with_a_link_named_as_a_shard(tmp_path, capsys,
                                                       monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "d").mkdir()
  (tmp_path / "theirs.gz").write_text("theirs")
  os.symlink(tmp_path / "theirs.gz",
             tmp_path / "d" / "part-00000-of-00004.tfrecord.gz")
  _refused(["--output", "o", "--data", "d"], capsys,
           "--data: expected a new or empty directory, or one holding only"
           " the demo's 4 part-NNNNN-of-00004.tfrecord.gz and flipped_ids.json."
           " Received: 'd' (holds 'part-00000-of-00004.tfrecord.gz', not a"
           " plain file)")
  assert (tmp_path / "theirs.gz").read_text() == "theirs"
  assert sorted(os.listdir(tmp_path)) == ["d", "theirs.gz"]


def test_demo_refuses_data_that_is_a_file(tmp_path, user_files, capsys):
  data = user_files / "notes.txt"
  _refused(["--output", str(tmp_path / "out"), "--data", str(data)], capsys,
           f"--data: expected a directory. Received: '{data}' (a file)")
  assert data.read_text() == "keep me"


@pytest.mark.parametrize("data", ["out/demo", "out/demo/data", "."])
def test_demo_refuses_data_in_or_around_the_audit_directory(
    tmp_path, capsys, monkeypatch, data):
  # The same, inside it (lossaudit run would refuse it after the build), or
  # holding it (the next run would refuse the data directory).
  monkeypatch.chdir(tmp_path)
  _refused(["--data", data], capsys,
           "--data: expected a directory apart from the audit's output (not"
           f" it, inside it or holding it). Received: '{data}'")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv,name", [
    (["--model", "data/demo/m.keras"], "--data"),
    (["--model", "m.keras", "--data", "m.keras/data"], "--data"),
    (["--model", "out/demo/m.keras"], "the audit's output")])
def test_demo_refuses_a_model_in_or_around_the_other_directories(
    tmp_path, capsys, monkeypatch, argv, name):
  monkeypatch.chdir(tmp_path)
  _refused(argv, capsys, f"--model: expected a path apart from {name} (not in"
           f" it or holding it). Received: '{argv[1]}'")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--data", "--model"])
def test_demo_refuses_a_bucket_for_data_or_model(tmp_path, capsys, flag):
  path = "gs://bucket/demo.keras"
  _refused(["--output", str(tmp_path), flag, path], capsys,
           f"{flag}: expected a local path (the demo builds its data and"
           f" model there). Received: '{path}'")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("blocker,flag,path", [
    ("data", "--data", "data/demo"), ("models", "--model", "models/demo.keras"),
    ("out", "--output", "out/demo")])
def test_demo_refuses_paths_under_a_file(tmp_path, capsys, monkeypatch,
                                         blocker, flag, path):
  monkeypatch.chdir(tmp_path)
  (tmp_path / blocker).write_text("keep me")
  before = _tree(tmp_path)
  _refused([], capsys, f"{flag}: expected a path whose parents are"
           f" directories. Received: '{path}' ('{blocker}' is a file)")
  assert _tree(tmp_path) == before


def test_demo_refuses_a_model_path_not_ending_in_keras(tmp_path, capsys,
                                                       monkeypatch):
  # Keras would refuse it only after the training.
  monkeypatch.chdir(tmp_path)
  _refused(["--model", "m.txt"], capsys,
           "--model: expected a path ending in .keras (the only kind Keras"
           " saves). Received: 'm.txt'")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("model", ["mine.keras", "models/demo.keras"])
def test_demo_refuses_a_model_it_did_not_write(tmp_path, capsys, monkeypatch,
                                               model):
  monkeypatch.chdir(tmp_path)
  os.makedirs(os.path.dirname(model) or ".", exist_ok=True)
  with open(model, "w") as f:
    f.write("the user's model")
  before = _tree(tmp_path)
  _refused(["--model", model] if model == "mine.keras" else [], capsys,
           "--model: expected a new file or the demo's own earlier model (as"
           " --data's flipped_ids.json records it). Received:"
           f" '{model}' (a file the demo did not write)")
  assert _tree(tmp_path) == before


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
  (out / ownership.MARKER).write_text("{}")
  (out / "mine.txt").write_text("a run deletes only its own files")
  model = tmp_path / "m.keras"
  model.write_bytes(b"the demo's model")
  shards = {f"part-{index:05d}-of-00004.tfrecord.gz": hashlib.sha256(
      b"").hexdigest() for index in range(demo.NUM_SHARDS)}
  (data / "flipped_ids.json").write_text(json.dumps(
      dict(demo.model_record(str(model)), shards_sha256=shards)))
  demo.check_paths(str(out), str(data), str(model))
  demo.check_paths(str(tmp_path / "new"), str(tmp_path / "new-data"),
                   str(tmp_path / "new.keras"))
  empty = tmp_path / "empty"
  empty.mkdir()
  demo.check_paths(str(empty), str(data), str(model))
  # Not once the user replaced it, nor through another data directory.
  with pytest.raises(ConfigError, match="a file the demo did not write"):
    demo.check_paths(str(empty), str(tmp_path / "other"), str(model))
  model.write_bytes(b"the user's model")
  with pytest.raises(ConfigError, match="a file the demo did not write"):
    demo.check_paths(str(out), str(data), str(model))


def test_demo_refuses_user_files_with_the_demo_names(tmp_path, capsys):
  data = tmp_path / "data" / "demo"
  data.mkdir(parents=True)
  shard = data / "part-00000-of-00004.tfrecord.gz"
  shard.write_text("USERDATA")
  before = _tree(tmp_path)
  _refused(["--output", str(tmp_path)], capsys,
           "--data: expected a new or empty directory, or the demo's own"
           " earlier data (as its flipped_ids.json records it). Received:"
           f" '{data}' ('part-00000-of-00004.tfrecord.gz' is not the demo's)")
  (data / "flipped_ids.json").write_text('{"mine": 1}')
  _refused(["--output", str(tmp_path)], capsys,
           "--data: expected a new or empty directory, or the demo's own"
           " earlier data (as its flipped_ids.json records it). Received:"
           f" '{data}' ('flipped_ids.json' is not the demo's)")
  assert _tree(tmp_path) == dict(before, **{
      os.path.join("data", "demo", "flipped_ids.json"): b'{"mine": 1}'})


def test_demo_build_records_its_shards(tmp_path):
  data = tmp_path / "data"
  demo.build(str(data), None)
  demo.check_paths(str(tmp_path / "out"), str(data),
                   str(tmp_path / "m.keras"))
  shard = data / "part-00002-of-00004.tfrecord.gz"
  shard.write_bytes(shard.read_bytes() + b"\0")
  with pytest.raises(ConfigError, match="'part-00002-of-00004.tfrecord.gz'"
                     " is not the demo's"):
    demo.check_paths(str(tmp_path / "out"), str(data),
                     str(tmp_path / "m.keras"))
