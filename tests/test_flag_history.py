"""Flag history over three nights: new, persistent and resolved flags,
`first_flagged` and `times_flagged` exactly as injected; the new-flags gate;
the same on gs://. And `lossaudit.history.join_bucket` on its own."""

import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import history
from lossaudit.pipelines import audit, compare
from tests.helpers import GCS_BUCKET, report_rows, upload

K = 3
N = 240
# Nights: the ids whose label is wrong that night. A: fixed after night 1;
# B: wrong on nights 1-2; C: wrong from night 2; E: wrong every night; D:
# wrong on night 3 only. Night 3 also drops c0 from the dataset.
A = [f"a{i}" for i in range(5)]
B = [f"b{i}" for i in range(4)]
C = [f"c{i}" for i in range(6)]
D = [f"d{i}" for i in range(3)]
E = [f"e{i}" for i in range(2)]
WRONG = {1: A + B + E, 2: B + C + E, 3: C[1:] + D + E}
DROPPED = {3: ["c0"]}


def _ids():
  return A + B + C + D + E + [f"r{i}" for i in range(N - 20)]


def _night_table(night):
  """`id`, `label`, `p`: a model sure (0.9) of class id-hash % K; the label
  is that class unless the id is wrong tonight."""
  ids = [i for i in _ids() if i not in DROPPED.get(night, [])]
  truth = np.array([sum(map(ord, i)) % K for i in ids])
  probs = np.full((len(ids), K), 0.05, np.float32)
  probs[np.arange(len(ids)), truth] = 0.9
  wrong = np.isin(ids, WRONG[night])
  label = np.where(wrong, (truth + 1) % K, truth)
  return pa.table({"id": ids, "label": label.astype(np.int64),
                   "p": list(probs)})


def _config(data, out, **gate):
  return {
      "input": {"pattern": data, "format": "parquet", "id_column": "id",
                "label_column": "label"},
      "model": {"predictions_column": "p"},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "flag": {"loss_quantile": None, "loss_threshold": 1.0},
      "output": {"dir": out},
      "gate": {"baseline": "latest", **gate},
  }


def _read(directory, kind):
  return pd.read_parquet(os.path.join(directory, kind)).set_index("id")


def _three_nights(root, write_config, out_dir, data_dir, put):
  """Runs the three nights; returns `[(run dir, summary)]` and night 3's
  exit code (its gate: at most 1% new flags)."""
  runs, codes = [], []
  for night in (1, 2, 3):
    local = root / f"night{night}.parquet"
    pq.write_table(_night_table(night), local)
    put(str(local), f"{data_dir}/part-0.parquet")
    gate = {"max_new_flagged_fraction": 0.01} if night == 3 else {}
    config = write_config(_config(f"{data_dir}/*.parquet",
                                  f"{out_dir}/{{run_id}}", **gate),
                          name=f"night{night}.yaml")
    codes.append(audit.main(["--config", config]))
    done = sorted(p for p in _list(out_dir) if p not in [r for r, _ in runs])
    runs.append((done[-1], json.loads(_cat(f"{done[-1]}/summary.json"))))
  return runs, codes


def _list(directory):
  if directory.startswith("gs://"):
    from apache_beam.io.filesystems import FileSystems
    found = FileSystems.match([f"{directory}/*/summary.json"])[0]
    return sorted(m.path[:-len("/summary.json")]
                  for m in found.metadata_list)
  return sorted(os.path.join(directory, d) for d in os.listdir(directory))


def _cat(path):
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.open(path) as f:
    return f.read().decode()


def _local_put(local, remote):
  os.makedirs(os.path.dirname(remote), exist_ok=True)
  with open(local, "rb") as src, open(remote, "wb") as dst:
    dst.write(src.read())


