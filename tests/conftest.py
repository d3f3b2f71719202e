"""Shared fixtures: a small real dataset and real saved models on disk."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import socket

import pytest
import yaml

from lossaudit import datasets
from tests.helpers import (
  GCS_BUCKET,
  NUM_FEATURES,
  build_classifier,
  make_columns,
)


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
def demo_build(workdir):
  """The demo's trained digits model and noisy shards (`pipelines/demo.py`).

  Returns `(data dir, model path, truth)`; truth holds the flipped ids.
  """
  from lossaudit.pipelines import demo

  data, model = workdir / "demo-data", workdir / "demo.keras"
  truth = demo.build(str(data), str(model))
  return data, model, truth


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


@pytest.fixture(scope="session")
def gcs():
  """A gcp-storage-emulator server on a free loopback port, with a bucket.

  Beam's GCS filesystem and google-cloud-storage follow
  STORAGE_EMULATOR_HOST. On a machine with no Google credentials, Beam's
  first lookup retries for about 25 s before it settles for anonymous
  access and caches that; the cache is primed here instead (a private Beam
  attribute, test-only), since the emulator needs no credentials.
  """
  from apache_beam.internal.gcp import auth
  from gcp_storage_emulator.server import create_server

  with auth._Credentials._credentials_lock:  # pylint: disable=protected-access
    auth._Credentials._credentials_init = True  # pylint: disable=protected-access

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = create_server("127.0.0.1", port, in_memory=True,
                         default_bucket=GCS_BUCKET)
  server.start()
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  yield f"gs://{GCS_BUCKET}"
  if old is None:
    del os.environ["STORAGE_EMULATOR_HOST"]
  else:
    os.environ["STORAGE_EMULATOR_HOST"] = old
  server.stop()
