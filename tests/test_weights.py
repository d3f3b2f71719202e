"""`output.weights`: `(id, weight)` of every scored example, by scheme,
against numpy on the written losses."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import weights
from tests.helpers import run_audit

N = 2000
K = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("weights")
  rng = np.random.default_rng(3)
  probs = rng.dirichlet(np.ones(K) * 0.7, N).astype(np.float32)
  label = rng.integers(0, K, N)
  pq.write_table(pa.table({"id": [f"w{i}" for i in range(N)],
                           "label": label, "p": list(probs)}),
                 root / "part-0.parquet")
  return root


def _weights(data, out, scheme):
  """Audits the predictions with `output.weights: scheme`; returns
  `(losses/ by id, their weights, the flagged ids)`."""
  summary = run_audit({
      "input": {"pattern": str(data / "*.parquet"), "format": "parquet",
                "id_column": "id", "label_column": "label"},
      "model": {"predictions_column": "p"},
      "flag": {"loss_quantile": 0.9},
      "output": {"dir": str(out), "weights": scheme},
  })
  losses = pd.read_parquet(out / "losses").set_index("id")
  found = pd.read_parquet(out / "weights").set_index("id")
  flagged = set(pd.read_parquet(out / "flagged")["id"])
  assert len(found) == summary["examples_scored"] == N
  return losses, found.loc[losses.index, "weight"].to_numpy(), flagged


def test_drop_and_downweight_flagged(data, tmp_path):
  losses, got, flagged = _weights(data, tmp_path / "a",
                                  {"scheme": "drop_flagged"})
  is_flagged = losses.index.isin(flagged)
  assert 150 < is_flagged.sum() < 250
  np.testing.assert_array_equal(got, np.where(is_flagged, 0.0, 1.0))
  losses, got, flagged = _weights(data, tmp_path / "b",
                                  {"scheme": "downweight_flagged",
                                   "factor": 0.25})
  np.testing.assert_array_equal(
      got, np.where(losses.index.isin(flagged), 0.25, 1.0))


def test_loss_bins_are_deciles_within_epsilon(data, tmp_path):
  losses, got, _ = _weights(data, tmp_path / "c", {"scheme": "loss_bins"})
  loss = losses["loss"].to_numpy()
  assert set(np.unique(got)) == set(range(10))
  # Bin b holds losses whose rank is within b/10 .. (b+1)/10, up to the
  # sketch's epsilon (0.001) and ties.
  rank = (np.argsort(np.argsort(loss)) + 0.5) / N
  assert np.all(rank >= got / 10 - 0.001 - 1 / N)
  assert np.all(rank <= (got + 1) / 10 + 0.001 + 1 / N)
  counts = np.bincount(got.astype(int), minlength=10)
  assert np.all(np.abs(counts - N / 10) <= 0.001 * N + 2)


def test_example_weights():
  rule = weights.WeightRule("loss_bins", 0.1, 4, ("top_k",))
  got = weights.example_weights(
      rule, np.zeros(6, bool), np.array([0.0, 1.0, 1.5, 2.5, 9.0, np.nan]),
      [1.0, 2.0, 3.0])
  assert got.tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 3.0]
  assert rule.quantiles() == (0.25, 0.5, 0.75)
