"""Progress lines from the workers of a local run.

Each worker process keeps its own totals and prints a line to stderr at most
every `interval` seconds (`runtime.progress_seconds`), from the DoFns as they
work: the DirectRunner runs the whole pipeline inside `run()`, so nothing
outside the workers could ask. The scoring pass counts the examples scored;
each later pass over the spilled batches (the label-issue passes, the
flagging pass) counts the examples it has read back, of the total scored
(known once scoring is done), with its rate and the time it has left.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Dict, List, Optional


class Progress:
  """Totals of work done, and the progress line each time one is due.

  One line at most every `interval` seconds, whichever pass it is about.

  Args:
    interval: seconds between lines, at least.
    clock: seconds since any fixed point, read at start and on each `add`.
  """

  def __init__(self, interval: float,
               clock: Callable[[], float] = time.monotonic):
    self.interval = float(interval)
    self.clock = clock
    self._start = self._last = clock()
    self.scored = 0
    self.dead = 0
    # Per pass after scoring: [when it began, examples read back].
    self._passes: Dict[str, List[float]] = {}

  def _due(self) -> Optional[float]:
    """The time now if a line is due (and the next one is timed from
    now), else None."""
    now = self.clock()
    if now - self._last < self.interval:
      return None
    self._last = now
    return now

  def add(self, scored: int = 0, dead_lettered: int = 0) -> Optional[str]:
    """Counts work done while scoring; returns the progress line if one is
    due, else None."""
    self.scored += scored
    self.dead += dead_lettered
    now = self._due()
    if now is None:
      return None
    elapsed = now - self._start
    return (f"lossaudit: {self.scored:,} examples scored"
            f" ({self.scored / max(elapsed, 1e-9):,.0f}/s),"
            f" {self.dead:,} dead-lettered, {elapsed:.0f} s")

  def begin(self, name: str) -> None:
    """Notes that the pass `name` has begun (its rate counts from the first
    call)."""
    if name not in self._passes:
      self._passes[name] = [self.clock(), 0]

  def add_pass(self, name: str, done: int,
               total: Optional[int] = None) -> Optional[str]:
    """Counts `done` more examples read back by the pass `name`, of `total`
    (None: not known); returns the progress line if one is due, else
    None."""
    self.begin(name)
    counts = self._passes[name]
    counts[1] += done
    now = self._due()
    if now is None:
      return None
    began, done = counts
    elapsed = now - began
    rate = done / max(elapsed, 1e-9)
    line = f"lossaudit: {name}: {done:,}"
    if total is not None:
      line += f" of {total:,}"
    line += f" examples ({rate:,.0f}/s), {elapsed:.0f} s"
    if total is not None and rate > 0:
      line += f", ETA {max(total - done, 0) / rate:.0f} s"
    return line


_lock = threading.Lock()
_progress: Optional[Progress] = None


def enable(interval: Optional[float],
           clock: Callable[[], float] = time.monotonic) -> None:
  """Turns progress lines on in this process (None: off); once a process."""
  global _progress
  with _lock:
    if interval and _progress is None:
      _progress = Progress(interval, clock)


def reset() -> None:
  """Zeroes this process's totals (its interval and clock stay): a run
  started in a process that ran one before (a notebook, a test) counts
  from zero, as in a new process."""
  global _progress
  with _lock:
    if _progress is not None:
      _progress = Progress(_progress.interval, _progress.clock)


def add(scored: int = 0, dead_lettered: int = 0) -> None:
  """Counts work done; prints a progress line to stderr when one is due."""
  with _lock:
    line = None if _progress is None else _progress.add(scored,
                                                        dead_lettered)
  _print(line)


def begin(name: str) -> None:
  """Notes that the pass `name` has begun in this process."""
  with _lock:
    if _progress is not None:
      _progress.begin(name)


def add_pass(name: str, done: int, total: Optional[int] = None) -> None:
  """Counts examples read back by the pass `name` (of `total`); prints a
  progress line to stderr when one is due."""
  with _lock:
    line = (None if _progress is None
            else _progress.add_pass(name, done, total))
  _print(line)


def _print(line: Optional[str]) -> None:
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
    self.interval = float(interval)
    self.clock = clock
    self._start = self._last = clock()

  def tick(self, done: int) -> None:
    """`done` items of the step are done: prints a line if one is due."""
    now = self.clock()
    if now - self._last < self.interval:
      return
    self._last = now
    print(f"lossaudit: {self._what}: {done:,} of {self._total:,},"
          f" {now - self._start:.0f} s", file=sys.stderr, flush=True)
