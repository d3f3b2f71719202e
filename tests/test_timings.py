"""`Timings`: batch times summed, and `summary.json` → `timings`."""

import pytest

from lossaudit.merging import merge_all
from lossaudit.timings import Timings


def test_batches_sum_and_the_slowest_is_kept():
  total = merge_all([Timings.of_batch(256, 0.5), Timings.of_batch(100, 0.25),
                     Timings.of_batch(256, 0.75)], Timings())
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
  found = merge_all([], Timings()).to_dict(wall_seconds=0.0, scored=0)
  assert found["batches"] == 0
  # An int, as summary.json has always written it.
  assert found["scoring_seconds"] == 0
  assert isinstance(found["scoring_seconds"], int)
  assert found["mean_batch_ms"] is None
  assert found["examples_per_second"] is None
  assert found["slowest_batch_ms"] == pytest.approx(0.0)
