"""The nightly job under a scheduler, end to end (docs/nightly.md, "A
failed night stays failed").

- A failed gate stays failed: night 2 fails (exit 3) and hands back no
  `clean/` or `weights/`; the scheduler's retry fails the same way; `latest`
  skips the failed night, so night 3 is judged against night 1. With dated
  folders and with one fixed folder.
- New rows and regressions told apart over three nights that add rows.
- `clean/` as a dataset: pandas, pyarrow.dataset and tf.data read exactly
  the kept rows, under the input's own file names, night after night.

The nights are days of an injected clock; the model is a predictions
column (a model of its own is tested elsewhere).
"""

import datetime
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from lossaudit.pipelines import audit
from tests.helpers import predictions_config

K = 3
DAY = 24 * 3600
NIGHT1 = datetime.datetime(2026, 12, 1, 2, 30,
                           tzinfo=datetime.timezone.utc).timestamp()


def _clock(night: int):
  return lambda: NIGHT1 + (night - 1) * DAY


def _table(ids, wrong=()):
  """`id`, `label`, `p`: the model is sure (0.9) of class `index % K`; the
  label is that class unless the id is in `wrong`."""
  truth = np.array([int(i[1:]) % K for i in ids])
  probs = np.full((len(ids), K), 0.05, np.float32)
  probs[np.arange(len(ids)), truth] = 0.9
  label = np.where(np.isin(ids, list(wrong)), (truth + 1) % K, truth)
  return pa.table({"id": ids, "label": label.astype(np.int64),
                   "p": list(probs)})


def _config(pattern, out, fmt="parquet", **sections):
  config = predictions_config(pattern, out, fmt, gate={"baseline": "latest"})
  for key, value in sections.items():
    config[key].update(value)
  return config


def _summary(directory):
  with open(os.path.join(directory, "summary.json")) as f:
    return json.load(f)


IDS = [f"r{i}" for i in range(200)]


# Retries of a failed night in each layout, with -m slow (the default run's
# nightly scenarios: test_three_nights_tell_new_rows_from_regressions here,
# and tests/test_review_nights.py).
@pytest.mark.slow
@pytest.mark.parametrize("dated,named", [
    (True, False), (False, False), (False, True)])
def test_a_failed_night_stays_failed_through_retries(
    tmp_path, write_config, capsys, dated, named):
  """With dated folders; with one fixed folder and `latest`; with one fixed
  folder named as its own baseline (before its first run there is none)."""
  data = tmp_path / "data"
  data.mkdir()
  out = str(tmp_path / "runs" / ("{date}" if dated else "fixed"))
  config = write_config(_config(
      str(data / "*.parquet"), out,
      output={"clean": {}, "weights": {"scheme": "drop_flagged"}},
      gate={"max_new_flagged_fraction": 0.05,
            "baseline": out if named else "latest"}))

  def night(number, wrong):
    pq.write_table(_table(IDS, wrong), data / "part-0.parquet")
    code = audit.main(["--config", config], clock=_clock(number))
    directory = out.format(date=f"2026-12-0{number}")
    return code, directory, _summary(directory)

  code, d1, s1 = night(1, IDS[:4])
  assert code == 0 and s1["gate"] == {
      "baseline": None, "passed": True, "failures": [], "failed": [],
      "skipped": ["gate max_new_flagged_fraction skipped: no baseline run"]}
  assert sorted(os.listdir(os.path.join(d1, "clean"))) == ["part-0.parquet"]
  assert os.listdir(os.path.join(d1, "weights"))
  assert not os.path.exists(os.path.join(d1, ".scratch"))  # Stage emptied.
  # Night 2: 20 new wrong labels, 10% new flags against night 1.
  wrong2 = IDS[:4] + IDS[100:120]
  failures = ["gate max_new_flagged_fraction failed: 0.1 > 0.05, by 0.05"]
  for attempt in (1, 2):  # The scheduler retries the failed night.
    code, d2, s2 = night(2, wrong2)
    assert code == 3, attempt
    assert s2["gate"]["passed"] is False
    assert s2["gate"]["failures"] == failures, attempt
    assert s2["flagged"]["new"] == 20 and s2["flagged"]["persistent"] == 4
    assert not os.path.exists(os.path.join(d2, "clean"))
    assert not os.path.exists(os.path.join(d2, "weights"))
    assert s2["clean"]["written"] is False
    assert s2["clean"]["withheld_because"] == (
        "the gates failed (output.clean.when: passed): " + failures[0])
    assert s2["files"]["clean"] == [] and s2["files"]["weights"] == []
    page = open(os.path.join(d2, "report.html")).read()
    assert ('<p id="withheld"><strong>No clean/ or weights/ were handed'
            " back:</strong> the gates failed") in page
    if dated:
      assert s2["gate"]["baseline"] == d1
  assert capsys.readouterr().err.count(failures[0]) == 2
  # Night 3, fixed: judged against night 1, the newest night that passed.
  code, d3, s3 = night(3, IDS[:4] + IDS[100:102])
  assert code == 0
  assert s3["flagged"]["new"] == 2 and s3["flagged"]["persistent"] == 4
  assert s3["clean"]["written"] is True
  if dated:
    assert s3["gate"]["baseline"] == d1
    assert sorted(os.listdir(tmp_path / "runs")) == [
        "2026-12-01", "2026-12-02", "2026-12-03"]


