"""Progress lines on the DirectRunner and Beam metrics kept in summary.json."""

import json
import os
import re
import subprocess
import sys

from tests.conftest import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r"^lossaudit: ([\d,]+) examples scored \(([\d,]+)/s\),"
                      r" (\d+) dead-lettered, (\d+) s$")


def test_progress_lines_and_metrics(tmp_path, tfrecord_dir, classifier_path,
                                    write_config):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.gz", classifier_path, out,
                       loss={"custom": "tests.custom_losses:slow_nll"},
                       runtime={"progress_seconds": 1.0})
  result = subprocess.run(
      [sys.executable, "-m", "lossaudit.pipelines.audit", "--config",
       write_config(config)], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [PROGRESS.match(line) for line in result.stderr.splitlines()]
  lines = [m for m in lines if m]
  assert len(lines) >= 3  # 12 batches of 0.5 s, a line a second.
  scored = [int(m.group(1).replace(",", "")) for m in lines]
  assert scored == sorted(scored) and 0 < scored[-1] <= 3000

  summary = json.loads((out / "summary.json").read_text())
  metrics = summary["metrics"]
  assert metrics["counters"]["records_read"] == 3000
  assert metrics["counters"]["examples_scored"] == 3000
  assert metrics["counters"]["examples_flagged"] == summary["flagged"]["total"]
  latency = metrics["distributions"]["batch_latency_ms"]
  assert latency["count"] == summary["timings"]["batches"] == 12
  assert latency["min"] >= 500
  assert "lossaudit: metrics: " in result.stdout
  assert re.search(r"batch latency: mean \d+\.\d ms, min \d+ ms, max \d+ ms"
                   r" over 12 batches", result.stdout)
