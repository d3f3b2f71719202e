"""Distributed confident learning agrees with cleanlab on the same inputs."""


import keras
import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues

from lossaudit import datasets
from lossaudit.errors import ConfigError
from lossaudit.pipelines import audit, demo
from tests.helpers import base_config, noisy_probs

NUM_CLASSES = 10
MIN_JACCARD = {"confident_learning": 0.98, "prune_by_noise_rate": 0.95}


def jaccard(a, b):
  a, b = set(a), set(b)
  return len(a & b) / max(1, len(a | b))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """50,000 examples, 10 classes, class-conditional asymmetric noise.

  The model is the identity on a `probs` input, so the pipeline and cleanlab
  see exactly the same probabilities.
  """
  root = tmp_path_factory.mktemp("synthetic")
  probs, given, truth = noisy_probs(50_000, NUM_CLASSES, 0.08, seed=11)
  ids = np.char.add("s", np.arange(len(given)).astype(str))
  datasets.write_tfrecords(str(root / "data"), {
      "id": ids, "probs": probs, "label": given}, num_shards=4)
  inputs = keras.Input((NUM_CLASSES,), name="probs")
  keras.Model(inputs, keras.layers.Identity()(inputs)).save(
      str(root / "identity.keras"))
  return root, probs, given, truth, ids


@pytest.mark.parametrize(
    "workers", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", ["confident_learning",
                                    "prune_by_noise_rate"])
def test_synthetic_agrees_with_cleanlab(tmp_path, synthetic, write_config,
                                        method, workers):
  root, probs, given, truth, ids = synthetic
  out = tmp_path / "out"
  config = base_config(root / "data" / "*", root / "identity.keras", out,
                       flag={"loss_quantile": None, "label_issues": method})
  argv = ["--config", write_config(config)]
  if workers > 1:
    argv += [f"--direct_num_workers={workers}",
             "--direct_running_mode=multi_processing"]
  summary = audit.run(argv)
  flagged = pd.read_parquet(out / "flagged")
  expected = ids[find_label_issues(given, probs, filter_by=method)]
  assert len(expected) > 2000
  assert jaccard(flagged["id"], expected) >= MIN_JACCARD[method]
  issues = summary["label_issues"]
  assert issues["method"] == method
  assert len(issues["thresholds"]) == NUM_CLASSES
  assert np.array(issues["confident_joint"]).sum() == len(given)
  assert sum(issues["issues_by_pair"].values()) == len(flagged)
  assert summary["flagged"]["by_reason"] == {"label_issue": len(flagged)}
  # Each issue was a candidate of its bundle's top n in some cell.
  counters = summary["metrics"]["counters"]
  if method == "prune_by_noise_rate":
    assert counters["label_issue_candidates"] >= len(flagged)
  else:
    assert "label_issue_candidates" not in counters
  # Most issues are real flips, and suggest the true label.
  by_id = dict(zip(ids, truth))
  true = flagged["id"].map(by_id)
  assert (true != flagged["given_label"]).mean() > 0.8
  assert (true == flagged["suggested_label"]).mean() > 0.8
  # Ranked as cleanlab's self-confidence ranking: lower confidence first.
  ranked = flagged.sort_values("score", ascending=False)
  assert ranked["self_confidence"].is_monotonic_increasing


@pytest.mark.slow  # 12 s; the synthetic dataset covers agreement by default.
@pytest.mark.parametrize("workers", [1, 2])
def test_digits_demo_agrees_with_cleanlab(tmp_path, write_config, workers):
  data, model_path = tmp_path / "data", tmp_path / "demo.keras"
  truth = demo.build(str(data), str(model_path))
  columns = pd.DataFrame(
      [(r["id"], r["label"]) for r in _examples(data)], columns=["id", "label"])
  x = np.stack([r["pixels"] for r in _examples(data)])
  probs = keras.models.load_model(model_path, compile=False).predict(
      x, verbose=0)
  for method in ("confident_learning", "prune_by_noise_rate"):
    out = tmp_path / method
    config = base_config(data / "*.gz", model_path, out,
                         flag={"loss_quantile": None, "label_issues": method})
    argv = ["--config", write_config(config, f"{method}.yaml")]
    if workers > 1:
      argv += [f"--direct_num_workers={workers}",
               "--direct_running_mode=multi_processing"]
    audit.run(argv)
    flagged = pd.read_parquet(out / "flagged")["id"]
    expected = columns["id"][find_label_issues(columns["label"].to_numpy(),
                                               probs, filter_by=method)]
    assert jaccard(flagged, expected) >= MIN_JACCARD[method]
    precision, recall = demo.precision_recall(flagged, truth["flipped_ids"])
    assert precision > 0.8 and recall > 0.8


def _examples(directory):
  import tensorflow as tf

  files = sorted(str(p) for p in directory.glob("*.gz"))
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    example = tf.train.Example.FromString(record.numpy())
    f = example.features.feature
    yield {"id": f["id"].bytes_list.value[0].decode(),
           "label": f["label"].int64_list.value[0],
           "pixels": np.array(f["pixels"].float_list.value, dtype=np.float32)}


def test_label_issues_need_a_classifier(tmp_path, tfrecord_dir, regressor_path,
                                        write_config):
  config = base_config(tfrecord_dir / "*.gz", regressor_path, tmp_path / "o",
                       loss={"name": "mean_squared_error"},
                       flag={"label_issues": "confident_learning"})
  config["input"]["label_column"] = "target"
  with pytest.raises(ConfigError, match=r"flag.label_issues: needs a"
                     r" classification loss .* Received: 'confident_learning'"
                     r" with loss \['mean_squared_error'\]"):
    audit.run(["--config", write_config(config)])
