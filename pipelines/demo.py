"""The demo: audit scikit-learn's handwritten digits with 10% flipped labels.

A small Keras classifier is trained on one half of the 1,797 bundled 8×8
digits; the other half is written as TFRecord shards with 10% of its labels
flipped at known ids, then audited. Precision and recall of the flagged ids
against the flipped ones are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from lossaudit import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")
NOISE_RATE = 0.10


def digits_split(seed: int = 0):
  """`(train_x, train_y, audit_x, audit_y)`: the digits, shuffled in halves."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int64)
  order = np.random.default_rng(seed).permutation(len(y))
  half = len(y) // 2
  train, audit = order[:half], order[half:]
  return x[train], y[train], x[audit], y[audit]


def train_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0):
  """A 64→64→10 softmax MLP; input named `pixels`."""
  import keras  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  inputs = keras.Input((x.shape[1],), name="pixels")
  hidden = keras.layers.Dense(64, activation="relu")(inputs)
  outputs = keras.layers.Dense(10, activation="softmax")(hidden)
  model = keras.Model(inputs, outputs)
  model.compile(optimizer=keras.optimizers.Adam(0.005),
                loss="sparse_categorical_crossentropy")
  model.fit(x, y, epochs=40, batch_size=32, verbose=0)
  return model


def flip_labels(y: np.ndarray, rate: float, seed: int = 0):
  """Flips `rate` of the labels to another class; returns `(noisy, flipped)`."""
  rng = np.random.default_rng(seed + 1)
  flipped = np.sort(rng.choice(len(y), int(round(rate * len(y))),
                               replace=False))
  noisy = y.copy()
  noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
  return noisy, flipped


def build(data_dir: str = "data/demo",
          model_path: Optional[str] = "models/demo.keras", seed: int = 0,
          noise_rate: float = NOISE_RATE) -> Dict:
  """Writes the demo model and the noisy audit shards; returns the truth.

  Args:
    data_dir: where the shards and `flipped_ids.json` go.
    model_path: where the trained model goes; None: train none (the audit
      half of the digits does not depend on it).
    seed: the split, training and flipping seed.
    noise_rate: the share of audit labels flipped.
  """
  train_x, train_y, audit_x, audit_y = digits_split(seed)
  if model_path is not None:
    model = train_classifier(train_x, train_y, seed)
    os.makedirs(os.path.dirname(model_path) or ".", exist_ok=True)
    model.save(model_path)
  noisy, flipped = flip_labels(audit_y, noise_rate, seed)
  ids = np.array([f"digit-{i:04d}" for i in range(len(noisy))])
  datasets.write_tfrecords(data_dir, {"id": ids, "pixels": audit_x,
                                      "label": noisy}, num_shards=4)
  truth = {"flipped_ids": ids[flipped].tolist(), "examples": len(ids)}
  with open(os.path.join(data_dir, "flipped_ids.json"), "w") as f:
    json.dump(truth, f)
  return truth


def precision_recall(flagged_ids, flipped_ids):
  flagged, flipped = set(flagged_ids), set(flipped_ids)
  hits = len(flagged & flipped)
  return (hits / len(flagged) if flagged else 0.0,
          hits / len(flipped) if flipped else 0.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  from pipelines import audit  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(prog="lossaudit demo")
  parser.add_argument("--output", default="out/demo",
                      help="output directory of the audit")
  parser.add_argument("--data", default="data/demo",
                      help="where the demo shards are written")
  parser.add_argument("--model", default="models/demo.keras")
  args, beam_args = parser.parse_known_args(argv)
  print(f"Building the demo data in {args.data} and model {args.model} ...")
  truth = build(args.data, args.model)
  code = audit.main(["--config", DEMO_CONFIG,
                     "--set", f"input.pattern={args.data}/part-*.tfrecord.gz",
                     "--set", f"model.path={args.model}",
                     "--set", f"output.dir={args.output}"] + beam_args)
  if code:
    return code
  flagged = pq.read_table(os.path.join(args.output, "flagged"),
                          columns=["id"]).column("id").to_pylist()
  precision, recall = precision_recall(flagged, truth["flipped_ids"])
  print(f"Flipped labels: {len(truth['flipped_ids'])} of"
        f" {truth['examples']}; flagged: {len(flagged)}; precision"
        f" {precision:.2f}, recall {recall:.2f}")
  for name in ("summary.json", "report.html", "losses", "flagged",
               "dead_letter"):
    print(f"  {os.path.join(args.output, name)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
