"""A k-fold audit from an ordinary training loop (docs/out-of-sample.md, "A
complete loop, to paste"): five fold models, each saved at four epochs,
built one after the other in one Python process with Keras' own names
(`input_layer_3`, `dense_7`, ...) and a data column that is not called as
the input. The audit runs (exit 0); its label issues equal cleanlab's on
the out-of-fold probabilities, and `output.write_probabilities` writes
exactly what each row's fold model predicts. The same loop also saves four
checkpoints of a model trained on every row: the audit with each fold's
checkpoint selected by its held-out loss and `early_aum` flags what the
plain numpy + cleanlab reference flags on the written probabilities."""


import cleanlab.filter
import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit.pipelines import audit
from tests import early_aum_reference as reference
from tests.out_of_sample import default_folds, make_data, predict

N, K, FOLDS, EPOCHS = 600, 4, 5, (1, 2, 4, 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("loop")
  x, labels, _, _ = make_data(n=N, num_classes=K, noise=0.15, seed=3,
                              num_features=8)
  folds = default_folds(N, FOLDS, seed=3)
  pq.write_table(pa.table({
      "id": [f"row{i}" for i in range(N)], "pixels": list(x),
      "label": labels, "fold": folds}), root / "data.parquet")
  oof = np.zeros((N, K), np.float32)
  keras.utils.set_random_seed(0)
  for k in range(FOLDS):  # Layers unnamed: Keras numbers them.
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(K, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    train = folds != k
    done = 0
    for epoch in EPOCHS:
      model.fit(x[train], labels[train], epochs=epoch - done, verbose=0,
                batch_size=64)
      done = epoch
      model.save(root / f"fold{k}-epoch{epoch}.keras")
    oof[~train] = model.predict(x[~train], verbose=0)
  full = keras.Sequential([keras.Input((x.shape[1],)),
                           keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(K, activation="softmax")])
  full.compile("adam", "sparse_categorical_crossentropy")
  done = 0
  for epoch in EPOCHS:  # The same loop, on every row.
    full.fit(x, labels, epochs=epoch - done, verbose=0, batch_size=64)
    done = epoch
    full.save(root / f"full-epoch{epoch}.keras")
  return root, labels, oof


def _config(root, out, model, label_issues):
  """The loop's audit: its fold checkpoints, `model` keys added."""
  return {
      "input": {"pattern": str(root / "*.parquet"), "format": "parquet",
                "id_column": "id", "label_column": "label",
                "fold_column": "fold"},
      "model": {"path": str(root / "fold{fold}-epoch{checkpoint}.keras"),
                "folds": FOLDS, "checkpoints": list(EPOCHS), **model},
      "flag": {"loss_quantile": None, "label_issues": label_issues},
      "output": {"dir": str(out), "write_probabilities": True},
  }


def test_fold_models_from_one_process_audit_like_cleanlab(
    trained, tmp_path, write_config):
  root, labels, oof = trained
  names = {keras.models.load_model(root / f"fold{k}-epoch8.keras").layers[
      -1].name for k in range(FOLDS)}
  assert len(names) == FOLDS  # dense_1, dense_3, ...: five names.
  out = tmp_path / "out"
  config = write_config(_config(root, out, {}, "confident_learning"))
  assert audit.main(["--config", config]) == 0
  losses = pd.read_parquet(out / "losses")
  index = np.array([int(i[3:]) for i in losses["id"]])
  written = np.stack(losses["probabilities"].to_numpy())
  np.testing.assert_allclose(written, oof[index], rtol=0, atol=1e-6)
  expected = cleanlab.filter.find_label_issues(
      labels, oof, filter_by="confident_learning")
  flagged = pd.read_parquet(out / "flagged")
  issues = {int(i[3:]) for i, r in zip(flagged["id"], flagged["reasons"])
            if "label_issue" in list(r)}
  assert issues == set(np.flatnonzero(expected))
  assert len(issues) > 10


@pytest.mark.slow
def test_the_loop_with_checkpoints_selected_and_early_aum(
    trained, tmp_path, write_config):
  root, labels, _ = trained
  x = np.stack(pq.read_table(root / "data.parquet")["pixels"].to_numpy(
      zero_copy_only=False))
  folds = default_folds(N, FOLDS, seed=3)
  out = tmp_path / "out"
  config = write_config(_config(root, out, {
      "select_checkpoint": "heldout_loss",
      "dynamics_path": str(root / "full-epoch{checkpoint}.keras")},
                                "early_aum"))
  assert audit.main(["--config", config]) == 0
  # Each fold's checkpoint: the lowest mean crossentropy on its own rows.
  by_epoch = np.zeros((len(EPOCHS), N, K), np.float32)
  for k in range(FOLDS):
    for c, epoch in enumerate(EPOCHS):
      by_epoch[c, folds == k] = predict(
          str(root / f"fold{k}-epoch{epoch}.keras"), x[folds == k])[0]
  picked, _ = reference.heldout_selection(
      -np.log(by_epoch[:, np.arange(N), labels]), folds, FOLDS)
  oof = reference.assemble_oof(by_epoch, folds, picked)
  losses = pd.read_parquet(out / "losses").set_index("id").loc[
      [f"row{i}" for i in range(N)]]
  written = np.stack(losses["probabilities"].to_numpy())
  np.testing.assert_allclose(written, oof, rtol=0, atol=1e-6)
  full = [predict(str(root / f"full-epoch{e}.keras"), x) for e in EPOCHS]
  logits = np.stack([f[1] for f in full]).astype(np.float64)
  others = np.where(np.arange(K) == labels[:, None], -np.inf, logits)
  margins = logits[:, np.arange(N), labels] - others.max(axis=2)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  hashes = tf.fingerprint(tf.constant([f"row{i}".encode() for i in range(N)])
                          ).numpy().view("<u8").reshape(-1)
  expected = reference.early_aum(
      labels, written, margins, np.stack([f[0] for f in full]).argmax(axis=2),
      hashes)
  flagged = pd.read_parquet(out / "flagged")
  assert {int(i[3:]) for i in flagged["id"]} == set(
      np.flatnonzero(expected.flags))
  if expected.a is not None:
    np.testing.assert_allclose(losses["early_aum"], expected.a, atol=1e-5)
