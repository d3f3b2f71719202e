"""Decisions that stick: `clean/` exactly as decided, and three nights in
which a row decided `keep` is `reviewed`, never a new flag."""

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit.pipelines import audit
from tests.helpers import run_audit

K = 3
N = 60
WRONG = ("id007", "id020", "id033")  # Given a wrong label: flagged.


def _table(ids, relabelled=None):
  """`id`, `label`, `p`: the model is sure (0.9) of class index % K; the
  label is that class but for `WRONG` (one class on) and `relabelled`
  (`{id: label}`)."""
  index = np.array([int(i[2:]) for i in ids])
  truth = index % K
  probs = np.full((len(ids), K), 0.05, np.float32)
  probs[np.arange(len(ids)), truth] = 0.9
  label = np.where(np.isin(ids, WRONG), (truth + 1) % K, truth)
  for row_id, value in (relabelled or {}).items():
    label[ids.index(row_id)] = value
  return pa.table({"id": ids, "label": label.astype(np.int64),
                   "p": pa.FixedSizeListArray.from_arrays(
                       pa.array(probs.reshape(-1)), K),
                   "note": [f"row {i}" for i in ids]})


def _ids(n=N):
  return [f"id{i:03d}" for i in range(n)]


def _config(data, out, **sections):
  config = {
      "input": {"pattern": data, "format": "parquet", "id_column": "id",
                "label_column": "label"},
      "model": {"predictions_column": "p"},
      "loss": {"name": "sparse_categorical_crossentropy"},
      "flag": {"loss_quantile": None, "loss_threshold": 1.0},
      "output": {"dir": out, "clean": {}},
  }
  for key, value in sections.items():
    config.setdefault(key, {}).update(value)
  return config


