"""`Timings`: time spent in the model and loss, summed over workers.

`ScoreBatches` emits one `Timings.of_batch(rows, seconds)` per batch read
(up to `max(batch_size, 8192)` rows, scored `batch_size` rows a call of the
model); they are merged into one for `summary.json` → `timings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict


@dataclasses.dataclass(frozen=True)
class Timings:
  """Scoring time over some batches.

  Attributes:
    batches: how many batches were scored.
    rows: how many rows they held.
    seconds: the seconds spent scoring them, summed.
    slowest: the seconds of the slowest batch.
  """

  batches: int = 0
  rows: int = 0
  seconds: float = 0.0
  slowest: float = 0.0

  @classmethod
  def of_batch(cls, rows: int, seconds: float) -> "Timings":
    """One batch of `rows` rows, scored in `seconds`."""
    return cls(batches=1, rows=rows, seconds=seconds, slowest=seconds)

  def merge(self, other: "Timings") -> "Timings":
    return Timings(self.batches + other.batches, self.rows + other.rows,
                   self.seconds + other.seconds,
                   max(self.slowest, other.slowest))

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
    }


# `merge_all` for `Timings`: the pipeline graph's combiner of the timings.