def test_clean_when_always_hands_back_a_failed_run(tmp_path, write_config):
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(_table(IDS, IDS[:50]), data / "part-0.parquet")
  out = tmp_path / "out"
  config = write_config(_config(
      str(data / "*.parquet"), str(out),
      output={"clean": {"when": "always"}},
      gate={"baseline": None, "max_flagged_fraction": 0.1}))
  assert audit.main(["--config", config]) == 3
  summary = _summary(out)
  assert summary["clean"]["written"] is True
  assert summary["clean"]["withheld_because"] is None
  assert len(pd.read_parquet(out / "clean")) == 150


def test_three_nights_tell_new_rows_from_regressions(tmp_path, write_config):
  """Night 2 adds n0-n49, with 5 of them and 3 old rows wrong; night 3 adds
  m0-m29, with 4 of them and 6 more old rows wrong. The regression gate
  (new flags on ids the baseline scored / ids in both) passes night 2
  (3 / 200) and fails night 3 (6 / 250)."""
  data = tmp_path / "data"
  data.mkdir()
  out = str(tmp_path / "runs" / "{date}")
  new2 = [f"n{i}" for i in range(50)]
  new3 = [f"m{i}" for i in range(30)]
  nights = {
      1: (IDS, IDS[:3]),
      2: (IDS + new2, IDS[:3] + new2[:5] + IDS[50:53]),
      3: (IDS + new2 + new3,
          IDS[:3] + new2[:5] + IDS[50:53] + new3[:4] + IDS[60:66]),
  }
  config = write_config(_config(
      str(data / "*.parquet"), out, output={"write_losses": False},
      gate={"max_regression_fraction": 0.02}))
  summaries, codes = {}, []
  for number, (ids, wrong) in nights.items():
    pq.write_table(_table(ids, wrong), data / "part-0.parquet")
    codes.append(audit.main(["--config", config], clock=_clock(number)))
    directory = out.format(date=f"2026-12-0{number}")
    summaries[number] = _summary(directory)
    flagged = pd.read_parquet(os.path.join(directory, "flagged"))
    previous = set(nights[number - 1][0]) if number > 1 else set()
    assert dict(zip(flagged["id"], flagged["in_baseline"])) == {
        i: i in previous for i in wrong}, number
    # losses/ is off: the ids alone are kept, for the next night.
    kept = pd.read_parquet(os.path.join(directory, "scored_ids"))["id"]
    assert sorted(kept) == sorted(ids)
    assert not os.path.exists(os.path.join(directory, "losses"))
  assert codes == [0, 0, 3]
  counts = {n: {k: s["flagged"][k] for k in (
      "new", "new_rows", "regressions", "scored_in_both")}
            for n, s in summaries.items()}
  assert counts == {
      1: {"new": 3, "new_rows": 3, "regressions": 0, "scored_in_both": 0},
      2: {"new": 8, "new_rows": 5, "regressions": 3, "scored_in_both": 200},
      3: {"new": 10, "new_rows": 4, "regressions": 6, "scored_in_both": 250},
  }
  assert summaries[3]["gate"]["failures"] == [
      "gate max_regression_fraction failed: 0.024 > 0.02, by 0.004"]


