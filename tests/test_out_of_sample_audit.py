"""Out-of-sample audits end to end, on a noisy dataset whose high-capacity
models memorise the noise (`tests/out_of_sample.py`).

Expectations come from cleanlab and numpy on the saved models' own
predictions (Keras `predict` on each model loaded back), never from
lossaudit. Building the models takes tens of seconds: the module is slow.
"""

import json

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues

from lossaudit.folds import fold_of
from tests import out_of_sample

pytestmark = pytest.mark.slow

K = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("out-of-sample")
  ids = np.array([f"ex-{i:05d}" for i in range(out_of_sample.NUM_EXAMPLES)])
  # The folds a training job would use: fold_of, so the fold column and the
  # ids give the same ones.
  return out_of_sample.build(str(root), folds=fold_of(ids, K), num_folds=K)


def _audited(data, out, model, workers=1, **sections):
  """Audits the data with `model`; returns `(summary, flagged/, losses/ in
  the order of the data's ids)`."""
  return out_of_sample.audit(
      data, out, model, {"loss_quantile": 0.95, "label_issues":
                         "confident_learning", **sections.pop("flag", {})},
      workers, **sections)


def _issues(flagged) -> set:
  return set(flagged["id"][flagged["reasons"].map(
      lambda r: "label_issue" in r)])


def _cleanlab(data, probs) -> set:
  return set(data.ids[find_label_issues(data.labels, probs,
                                       filter_by="confident_learning")])


FOLDS = {"path": "{dir}/fold{{fold}}.keras", "folds": K}


def _model(data, model):
  return {**model, "path": model["path"].format(dir=data.dir)}


@pytest.mark.parametrize("fold_column, workers",
                         [("fold", 1), (None, 1), ("fold", 2)])
def test_k_fold_label_issues_equal_cleanlab_and_beat_in_sample(
    data, tmp_path, fold_column, workers):
  summary, flagged, losses = _audited(
      data, tmp_path / "folds", _model(data, FOLDS), workers,
      input={"fold_column": fold_column})
  np.testing.assert_array_equal(losses["fold"], data.folds)
  expected = _cleanlab(data, data.oof_probs)
  assert _issues(flagged) == expected
  folds = summary["folds"]
  assert sorted(folds) == [str(k) for k in range(K)]
  assert [folds[str(k)]["count"] for k in range(K)] == np.bincount(
      data.folds, minlength=K).tolist()
  # Out of sample beats in sample, against the injected noise.
  noisy = set(data.ids[data.noisy])
  _, in_sample, _ = _audited(data, tmp_path / "all", {"path": data.all_model})
  assert _issues(in_sample) == _cleanlab(data, data.in_sample_probs)
  k_fold_f1 = out_of_sample.f1(_issues(flagged), noisy)
  in_sample_f1 = out_of_sample.f1(_issues(in_sample), noisy)
  print(f"F1 against the injected noise: {K}-fold {k_fold_f1:.3f},"
        f" in-sample {in_sample_f1:.3f}")
  assert k_fold_f1 > in_sample_f1 + 0.1


def test_predictions_column_gives_the_k_fold_flags(data, tmp_path):
  _, by_folds, _ = _audited(data, tmp_path / "folds", _model(data, FOLDS),
                            input={"fold_column": "fold"})
  for kind, column in (("probabilities", "oof_probs"),
                       ("logits", "oof_logits")):
    _, by_column, _ = _audited(data, tmp_path / kind,
                               {"predictions_column": column,
                                "predictions_kind": kind})
    assert _issues(by_column) == _issues(by_folds), kind
    pd.testing.assert_frame_equal(
        by_column.sort_values("id").reset_index(drop=True)[["id", "reasons"]],
        by_folds.sort_values("id").reset_index(drop=True)[["id", "reasons"]])


def _dynamics(data):
  """Cartography and AUM `(N,)` from each checkpoint's own predictions."""
  probs = data.checkpoint_probs.astype(np.float64)  # (C, N, K)
  logits = data.checkpoint_logits.astype(np.float64)
  n, given = len(data.ids), data.labels
  own = probs[:, np.arange(n), given]
  others = np.where(np.arange(probs.shape[2]) == given[:, None], -np.inf,
                    logits)
  margin = logits[:, np.arange(n), given] - others.max(axis=2)
  return {"confidence": own.mean(axis=0), "variability": own.std(axis=0),
          "correctness": (probs.argmax(axis=2) == given).mean(axis=0),
          "aum": margin.mean(axis=0)}


def test_training_dynamics_and_aum_rules(data, tmp_path):
  model = {"path": data.checkpoint_model,
           "checkpoints": list(data.checkpoints)}
  summary, flagged, losses = _audited(
      data, tmp_path / "dynamics", model,
      flag={"loss_quantile": None, "label_issues": None,
            "aum_quantile": 0.1, "aum_below": 0.0})
  expected = _dynamics(data)
  for name, values in expected.items():
    # Float32 in the graph: equal to 1e-6, relative to the value past 1.
    np.testing.assert_allclose(losses[name], values, rtol=1e-6, atol=1e-6,
                               err_msg=name)
  aum = losses["aum"].to_numpy()  # The rules compare the values written.
  by_rule = {rule: set(flagged["id"][flagged["reasons"].map(
      lambda r, rule=rule: rule in r)]) for rule in ("aum_quantile",
                                                     "aum_below")}
  assert by_rule["aum_below"] == set(data.ids[aum < 0.0])
  threshold = summary["thresholds"]["aum_quantile"]
  assert by_rule["aum_quantile"] == set(data.ids[aum < threshold])
  # The sketch's threshold is within its rank error of numpy's quantile.
  rank = (aum < threshold).mean()
  assert abs(rank - 0.1) <= 0.001 + 1 / len(aum)
  # Low AUM finds flipped labels.
  noisy = set(data.ids[data.noisy])
  assert len(by_rule["aum_quantile"] & noisy) > 0.8 * len(
      by_rule["aum_quantile"])
  report = (tmp_path / "dynamics" / "report.html").read_text()
  assert "Data map" in report
  json.dumps(summary)
