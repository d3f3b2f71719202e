"""`lossaudit run`: config, ownership of output.dir, plan, run, summary.

The graph itself (read → score → rules → write) is `lossaudit.pipelines.graph`.

`python -m lossaudit.pipelines.audit --config FILE [--set KEY=VALUE ...]
[Beam options]` is the same as `lossaudit run`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
import time
from typing import Callable, Dict, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
  GoogleCloudOptions,
  PipelineOptions,
)

from lossaudit import (
  baseline_copy,
  decisions,
  drift,
  inputs,
  outputs,
  ownership,
  progress,
  quiet,
)
from lossaudit.config import AuditConfig, load_config
from lossaudit.errors import ConfigError, describe_error
from lossaudit.pipelines.arguments import parse_args
from lossaudit.pipelines.command import (
  SIGNALS,
  Interrupted,
  check_beam_args,
  ending_workers_then,
  new_pipeline,
  noting_signals,
  print_error,
  run_command,
  run_metrics,
  runner_name,
)
from lossaudit.timings import StartupTimes, process_start_time
from lossaudit.transforms.claim import JobClaim


def run(argv: Optional[Sequence[str]] = None,
        test_pipeline: Optional[beam.Pipeline] = None,
        clock: Callable[[], float] = time.time,
        loaded: Optional[AuditConfig] = None) -> Dict:
  """Runs an audit and returns its summary.

  The summary's `gate.passed` says whether the quality gates passed; its
  `metrics` are the Beam metrics of the run, when the runner reports them.
  While it runs, the run holds `output.dir` (see `lossaudit.ownership`).

  Args:
    clock: the time now, in seconds since the epoch (the run id, the start
      time, the age of another run's lock).

  Raises:
    ConfigError: a bad config or set-up, before the pipeline starts.
  """
  startup = StartupTimes()
  run_started = time.time()
  known, beam_args = parse_args(argv)
  check_beam_args(beam_args)
  # `loaded`: the config of these arguments, already read (by the CLI's
  # early check): `--config <(...)` or /dev/stdin can be read only once.
  config = loaded if loaded is not None else load_config(known.config,
                                                         known.set)
  startup.lap("config")
  start_time = clock()
  now = datetime.datetime.fromtimestamp(start_time, datetime.timezone.utc)
  run_id = outputs.new_run_id(now)
  template = config.output.dir
  config = config.with_output_dir(outputs.expand_dir(template, now, run_id))
  options = PipelineOptions(beam_args)
  runner = runner_name(options)
  template_location = options.view_as(GoogleCloudOptions).template_location
  if template_location and not is_flex_launch(template_location):
    _check_template(config, template)
  if test_pipeline is None:
    _refuse_unknown_runner(runner)
  remote = not is_local_runner(runner)
  if remote:  # Before the runner's own checks, which may call its service.
    refuse_local_paths(config, runner, options)
  p = test_pipeline or new_pipeline(options)
  # A job that may outlive this process (a remote runner, a template's)
  # owns its output directory itself: this process deletes nothing. One
  # that runs here (`--claim-in-job`) ends with this process.
  job_elsewhere = remote or bool(template_location)
  in_job = known.claim_in_job or job_elsewhere
  # The checks before the run read gs:// with the same options as workers.
  FileSystems.set_options(options)
  lock_timeout = config.output.lock_timeout_seconds
  if in_job:
    ownership.check_claimable(config.output.dir,
                              overwrite=config.output.overwrite,
                              lock_timeout=lock_timeout, clock=clock)
    claim = None
  else:
    claim = ownership.claim(
        config.output.dir, ownership.RunInfo.this_process(run_id, start_time),
        overwrite=config.output.overwrite, lock_timeout=lock_timeout,
        clock=clock)
  # What the pipeline starts (the multi-process DirectRunner's workers) is
  # ended before the lock goes, when the run stops short. A job that ran
  # here has ended with this process: what it took is released as a run's.
  own_baseline = False  # Set below: whether the baseline is output.dir.

  def release() -> None:
    if claim is not None:
      claim.release()
    elif not job_elsewhere:
      ownership.release_job(config.output.dir, run_id, own_baseline)

  with ending_workers_then(release):
    baseline = _baseline(config.gate.baseline, template, config.output.dir,
                         config.input.id_column)
    prefix = outputs.scratch_prefix(config.output.dir, run_id,
                                    outputs.KEPT_BASELINE)
    baseline_as_found = baseline  # What the job's claim step copies.
    if baseline is not None and in_job:
      # Copied by the job's first step, once it holds the directory.
      baseline = baseline_copy.names(baseline, prefix)
      own_baseline = outputs.same_dir(baseline.dir, config.output.dir)
    elif baseline is not None:
      baseline = baseline_copy.copy(baseline, prefix)
      # A baseline that is this run's own directory is cleared with the
      # earlier outputs: a run that does not complete, or fails its gates,
      # keeps the copy for the next.
      claim.keep_baseline_copy = outputs.same_dir(baseline.dir,
                                                  config.output.dir)
    job_claim = JobClaim(
        config.output.dir, run_id, start_time,
        overwrite=config.output.overwrite, lock_timeout=lock_timeout,
        baseline=baseline_as_found, baseline_prefix=prefix, clock=clock,
        launcher=None if job_elsewhere else
        ownership.RunInfo.this_process(run_id, start_time)) if in_job else None
    startup.lap("claim")
    files = inputs.expand(config.input.patterns, config.output.dir)
    inputs.check_model_paths(config.model.path_groups())
    startup.lap("glob")
    # TensorFlow loads here, once the config and paths are known to be good:
    # a bad one is told in a second, without TensorFlow's start-up lines.
    with quiet.tensorflow_start_up_lines(known.verbose):
      from lossaudit import preflight  # pylint: disable=g-import-not-at-top
      from lossaudit.pipelines import graph  # pylint: disable=g-import-not-at-top

      startup.lap("import_tensorflow")
      plan = preflight.plan(config, files, startup)
    graph.build(p, config, plan, runner,
                {"run_id": run_id, "start_time": start_time,
                 "wall_start": run_started}, baseline, job_claim=job_claim,
                clock=clock)
    # Last, once nothing is left to refuse: an earlier run's outputs stay
    # until this run can start.
    if claim is not None:
      claim.clear_previous()
    startup.lap("graph")
    progress.reset()  # The local runner's workers may be this process.
    result = p.run()
    if template_location:
      return {"template": template_location}
    _wait(result, remote, known.cancel_on_interrupt)
    SIGNALS.completed = True
    summary_path = outputs.join(config.output.dir, outputs.SUMMARY)
    summary = outputs.read_json(summary_path)
    summary["timings"]["startup"] = startup.to_dict(
        process_start_time(), run_started,
        summary["timings"].get("first_batch_time"))
    found = run_metrics(result)
    if found:
      summary["metrics"] = found
    outputs.write_json(summary_path, summary)
    return summary


# Runners that run the pipeline on this machine, in (or under) this process.
_LOCAL_RUNNERS = ("direct", "bundlebaseddirect", "switchingdirect",
                  "testdirect", "prism", "fnapi", "interactive")
# `--template_location` as Dataflow's Flex launcher passes it: the job it
# writes there is submitted at once, once.
_FLEX_JOB_OBJECT = re.compile(r"(?:^|/)template_launches/[^/]+/job_object$")
_REMOTE_PATH = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_local_runner(runner: str) -> bool:
  """Whether `runner` (a name or a dotted path) runs on this machine."""
  name = runner.rsplit(".", 1)[-1].lower().removesuffix("runner")
  return name in _LOCAL_RUNNERS


def is_flex_launch(template_location: str,
                   environ: Optional[Dict[str, str]] = None) -> bool:
  """Whether `--template_location` is where a Flex Template launch writes
  its job (`<staging>/template_launches/<id>/job_object`), submitted once,
  now, rather than a classic template built to be launched many times.
  Inside a Flex Template image (`FLEX_TEMPLATE_PYTHON_PY_FILE` set), any
  location under `template_launches/` is one."""
  environ = os.environ if environ is None else environ
  return bool(_FLEX_JOB_OBJECT.search(template_location)) or (
      "FLEX_TEMPLATE_PYTHON_PY_FILE" in environ
      and "/template_launches/" in template_location)


def _refuse_unknown_runner(runner: str) -> None:
  """Refuses a runner Beam does not know, as `new_pipeline` would, but
  before anything else is checked."""
  # pylint: disable-next=g-import-not-at-top
  from apache_beam.runners.runner import create_runner

  try:
    create_runner(runner)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"Beam options: {describe_error(e)}") from None


def refuse_local_paths(config: AuditConfig, runner: str,
                       options: Optional[PipelineOptions] = None) -> None:
  """Refuses a path on this machine where the workers of a remote runner
  read or write: they would not find it, or write to their own disks. With
  Dataflow, its temp, staging and template locations too.

  Raises:
    ConfigError: naming the key or option.
  """
  found = [("input.pattern", pattern) for pattern in config.input.patterns]
  if not config.model.predictions_column:
    found.append(("model.path", config.model.path))
  found.append(("output.dir", config.output.dir))
  if config.gate.baseline not in (None, "latest"):
    found.append(("gate.baseline", config.gate.baseline))
  if options is not None and "dataflow" in runner.lower():
    cloud = options.view_as(GoogleCloudOptions)
    for name, value in (("temp_location", cloud.temp_location),
                        ("staging_location", cloud.staging_location),
                        ("template_location", cloud.template_location)):
      if value and not value.startswith("gs://"):  # Dataflow's own files.
        raise ConfigError(
            f"--{name}: expected a gs:// path (Dataflow keeps its files on"
            f" Cloud Storage). Received: {value!r}")
  for key, path in found:
    if not _REMOTE_PATH.match(path) or path.lower().startswith("file://"):
      raise ConfigError(
          f"{key}: expected a path the workers of {runner} can reach (gs://"
          f"...); a path on this machine is not on theirs. Received:"
          f" {path!r}")


def _wait(result, remote: bool, cancel_on_interrupt: bool) -> None:
  """Waits for the job. A signal to this process leaves a remote job
  running, holding its output directory (or cancels it, when asked), and
  says so (`SIGNALS.outcome`)."""
  try:
    result.wait_until_finish()
  except Interrupted:
    if remote:
      job = getattr(result, "job_id", lambda: None)()
      what = f"job {job}" if job else "the job"
      if cancel_on_interrupt:
        with contextlib.suppress(Exception):
          result.cancel()
        SIGNALS.outcome = (
            f"{what} was cancelled; its lock goes stale after"
            " output.lock_timeout and the next run removes its scratch")
      else:
        SIGNALS.outcome = (
            f"{what} keeps running, holds output.dir and releases it when"
            " it ends (--cancel-on-interrupt cancels it instead)")
    raise


def _check_template(config: AuditConfig, template: str) -> None:
  """A classic template fixes `output.dir` and the baseline when it is
  built; every launch would reuse them."""
  if template != template.format(date="", run_id=""):
    raise ConfigError(
        "output.dir: {date} and {run_id} would be filled in once, when the"
        " classic template is built, and every launch would write there;"
        " expected a fixed directory, or the Flex Template (templates/flex)"
        f" for scheduled runs. Received: {template!r}")
  if config.gate.baseline == "latest":
    raise ConfigError(
        "gate.baseline: 'latest' would be resolved once, when the classic"
        " template is built; expected a fixed directory, or the Flex Template"
        " (templates/flex) for scheduled runs. Received: 'latest'")


def _baseline(baseline: Optional[str], template: str, output_dir: str,
              id_column: Optional[str]) -> Optional[drift.Baseline]:
  """The run `gate.baseline` names (checked against this run's
  `input.id_column`), or None.

  `latest` is the newest earlier completed run whose gates passed
  (`outputs.latest_complete_run`). A fixed `output.dir` is its own
  baseline (with `latest`, or named); when its last run failed its gates
  (or was stopped after it cleared the run before), the baseline that run
  kept a copy of is used, so a retried night is judged against the same
  history; before its first run, there is none.
  """
  if baseline is None:
    return None
  fixed = template.format(date="", run_id="") == template
  latest = baseline == "latest"
  if latest:
    baseline = outputs.latest_complete_run(
        template, exclude=None if fixed else output_dir) or (
            template if fixed else None)
    if baseline is None:
      return None
  kept = None
  if fixed and outputs.same_dir(baseline, template):
    # Its own directory, named or `latest`: its last run, unless that one
    # failed its gates or never completed; then the baseline that run kept
    # (none before the first run).
    summary_path = outputs.join(baseline, outputs.SUMMARY)
    if not FileSystems.exists(summary_path) or not outputs.gate_passed(
        summary_path):
      kept = outputs.kept_baseline(baseline)
      if kept is None:
        return None
  if kept is not None:
    summary, flagged, ids, decided = kept
  else:
    _refuse_baseline_being_written(baseline)
    summary = outputs.read_summary(baseline, "gate.baseline")
    flagged = outputs.shard_files(baseline, outputs.FLAGGED)
    ids = outputs.scored_id_files(baseline)
    decided = outputs.join(baseline, outputs.DECISIONS)
    decided = decided if FileSystems.exists(decided) else None
  if not flagged and summary["flagged"]["total"]:
    raise ConfigError(
        f"gate.baseline: expected the {outputs.FLAGGED}/ files of its"
        f" {summary['flagged']['total']} flagged examples (flag history)."
        f" Received: {baseline!r}, with none")
  outputs.check_flagged_outputs("gate.baseline", baseline, summary,
                                flagged, id_column)
  ids_known = ids is not None or not summary["examples_scored"]
  decided = _newest_decisions(template, output_dir, fixed) or decided
  return drift.Baseline(baseline, summary, tuple(flagged), tuple(ids or ()),
                        ids_known=ids_known, copied=kept is not None,
                        decisions=decided and decisions.read_parquet(
                            decided, "gate.baseline"))


def _newest_decisions(template: str, output_dir: str,
                      fixed: bool) -> Optional[str]:
  """The `decisions.parquet` of the newest completed run of `template`,
  whatever its gates gave (a reviewer's decisions stick even when that
  night failed them), or None when it wrote none."""
  newest = template if fixed else outputs.latest_complete_run(
      template, exclude=output_dir, passed=False)
  if newest is None:
    return None
  path = outputs.join(newest, outputs.DECISIONS)
  return path if FileSystems.exists(path) else None


def _refuse_baseline_being_written(directory: str) -> None:
  """Refuses, saying so, a baseline another run is writing (its summary
  gone, its lock held).

  Raises:
    ConfigError: naming gate.baseline.
  """
  if (not FileSystems.exists(outputs.join(directory, outputs.SUMMARY))
      and FileSystems.exists(outputs.join(directory, ownership.LOCK))):
    raise ConfigError(
        f"gate.baseline: expected a completed run; another run is writing"
        f" there now (it holds {ownership.LOCK}): wait for it to end, or"
        f" name another run. Received: {directory!r}")


def main(argv: Optional[Sequence[str]] = None,
         loaded: Optional[AuditConfig] = None,
         clock: Callable[[], float] = time.time) -> int:
  """Command-line entry point; returns the exit code (3: a gate failed).

  Args:
    loaded: the config that `argv`'s `--config` and `--set` give, when the
      caller has read it already (a pipe can be read only once).
    clock: as for `run` (a scheduler's nights, in tests).
  """
  # Before TensorFlow loads: its C++ INFO and WARNING lines go, a user's own
  # TF_CPP_MIN_LOG_LEVEL wins. Level 2, not 3: 3 would hide TensorFlow's
  # ERROR lines too (such as "failed call to cuInit" on a GPU machine with a
  # broken driver). What TensorFlow logs while it loads, before the variable
  # is read, is held back by `quiet.tensorflow_start_up_lines`; `--verbose`
  # shows it all.
  if "--verbose" not in (sys.argv[1:] if argv is None else argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.getLogger().setLevel(logging.WARNING)
  code, summary = run_command(
      lambda: run(argv, loaded=loaded, clock=clock), "the run stopped, its"
      " scratch files and lock are removed and no summary.json was written"
      " (shards it wrote are partial; the next run deletes them)")
  if code is not None:
    return code
  with noting_signals(SIGNALS.received):
    return _report(summary)


def main_translated(translate: Callable[[Sequence[str]], Sequence[str]],
                    argv: Optional[Sequence[str]] = None,
                    prog: str = "lossaudit") -> int:
  """`main` of the arguments `translate(argv)` gives: a launcher's own
  flags (`scripts/dataflow`, the Flex Template's parameters) as `lossaudit
  run` takes them. Exit 2, after one line naming the flag, when `translate`
  refuses them (a ConfigError)."""
  try:
    translated = translate(sys.argv[1:] if argv is None else argv)
  except ConfigError as e:
    return print_error(str(e), prog)
  return main(translated)


def _report(summary: Dict) -> int:
  """Prints what a completed run did; returns its exit code."""
  if "template" in summary:
    print(f"lossaudit: wrote the job template {summary['template']}")
    return 0
  print(f"lossaudit: scored {summary['examples_scored']} of"
        f" {summary['examples_read']} examples"
        f" ({summary['examples_dead_lettered']} dead-lettered),"
        f" flagged {summary['flagged']['total']}."
        f" Outputs in {summary['config']['output']['dir']}")
  for fold, found in (summary.get("folds") or {}).items():
    if "selected_checkpoint" in found and not found["count"]:
      print(f"lossaudit: warning: fold {fold} has no rows, so no held-out"
            f" loss to select its checkpoint by (is input.fold_column, or"
            f" model.folds, what the training used?)", file=sys.stderr)
  early = (summary.get("label_issues") or {}).get("early_aum")
  if early and early["fell_back"]:
    print(f"lossaudit: warning: early_aum fell back to the"
          f" prune_by_noise_rate suspects: no checkpoint of"
          f" model.dynamics_path is usable (each predicts more than"
          f" flag.early_aum_max_fit={early['max_fit']} of the suspects as"
          f" given, or is less accurate than the out-of-sample"
          f" probabilities)", file=sys.stderr)
  metrics = summary.get("metrics")
  if metrics:
    counters = ", ".join(f"{k} {v:,}" for k, v in metrics["counters"].items())
    print(f"lossaudit: metrics: {counters}")
    latency = metrics["distributions"].get("batch_latency_ms")
    if latency:
      print(f"lossaudit: batch latency: mean {latency['mean']:.1f} ms, min"
            f" {latency['min']} ms, max {latency['max']} ms over"
            f" {latency['count']} batches")
  gate = summary.get("gate")
  if gate:
    print(f"lossaudit: gates {'passed' if gate['passed'] else 'FAILED'}"
          f" (baseline: {gate['baseline'] or 'none'}); see"
          f" {outputs.join(summary['config']['output']['dir'], outputs.DRIFT)}")
    for line in gate.get("skipped", ()):
      print(f"lossaudit: warning: {line}", file=sys.stderr)
    if gate["failed"]:
      print("lossaudit: " + "\nlossaudit: ".join(gate["failed"]),
            file=sys.stderr)
      return 3
  return 0


if __name__ == "__main__":
  sys.exit(main())
