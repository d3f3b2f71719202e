"""The Dataflow launch path, offline: a job template written to the emulator.

The DataflowRunner with `--template_location` writes the job description
instead of submitting it, so nothing reaches the Dataflow service (the one
part that cannot run here). The options are the ones `scripts/dataflow`
builds.
"""

import json

from apache_beam.io.filesystems import FileSystems
from apache_beam.portability.api import beam_runner_api_pb2

from lossaudit.pipelines import dataflow
from tests.helpers import upload

IMAGE = "us-central1-docker.pkg.dev/test-project-123/images/lossaudit:1"


def _write_template(gcs, name, tfrecord_dir, classifier_path, *options):
  """Runs `scripts/dataflow`'s `main` with `--template` on the emulator.

  Returns:
    `(job, pipeline)`: the template JSON and the staged pipeline proto.
  """
  root = f"{gcs}/{name}"
  upload(str(tfrecord_dir), f"{root}/data")
  upload(classifier_path, f"{root}/model.keras")
  template = f"{root}/templates/audit.json"
  assert dataflow.main([
      "--project=test-project-123", "--region=us-central1",
      f"--bucket={root}", f"--image={IMAGE}", f"--template={template}",
      "--set", f"input.pattern={root}/data/*.gz",
      "--set", f"model.path={root}/model.keras",
      "--set", f"output.dir={root}/out",
      *options,
  ]) == 0
  with FileSystems.open(template) as f:
    job = json.loads(f.read())
  # The staged files sit beside the pipeline proto the job runs.
  staged = job["environment"]["workerPools"][0]["packages"][0]["location"]
  path = ("gs://" + staged.split("storage.googleapis.com/", 1)[1]).rsplit(
      "/", 1)[0] + "/pipeline.pb"
  with FileSystems.open(path) as f:
    return job, beam_runner_api_pb2.Pipeline.FromString(f.read())


def test_template_has_accelerator_container_and_steps(gcs, tfrecord_dir,
                                                      classifier_path):
  job, pipeline = _write_template(gcs, "dataflow", tfrecord_dir,
                                  classifier_path, "--gpu=nvidia-tesla-t4")
  environment = job["environment"]
  assert environment["serviceOptions"] == [
      "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"]
  assert "no_use_multiple_sdk_containers" in environment["experiments"]
  pool = environment["workerPools"][0]
  assert pool["sdkHarnessContainerImages"][0]["containerImage"] == IMAGE
  assert pool["machineType"] == "n1-standard-8"
  names = {t.unique_name for t in pipeline.components.transforms.values()}
  for step in ("Read", "ScoreBatches", "LossStats", "FlagExamples",
               "WriteLosses", "WriteFlagged", "WriteDeadLetters",
               "WriteSummary"):
    assert step in names, step


def test_dataflow_args():
  args = dataflow.dataflow_args(project="p", region="r", bucket="gs://b/",
                                image="img", gpu=None)
  assert "--temp_location=gs://b/tmp" in args
  assert not any("worker_accelerator" in a for a in args)


def test_accelerator_on_the_scoring_step_only(gcs, tfrecord_dir,
                                              classifier_path):
  job, pipeline = _write_template(gcs, "dataflow-hint", tfrecord_dir,
                                  classifier_path, "--gpu-scope=scoring")
  assert not any("worker_accelerator" in o
                 for o in job["environment"].get("serviceOptions", []))
  hinted = {
      t.unique_name for t in pipeline.components.transforms.values()
      if t.environment_id and any(
          b"nvidia-tesla-t4" in v for v in pipeline.components.environments[
              t.environment_id].resource_hints.values())}
  assert hinted and all(name.startswith("ScoreBatches") for name in hinted)
