"""Start-up: set-up errors before Beam and TensorFlow load, and
`timings.startup` in `summary.json`.

What loads is seen in a child process's `sys.modules` (this one has
TensorFlow already); no test here reads a clock.
"""

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from lossaudit import model as model_lib
from lossaudit.pipelines import audit
from tests.helpers import audit_env, base_config, build_classifier

# Runs `lossaudit run` in a child, then prints which heavy modules loaded.
_CHILD = """
import json, sys
from lossaudit.pipelines import cli
code = cli.main(["run", *sys.argv[1:]])
print(json.dumps({"code": code, "loaded": sorted(
    m for m in ("apache_beam", "tensorflow", "keras") if m in sys.modules)}))
"""


def _child_run(*args):
  done = subprocess.run([sys.executable, "-c", _CHILD, *args],
                        capture_output=True, text=True, env=audit_env(),
                        timeout=120, check=False)
  return json.loads(done.stdout.splitlines()[-1]), done.stderr.strip()


def test_a_bad_key_is_told_before_beam_and_tensorflow_load(
    write_config, tfrecord_dir, classifier_path, tmp_path):
  config = base_config(tfrecord_dir / "*.tfrecord*", classifier_path,
                       tmp_path / "out")
  config["flag"] = {"loss_quantil": 0.9}
  found, stderr = _child_run("--config", write_config(config))
  assert found == {"code": 2, "loaded": []}
  assert stderr == (
      "lossaudit: error: flag.loss_quantil: unknown config key; expected one"
      " of ['aum_below', 'aum_quantile', 'early_aum_max_fit', 'label_issues',"
      " 'loss_quantile', 'loss_threshold', 'robust_z', 'score',"
      " 'slice_quantile', 'top_k']."
      " Did you mean flag.loss_quantile?")


def test_a_bad_set_override_is_told_before_beam_loads(
    write_config, tfrecord_dir, classifier_path, tmp_path):
  config = base_config(tfrecord_dir / "*.tfrecord*", classifier_path,
                       tmp_path / "out")
  found, stderr = _child_run("--config", write_config(config),
                             "--set", "batch_size=-3")
  assert found == {"code": 2, "loaded": []}
  assert stderr.startswith("lossaudit: error: batch_size:")


@pytest.mark.parametrize("broken, expected", [
    ({"input": {"pattern": "{dir}/nothing-*.tfrecord"}},
     "lossaudit: error: input.pattern: no file matches"
     " '{dir}/nothing-*.tfrecord'"),
    ({"model": {"path": "{dir}/missing.keras"}},
     "lossaudit: error: model.path: expected a .keras file or a SavedModel"
     " directory. Received: '{dir}/missing.keras' (no such file or"
     " directory)"),
])
def test_missing_paths_are_told_before_tensorflow_loads(
    write_config, tfrecord_dir, classifier_path, tmp_path, broken, expected):
  config = base_config(tfrecord_dir / "*.tfrecord*", classifier_path,
                       tmp_path / "out")
  for section, values in broken.items():
    config[section].update({k: v.format(dir=tmp_path)
                            for k, v in values.items()})
  found, stderr = _child_run("--config", write_config(config))
  assert found == {"code": 2, "loaded": ["apache_beam"]}
  assert stderr == expected.format(dir=tmp_path)


def test_summary_has_the_startup_steps(write_config, tfrecord_dir,
                                       classifier_path, tmp_path):
  config = base_config(tfrecord_dir / "*.tfrecord*", classifier_path,
                       tmp_path / "out")
  summary = audit.run(["--config", write_config(config)])
  startup = summary["timings"]["startup"]
  steps = ["config", "claim", "glob", "import_tensorflow", "model_load",
           "probe", "graph"]
  assert list(startup) == ["before_run", *steps, "to_first_batch", "total"]
  assert all(startup[s] >= 0 for s in steps)
  assert startup["to_first_batch"] > 0
  # The run's wall seconds count from the same start, and end later, at the
  # summary.
  timings = summary["timings"]
  assert 0 < startup["total"] <= timings["wall_seconds"]
  assert timings["examples_per_second"] == pytest.approx(
      summary["examples_scored"] / timings["wall_seconds"], rel=0.01)
  # The parts add up to the whole (each rounded to 1 ms), from run()'s
  # start; the process began `before_run` earlier (this test's process, long
  # before this run).
  parts = sum(startup[s] for s in steps)
  assert startup["total"] == pytest.approx(
      parts + startup["to_first_batch"], abs=0.01)
  assert startup["before_run"] > 0
  # What was written is what was returned.
  written = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert written["timings"]["startup"] == startup
  assert written["timings"]["first_batch_time"] == pytest.approx(
      summary["timings"]["first_batch_time"])


