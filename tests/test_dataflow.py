"""The Dataflow launch path, offline: a job template written to the emulator.

The DataflowRunner with `--template_location` writes the job description
instead of submitting it, so nothing reaches the Dataflow service (the one
part that cannot run here). The options are the ones `scripts/dataflow`
builds.
"""

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess

import pytest
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
  GoogleCloudOptions,
  PipelineOptions,
  WorkerOptions,
)

from lossaudit.errors import ConfigError
from lossaudit.pipelines import dataflow, flex_template, gpu_check
from tests.helpers import REPO, staged_pipeline, upload

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))

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
  return job, staged_pipeline(job)


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


@pytest.mark.slow  # Starts TensorFlow or writes a job (~3-6 s).
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


# --- GPU set-up: flags, docs commands, Flex metadata, image -------------

def _known_beam_options(argv, beam_names) -> PipelineOptions:
  """The Beam options among `lossaudit run`'s `argv`, each checked to be one
  of `beam_names`, parsed; they ask for a T4, 50 GB disks and N1 machines."""
  options = [a for a in argv if a.startswith("--") and a.split("=", 1)[0]
             not in ("--config", "--set")]
  for option in options:
    assert option.split("=", 1)[0] in beam_names, option
  parsed = PipelineOptions(options)
  assert parsed.view_as(WorkerOptions).disk_size_gb == 50
  assert parsed.view_as(WorkerOptions).machine_type == "n1-standard-8"
  assert parsed.view_as(GoogleCloudOptions).dataflow_service_options == [T4]
  return parsed


T4 = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def _beam_option_names():
  """Every `--option` string of Beam's pipeline options classes, as Beam's
  own parser (`PipelineOptions`) learns them."""
  parser = argparse.ArgumentParser(add_help=False)
  seen, todo = set(), [PipelineOptions]
  while todo:
    cls = todo.pop()
    for sub in cls.__subclasses__():
      if sub not in seen:
        seen.add(sub)
        todo.append(sub)
        if "_add_argparse_args" in vars(sub):
          with contextlib.suppress(argparse.ArgumentError):
            sub._add_argparse_args(parser)  # pylint: disable=protected-access
  return {s for a in parser._actions for s in a.option_strings}  # pylint: disable=protected-access


def _docs_block(marker):
  """The command lines between `<!-- marker -->` and `<!-- /marker -->`
  in docs/cloud.md, as lists of words (continuations joined)."""
  with open(os.path.join(REPO, "docs", "cloud.md")) as f:
    text = f.read()
  block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->",
                                                        1)[0]
  code = block.split("```", 2)[1]
  return [shlex.split(line) for line in code.replace("\\\n", " ").splitlines()
          if line.strip()]


def _metadata():
  with open(os.path.join(REPO, "templates", "flex", "metadata.json")) as f:
    return json.load(f)


