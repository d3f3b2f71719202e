"""Launching an audit on Google Cloud Dataflow with GPU workers.

`scripts/dataflow --project P --region R --bucket gs://B --image IMAGE
[--gpu nvidia-tesla-t4] [--config configs/dataflow_gpu.yaml] [--set K=V ...]
[--template gs://B/templates/audit.json]` builds the options below and runs
`lossaudit run` with them; with `--template` the job is written as a
template instead of being submitted.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

DEFAULT_CONFIG = "configs/dataflow_gpu.yaml"


def accelerator(gpu: str, count: int = 1) -> str:
  return f"type:{gpu};count:{count};install-nvidia-driver"


def dataflow_args(*, project: str, region: str, bucket: str, image: str,
                  gpu: Optional[str] = "nvidia-tesla-t4", gpu_count: int = 1,
                  machine_type: str = "n1-standard-8",
                  max_workers: int = 8, job_name: Optional[str] = None,
                  template: Optional[str] = None,
                  gpu_scope: str = "job") -> List[str]:
  """The Beam options of a Dataflow audit job.

  - `--sdk_container_image`: the image built from the repo's Dockerfile
    (TensorFlow with CUDA, this project, the Beam SDK of the launcher), so
    workers import `transforms` and `lossaudit` from the image; nothing is
    staged at launch (`--sdk_location=container`).
  - `worker_accelerator=...;install-nvidia-driver`: a GPU on every worker.
  - `no_use_multiple_sdk_containers`: one SDK process per worker VM, so one
    process owns the GPU (the model is loaded once per process).
  - `gpu_scope="scoring"` leaves the accelerator off the job: `main` puts it
    on the scoring step as a resource hint (`runtime.accelerator`), which
    Dataflow honours with right fitting (Dataflow Prime).
  """
  bucket = bucket.rstrip("/")
  args = [
      "--runner=DataflowRunner",
      f"--project={project}",
      f"--region={region}",
      f"--temp_location={bucket}/tmp",
      f"--staging_location={bucket}/staging",
      f"--sdk_container_image={image}",
      "--sdk_location=container",
      f"--machine_type={machine_type}",
      f"--max_num_workers={max_workers}",
      "--experiments=use_runner_v2",
      "--experiments=no_use_multiple_sdk_containers",
  ]
  if gpu and gpu_scope == "job":
    args.append("--dataflow_service_options=worker_accelerator="
                + accelerator(gpu, gpu_count))
  elif gpu:
    args.append("--dataflow_service_options=enable_prime")
  if job_name:
    args.append(f"--job_name={job_name}")
  if template:
    args.append(f"--template_location={template}")
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  from lossaudit.pipelines import audit  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(prog="scripts/dataflow")
  parser.add_argument("--project", required=True)
  parser.add_argument("--region", required=True)
  parser.add_argument("--bucket", required=True,
                      help="gs://bucket for temp and staging files")
  parser.add_argument("--image", required=True,
                      help="worker image built from the Dockerfile")
  parser.add_argument("--gpu", default="nvidia-tesla-t4",
                      help="accelerator type; 'none' for CPU workers")
  parser.add_argument("--gpu-count", type=int, default=1)
  parser.add_argument("--gpu-scope", choices=("job", "scoring"),
                      default="job",
                      help="a GPU on every worker (job), or on the scoring"
                      " step only through a resource hint (Dataflow Prime)")
  parser.add_argument("--machine-type", default="n1-standard-8")
  parser.add_argument("--max-workers", type=int, default=8)
  parser.add_argument("--job-name", default=None)
  parser.add_argument("--template", default=None,
                      help="write the job as a template at this gs:// path")
  parser.add_argument("--config", default=DEFAULT_CONFIG)
  parser.add_argument("--set", action="append", default=[])
  args, rest = parser.parse_known_args(argv)
  beam_args = dataflow_args(
      project=args.project, region=args.region, bucket=args.bucket,
      image=args.image, gpu=None if args.gpu == "none" else args.gpu,
      gpu_count=args.gpu_count, machine_type=args.machine_type,
      max_workers=args.max_workers, job_name=args.job_name,
      template=args.template, gpu_scope=args.gpu_scope)
  sets = [item for s in args.set for item in ("--set", s)]
  if args.gpu_scope == "scoring" and args.gpu != "none":
    sets += ["--set", "runtime.accelerator=" + accelerator(args.gpu,
                                                           args.gpu_count)]
  return audit.main(["--config", args.config] + sets + beam_args + rest)


if __name__ == "__main__":
  sys.exit(main())
