"""The demo: audit scikit-learn's handwritten digits with 10% flipped labels.

A small Keras classifier is trained on one half of the 1,797 bundled 8×8
digits; the other half is written as TFRecord shards with 10% of its labels
flipped at known ids, then audited. Precision and recall of the flagged ids
against the flipped ones are printed.

`lossaudit demo --output DIR` writes everything under DIR, laid out as the
demo config (`lossaudit.configs/demo.yaml`) names it relative to where it
runs: `DIR/data/demo/`, `DIR/models/demo.keras` and the audit's
`DIR/out/demo/`. So `lossaudit run --config demo.yaml` run in DIR audits the
same data again.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import os
import re
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from lossaudit import datasets, ownership
from lossaudit.errors import ConfigError, one_line, short_repr

NOISE_RATE = 0.10
NUM_SHARDS = 4
TRUTH = "flipped_ids.json"
# What `build` writes into the data directory, and nothing else.
_DATA_FILE = re.compile(
    rf"part-\d{{5}}-of-\d{{5}}\.tfrecord\.gz|{re.escape(TRUTH)}")


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
                                      "label": noisy}, num_shards=NUM_SHARDS)
  truth = {"flipped_ids": ids[flipped].tolist(), "examples": len(ids)}
  with open(os.path.join(data_dir, TRUTH), "w") as f:
    json.dump(truth, f)
  return truth


def precision_recall(flagged_ids, flipped_ids):
  flagged, flipped = set(flagged_ids), set(flipped_ids)
  hits = len(flagged & flipped)
  return (hits / len(flagged) if flagged else 0.0,
          hits / len(flipped) if flipped else 0.0)


def check_paths(output: str, data: str, model: str) -> None:
  """Refuses, before anything is written, paths where the demo would
  overwrite or mix with the user's files.

  `output` follows `lossaudit run`'s rule (not `.`, the home directory or a
  root; new, empty, or holding an earlier run's marker); `data` must be new,
  empty or hold only what `build` writes; `model` must not be a directory.

  Raises:
    ConfigError: naming the flag.
  """
  ownership.check_not_protected(output)
  if not output.startswith("gs://") and os.path.exists(output):
    if not os.path.isdir(output):
      raise ConfigError(f"--output: expected a directory. Received:"
                        f" {short_repr(output)} (a file)")
    names = set(os.listdir(output)) - {ownership.LOCK}
    if names and ownership.MARKER not in names:
      raise ConfigError(
          f"--output: expected a new or empty directory, or an earlier"
          f" run's (with {ownership.MARKER}). Received: {short_repr(output)}"
          f" (holds files lossaudit did not write, such as"
          f" {short_repr(sorted(names)[0])})")
  if os.path.exists(data):
    if not os.path.isdir(data):
      raise ConfigError(f"--data: expected a directory. Received:"
                        f" {short_repr(data)} (a file)")
    foreign = sorted(n for n in os.listdir(data) if not _DATA_FILE.fullmatch(n))
    if foreign:
      raise ConfigError(
          f"--data: expected a new or empty directory, or one holding only"
          f" the demo's part-*.tfrecord.gz and {TRUTH}. Received:"
          f" {short_repr(data)} (holds {short_repr(foreign[0])})")
  if os.path.realpath(data) == os.path.realpath(output):
    raise ConfigError(f"--data: expected a directory other than the"
                      f" audit's output. Received: {short_repr(data)}")
  if os.path.isdir(model):
    raise ConfigError(f"--model: expected a .keras file. Received:"
                      f" {short_repr(model)} (a directory)")


def demo_config() -> contextlib.AbstractContextManager:
  """The shipped `demo.yaml` as a file path, for `with` (package data)."""
  return importlib.resources.as_file(
      importlib.resources.files("lossaudit.configs") / "demo.yaml")


def main(argv: Optional[Sequence[str]] = None) -> int:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(prog="lossaudit demo")
  parser.add_argument(
      "--output", default=".",
      help="where the demo writes everything: DIR/data/demo,"
           " DIR/models/demo.keras and the audit's DIR/out/demo")
  parser.add_argument("--data", default=None,
                      help="where the demo shards go (DIR/data/demo)")
  parser.add_argument("--model", default=None,
                      help="where the model goes (DIR/models/demo.keras)")
  args, beam_args = parser.parse_known_args(argv)

  def under(*names: str) -> str:
    return os.path.normpath(os.path.join(args.output, *names))

  data = args.data or under("data", "demo")
  model = args.model or under("models", "demo.keras")
  audit_dir = under("out", "demo")
  try:
    if args.output.startswith("gs://"):
      raise ConfigError(f"--output: expected a local directory (the demo"
                        f" builds its data and model there). Received:"
                        f" {short_repr(args.output)}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
      raise ConfigError(f"--output: expected a directory. Received:"
                        f" {short_repr(args.output)} (a file)")
    check_paths(audit_dir, data, model)
  except ConfigError as e:
    print(f"lossaudit: error: {one_line(str(e))}", file=sys.stderr)
    return 2
  print(f"Building the demo data in {data} and model {model} ...")
  truth = build(data, model)
  with demo_config() as config:
    code = audit.main(["--config", str(config),
                       "--set", f"input.pattern={data}/part-*.tfrecord.gz",
                       "--set", f"model.path={model}",
                       "--set", f"output.dir={audit_dir}"] + beam_args)
  if code:
    return code
  flagged = pq.read_table(os.path.join(audit_dir, "flagged"),
                          columns=["id"]).column("id").to_pylist()
  precision, recall = precision_recall(flagged, truth["flipped_ids"])
  print(f"Flipped labels: {len(truth['flipped_ids'])} of"
        f" {truth['examples']}; flagged: {len(flagged)}; precision"
        f" {precision:.2f}, recall {recall:.2f}")
  for name in ("summary.json", "report.html", "losses", "flagged",
               "dead_letter"):
    print(f"  {os.path.join(audit_dir, name)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
