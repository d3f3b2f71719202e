"""Progress lines from the workers of a local run.

Each worker process keeps its own totals and prints a line to stderr at most
every `interval` seconds, from the DoFns as they work: the DirectRunner runs
the whole pipeline inside `run()`, so nothing outside the workers could ask.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional


class Progress:
  """Totals of work done, and the progress line each time one is due.

  Args:
    interval: seconds between lines, at least.
    clock: seconds since any fixed point, read at start and on each `add`.
  """

  def __init__(self, interval: float,
               clock: Callable[[], float] = time.monotonic):
    self._interval = float(interval)
    self._clock = clock
    self._start = self._last = clock()
    self.scored = 0
    self.dead = 0

  def add(self, scored: int = 0, dead_lettered: int = 0) -> Optional[str]:
    """Counts work done; returns the progress line if one is due, else
    None."""
    self.scored += scored
    self.dead += dead_lettered
    now = self._clock()
    if now - self._last < self._interval:
      return None
    self._last = now
    elapsed = now - self._start
    return (f"lossaudit: {self.scored:,} examples scored"
            f" ({self.scored / max(elapsed, 1e-9):,.0f}/s),"
            f" {self.dead:,} dead-lettered, {elapsed:.0f} s")


_lock = threading.Lock()
_progress: Optional[Progress] = None


def enable(interval: Optional[float],
           clock: Callable[[], float] = time.monotonic) -> None:
  """Turns progress lines on in this process (None: off); once a process."""
  global _progress
  with _lock:
    if interval and _progress is None:
      _progress = Progress(interval, clock)


def add(scored: int = 0, dead_lettered: int = 0) -> None:
  """Counts work done; prints a progress line to stderr when one is due."""
  with _lock:
    line = None if _progress is None else _progress.add(scored,
                                                        dead_lettered)
  if line is not None:
    print(line, file=sys.stderr, flush=True)


# Seconds between the lines of a long step before the run (checking input
# files, looking for the first records), at least.
CHECK_SECONDS = 10.0


class Ticker:
  """A progress line for a step done item by item before the run, printed
  to stderr at most every `interval` seconds (none for a quick step).

  Args:
    what: the step, e.g. "checking input files".
    total: how many items the step has.
    interval: seconds between lines, at least.
    clock: seconds since any fixed point, read at start and on each `tick`.
  """

  def __init__(self, what: str, total: int,
               interval: float = CHECK_SECONDS,
               clock: Callable[[], float] = time.monotonic):
    self._what = what
    self._total = total
    self._interval = float(interval)
    self._clock = clock
    self._start = self._last = clock()

  def tick(self, done: int) -> None:
    """`done` items of the step are done: prints a line if one is due."""
    now = self._clock()
    if now - self._last < self._interval:
      return
    self._last = now
    print(f"lossaudit: {self._what}: {done:,} of {self._total:,},"
          f" {now - self._start:.0f} s", file=sys.stderr, flush=True)
