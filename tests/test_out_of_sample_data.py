"""The out-of-sample dataset and models from tests/out_of_sample.py."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import out_of_sample


@pytest.mark.slow  # Trains seven small Keras models (~25 s on 2 cores).
def test_out_of_fold_probabilities_find_the_flipped_labels(tmp_path):
  data = out_of_sample.build(str(tmp_path))
  n, k = len(data.ids), out_of_sample.NUM_CLASSES
  c = len(data.checkpoints)

  # The models memorised their noisy training labels, so confident learning
  # finds the flipped labels from out-of-fold probabilities only.
  assert min(out_of_sample.train_accuracy(data).values()) > 0.95
  figures = out_of_sample.report(data)
  assert figures["oof_f1"] > 0.6
  assert figures["oof_f1"] > figures["in_sample_f1"] + 0.3

  assert data.oof_probs.shape == data.in_sample_probs.shape == (n, k)
  assert data.checkpoint_probs.shape == data.checkpoint_logits.shape == (
      c, n, k)
  np.testing.assert_allclose(out_of_sample.softmax(data.checkpoint_logits),
                             data.checkpoint_probs, atol=1e-5)
  assert 0.1 < data.noisy.mean() < 0.25
  np.testing.assert_array_equal(data.labels == data.true_labels, ~data.noisy)
  assert np.bincount(data.folds).tolist() == [n // 5] * 5

  table = pq.read_table(data.parquet)
  assert table.column_names == ["id", "x", "label", "fold", "oof_probs",
                                "oof_logits"]
  columns = table.to_pydict()
  assert columns["id"] == data.ids.tolist()
  assert columns["label"] == data.labels.tolist()
  assert columns["fold"] == data.folds.tolist()
  assert table.schema.field("x").type == pa.list_(pa.float32())
  x, labels, true_labels, noisy = out_of_sample.make_data()
  np.testing.assert_array_equal(np.array(columns["x"], np.float32), x)
  np.testing.assert_array_equal(labels, data.labels)
  np.testing.assert_array_equal(true_labels, data.true_labels)
  np.testing.assert_array_equal(noisy, data.noisy)
  oof_probs = np.array(columns["oof_probs"], np.float32)
  np.testing.assert_array_equal(oof_probs, data.oof_probs)
  np.testing.assert_allclose(
      out_of_sample.softmax(np.array(columns["oof_logits"], np.float32)),
      oof_probs, atol=1e-5)
  for fold in range(5):
    assert (tmp_path / f"fold{fold}.keras").exists()
  for checkpoint in data.checkpoints:
    assert (tmp_path / f"epoch{checkpoint}.keras").exists()
  assert data.all_model == str(tmp_path / "all.keras")
