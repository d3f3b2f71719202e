"""gs:// for data, model and outputs, against a local GCS API emulator."""

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import audit
from tests.conftest import base_config

BUCKET = "lossaudit-test"


@pytest.fixture(scope="module")
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
                         default_bucket=BUCKET)
  server.start()
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  yield f"gs://{BUCKET}"
  if old is None:
    del os.environ["STORAGE_EMULATOR_HOST"]
  else:
    os.environ["STORAGE_EMULATOR_HOST"] = old
  server.stop()


def _upload(local: str, remote: str) -> None:
  """Copies a file or a directory tree, bytes as they are (no re-gzip)."""
  pairs = [(local, remote)] if os.path.isfile(local) else [
      (os.path.join(root, name),
       remote + "/" + os.path.relpath(os.path.join(root, name), local))
      for root, _, files in os.walk(local) for name in files]
  for path, target in pairs:
    with open(path, "rb") as src, FileSystems.create(
        target, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
      dst.write(src.read())


def _read_parquet(directory: str) -> pd.DataFrame:
  files = sorted(m.path for m in FileSystems.match(
      [directory + "/part-*"])[0].metadata_list)
  frames = []
  for path in files:
    with FileSystems.open(path) as f:
      frames.append(pd.read_parquet(f))
  return pd.concat(frames).sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize("model_kind", ["keras", "saved_model"])
def test_gs_input_model_and_output_equal_local_run(
    gcs, tmp_path, tfrecord_dir, classifier_path, saved_model_path,
    write_config, model_kind):
  local_model = classifier_path if model_kind == "keras" else saved_model_path
  remote = f"{gcs}/{model_kind}"
  _upload(str(tfrecord_dir), f"{remote}/data")
  remote_model = f"{remote}/model" + (".keras" if model_kind == "keras" else "")
  _upload(local_model, remote_model)

  flag = {"loss_quantile": 0.9, "top_k": 10}
  local_out = tmp_path / "local"
  local = audit.run(["--config", write_config(base_config(
      tfrecord_dir / "*.gz", local_model, local_out, flag=flag), "l.yaml")])
  remote_out = f"{remote}/out"
  config = base_config(f"{remote}/data/*.gz", remote_model, remote_out,
                       flag=flag)
  summary = audit.run(["--config", write_config(config, "r.yaml")])

  for key in ("examples_read", "examples_scored", "loss", "slices",
              "thresholds", "flagged"):
    assert summary[key] == local[key], key
  with FileSystems.open(remote_out + "/summary.json") as f:
    assert json.loads(f.read())["examples_scored"] == 3000
  assert FileSystems.exists(remote_out + "/report.html")
  assert not FileSystems.exists(remote_out + "/.scratch")
  for kind in ("losses", "flagged"):
    got = _read_parquet(f"{remote_out}/{kind}")
    want = pd.read_parquet(local_out / kind).sort_values("id").reset_index(
        drop=True)
    pd.testing.assert_frame_equal(got, want)
