"""Class names (`input.label_vocabulary`) beside class ids in every output.

One tiny softmax model scores the same 240 examples twice: once with
integer labels, once with the same labels as class names. The flags must
not change; the names must appear in `flagged/`, `summary.json`,
`drift.json` and `report.html`.
"""

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cleanlab.filter import find_label_issues

from lossaudit import datasets, preflight, report
from lossaudit.config import load_config
from lossaudit.pipelines import audit, compare
from lossaudit.transforms.flag import FlagExamples, flagged_schema
from tests.helpers import base_config, noisy_probs, report_data, report_rows

# Not in sorted order, so ids follow the vocabulary, not the alphabet; "r&b"
# must be escaped in HTML.
VOCABULARY = ["zebra", "apple", "r&b"]
NUM_EXAMPLES = 240


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The two runs (int labels, then names), their inputs and directories."""
  import keras

  root = tmp_path_factory.mktemp("class_names")
  probs, given, _ = noisy_probs(NUM_EXAMPLES, len(VOCABULARY), 0.15, seed=3)
  logits = np.log(probs.astype(np.float64)).astype(np.float32)
  ids = np.array([f"c{i:03d}" for i in range(NUM_EXAMPLES)])
  datasets.write_parquet(str(root / "ints"), {
      "id": ids, "x": logits, "label": given.astype(np.int64)}, num_shards=1)
  datasets.write_parquet(str(root / "names"), {
      "id": ids, "x": logits,
      "label": np.array(VOCABULARY, dtype=object)[given]}, num_shards=1)
  keras.utils.set_random_seed(0)
  inputs = keras.Input((len(VOCABULARY),), name="x")
  model = keras.Model(inputs, keras.layers.Activation(
      "softmax", name="probs")(inputs))
  model.save(str(root / "softmax.keras"))
  flag = {"loss_quantile": 0.9, "label_issues": "confident_learning"}
  summaries = {}
  for name, vocabulary in (("ints", None), ("names", VOCABULARY)):
    config = base_config(
        root / name / "*.parquet", root / "softmax.keras", root / f"out_{name}",
        input={"format": "parquet", "label_vocabulary": vocabulary},
        flag=flag)
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(config))
    summaries[name] = audit.run(["--config", str(path)])
  return dict(root=root, probs=probs, given=given, ids=ids,
              summaries=summaries)


def _flagged(runs, name):
  frame = pd.read_parquet(runs["root"] / f"out_{name}" / "flagged")
  return frame.sort_values("id").reset_index(drop=True)


def test_names_flag_the_same_examples_as_ids(runs):
  ints, names = _flagged(runs, "ints"), _flagged(runs, "names")
  assert len(ints) > 0
  pd.testing.assert_series_equal(ints["id"], names["id"])
  assert ints["reasons"].map(sorted).tolist() == (
      names["reasons"].map(sorted).tolist())
  for column in ("given_label", "predicted_label", "suggested_label"):
    pd.testing.assert_series_equal(ints[column], names[column])
  reasons = names["reasons"].map(set)
  assert reasons.map(lambda r: "loss_quantile" in r).any()
  assert reasons.map(lambda r: "label_issue" in r).any()
  # loss_quantile flags the highest losses: -log p(given), computed here.
  probs, given, ids = runs["probs"], runs["given"], runs["ids"]
  loss = -np.log(probs[np.arange(len(given)), given].astype(np.float64))
  by_loss = ids[np.argsort(-loss)]
  high = set(names["id"][reasons.map(lambda r: "loss_quantile" in r)])
  assert high == set(by_loss[:len(high)])
  # label_issue: cleanlab's confident learning on the same probabilities.
  expected = set(ids[find_label_issues(given, probs,
                                       filter_by="confident_learning")])
  issues = set(names["id"][reasons.map(lambda r: "label_issue" in r)])
  assert len(issues & expected) >= 0.9 * len(issues | expected)


def test_flagged_rows_carry_class_names(runs):
  names = _flagged(runs, "names")
  given = dict(zip(runs["ids"], runs["given"]))
  assert names["given_class"].tolist() == [
      VOCABULARY[given[i]] for i in names["id"]]
  assert names["predicted_class"].tolist() == [
      VOCABULARY[k] for k in names["predicted_label"]]
  issue = names["suggested_label"].notna()
  assert issue.any() and not issue.all()
  assert names["suggested_class"][issue].tolist() == [
      VOCABULARY[int(k)] for k in names["suggested_label"][issue]]
  assert names["suggested_class"][~issue].isna().all()
  ints = _flagged(runs, "ints")
  assert not {"given_class", "predicted_class", "suggested_class"} & set(
      ints.columns)


def test_summary_records_class_names_and_computed_from(runs):
  names, ints = runs["summaries"]["names"], runs["summaries"]["ints"]
  assert names["examples_scored"] == ints["examples_scored"] == NUM_EXAMPLES
  written = json.loads(
      (runs["root"] / "out_names" / "summary.json").read_text())
  for summary in (names, written):
    assert summary["class_names"] == VOCABULARY
    assert summary["label_issues"]["class_names"] == VOCABULARY
    # A .keras softmax output: Keras takes the crossentropy from its logits.
    assert summary["loss"]["computed_from"] == "logits"
  assert ints["class_names"] is None
  assert ints["label_issues"]["class_names"] is None
  assert ints["loss"]["computed_from"] == "logits"
  assert names["label_issues"]["issues_by_pair"] == (
      ints["label_issues"]["issues_by_pair"])


def test_drift_names_the_classes(runs, capsys):
  root = runs["root"]
  assert compare.main([str(root / "out_ints"), str(root / "out_names")]) == 0
  capsys.readouterr()
  found = json.loads((root / "out_names" / "drift.json").read_text())
  assert found["class_names"] == {"0": "zebra", "1": "apple", "2": "r&b"}
  assert set(found["label_issue_rate"]) == {"0", "1", "2"}
  assert found["label_issue_rate"]["1"]["change"] == 0.0
  # Without a vocabulary on either side: no names.
  assert compare.main([str(root / "out_ints"), str(root / "out_ints"),
                       "--output", str(root / "plain.json")]) == 0
  capsys.readouterr()
  assert json.loads((root / "plain.json").read_text())["class_names"] is None


def _element(page, tag, element_id):
  found = re.search(rf'<{tag} id="{element_id}".*?</{tag}>', page, re.S)
  assert found, element_id
  return found.group(0)


def test_report_shows_names_beside_ids(runs):
  page = (runs["root"] / "out_names" / "report.html").read_text()
  heat_map = report_data(page)["heatMap"]
  classes = _element(page, "table", "label-issue-classes")
  assert heat_map["labels"] == ["0 zebra", "1 apple", "2 r&b"]
  for text in ("0 zebra", "1 apple", "2 r&amp;b"):
    assert f"<td>{text}</td>" in classes
  # Outside the escaped JSON, the name never appears unescaped.
  assert "r&b" not in page
  rows = report_rows(page)
  for column in ("given_class", "predicted_class", "suggested_class"):
    assert column in rows[0]
  assert "zebra" in {row["given_class"] for row in rows}
  plain = (runs["root"] / "out_ints" / "report.html").read_text()
  assert "given_class" not in report_rows(plain)[0]
  assert report_data(plain)["heatMap"]["labels"] == ["0", "1", "2"]


def test_heat_map_without_names_is_ids_only():
  found = report.heat_map_chart(np.array([[0, 2], [1, 0]]))
  assert found == {"classes": [0, 1], "labels": ["0", "1"],
                   "cells": [[1, 0, 2], [0, 1, 1]], "max": 2}
  names = [f"class {k}" for k in range(8)]
  named = report.heat_map_chart(np.array([[0, 2], [1, 0]]), names, [4, 7])
  assert named["labels"] == ["4 class 4", "7 class 7"]
  assert named["classes"] == [4, 7]


def test_flag_examples_needs_the_names_it_carries():
  scored = pa.schema([("id", pa.string()), ("loss", pa.float64()),
                      ("given_label", pa.int64()),
                      ("given_class", pa.string()),
                      ("__probs__", pa.list_(pa.float32(), 2))])
  assert "suggested_class" in flagged_schema(scored).names
  with pytest.raises(ValueError, match="class_names"):
    FlagExamples(None, scored)
  FlagExamples(None, scored, class_names=["a", "b"])


@pytest.fixture(scope="module")
def saved_model(runs):
  """The runs' softmax model, exported as a SavedModel directory."""
  import keras

  path = runs["root"] / "softmax_saved"
  keras.models.load_model(str(runs["root"] / "softmax.keras"),
                          compile=False).export(str(path), verbose=False)
  return path


