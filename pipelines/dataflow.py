"""Launching an audit on Google Cloud Dataflow with GPU workers.

`scripts/dataflow --project P --region R --bucket gs://B --image IMAGE
[--gpu nvidia-tesla-t4] [--config configs/dataflow_gpu.yaml] [--set K=V ...]
[--template gs://B/templates/audit.json]` builds the options below and runs
`lossaudit run` with them; with `--template` the job is written as a
template instead of being submitted. A bad flag exits 2 with one line
naming it.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional, Sequence

from lossaudit.errors import ConfigError, short_repr

DEFAULT_CONFIG = "configs/dataflow_gpu.yaml"
DEFAULT_GPU = "nvidia-tesla-t4"
DEFAULT_MACHINE_TYPE = "n1-standard-8"
# Google's Dataflow GPU samples give workers 50 GB: the worker image with
# TensorFlow and CUDA is several GB, pulled onto every worker's boot disk.
DEFAULT_DISK_SIZE_GB = 50
# GCE label keys and values: lowercase letters, digits, `_` and `-`, at most
# 63 characters; a key starts with a letter.
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}=[a-z0-9_-]{0,63}$")
MIN_RAM = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?(GB|GiB|MB|MiB)$")
GPU_TYPE = re.compile(r"^nvidia-[a-z0-9-]+$")
# The Python of the worker image (the Dockerfile's base images): the graph's
# functions are pickled by value, and unpickle only on the same minor version.
IMAGE_PYTHON = (3, 11)


def check_launch_python(version=sys.version_info) -> None:
  """Refuses a launch from a Python other than the worker image's.

  Raises:
    ConfigError: naming `--image`.
  """
  if tuple(version[:2]) != IMAGE_PYTHON:
    image = ".".join(map(str, IMAGE_PYTHON))
    raise ConfigError(
        f"--image: the worker image runs Python {image}, and the job's"
        " functions are pickled by this Python for it; expected a launch"
        f" from Python {image}. Received: Python"
        f" {version[0]}.{version[1]}")


def accelerator(gpu: str, count: int = 1) -> str:
  """The accelerator of `worker_accelerator` and of the resource hint."""
  return f"type:{gpu};count:{count};install-nvidia-driver"


def check_gpu_count(count: int) -> None:
  """One SDK process per worker VM (`no_use_multiple_sdk_containers`)
  scores on /GPU:0 only, so a second GPU would be paid for and left idle.

  Raises:
    ConfigError: `count` is not 1.
  """
  if count != 1:
    raise ConfigError(
        "--gpu-count: expected 1 (a worker runs one SDK process, which"
        " scores on /GPU:0 only: more GPUs per worker would sit idle; use"
        f" more workers with --max-workers). Received: {count}")


def dataflow_args(*, project: str, region: str, bucket: str, image: str,
                  gpu: Optional[str] = DEFAULT_GPU, gpu_count: int = 1,
                  machine_type: Optional[str] = DEFAULT_MACHINE_TYPE,
                  disk_size_gb: int = DEFAULT_DISK_SIZE_GB,
                  max_workers: int = 8, job_name: Optional[str] = None,
                  template: Optional[str] = None,
                  gpu_scope: str = "job", prime: bool = False,
                  min_ram: Optional[str] = None,
                  worker_harness_threads: Optional[int] = None,
                  labels: Sequence[str] = (),
                  subnetwork: Optional[str] = None,
                  public_ips: bool = True,
                  service_account: Optional[str] = None) -> List[str]:
  """The Beam options of a Dataflow audit job.

  - `--sdk_container_image`: the image built from the repo's Dockerfile
    (TensorFlow with CUDA, this project, the Beam SDK of the launcher), so
    workers import `transforms` and `lossaudit` from the image; nothing is
    staged at launch (`--sdk_location=container`).
  - `gpu_scope="job"`: `worker_accelerator=...;install-nvidia-driver`, a GPU
    on every worker, of `machine_type`.
  - `gpu_scope="scoring"`: no service option (Dataflow's right fitting,
    turned on by the resource hint that `main` puts on the scoring step,
    must not be combined with `worker_accelerator`). With `prime`,
    Dataflow Prime picks the worker VMs, so no `--machine_type` is passed
    (Prime does not take one); `min_ram` asks for memory instead, as a
    pipeline-wide `min_ram` resource hint.
  - `no_use_multiple_sdk_containers`: one SDK process per worker VM, so one
    process owns the GPU (the model is loaded once per process).
  - `--disk_size_gb` (50 by default, as Google's GPU samples), and the
    optional harness threads, labels, subnetwork, private IPs and service
    account, each as Beam's option of that name.

  Raises:
    ConfigError: a GPU count other than 1, `--prime` or `--min-ram` with a
      GPU on every worker, `--machine-type` with `--prime`, a bad label,
      accelerator type or `min_ram`.
  """
  if gpu:
    check_gpu_count(gpu_count)
    if not GPU_TYPE.match(gpu):
      raise ConfigError("--gpu: expected an NVIDIA accelerator type such as"
                        f" nvidia-tesla-t4 or nvidia-l4, or none. Received:"
                        f" {short_repr(gpu)}")
  if prime and gpu and gpu_scope == "job":
    raise ConfigError(
        "--prime: expected --gpu-scope scoring or --gpu none (Dataflow Prime"
        " takes a GPU as the accelerator resource hint, not the"
        " worker_accelerator service option). Received: --gpu-scope job")
  if prime and machine_type:
    raise ConfigError(
        "--machine-type: expected none with --prime (Dataflow Prime chooses"
        " the worker VMs and does not take a machine type; ask for memory"
        f" with --min-ram). Received: {short_repr(machine_type)}")
  if min_ram is not None:
    if gpu and gpu_scope == "job":
      raise ConfigError(
          "--min-ram: expected --gpu-scope scoring or --gpu none (a"
          " resource hint turns on right fitting, which Dataflow does not"
          " combine with a GPU on every worker, worker_accelerator)."
          f" Received: {short_repr(min_ram)}")
    if not MIN_RAM.match(min_ram):
      raise ConfigError("--min-ram: expected a size such as 30GB. Received:"
                        f" {short_repr(min_ram)}")
  for label in labels:
    if not LABEL.match(label):
      raise ConfigError(
          "--label: expected KEY=VALUE of lowercase letters, digits, _ and -"
          " (the key starting with a letter, each at most 63 characters)."
          f" Received: {short_repr(label)}")
  if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]*(/.*)?", bucket, re.I):
    raise ConfigError(
        "--bucket: expected gs://BUCKET (or gs://BUCKET/PREFIX) for the"
        f" job's temporary and staging files. Received: {short_repr(bucket)}")
  bucket = bucket.rstrip("/")
  args = [
      "--runner=DataflowRunner",
      f"--project={project}",
      f"--region={region}",
      f"--temp_location={bucket}/tmp",
      f"--staging_location={bucket}/staging",
      f"--sdk_container_image={image}",
      "--sdk_location=container",
      f"--disk_size_gb={disk_size_gb}",
      f"--max_num_workers={max_workers}",
      "--experiments=use_runner_v2",
      "--experiments=no_use_multiple_sdk_containers",
  ]
  if machine_type:
    args.append(f"--machine_type={machine_type}")
  if gpu and gpu_scope == "job":
    args.append("--dataflow_service_options=worker_accelerator="
                + accelerator(gpu, gpu_count))
  if prime:
    args.append("--dataflow_service_options=enable_prime")
  if min_ram:
    args.append(f"--resource_hints=min_ram={min_ram}")
  if worker_harness_threads:
    args.append(
        f"--number_of_worker_harness_threads={worker_harness_threads}")
  args += [f"--labels={label}" for label in labels]
  if subnetwork:
    args.append(f"--subnetwork={subnetwork}")
  if not public_ips:
    args.append("--no_use_public_ips")
  if service_account:
    args.append(f"--service_account_email={service_account}")
  if job_name:
    args.append(f"--job_name={job_name}")
  if template:
    args.append(f"--template_location={template}")
  return args


def _positive(flag: str, value: Optional[str]) -> Optional[int]:
  """`value` of `flag` as an integer >= 1 (None stays None).

  Raises:
    ConfigError: anything else.
  """
  if value is None:
    return None
  try:
    number = int(value)
  except ValueError:
    number = 0
  if number < 1:
    raise ConfigError(f"{flag}: expected an integer >= 1. Received:"
                      f" {short_repr(value)}")
  return number


class _Parser(argparse.ArgumentParser):
  """argparse telling a bad flag as a `ConfigError` (one line naming the
  flag), not its usage and a second line."""

  def error(self, message):
    match = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
    if match is None:
      missing = message.removeprefix("the following arguments are required: ")
      raise ConfigError(f"{missing}: expected a value (required). Received:"
                        " none" if missing != message else message)
    from lossaudit.pipelines.command import beam_value_error  # pylint: disable=g-import-not-at-top
    raise ConfigError(beam_value_error(message))


def parser() -> argparse.ArgumentParser:
  """`scripts/dataflow`'s own flags (any other goes to `lossaudit run`)."""
  p = _Parser(prog="scripts/dataflow")
  p.add_argument("--project", required=True)
  p.add_argument("--region", required=True)
  p.add_argument("--bucket", required=True,
                 help="gs://bucket for temp and staging files")
  p.add_argument("--image", required=True,
                 help="worker image built from the Dockerfile")
  p.add_argument("--gpu", default=DEFAULT_GPU,
                 help="accelerator type; 'none' for CPU workers")
  p.add_argument("--gpu-count", default="1",
                 help="GPUs per worker: only 1 (one SDK process a worker"
                 " scores on /GPU:0)")
  p.add_argument("--gpu-scope", choices=("job", "scoring"), default="job",
                 help="a GPU on every worker (job), or on the scoring step"
                 " only, through a resource hint (right fitting)")
  p.add_argument("--prime", action="store_true",
                 help="run on Dataflow Prime (no --machine-type then)")
  p.add_argument("--machine-type", default=None,
                 help=f"worker machine type (default {DEFAULT_MACHINE_TYPE};"
                 " none with --prime)")
  p.add_argument("--min-ram", default=None,
                 help="min_ram resource hint, e.g. 30GB (with --gpu-scope"
                 " scoring or --gpu none)")
  p.add_argument("--disk-size-gb", default=str(DEFAULT_DISK_SIZE_GB),
                 help="worker boot disk in GB (the image is several GB)")
  p.add_argument("--worker-harness-threads", default=None,
                 help="--number_of_worker_harness_threads")
  p.add_argument("--label", action="append", default=[],
                 help="KEY=VALUE job label (repeatable)")
  p.add_argument("--subnetwork", default=None,
                 help="regions/REGION/subnetworks/NAME or its full URL")
  p.add_argument("--no-public-ips", action="store_true",
                 help="workers get private IPs only (the subnetwork needs"
                 " Private Google Access)")
  p.add_argument("--service-account", default=None,
                 help="the workers' service account email")
  p.add_argument("--max-workers", default="8")
  p.add_argument("--job-name", default=None)
  p.add_argument("--template", default=None,
                 help="write the job as a template at this gs:// path")
  p.add_argument("--config", default=DEFAULT_CONFIG)
  p.add_argument("--set", action="append", default=[])
  return p


def audit_argv(argv: Sequence[str]) -> List[str]:
  """`lossaudit run`'s arguments for `scripts/dataflow argv`.

  Raises:
    ConfigError: a flag `dataflow_args` refuses.
  """
  args, rest = parser().parse_known_args(argv)
  check_launch_python()
  gpu = None if args.gpu == "none" else args.gpu
  machine_type = args.machine_type
  if machine_type is None and not args.prime:
    machine_type = DEFAULT_MACHINE_TYPE
  beam_args = dataflow_args(
      project=args.project, region=args.region, bucket=args.bucket,
      image=args.image, gpu=gpu,
      gpu_count=_positive("--gpu-count", args.gpu_count),
      machine_type=machine_type,
      disk_size_gb=_positive("--disk-size-gb", args.disk_size_gb),
      max_workers=_positive("--max-workers", args.max_workers),
      job_name=args.job_name,
      template=args.template, gpu_scope=args.gpu_scope, prime=args.prime,
      min_ram=args.min_ram,
      worker_harness_threads=_positive("--worker-harness-threads",
                                       args.worker_harness_threads),
      labels=args.label, subnetwork=args.subnetwork,
      public_ips=not args.no_public_ips,
      service_account=args.service_account)
  sets = [item for s in args.set for item in ("--set", s)]
  if args.gpu_scope == "scoring" and gpu:
    sets += ["--set", "runtime.accelerator=" + accelerator(gpu)]
  return ["--config", args.config] + sets + beam_args + rest


def main(argv: Optional[Sequence[str]] = None) -> int:
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  return audit.main_translated(audit_argv, argv, prog="scripts/dataflow")


if __name__ == "__main__":
  sys.exit(main())
