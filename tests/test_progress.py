"""Progress lines on the DirectRunner and Beam metrics kept in summary.json.

When a line is due is timed by a fake clock the test moves on; the run
itself is not slowed down and no wall-clock time is asserted.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from lossaudit import progress
from lossaudit.pipelines import audit
from tests.helpers import FakeClock, base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r"^lossaudit: ([\d,]+) examples scored \(([\d,]+)/s\),"
                      r" (\d+) dead-lettered, (\d+) s$")


def test_a_line_is_due_each_interval_of_the_clock():
  clock = FakeClock()
  tracker = progress.Progress(1.0, clock)
  lines = []
  for batch in range(12):  # 12 batches of 250 rows, 0.5 s each.
    clock.advance(0.5)
    lines.append(tracker.add(250, dead_lettered=batch % 2))
  assert lines[0::2] == [None] * 6
  assert lines[1::2] == [
      f"lossaudit: {500 * s:,} examples scored (500/s), {s} dead-lettered,"
      f" {s} s" for s in range(1, 7)]
  assert all(PROGRESS.match(line) for line in lines[1::2])


def test_a_line_waits_a_whole_interval_after_the_last():
  clock = FakeClock()
  tracker = progress.Progress(5.0, clock)
  clock.advance(4.75)
  assert tracker.add(10) is None
  clock.advance(0.25)
  assert tracker.add(10) == (
      "lossaudit: 20 examples scored (4/s), 0 dead-lettered, 5 s")
  clock.advance(7.0)  # Late: the next is due 5 s after this one, not before.
  assert tracker.add(1_000_000).startswith("lossaudit: 1,000,020 examples")
  clock.advance(4.0)
  assert tracker.add() is None
  clock.advance(1.0)
  assert tracker.add() == ("lossaudit: 1,000,020 examples scored (58,825/s),"
                           " 0 dead-lettered, 17 s")


def test_the_process_prints_its_lines_to_stderr(monkeypatch, capsys):
  clock = FakeClock()
  monkeypatch.setattr(progress, "_progress", None)
  progress.add(5)  # Off until enabled: nothing printed.
  progress.enable(2.0, clock)
  progress.enable(0.5)  # Once a process: the first interval and clock stay.
  clock.advance(1.0)
  progress.add(100)
  clock.advance(1.0)
  progress.add(100, dead_lettered=3)
  assert capsys.readouterr().err == (
      "lossaudit: 200 examples scored (100/s), 3 dead-lettered, 2 s\n")


def test_a_line_at_most_every_10_s_by_default():
  from lossaudit.config import RuntimeConfig

  assert RuntimeConfig().progress_seconds == 10.0


def test_a_pass_after_scoring_tells_its_share_of_the_total_and_eta():
  clock = FakeClock()
  tracker = progress.Progress(10.0, clock)
  clock.advance(3.0)
  assert tracker.add(600) is None  # Scoring.
  clock.advance(7.0)
  assert tracker.add(400) == (
      "lossaudit: 1,000 examples scored (100/s), 0 dead-lettered, 10 s")
  tracker.begin("label issues, confident joint")
  for _ in range(4):  # 250 examples a second.
    clock.advance(2.0)
    assert tracker.add_pass("label issues, confident joint", 500,
                            total=3000) is None
  clock.advance(2.0)  # 10 s since the last line, whichever pass it told.
  assert tracker.add_pass("label issues, confident joint", 500, 3000) == (
      "lossaudit: label issues, confident joint: 2,500 of 3,000 examples"
      " (250/s), 10 s, ETA 2 s")
  tracker.begin("flagging")
  clock.advance(10.0)
  assert tracker.add_pass("flagging", 200) == (  # Total not known.
      "lossaudit: flagging: 200 examples (20/s), 10 s")
  clock.advance(9.0)
  assert tracker.add_pass("flagging", 3000, 3000) is None
  clock.advance(1.0)
  assert tracker.add_pass("flagging", 0, 3000) == (
      "lossaudit: flagging: 3,200 of 3,000 examples (160/s), 20 s, ETA 0 s")


class TickingClock:
  """A clock that moves on `step` seconds each time it is read."""

  def __init__(self, step: float):
    self.now, self.step = 0.0, step

  def __call__(self) -> float:
    self.now += self.step
    return self.now


PASS_LINE = re.compile(r"^lossaudit: ([a-z ,]+): ([\d,]+) of 3,000 examples"
                       r" \(([\d,]+)/s\), (\d+) s, ETA (\d+) s$")


def test_every_pass_of_a_run_prints_progress(monkeypatch, capsys, tmp_path,
                                             tfrecord_dir, classifier_path,
                                             write_config):
  # The run's steps read this process's tracker, whose clock moves on 5 s
  # each time it is read: a line is due every other reading.
  monkeypatch.setattr(progress, "_progress", None)
  progress.enable(10.0, TickingClock(5.0))
  config = base_config(tfrecord_dir / "*.gz", classifier_path,
                       tmp_path / "out", batch_size=100,
                       flag={"loss_quantile": 0.95,
                             "label_issues": "prune_by_noise_rate"})
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == 3000
  err = capsys.readouterr().err.splitlines()
  scoring = [m for m in map(PROGRESS.match, err) if m]
  passes = [m for m in map(PASS_LINE.match, err) if m]
  assert scoring and passes, err
  assert {m[1] for m in passes} == {"label issues, confident joint",
                                    "label issues, cell rankings",
                                    "flagging"}
  for m in passes:
    done, rate, seconds, eta = (int(m[i].replace(",", ""))
                                for i in range(2, 6))
    assert 0 < done <= 3000
    assert rate == pytest.approx(done / seconds, abs=1, rel=0.02)
    assert eta == pytest.approx((3000 - done) / (done / seconds), abs=1)
  # Never two lines less than 10 s apart.
  assert len(scoring) + len(passes) <= progress._progress.clock.now / 10


@pytest.mark.slow  # A whole run in a child; lines are unit-tested above.
def test_progress_lines_and_metrics(tmp_path, tfrecord_dir, classifier_path,
                                    write_config):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.gz", classifier_path, out,
                       runtime={"progress_seconds": 1e-9})
  result = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.audit", "--config",
       write_config(config)], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [PROGRESS.match(line) for line in result.stderr.splitlines()]
  lines = [m for m in lines if m]
  # A line is due after every batch: one worker process, 3 files of 1,000
  # rows, each read as one batch (scored 256 rows at a time).
  scored = [int(m.group(1).replace(",", "")) for m in lines]
  assert len(scored) == 3
  assert scored == sorted(scored) and scored[-1] == 3000

  summary = json.loads((out / "summary.json").read_text())
  metrics = summary["metrics"]
  assert metrics["counters"]["records_read"] == 3000
  assert metrics["counters"]["examples_scored"] == 3000
  assert metrics["counters"]["examples_flagged"] == summary["flagged"]["total"]
  latency = metrics["distributions"]["batch_latency_ms"]
  assert latency["count"] == summary["timings"]["batches"] == 3
  assert 0 <= latency["min"] <= latency["max"]
  assert "lossaudit: metrics: " in result.stdout
  assert re.search(r"batch latency: mean \d+\.\d ms, min \d+ ms, max \d+ ms"
                   r" over 3 batches", result.stdout)


def test_checking_many_input_files_prints_a_line_every_ten_seconds(
    tmp_path, capsys):
  from lossaudit import inputs

  data = tmp_path / "data"
  data.mkdir()
  for i in range(12):
    (data / f"part-{i:02d}.tfrecord").write_bytes(b"")
  pattern = str(data / "*.tfrecord")
  found = inputs.expand([pattern], str(tmp_path / "out"),
                        clock=TickingClock(4.0))
  assert len(found.files) == 12
  # Each file reads the clock once in each of the two checks: 4 s a file.
  lines = capsys.readouterr().err.splitlines()
  assert lines == [
      f"lossaudit: checking the files {pattern!r} matched: {done} of 12,"
      f" {seconds} s" for done, seconds in ((2, 12), (5, 24), (8, 36),
                                            (11, 48))] + [
      f"lossaudit: checking where the input files are: {done} of 12,"
      f" {seconds} s" for done, seconds in ((2, 12), (5, 24), (8, 36),
                                            (11, 48))]


def test_a_quick_check_prints_nothing(tmp_path, capsys):
  from lossaudit import inputs

  for i in range(3):
    (tmp_path / f"part-{i}.tfrecord").write_bytes(b"")
  inputs.expand([str(tmp_path / "*.tfrecord")], str(tmp_path / "out"),
                clock=TickingClock(1.0))
  assert capsys.readouterr().err == ""


def test_a_second_run_in_one_process_counts_from_zero(monkeypatch):
  monkeypatch.setattr(progress, "_progress", None)
  progress.enable(10.0, TickingClock(6.0))
  progress.add_pass("flagging", 2000, 3000)  # The first run's.
  progress.reset()
  found = progress._progress.add_pass("flagging", 500, 3000)
  assert found.startswith("lossaudit: flagging: 500 of 3,000 examples")
  assert progress._progress.interval == 10.0