def test_template_has_gpu_disk_and_worker_options(gcs, tfrecord_dir,
                                                  classifier_path):
  job, _ = _write_template(
      gcs, "dataflow-options", tfrecord_dir, classifier_path,
      "--gpu=nvidia-l4", "--machine-type=g2-standard-8",
      "--worker-harness-threads=4", "--label=team=ml", "--label=job=audit",
      "--subnetwork=regions/us-central1/subnetworks/private",
      "--no-public-ips", "--service-account=audit@p.iam.gserviceaccount.com")
  environment = job["environment"]
  assert environment["serviceOptions"] == [
      "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
  pool = environment["workerPools"][0]
  assert pool["machineType"] == "g2-standard-8"
  assert pool["diskSizeGb"] == 50
  assert pool["numThreadsPerWorker"] == 4
  assert pool["subnetwork"] == "regions/us-central1/subnetworks/private"
  assert pool["ipConfiguration"] == "WORKER_IP_PRIVATE"
  assert environment["serviceAccountEmail"] == "audit@p.iam.gserviceaccount.com"
  assert job["labels"] == {"team": "ml", "job": "audit"}


@pytest.mark.slow  # Starts TensorFlow or writes a job (~3-6 s).
def test_prime_template_has_no_machine_type_and_hints(gcs, tfrecord_dir,
                                                      classifier_path):
  job, pipeline = _write_template(
      gcs, "dataflow-prime", tfrecord_dir, classifier_path,
      "--gpu-scope=scoring", "--prime", "--min-ram=30GB")
  environment = job["environment"]
  assert environment["serviceOptions"] == ["enable_prime"]
  assert "machineType" not in environment["workerPools"][0]
  hints = [dict(e.resource_hints)
           for e in pipeline.components.environments.values()]
  assert any(h.get("beam:resources:min_ram_bytes:v1") == b"30000000000"
             for h in hints), hints
  assert any(b"type:nvidia-tesla-t4;count:1;install-nvidia-driver"
             in h.get("beam:resources:accelerator:v1", b"") for h in hints)


def test_dataflow_args_per_scope():
  job = dataflow.dataflow_args(project="p", region="r", bucket="gs://b",
                               image="img")
  assert "--dataflow_service_options=" + T4 in job
  assert "--machine_type=n1-standard-8" in job
  assert "--disk_size_gb=50" in job
  assert not any("enable_prime" in a or "resource_hints" in a for a in job)
  scoring = dataflow.dataflow_args(project="p", region="r", bucket="gs://b",
                                   image="img", gpu_scope="scoring")
  assert not any("worker_accelerator" in a or "enable_prime" in a
                 for a in scoring)
  assert "--machine_type=n1-standard-8" in scoring
  prime = dataflow.audit_argv([
      "--project=p", "--region=r", "--bucket=gs://b", "--image=img",
      "--gpu-scope=scoring", "--prime", "--min-ram=30GB"])
  assert not any(a.startswith("--machine_type") for a in prime)
  assert "--dataflow_service_options=enable_prime" in prime
  assert "--resource_hints=min_ram=30GB" in prime
  assert "runtime.accelerator=" + T4.split("=", 1)[1] in prime


@pytest.mark.parametrize("flags, message", [
    (["--gpu-count=2"],
     "--gpu-count: expected 1 (a worker runs one SDK process, which scores"
     " on /GPU:0 only: more GPUs per worker would sit idle; use more workers"
     " with --max-workers). Received: 2"),
    (["--gpu-count=two"], "--gpu-count: expected an integer >= 1. Received:"
     " 'two'"),
    (["--disk-size-gb=0"], "--disk-size-gb: expected an integer >= 1."
     " Received: '0'"),
    (["--worker-harness-threads=-1"], "--worker-harness-threads: expected an"
     " integer >= 1. Received: '-1'"),
    (["--max-workers=x"], "--max-workers: expected an integer >= 1."
     " Received: 'x'"),
    (["--prime"],
     "--prime: expected --gpu-scope scoring or --gpu none (Dataflow Prime"
     " takes a GPU as the accelerator resource hint, not the"
     " worker_accelerator service option). Received: --gpu-scope job"),
    (["--prime", "--gpu-scope=scoring", "--machine-type=n1-standard-8"],
     "--machine-type: expected none with --prime (Dataflow Prime chooses the"
     " worker VMs and does not take a machine type; ask for memory with"
     " --min-ram). Received: 'n1-standard-8'"),
    (["--min-ram=30GB"],
     "--min-ram: expected --gpu-scope scoring or --gpu none (a resource hint"
     " turns on right fitting, which Dataflow does not combine with a GPU on"
     " every worker, worker_accelerator). Received: '30GB'"),
    (["--gpu=none", "--min-ram=30"],
     "--min-ram: expected a size such as 30GB. Received: '30'"),
    (["--label=Team=ml"],
     "--label: expected KEY=VALUE of lowercase letters, digits, _ and - (the"
     " key starting with a letter, each at most 63 characters). Received:"
     " 'Team=ml'"),
    (["--gpu-scope=foo"],
     "--gpu-scope: expected one of {'job', 'scoring'}. Received: 'foo'"),
    (["--region"], "--region: expected a value. Received: none"),
    (["--bucket=/tmp/staging"],
     "--bucket: expected gs://BUCKET (or gs://BUCKET/PREFIX) for the job's"
     " temporary and staging files. Received: '/tmp/staging'"),
    (["--gpu=tesla-t4"],
     "--gpu: expected an NVIDIA accelerator type such as nvidia-tesla-t4 or"
     " nvidia-l4, or none. Received: 'tesla-t4'"),
])
def test_bad_flags_exit_2_with_one_line(capsys, flags, message):
  assert dataflow.main(["--project=p", "--region=r", "--bucket=gs://b",
                        "--image=img", *flags]) == 2
  assert capsys.readouterr().err == f"scripts/dataflow: error: {message}\n"


def test_missing_flags_exit_2_with_one_line(capsys):
  assert dataflow.main(["--region=r", "--bucket=gs://b"]) == 2
  assert capsys.readouterr().err == (
      "scripts/dataflow: error: --project, --image: expected a value"
      " (required). Received: none\n")


def test_docs_dataflow_command_options_are_known():
  (command,) = _docs_block("docs-dataflow-command")
  assert command[0] == "scripts/dataflow"
  args, rest = dataflow.parser().parse_known_args(command[1:])
  assert rest == []
  assert args.gpu == "nvidia-tesla-t4" and args.disk_size_gb == "50"
  beam = _beam_option_names()
  argv = dataflow.audit_argv(command[1:])
  parsed = _known_beam_options(argv, beam)
  assert parsed.view_as(GoogleCloudOptions).labels == ["team=ml",
                                                       "job=lossaudit"]


# `gcloud dataflow flex-template build|run` flags docs/cloud.md may use (from
# the gcloud reference).
GCLOUD_FLEX_FLAGS = {
    "--image", "--sdk-language", "--metadata-file",
    "--template-file-gcs-location", "--region", "--additional-experiments",
    "--additional-user-labels", "--parameters", "--disable-public-ips",
    "--subnetwork", "--service-account-email", "--max-workers",
    "--worker-machine-type", "--staging-location", "--temp-location"}


def test_docs_flex_command_matches_metadata_and_beam():
  build, run = _docs_block("docs-flex-command")
  assert build[:4] == ["gcloud", "dataflow", "flex-template", "build"]
  assert run[:4] == ["gcloud", "dataflow", "flex-template", "run"]
  assert build[build.index("--metadata-file") + 1] == (
      "templates/flex/metadata.json")
  flags = [w for w in build[4:] + run[4:] if w.startswith("--")]
  assert set(flags) <= GCLOUD_FLEX_FLAGS, set(flags) - GCLOUD_FLEX_FLAGS
  parameters = dict(run[i + 1].split("=", 1) for i, w in enumerate(run)
                    if w == "--parameters")
  params = {p["name"]: p for p in _metadata()["parameters"]}
  beam = _beam_option_names()
  for name, value in parameters.items():
    assert name in params, name
    for regex in params[name].get("regexes", []):
      assert re.match(regex, value), (name, value, regex)
  required = {n for n, p in params.items() if not p.get("isOptional")}
  assert required <= set(parameters)
  assert parameters["dataflow_service_options"] == T4
  # The launcher passes each parameter as --name=value to the entry point.
  argv = flex_template.audit_args([f"--{n}={v}" for n, v in
                                   parameters.items()])
  parsed = _known_beam_options(argv, beam)
  assert parsed.view_as(WorkerOptions).sdk_container_image == (
      parameters["sdk_container_image"])


def test_flex_metadata_has_dataflows_schema():
  from google.cloud.dataflow_v1beta3 import types
  from google.protobuf import json_format

  metadata = _metadata()
  # Unknown keys and enum values (paramType) are refused by the parser.
  parsed = json_format.ParseDict(metadata, types.TemplateMetadata.pb(
      types.TemplateMetadata()))
  assert parsed.name and parsed.description
  beam = _beam_option_names()
  for param in parsed.parameters:
    assert param.name and param.label and param.help_text, param.name
    assert param.regexes, param.name
    for regex in param.regexes:
      re.compile(regex)
    if param.name not in ("config", "overrides"):
      assert f"--{param.name}" in beam, param.name
  params = {p["name"]: p for p in metadata["parameters"]}
  gpu = params["dataflow_service_options"]["regexes"][0]
  assert re.match(gpu, T4)
  assert not re.match(gpu, T4.replace("count:1", "count:2"))
  assert not re.match(gpu, "worker_accelerator=type:nvidia-tesla-t4;count:1")
  assert re.match(params["disk_size_gb"]["regexes"][0], "50")
  assert not re.match(params["disk_size_gb"]["regexes"][0], "0")
  assert params["disk_size_gb"]["defaultValue"] == "50"
  assert re.match(params["machine_type"]["regexes"][0], "g2-standard-8")
  image = params["sdk_container_image"]["regexes"][0]
  assert re.match(image, IMAGE)
  assert not re.match(image, "lossaudit")


def test_dockerfile_pins_cuda_and_finds_the_driver():
  with open(os.path.join(REPO, "Dockerfile")) as f:
    dockerfile = f.read()
  with open(os.path.join(REPO, "constraints-gpu.txt")) as f:
    pins = [line for line in f.read().splitlines()
            if line and not line.startswith("#")]
  with open(os.path.join(REPO, "constraints.txt")) as f:
    (tf_pin,) = [line for line in f.read().splitlines()
                 if line.startswith("tensorflow==")]
  assert pins and all(re.fullmatch(r"nvidia-[a-z0-9-]+==[0-9.]+", p)
                      for p in pins), pins
  # The and-cuda extra's libraries, each pinned once.
  names = [p.split("==")[0] for p in pins]
  assert len(set(names)) == len(names)
  assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12",
          "nvidia-cuda-runtime-cu12"} <= set(names)
  (copy,) = [line for line in dockerfile.splitlines()
             if line.startswith("COPY") and "constraints.txt" in line]
  assert "constraints-gpu.txt" in copy.split()
  pip = dockerfile.split("RUN pip install", 1)[1].split("&&", 1)[0]
  assert "-c constraints-gpu.txt" in pip
  assert f'"tensorflow[and-cuda]=={tf_pin.split("==")[1]}"' in pip
  (ld_path,) = re.findall(r"LD_LIBRARY_PATH=(\S+)", dockerfile)
  assert "/usr/local/nvidia/lib64" in ld_path.split(":")
  assert "COPY scripts/check-gpu-image scripts/check-gpu-image" in dockerfile


