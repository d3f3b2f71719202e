"""Shared fixtures: a small real dataset and real saved models on disk."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import yaml

from lossaudit import datasets

NUM_EXAMPLES = 3000
NUM_FEATURES = 16
NUM_CLASSES = 5


def make_columns(n=NUM_EXAMPLES, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
  return {
      "id": np.array([f"ex-{i:05d}" for i in range(n)]),
      "x": x,
      "label": y,
      "group": np.array(["abc"[i % 3] for i in range(n)]),
      "target": x[:, :2].sum(axis=1, keepdims=True).astype(np.float32),
  }


def build_classifier(activation="softmax"):
  import keras

  keras.utils.set_random_seed(1)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  hidden = keras.layers.Dense(16, activation="relu")(inputs)
  outputs = keras.layers.Dense(NUM_CLASSES, activation=activation,
                               name="probs")(hidden)
  return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def columns():
  return make_columns()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("lossaudit")


@pytest.fixture(scope="session")
def classifier_path(workdir):
  """A softmax classifier saved as a .keras file."""
  path = str(workdir / "classifier.keras")
  build_classifier().save(path)
  return path


@pytest.fixture(scope="session")
def saved_model_path(workdir, classifier_path):
  """The same classifier exported as a TF SavedModel directory."""
  import keras

  path = str(workdir / "classifier_savedmodel")
  keras.models.load_model(classifier_path, compile=False).export(
      path, verbose=False)
  return path


@pytest.fixture(scope="session")
def regressor_path(workdir):
  import keras

  keras.utils.set_random_seed(2)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  outputs = keras.layers.Dense(1, name="pred")(
      keras.layers.Dense(8, activation="relu")(inputs))
  path = str(workdir / "regressor.keras")
  keras.Model(inputs, outputs).save(path)
  return path


@pytest.fixture(scope="session")
def tfrecord_dir(workdir, columns):
  directory = workdir / "tfrecord"
  datasets.write_tfrecords(str(directory), columns, num_shards=3)
  return directory


@pytest.fixture(scope="session")
def parquet_dir(workdir, columns):
  directory = workdir / "parquet"
  datasets.write_parquet(str(directory), columns, num_shards=3,
                         row_group_size=700)
  return directory


@pytest.fixture
def write_config(tmp_path):
  """Writes a config dict as YAML; returns its path."""

  def write(config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)

  return write


def base_config(pattern, model_path, output_dir, **sections):
  config = {
      "input": {"pattern": str(pattern), "format": "tfrecord",
                "id_column": "id", "label_column": "label"},
      "model": {"path": str(model_path)},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "batch_size": 256,
      "stats": {"epsilon": 0.001},
      "flag": {"loss_quantile": 0.95},
      "output": {"dir": str(output_dir)},
  }
  for key, value in sections.items():
    if isinstance(value, dict):
      config.setdefault(key, {}).update(value)
    else:
      config[key] = value
  return config
