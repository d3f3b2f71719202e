"""Multi-output models, sample weights and custom losses in the pipeline."""


import keras
import numpy as np
import pandas as pd
import pytest

from lossaudit import datasets
from lossaudit.errors import ConfigError
from lossaudit.pipelines import audit
from tests.helpers import base_config, two_heads_model


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory, columns):
  """A softmax head and a regression head, trained jointly in Keras' way."""
  root = tmp_path_factory.mktemp("two_heads")
  model = two_heads_model(7, 16, ("digit", "size"))
  model.save(str(root / "two_heads.keras"))
  n = 1000
  data = {k: v[:n] for k, v in columns.items()}
  data["w"] = np.linspace(0.5, 1.5, n)
  datasets.write_tfrecords(str(root / "data"), data, num_shards=2)
  return root, model, data


def _losses(out):
  return pd.read_parquet(out / "losses").set_index("id")


def test_two_output_loss_is_the_weighted_sum(tmp_path, two_heads,
                                             write_config):
  root, model, data = two_heads
  out = tmp_path / "out"
  config = base_config(root / "data" / "*", root / "two_heads.keras", out)
  config["input"]["weight_column"] = "w"
  del config["input"]["label_column"]  # Each output names its own.
  config["loss"] = {"outputs": [
      {"output": "digit", "label_column": "label",
       "name": "sparse_categorical_crossentropy", "weight": 1.0},
      {"output": "size", "label_column": "target",
       "name": "mean_squared_error", "weight": 0.5},
  ]}
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == 1000
  got = _losses(out).loc[data["id"]]
  pred = model.predict(data["x"], verbose=0)
  digit = keras.losses.SparseCategoricalCrossentropy(reduction=None)(
      data["label"], pred["digit"]).numpy()
  size = keras.losses.MeanSquaredError(reduction=None)(
      data["target"], pred["size"]).numpy()
  np.testing.assert_allclose(got["loss_digit"], digit, rtol=1e-6)
  np.testing.assert_allclose(got["loss_size"], size, rtol=1e-6)
  np.testing.assert_allclose(got["loss"], digit + 0.5 * size, rtol=1e-6)
  np.testing.assert_allclose(got["weighted_loss"],
                             (digit + 0.5 * size) * data["w"], rtol=1e-6)
  # Class signals come from the classification head.
  np.testing.assert_array_equal(got["predicted_label"],
                                pred["digit"].argmax(axis=1))
  # Statistics use the unweighted loss unless stats.weighted is set.
  assert summary["loss"]["max"] == pytest.approx(got["loss"].max())


def test_weighted_statistics(tmp_path, two_heads, write_config):
  root, _, _ = two_heads
  out = tmp_path / "out"
  config = base_config(root / "data" / "*", root / "two_heads.keras", out,
                       model={"output": "digit"},
                       stats={"weighted": True})
  config["input"]["weight_column"] = "w"
  config["flag"] = {"loss_quantile": None, "top_k": 5}
  summary = audit.run(["--config", write_config(config)])
  got = _losses(out)
  assert summary["loss"]["max"] == pytest.approx(got["weighted_loss"].max())
  assert summary["loss"]["mean"] == pytest.approx(got["weighted_loss"].mean())
  flagged = pd.read_parquet(out / "flagged")
  top = got.sort_values("weighted_loss", ascending=False).index[:5]
  assert set(flagged["id"]) == set(top)
  np.testing.assert_allclose(
      flagged.set_index("id").loc[top, "score"],
      got.loc[top, "weighted_loss"])


@pytest.mark.parametrize("function", [
    "per_sample_nll",
    # A whole run more, for AutoGraph in custom losses: in the slow suite.
    pytest.param("per_sample_nll_branching", marks=pytest.mark.slow)])
def test_custom_loss_by_module_path(tmp_path, tfrecord_dir, classifier_path,
                                    columns, write_config, function):
  out = tmp_path / "out"
  config = base_config(tfrecord_dir / "*.gz", classifier_path, out,
                       loss={"custom": f"tests.custom_losses:{function}"})
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == len(columns["id"])
  probs = keras.models.load_model(classifier_path, compile=False).predict(
      columns["x"], verbose=0)
  expected = -np.log(np.clip(probs[np.arange(len(probs)), columns["label"]],
                             1e-7, 1))
  got = _losses(out).loc[columns["id"], "loss"]
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("loss, message", [
    ({"outputs": [{"output": "nope", "label_column": "label",
                   "name": "mse"}]},
     r"loss.outputs\[0\].output: expected one of \['digit', 'size'\]."
     r" Received: 'nope'"),
    ({"outputs": [{"output": "digit", "label_column": "missing",
                   "name": "sparse_categorical_crossentropy"}]},
     r"loss.outputs\[0\].label_column: column 'missing' not found"),
    ({"outputs": [{"output": "digit", "label_column": "label",
                   "name": "sparse_categorical_crossentropy", "wieght": 2}]},
     r"loss.outputs\[0\].wieght: unknown config key.*Did you mean"
     r" loss.outputs\[0\].weight\?"),
    ({"outputs": [{"output": "digit", "label_column": "label",
                   "name": "crossentropy"}]},
     r"loss.outputs\[0\].name: expected one of"),
    ({"name": "mse"},
     r"model.output: the model has outputs \['digit', 'size'\]; expected the"
     r" name of the one to score"),
])
def test_multi_output_config_errors(tmp_path, two_heads, write_config, loss,
                                    message):
  root, _, _ = two_heads
  config = base_config(root / "data" / "*", root / "two_heads.keras",
                       tmp_path / "out", loss=loss)
  with pytest.raises(ConfigError, match=message):
    audit.run(["--config", write_config(config)])
