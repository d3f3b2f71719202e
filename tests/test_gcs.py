"""gs:// for data, model and outputs, against a local GCS API emulator."""

import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from lossaudit.pipelines import audit
from tests.helpers import base_config, upload


def _read_parquet(directory: str) -> pd.DataFrame:
  files = sorted(m.path for m in FileSystems.match(
      [directory + "/part-*"])[0].metadata_list)
  frames = []
  for path in files:
    with FileSystems.open(path) as f:
      frames.append(pd.read_parquet(f))
  return pd.concat(frames).sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize("model_kind", [
    "keras", pytest.param("saved_model", marks=pytest.mark.slow)])
def test_gs_input_model_and_output_equal_local_run(
    gcs, tmp_path, tfrecord_dir, classifier_path, saved_model_path,
    write_config, model_kind):
  local_model = classifier_path if model_kind == "keras" else saved_model_path
  remote = f"{gcs}/{model_kind}"
  upload(str(tfrecord_dir), f"{remote}/data")
  remote_model = f"{remote}/model" + (".keras" if model_kind == "keras" else "")
  upload(local_model, remote_model)

  flag = {"loss_quantile": 0.9, "top_k": 10,
          "label_issues": "confident_learning"}
  local_out = tmp_path / "local"
  local = audit.run(["--config", write_config(base_config(
      tfrecord_dir / "*.gz", local_model, local_out, flag=flag), "l.yaml")])
  remote_out = f"{remote}/out"
  config = base_config(f"{remote}/data/*.gz", remote_model, remote_out,
                       flag=flag)
  summary = audit.run(["--config", write_config(config, "r.yaml")])

  for key in ("examples_read", "examples_scored", "loss", "slices",
              "thresholds", "flagged", "label_issues"):
    assert summary[key] == local[key], key
  with FileSystems.open(remote_out + "/summary.json") as f:
    assert json.loads(f.read())["examples_scored"] == 3000
  assert FileSystems.exists(remote_out + "/report.html")
  assert not FileSystems.exists(remote_out + "/.scratch")
  for kind in ("losses", "flagged"):
    got = _read_parquet(f"{remote_out}/{kind}")
    want = pd.read_parquet(local_out / kind).sort_values("id").reset_index(
        drop=True)
    pd.testing.assert_frame_equal(got, want)
  for name in ("joint", "classes", "pairs"):
    with FileSystems.open(f"{remote_out}/label_issues/{name}.parquet") as f:
      got = pq.read_table(io.BytesIO(f.read())).to_pandas()
    pd.testing.assert_frame_equal(
        got, pd.read_parquet(local_out / "label_issues" / f"{name}.parquet"))


@pytest.mark.slow  # Three runs against the emulator (~16 s).
def test_gs_config_and_latest_baseline_on_gcs(gcs, tmp_path, tfrecord_dir,
                                              classifier_path, write_config):
  remote = f"{gcs}/nightly"
  upload(str(tfrecord_dir), f"{remote}/data")
  config = base_config(f"{remote}/data/*.gz", classifier_path,
                       remote + "/runs/{run_id}",
                       gate={"baseline": "latest",
                             "max_quantile_shift": 0.01})
  upload(write_config(config), f"{remote}/nightly.yaml")
  first = audit.run(["--config", f"{remote}/nightly.yaml"])
  second = audit.run(["--config", f"{remote}/nightly.yaml"])
  first_dir = f"{remote}/runs/{first['run_id']}"
  assert first["gate"] == {
      "baseline": None, "passed": True, "failures": [], "failed": [],
      "skipped": ["gate max_quantile_shift skipped: no baseline run"]}
  assert second["gate"]["baseline"] == first_dir
  assert second["gate"]["passed"]
  with FileSystems.open(f"{remote}/runs/{second['run_id']}/drift.json") as f:
    drift = json.load(f)
  assert drift["baseline"] == first_dir
  assert [g["value"] for g in drift["gates"]] == [0.0]


def _read_dead_letters(directory: str) -> list:
  """`(file name, reason, error less its path)` of each dead letter."""
  files = [m.path for m in FileSystems.match(
      [directory + "/dead_letter/*"])[0].metadata_list]
  found = []
  for path in files:
    with FileSystems.open(path) as f:
      for line in f.read().decode().splitlines():
        entry = json.loads(line)
        found.append((entry["source"].rsplit("/", 1)[-1], entry["reason"],
                      entry["error"]))
  return sorted(found)


