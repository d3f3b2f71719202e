"""`lossaudit run`: config, ownership of output.dir, plan, run, summary.

The graph itself (read → score → rules → write) is `lossaudit.pipelines.graph`.

`python -m lossaudit.pipelines.audit --config FILE [--set KEY=VALUE ...]
[Beam options]` is the same as `lossaudit run`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import difflib
import importlib
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple, TypeVar

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import (
  GoogleCloudOptions,
  PipelineOptions,
  StandardOptions,
)

from lossaudit import (
  METRICS_NAMESPACE,
  baseline_copy,
  children,
  drift,
  inputs,
  outputs,
  ownership,
  quiet,
)
from lossaudit.config import AuditConfig, load_config
from lossaudit.errors import (
  ConfigError,
  describe_error,
  job_config_error,
  one_line,
  run_failure,
  short_repr,
)
from lossaudit.pipelines.arguments import RUN_FLAGS, parse_args
from lossaudit.timings import StartupTimes, process_start_time
from lossaudit.transforms.claim import JobClaim

# Runners whose job service adds options of its own, which only it knows.
_PORTABLE_RUNNERS = ("portable", "flink", "spark", "prism", "kafkastreams")
T = TypeVar("T")

_WHILE_RUNNING = re.compile(r" \[while running '[^']*'\]$")
_ARGPARSE_ERROR = re.compile(r"argument (\S+): (.*)", re.DOTALL)
_TYPE_NAMES = {"int": "an integer", "float": "a number"}


class _BeamArgs(beam_options._BeamArgumentParser):  # pylint: disable=protected-access
  """Beam's option parser, telling a refused value as a `ConfigError`
  rather than printing its usage (every Beam option) and exiting."""

  def error(self, message):
    if message.startswith("ambiguous option: "):
      return  # Left unknown, as Beam's parser leaves it.
    raise ConfigError(beam_value_error(message))


# argparse's problems with a value, read as (expected, received).
_VALUE_PROBLEMS = (
    (re.compile(r"invalid (\S+) value: (.*)", re.DOTALL),
     lambda m: (_TYPE_NAMES.get(m[1], "a valid value"), m[2])),
    (re.compile(r"invalid choice: (.*) \(choose from (.*)\)", re.DOTALL),
     lambda m: (f"one of {{{m[2]}}}", m[1])),
    (re.compile(r"expected one argument"), lambda m: ("a value", "none")),
    (re.compile(r"ignored explicit argument (.*)", re.DOTALL),
     lambda m: ("no value (the option is a switch)", m[1])),
)


def beam_value_error(message: str) -> str:
  """argparse's `argument --x: ...` as `--x: expected .... Received: ...`."""
  match = _ARGPARSE_ERROR.fullmatch(message)
  if match is None:
    return f"Beam options: {message}"
  name, problem = match.groups()
  for pattern, read in _VALUE_PROBLEMS:
    found = pattern.fullmatch(problem)
    if found:
      expected, received = read(found)
      return f"{name}: expected {expected}. Received: {received}"
  return f"{name}: expected a valid value. Received: {problem}"


