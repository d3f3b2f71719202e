"""A deterministic dataset and models for out-of-sample label auditing.

`build(directory)` writes a Parquet dataset of overlapping Gaussian class
clusters with some labels flipped, and trains high-capacity Keras classifiers
that memorise the noisy labels:

* one model per fold, each trained on the rows of the other folds
  (`fold{k}.keras`), whose predictions on their own fold are out of sample;
* one model on all rows (`all.keras`), whose predictions are in sample and so
  overconfident on the flipped labels;
* one more model on all rows, saved after each of a few epochs
  (`epoch{e}.keras`).

It also writes each model's accuracy on its noisy training labels to
`train_accuracy.json`.

Confident learning finds the flipped labels well from the out-of-fold
probabilities and badly from the in-sample ones; `report(data)` measures both
with cleanlab directly. Run `python -m tests.out_of_sample` to print it.
"""

import json
import os
import shutil
import time
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

import numpy as np

NUM_EXAMPLES = 1500
NUM_FEATURES = 16
NUM_CLASSES = 5
NOISE = 0.18
# Spread of the class means around the origin; each cluster has unit variance.
SEPARATION = 1.0
HIDDEN = (256, 256)
EPOCHS = 40
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
CHECKPOINTS = (2, 5, 10, 20, EPOCHS)
PREDICT_BATCH_SIZE = 512


class OutOfSample(NamedTuple):
  """What `build` wrote and what the saved models predict."""
  dir: str
  parquet: str
  ids: np.ndarray
  labels: np.ndarray
  true_labels: np.ndarray
  noisy: np.ndarray
  folds: np.ndarray
  fold_model: str
  all_model: str
  checkpoint_model: str
  checkpoints: Tuple[int, ...]
  oof_probs: np.ndarray
  in_sample_probs: np.ndarray
  checkpoint_probs: np.ndarray
  checkpoint_logits: np.ndarray
  # With `build(fold_checkpoints=...)`: each fold's model saved after each
  # of those epochs (`{fold}`, `{checkpoint}`), and its predictions on its
  # own fold's rows `(C, n, K)`.
  fold_checkpoint_model: Optional[str] = None
  fold_checkpoints: Tuple[int, ...] = ()
  fold_checkpoint_probs: Optional[np.ndarray] = None