@pytest.mark.slow  # Two audits, one on the emulator (~8 s).
def test_gs_damaged_records_are_dead_lettered_as_in_a_local_run(
    gcs, tmp_path, tfrecord_dir, classifier_path, write_config, monkeypatch):
  """Good shards beside a record with a bad CRC, a truncated file and a gzip
  stream with junk after it: every record counted, each damage one dead
  letter naming its record and byte, from gs:// as from a local disk."""
  import gzip

  from lossaudit import tfrecord

  # The small test files are read by tf.data from local copies too.
  monkeypatch.setattr(tfrecord, "TF_DATA_MIN_BYTES", 0)
  data = tmp_path / "data"
  data.mkdir()
  shards = sorted(tfrecord_dir.glob("*.gz"))
  for shard in shards:
    (data / shard.name).write_bytes(shard.read_bytes())
  raw = gzip.decompress(shards[0].read_bytes())
  first = next(tfrecord.read_batches(str(shards[0]), 3))
  size = len(first[0]) + 16  # Every record of the test data is this long.
  assert {len(r) + 16 for r in first} == {size}
  damaged = bytearray(raw)
  damaged[4 * size + 20] ^= 0xFF  # Inside record 4's data.
  (data / "bad-crc.tfrecord").write_bytes(bytes(damaged))
  (data / "cut.tfrecord").write_bytes(raw[:10 * size - 7])
  (data / "junk.tfrecord.gz").write_bytes(gzip.compress(raw) + b"junk")
  remote = f"{gcs}/damaged"
  upload(str(data), f"{remote}/data")

  local_out = tmp_path / "local"
  local = audit.run(["--config", write_config(base_config(
      data / "*", classifier_path, local_out), "l.yaml")])
  remote_out = f"{remote}/out"
  summary = audit.run(["--config", write_config(base_config(
      f"{remote}/data/*", classifier_path, remote_out), "r.yaml")])

  per_shard = len(raw) // size
  # The good shards, all but record 4, the 9 whole records, the whole shard.
  assert (summary["examples_scored"], summary["examples_dead_lettered"]) == (
      3000 + (per_shard - 1) + 9 + per_shard, 3)
  for key in ("examples_read", "examples_scored", "examples_dead_lettered",
              "loss", "thresholds", "flagged", "dead_letter"):
    assert summary[key] == local[key], key
  dead = _read_dead_letters(remote_out)
  assert dead == _read_dead_letters(str(local_out))
  assert dead == [
      ("bad-crc.tfrecord", "unreadable_record",
       f"unreadable record 4 (byte {4 * size}): corrupted record (bad CRC);"
       " the records after it were read"),
      ("cut.tfrecord", "unreadable_stretch",
       f"unreadable from record 9 (byte {9 * size}): truncated ({size - 7}"
       f" trailing bytes; the record's header gives a length of"
       f" {size - 16})"),
      ("junk.tfrecord.gz", "unreadable_stretch",
       f"unreadable from record {per_shard} (byte {len(raw)}): 4 bytes after"
       " the end of the gzip stream")]
  got = _read_parquet(f"{remote_out}/losses")
  want = pd.read_parquet(local_out / "losses").sort_values("id").reset_index(
      drop=True)
  pd.testing.assert_frame_equal(got, want)


def test_latest_on_gcs_lists_one_name_a_run_not_every_object(gcs, tmp_path,
                                                             monkeypatch):
  from google.cloud import storage

  from lossaudit import outputs

  audits = f"{gcs}/history/audits"
  runs = {  # run id: gate passed (None: no summary, the run never ended).
      "20261201T023000Z-aaaaaa": True, "20261202T023000Z-bbbbbb": True,
      "20261203T023000Z-cccccc": False, "20261204T023000Z-dddddd": None}
  for run_id, passed in runs.items():
    directory = tmp_path / f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}-{run_id}"
    (directory / "losses").mkdir(parents=True)
    for shard in range(5):
      (directory / "losses" / f"part-{shard:05d}-of-00005.parquet").write_text(
          "x")
    if passed is not None:
      (directory / "summary.json").write_text(json.dumps(
          {"run_id": run_id, "gate": {"passed": passed}}))
  upload(str(tmp_path), audits)
  upload(str(tmp_path), f"{gcs}/history/elsewhere")
  listed = []
  list_blobs = storage.Client.list_blobs

  def spy(self, bucket, *args, **kwargs):
    listed.append((kwargs.get("prefix"), kwargs.get("delimiter")))
    return list_blobs(self, bucket, *args, **kwargs)

  monkeypatch.setattr(storage.Client, "list_blobs", spy)

  latest = outputs.latest_complete_run(audits + "/{date}-{run_id}")

  # The 3rd failed its gates and the 4th never ended: the 2nd is the newest
  # baseline.
  assert latest == f"{audits}/2026-12-02-20261202T023000Z-bbbbbb"
  # One listing of the runs' names; then only summaries, newest first.
  assert listed[0] == ("history/audits/", "/")
  assert all(prefix.endswith("/summary.json") for prefix, _ in listed[1:])
  assert outputs.gcs_run_dirs(audits + "/{date}-{run_id}") == [
      f"{audits}/{d.name}" for d in sorted(tmp_path.iterdir())]


@pytest.mark.slow  # 250 uploads to the emulator (~12 s).
def test_a_large_scratch_on_gcs_is_deleted_whole_and_only_it(gcs, tmp_path):
  from lossaudit import ownership

  run_id = "20261207T023000Z-abcdef"
  scratch = tmp_path / ".scratch" / run_id
  scratch.mkdir(parents=True)
  for i in range(250):  # Three batch requests at once.
    (scratch / f"scored-{i:05d}.arrow").write_text("x")
  (tmp_path / "notes.txt").write_text("the user's")
  out = f"{gcs}/bigscratch"
  upload(str(tmp_path), out)

  ownership.remove_scratch(out, run_id)

  left = sorted(m.path for m in FileSystems.match([out + "/**"])[0]
                .metadata_list)
  assert left == [f"{out}/notes.txt"]


def test_a_model_overwritten_after_the_run_was_planned_is_refused(
    gcs, classifier_path, regressor_path):
  from lossaudit import model
  from lossaudit.errors import ConfigError

  remote = f"{gcs}/pinned/model.keras"
  upload(classifier_path, remote)
  planned = model.remote_version(remote)
  assert planned and model.remote_version(classifier_path) is None
  assert model.load_models([[remote]], "serving_default",
                           pinned={remote: planned})
  upload(regressor_path, remote)  # Overwritten while the job runs.

  with pytest.raises(ConfigError) as raised:
    model.load_models([[remote]], "serving_default", pinned={remote: planned})
  assert str(raised.value) == (
      "model.path: expected the model as it was when the run was planned;"
      " its files changed since (overwritten while the job runs?), and a job"
      f" scores with one model. Received: {remote!r}")