def _check_gpu_image():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([os.path.join(REPO, "scripts", "check-gpu-image")],
                        capture_output=True, text=True, env=env, check=False,
                        timeout=300)


@pytest.mark.skipif(HAS_GPU, reason="a GPU is visible")
@pytest.mark.slow  # Starts TensorFlow or writes a job (~3-6 s).
def test_check_gpu_image_without_a_gpu_fails_with_one_line():
  result = _check_gpu_image()
  assert result.returncode == 1
  assert result.stdout == ""
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(
      "check-gpu-image: FAILED: no GPU visible to TensorFlow"
      " (tf.config.list_physical_devices('GPU') is empty); TensorFlow 2.21.0"
      " (CUDA "), last
  assert "LD_LIBRARY_PATH=" in last


def test_check_gpu_image_scoring_path_on_the_cpu(tmp_path):
  device, error = gpu_check.score_one_batch(str(tmp_path), device="cpu")
  assert device == "/CPU:0"
  assert error < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
def test_check_gpu_image_with_a_gpu_scores_on_it():
  result = _check_gpu_image()
  assert result.returncode == 0, result.stderr
  (line,) = result.stdout.strip().splitlines()
  assert line.startswith("check-gpu-image: ok: ")
  assert "rows scored by lossaudit on /GPU:0" in line


def test_a_launch_from_another_python_than_the_images_is_refused():
  with open(os.path.join(REPO, "Dockerfile")) as f:
    images = re.findall(r"^FROM (\S+)", f.read(), re.MULTILINE)
  minor = "".join(map(str, dataflow.IMAGE_PYTHON))
  dotted = ".".join(map(str, dataflow.IMAGE_PYTHON))
  # Every base image of the Dockerfile runs that Python.
  assert all(f"python{dotted}" in i or f"python{minor}" in i
             or f"python:{dotted}" in i for i in images), images
  dataflow.check_launch_python((3, 11, 7))
  with pytest.raises(ConfigError) as raised:
    dataflow.check_launch_python((3, 12, 1))
  assert str(raised.value) == (
      "--image: the worker image runs Python 3.11, and the job's functions"
      " are pickled by this Python for it; expected a launch from Python"
      " 3.11. Received: Python 3.12")
