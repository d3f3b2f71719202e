"""The plumbing every command shares: Beam arguments, signals, exit codes.

`lossaudit run` (`lossaudit.pipelines.audit`), `lossaudit folds` and
`lossaudit demo` parse their Beam options with `check_beam_args`, build
their pipeline with `runner_name` and `new_pipeline`, run it inside
`ending_workers_then` and `run_command` (SIGINT and SIGTERM unwind through
the clean-up; a `ConfigError` is one line and exit 2), and read its counters
with `run_metrics`.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import re
import signal
import sys
import threading
import time
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple, TypeVar

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import (
  PipelineOptions,
  StandardOptions,
)

from lossaudit import METRICS_NAMESPACE, children
from lossaudit.errors import (
  ConfigError,
  describe_error,
  job_config_error,
  one_line,
  run_failure,
  short_repr,
)
from lossaudit.pipelines.arguments import RUN_FLAGS

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


def print_error(message: str, prog: str = "lossaudit", code: int = 2
                ) -> int:
  """Prints `message` as the command's one error line, `PROG: error: ...`,
  on stderr; returns the exit `code` (2: a bad config, path or argument)."""
  print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
  return code


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
    return print_error(message), None
  except BaseException as e:  # pylint: disable=broad-except
    # Beam re-raises what a DoFn raised as a RuntimeError of its own.
    received = SIGNALS.received or (
        signal.SIGINT if isinstance(e, KeyboardInterrupt) else None)
    config_error = job_config_error(e) if received is None else ""
    if config_error:  # A step's set-up check (the job's claim): one line.
      return print_error(config_error), None
    failure = run_failure(e) if received is None else ""
    if failure:  # The run's own limit (stats.max_slices): one line.
      return print_error(failure, code=1), None
    if received is None:
      raise
    print(f"lossaudit: interrupted by {signal.Signals(received).name};"
          f" {SIGNALS.outcome or interrupted}", file=sys.stderr)
    return 128 + received, None

@contextlib.contextmanager
def noting_signals(received: Optional[int]) -> Iterator[None]:
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