def _check(runs, codes, read):
  (d1, s1), (d2, s2), (d3, s3) = runs
  assert codes == [0, 0, 3]
  r1, r2, r3 = s1["run_id"], s2["run_id"], s3["run_id"]
  expected = {
      1: {i: ("new", r1, 1) for i in A + B + E},
      2: {**{i: ("persistent", r1, 2) for i in B},
          **{i: ("new", r2, 1) for i in C},
          **{i: ("persistent", r1, 2) for i in E}},
      3: {**{i: ("persistent", r2, 2) for i in C[1:]},
          **{i: ("new", r3, 1) for i in D},
          **{i: ("persistent", r1, 3) for i in E}},
  }
  for night, directory in ((1, d1), (2, d2), (3, d3)):
    flagged = read(directory, "flagged")
    got = {i: (r.status, r.first_flagged, int(r.times_flagged))
           for i, r in flagged.iterrows()}
    assert got == expected[night], night
  resolved2, resolved3 = read(d2, "resolved"), read(d3, "resolved")
  assert sorted(resolved2.index) == sorted(A)
  assert sorted(resolved3.index) == sorted(B)
  # Old reasons, today's loss (-log 0.9: right again), the old loss.
  assert all(list(r) == ["loss_threshold"] for r in resolved3["reasons"])
  np.testing.assert_allclose(resolved3["loss"], -np.log(0.9), rtol=1e-5)
  np.testing.assert_allclose(resolved3["baseline_loss"], -np.log(0.05),
                             rtol=1e-5)
  assert set(resolved3["first_flagged"]) == {r1}
  assert set(resolved3["times_flagged"]) == {2}
  counts = [{k: s["flagged"][k] for k in (
      "total", "new", "persistent", "resolved", "baseline_not_scored",
      "new_rows", "regressions", "scored_in_both")} for s in (s1, s2, s3)]
  # Every id but c0 is in every night: each new flag after night 1 is a
  # regression.
  assert counts == [
      {"total": 11, "new": 11, "persistent": 0, "resolved": 0,
       "baseline_not_scored": 0, "new_rows": 11, "regressions": 0,
       "scored_in_both": 0},
      {"total": 12, "new": 6, "persistent": 6, "resolved": 5,
       "baseline_not_scored": 0, "new_rows": 0, "regressions": 6,
       "scored_in_both": N},
      {"total": 10, "new": 3, "persistent": 7, "resolved": 4,
       "baseline_not_scored": 1, "new_rows": 0, "regressions": 3,
       "scored_in_both": N - 1},
  ]
  rate = 3 / s3["examples_scored"]
  assert s3["examples_scored"] == N - 1
  assert s3["gate"]["failed"] == [
      f"gate max_new_flagged_fraction failed: {rate:.4g} > 0.01, by"
      f" {rate - 0.01:.4g}"]
  return counts


@pytest.mark.slow
def test_three_nights_on_gcs(tmp_path, gcs, write_config, capsys):
  data = f"gs://{GCS_BUCKET}/history/data"
  out = f"gs://{GCS_BUCKET}/history/runs"

  def read(directory, kind):
    from apache_beam.io.filesystems import FileSystems
    files = FileSystems.match([f"{directory}/{kind}/part-*"])[0]
    tables = [pq.read_table(FileSystems.open(m.path))
              for m in files.metadata_list]
    return pa.concat_tables(tables).to_pandas().set_index("id")

  runs, codes = _three_nights(tmp_path, write_config, out, data, upload)
  _check(runs, codes, read)


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_three_nights(tmp_path, write_config, capsys):
  data, out = str(tmp_path / "data"), str(tmp_path / "runs")
  runs, codes = _three_nights(tmp_path, write_config, out, data, _local_put)
  counts = _check(runs, codes, _read)
  (d1, _), (d2, _), (d3, s3) = runs
  # drift.json and the report carry the counts; the top new flags are the
  # injected ones.
  found = json.loads(open(os.path.join(d3, "drift.json")).read())
  assert found["flag_history"] == {
      k: v for k, v in counts[2].items() if k != "total"}
  page = open(os.path.join(d3, "report.html")).read()
  assert '<table id="flag-history">' in page
  # One flagged table (no second one of the new flags): its new rows.
  assert 'id="new-flags"' not in page
  new = {row["id"] for row in report_rows(page) if row["status"] == "new"}
  assert sorted(i for i in D if i in new) == D
  # lossaudit compare works it out for runs made against other baselines.
  capsys.readouterr()
  code = compare.main([d1, d3, "--output", str(tmp_path / "d13.json"),
                       "--max-new-flagged-fraction", "0.05"])
  assert code == 0
  d13 = json.loads((tmp_path / "d13.json").read_text())
  # Night 1 → 3: E persists; C[1:] and D are new; A and B resolved.
  assert d13["flag_history"] == {"new": 8, "persistent": 2, "resolved": 9,
                                 "baseline_not_scored": 0, "new_rows": None,
                                 "regressions": None,
                                 "scored_in_both": None}
  assert "flags: 8 new, 2 persistent, 9 resolved" in capsys.readouterr().out


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_a_fixed_output_dir_is_its_own_baseline(tmp_path, write_config):
  """`gate.baseline: latest` with a fixed output.dir: the earlier outputs
  are cleared before the run, but its flags were kept for the join."""
  data = tmp_path / "data"
  data.mkdir()
  codes, summaries = [], []
  for night in (1, 2):
    pq.write_table(_night_table(night), data / "part-0.parquet")
    config = write_config(_config(str(data / "*.parquet"),
                                  str(tmp_path / "out")))
    codes.append(audit.main(["--config", config]))
    summaries.append(json.loads((tmp_path / "out" / "summary.json"
                                 ).read_text()))
  assert codes == [0, 0]
  assert summaries[1]["flagged"]["persistent"] == len(B + E)
  assert summaries[1]["flagged"]["resolved"] == len(A)
  assert not (tmp_path / "out" / ".scratch").exists() or not any(
      (tmp_path / "out" / ".scratch").rglob("*.parquet"))


