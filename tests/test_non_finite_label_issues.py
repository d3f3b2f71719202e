"""Rows with a non-finite probability or loss stay out of confident learning.

Two NaN-probability rows among 344 once made every per-class threshold NaN;
now they are flagged `non_finite`, left out of the thresholds, the joint and
the ranking, and counted. The expectation is cleanlab's on the finite rows.
The probabilities come from a model that passes its input through (a
`model.predictions_column` row with a NaN is a `bad_prediction` dead letter,
see test_bad_values.py).
"""

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues

from lossaudit.pipelines import audit
from tests.helpers import base_config, noisy_probs, write_predictions

N, K = 344, 4
NAN_ROWS = (17, 200)


@pytest.mark.parametrize("method", [
    "confident_learning",
    pytest.param("prune_by_noise_rate", marks=pytest.mark.slow)])
def test_nan_probability_rows_are_left_out(tmp_path, write_config, method):
  import keras

  inputs = keras.Input((K,), name="p")
  model_path = str(tmp_path / "pass-through.keras")
  keras.Model(inputs, keras.layers.Activation("linear", name="probs")(
      inputs)).save(model_path)
  probs, given, _ = noisy_probs(N, K, 0.15, seed=3)
  probs[list(NAN_ROWS), 1] = np.nan
  ids = np.array([f"row-{i:03d}" for i in range(N)])
  write_predictions(tmp_path / "data.parquet", ids, given, probs)
  out = tmp_path / "out"
  config = base_config(tmp_path / "data.parquet", model_path, out,
                       flag={"loss_quantile": None, "label_issues": method})
  config["input"]["format"] = "parquet"
  summary = audit.run(["--config", write_config(config)])
  flagged = pd.read_parquet(out / "flagged")
  reasons = flagged.set_index("id")["reasons"].map(set)
  finite = np.ones(N, bool)
  finite[list(NAN_ROWS)] = False
  expected = set(ids[finite][find_label_issues(
      given[finite], probs[finite], filter_by=method)])
  assert len(expected) > 20
  assert set(reasons.index[reasons.map(lambda r: "label_issue" in r)]) == (
      expected)
  assert set(reasons.index[reasons.map(lambda r: "non_finite" in r)]) == set(
      ids[list(NAN_ROWS)])
  issues = summary["label_issues"]
  assert issues["non_finite_left_out"] == 2
  assert sum(issues["label_counts"]) == N - 2
  assert np.isfinite(issues["thresholds"]).all()
  assert "were left out of the thresholds" in (out / "report.html").read_text()