def check_beam_args(args: Sequence[str],
                    own_flags: Sequence[str] = RUN_FLAGS) -> None:
  """Refuses the arguments that neither lossaudit nor Beam knows.

  Beam drops an option it does not know with a warning ("Discarding
  unparseable args"), so a mistyped `--sett` or `--ouput` would be ignored.
  `args` are parsed as `PipelineOptions.get_all_options` parses them (the
  options of every Beam options class, no abbreviations), with `own_flags`
  (each taking a value) known too. With a portable runner (Flink, Spark,
  Prism, PortableRunner), whose job service adds options of its own, only the
  values of known options are checked.

  Args:
    args: the arguments lossaudit passes on to Beam; they may still hold
      `own_flags` (the demo passes them on to `lossaudit run`).
    own_flags: lossaudit's options where `args` come from, suggested with
      Beam's for a mistyped option.

  Raises:
    ConfigError: an unknown option (the nearest known one suggested), a
      value that follows no option, or a value a Beam option refuses
      (`--direct_num_workers=two`).
  """
  parser = _beam_parser(own_flags)
  parsed, unknown = parser.parse_known_args(list(args))
  runner = getattr(parsed, "runner", None)
  if unknown and isinstance(runner, str) and "." in runner:
    # A runner named by its path may bring options classes of its own
    # (DaskRunner); a module that fails to import is Beam's to report.
    with contextlib.suppress(Exception):
      importlib.import_module(runner.rsplit(".", 1)[0])
      parser = _beam_parser(own_flags)
      unknown = parser.parse_known_args(list(args))[1]
  workers = getattr(parsed, "direct_num_workers", None)
  if workers is not None and workers < 0:
    raise ConfigError("--direct_num_workers: expected an integer >= 0 (0: one"
                      f" a CPU). Received: {workers}")
  runner_name = str(runner).rsplit(".", 1)[-1].lower().removesuffix("runner")
  if not unknown or runner_name in _PORTABLE_RUNNERS:
    return
  token = unknown[0]
  known = (f"a lossaudit option ({', '.join(own_flags)}) or a Beam pipeline"
           " option")
  if not token.startswith("-") or token in ("-", "--"):
    raise ConfigError(f"Beam options: expected {known}. Received:"
                      f" {short_repr(token)} (a value that follows no option"
                      " taking one)")
  option = token.split("=", 1)[0]
  beam = [s for action in parser._actions  # pylint: disable=protected-access
          for s in action.option_strings if s not in own_flags]
  suggestion = difflib.get_close_matches(option, [*own_flags, *beam], n=1)
  hint = f". Did you mean {suggestion[0]}?" if suggestion else ""
  raise ConfigError(f"{one_line(option, 80)}: expected {known}. Received:"
                    f" {short_repr(token)}{hint}")


def _beam_parser(own_flags: Sequence[str]) -> _BeamArgs:
  """A parser of the options of every Beam options class imported, as
  `PipelineOptions.get_all_options` builds it, and of `own_flags`."""
  parser = _BeamArgs(allow_abbrev=False, add_help=False)
  classes = {}
  for cls in PipelineOptions.__subclasses__():
    classes.setdefault(str(cls), cls)
  for cls in classes.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  for flag in own_flags:
    with contextlib.suppress(argparse.ArgumentError):  # Beam's too.
      parser.add_argument(flag, action="append", dest="_lossaudit_flags")
  return parser


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM arrived while a run was going."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


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


@contextlib.contextmanager
def ending_workers_then(release: Callable[[], None]) -> Iterator[None]:
  """Runs the block, which runs a pipeline; then, signals held, ends what
  the pipeline started if the block failed (`_end_workers`), and calls
  `release` (which frees what nothing may write to any more)."""
  processes_before = children.descendants()
  threads_before = frozenset(threading.enumerate())
  previous_hook = threading.excepthook
  threading.excepthook = _quiet_when_interrupted(previous_hook,
                                                 threads_before)
  try:
    yield
  finally:
    with SIGNALS.held():
      try:
        if sys.exc_info()[0] is not None:
          _end_workers(processes_before, threads_before)
        release()
      finally:
        threading.excepthook = previous_hook


def _end_workers(processes_before: frozenset,
                 threads_before: frozenset) -> None:
  """Ends the processes started since `processes_before` (Beam's SDK
  workers and the shells that started them) and waits for the threads
  started since `threads_before` (Beam's, each waiting for its worker: the
  interpreter waits for them at exit)."""
  threads = [t for t in threading.enumerate()
             if t not in threads_before and not t.daemon
             and t is not threading.current_thread()]
  for _ in range(5):  # A worker being started as the run stopped.
    if not children.descendants() - processes_before:
      break
    children.end_since(processes_before)
  deadline = time.monotonic() + 3.0
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))


