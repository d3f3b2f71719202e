"""Count and positive regression: the unit deviance, golden against
scikit-learn, and as the outlier score (`flag.score: deviance`) of a Poisson
regression with injected count outliers; regression rows carry their target
and prediction in `losses/`, `flagged/` and the report."""

import json

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import (
  mean_gamma_deviance,
  mean_poisson_deviance,
  mean_tweedie_deviance,
)

from lossaudit import losses
from tests.browser import SHOWN_ROWS, open_page
from tests.helpers import run_audit

N = 5000
OUTLIERS = 100  # 2% of the rows: flag.loss_quantile 0.98 flags as many.


def _golden(fn, y, mu, **kw):
  return np.array([fn([a], [b], **kw) for a, b in zip(y, mu)])


@pytest.mark.parametrize("name, golden, args", [
    ("poisson", mean_poisson_deviance, {}),
    ("gamma", mean_gamma_deviance, {}),
    ("tweedie", mean_tweedie_deviance, {"power": 1.5}),
    ("tweedie", mean_tweedie_deviance, {"power": 1.2}),
])
def test_unit_deviance_is_scikit_learns(name, golden, args):
  rng = np.random.default_rng(3)
  mu = rng.uniform(0.05, 40, 200)
  y = rng.poisson(mu).astype(np.float64)
  if name == "gamma":
    y = rng.gamma(2.0, mu / 2.0)
  got = losses.unit_deviance(name, y, mu, args).numpy()
  np.testing.assert_allclose(got, _golden(golden, y, mu, **args), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("name, args, formula", [
    ("gamma", {}, lambda y, mu: np.log(mu) + y / mu),
    ("tweedie", {"power": 1.5},
     lambda y, mu: mu**0.5 / 0.5 - y * mu**-0.5 / -0.5),
])
def test_positive_regression_losses_are_their_formulas(name, args, formula):
  rng = np.random.default_rng(4)
  mu = rng.uniform(0.1, 20, (50, 3))
  y = rng.gamma(2.0, mu / 2.0)
  got = losses.reduce_per_sample(losses.keras_loss(name, args=args)(y, mu))
  np.testing.assert_allclose(got.numpy(), formula(y, mu).mean(axis=1),
                             rtol=1e-6)


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
  """Counts drawn from a known Poisson rate, 2% replaced by bursts, and a
  Keras model whose output is exactly that rate (a log link)."""
  root = tmp_path_factory.mktemp("counts")
  rng = np.random.default_rng(11)
  x = rng.normal(size=(N, 4)).astype(np.float32)
  weights = np.array([[0.9], [-0.6], [0.5], [0.3]], np.float32)
  mu = np.exp(x @ weights[:, 0] + 1.0)
  y = rng.poisson(mu).astype(np.float32)
  outliers = rng.choice(N, OUTLIERS, replace=False)
  # Bursts: counts far above their rate, low rates and high alike.
  y[outliers] = np.round(3 * mu[outliers] + 10)
  inputs = keras.Input((4,), name="x")
  rate = keras.layers.Dense(1, activation="exponential", name="rate")
  model = keras.Model(inputs, rate(inputs))
  rate.set_weights([weights, np.array([1.0], np.float32)])
  path = str(root / "rate.keras")
  model.save(path)
  (root / "data").mkdir()
  ids = np.array([f"n{i:05d}" for i in range(N)])
  pq.write_table(pa.table({"id": ids, "x": list(x), "count": y}),
                 root / "data" / "part-0.parquet")
  return root, path, ids, y, mu, set(ids[outliers])


def _config(counts, out, score):
  root, model, *_ = counts
  return {
      "input": {"pattern": str(root / "data" / "*"), "format": "parquet",
                "id_column": "id", "label_column": "count"},
      "model": {"path": model},
      "loss": {"name": "poisson"},
      "flag": {"loss_quantile": 0.98, "score": score},
      "output": {"dir": str(out)},
  }


@pytest.fixture(scope="module")
def audits(counts, tmp_path_factory):
  """The counts audited with each `flag.score`: `{score: (out, summary)}`."""
  root = tmp_path_factory.mktemp("audits")
  return {score: (root / score, run_audit(_config(counts, root / score,
                                                  score)))
          for score in ("loss", "deviance")}


def _precision_recall(flagged, truth):
  hits = len(flagged & truth)
  return hits / max(len(flagged), 1), hits / len(truth)


def test_deviance_finds_the_count_outliers_and_the_loss_does_not(
    counts, audits):
  _, _, ids, y, mu, truth = counts
  found = {}
  for score, (out, summary) in audits.items():
    flagged = pd.read_parquet(out / "flagged")
    found[score] = _precision_recall(set(flagged["id"]), truth)
    assert summary["loss"]["score"] == score
  precision, recall = found["deviance"]
  assert precision >= 0.9 and recall >= 0.9, found
  precision, recall = found["loss"]
  assert precision <= 0.3 and recall <= 0.3, found
  # losses/ carries the deviance (scikit-learn's) and the target and
  # prediction of every row.
  out = audits["deviance"][0]
  written = pd.read_parquet(out / "losses").set_index("id").loc[ids]
  np.testing.assert_allclose(written["target"], y)
  np.testing.assert_allclose(written["prediction"], mu, rtol=1e-5)
  np.testing.assert_allclose(
      written["deviance"], _golden(mean_poisson_deviance, y, mu + 1e-7),
      rtol=1e-4, atol=1e-5)
  summary = json.loads((out / "summary.json").read_text())
  # The statistics and the rule are of the deviance: the threshold's rank
  # among the deviances is 0.98 within the sketch's epsilon.
  rank = np.mean(written["deviance"] <= summary["thresholds"]["loss_quantile"])
  assert abs(rank - 0.98) <= 0.001 + 1 / N


def test_the_report_and_flagged_show_target_and_prediction(
    counts, audits, tmp_path):
  out, _ = audits["deviance"]
  flagged = pd.read_parquet(out / "flagged").set_index("id")
  _, _, ids, y, mu, _ = counts
  where = {name: i for i, name in enumerate(ids)}
  rows = [where[i] for i in flagged.index]
  np.testing.assert_allclose(flagged["target"], y[rows])
  np.testing.assert_allclose(flagged["prediction"], mu[rows], rtol=1e-5)
  assert {"deviance", "loss", "score"} <= set(flagged.columns)
  with open_page(out / "report.html") as browser:
    shown = browser.evaluate(SHOWN_ROWS)
    assert browser.errors() == []
  assert shown["visible"] and shown["rows"]
  head = shown["head"]
  assert {"target", "prediction", "deviance"} <= set(head)
  for cells in shown["rows"]:
    row = where[cells[head.index("id")]]
    assert float(cells[head.index("target")]) == pytest.approx(y[row])
    assert float(cells[head.index("prediction")]) == pytest.approx(
        mu[row], rel=1e-5)


@pytest.mark.parametrize("name, args", [
    ("poisson", {}), ("gamma", {}), ("tweedie", {"power": 1.5})])
def test_deviance_is_nan_outside_the_domain_never_negative(name, args):
  """A linear model's mu <= 0, or a target out of range, gives NaN (the row
  is flagged `non_finite`), not a negative deviance ranked as the best fit:
  Poisson's formula at y = 0 and mu = -1 would give -2."""
  y = np.array([0.0, 2.0, 1.0, -1.0, 1.0])
  mu = np.array([-1.0, -0.5, 0.0, 1.0, 1.0])
  got = losses.unit_deviance(name, y, mu, args).numpy()
  if name == "poisson":  # mu = 0 is Keras' mu + 1e-7 > 0.
    assert np.isnan(got[[0, 1, 3]]).all() and np.isfinite(got[[2, 4]]).all()
  else:
    assert np.isnan(got[:4]).all() and np.isfinite(got[4])
  assert (got[np.isfinite(got)] >= 0).all()
