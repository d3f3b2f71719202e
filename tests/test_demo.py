"""The demo end to end: real digits, a trained model, flipped labels found."""

import json
import os

from pipelines import demo


def test_demo_finds_the_flipped_labels(tmp_path, capsys):
  out = tmp_path / "out"
  code = demo.main(["--output", str(out), "--data", str(tmp_path / "data"),
                    "--model", str(tmp_path / "demo.keras")])
  assert code == 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["examples_read"] == 899
  assert summary["examples_scored"] == 899
  truth = json.loads((tmp_path / "data" / "flipped_ids.json").read_text())
  assert len(truth["flipped_ids"]) == 90
  printed = capsys.readouterr().out
  assert "Flipped labels: 90 of 899" in printed
  precision = float(printed.split("precision ")[1].split(",")[0])
  recall = float(printed.split("recall ")[1].split()[0])
  assert precision >= 0.8 and recall >= 0.8
  for name in ("report.html", "losses", "flagged", "dead_letter"):
    assert os.path.exists(out / name)