def _quiet_when_interrupted(previous: Callable, threads_before: frozenset
                            ) -> Callable:
  """A `threading.excepthook` that drops what the run's own threads (Beam's,
  started since `threads_before`) raise once a signal stopped the run: they
  fail as their workers go (`Worker subprocess exited with return code`, a
  broken gRPC stream), whether the workers got the signal too (Ctrl-C in a
  terminal) or `_end_workers` ended them."""

  def hook(args):
    if (SIGNALS.received is None or args.thread is None
        or args.thread in threads_before):
      previous(args)

  return hook


def runner_name(options: PipelineOptions) -> str:
  """The runner's name (DirectRunner unless the options say otherwise)."""
  standard = options.view_as(StandardOptions)
  if standard.runner is None:
    standard.runner = "DirectRunner"
  return str(standard.runner)


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
  """A pipeline for `options`, checked as the runner would check them.

  Raises:
    ConfigError: an unknown runner or options the runner would refuse.
  """
  # pylint: disable-next=g-import-not-at-top
  from apache_beam.options.pipeline_options_validator import (
    PipelineOptionsValidator,
  )

  try:
    p = beam.Pipeline(options=options)
    errors = PipelineOptionsValidator(options, p.runner).validate()
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"Beam options: {describe_error(e)}") from None
  if errors:
    raise ConfigError(f"Beam options: {'; '.join(errors)}")
  return p


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
    summary, flagged, ids = kept
  else:
    _refuse_baseline_being_written(baseline)
    summary = outputs.read_summary(baseline, "gate.baseline")
    flagged = outputs.shard_files(baseline, outputs.FLAGGED)
    ids = outputs.scored_id_files(baseline)
  if not flagged and summary["flagged"]["total"]:
    raise ConfigError(
        f"gate.baseline: expected the {outputs.FLAGGED}/ files of its"
        f" {summary['flagged']['total']} flagged examples (flag history)."
        f" Received: {baseline!r}, with none")
  outputs.check_flagged_outputs("gate.baseline", baseline, summary,
                                flagged, id_column)
  ids_known = ids is not None or not summary["examples_scored"]
  return drift.Baseline(baseline, summary, tuple(flagged), tuple(ids or ()),
                        ids_known=ids_known, copied=kept is not None)


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


class _StopOnSignals:
  """While a run goes, SIGINT and SIGTERM raise `Interrupted` in the main
  thread, so the run unwinds through its clean-up (`Claim.release`).

  `received` keeps the signal, whatever the runner wraps the error in. An
  exception raised while Python runs a weakref callback or `__del__` is
  printed and dropped, so after the first signal SIGALRM raises it again
  every 0.1 s until the clean-up starts (`held`).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.received: Optional[int] = None
    # What became of the run, when a signal stopped it, if not what the
    # command says (a remote job left running, or cancelled).
    self.outcome: Optional[str] = None
    # Set once the run's outputs are whole (its summary.json written): a
    # signal then is noted, not obeyed, and the exit code is the run's.
    self.completed = False
    self._previous = {}

  def _interrupt(self, signum, unused_frame):
    if self.completed:
      self.received = self.received or signum
      return
    if self.received is None:
      self.received = signum
      # The runner logs the interruption as a failure, traceback and all;
      # the user asked for it, and gets one line instead.
      logging.disable(logging.CRITICAL)
      signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    raise Interrupted(self.received)

  def _repeat(self, unused_signum, unused_frame):
    if self.received is not None:
      raise Interrupted(self.received)

  def __enter__(self):
    self.received = None
    self.outcome = None
    self.completed = False
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._interrupt)
                        for s in self.SIGNALS}
      self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM,
                                                     self._repeat)
    return self

  def __exit__(self, *unused_exc_info):
    if self._previous:
      signal.setitimer(signal.ITIMER_REAL, 0)
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    logging.disable(logging.NOTSET)

  @contextlib.contextmanager
  def held(self):
    """Defers the signals (and stops the repeats) while a clean-up runs."""
    if not self._previous:
      yield
      return
    signal.setitimer(signal.ITIMER_REAL, 0)
    blocked = set(self.SIGNALS) | {signal.SIGALRM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
      yield
    finally:
      signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


SIGNALS = _StopOnSignals()


def run_metrics(result) -> Dict:
  """The run's `lossaudit` Beam counters and distributions, committed values."""
  try:
    found = result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE))
  except Exception:  # pylint: disable=broad-except
    return {}  # Some runners report no metrics.
  counters: Dict[str, int] = {}
  for c in found["counters"]:
    counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + (
        c.committed or 0)
  distributions = {}
  for d in found["distributions"]:
    value = d.committed
    if value is not None and value.count:
      distributions[d.key.metric.name] = {
          "count": value.count, "sum": value.sum, "min": value.min,
          "max": value.max, "mean": value.sum / value.count}
  return {"counters": dict(sorted(counters.items())),
          "distributions": distributions}


