"""What a run may touch: the marker, the lock, overlap and by-name clean-up.

Every refusal asserts its exit code and message, and that the user's files
are byte-for-byte intact afterwards.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest

from lossaudit import inputs, ownership
from lossaudit.errors import ConfigError, one_line
from lossaudit.pipelines import audit
from tests.helpers import base_config

RUN_A = "20261123T010000Z-aaaaaa"
RUN_B = "20261123T020000Z-bbbbbb"
# A file Beam writes in its temporary folder (`FileBasedSink.open_writer`).
BEAM_FILE = "0f1e2d3c-4b5a-4697-8877-665544332211.part.parquet"
HOUR = 3600.0


def snapshot(root):
  """`{relative path: sha256}` of every file under `root`."""
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = hashlib.sha256(
            f.read()).hexdigest()
  return found


def run_info(run_id=RUN_A, started=1000.0, host=None, pid=None,
             pid_namespace=None):
  this = ownership.RunInfo.this_process(run_id, started)
  return ownership.RunInfo(
      run_id, host or this.host, this.pid if pid is None else pid, started,
      this.pid_namespace if pid_namespace is None else pid_namespace)


def claim(directory, run=None, overwrite=False, timeout=HOUR, now=1000.0):
  return ownership.claim(str(directory), run or run_info(),
                         overwrite=overwrite, lock_timeout=timeout,
                         clock=lambda: now)


def user_project(root):
  """A project whose own `losses/` package sits where lossaudit writes."""
  files = {
      "losses/__init__.py": "",
      "losses/mine.py": "def loss(y_true, y_pred):\n  return y_pred\n",
      "losses/part-1.parquet": "not lossaudit's: no -of-NNNNN",
      "summary.json.bak": "{}",
      "thesis.tex": "\\documentclass{article}",
      "flagged/notes.csv": "id,why\n",
  }
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  return root


def dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


# --- Names -----------------------------------------------------------------


@pytest.mark.parametrize("name, own", [
    ("summary.json", True),
    ("report.html", True),
    ("drift.json", True),
    ("summary.json.tmp-0123abcd", True),
    ("losses/part-00000-of-00003.parquet", True),
    ("flagged/part-00002-of-00003.parquet", True),
    ("dead_letter/part-00000-of-00001.jsonl", True),
    ("losses/beam-temp-part-" + "0" * 32 + "/" + BEAM_FILE, True),
    ("losses/beam-temp-part-" + "0" * 32 + "/3f2a", False),
    ("losses/beam-temp-part-" + "0" * 32 + "/keep.csv", False),
    (f".scratch/{RUN_A}/scored-1.arrows", True),
    ("losses/mine.py", False),
    ("losses/__init__.py", False),
    ("losses/part-1.parquet", False),
    ("losses/sub/part-00000-of-00001.parquet", False),
    ("summary.json.bak", False),
    (".scratch/notes.txt", False),
    ("thesis.tex", False),
    (".lossaudit-run.json", False),
])
def test_own_output_names(name, own):
  assert ownership.is_own_output(name) is own


# --- Claim: protected and foreign directories --------------------------------


def test_current_home_and_root_directories_are_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "home").mkdir()
  before = snapshot(tmp_path)
  cases = {".": "the current directory", str(tmp_path): "the current directory",
           str(tmp_path / "home"): "the home directory",
           "/": "a filesystem root"}
  for directory, what in cases.items():
    with pytest.raises(ConfigError) as e:
      claim(directory, overwrite=True)
    assert str(e.value) == (
        f"output.dir: expected a directory of its own; {directory!r} is"
        f" {what}, which a run never takes. Received: {directory!r}")
  assert snapshot(tmp_path) == before


def test_a_bucket_root_is_refused():
  with pytest.raises(ConfigError, match=r"^output.dir: expected a directory"
                     r" inside a bucket; a run never takes a whole bucket."
                     r" Received: 'gs://b/'$"):
    claim("gs://b/")


def test_a_directory_with_files_lossaudit_did_not_write_is_refused(tmp_path):
  project = user_project(tmp_path / "proj")
  before = snapshot(project)
  with pytest.raises(ConfigError) as e:
    claim(project)
  assert str(e.value) == (
      "output.dir: holds files lossaudit did not write; choose a new or empty"
      " directory (or set output.overwrite: true, which still deletes only"
      f" lossaudit's own files). Received: {str(project)!r}")
  assert snapshot(project) == before
  assert not (project / ownership.LOCK).exists()


def test_overwrite_deletes_only_lossaudit_names(tmp_path):
  project = user_project(tmp_path / "proj")
  user_files = snapshot(project)
  own = ["summary.json", "report.html", "drift.json",
         "summary.json.tmp-0123abcd", "losses/part-00000-of-00002.parquet",
         "losses/beam-temp-part-" + "f" * 32 + "/" + BEAM_FILE,
         "dead_letter/part-00000-of-00001.jsonl",
         f".scratch/{RUN_B}/scored-1.arrows"]
  for name in own:
    (project / name).parent.mkdir(parents=True, exist_ok=True)
    (project / name).write_text("old run")
  held = claim(project, overwrite=True)
  deleted = held.clear_previous()
  assert sorted(os.path.relpath(p, project) for p in deleted) == sorted(own)
  after = snapshot(project)
  assert {k: after[k] for k in user_files} == user_files
  assert set(after) == set(user_files) | {ownership.MARKER, ownership.LOCK}
  assert not (project / ".scratch").exists()
  assert not (project / "dead_letter").exists()
  assert (project / "losses").is_dir()  # Still holds the user's package.
  marker = json.loads((project / ownership.MARKER).read_text())
  assert marker["run_id"] == RUN_A and marker["pid"] == os.getpid()
  held.release()
  assert set(snapshot(project)) == set(user_files) | {ownership.MARKER}


def test_an_empty_beam_temp_folder_of_a_stopped_run_is_removed(tmp_path):
  out = tmp_path / "out"
  held = claim(out)
  held.clear_previous()
  empty = out / "flagged" / ("beam-temp-part-" + "0a" * 16)
  empty.mkdir(parents=True)
  mine = out / "losses" / "beam-temp-part-mine"  # Not Beam's name: kept.
  mine.mkdir(parents=True)
  held.release()
  again = claim(out, run_info(RUN_B))
  assert again.clear_previous() == []
  assert not (out / "flagged").exists()
  assert mine.is_dir()
  again.release()


def test_a_directory_with_the_marker_is_taken_and_refused_without_it(
    tmp_path):
  out = tmp_path / "out"
  held = claim(out)
  held.clear_previous()
  (out / "summary.json").write_text("{}")
  held.release()
  again = claim(out, run_info(RUN_B))  # Marker present: no overwrite needed.
  again.clear_previous()
  assert not (out / "summary.json").exists()
  again.release()
  (out / ownership.MARKER).unlink()
  (out / "mine.txt").write_text("x")
  with pytest.raises(ConfigError, match="holds files lossaudit did not write"):
    claim(out)


def test_a_failed_set_up_leaves_no_directory_behind(tmp_path):
  held = claim(tmp_path / "new" / "2026-11-23" / "run")
  assert os.listdir(tmp_path / "new" / "2026-11-23" / "run") == [
      ownership.LOCK]
  held.release()
  assert os.listdir(tmp_path) == []


# --- The lock ---------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
  out = tmp_path / "out"
  first = claim(out)
  lock = json.loads((out / ownership.LOCK).read_text())
  assert lock == {"run_id": RUN_A, "host": socket.gethostname(),
                  "pid": os.getpid(),
                  "pid_namespace": os.readlink("/proc/self/ns/pid"),
                  "started": 1000.0, "started_utc": "1970-01-01T00:16:40Z"}
  with pytest.raises(ConfigError) as e:
    claim(out, run_info(RUN_B), overwrite=True)
  assert str(e.value) == (
      f"output.dir: expected no other run writing there; run {RUN_A} (host"
      f" {socket.gethostname()}, pid {os.getpid()}, started 1970-01-01"
      f" 00:16:40 UTC) holds its lock {ownership.LOCK} (wait for it to end, or"
      " delete the lock if that run is dead)")
  first.release()
  assert not (out / ownership.LOCK).exists()
  claim(out, run_info(RUN_B)).release()


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path, caplog):
  out = tmp_path / "out"
  out.mkdir()
  (out / ownership.LOCK).write_bytes(
      run_info(RUN_B, pid=dead_pid()).to_json())
  with caplog.at_level(logging.WARNING):
    held = claim(out, now=1001.0)
  assert f"took over the lock on output.dir from run {RUN_B}" in caplog.text
  assert "its process is gone" in caplog.text
  assert json.loads((out / ownership.LOCK).read_text())["run_id"] == RUN_A
  held.release()


def test_a_live_run_keeps_its_lock_past_the_timeout(tmp_path):
  out = tmp_path / "out"
  claim(out, now=1000.0)
  with pytest.raises(ConfigError, match=f"run {RUN_A} .host"):
    claim(out, run_info(RUN_B), now=1000.0 + 100 * HOUR)


@pytest.mark.parametrize("field, value", [
    ("started", float("nan")), ("started", 1e20), ("pid", 2**40),
    ("pid", -3)])
def test_a_lock_with_impossible_values_is_an_unreadable_lock(tmp_path, field,
                                                             value):
  out = tmp_path / "out"
  out.mkdir()
  lock = json.loads(run_info(RUN_B, host="another-host").to_json())
  lock[field] = value
  (out / ownership.LOCK).write_text(json.dumps(lock))
  written = os.stat(out / ownership.LOCK).st_mtime
  with pytest.raises(ConfigError, match="a run whose lock cannot be read"):
    claim(out, now=written + 10)
  claim(out, now=written + HOUR + 10).release()


def test_a_dead_pid_of_another_pid_namespace_is_not_taken_over(tmp_path):
  """Two containers sharing a host name and a disk: a pid that does not
  exist here may be a live run there."""
  out = tmp_path / "out"
  out.mkdir()
  other = run_info(RUN_B, pid=dead_pid(), pid_namespace="pid:[1]")
  (out / ownership.LOCK).write_bytes(other.to_json())
  with pytest.raises(ConfigError, match=f"run {RUN_B} .host"):
    claim(out, now=1001.0)
  claim(out, now=1000.0 + HOUR + 1).release()


@pytest.mark.parametrize("age, taken", [(HOUR - 1, False), (HOUR + 1, True)])
def test_a_lock_older_than_the_timeout_is_taken_over(tmp_path, caplog, age,
                                                      taken):
  out = tmp_path / "out"
  out.mkdir()
  other = run_info(RUN_B, started=5000.0, host="another-host", pid=1)
  (out / ownership.LOCK).write_bytes(other.to_json())
  if not taken:
    with pytest.raises(ConfigError, match=f"run {RUN_B} .host another-host"):
      claim(out, now=5000.0 + age)
    return
  with caplog.at_level(logging.WARNING):
    claim(out, now=5000.0 + age).release()
  assert "older than output.lock_timeout (3600 s)" in caplog.text


def test_an_unreadable_lock_is_refused_until_it_times_out(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / ownership.LOCK).write_bytes(b"\x00half-written")
  written = os.stat(out / ownership.LOCK).st_mtime
  with pytest.raises(ConfigError, match="a run whose lock cannot be read"):
    claim(out, now=written + 10)
  claim(out, now=written + HOUR + 10).release()


def test_release_keeps_scratch_and_locks_of_other_runs(tmp_path):
  out = tmp_path / "out"
  held = claim(out)
  held.clear_previous()
  for run in (RUN_A, RUN_B):
    (out / ".scratch" / run).mkdir(parents=True)
    (out / ".scratch" / run / "scored-1.arrows").write_text(run)
  # Run B took the lock over (say, after the timeout): A must not remove it.
  (out / ownership.LOCK).write_bytes(run_info(RUN_B).to_json())
  held.release()
  assert not (out / ".scratch" / RUN_A).exists()
  assert (out / ".scratch" / RUN_B / "scored-1.arrows").read_text() == RUN_B
  assert json.loads((out / ownership.LOCK).read_text())["run_id"] == RUN_B


def test_gcs_lock_marker_and_clean_up(gcs):
  from apache_beam.io.filesystems import FileSystems

  out = f"{gcs}/owned"
  held = claim(out)
  with pytest.raises(ConfigError, match=f"run {RUN_A} .host"):
    claim(out, run_info(RUN_B))
  held.release()
  assert not FileSystems.exists(f"{out}/{ownership.LOCK}")

  foreign = f"{gcs}/foreign"
  with FileSystems.create(f"{foreign}/losses/mine.py") as f:
    f.write(b"user code")
  with pytest.raises(ConfigError, match="holds files lossaudit did not write"):
    claim(foreign)
  held = claim(foreign, overwrite=True)
  with FileSystems.create(f"{foreign}/losses/part-00000-of-00001.parquet") as f:
    f.write(b"old shard")
  held.clear_previous()
  held.release()
  names = sorted(m.path for m in FileSystems.match(
      [f"{foreign}/**"])[0].metadata_list)
  assert names == [f"{foreign}/{ownership.MARKER}",
                   f"{foreign}/losses/mine.py"]


# --- Inputs -----------------------------------------------------------------


def test_overlapping_globs_symlinks_and_special_files(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for name in ("part-0.gz", "part-1.gz"):
    (data / name).write_text(name)
  os.symlink(data / "part-0.gz", data / "link.gz")
  os.mkfifo(data / "pipe.gz")
  found = inputs.expand(
      [str(data / "*.gz"), str(data / "part-*"), str(data / "./part-1.gz")],
      str(tmp_path / "out"))
  assert found.files == (str(data / "link.gz"), str(data / "part-1.gz"))
  assert found.not_regular == (str(data / "pipe.gz"),)


@pytest.mark.parametrize("pattern, out, refused", [
    ("in2/*", "in2", "can match lossaudit's own outputs"),
    ("in2/*", "in2/out", "can match lossaudit's own outputs"),
    ("in2/**", "in2/deep/out", "can match lossaudit's own outputs"),
    ("in2/**.gz", "in2/out", None),
    ("in2/*.gz", "in2/out", None),
    ("in2/*.gz", "elsewhere", None),
])
def test_globs_that_can_match_outputs_are_refused(tmp_path, monkeypatch,
                                                  pattern, out, refused):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "in2").mkdir()
  (tmp_path / "in2" / "part-0.gz").write_text("x")
  if refused is None:
    assert inputs.expand([pattern], out).files == (
        str(tmp_path / "in2" / "part-0.gz")
        if pattern.startswith("/") else "in2/part-0.gz",)
    return
  with pytest.raises(ConfigError) as e:
    inputs.expand([pattern], out)
  assert str(e.value).startswith(f"input.pattern: {pattern!r} {refused}")
  assert str(e.value).endswith(
      "expected input and output that do not overlap. Received:"
      f" output.dir={out!r}")


def test_an_output_dir_reached_through_a_symlink_is_seen(tmp_path):
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "part-0.gz").write_text("x")
  os.symlink(tmp_path / "in", tmp_path / "inlink")
  with pytest.raises(ConfigError, match="can match lossaudit's own outputs"):
    inputs.expand([str(tmp_path / "in" / "**")], str(tmp_path / "inlink/out"))


def test_files_inside_output_dirs_are_refused(tmp_path):
  shards = tmp_path / "proj" / "losses"
  shards.mkdir(parents=True)
  (shards / "part-0.tfrecord.gz").write_text("x")
  with pytest.raises(ConfigError, match=r"^input.pattern: '.*' can match"):
    inputs.expand([str(shards / "part-*")], str(tmp_path / "proj"))
  with pytest.raises(ConfigError, match=(
      r"^input.pattern: matches '.*part-0.tfrecord.gz', inside output.dir")):
    inputs.expand([str(shards / "part-0.tfrecord.gz")], str(tmp_path / "proj"))
  (tmp_path / "proj" / ownership.MARKER).write_text("{}")
  with pytest.raises(ConfigError) as e:
    inputs.expand([str(shards / "*.gz")], str(tmp_path / "new-out"))
  assert str(e.value) == (
      f"input.pattern: matches {str(shards / 'part-0.tfrecord.gz')!r},"
      f" written by an earlier lossaudit run ({str(tmp_path / 'proj')!r} holds"
      f" {ownership.MARKER}); a run never reads lossaudit's outputs. Expected"
      " a glob over the dataset only")


# --- Through the CLI ----------------------------------------------------------


def _main(config, write_config, capsys):
  code = audit.main(["--config", write_config(config)])
  return code, capsys.readouterr().err


def test_cli_refusals_leave_user_files_intact(
    tmp_path, monkeypatch, tfrecord_dir, classifier_path, write_config,
    capsys):
  project = user_project(tmp_path / "proj")
  shutil.copytree(tfrecord_dir, project / "losses", dirs_exist_ok=True)
  before = snapshot(project)
  cases = [
      # output.dir: . in a project with its own losses/ package.
      (base_config(tfrecord_dir / "*.gz", classifier_path, "."),
       "lossaudit: error: output.dir: expected a directory of its own; '.' is"
       " the current directory, which a run never takes. Received: '.'"),
      # The input inside output.dir.
      (base_config(project / "losses" / "part-*.tfrecord.gz", classifier_path,
                   tmp_path / "proj", output={"overwrite": True}),
       f"lossaudit: error: input.pattern: matches"
       f" '{project}/losses/part-00000-of-00003.tfrecord.gz', inside"
       " output.dir; expected input and output that do not overlap."
       f" Received: output.dir='{project}'"),
      # A directory of the user's.
      (base_config(tfrecord_dir / "*.gz", classifier_path, project),
       "lossaudit: error: output.dir: holds files lossaudit did not write;"
       " choose a new or empty directory (or set output.overwrite: true,"
       " which still deletes only lossaudit's own files). Received:"
       f" '{project}'"),
      # '~' is not expanded: it would make a directory named '~' here.
      (base_config(tfrecord_dir / "*.gz", classifier_path, "~/audits"),
       "lossaudit: error: output.dir: expected a path as it is; lossaudit"
       " does not expand '~' (write the home directory's path, or a path"
       " relative to the current directory). Received: '~/audits'"),
  ]
  for index, (config, message) in enumerate(cases):
    monkeypatch.chdir(project if index == 0 else tmp_path)
    code, err = _main(config, write_config, capsys)
    prefix = "lossaudit: error: "  # A long path is cut (`one_line`).
    assert (code, err) == (2, prefix + one_line(message[len(prefix):]) + "\n")
  assert snapshot(project) == before


def test_overwrite_then_rerun_replaces_only_lossaudit_files(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  project = user_project(tmp_path / "proj")
  user_files = snapshot(project)
  config = base_config(tfrecord_dir / "*.gz", classifier_path, project,
                       output={"overwrite": True, "num_shards": 2})
  assert _main(config, write_config, capsys)[0] == 0
  config["output"]["num_shards"] = 1
  config["output"]["overwrite"] = False  # The marker is there now.
  assert _main(config, write_config, capsys)[0] == 0
  after = snapshot(project)
  assert {k: after[k] for k in user_files} == user_files
  summary = json.loads((project / "summary.json").read_text())
  for kind in ("losses", "flagged"):
    shards = sorted(n for n in after if n.startswith(f"{kind}/part-0"))
    assert shards == [f"{kind}/part-00000-of-00001.parquet"]
    assert [os.path.relpath(p, project) for p in summary["files"][kind]] == (
        shards)
  assert summary["examples_read"] == 3000


def test_fifo_and_overlapping_globs_in_a_run(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  data = tmp_path / "data"
  shutil.copytree(tfrecord_dir, data)
  os.mkfifo(data / "stuck.tfrecord.gz")
  config = base_config(tfrecord_dir, classifier_path, tmp_path / "out")
  config["input"]["pattern"] = [str(data / "*.gz"), str(data / "part-0*")]
  assert _main(config, write_config, capsys)[0] == 0
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["examples_read"] == 3001
  assert summary["examples_scored"] == 3000
  assert summary["dead_letter"]["by_reason"] == {"not_a_regular_file": 1}
  assert summary["duplicate_ids"] == 0
  (entry,) = [json.loads(line) for path in summary["files"]["dead_letter"]
              for line in open(path)]
  assert entry == {
      "source": str(data / "stuck.tfrecord.gz"), "id": None,
      "reason": "not_a_regular_file",
      "error": "not a regular file (a FIFO, device, socket or directory);"
               " never opened"}


def test_gs_output_without_credentials_stops_at_once(
    tmp_path, monkeypatch, tfrecord_dir, classifier_path, write_config,
    capsys):
  for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
  monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
  monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
  out = "gs://lossaudit-no-credentials/out"
  code, err = _main(base_config(tfrecord_dir / "*.gz", classifier_path, out),
                    write_config, capsys)
  assert code == 2
  assert err.startswith(
      "lossaudit: error: output.dir: expected a writable location. Received:"
      f" '{out}' (DefaultCredentialsError: ")
  assert len(err.splitlines()) == 1


@pytest.mark.parametrize("text, problem", [
    (None, "(its summary.json is not a regular file)"),
    ('{"examples_read": 1, "examples_scored": 1, "examples_dead_lettered": 0,'
     ' "loss": {"quantiles": "abc"}, "flagged": {"total": 0}, "config":'
     ' {"stats": {}}}',
     "(its summary.json is not a lossaudit summary: 'loss.quantiles' is not"
     " a mapping)"),
    ("not json", "(its summary.json is not JSON: "),
    ('{"examples_read": 3}', "(its summary.json is not a lossaudit summary:"
                             " it has no 'examples_scored')"),
    ('[1, 2]', "(its summary.json is not a lossaudit summary: it has no"
               " 'examples_read')"),
])
def test_a_baseline_that_is_not_a_lossaudit_summary_stops_before_the_run(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys, text,
    problem):
  from lossaudit.pipelines import compare

  baseline = tmp_path / "baseline"
  baseline.mkdir()
  if text is None:
    os.mkfifo(baseline / "summary.json")  # Opening it would block.
  else:
    (baseline / "summary.json").write_text(text)
  config = base_config(tfrecord_dir / "*.gz", classifier_path,
                       tmp_path / "out", gate={"baseline": str(baseline)})
  code, err = _main(config, write_config, capsys)
  expected = ("gate.baseline: expected the output.dir of a completed run (one"
              f" with summary.json). Received: {str(baseline)!r} {problem}")
  assert code == 2
  assert err.startswith(f"lossaudit: error: {expected}")
  assert not (tmp_path / "out").exists()
  assert compare.main([str(baseline), str(baseline)]) == 2
  assert capsys.readouterr().err.startswith(
      "lossaudit: error: compare: BASELINE_DIR: expected the output.dir")


def test_bad_beam_options_stop_the_run_before_it_deletes_anything(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  out = tmp_path / "out"
  config = write_config(base_config(tfrecord_dir / "*.gz", classifier_path,
                                    out))
  assert audit.main(["--config", config]) == 0
  before = snapshot(out)
  capsys.readouterr()
  assert audit.main(["--config", config, "--runner=DirectRuner"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: Beam options: ValueError:"
                        " Unexpected pipeline runner: DirectRuner.")
  assert snapshot(out) == before


# --- Links inside output.dir ------------------------------------------------


def _link_message(out, relative, target):
  return (
      "output.dir: expected no symbolic link where lossaudit writes (a run"
      f" never writes through one). Received: {str(out / relative)!r} ->"
      f" {str(target)!r}")


@pytest.mark.parametrize("relative", [
    "losses", "flagged", "dead_letter", "resolved", "clean",
    "clean/relabelled", "weights", ".scratch", "summary.json", "report.html",
    "drift.json", "label_issues", "label_issues/joint.parquet",
    "label_issues/pairs.parquet",
    ownership.MARKER, ownership.LOCK])
def test_a_link_where_lossaudit_writes_is_refused_before_anything(
    tmp_path, relative):
  users = tmp_path / "users"
  users.mkdir()
  (users / "part-00000-of-00001.parquet").write_text("the user's")
  (users / "summary.json").write_text("the user's")
  out = tmp_path / "out"
  (out / relative).parent.mkdir(parents=True, exist_ok=True)
  if relative != ownership.MARKER:
    (out / ownership.MARKER).write_text("{}")
  (out / "report.html.tmp-0123abcd").write_text("old run")
  target = users if "." not in relative[1:] else users / "summary.json"
  os.symlink(target, out / relative)
  before, users_before = snapshot(out), snapshot(users)
  with pytest.raises(ConfigError) as e:
    claim(out, overwrite=True)
  assert str(e.value) == _link_message(out, relative, target)
  assert snapshot(out) == before and snapshot(users) == users_before
  assert not os.path.lexists(out / ownership.LOCK) or relative == (
      ownership.LOCK)


@pytest.mark.parametrize("relative,made", [
    ("label_issues", "file"), ("losses", "file"), (".scratch", "file"),
    ("summary.json", "folder"), ("label_issues/joint.parquet", "folder")])
def test_a_file_where_a_folder_goes_is_refused_before_anything(
    tmp_path, relative, made):
  out = tmp_path / "out"
  (out / relative).parent.mkdir(parents=True, exist_ok=True)
  if made == "file":
    (out / relative).write_text("the user's")
  else:
    (out / relative).mkdir()
    (out / relative / "notes.txt").write_text("the user's")
  before = snapshot(out)
  with pytest.raises(ConfigError) as e:
    claim(out, overwrite=True)
  wanted = "a folder" if made == "file" else "a file"
  assert str(e.value) == (
      f"output.dir: expected {wanted} or nothing at"
      f" {str(out / relative)!r}, where lossaudit writes its"
      f" {'files' if made == 'file' else 'file'}. Received: a {made} (move"
      " it elsewhere)")
  assert snapshot(out) == before


def test_a_link_made_after_the_claim_is_refused_before_clearing(tmp_path):
  out = tmp_path / "out"
  held = claim(out)
  held.clear_previous()
  (out / "summary.json").write_text("old run")
  users = tmp_path / "users"
  users.mkdir()
  (users / "part-00000-of-00001.parquet").write_text("the user's")
  os.symlink(users, out / "losses")
  with pytest.raises(ConfigError) as e:
    held.clear_previous()
  assert str(e.value) == _link_message(out, "losses", users)
  assert (out / "summary.json").read_text() == "old run"
  held.release()
  assert snapshot(users) == {"part-00000-of-00001.parquet": hashlib.sha256(
      b"the user's").hexdigest()}


def test_clearing_earlier_outputs_never_follows_a_link(tmp_path):
  out, users = tmp_path / "out", tmp_path / "users"
  temp = "beam-temp-part-" + "0a" * 16
  (users / temp).mkdir(parents=True)  # Empty: what a stopped run leaves.
  (users / "part-00000-of-00001.parquet").write_text("the user's")
  (users / RUN_B).mkdir()
  (users / RUN_B / "scored-1.arrows").write_text("the user's")
  (out / ".scratch").mkdir(parents=True)
  os.symlink(users, out / "flagged")
  os.symlink(users / RUN_B, out / ".scratch" / RUN_B)
  os.symlink(users / "part-00000-of-00001.parquet",
             out / "summary.json")
  deleted = ownership.remove_own_files(str(out), lambda rel: True)
  assert deleted == [str(out / "summary.json")]  # The link, not its target.
  assert sorted(os.listdir(users)) == sorted(
      [temp, RUN_B, "part-00000-of-00001.parquet"])
  assert (users / RUN_B / "scored-1.arrows").read_text() == "the user's"
  assert (users / "part-00000-of-00001.parquet").read_text() == "the user's"
  assert os.path.islink(out / "flagged")


@pytest.mark.parametrize("users_file", [True, False])
def test_label_issue_files_are_removed_by_name(tmp_path, users_file):
  out = tmp_path / "out"
  (out / "label_issues").mkdir(parents=True)
  for name in ("joint.parquet", "classes.parquet", "pairs.parquet",
               "joint.parquet.tmp-0123abcd"):
    (out / "label_issues" / name).write_text("an earlier run's")
  if users_file:
    (out / "label_issues" / "notes.txt").write_text("the user's")
  deleted = ownership.remove_own_files(str(out), lambda rel: True)
  assert sorted(deleted) == sorted(
      str(out / "label_issues" / name) for name in (
          "classes.parquet", "joint.parquet", "joint.parquet.tmp-0123abcd",
          "pairs.parquet"))
  if users_file:
    assert os.listdir(out / "label_issues") == ["notes.txt"]
  else:
    assert not (out / "label_issues").exists()


def test_an_output_dir_that_is_a_link_to_a_folder_is_taken(tmp_path):
  real = tmp_path / "real"
  real.mkdir()
  os.symlink(real, tmp_path / "out")
  held = claim(tmp_path / "out")
  held.clear_previous()
  assert sorted(os.listdir(real)) == [ownership.LOCK, ownership.MARKER]
  held.release()
  assert os.listdir(real) == [ownership.MARKER]


def test_cli_refuses_a_clean_folder_linked_into_the_input(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  data = tmp_path / "data"
  shutil.copytree(tfrecord_dir, data)
  out = tmp_path / "out"
  out.mkdir()
  (out / ownership.MARKER).write_text("{}")
  os.symlink(data, out / "clean")
  before = snapshot(data)
  config = base_config(data / "*.gz", classifier_path, out,
                       output={"clean": {"relabel": False}})
  code, err = _main(config, write_config, capsys)
  assert (code, err) == (
      2, f"lossaudit: error: {_link_message(out, 'clean', data)}\n")
  assert snapshot(data) == before
  assert sorted(os.listdir(out)) == [ownership.MARKER, "clean"]


def test_a_file_name_that_is_not_utf8_stops_the_run_naming_it(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  data = tmp_path / "data"
  shutil.copytree(tfrecord_dir, data)
  bad = os.fsencode(data) + b"/bad\xff.tfrecord.gz"
  with open(bad, "wb") as f:
    f.write((tfrecord_dir / "part-00000-of-00003.tfrecord.gz").read_bytes())
  pattern = str(data / "*.tfrecord.gz")
  code, err = _main(base_config(pattern, classifier_path, tmp_path / "out"),
                    write_config, capsys)
  assert (code, err) == (
      2, f"lossaudit: error: input.pattern: expected file names that are"
      f" valid UTF-8; {pattern!r} matches one that is not. Received:"
      f" {bad!r}\n")
  assert not (tmp_path / "out").exists()


def test_clean_files_are_deleted_by_the_earlier_runs_list_only(tmp_path):
  """`clean/` files keep the input's names: a run deletes those the earlier
  run listed in `.lossaudit-clean.json`, never a user's file beside them,
  and a list naming a path outside `clean/` deletes nothing."""
  out = tmp_path / "out"
  held = claim(out)
  held.clear_previous()
  (out / "clean").mkdir()
  for name in ("part-0.parquet", "mine.parquet", "x"):
    (out / "clean" / name).write_text(name)
  (out / "summary.json").write_text("{}")
  (out / ".lossaudit-clean.json").write_text(json.dumps(
      {"files": ["part-0.parquet", "../summary.json", "gone.parquet"]}))
  held.release()
  again = claim(out)
  again.clear_previous()
  assert sorted(os.listdir(out / "clean")) == ["mine.parquet", "x"]
  assert not (out / ".lossaudit-clean.json").exists()
  assert not (out / "summary.json").exists()  # Its own name, not the list.
  again.release()


def test_a_relative_glob_with_no_folder_matches_the_current_one(
    tmp_path, monkeypatch):
  """`*.parquet` and `*/d.parquet`, relative to the current directory (Beam
  alone matches them against nothing)."""
  for folder in ("a", "b"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "d.parquet").write_text("x")
  (tmp_path / "top.parquet").write_text("x")
  monkeypatch.chdir(tmp_path)
  out = str(tmp_path / "out")
  assert inputs.expand(["*.parquet"], out).files == (
      str(tmp_path / "top.parquet"),)
  assert inputs.expand(["*/d.parquet"], out).files == (
      str(tmp_path / "a" / "d.parquet"), str(tmp_path / "b" / "d.parquet"))


def test_a_retried_hand_back_lists_every_clean_file(tmp_path):
  """`promote_staged` moves the stage into place; run again after moving
  part of it (a retried step), the list still names every clean file."""
  from lossaudit import outputs

  out = tmp_path / "out"
  run_id = "20261207T023000Z-abcdef"
  stage = out / ".scratch" / run_id / "stage"
  for relative in ("clean/a.parquet", "clean/b.parquet",
                   "weights/part-00000-of-00001.parquet"):
    (stage / relative).parent.mkdir(parents=True, exist_ok=True)
    (stage / relative).write_text(relative)
  (out / "clean").mkdir(parents=True)
  os.rename(stage / "clean" / "a.parquet", out / "clean" / "a.parquet")
  (out / ".lossaudit-clean.json").write_text('{"files": ["a.parquet"]}')
  moved = outputs.promote_staged(str(out), run_id)
  assert moved == {
      "clean": [str(out / "clean" / "b.parquet")],
      "weights": [str(out / "weights" / "part-00000-of-00001.parquet")]}
  assert outputs.clean_manifest(str(out)) == ["a.parquet", "b.parquet"]
  assert (out / "clean" / "b.parquet").read_text() == "clean/b.parquet"


def test_a_pattern_naming_a_directory_is_refused(tmp_path):
  (tmp_path / "pqdir").mkdir()
  (tmp_path / "pqdir" / "part-0.parquet").write_text("x")
  directory = str(tmp_path / "pqdir")
  with pytest.raises(ConfigError) as e:
    inputs.expand([directory], str(tmp_path / "out"))
  assert str(e.value) == (
      f"input.pattern: expected a glob of files. Received: {directory!r},"
      f" which matches only the directory {directory!r}; did you mean"
      f" {directory + '/*'!r}?")
  # Its files are read, as with a trailing slash.
  for pattern in (directory + "/*", directory + "/"):
    assert inputs.expand([pattern], str(tmp_path / "out")).files == (
        directory + "/part-0.parquet",)