def _flagged(ids, losses):
  return pa.table({"id": ids, "loss": losses,
                   "reasons": [["top_k"]] * len(ids)})


def test_join_bucket_new_persistent_resolved_and_not_scored():
  flagged = _flagged(["x", "y"], [5.0, 6.0])
  baseline = history.baseline_rows(pa.table({
      "id": ["y", "z", "w", "y"], "loss": [1.0, 2.0, 3.0, 9.0],
      "reasons": [["a"], ["b"], ["c"], ["d"]],
      "first_flagged": ["r0", "r1", "r1", "r9"],
      "times_flagged": [4, 1, 2, 7]}), "unused")
  scored = pa.table({"id": ["x", "y", "z"], "loss": [5.0, 6.0, 0.5]})
  joined = history.join_bucket(flagged, baseline, scored, "r2")
  assert joined.flagged.select(["id", "status", "first_flagged",
                                "times_flagged"]).to_pylist() == [
      {"id": "x", "status": "new", "first_flagged": "r2", "times_flagged": 1},
      {"id": "y", "status": "persistent", "first_flagged": "r0",
       "times_flagged": 5}]
  assert joined.resolved.to_pylist() == [
      {"id": "z", "loss": 0.5, "reasons": ["b"], "baseline_loss": 2.0,
       "first_flagged": "r1", "times_flagged": 1}]
  assert joined.counts == history.HistoryCounts(
      new=1, persistent=1, resolved=1, not_scored=1)


def test_join_bucket_tells_new_rows_from_regressions_per_id():
  """`r` is flagged 3 times (a duplicated id) and `n` once: one regressed
  id and one new row, whatever the duplicates; `in_baseline` per row."""
  flagged = _flagged(["r", "r", "r", "n", "p"], [5.0] * 5)
  baseline = history.baseline_rows(_flagged(["p"], [4.0]), "r0")
  scored = pa.table({"id": ["r", "r", "r", "n", "p", "q"],
                     "loss": [5.0] * 6})
  ids = pa.table({"id": ["p", "q", "r", "r", "gone"]})
  joined = history.join_bucket(flagged, baseline, scored, "r1", ids)
  assert joined.flagged.column("in_baseline").to_pylist() == [
      True, True, True, False, True]
  assert (joined.counts.new, joined.counts.regressions,
          joined.counts.new_rows, joined.counts.scored_in_both) == (
              4, 1, 1, 3)
  unknown = history.join_bucket(flagged, baseline, scored, "r1", None)
  assert unknown.flagged.column("in_baseline").null_count == 5


def test_a_baseline_without_history_was_first_flagged_by_its_run():
  rows = history.baseline_rows(_flagged(["q"], [1.0]), "r0")
  joined = history.join_bucket(_flagged(["q"], [2.0]), rows, None, "r1")
  assert joined.flagged.column("first_flagged").to_pylist() == ["r0"]
  assert joined.flagged.column("times_flagged").to_pylist() == [2]


def test_history_counts_merge():
  total = history.HistoryCounts(1, 2, 3, 4, 5, 6, 7).merge(
      history.HistoryCounts(10, 20, 30, 40, 50, 60, 70))
  assert total.to_dict() == {"new": 11, "persistent": 22, "resolved": 33,
                             "baseline_not_scored": 44, "new_rows": 55,
                             "regressions": 66, "scored_in_both": 77,
                             "reviewed": 0}
  assert total.to_dict(ids_known=False)["regressions"] is None


def _one_night(tmp_path, write_config, out, **input_keys):
  data = tmp_path / "data"
  data.mkdir(exist_ok=True)
  pq.write_table(_night_table(1), data / "part-0.parquet")
  config = _config(str(data / "*.parquet"), str(out))
  config["input"].update(input_keys)
  return audit.main(["--config", write_config(config)])


def _refused_line(capsys):
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: ") and err.count("\n") == 1, err
  return err[len("lossaudit: error: "):-1]