class _RunFailureFilter(logging.Filter):
  """Drops a runner's log of a failure the CLI tells on one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    error = error or RuntimeError(record.getMessage())
    return not (run_failure(error) or job_config_error(error))


@contextlib.contextmanager
def _quiet_run_failures():
  """Beam logs what a worker raised, with its traceback, before the run
  fails; for `stats.max_slices` the one line of `run_command` says it."""
  found = _RunFailureFilter()
  loggers = [logging.getLogger(name) for name in (
      "apache_beam.runners.common",
      "apache_beam.runners.worker.bundle_processor",
      "apache_beam.runners.portability.fn_api_runner.fn_runner")]
  for logger in loggers:
    logger.addFilter(found)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(found)


def run_command(body: Callable[[], T], interrupted: str
                ) -> Tuple[Optional[int], Optional[T]]:
  """Runs a command's `body` under `SIGNALS`.

  Returns:
    `(None, its result)`, or the exit code and None: 2 after printing a
    ConfigError on one line; 128 + the signal after printing `interrupted`
    (what became of the command) when a signal stopped it.
  """
  try:
    with SIGNALS, _quiet_run_failures():
      return None, body()
  except ConfigError as e:
    # One a step of the job raised (its claim) bears the step's name.
    message = _WHILE_RUNNING.sub("", str(e))
    print(f"lossaudit: error: {one_line(message)}", file=sys.stderr)
    return 2, None
  except BaseException as e:  # pylint: disable=broad-except
    # Beam re-raises what a DoFn raised as a RuntimeError of its own.
    received = SIGNALS.received or (
        signal.SIGINT if isinstance(e, KeyboardInterrupt) else None)
    config_error = job_config_error(e) if received is None else ""
    if config_error:  # A step's set-up check (the job's claim): one line.
      print(f"lossaudit: error: {one_line(config_error)}", file=sys.stderr)
      return 2, None
    failure = run_failure(e) if received is None else ""
    if failure:  # The run's own limit (stats.max_slices): one line.
      print(f"lossaudit: error: {one_line(failure)}", file=sys.stderr)
      return 1, None
    if received is None:
      raise
    print(f"lossaudit: interrupted by {signal.Signals(received).name};"
          f" {SIGNALS.outcome or interrupted}", file=sys.stderr)
    return 128 + received, None


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
  with _noting_signals(SIGNALS.received):
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
    print(f"{prog}: error: {one_line(str(e))}", file=sys.stderr)
    return 2
  return main(translated)


@contextlib.contextmanager
def _noting_signals(received: Optional[int]) -> Iterator[None]:
  """While a completed run is reported, SIGINT and SIGTERM are noted, not
  obeyed (a scheduler would take the completed night for a failed one);
  a line says so at the end. `received`: one that arrived already."""
  noted = [received] if received else []
  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, lambda signum, _: noted.append(signum))
                for s in _StopOnSignals.SIGNALS}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    if noted:
      print(f"lossaudit: {signal.Signals(noted[0]).name} arrived after the"
            " run completed; its outputs are whole, and the exit code is"
            " the run's", file=sys.stderr)


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
