"""`Timings`: time spent in the model and loss, summed over workers; and
`StartupTimes`: where a run's start-up went.

`ScoreBatches` emits one `Timings.of_batch(rows, seconds, finished)` per
batch read (up to `max(batch_size, 8192)` rows, scored `batch_size` rows a
call of the model); they are merged into one for `summary.json` →
`timings`. The launcher times its own steps with `StartupTimes` and adds
them as `timings.startup` once the run is done.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, Optional


@dataclasses.dataclass(frozen=True)
class Timings:
  """Scoring time over some batches.

  Attributes:
    batches: how many batches were scored.
    rows: how many rows they held.
    seconds: the seconds spent scoring them, summed.
    slowest: the seconds of the slowest batch.
    first_finished: when the first of them was scored, in seconds since the
      epoch (inf: none was).
  """

  batches: int = 0
  rows: int = 0
  seconds: float = 0.0
  slowest: float = 0.0
  first_finished: float = math.inf

  @classmethod
  def of_batch(cls, rows: int, seconds: float,
               finished: float = math.inf) -> "Timings":
    """One batch of `rows` rows, scored in `seconds`, by `finished` (seconds
    since the epoch)."""
    return cls(batches=1, rows=rows, seconds=seconds, slowest=seconds,
               first_finished=finished)

  def merge(self, other: "Timings") -> "Timings":
    return Timings(self.batches + other.batches, self.rows + other.rows,
                   self.seconds + other.seconds,
                   max(self.slowest, other.slowest),
                   min(self.first_finished, other.first_finished))

  def to_dict(self, wall_seconds: float, scored: int) -> Dict[str, Any]:
    """`timings` in `summary.json`.

    Args:
      wall_seconds: the run's seconds, start to summary.
      scored: examples scored.
    """
    return {
        "wall_seconds": round(wall_seconds, 3),
        "examples_per_second": (round(scored / wall_seconds, 1)
                                if wall_seconds else None),
        # Int 0 when nothing was scored, as summary.json always wrote it.
        "scoring_seconds": round(self.seconds, 3) if self.batches else 0,
        "batches": self.batches,
        "mean_batch_ms": (round(1000 * self.seconds / self.batches, 3)
                          if self.batches else None),
        "slowest_batch_ms": round(1000 * self.slowest, 3),
        "batch_rows": self.rows,
        "first_batch_time": (round(self.first_finished, 3)
                             if math.isfinite(self.first_finished) else None),
    }


def process_start_time() -> Optional[float]:
  """When this process started, in seconds since the epoch (to 0.01 s):
  from `/proc` on Linux, None elsewhere."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      # Field 22, after the parenthesised command name: clock ticks from boot.
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return None
  return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


class StartupTimes:
  """Seconds of each start-up step of a run, in the order they happened.

  `lap(step)` ends `step`: it took the time since the last lap (or since
  the stopwatch was made).

  Args:
    clock: seconds, for durations (`time.perf_counter`).
  """

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._last = clock()
    self.steps: Dict[str, float] = {}

  def lap(self, step: str) -> None:
    now = self._clock()
    self.steps[step] = self.steps.get(step, 0.0) + now - self._last
    self._last = now

  def to_dict(self, started: Optional[float], run_started: float,
              first_batch: Optional[float]) -> Dict[str, Any]:
    """`timings.startup` in `summary.json`: each step's seconds, and

    - `before_run`: from the process start to `run()` (the interpreter and
      the imports before it); None where the start is unknown;
    - `to_first_batch`: from the pipeline's start to the end of the first
      scored batch (the runner's start-up, reading, the first model call);
    - `total`: from `run()` to that batch: the steps and `to_first_batch`.
      `timings.wall_seconds` counts from `run()` too, so `total` never
      exceeds it; the command's own start is `before_run` earlier.

    Args:
      started: when the process started (`process_start_time`), or None.
      run_started: when `run()` began; seconds since the epoch, like the
        others.
      first_batch: when the first batch was scored (`first_batch_time`), or
        None.
    """
    pipeline_started = run_started + sum(self.steps.values())
    found: Dict[str, Any] = {
        "before_run": (round(run_started - started, 3)
                       if started is not None else None)}
    found.update({k: round(v, 3) for k, v in self.steps.items()})
    found["to_first_batch"] = (round(first_batch - pipeline_started, 3)
                               if first_batch is not None else None)
    found["total"] = (round(first_batch - run_started, 3)
                      if first_batch is not None else None)
    return found


# `merge_all` for `Timings`: the pipeline graph's combiner of the timings.
