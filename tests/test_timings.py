"""`Timings`: batch times summed, and `summary.json` → `timings`."""

import time

import pytest

from lossaudit.merging import merge_all
from lossaudit.timings import StartupTimes, Timings, process_start_time


def test_batches_sum_and_the_slowest_is_kept():
  total = merge_all([Timings.of_batch(256, 0.5, 1000.25),
                     Timings.of_batch(100, 0.25, 999.5),
                     Timings.of_batch(256, 0.75, 1001.0)], Timings())
  assert total == Timings(batches=3, rows=612, seconds=1.5, slowest=0.75,
                          first_finished=999.5)
  assert total.to_dict(wall_seconds=4.0, scored=600) == {
      "wall_seconds": 4.0,
      "examples_per_second": 150.0,
      "scoring_seconds": 1.5,
      "batches": 3,
      "mean_batch_ms": 500.0,
      "slowest_batch_ms": 750.0,
      "batch_rows": 612,
      "first_batch_time": 999.5,
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
  assert found["first_batch_time"] is None


def test_startup_steps_are_laps_of_the_clock():
  ticks = iter([10.0, 10.25, 11.0, 11.0, 13.5])
  startup = StartupTimes(clock=lambda: next(ticks))
  for step in ("config", "glob", "model_load", "graph"):
    startup.lap(step)
  # The process started at 100.0, run() at 100.5; the steps took 3.5 s, so
  # the pipeline started at 104.0 and its first batch was scored at 105.25:
  # 4.75 s after run() began (as `wall_seconds`, from run()).
  assert startup.to_dict(100.0, 100.5, 105.25) == {
      "before_run": 0.5, "config": 0.25, "glob": 0.75, "model_load": 0.0,
      "graph": 2.5, "to_first_batch": 1.25, "total": 4.75}
  assert startup.to_dict(None, 100.5, None) == {
      "before_run": None, "config": 0.25, "glob": 0.75, "model_load": 0.0,
      "graph": 2.5, "to_first_batch": None, "total": None}


def test_a_lap_of_a_step_again_adds_to_it():
  ticks = iter([0.0, 1.0, 1.5, 4.0])
  startup = StartupTimes(clock=lambda: next(ticks))
  startup.lap("probe")
  startup.lap("graph")
  startup.lap("probe")
  assert startup.steps == {"probe": 3.5, "graph": 0.5}


def test_process_start_time_is_before_now():
  started = process_start_time()
  if started is None:
    pytest.skip("no /proc here")
  # This process began before the test, within the test session's life.
  assert started <= time.time()
  assert started > time.time() - 24 * 3600
