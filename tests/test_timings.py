"""`Timings`: batch times summed, and `summary.json` → `timings`."""

import pytest

from lossaudit.timings import Timings, sum_timings


def test_batches_sum_and_the_slowest_is_kept():
  total = sum_timings([Timings.of_batch(256, 0.5), Timings.of_batch(100, 0.25),
                       Timings.of_batch(256, 0.75)])
  assert total == Timings(batches=3, rows=612, seconds=1.5, slowest=0.75)
  assert total.to_dict(wall_seconds=4.0, scored=600) == {
      "wall_seconds": 4.0,
      "examples_per_second": 150.0,
      "scoring_seconds": 1.5,
      "batches": 3,
      "mean_batch_ms": 500.0,
      "slowest_batch_ms": 750.0,
      "batch_rows": 612,
  }


def test_no_batches():
  found = sum_timings([]).to_dict(wall_seconds=0.0, scored=0)
  assert found["batches"] == 0
  assert found["mean_batch_ms"] is None
  assert found["examples_per_second"] is None
  assert found["slowest_batch_ms"] == pytest.approx(0.0)
