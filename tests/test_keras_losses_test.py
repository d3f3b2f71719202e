"""Keras' own loss tests, through `lossaudit run`.

Every case of Keras 3.15.1's `losses_test.py` whose expected value follows
from per-sample losses (`tests/keras_loss_cases.py`, inputs and expected
values copied from it) is one output of a single identity model: its
`y_pred` is a feature column the model returns as it is, its `y_true` a
label column, its loss one entry of `loss.outputs` (name, `from_logits`,
`args`). One real run scores every case; each test then reduces its case's
per-sample `loss_<output>` over the batch as Keras' test did (sample
weights, `sum_over_batch_size`, `sum`, ...) and compares with Keras'
hard-coded value.

Keras' tests feed some losses scores that are not probabilities (rows of a
crossentropy's `y_pred` that do not sum to 1, which Keras normalizes), so the
run sets `loss.from_logits_check: false`.

Two expected values changed after Keras 3.15.1 (`CHANGED_AFTER_3_15_1`):
Keras 3.16 swapped Tversky's alpha and beta back (fa9afd5); each is checked
against the value of the installed Keras (`_expected`).
"""

import re

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lossaudit.pipelines import audit
from tests.keras_loss_cases import CASES, CHANGED_AFTER_3_15_1


def _output(index):
  return f"c{index:03d}"


def _rows(values, n):
  """`values` `(m, ...)` cycled to n rows, as a column: scalars, or each
  row's values flattened."""
  values = np.asarray(values)
  taken = values[np.arange(n) % len(values)]
  if taken.ndim == 1:
    return pa.array(taken)
  return pa.array(list(taken.reshape(n, -1)))


def _yaml_value(value):
  return list(value) if isinstance(value, tuple) else value


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
  """One `lossaudit run` of every case; its `losses/` by row id."""
  root = tmp_path_factory.mktemp("keras_losses_test")
  n = max(len(case.y_true) for case in CASES)
  inputs, outputs, terms = {}, {}, []
  columns = {"id": pa.array([f"r{i}" for i in range(n)])}
  for index, case in enumerate(CASES):
    name = _output(index)
    y_pred = np.asarray(case.y_pred, np.float32)
    inputs[name] = keras.Input(y_pred.shape[1:], name=name)
    outputs[name] = keras.layers.Identity(name=f"{name}_identity")(
        inputs[name])
    columns[name] = _rows(y_pred, n)
    columns[f"{name}_label"] = _rows(case.y_true, n)
    args = {k: _yaml_value(v) for k, v in case.args}
    terms.append({"output": name, "label_column": f"{name}_label",
                  "name": case.loss,
                  "from_logits": bool(args.pop("from_logits", False)),
                  "args": args})
  keras.Model(inputs, outputs).save(str(root / "identity.keras"))
  (root / "data").mkdir()
  pq.write_table(pa.table(columns), root / "data" / "part-0.parquet")
  config = {
      "input": {"pattern": str(root / "data" / "*"), "format": "parquet",
                "id_column": "id", "label_column": None},
      "model": {"path": str(root / "identity.keras")},
      "loss": {"outputs": terms, "from_logits_check": False},
      "flag": {"loss_quantile": 0.9},
      "output": {"dir": str(root / "out")},
  }
  path = root / "config.yaml"
  path.write_text(yaml.safe_dump(config))
  summary = audit.run(["--config", str(path)])
  assert summary["examples_scored"] == n
  assert summary["examples_dead_lettered"] == 0
  losses = pd.read_parquet(root / "out" / "losses").set_index("id")
  return losses.loc[[f"r{i}" for i in range(n)]]


def _reduced(case, per_sample):
  """Keras' reduction of the case's per-sample losses `(N,)`."""
  weight = (np.ones(len(per_sample)) if case.sample_weight is None else
            np.asarray(case.sample_weight, np.float64))
  weighted = weight * per_sample
  if case.reduction == "none":
    return weighted
  if case.reduction == "sum":
    return weighted.sum()
  if case.reduction == "mean":  # Keras' mean_with_sample_weight.
    return weighted.sum() / weight.sum()
  assert case.reduction == "sum_over_batch_size"
  return weighted.sum() / len(per_sample)


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[case.test for case in CASES])
def test_keras_case_through_lossaudit_run(scored, index):
  case = CASES[index]
  per_sample = scored[f"loss_{_output(index)}"].to_numpy()[:len(case.y_true)]
  got = _reduced(case, per_sample)
  expected = np.asarray(_expected(case, keras.__version__), np.float64)
  if case.decimal is not None:
    np.testing.assert_almost_equal(got, expected, decimal=case.decimal)
  else:
    atol = 1e-6 if case.atol is None else case.atol
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=atol)


def test_the_cases_cover_every_loss_with_per_sample_values():
  losses = {case.loss for case in CASES}
  assert {"dice", "tversky", "ctc", "categorical_generalized_cross_entropy",
          "huber", "poisson", "cosine_similarity"} <= losses
  assert any(("ignore_class", -1) in case.args for case in CASES)


def _expected(case, version: str):
  """The case's expected value under Keras `version`: from 3.16 on, those
  of `CHANGED_AFTER_3_15_1` changed."""
  major_minor = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
  if case.test in CHANGED_AFTER_3_15_1 and major_minor >= (3, 16):
    return CHANGED_AFTER_3_15_1[case.test]
  return case.expected


def test_the_values_changed_after_keras_3_15_1_are_noted():
  noted = {case.test: case.note for case in CASES if "Keras 3.16" in case.note}
  assert set(CHANGED_AFTER_3_15_1) <= set(noted)
  for test, changed in CHANGED_AFTER_3_15_1.items():
    (case,) = [c for c in CASES if c.test == test]
    assert str(changed) in noted[test]
    assert _expected(case, "3.15.1") == case.expected
    assert _expected(case, "3.16.0") == _expected(case, "3.17.1rc0") == (
        changed)
