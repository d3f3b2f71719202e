"""A job that owns its output directory: it claims it in its first step,
refreshes the lock while it runs, and the step that writes `summary.json`
releases it (`lossaudit.ownership`).

What a remote runner runs is a job, not the process that launched it: a
Flex Template launch, a classic template, a Dataflow submission. Their
launcher checks (`ownership.check_claimable`) and deletes nothing;
`ClaimOutputDir` does the rest where the job runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, NamedTuple, Optional

import apache_beam as beam

from lossaudit import baseline_copy, ownership
from lossaudit.drift import Baseline


class JobClaim(NamedTuple):
  """How the job claims `directory`.

  Attributes:
    directory: `output.dir`.
    run_id: this run's id.
    started: when the run was launched (epoch seconds).
    overwrite: `output.overwrite`.
    lock_timeout: `output.lock_timeout`, in seconds.
    baseline: the baseline as found at launch (its own files), copied into
      the scratch once the lock is taken; None without one.
    baseline_prefix: where its copy goes (`baseline_copy.names`).
    clock: the time now, in epoch seconds.
    launcher: the launching process, when the job runs inside it (a local
      runner): the lock names it, so that a run finding the process gone
      (killed) takes the lock over at once. None: the job's worker holds it
      as a job (`RunInfo.in_job`).
  """

  directory: str
  run_id: str
  started: float
  overwrite: bool
  lock_timeout: float
  baseline: Optional[Baseline] = None
  baseline_prefix: str = ""
  clock: Callable[[], float] = time.time
  launcher: Optional[ownership.RunInfo] = None


class _ClaimFn(beam.DoFn):
  """Takes the lock, copies the baseline, clears the earlier outputs."""

  def __init__(self, claim: JobClaim):
    self._claim = claim

  def process(self, unused_impulse):
    c = self._claim
    # Taken now, however long ago the job was launched (or its template
    # built): its age counts from here.
    run = dataclasses.replace(
        c.launcher or ownership.RunInfo.this_process(c.run_id, c.started,
                                                     in_job=True),
        refreshed=c.clock())
    held = ownership.claim(c.directory, run, overwrite=c.overwrite,
                           lock_timeout=c.lock_timeout, clock=c.clock)
    if c.baseline is not None:
      baseline_copy.copy(c.baseline, c.baseline_prefix)
    held.clear_previous()
    yield c.run_id


class ClaimOutputDir(beam.PTransform):
  """Outputs the run id once the job holds `output.dir` and has cleared
  the earlier outputs: a side input that the writes into `output.dir`
  wait for (`AfterClaim`)."""

  def __init__(self, claim: JobClaim):
    super().__init__()
    self._claim = claim

  def expand(self, pbegin):
    return (pbegin
            | "Impulse" >> beam.Create([None])
            | "TakeLock" >> beam.ParDo(_ClaimFn(self._claim)))


class AfterClaim(beam.PTransform):
  """Passes its input on once `claimed` (`ClaimOutputDir`) is computed."""

  def __init__(self, claimed: beam.PCollection):
    super().__init__()
    self._claimed = claimed

  def expand(self, pcoll):
    return pcoll | "WaitForClaim" >> beam.Map(
        lambda element, unused_run_id: element,
        unused_run_id=beam.pvalue.AsSingleton(self._claimed))


class _RefreshLockFn(beam.DoFn):
  """Passes its input on; refreshes the run's lock at most every
  `interval` seconds (of `clock`) from each DoFn instance."""

  def __init__(self, directory: str, run_id: str, interval: float,
               clock: Callable[[], float]):
    self._directory = directory
    self._run_id = run_id
    self._interval = interval
    self._clock = clock
    self._last = None

  def setup(self):
    self._last = None

  def process(self, element):
    now = self._clock()
    if self._last is None or now - self._last >= self._interval:
      self._last = now
      # Before the job's claim step, or once another run took the lock
      # over, the lock is not this run's: nothing is written. A lock that
      # cannot be read now costs no rows: the next batch tries again.
      try:
        ownership.refresh(self._directory, self._run_id, now,
                          min_age=self._interval)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("lossaudit: could not refresh the lock of %s: %s",
                        self._directory, e)
    yield element


class RefreshLock(beam.PTransform):
  """The heartbeat of a run's lock, on a PCollection that flows all through
  a long pass (the scored batches, the batches read back)."""

  def __init__(self, directory: str, run_id: str, lock_timeout: float,
               clock: Callable[[], float] = time.time):
    super().__init__()
    self._fn = _RefreshLockFn(directory, run_id, lock_timeout / 4, clock)

  def expand(self, pcoll):
    return pcoll | "Refresh" >> beam.ParDo(self._fn)
