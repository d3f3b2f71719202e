"""The demo: audit scikit-learn's handwritten digits with 10% flipped labels.

A small Keras classifier is trained on one half of the 1,797 bundled 8×8
digits; the other half is written as TFRecord shards with 10% of its labels
flipped at known ids, then audited. Precision and recall of the flagged ids
against the flipped ones are printed.

`lossaudit demo --output DIR` writes everything under DIR, laid out as the
demo config (`lossaudit.configs/demo.yaml`) names it relative to where it
runs: `DIR/data/demo/`, `DIR/models/demo.keras` and the audit's
`DIR/out/demo/`. So the shipped demo config, run in DIR with `lossaudit run
--config`, audits the same data again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.resources
import json
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from lossaudit import datasets, ownership, quiet
from lossaudit.errors import ConfigError, short_repr

NOISE_RATE = 0.10
NUM_SHARDS = 4
TRUTH = "flipped_ids.json"
# What `build` writes into the data directory, and nothing else.
_DATA_FILES = frozenset(
    [f"part-{index:05d}-of-{NUM_SHARDS:05d}.tfrecord.gz"
     for index in range(NUM_SHARDS)] + [TRUTH])
# The audit's flagged shards (Beam's names); a user's files there are kept.
_FLAGGED_SHARD = re.compile(r"part-\d{5}-of-\d{5}\.parquet")


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
  """Writes the noisy audit shards and the demo model; returns the truth.

  The truth (`flipped_ids.json`, written last) also records the shards and
  the model written (their SHA-256s, `model_record`), so a later run may
  overwrite them, and only them.

  Args:
    data_dir: where the shards and `flipped_ids.json` go.
    model_path: where the trained model goes; None: train none (the audit
      half of the digits does not depend on it).
    seed: the split, training and flipping seed.
    noise_rate: the share of audit labels flipped.
  """
  train_x, train_y, audit_x, audit_y = digits_split(seed)
  noisy, flipped = flip_labels(audit_y, noise_rate, seed)
  ids = np.array([f"digit-{i:04d}" for i in range(len(noisy))])
  datasets.write_tfrecords(data_dir, {"id": ids, "pixels": audit_x,
                                      "label": noisy}, num_shards=NUM_SHARDS)
  truth = {"flipped_ids": ids[flipped].tolist(), "examples": len(ids),
           "shards_sha256": {name: _sha256(os.path.join(data_dir, name))
                             for name in sorted(_DATA_FILES - {TRUTH})}}
  if model_path is not None:
    model = train_classifier(train_x, train_y, seed)
    os.makedirs(os.path.dirname(model_path) or ".", exist_ok=True)
    model.save(model_path)
    truth.update(model_record(model_path))
  with open(os.path.join(data_dir, TRUTH), "w") as f:
    json.dump(truth, f)
  return truth


def precision_recall(flagged_ids, flipped_ids):
  flagged, flipped = set(flagged_ids), set(flipped_ids)
  hits = len(flagged & flipped)
  return (hits / len(flagged) if flagged else 0.0,
          hits / len(flipped) if flipped else 0.0)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def model_record(model_path: str) -> Dict[str, str]:
  """How `flipped_ids.json` records the model `build` wrote: its real path
  and the SHA-256 of its bytes."""
  return {"model": os.path.realpath(model_path),
          "model_sha256": _sha256(model_path)}


def _record(data_dir: str) -> Dict:
  """What `build` recorded in `data_dir`'s truth file.

  Raises:
    OSError, ValueError: no readable JSON there.
  """
  with open(os.path.join(data_dir, TRUTH)) as f:
    return json.load(f)


def _not_written_here(data_dir: str, names) -> Optional[str]:
  """The first of `names` (the demo's names, in `data_dir`) that the truth
  there does not record as the demo's own, unchanged; None if all are."""
  try:
    recorded = _record(data_dir)["shards_sha256"]
    for name in sorted(set(names) - {TRUTH}):
      if recorded.get(name) != _sha256(os.path.join(data_dir, name)):
        return name
    return None
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return TRUTH if TRUTH in names else sorted(names)[0]


def _demo_wrote(model_path: str, data_dir: str) -> bool:
  """Whether `model_path` is, unchanged, the model `data_dir`'s truth
  records writing."""
  try:
    record = _record(data_dir)
    if (os.path.islink(model_path)
        or record.get("model") != os.path.realpath(model_path)):
      return False
    return record.get("model_sha256") == model_record(model_path)[
        "model_sha256"]
  except (OSError, ValueError, AttributeError):
    return False


def _file_above(path: str) -> Optional[str]:
  """The nearest existing parent of `path` when it is not a directory (so
  nothing can be made under it); None otherwise."""
  path = os.path.normpath(path)
  while True:
    parent = os.path.dirname(path)
    if not parent or parent == path:
      return None
    if os.path.lexists(parent):
      return None if os.path.isdir(parent) else parent
    path = parent


def _overlaps(path: str, directory: str) -> bool:
  """Whether `path` is `directory`, inside it, or holds it (real paths)."""
  path, directory = os.path.realpath(path), os.path.realpath(directory)
  return os.path.commonpath([path, directory]) in (path, directory)


def check_paths(output: str, data: str, model: str) -> None:
  """Refuses, before anything is written, paths where the demo would
  overwrite or mix with the user's files.

  `output` follows `lossaudit run`'s rule (not `.`, the home directory or a
  root; new, empty, or holding an earlier run's marker); `data` must be new,
  empty or hold only what `build` writes, and be apart from `output`;
  `model` must end in `.keras`, be apart from both, and be new or the model
  that `data`'s `flipped_ids.json` records writing. None may lie under a
  file, and `data` and `model` must be local.

  Raises:
    ConfigError: naming the flag.
  """
  for flag, path in (("--data", data), ("--model", model)):
    if path.startswith("gs://"):
      raise ConfigError(f"{flag}: expected a local path (the demo builds its"
                        f" data and model there). Received: {short_repr(path)}")
  for flag, path in (("--output", output), ("--data", data),
                     ("--model", model)):
    blocker = None if path.startswith("gs://") else _file_above(path)
    if blocker is not None:
      raise ConfigError(f"{flag}: expected a path whose parents are"
                        f" directories. Received: {short_repr(path)}"
                        f" ({short_repr(blocker)} is a file)")
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
    foreign = sorted(
        n for n in os.listdir(data) if n not in _DATA_FILES
        or os.path.islink(os.path.join(data, n))
        or not os.path.isfile(os.path.join(data, n)))
    if not foreign and os.listdir(data):
      unknown = _not_written_here(data, os.listdir(data))
      if unknown is not None:
        raise ConfigError(
            f"--data: expected a new or empty directory, or the demo's own"
            f" earlier data (as its {TRUTH} records it). Received:"
            f" {short_repr(data)} ({short_repr(unknown)} is not the demo's)")
    if foreign:
      kind = ", not a plain file" if foreign[0] in _DATA_FILES else ""
      raise ConfigError(
          f"--data: expected a new or empty directory, or one holding only"
          f" the demo's {NUM_SHARDS} part-NNNNN-of-{NUM_SHARDS:05d}"
          f".tfrecord.gz and {TRUTH}. Received: {short_repr(data)} (holds"
          f" {short_repr(foreign[0])}{kind})")
  if _overlaps(data, output):
    raise ConfigError(f"--data: expected a directory apart from the audit's"
                      f" output (not it, inside it or holding it). Received:"
                      f" {short_repr(data)}")
  if os.path.isdir(model):
    raise ConfigError(f"--model: expected a .keras file. Received:"
                      f" {short_repr(model)} (a directory)")
  if not model.endswith(".keras"):
    raise ConfigError(f"--model: expected a path ending in .keras (the only"
                      f" kind Keras saves). Received: {short_repr(model)}")
  for name, directory in (("--data", data), ("the audit's output", output)):
    if _overlaps(model, directory):
      raise ConfigError(f"--model: expected a path apart from {name} (not"
                        f" in it or holding it). Received: {short_repr(model)}")
  if os.path.lexists(model) and not _demo_wrote(model, data):
    raise ConfigError(
        f"--model: expected a new file or the demo's own earlier model (as"
        f" --data's {TRUTH} records it). Received: {short_repr(model)} (a"
        f" file the demo did not write)")


def flagged_ids(directory: str) -> List[str]:
  """The ids in the audit's flagged shards in `directory`; other files there
  (a user's, which lossaudit keeps) are not read."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  ids = []
  for name in sorted(os.listdir(directory)):
    if _FLAGGED_SHARD.fullmatch(name):
      ids += pq.read_table(os.path.join(directory, name),
                           columns=["id"]).column("id").to_pylist()
  return ids


def demo_config() -> contextlib.AbstractContextManager:
  """The shipped `demo.yaml` as a file path, for `with` (package data)."""
  return importlib.resources.as_file(
      importlib.resources.files("lossaudit.configs") / "demo.yaml")


def main(argv: Optional[Sequence[str]] = None) -> int:
  # pylint: disable-next=g-import-not-at-top
  from lossaudit.pipelines import audit, command

  parser = argparse.ArgumentParser(prog="lossaudit demo", allow_abbrev=False)
  parser.add_argument(
      "--output", default=".",
      help="where the demo writes everything: DIR/data/demo,"
           " DIR/models/demo.keras and the audit's DIR/out/demo")
  parser.add_argument("--data", default=None,
                      help="where the demo shards go (DIR/data/demo)")
  parser.add_argument("--model", default=None,
                      help="where the model goes (DIR/models/demo.keras)")
  parser.add_argument(
      "--verbose", action="store_true",
      help="show TensorFlow's start-up log lines (oneDNN, CUDA)")
  args, beam_args = parser.parse_known_args(argv)
  try:  # The rest goes to Beam (the demo sets --config and --set itself).
    command.check_beam_args(beam_args,
                            own_flags=("--output", "--data", "--model"))
  except ConfigError as e:
    return command.print_error(str(e))

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
    return command.print_error(str(e))
  print(f"Building the demo data in {data} and model {model} ...")
  # TensorFlow loads and starts as the model trains: its start-up lines are
  # held back, as `lossaudit run` holds them back.
  with quiet.tensorflow_start_up_lines(args.verbose):
    quiet.start_tensorflow()
    truth = build(data, model)
  with demo_config() as config:
    code = audit.main(["--config", str(config),
                       "--set", f"input.pattern={data}/part-*-of-"
                       f"{NUM_SHARDS:05d}.tfrecord.gz",
                       "--set", f"model.path={model}",
                       "--set", f"output.dir={audit_dir}"] + beam_args
                      + (["--verbose"] if args.verbose else []))
  if code:
    return code
  flagged = flagged_ids(os.path.join(audit_dir, "flagged"))
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