def _saved_model_config(runs, saved_model, tmp_path):
  config = base_config(runs["root"] / "ints" / "*.parquet", saved_model,
                       tmp_path / "out", input={"format": "parquet"},
                       flag={"loss_quantile": None})
  path = tmp_path / "saved.yaml"
  path.write_text(json.dumps(config))
  return str(path)


def test_saved_model_loss_is_planned_from_outputs(runs, saved_model,
                                                  tmp_path):
  # A SavedModel signature returns only the (clipped) probabilities. The
  # .keras runs show that the plan's value reaches summary.json.
  config = load_config(_saved_model_config(runs, saved_model, tmp_path))
  assert preflight.plan(config).loss_computed_from == "outputs"


@pytest.mark.slow
def test_saved_model_summary_says_outputs(runs, saved_model, tmp_path):
  summary = audit.run(
      ["--config", _saved_model_config(runs, saved_model, tmp_path)])
  assert summary["loss"]["computed_from"] == "outputs"
  written = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert written["loss"]["computed_from"] == "outputs"


def test_comparison_table_names_the_classes():
  found = {
      "passed": True, "gates": [], "baseline": "out/a",
      "flagged_rate": {"baseline": 0.1, "current": 0.1, "change": 0.0},
      "dead_letter_rate": {"baseline": 0.0, "current": 0.0, "change": 0.0},
      "quantiles": {},
      "label_issue_rate": {"0": {"baseline": 0.1, "current": 0.2,
                                 "change": 0.1},
                           "1": {"baseline": 0.0, "current": 0.0,
                                 "change": 0.0}},
      "class_names": {"0": "r&b"},
  }
  rates = report._comparison(found)["label_rates"]
  assert [row[0] for row in rates.rows] == ["0 r&b", "1"]
