"""Bad input, faults and re-runs: every input accounted for, nothing lost."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from lossaudit import datasets, duplicates
from lossaudit.errors import one_line
from lossaudit.pipelines import audit
from lossaudit.scoring import BatchScorer
from tests.helpers import base_config, make_columns, start_blocked_audit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_letters(out):
  directory = out / "dead_letter"
  return [json.loads(line) for name in sorted(os.listdir(directory))
          for line in open(directory / name)]


def _losses(out) -> pa.Table:
  table = pq.read_table(out / "losses")
  return table.sort_by("id")


def _flagged_ids(out):
  return sorted(pq.read_table(out / "flagged").column("id").to_pylist())


def _assert_account(summary):
  assert summary["examples_read"] == (
      summary["examples_scored"] + summary["examples_dead_lettered"])
  assert summary["examples_dead_lettered"] == sum(
      summary["dead_letter"]["by_reason"].values())


def test_find_duplicates_counts_across_arrays_and_merges():
  found = duplicates.find_duplicates(
      [pa.array(["a", "b", "c", "a"]), pa.array(["c", "a", "d"])])
  assert (found.ids, found.rows, found.listed) == (2, 5, [(3, "a"), (2, "c")])
  merged = found.merge(duplicates.find_duplicates([pa.array(["z", "z"])]))
  assert merged.to_dict() == {
      "duplicate_ids": 3, "duplicate_id_rows": 7,
      "duplicate_id_examples": [{"id": "a", "count": 3},
                                {"id": "c", "count": 2},
                                {"id": "z", "count": 2}]}
  assert duplicates.find_duplicates([pa.array(["x", "y"])]).ids == 0


def test_duplicate_ids_counted_and_listed_not_merged(
    tmp_path, classifier_path, write_config):
  cols = make_columns(n=300, seed=3)
  cols["id"][[10, 11, 12]] = "ex-00000"
  cols["id"][200] = "ex-00001"
  datasets.write_tfrecords(str(tmp_path / "data"), cols, num_shards=3)
  out = tmp_path / "out"
  summary = audit.run(["--config", write_config(base_config(
      tmp_path / "data" / "*.gz", classifier_path, out))])
  assert summary["duplicate_ids"] == 2
  assert summary["duplicate_id_rows"] == 6
  assert summary["duplicate_id_examples"] == [
      {"id": "ex-00000", "count": 4}, {"id": "ex-00001", "count": 2}]
  assert _losses(out).num_rows == 300
  report = (out / "report.html").read_text()
  assert "2 ids occur on more than one example" in report
  assert "<td>ex-00000</td><td>4</td>" in report
  _assert_account(summary)


def test_parquet_rows_with_nulls_are_dead_lettered(
    tmp_path, classifier_path, write_config):
  cols = make_columns(n=200, seed=4)
  ids = cols["id"].tolist()
  x = [list(map(float, row)) for row in cols["x"]]
  labels = cols["label"].tolist()
  ids[5], x[7], labels[9] = None, None, None
  (tmp_path / "data").mkdir()
  pq.write_table(pa.table({
      "id": pa.array(ids, pa.string()),
      "x": pa.array(x, pa.list_(pa.float32())),
      "label": pa.array(labels, pa.int64())}),
                 tmp_path / "data" / "part-0.parquet", row_group_size=64)
  out = tmp_path / "out"
  config = base_config(tmp_path / "data" / "*.parquet", classifier_path, out)
  config["input"]["format"] = "parquet"
  summary = audit.run(["--config", write_config(config)])
  assert (summary["examples_read"], summary["examples_scored"],
          summary["examples_dead_lettered"]) == (200, 197, 3)
  dead = sorted(_dead_letters(out), key=lambda d: d["reason"])
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      ("ex-00007", "missing_feature", "missing feature 'x'"),
      (None, "missing_id", "id is null (column 'id')"),
      ("ex-00009", "missing_label", "missing label 'label'")]
  _assert_account(summary)


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_two_runs_give_identical_losses_quantiles_and_flags(
    tmp_path, tfrecord_dir, classifier_path, write_config):
  summaries = []
  for name in ("first", "second"):
    config = base_config(tfrecord_dir / "*.gz", classifier_path,
                         tmp_path / name, flag={
                             "loss_quantile": 0.9, "top_k": 25,
                             "label_issues": "confident_learning"})
    summaries.append(audit.run(
        ["--config", write_config(config, f"{name}.yaml")]))
  first, second = summaries
  assert first["loss"] == second["loss"]
  assert first["thresholds"] == second["thresholds"]
  assert first["flagged"] == second["flagged"]
  assert _losses(tmp_path / "first").equals(_losses(tmp_path / "second"))
  assert _flagged_ids(tmp_path / "first") == _flagged_ids(tmp_path / "second")


def test_failed_bundles_are_retried_and_each_example_written_once(
    tmp_path, classifier_path, write_config, monkeypatch):
  """The first attempt at every batch read (each file's 150 rows, scored
  100 at a time) fails; Beam retries the bundle.

  Beam's portable DirectRunner fails a pipeline on the first error, as a
  test runner should; the bundle-based DirectRunner retries a failed bundle
  as Dataflow does, so this test runs on it.
  """
  cols = make_columns(n=300, seed=6)
  datasets.write_tfrecords(str(tmp_path / "data"), cols, num_shards=2)
  score, failed = BatchScorer.score, []

  def fail_first_attempt(self, source, batch):
    key = (source, batch.column("id")[0].as_py())
    if batch.num_rows == 150 and key not in failed:  # Not the probe's 64.
      failed.append(key)
      raise RuntimeError(f"injected failure for {key}")
    return score(self, source, batch)

  monkeypatch.setattr(BatchScorer, "score", fail_first_attempt)
  out = tmp_path / "out"
  config = base_config(tmp_path / "data" / "*.gz", classifier_path, out,
                       batch_size=100,
                       flag={"loss_quantile": None, "top_k": 10})
  summary = audit.run(["--config", write_config(config),
                       "--runner=BundleBasedDirectRunner"])
  assert len(failed) == 2
  losses = _losses(out)
  assert losses.num_rows == 300
  assert sorted(losses.column("id").to_pylist()) == sorted(cols["id"])
  assert summary["examples_scored"] == 300
  assert summary["flagged"]["total"] == len(_flagged_ids(out)) == 10
  assert not (out / ".scratch").exists()
  _assert_account(summary)


def test_killed_run_leaves_no_summary_and_a_rerun_replaces_it(
    tmp_path, tfrecord_dir, classifier_path, write_config):
  out = tmp_path / "out"
  fast = base_config(tfrecord_dir / "*.gz", classifier_path, out)
  first = audit.run(["--config", write_config(fast, "fast.yaml")])
  assert (out / "summary.json").exists()
  blocked = base_config(tfrecord_dir / "*.gz", classifier_path, out,
                        loss={"custom": "tests.custom_losses:blocking_nll"})
  # Stopped at its 10th scored batch (the pre-run probe is the 1st), in the
  # last of the 3 shards of the pipeline's first pass: scratch written, no
  # summary yet.
  process = start_blocked_audit(write_config(blocked, "blocked.yaml"),
                                block_at=10)
  try:
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*"))
    assert [name for name in written if name.startswith(".scratch/")
            and name.count("/") == 2], written
    assert not (out / "summary.json").exists()
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdin.close()
    process.stderr.close()
  assert not (out / "summary.json").exists()
  assert not (out / "report.html").exists()
  again = audit.run(["--config", write_config(fast, "fast.yaml")])
  assert again["loss"] == first["loss"]
  assert _losses(out).num_rows == 3000
  assert len(os.listdir(out / "losses")) == len(first["files"]["losses"])
  assert not (out / ".scratch").exists()


def test_config_yaml_is_loaded_safely(tmp_path):
  marker = tmp_path / "pwned"
  config = tmp_path / "evil.yaml"
  config.write_text(f"input: !!python/object/apply:os.system"
                    f" ['touch {marker}']\n")
  result = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.audit", "--config",
       str(config)],
      cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2
  assert result.stderr.startswith(
      f"lossaudit: error: --config {config}: expected valid YAML.")
  assert "Traceback" not in result.stderr
  assert not marker.exists()


def _snapshot(directory):
  return sorted((os.path.relpath(os.path.join(root, name), directory),
                 os.stat(os.path.join(root, name)).st_mtime_ns)
                for root, _, files in os.walk(directory) for name in files)


def test_nothing_written_outside_output_dir_and_temp(
    tmp_path, tfrecord_dir, classifier_path, write_config):
  """Runs from an empty directory with its own temp and home directories."""
  cwd, temp, home = (tmp_path / n for n in ("cwd", "temp", "home"))
  for d in (cwd, temp, home):
    d.mkdir()
  config = base_config(tfrecord_dir / "*.gz", classifier_path, "out")
  before = _snapshot(tfrecord_dir), os.stat(classifier_path).st_mtime_ns
  env = dict(os.environ, TMPDIR=str(temp), HOME=str(home),
             PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.audit", "--config",
       write_config(config)], cwd=cwd, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(cwd)) == ["out"]
  assert sorted(os.listdir(cwd / "out")) == [
      ".lossaudit-run.json", "dead_letter", "flagged", "losses", "report.html",
      "summary.json"]
  assert (_snapshot(tfrecord_dir),
          os.stat(classifier_path).st_mtime_ns) == before
  assert _snapshot(home) == []


# The demo shards, damaged in every way at once ------------------------------

def _plain_records(path):
  return [r.numpy() for r in tf.data.TFRecordDataset(
      str(path), compression_type="GZIP")]


def _write_plain(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def _example(**features):
  feature = {}
  for name, value in features.items():
    if isinstance(value, bytes):
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[value]))
    elif np.asarray(value).dtype.kind == "f":
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(
          value=np.ravel(value)))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=np.ravel(value)))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def test_demo_data_damaged_every_way_at_once_adds_up(
    tmp_path, demo_build, write_config):
  data, model, _ = demo_build
  shards = sorted(data.glob("part-*.tfrecord.gz"))
  records = [_plain_records(s) for s in shards]
  pixels = np.full(64, 0.5, np.float32)
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "a-clean.tfrecord.gz").write_bytes(shards[0].read_bytes())
  _write_plain(bad / "b-bad-crc.tfrecord", records[1])
  damaged = bytearray((bad / "b-bad-crc.tfrecord").read_bytes())
  offset = sum(16 + len(r) for r in records[1][:100])
  damaged[offset + 12 + 5] ^= 0xFF  # Inside record 100's data.
  (bad / "b-bad-crc.tfrecord").write_bytes(bytes(damaged))
  _write_plain(bad / "c-truncated.tfrecord", records[2])
  truncated = (bad / "c-truncated.tfrecord").read_bytes()[:-7]
  (bad / "c-truncated.tfrecord").write_bytes(truncated)
  (bad / "d-gzip-named-plain.tfrecord").write_bytes(shards[3].read_bytes())
  broken = [
      _example(id=b"no-pixels-1", label=1),
      _example(id=b"no-pixels-2", label=2),
      _example(id=b"no-pixels-3", label=3),
      _example(id=b"no-label-1", pixels=pixels),
      _example(id=b"no-label-2", pixels=pixels),
      _example(id=b"short-1", pixels=pixels[:63], label=1),
      _example(id=b"long-1", pixels=np.zeros(65, np.float32), label=1),
      _example(id=b"bytes-pixels", pixels=b"not floats", label=1),
      _example(id=b"nan-1", pixels=np.full(64, np.nan, np.float32), label=1),
      _example(id=b"nan-2", pixels=np.where(np.arange(64) == 3, np.nan,
                                            pixels).astype(np.float32),
               label=2),
      _example(id=b"inf-1", pixels=np.full(64, np.inf, np.float32), label=1),
      _example(id=b"label-10", pixels=pixels, label=10),
      _example(id=b"label-minus-1", pixels=pixels, label=-1),
      b"\xff\xfe this is not a tf.train.Example",
  ] + records[0][:2]  # Two examples whose ids are already in a-clean.
  _write_plain(bad / "e-plain-named-gzip.tfrecord.gz", broken)
  (bad / "f-notes.tfrecord").write_text("not a TFRecord file at all\n" * 40)
  (bad / "g-empty.tfrecord").write_bytes(b"")
  with gzip.open(bad / "h-truncated-gzip.tfrecord.gz", "wb") as f:
    f.write(b"".join(_framed(r) for r in records[3][:50]))
  gz = (bad / "h-truncated-gzip.tfrecord.gz").read_bytes()
  (bad / "h-truncated-gzip.tfrecord.gz").write_bytes(gz[:len(gz) // 2])

  out = tmp_path / "out"
  config = base_config(bad / "*", model, out, flag={"loss_quantile": 0.9})
  summary = audit.run(["--config", write_config(config)])

  dead = _dead_letters(out)
  stretches = {d["source"].rsplit("/", 1)[-1]: d for d in dead
               if d["reason"] == "unreadable_stretch"}
  assert sorted(stretches) == ["c-truncated.tfrecord", "f-notes.tfrecord",
                               "h-truncated-gzip.tfrecord.gz"]
  # Record 100's data fails its CRC but its length does not: only it is
  # lost, and the records after it are read.
  (bad_record,) = [d for d in dead if d["reason"] == "unreadable_record"]
  assert bad_record["source"].endswith("b-bad-crc.tfrecord")
  assert bad_record["error"] == (
      f"unreadable record 100 (byte {offset}): corrupted record (bad CRC);"
      " the records after it were read")
  assert stretches["c-truncated.tfrecord"]["error"].startswith(
      f"unreadable from record {len(records[2]) - 1} ")
  assert stretches["f-notes.tfrecord"]["error"].startswith(
      "unreadable from record 0 (byte 0)")
  kept_from_gzip = int(stretches["h-truncated-gzip.tfrecord.gz"]["error"]
                       .split("record ")[1].split()[0])
  assert 0 < kept_from_gzip < 50
  assert summary["dead_letter"]["by_reason"] == {
      "unreadable_stretch": 3, "unreadable_record": 1, "missing_feature": 3,
      "missing_label": 2,
      "wrong_size": 2, "wrong_type": 1, "label_out_of_range": 2,
      "not_an_example": 1}
  by_id = {d["id"]: d for d in dead if d["id"]}
  assert by_id["short-1"]["error"] == (
      "feature 'pixels' has 63 values, expected 64")
  assert by_id["label-10"]["error"].startswith("label 10 out of range")
  wrong_type = [d for d in dead if d["reason"] == "wrong_type"][0]
  assert "expected float_list, found bytes_list" in wrong_type["error"]

  scored_by_file = (len(records[0]) + len(records[1]) - 1 +
                    len(records[2]) - 1 +
                    len(records[3]) + 5 + kept_from_gzip)
  assert summary["examples_scored"] == scored_by_file
  assert _losses(out).num_rows == scored_by_file
  assert summary["flagged"]["by_reason"]["non_finite"] == 3
  assert summary["loss"]["nan_count"] == 3
  # a-clean's first two ids again in e-…, d-…'s first ids again in h-….
  assert summary["duplicate_ids"] == 2 + kept_from_gzip
  assert summary["duplicate_id_rows"] == 2 * (2 + kept_from_gzip)
  record_dead_letters = len(dead) - len(stretches)
  lost_in_stretches = 1 + (50 - kept_from_gzip)
  written = sum(len(r) for r in records) + len(broken) + 50
  assert (summary["examples_scored"] + record_dead_letters +
          lost_in_stretches) == written
  _assert_account(summary)


def _framed(record: bytes) -> bytes:
  from lossaudit.tfrecord import masked_crc

  length = len(record).to_bytes(8, "little")
  return (length + masked_crc(length).to_bytes(4, "little") + record +
          masked_crc(record).to_bytes(4, "little"))


def test_model_with_fewer_classes_than_the_labels_stops_before_running(
    tmp_path, classifier_path, write_config, capsys):
  cols = make_columns(n=200, seed=8)
  cols["label"] = np.arange(200) % 8  # The model has 5 classes.
  datasets.write_tfrecords(str(tmp_path / "data"), cols, num_shards=1)
  config = base_config(tmp_path / "data" / "*.gz", classifier_path,
                       tmp_path / "out")
  assert audit.main(["--config", write_config(config)]) == 2
  err = capsys.readouterr().err
  path = str(tmp_path / "data" / "part-00000-of-00001.tfrecord.gz")
  assert err == "lossaudit: error: " + one_line(
      f"input.label_column: 24 of the first 64 labels of {path} are outside"
      " the model's classes (first: label 5 out of range: expected an integer"
      " class in [0, 5)); expected a model trained on the data's"
      " classes") + "\n"
  assert not (tmp_path / "out").exists()


def test_unwritable_output_dir_stops_before_running(
    tmp_path, tfrecord_dir, classifier_path, write_config, capsys):
  blocker = tmp_path / "a-file"
  blocker.write_text("not a directory")
  config = base_config(tfrecord_dir / "*.gz", classifier_path,
                       blocker / "out")
  assert audit.main(["--config", write_config(config)]) == 2
  assert capsys.readouterr().err.startswith(
      "lossaudit: error: output.dir: expected a writable location. Received:"
      f" '{blocker / 'out'}' (")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.joinpath("model.keras").write_text("not a model") and
     p / "model.keras",
     r"model.path: expected a Keras model file. Received: '.*model.keras' \("),
    (lambda p: p.joinpath("empty").mkdir() or p / "empty",
     r"model.path: expected a .keras file or a SavedModel directory."
     r" Received: '.*empty' \(a directory with no saved_model.pb\)"),
])
def test_model_path_that_is_not_a_model_stops_before_running(
    tmp_path, tfrecord_dir, write_config, capsys, make, message):
  config = base_config(tfrecord_dir / "*.gz", make(tmp_path), tmp_path / "out")
  assert audit.main(["--config", write_config(config)]) == 2
  err = capsys.readouterr().err
  assert re.match(r"lossaudit: error: " + message, err), err
  assert err.count("\n") == 1 and "Traceback" not in err


def test_parquet_file_with_a_wrongly_typed_column_is_dead_lettered(
    tmp_path, classifier_path, write_config):
  cols = make_columns(n=100, seed=9)
  (tmp_path / "data").mkdir()
  datasets.write_parquet(str(tmp_path / "data"), cols, num_shards=1)
  pq.write_table(pa.table({
      "id": [f"text-{i}" for i in range(10)],
      "x": pa.array([["a"] * 16] * 10, pa.list_(pa.string())),
      "label": list(range(10))}), tmp_path / "data" / "zz-text.parquet")
  out = tmp_path / "out"
  config = base_config(tmp_path / "data" / "*.parquet", classifier_path, out)
  config["input"]["format"] = "parquet"
  summary = audit.run(["--config", write_config(config)])
  assert (summary["examples_scored"], summary["examples_dead_lettered"]) == (
      100, 10)
  assert summary["dead_letter"]["by_reason"] == {"wrong_type": 10}
  by_id = {d["id"]: d["error"] for d in _dead_letters(out)}
  assert by_id["text-0"] == ("feature 'x' has type list<element: string>,"
                             " expected float32 values")
  assert by_id["text-7"] == by_id["text-0"] + (
      "; label 7 out of range: expected an integer class in [0, 5)")
  _assert_account(summary)