def _write_tfrecord(path, table):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i, label, p in zip(table["id"].to_pylist(),
                           table["label"].to_pylist(), table["p"].to_pylist()):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[i.encode()])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(
              value=[label])),
          "p": tf.train.Feature(float_list=tf.train.FloatList(value=p)),
      })).SerializeToString())


@pytest.mark.slow  # Each night's clean/ is also tested in test_clean_dataset.
@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_clean_is_a_dataset_night_after_night(tmp_path, write_config, fmt):
  """Each night audits the night before's `clean/`: pandas and
  pyarrow.dataset (Parquet) or a tf.data glob (TFRecord) read exactly the
  kept rows, and the file names stay the input's."""
  suffix = ".parquet" if fmt == "parquet" else ".tfrecord"
  first = tmp_path / "data"
  first.mkdir()
  names = [f"part-{i}{suffix}" for i in range(2)]
  wrong = IDS[:6] + IDS[100:103]
  halves = [IDS[:100], IDS[100:]]
  for name, ids in zip(names, halves):
    table = _table(ids, wrong)
    if fmt == "parquet":
      pq.write_table(table, first / name)
    else:
      _write_tfrecord(first / name, table)
  out = str(tmp_path / "runs" / "{date}")
  pattern, kept = str(first / f"*{suffix}"), set(IDS)
  for night in (1, 2, 3):
    config = write_config(_config(
        pattern, out, fmt=fmt, output={"clean": {}},
        gate={"baseline": None}), name=f"night{night}.yaml")
    assert audit.main(["--config", config], clock=_clock(night)) == 0
    clean = os.path.join(out.format(date=f"2026-12-0{night}"), "clean")
    assert sorted(os.listdir(clean)) == names, night
    kept -= set(wrong)  # Night 1 drops them; then nothing is flagged.
    if fmt == "parquet":
      assert sorted(pd.read_parquet(clean)["id"]) == sorted(kept)
      assert sorted(ds.dataset(clean).to_table()["id"].to_pylist()) == (
          sorted(kept))
    else:
      records = tf.data.TFRecordDataset(tf.io.gfile.glob(
          os.path.join(clean, "*")))
      got = [tf.train.Example.FromString(r.numpy()).features.feature[
          "id"].bytes_list.value[0].decode() for r in records]
      assert sorted(got) == sorted(kept)
    pattern = os.path.join(clean, f"*{suffix}")