class _CountedModel(model_lib.AuditModel):
  loads = []

  def __init__(self, path, *args, **kwargs):
    _CountedModel.loads.append(path)
    super().__init__(path, *args, **kwargs)


def test_the_model_is_loaded_once_a_process(write_config, tfrecord_dir,
                                            classifier_path, tmp_path,
                                            monkeypatch, columns):
  monkeypatch.setattr(model_lib, "AuditModel", _CountedModel)
  monkeypatch.setattr(_CountedModel, "loads", [])
  model = tmp_path / "model.keras"  # A path no other test loaded.
  shutil.copy(classifier_path, model)
  config = base_config(tfrecord_dir / "*.tfrecord*", model, tmp_path / "a")
  first = audit.run(["--config", write_config(config)])
  # The pre-run check's model is the worker's.
  assert _CountedModel.loads == [str(model)]
  assert first["examples_scored"] > 0

  # A model saved again at the same path is loaded again.
  keras.utils.set_random_seed(7)
  other = build_classifier()
  other.save(model)
  config["output"]["dir"] = str(tmp_path / "b")
  audit.run(["--config", write_config(config)])
  assert _CountedModel.loads == [str(model)] * 2
  losses = pq.read_table(tmp_path / "b" / "losses").sort_by("id")
  rows = [int(i.split("-")[1]) for i in losses.column("id").to_pylist()]
  expected = keras.losses.sparse_categorical_crossentropy(
      columns["label"][rows], other.predict(columns["x"][rows], verbose=0))
  np.testing.assert_allclose(losses.column("loss").to_numpy(),
                             np.asarray(expected), rtol=1e-5, atol=1e-6)


def _labels(config, tmp_path, write_config):
  """The transform labels of the audit graph of `config`."""
  import apache_beam as beam

  from lossaudit import preflight
  from lossaudit.config import load_config
  from lossaudit.pipelines import graph

  loaded = load_config(write_config(config, "graph.yaml"))
  p = beam.Pipeline()
  graph.build(p, loaded, preflight.plan(loaded), "DirectRunner",
              {"run_id": "r", "start_time": 0.0}, None)
  labels = []

  class Visitor(beam.pipeline.PipelineVisitor):
    def enter_composite_transform(self, node):
      labels.append(node.full_label)

  p.visit(Visitor())
  return labels


@pytest.mark.parametrize("flag, passes", [
    ({"loss_quantile": None, "loss_threshold": 1.5}, 1),
    pytest.param({"loss_quantile": None, "loss_threshold": None}, 1,
                 marks=pytest.mark.slow),
    ({"loss_quantile": None, "loss_threshold": 1.5, "robust_z": 3.0}, 2),
    pytest.param({"loss_quantile": 0.9}, 2, marks=pytest.mark.slow),
])
def test_rules_without_global_statistics_flag_in_one_pass(
    write_config, tfrecord_dir, classifier_path, tmp_path, flag, passes):
  config = base_config(tfrecord_dir / "*.tfrecord*", classifier_path,
                       tmp_path / "out", flag=flag)
  labels = _labels(config, tmp_path, write_config)
  assert ("Spill" in labels) == (passes == 2)
  assert ("RereadForFlags" in labels) == (passes == 2)
  summary = audit.run(["--config", write_config(config)])
  losses = pq.read_table(tmp_path / "out" / "losses")
  flagged = pq.read_table(tmp_path / "out" / "flagged")
  values = losses.column("loss").to_numpy()
  ids = np.asarray(losses.column("id").to_pylist())
  if passes == 1:
    threshold = flag["loss_threshold"]
    expected = set() if threshold is None else set(ids[values > threshold])
    assert set(flagged.column("id").to_pylist()) == expected
    assert summary["flagged"]["total"] == len(expected)
  assert summary["examples_scored"] == len(ids)