def test_clean_is_exactly_as_decided(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  ids = _ids()
  pq.write_table(_table(ids[:30]), data / "part-0.parquet")
  pq.write_table(_table(ids[30:]), data / "part-1.parquet")
  decided = tmp_path / "decisions.csv"
  # Flagged: id007 kept, id020 relabelled to 2; not flagged: id001 dropped,
  # id002 relabelled to 0; ghost is in no file.
  decided.write_text("id,action,label\n"
                     "id007,keep,\n"
                     "id020,relabel,2\n"
                     "id001,drop,\n"
                     "id002,relabel,0\n"
                     "ghost,drop,\n")
  out = tmp_path / "out"
  summary = run_audit(_config(str(data / "*.parquet"), str(out), output={
      "clean": {"decisions": str(decided)}}))
  assert sorted(pd.read_parquet(out / "flagged")["id"]) == list(WRONG)
  clean = pd.concat([pd.read_parquet(out / "clean" / name)
                     for name in ("part-0.parquet", "part-1.parquet")])
  truth = {i: int(i[2:]) % K for i in ids}
  given = {i: (truth[i] + 1) % K if i in WRONG else truth[i] for i in ids}
  expected = {i: given[i] for i in ids if i not in ("id033", "id001")}
  expected.update(id020=2, id002=0)
  assert dict(zip(clean["id"], clean["label"])) == expected
  assert len(clean) == N - 2
  assert list(clean["note"])[:3] == ["row id000", "row id002", "row id003"]
  relabelled = pd.read_parquet(out / "relabelled").sort_values("id")
  assert relabelled[["id", "given_label", "suggested_label"]].to_dict(
      "records") == [
          {"id": "id002", "given_label": 2, "suggested_label": 0},
          {"id": "id020", "given_label": 0, "suggested_label": 2}]
  assert summary["clean"]["kept"] == N - 2
  assert summary["clean"]["dropped"] == 2
  assert summary["clean"]["relabelled"] == 2
  assert summary["clean"]["decisions_applied"] == {
      "total": 4, "keep": 1, "drop": 1, "relabel": 2, "stale": 0}
  assert summary["clean"]["decisions_not_found"] == {"count": 1,
                                                     "ids": ["ghost"]}
  page = (out / "report.html").read_text()
  table = re.search(r'<table id="decisions">(.*?)</table>', page).group(1)
  assert re.findall(r"<td>(.*?)</td>", table) == ["1", "1", "2", "0", "4"]
  assert "1 decided ids are not in the\ndata, such as: ghost." in page
  stuck = pq.read_table(out / "decisions.parquet").to_pylist()
  run_id = summary["run_id"]
  assert sorted(stuck, key=lambda r: r["id"]) == [
      {"id": "ghost", "action": "drop", "label": None, "given_label": None,
       "run_id": None},
      {"id": "id001", "action": "drop", "label": None, "given_label": 1,
       "run_id": run_id},
      {"id": "id002", "action": "relabel", "label": 0, "given_label": 2,
       "run_id": run_id},
      {"id": "id007", "action": "keep", "label": None, "given_label": 2,
       "run_id": run_id},
      {"id": "id020", "action": "relabel", "label": 2, "given_label": 0,
       "run_id": run_id}]
  assert summary["files"]["clean"]


def test_a_bad_decisions_file_exits_2_naming_the_line(tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(_table(_ids()), data / "part-0.parquet")
  decided = tmp_path / "decisions.csv"
  decided.write_text("id,action,label\nid001,relabel,5\n")
  run_audit(_config(str(data / "*.parquet"), str(tmp_path / "out"), output={
      "clean": {"decisions": str(decided)}}), exit_code=2)
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.endswith(
      f"output.clean.decisions: {decided}: line 2: expected a class index"
      " from 0 to 2. Received: '5'"), err


def test_three_nights_a_kept_row_is_reviewed_not_new(tmp_path, write_config):
  """Night 1 decides `keep` for id059 before it is in the data; night 2
  adds it, flagged, with no decisions file (they stick in
  decisions.parquet): counted as new it would fail
  max_new_flagged_fraction. Night 3 changes id033's label, decided keep on
  night 2 on its old label: flagged again, that decision is stale."""
  data, out = tmp_path / "data", tmp_path / "out"
  data.mkdir()
  decided = tmp_path / "decisions.csv"
  decided.write_text("id,action,label\nid059,keep,\n")
  nights = {
      1: (_ids(N - 1), {"clean": {"decisions": str(decided)}}),
      2: (_ids(), {}),
      3: (_ids(), {}),
  }
  wrong = set(WRONG) | {"id059"}
  summaries = []
  for night, (ids, output) in nights.items():
    relabelled = {"id033": 2} if night == 3 else None
    table = _table(ids, relabelled)
    if "id059" in ids:  # Given a wrong label too.
      labels = table.column("label").to_numpy().copy()
      labels[ids.index("id059")] = (59 % K + 1) % K
      table = table.set_column(1, "label", pa.array(labels))
    pq.write_table(table, data / "part-0.parquet")
    if night == 2:
      decided.write_text("id,action,label\nid033,keep,\n")
      output = {"clean": {"decisions": str(decided)}}
    config = _config(str(data / "*.parquet"), str(out), output=output,
                     gate={"baseline": "latest",
                           "max_new_flagged_fraction": 0.5 / N})
    if night == 1:  # Every flag is new the first night.
      config["gate"].pop("max_new_flagged_fraction")
    path = write_config(config, name=f"night{night}.yaml")
    assert audit.main(["--config", path]) == 0, f"night {night}"
    summary = json.loads((out / "summary.json").read_text())
    flagged = pd.read_parquet(out / "flagged").set_index("id")
    summaries.append((summary, flagged))
  (s1, f1), (s2, f2), (s3, f3) = summaries
  assert set(f1.index) == set(WRONG)
  assert set(f1["status"]) == {"new"}
  assert s1["clean"]["decisions_not_found"] == {"count": 1,
                                                "ids": ["id059"]}
  # Night 2: id059 is flagged on a row night 1 never had; reviewed.
  assert set(f2.index) == wrong
  assert f2.loc["id059", "status"] == "reviewed"
  assert f2.loc["id033", "status"] == "reviewed"
  assert s2["flagged"]["new"] == 0
  assert s2["flagged"]["reviewed"] == 2
  assert s2["flagged"]["persistent"] == 2
  assert s2["gate"]["passed"]
  assert s2["clean"]["decisions_applied"]["keep"] == 2
  # Night 3: id059 still reviewed (no decisions file names it since night
  # 1); id033's label changed since its decision: stale, persistent again.
  assert set(f3.index) == wrong
  assert f3.loc["id059", "status"] == "reviewed"
  assert f3.loc["id033", "status"] == "persistent"
  assert s3["flagged"]["reviewed"] == 1
  assert s3["flagged"]["new"] == 0
  assert s3["clean"]["decisions_applied"] == {
      "total": 1, "keep": 1, "drop": 0, "relabel": 0, "stale": 1}
  stuck = {r["id"]: r for r in pq.read_table(
      out / "decisions.parquet").to_pylist()}
  assert stuck["id059"]["run_id"] == s2["run_id"]
  assert stuck["id059"]["given_label"] == (59 % K + 1) % K
  assert stuck["id033"]["run_id"] == s2["run_id"]
  assert stuck["id033"]["given_label"] == (33 % K + 1) % K
  clean = pd.concat([pd.read_parquet(p) for p in (out / "clean").iterdir()])
  assert "id059" in set(clean["id"])
  assert "id033" not in set(clean["id"])  # Stale: the flags drop it.


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fixed", "per_run"])
def test_decisions_of_a_night_that_failed_its_gates_still_stick(
    tmp_path, write_config, layout):
  """Night 2 brings decisions and fails a gate (exit 3); night 3 passes
  with no decisions file: night 2's decisions are in force, though
  `latest` judges night 3 against night 1."""
  data = tmp_path / "data"
  data.mkdir()
  pq.write_table(_table(_ids()), data / "part-0.parquet")
  out = tmp_path / ("out" if layout == "fixed" else "runs/{run_id}")
  decided = tmp_path / "decisions.csv"
  decided.write_text(f"id,action,label\n{WRONG[0]},keep,\nid005,drop,\n")
  nights = [({}, {}, 0),
            ({"clean": {"decisions": str(decided)}},
             {"max_flagged_fraction": 0.0}, 3),
            ({}, {}, 0)]
  for night, (output, gate, code) in enumerate(nights, 1):
    config = _config(str(data / "*.parquet"), str(out),
                     output={"clean": {}, **output},
                     gate={"baseline": "latest", **gate})
    path = write_config(config, name=f"night{night}.yaml")
    assert audit.main(["--config", path]) == code, f"night {night}"
  last = (out if layout == "fixed" else max(
      (tmp_path / "runs").iterdir(), key=lambda d: d.name))
  summary = json.loads((last / "summary.json").read_text())
  assert summary["clean"]["decisions_applied"]["keep"] == 1
  assert summary["clean"]["decisions_applied"]["drop"] == 1
  flagged = pd.read_parquet(last / "flagged").set_index("id")
  assert flagged.loc[WRONG[0], "status"] == "reviewed"
  clean = pd.concat([pd.read_parquet(p) for p in (last / "clean").iterdir()])
  assert WRONG[0] in set(clean["id"]) and "id005" not in set(clean["id"])