def test_a_damaged_baseline_is_refused_before_the_earlier_outputs_go(
    tmp_path, write_config, capsys):
  """A baseline `flagged/` file that is not Parquet: exit 2 naming
  gate.baseline, and the output.dir's earlier run is still whole."""
  base, out = tmp_path / "base", tmp_path / "out"
  assert _one_night(tmp_path, write_config, base) == 0
  assert _one_night(tmp_path, write_config, out) == 0
  (shard,) = (base / "flagged").glob("part-*.parquet")
  shard.write_text("not parquet")
  before = sorted(p.relative_to(out) for p in out.rglob("*"))
  config = _config(str(tmp_path / "data" / "*.parquet"), str(out))
  config["gate"]["baseline"] = str(base)
  capsys.readouterr()
  assert audit.main(["--config", write_config(config)]) == 2
  message = _refused_line(capsys)
  assert message.startswith(
      f"gate.baseline: expected the flagged/ files of a completed run;"
      f" 'flagged/{shard.name}' is not Parquet (ArrowInvalid: Parquet magic")
  assert message.endswith(f"). Received: {str(base)!r}")
  assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
  code = compare.main([str(base), str(out)])
  assert code == 2
  assert _refused_line(capsys).startswith(
      "compare: BASELINE_DIR: expected the flagged/ files of a completed"
      " run;")


def test_a_baseline_of_another_id_column_is_refused(tmp_path, write_config,
                                                    capsys):
  """Flags are matched by id: a baseline that used other ids would make
  every flag new (and fail a new-flags gate for nothing)."""
  base = tmp_path / "base"
  assert _one_night(tmp_path, write_config, base) == 0
  data = tmp_path / "data"
  table = _night_table(1)
  pq.write_table(table.append_column("num", pa.array(
      np.arange(table.num_rows))), data / "part-0.parquet")
  config = _config(str(data / "*.parquet"), str(tmp_path / "out"))
  config["input"]["id_column"] = "num"
  config["gate"]["baseline"] = str(base)
  capsys.readouterr()
  assert audit.main(["--config", write_config(config)]) == 2
  assert _refused_line(capsys) == (
      f"gate.baseline: expected a run with input.id_column 'num': flags are"
      f" matched by id, and the baseline's ids are of 'id'. Received:"
      f" {str(base)!r}")


def test_compare_does_not_overwrite_a_file_it_did_not_write(
    tmp_path, write_config, capsys):
  out = tmp_path / "out"
  assert _one_night(tmp_path, write_config, out) == 0
  users = tmp_path / "users.parquet"
  users.write_bytes(b"PAR1 the user's data")
  capsys.readouterr()
  assert compare.main([str(out), str(out), "--output", str(users)]) == 2
  assert _refused_line(capsys) == (
      "compare: --output: expected a new file, or a drift.json lossaudit"
      " wrote: the file there is something else, and compare does not"
      f" overwrite it. Received: {str(users)!r}")
  assert users.read_bytes() == b"PAR1 the user's data"
  drift_path = tmp_path / "drift.json"
  for _ in range(2):  # A new file, then its own earlier output.
    assert compare.main([str(out), str(out), "--output",
                         str(drift_path)]) == 0
  assert json.loads(drift_path.read_text())["baseline"] == str(out)


class _StoppedPipeline(beam.Pipeline):
  """A pipeline stopped as it starts: after the earlier outputs went."""

  def run(self, test_runner_api="AUTO"):
    raise KeyboardInterrupt


@pytest.mark.slow  # A scenario variant; the default suite keeps its core.
def test_a_run_stopped_after_clearing_its_own_baseline_keeps_the_history(
    tmp_path, write_config):
  """A fixed output.dir is its own baseline: a run stopped once it has
  cleared the earlier outputs keeps their flags and summary in its scratch,
  and the next run takes its history from that copy."""
  data, out = tmp_path / "data", tmp_path / "out"
  data.mkdir()

  def night(n, **kw):
    pq.write_table(_night_table(n), data / "part-0.parquet")
    config = write_config(_config(str(data / "*.parquet"), str(out)))
    return audit.run(["--config", config], **kw)

  first = night(1)
  with pytest.raises(KeyboardInterrupt):
    night(2, test_pipeline=_StoppedPipeline())
  assert not (out / "summary.json").exists()
  (kept,) = (out / ".scratch").glob("*/baseline-flagged-summary.json")
  assert json.loads(kept.read_text())["run_id"] == first["run_id"]
  second = night(2)
  assert second["flag_history"]["baseline_run_id"] == first["run_id"]
  assert second["flagged"]["persistent"] == len(B + E)
  assert second["flagged"]["resolved"] == len(A)
  flagged = _read(str(out), "flagged")
  assert set(flagged.loc[B + E, "first_flagged"]) == {first["run_id"]}
  assert set(flagged.loc[B + E, "times_flagged"]) == {2}
  assert not list((out / ".scratch").rglob("*.json"))