def test_a_baseline_rewritten_while_it_is_copied_stops_the_run(
    tmp_path, write_config, capsys, monkeypatch):
  """Another run completing in the baseline's folder while this run copies
  it: exit 2 naming gate.baseline, nothing of this run's folder touched."""
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(_table(IDS, IDS[:3]), data / "part-0.parquet")
  base, out = tmp_path / "base", tmp_path / "out"
  assert audit.main(["--config", write_config(_config(
      str(data / "*.parquet"), str(base), gate={"baseline": None}),
      name="base.yaml")]) == 0
  from apache_beam.io.filesystems import FileSystems
  copy = FileSystems.copy

  def copy_then_rewrite(sources, targets):
    copy(sources, targets)
    summary = _summary(base)
    summary["run_id"] = "20261202T023000Z-abcdef"
    (base / "summary.json").write_text(json.dumps(summary))

  monkeypatch.setattr(FileSystems, "copy", copy_then_rewrite)
  code = audit.main(["--config", write_config(_config(
      str(data / "*.parquet"), str(out), gate={"baseline": str(base)}))])
  assert code == 2
  # The last line (a progress line of the base run may come before it).
  assert capsys.readouterr().err.splitlines()[-1] == (
      "lossaudit: error: gate.baseline: expected a completed run that stays"
      " as it is while this run copies it; it changed (another run is"
      f" writing there?). Received: {str(base)!r}")
  assert not (out / "summary.json").exists()


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_a_regression_gate_without_the_baselines_ids_says_it_is_skipped(
    tmp_path, write_config, capsys):
  """A baseline that kept neither losses/ nor scored_ids/ (pruned, or from
  before scored_ids/): the gate is skipped, and the run says so."""
  data = tmp_path / "data"
  data.mkdir()
  out = str(tmp_path / "runs" / "{date}")
  config = write_config(_config(str(data / "*.parquet"), out, gate={
      "max_regression_fraction": 0.01}))
  for night in (1, 2):
    pq.write_table(_table(IDS, IDS[:night * 5]), data / "part-0.parquet")
    assert audit.main(["--config", config], clock=_clock(night)) == 0
    if night == 1:
      import shutil
      shutil.rmtree(tmp_path / "runs" / "2026-12-01" / "losses")
  second = _summary(tmp_path / "runs" / "2026-12-02")
  assert second["flagged"]["regressions"] is None
  line = ("gate max_regression_fraction skipped: new rows and regressions"
          " are unknown (the baseline wrote neither losses/ nor scored_ids/,"
          " or this run was not made against it)")
  assert second["gate"]["skipped"] == [line]
  assert f"lossaudit: warning: {line}\n" in capsys.readouterr().err
  flagged = pd.read_parquet(tmp_path / "runs" / "2026-12-02" / "flagged")
  assert flagged["in_baseline"].isna().all()


def test_a_baseline_another_run_is_writing_is_refused_saying_so(
    tmp_path, write_config, capsys):
  from lossaudit import ownership

  base = tmp_path / "base"
  base.mkdir()
  (base / ownership.MARKER).write_text("{}")
  (base / ownership.LOCK).write_text("{}")  # Cleared, being written.
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(_table(IDS), data / "part-0.parquet")
  config = write_config(_config(str(data / "*.parquet"), str(tmp_path / "o"),
                                gate={"baseline": str(base)}))
  assert audit.main(["--config", config]) == 2
  assert capsys.readouterr().err == (
      "lossaudit: error: gate.baseline: expected a completed run; another"
      " run is writing there now (it holds .lossaudit-lock.json): wait for"
      f" it to end, or name another run. Received: {str(base)!r}\n")


def test_latest_is_the_newest_by_the_runs_names_not_file_times(tmp_path):
  """A copied or touched older run keeps its place: runs are ordered by the
  date and run id in their names, then by their summary's time; a failed
  run is never the baseline."""
  from lossaudit import outputs

  runs = tmp_path / "runs"
  gates = {"2026-12-01-20261201T023000Z-aaaaaa": True,
           "2026-12-02-20261202T023000Z-bbbbbb": True,
           "2026-12-03-20261203T023000Z-cccccc": False}
  for i, (name, passed) in enumerate(gates.items()):
    (runs / name).mkdir(parents=True)
    (runs / name / "summary.json").write_text(json.dumps(
        {"gate": {"passed": passed}}))
    os.utime(runs / name / "summary.json", (3000 - i * 1000,) * 2)
  template = str(runs / "{date}-{run_id}")
  assert outputs.latest_complete_run(template) == str(
      runs / "2026-12-02-20261202T023000Z-bbbbbb")
  assert outputs.latest_complete_run(
      template, exclude=str(runs / "2026-12-02-20261202T023000Z-bbbbbb")
  ) == str(runs / "2026-12-01-20261201T023000Z-aaaaaa")
