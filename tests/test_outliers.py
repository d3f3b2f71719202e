"""Outlier rules on a regression dataset with injected target outliers."""

import keras
import numpy as np
import pandas as pd
import pytest

from lossaudit import datasets
from lossaudit.stats import LossAccumulator, median_and_mad
from tests.helpers import base_config, run_audit

N, OUTLIERS = 20_000, 200


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
  """y = x·w + noise, with 1% of targets moved by 8 to 20 standard units."""
  root = tmp_path_factory.mktemp("regression")
  rng = np.random.default_rng(21)
  x = rng.normal(size=(N, 8)).astype(np.float32)
  w = rng.normal(size=(8, 1)).astype(np.float32)
  y = x @ w + 0.5 * rng.normal(size=(N, 1)).astype(np.float32)
  outliers = rng.choice(N, OUTLIERS, replace=False)
  y[outliers, 0] += (rng.choice([-1, 1], OUTLIERS) *
                     rng.uniform(4, 10, OUTLIERS)).astype(np.float32)
  ids = np.char.add("r", np.arange(N).astype(str))
  region = np.array(["north", "south", "east", "west"])[np.arange(N) % 4]
  datasets.write_parquet(str(root / "data"), {
      "id": ids, "x": x, "y": y[:, 0], "region": region}, num_shards=2)
  inputs = keras.Input((8,), name="x")
  dense = keras.layers.Dense(1, name="y_hat")
  model = keras.Model(inputs, dense(inputs))
  dense.set_weights([w, np.zeros(1, dtype=np.float32)])
  model.save(str(root / "linear.keras"))
  return root, set(ids[outliers])


def _audited(root, out, flag, loss="mean_absolute_error", **stats):
  """Audits the regression; returns `(summary, flagged/, losses/)`."""
  config = base_config(root / "data" / "*.parquet", root / "linear.keras",
                       out, loss={"name": loss}, flag=flag, stats=stats)
  config["input"].update(format="parquet", label_column="y")
  summary = run_audit(config)
  return summary, pd.read_parquet(out / "flagged"), pd.read_parquet(
      out / "losses")


def _precision_recall(flagged, truth):
  hits = len(set(flagged) & truth)
  return hits / max(1, len(set(flagged))), hits / len(truth)


def test_robust_z_and_loss_quantile_find_target_outliers(tmp_path,
                                                         regression):
  root, truth = regression
  summary, flagged, losses = _audited(
      root, tmp_path / "out",
      {"loss_quantile": 0.99, "robust_z": 8.0, "top_k": None})
  by_reason = {r: set(flagged.loc[flagged["reasons"].map(lambda x, r=r: r in
                                                         list(x)), "id"])
               for r in ("robust_z", "loss_quantile")}
  precision, recall = _precision_recall(by_reason["robust_z"], truth)
  assert precision >= 0.95 and recall >= 0.9, (precision, recall)
  precision, recall = _precision_recall(by_reason["loss_quantile"], truth)
  assert precision >= 0.9 and recall >= 0.9, (precision, recall)
  # Each reason once, and the flagged set is the union of the rules.
  assert all(len(set(r)) == len(r) for r in flagged["reasons"])
  assert set(flagged["id"]) == by_reason["robust_z"] | by_reason[
      "loss_quantile"]
  # The robust-z threshold is median + z · 1.4826 · MAD of the losses.
  values = losses["loss"].to_numpy()
  median = np.median(values)
  mad = np.median(np.abs(values - median))
  assert summary["thresholds"]["robust_z"] == pytest.approx(
      median + 8.0 * 1.4826 * mad, rel=0.02)


def test_slice_quantile_uses_each_slice_own_quantile(tmp_path, regression):
  root, _ = regression
  summary, flagged, losses = _audited(
      root, tmp_path / "out",
      {"loss_quantile": None, "slice_quantile": 0.95},
      loss="mean_squared_error", slice_by="region")
  bounds = summary["thresholds"]["slice_quantile"]
  assert sorted(bounds) == ["east", "north", "south", "west"]
  region = losses["id"].str[1:].astype(int).map(
      lambda i: ["north", "south", "east", "west"][i % 4])
  expected = set(losses.loc[losses["loss"].to_numpy() >
                            region.map(bounds).to_numpy(), "id"])
  assert set(flagged["id"]) == expected
  for name, bound in bounds.items():
    values = np.sort(losses.loc[region == name, "loss"].to_numpy())
    rank = np.searchsorted(values, bound, side="right") / len(values)
    assert abs(rank - 0.95) <= 0.001 + 1 / len(values)


def test_median_and_mad_from_the_sketch():
  values = np.random.default_rng(3).lognormal(size=50_000)
  acc = LossAccumulator(0.001).add(values)
  summary = acc.summary([0.5])
  median = np.median(values)
  mad = np.median(np.abs(values - median))
  assert summary["median"] == pytest.approx(median, rel=0.01)
  assert summary["mad"] == pytest.approx(mad, rel=0.01)
  assert median_and_mad(np.array([0.0, 1.0, 2.0, 3.0, 10.0])) == (2.0, 1.0)
