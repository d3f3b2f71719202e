"""`output.clean`: the input without its flagged records, in the input's
format, byte for byte; with `relabel`, label issues kept with their
suggested label; dead letters never in it; a re-audit of it flags none of
the dropped ids. TFRecord (gzip, with an undecodable record) and Parquet."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from lossaudit import clean, rules
from tests.helpers import predictions_config, run_audit

K = 3
N = 300
WRONG = {7, 19, 40, 41, 77, 150, 151, 152, 200, 251, 270, 299}
OUT_OF_RANGE = {5, 123}  # Label K: dead-lettered, never in clean/.


def _rows():
  ids = [f"id{i:03d}" for i in range(N)]
  truth = np.arange(N) % K
  probs = np.full((N, K), 0.05, np.float32)
  probs[np.arange(N), truth] = 0.9
  label = truth.copy()
  label[list(WRONG)] = (truth[list(WRONG)] + 1) % K
  label[list(OUT_OF_RANGE)] = K
  return ids, label, probs


def _example(i, ids, label, probs):
  return tf.train.Example(features=tf.train.Features(feature={
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[ids[i].encode()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(label[i])])),
      "p": tf.train.Feature(float_list=tf.train.FloatList(value=probs[i])),
      "note": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[f"kept as it was {i}".encode()])),
  })).SerializeToString()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """Two files of each format; the second TFRecord file holds a record that
  is not a tf.train.Example."""
  root = tmp_path_factory.mktemp("clean")
  ids, label, probs = _rows()
  halves = (range(0, N // 2), range(N // 2, N))
  records = {}
  for part, rows in enumerate(halves):
    path = str(root / "tfrecord" / f"data-{part}.tfrecord.gz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written = [_example(i, ids, label, probs) for i in rows]
    if part == 1:
      written.insert(10, b"\x00not an example")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
      for record in written:
        w.write(record)
    records[path] = written
    table = pa.table({"id": [ids[i] for i in rows],
                      "label": label[list(rows)],
                      "p": [probs[i] for i in rows],
                      "note": [f"kept as it was {i}" for i in rows]})
    table = table.replace_schema_metadata({"origin": "test"})
    os.makedirs(root / "parquet", exist_ok=True)
    pq.write_table(table, root / "parquet" / f"data-{part}.parquet",
                   compression="gzip", row_group_size=64)
  return root, records, ids, label, probs


def _config(root, fmt, out, **extra):
  pattern = str(root / fmt / ("*.tfrecord.gz" if fmt == "tfrecord"
                              else "*.parquet"))
  config = predictions_config(pattern, str(out), fmt, output={"clean": {}})
  for key, value in extra.items():
    config[key].update(value)
  return config


def _clean_files(out):
  folder = os.path.join(out, "clean")
  return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def _id_of(record):
  return tf.train.Example.FromString(record).features.feature[
      "id"].bytes_list.value[0].decode()


def test_tfrecord_clean_copy_is_the_unflagged_records_byte_for_byte(
    dataset, tmp_path):
  root, records, _, _, _ = dataset
  out = tmp_path / "out"
  summary = run_audit(_config(root, "tfrecord", out))
  flagged = set(pd.read_parquet(out / "flagged")["id"])
  assert flagged == {f"id{i:03d}" for i in WRONG}
  dead = {json.loads(line)["id"] for f in (out / "dead_letter").iterdir()
          for line in f.read_text().splitlines()}
  files = _clean_files(str(out))
  assert [os.path.basename(f) for f in files] == [
      "data-0.tfrecord.gz", "data-1.tfrecord.gz"]
  for source, copy in zip(sorted(records), files):
    expected = [r for r in records[source]
                if r != b"\x00not an example" and _id_of(r) not in flagged
                and int(tf.train.Example.FromString(r).features.feature[
                    "label"].int64_list.value[0]) < K]
    with open(copy, "rb") as f:
      assert f.read(2) == b"\x1f\x8b"  # gzip, as its input.
    got = [r.numpy() for r in tf.data.TFRecordDataset(copy, "GZIP")]
    assert got == expected
  assert summary["examples_dead_lettered"] == 3
  assert {f"id{i:03d}" for i in OUT_OF_RANGE} <= dead
  assert summary["clean"] == {
      "kept": N - 2 - len(WRONG), "dropped": len(WRONG), "relabelled": 0,
      "files": 2, "adds_up": True, "written": True,
      "withheld_because": None}
  assert (summary["clean"]["kept"] + summary["clean"]["dropped"]
          == summary["examples_scored"])
  # A re-audit of clean/ with the same model flags none of the dropped ids.
  again = _config(root, "tfrecord", tmp_path / "again")
  again["input"]["pattern"] = str(out / "clean" / "*.tfrecord.gz")
  again["output"].pop("clean")
  second = run_audit(again)
  assert second["examples_read"] == summary["clean"]["kept"]
  assert second["flagged"]["total"] == 0
  assert second["examples_dead_lettered"] == 0


@pytest.mark.parametrize("fmt", [
    pytest.param("tfrecord", marks=pytest.mark.slow), "parquet"])
def test_relabel_keeps_label_issues_with_the_suggested_label(
    dataset, tmp_path, fmt):
  root = dataset[0]
  out = tmp_path / "out"
  summary = run_audit(_config(
      root, fmt, out, flag={"loss_threshold": None,
                            "label_issues": "confident_learning"},
      output={"clean": {"relabel": True}}))
  flagged = pd.read_parquet(out / "flagged").set_index("id")
  assert all(list(r) == ["label_issue"] for r in flagged["reasons"])
  assert set(flagged.index) == {f"id{i:03d}" for i in WRONG}
  relabelled = pd.read_parquet(out / "relabelled").set_index("id")
  assert sorted(relabelled.index) == sorted(flagged.index)
  assert (relabelled["suggested_label"] == flagged.loc[
      relabelled.index, "suggested_label"]).all()
  assert (relabelled["given_label"] == flagged.loc[
      relabelled.index, "given_label"]).all()
  labels = _read_clean_labels(str(out), fmt)
  assert len(labels) == N - 2
  for i, row in relabelled.iterrows():
    assert labels[i] == row.suggested_label
  truth = {f"id{i:03d}": i % K for i in range(N)}
  assert all(labels[i] == truth[i] for i in labels)
  assert summary["clean"]["relabelled"] == len(WRONG)
  assert summary["clean"]["dropped"] == 0


def test_an_unsure_label_issue_is_dropped_not_relabelled(
    dataset, tmp_path):
  """The model gives the suggested labels 0.9: under a bar of 0.95 nothing
  is relabelled, and the label issues follow drop_reasons (all)."""
  out = tmp_path / "out"
  summary = run_audit(_config(
      dataset[0], "parquet", out,
      flag={"loss_threshold": None, "label_issues": "confident_learning"},
      output={"clean": {"relabel": True, "relabel_min_probability": 0.95}}))
  assert summary["clean"]["relabelled"] == 0
  assert summary["clean"]["dropped"] == len(WRONG)
  assert set(_read_clean_labels(str(out), "parquet")) == {
      f"id{i:03d}" for i in range(N)} - {
          f"id{i:03d}" for i in WRONG | OUT_OF_RANGE}
  assert pd.read_parquet(out / "relabelled").empty


def _read_clean_labels(out, fmt):
  labels = {}
  for path in _clean_files(out):
    if fmt == "tfrecord":
      for r in tf.data.TFRecordDataset(path, "GZIP"):
        feature = tf.train.Example.FromString(r.numpy()).features.feature
        labels[feature["id"].bytes_list.value[0].decode()] = (
            feature["label"].int64_list.value[0])
    else:
      table = pq.read_table(path)
      labels.update(zip(table["id"].to_pylist(), table["label"].to_pylist()))
  return labels


def test_parquet_clean_copy_keeps_the_schema_and_the_unflagged_rows(
    dataset, tmp_path):
  root = dataset[0]
  out = tmp_path / "out"
  only = {"clean": {"drop_reasons": ["loss_threshold"]}}
  summary = run_audit(_config(root, "parquet", out, output=only))
  flagged = set(pd.read_parquet(out / "flagged")["id"])
  for part, copy in enumerate(_clean_files(str(out))):
    source = root / "parquet" / f"data-{part}.parquet"
    original = pq.read_table(source)
    got = pq.read_table(copy)
    assert got.schema.equals(original.schema, check_metadata=True)
    assert pq.ParquetFile(copy).metadata.row_group(0).column(
        0).compression == "GZIP"
    keep = [i not in flagged and label < K for i, label in zip(
        original["id"].to_pylist(), original["label"].to_pylist())]
    assert got.equals(original.filter(pa.array(keep)))
  assert summary["clean"]["kept"] + summary["clean"]["dropped"] == (
      summary["examples_scored"])


def test_ranges_and_marks():
  assert clean.ranges_of(np.array([5, 3, 4, 9, 9, 10])).tolist() == [
      [3, 6], [9, 11]]
  assert clean.merge_ranges(np.array([[9, 11], [0, 3], [3, 5], [4, 6]])
                            ).tolist() == [[0, 6], [9, 11]]
  marks = clean.FileMarks(np.array([[0, 4], [6, 8]]), np.array([2]),
                          np.array([7]), np.array([1])).merge(
      clean.FileMarks(np.array([[4, 5]]), np.array([], np.int64)))
  assert marks.scored.tolist() == [[0, 5], [6, 8]]
  assert marks.num_scored == 7
  assert marks.kept(np.arange(9)).tolist() == [
      True, True, False, True, True, False, True, True, False]
  assert marks.new_labels(np.arange(5, 9)) == {2: 1}


def test_drop_actions():
  reasons = pa.array([["top_k"], ["label_issue"], ["label_issue", "top_k"],
                      ["non_finite"]], pa.list_(pa.string()))
  actions = clean.drop_actions(reasons, ("top_k", "label_issue"), True)
  assert actions.dropped.tolist() == [True, False, True, False]
  assert actions.relabelled.tolist() == [False, True, False, False]
  plain = clean.drop_actions(reasons, rules.reasons(), False)
  assert plain.dropped.all() and not plain.relabelled.any()
  # A label issue the model is not sure of (relabel_min_probability) follows
  # drop_reasons: dropped when they hold label_issue, else kept as it is.
  unsure = np.array([True, False, True, True])
  actions = clean.drop_actions(reasons, ("top_k", "label_issue"), True,
                               unsure)
  assert actions.dropped.tolist() == [True, True, True, False]
  assert actions.relabelled.tolist() == [False, False, False, False]
  kept = clean.drop_actions(reasons, ("top_k",), True, unsure)
  assert kept.dropped.tolist() == [True, False, True, False]
  assert not kept.relabelled.any()


@pytest.mark.parametrize("output,flag,gate,message", [
    ({"clean": {"relabel": True}}, {}, {},
     "output.clean.relabel: needs flag.label_issues (the suggested labels)."
     " Received: relabel=true with flag.label_issues=None"),
    ({"clean": {"drop_reasons": ["topk"]}}, {}, {},
     "output.clean.drop_reasons: expected a list of flag reasons, each one of"
     " ['loss_quantile', 'loss_threshold', 'robust_z', 'slice_quantile',"
     " 'top_k', 'aum_quantile', 'aum_below', 'label_issue', 'non_finite']"
     " (did you mean 'top_k'?). Received: ['topk']"),
    ({"clean": {"drop_reasons": []}}, {}, {},
     "output.clean.drop_reasons: expected null or a non-empty list of flag"
     " reasons. Received: []"),
    ({"clean": "yes"}, {}, {},
     "output.clean: expected null or a mapping of ['decisions',"
     " 'drop_reasons', 'relabel', 'relabel_min_probability', 'when']."
     " Received: 'yes'"),
    ({"clean": {"relabel": True, "drop_reason": ["top_k"]}}, {}, {},
     "output.clean.drop_reason: unknown config key; expected one of"
     " ['decisions', 'drop_reasons', 'relabel', 'relabel_min_probability',"
     " 'when']. Did you mean output.clean.drop_reasons?"),
    ({"clean": {"when": "sometimes"}}, {}, {},
     "output.clean.when: expected one of {'passed', 'always'}. Received:"
     " 'sometimes'"),
    ({"clean": {"relabel_min_probability": 1.5}}, {}, {},
     "output.clean.relabel_min_probability: expected a number in [0, 1]."
     " Received: 1.5"),
    ({}, {}, {"max_regression_fraction": 0.1},
     "gate.max_regression_fraction: needs gate.baseline (the run whose flags"
     " and ids are compared with). Received: max_regression_fraction=0.1"
     " with gate.baseline=None"),
    ({"write_losses": False, "write_probabilities": True}, {}, {},
     "output.write_probabilities: needs output.write_losses (the"
     " probabilities are a column of losses/). Received:"
     " write_probabilities=true with write_losses=false"),
    ({}, {}, {"max_regression_fraction": -0.1},
     "gate.max_regression_fraction: expected a number in [0, 1]. Received:"
     " -0.1"),
    ({"weights": {"scheme": "loss_deciles"}}, {}, {},
     "output.weights.scheme: expected one of {'drop_flagged',"
     " 'downweight_flagged', 'loss_bins'}. Received: 'loss_deciles'"),
    ({"weights": {"scheme": "downweight_flagged", "factor": 2}}, {}, {},
     "output.weights.factor: expected a number in [0, 1]. Received: 2"),
    ({"weights": {"scheme": "loss_bins", "bins": 1}}, {}, {},
     "output.weights.bins: expected an integer in [2, 1000]. Received: 1"),
    ({}, {}, {"max_new_flagged_fraction": 1.5},
     "gate.max_new_flagged_fraction: expected a number in [0, 1]. Received:"
     " 1.5"),
    ({"weights": {"scheme": "downweight_flagged", "factor": "0.5"}}, {}, {},
     "output.weights.factor: expected a number in [0, 1]. Received: '0.5'"),
])
def test_bad_clean_weights_and_gate_configs_are_refused(
    dataset, tmp_path, capsys, output, flag, gate, message):
  config = _config(dataset[0], "parquet", tmp_path / "out", flag=flag)
  config["output"].pop("clean")
  config["output"].update(output)
  config["gate"] = gate
  run_audit(config, exit_code=2)
  assert capsys.readouterr().err == f"lossaudit: error: {message}\n"


def test_clean_names_are_the_input_names():
  """Each input keeps its file name; two inputs with one name get a stable
  suffix of their path; a name too long for a file system (with the
  `.tmp-...` of the file being written) keeps its start and extension
  around a hash, unique per name."""
  names = clean.clean_names(["gs://b/d/data-0.tfrecord.gz",
                             "gs://b/e/data-0.tfrecord.gz", "/x/other.parquet"])
  assert names["/x/other.parquet"] == "other.parquet"
  import hashlib
  for source in ("gs://b/d/data-0.tfrecord.gz", "gs://b/e/data-0.tfrecord.gz"):
    suffix = hashlib.sha1(source.encode()).hexdigest()[:8]
    assert names[source] == f"data-0-{suffix}.tfrecord.gz"
  # A suffixed name that is a third input's own: each name stays unique.
  suffix = hashlib.sha1(b"gs://b/d/data-0.tfrecord.gz").hexdigest()[:8]
  third = f"gs://b/f/data-0-{suffix}.tfrecord.gz"
  three = clean.clean_names(["gs://b/d/data-0.tfrecord.gz",
                             "gs://b/e/data-0.tfrecord.gz", third])
  assert len(set(three.values())) == 3
  assert three["gs://b/e/data-0.tfrecord.gz"] == names[
      "gs://b/e/data-0.tfrecord.gz"]
  long = [f"/d/{c * 235}.tfrecord.gz" for c in "xy"] + [
      "/d/" + "é" * 120 + ".parquet"]
  found = clean.clean_names(long)
  for name in found.values():
    assert len((name + ".tmp-0123abcd").encode()) <= 255
    name.encode().decode()  # Not cut inside a character.
  assert found[long[0]].startswith("xxx")
  assert found[long[0]].endswith(".tfrecord.gz")
  assert found[long[2]].endswith(".parquet")
  assert len(set(found.values())) == 3