def make_data(n: int = NUM_EXAMPLES, num_classes: int = NUM_CLASSES,
              noise: float = NOISE, seed: int = 0,
              num_features: int = NUM_FEATURES, noise_kind: str = "uniform",
              dataset: str = "clusters"
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Gaussian class clusters (or sklearn's digits) with `noise` of the
  labels flipped.

  Args:
    n: Number of rows (the digits: at most 1797).
    num_classes: Number of classes (the digits: 10).
    noise: Fraction of rows whose label is flipped to another class
      (exactly `round(noise * n)` rows).
    seed: Seed of the data.
    num_features: Length of each feature vector (the digits: 64).
    noise_kind: `uniform`: to any other class; `pairs` (class-conditional,
      asymmetric): class j always to j + 1 (mod K).
    dataset: `clusters` or `digits` (`sklearn.datasets.load_digits`,
      shuffled, pixels scaled to [0, 1]).

  Returns:
    `(x, labels, true_labels, noisy)`: float32 `(n, num_features)`, int64
    `(n,)`, int64 `(n,)` and bool `(n,)`.
  """
  rng = np.random.default_rng(seed)
  if dataset == "digits":
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    order = rng.permutation(len(digits.target))[:n]
    x, true_labels = digits.data[order] / 16.0, digits.target[order]
    true_labels = true_labels.astype(np.int64)
    n = len(true_labels)
  else:
    means = rng.normal(scale=SEPARATION, size=(num_classes, num_features))
    true_labels = np.arange(n, dtype=np.int64) % num_classes
    rng.shuffle(true_labels)
    x = (means[true_labels] + rng.normal(size=(n, num_features)))
  noisy = np.zeros(n, dtype=bool)
  noisy[rng.choice(n, size=int(round(noise * n)), replace=False)] = True
  shift = (np.ones(n, np.int64) if noise_kind == "pairs" else
           rng.integers(1, num_classes, size=n))
  labels = np.where(noisy, (true_labels + shift) % num_classes, true_labels)
  return (x.astype(np.float32), labels.astype(np.int64), true_labels, noisy)


def default_folds(n: int, num_folds: int = 5, seed: int = 0) -> np.ndarray:
  """`np.arange(n) % num_folds` in an order given by `seed`."""
  rng = np.random.default_rng([seed, 1])
  return rng.permutation(np.arange(n, dtype=np.int64) % num_folds)


def _classifier(num_features: int, num_classes: int, seed: int):
  import keras  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  inputs = keras.Input((num_features,), name="x")
  hidden = inputs
  for width in HIDDEN:
    hidden = keras.layers.Dense(width, activation="relu")(hidden)
  outputs = keras.layers.Dense(num_classes, activation="softmax",
                               name="probs")(hidden)
  model = keras.Model(inputs, outputs)
  model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model


def _train(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int,
           path: str, checkpoints: Iterable[int] = ()) -> float:
  """Trains a fresh classifier on `(x, y)`; returns its training accuracy.

  Without `checkpoints`, trains `EPOCHS` epochs and saves the model to
  `path`; with them, trains up to the last one and saves the model after
  each to `path.format(checkpoint=epoch)`.
  """
  import keras  # pylint: disable=g-import-not-at-top

  model = _classifier(x.shape[1], num_classes, seed)
  callbacks = []
  wanted = set(checkpoints)
  if wanted:

    class Saver(keras.callbacks.Callback):

      def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in wanted:
          self.model.save(path.format(checkpoint=epoch + 1))

    callbacks.append(Saver())
  keras.utils.set_random_seed(seed + 1)
  model.fit(x, y, batch_size=BATCH_SIZE, epochs=max(wanted or {EPOCHS}),
            shuffle=True, verbose=0, callbacks=callbacks)
  if not wanted:
    model.save(path)
  probs = model.predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0)
  return float(np.mean(probs.argmax(axis=1) == y))


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, in float64."""
  logits = np.asarray(logits, np.float64)
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def predict(path: str, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Loads the saved model at `path`; returns its `(probs, logits)` on `x`.

  The logits are the final Dense layer's pre-activation, `h @ W + b` of the
  penultimate layer's output `h`.
  """
  import keras  # pylint: disable=g-import-not-at-top

  model = keras.models.load_model(path, compile=False)
  probs = model.predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0)
  last = model.layers[-1]
  hidden = keras.Model(model.inputs, last.input).predict(
      x, batch_size=PREDICT_BATCH_SIZE, verbose=0)
  kernel, bias = (np.asarray(w, np.float64) for w in last.get_weights())
  logits = np.asarray(hidden, np.float64) @ kernel + bias
  np.testing.assert_allclose(softmax(logits), probs, atol=1e-5)
  return probs.astype(np.float32), logits.astype(np.float32)


def build(directory: str, folds: Optional[np.ndarray] = None,
          num_folds: int = 5, n: int = NUM_EXAMPLES,
          num_classes: int = NUM_CLASSES, noise: float = NOISE,
          seed: int = 0, fold_checkpoints: Tuple[int, ...] = (),
          noise_kind: str = "uniform", dataset: str = "clusters"
          ) -> OutOfSample:
  """Writes the dataset and trains and saves the models under `directory`.

  Args:
    directory: Where to write; created if missing.
    folds: `(n,)` fold of each row, values in `[0, num_folds)`; when None,
      `default_folds(n, num_folds, seed)`.
    num_folds: Number of folds (one model each).
    n: Number of rows.
    num_classes: Number of classes.
    noise: Fraction of labels flipped to another class.
    seed: Seed of the data and of the models.
    fold_checkpoints: epochs after which each fold's model is saved too
      (`fold{fold}-epoch{checkpoint}.keras`); the last is the fold's model.
    noise_kind: `uniform` or `pairs` (see `make_data`).
    dataset: `clusters` or `digits` (see `make_data`; 10 classes, 64
      features, at most 1797 rows).

  Returns:
    The paths written and the saved models' predictions.
  """
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  from lossaudit import datasets  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  if dataset == "digits":
    num_classes = 10
  x, labels, true_labels, noisy = make_data(
      n, num_classes, noise, seed, noise_kind=noise_kind, dataset=dataset)
  n = len(labels)
  ids = np.array([f"ex-{i:05d}" for i in range(n)])
  if folds is None:
    folds = default_folds(n, num_folds, seed)
  folds = np.asarray(folds, np.int64)
  if folds.shape != (n,) or folds.min() < 0 or folds.max() >= num_folds:
    raise ValueError(f"folds must be ({n},) in [0, {num_folds})")

  fold_model = os.path.join(directory, "fold{fold}.keras")
  all_model = os.path.join(directory, "all.keras")
  checkpoint_model = os.path.join(directory, "epoch{checkpoint}.keras")
  fold_checkpoint_model = os.path.join(
      directory, "fold{fold}-epoch{checkpoint}.keras")
  accuracies = {}
  for fold in range(num_folds):
    train = folds != fold
    if fold_checkpoints:
      each = fold_checkpoint_model.replace("{fold}", str(fold))
      accuracies[f"fold{fold}"] = _train(
          x[train], labels[train], num_classes, seed * 100 + fold, each,
          fold_checkpoints)
      shutil.copy(each.format(checkpoint=max(fold_checkpoints)),
                  fold_model.format(fold=fold))
      continue
    accuracies[f"fold{fold}"] = _train(
        x[train], labels[train], num_classes, seed * 100 + fold,
        fold_model.format(fold=fold))
  accuracies["all"] = _train(x, labels, num_classes, seed * 100 + 50,
                             all_model)
  accuracies["checkpoint"] = _train(x, labels, num_classes, seed * 100 + 70,
                                    checkpoint_model, CHECKPOINTS)

  oof_probs = np.zeros((n, num_classes), np.float32)
  oof_logits = np.zeros((n, num_classes), np.float32)
  for fold in range(num_folds):
    rows = folds == fold
    if rows.any():
      oof_probs[rows], oof_logits[rows] = predict(
          fold_model.format(fold=fold), x[rows])
  fold_checkpoint_probs = None
  if fold_checkpoints:
    fold_checkpoint_probs = np.zeros(
        (len(fold_checkpoints), n, num_classes), np.float32)
    for fold in range(num_folds):
      rows = folds == fold
      for c, epoch in enumerate(fold_checkpoints):
        if rows.any():
          fold_checkpoint_probs[c, rows], _ = predict(
              fold_checkpoint_model.format(fold=fold, checkpoint=epoch),
              x[rows])
  in_sample_probs, _ = predict(all_model, x)
  checkpoint_probs, checkpoint_logits = (np.stack(arrays) for arrays in zip(
      *(predict(checkpoint_model.format(checkpoint=c), x)
        for c in CHECKPOINTS)))

  parquet = os.path.join(directory, "data", "part-00000-of-00001.parquet")
  os.makedirs(os.path.dirname(parquet), exist_ok=True)
  pq.write_table(datasets.to_arrow({
      "id": ids, "x": x, "label": labels, "fold": folds,
      "oof_probs": oof_probs, "oof_logits": oof_logits}), parquet)
  with open(os.path.join(directory, "train_accuracy.json"), "w") as f:
    json.dump(accuracies, f, indent=2, sort_keys=True)
  return OutOfSample(
      dir=directory, parquet=parquet, ids=ids, labels=labels,
      true_labels=true_labels, noisy=noisy, folds=folds,
      fold_model=fold_model, all_model=all_model,
      checkpoint_model=checkpoint_model, checkpoints=CHECKPOINTS,
      oof_probs=oof_probs, in_sample_probs=in_sample_probs,
      checkpoint_probs=checkpoint_probs, checkpoint_logits=checkpoint_logits,
      fold_checkpoint_model=fold_checkpoint_model if fold_checkpoints
      else None, fold_checkpoints=tuple(fold_checkpoints),
      fold_checkpoint_probs=fold_checkpoint_probs)


def audit(data: OutOfSample, out, model: Dict, flag: Dict, workers: int = 1,
          **sections):
  """Runs `lossaudit run` on `data`'s Parquet file with the `model` and
  `flag` sections (`sections` merged in too), on `workers` DirectRunner
  processes.

  Returns:
    `(summary.json, flagged/, losses/ indexed by id in `data.ids`' order)`.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from tests.helpers import base_config, run_audit  # pylint: disable=g-import-not-at-top

  config = base_config(data.parquet, "", out, model=model, **sections)
  config["input"]["format"] = "parquet"
  config["flag"] = flag
  flags = [f"--direct_num_workers={workers}",
           "--direct_running_mode=multi_processing"] if workers > 1 else []
  summary = run_audit(config, *flags)
  flagged = pd.read_parquet(os.path.join(out, "flagged"))
  losses = pd.read_parquet(os.path.join(out, "losses")).set_index("id").loc[
      data.ids]
  return summary, flagged, losses


def f1(flagged_ids: Iterable, noisy_ids: Iterable) -> float:
  """F1 of the flagged ids against the truly noisy ids (0 if either empty)."""
  flagged, noisy = set(flagged_ids), set(noisy_ids)
  hits = len(flagged & noisy)
  if not hits:
    return 0.0
  return 2 * hits / (len(flagged) + len(noisy))


def cleanlab_f1(data: OutOfSample, probs: np.ndarray) -> float:
  """F1 of cleanlab's `find_label_issues(labels, probs)` against `noisy`."""
  from cleanlab import filter as cleanlab_filter

  issues = cleanlab_filter.find_label_issues(data.labels, probs)
  return f1(data.ids[issues], data.ids[data.noisy])


def train_accuracy(data: OutOfSample) -> Dict[str, float]:
  """Accuracy on its noisy training labels of each model `build` trained."""
  with open(os.path.join(data.dir, "train_accuracy.json")) as f:
    return json.load(f)


def report(data: OutOfSample) -> Dict[str, float]:
  """cleanlab's F1 from each set of probabilities, and the accuracies."""
  figures = {"oof_f1": cleanlab_f1(data, data.oof_probs),
             "in_sample_f1": cleanlab_f1(data, data.in_sample_probs)}
  for c, probs in zip(data.checkpoints, data.checkpoint_probs):
    figures[f"epoch{c}_f1"] = cleanlab_f1(data, probs)
  figures["oof_accuracy_true"] = float(np.mean(
      data.oof_probs.argmax(axis=1) == data.true_labels))
  for name, value in train_accuracy(data).items():
    figures[f"train_accuracy_{name}"] = value
  return figures


def main() -> None:
  import sys  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  seeds = [int(s) for s in sys.argv[1:]] or [0]
  for seed in seeds:
    with tempfile.TemporaryDirectory() as directory:
      start = time.perf_counter()
      data = build(directory, seed=seed)
      seconds = time.perf_counter() - start
      figures = report(data)
    print(f"seed {seed}: build {seconds:.1f} s")
    for name, value in figures.items():
      print(f"  {name}: {value:.3f}")


if __name__ == "__main__":
  main()
