"""A right answer or a clear refusal: outputs against `from_logits`, loss
arguments, `ignore_class`, labels of the wrong kind and custom-loss
arguments, each through `lossaudit run` (exit 2 and the exact line)."""

import warnings

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import dead_letters, planning
from lossaudit.model import TensorInfo
from lossaudit.model_inputs import read_model_inputs
from lossaudit.pipelines import audit
from lossaudit.spec import Feature, LossTerm, ScoringSpec
from tests.helpers import NUM_CLASSES, NUM_FEATURES, build_classifier

N = 64
SKIP = "loss.from_logits_check: false skips this check"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """64 rows (the probe's first records): features, class labels, their
  one-hot labels, and a softmax and a logits model of them."""
  root = tmp_path_factory.mktemp("loss_checks")
  rng = np.random.default_rng(7)
  x = rng.normal(size=(N, NUM_FEATURES)).astype(np.float32)
  label = rng.integers(0, NUM_CLASSES, N)
  table = pa.table({
      "id": [f"r{i:02d}" for i in range(N)], "x": list(x), "label": label,
      "onehot": list(np.eye(NUM_CLASSES, dtype=np.float32)[label]),
  })
  (root / "data").mkdir()
  path = root / "data" / "part-0.parquet"
  pq.write_table(table, path)
  models = {}
  for name, activation in (("softmax", "softmax"), ("logits", None)):
    model = build_classifier(activation)
    models[name] = str(root / f"{name}.keras")
    model.save(models[name])
    models[f"{name}_values"] = model.predict(x, verbose=0)
  return root, str(path), x, label, models


def _config(root, data_path, model, tmp_path, **loss):
  return {
      "input": {"pattern": str(root / "data" / "*"), "format": "parquet",
                "id_column": "id", "label_column": "label"},
      "model": {"path": model},
      "loss": {**({} if "custom" in loss else
                  {"name": "sparse_categorical_crossentropy"}), **loss},
      "flag": {"loss_quantile": 0.9},
      "output": {"dir": str(tmp_path / "out")},
  }


def _refused(config, write_config, capsys):
  """The run's exit 2 and its one line."""
  path = write_config(config)
  assert audit.main(["--config", path]) == 2
  err = capsys.readouterr().err
  assert err.startswith("lossaudit: error: ") and err.count("\n") == 1
  return err[len("lossaudit: error: "):-1]


def _range(values, distribution=True):
  text = f"min {values.min():.4g}, max {values.max():.4g}"
  if distribution:
    sums = values.sum(axis=-1)
    text += f", row sums {sums.min():.4g} to {sums.max():.4g}"
  return text


def test_logits_read_as_probabilities_are_refused(data, tmp_path,
                                                  write_config, capsys):
  root, path, _, _, models = data
  message = _refused(_config(root, path, models["logits"], tmp_path),
                     write_config, capsys)
  assert message == (
      f"loss.from_logits: expected true: output 'probs' is not probabilities"
      f" in the first {N} records ({_range(models['logits_values'])})."
      f" Received: false ({SKIP})")


def test_probabilities_read_as_logits_are_refused(data, tmp_path,
                                                  write_config, capsys):
  root, path, _, _, models = data
  message = _refused(_config(root, path, models["softmax"], tmp_path,
                             from_logits=True), write_config, capsys)
  assert message == (
      f"loss.from_logits: expected false: output 'probs' looks like"
      f" probabilities in the first {N} records"
      f" ({_range(models['softmax_values'])}). Received: true ({SKIP})")


def test_each_output_is_checked(data, tmp_path, write_config, capsys):
  root, path, _, _, models = data
  config = _config(root, path, models["logits"], tmp_path)
  del config["input"]["label_column"]  # Each output names its own.
  config["loss"] = {"outputs": [
      {"output": "probs", "label_column": "onehot",
       "name": "categorical_crossentropy"}]}
  message = _refused(config, write_config, capsys)
  assert message.startswith(
      "loss.outputs[0].from_logits: expected true: output 'probs' is not"
      " probabilities")


def test_the_check_can_be_turned_off(data, tmp_path, write_config):
  root, path, x, label, models = data
  config = _config(root, path, models["softmax"], tmp_path,
                   from_logits=True, from_logits_check=False)
  summary = audit.run(["--config", write_config(config)])
  assert summary["examples_scored"] == N
  got = pd.read_parquet(tmp_path / "out" / "losses").sort_values("id")
  # As asked, and as Keras' `fit` computes it: on the model's output tensor
  # (whose logits Keras finds), not on the probabilities.
  model = keras.models.load_model(models["softmax"])
  expected = keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction=None)(label, model(x))
  np.testing.assert_allclose(got["loss"], expected, rtol=1e-6)


def test_right_from_logits_passes(data, tmp_path, write_config):
  root, path, _, label, models = data
  config = _config(root, path, models["logits"], tmp_path, from_logits=True)
  audit.run(["--config", write_config(config)])
  got = pd.read_parquet(tmp_path / "out" / "losses").sort_values("id")
  probs = keras.ops.softmax(models["logits_values"]).numpy()
  np.testing.assert_allclose(got["self_confidence"],
                             probs[np.arange(N), label], rtol=1e-5)


def test_a_predictions_column_of_the_other_kind_is_refused(
    data, tmp_path, write_config, capsys):
  root, _, _, label, models = data
  logits = models["logits_values"]
  (tmp_path / "p").mkdir()
  path = tmp_path / "p" / "part-0.parquet"
  pq.write_table(pa.table({"id": [str(i) for i in range(N)],
                           "label": label, "scores": list(logits)}), path)
  config = _config(root, str(path), None, tmp_path)
  config["input"]["pattern"] = str(path)
  config["model"] = {"predictions_column": "scores"}
  message = _refused(config, write_config, capsys)
  assert message == (
      f"model.predictions_kind: expected logits: the values of 'scores' are"
      f" not probabilities in the first {N} records ({_range(logits)})."
      f" Received: 'probabilities' ({SKIP})")


@pytest.mark.parametrize("loss, message", [
    ({"args": {"from_logits": True}},
     "loss.args.from_logits: expected loss.from_logits instead (it also says"
     " how class signals are read from the outputs). Received:"
     " loss.args={'from_logits': True}"),
    ({"args": {"reduction": "sum"}},
     "loss.args.reduction: expected no reduction: every example keeps its"
     " own loss, and loss.reduce (mean or sum) reduces the axes within one"
     " example. Received: loss.args={'reduction': 'sum'}"),
    ({"args": {"axis": 0}},
     "loss.args.axis: expected axes within one example, 1 to 1 (or"
     " negative): axis 0 is the batch axis, and reducing over it mixes"
     " examples. Received: 0"),
    ({"args": {"axis": [-2]}},
     "loss.args.axis: expected axes within one example, 1 to 1 (or"
     " negative): axis 0 is the batch axis, and reducing over it mixes"
     " examples. Received: [-2]"),
    ({"args": {"axis": 5}},
     "loss.args.axis: expected an axis or a list of axes of the outputs, in"
     " [-2, 2). Received: 5"),
    ({"name": "mse", "from_logits": True},
     "loss.from_logits: expected false: 'mse' takes no logits (only"
     " ['sparse_categorical_crossentropy', 'categorical_crossentropy',"
     " 'categorical_focal_crossentropy', 'binary_crossentropy',"
     " 'binary_focal_crossentropy'] do). Received: true"),
    ({"name": "circle"},
     "loss.name: 'circle' has no per-sample loss: its value for one example"
     " depends on the other examples of its batch (it compares every pair of"
     " embeddings), so an example's loss would change with the batch it is"
     " scored in. Received: 'circle'"),
    ({"name": "tweedie", "args": {"power": 2.5}},
     "loss.args: 'tweedie' does not take {'power': 2.5}: power: expected a"
     " number strictly between 1 and 2 (use poisson for 1 and gamma for 2)."
     " Received: 2.5"),
    ({"name": "huber", "args": {"q": 0.5}},
     "loss.args: 'huber' does not take {'q': 0.5}:"
     " Huber.__init__() got an unexpected keyword argument 'q'"),
    ({"args": {"ignore_class": True}},
     "loss.args.ignore_class: expected an integer class label, or null."
     " Received: True"),
    ({"args": {"ignore_class": 1.5}},
     "loss.args.ignore_class: expected an integer class label, or null."
     " Received: 1.5"),
    ({"name": "huber", "args": {"delta": -1}},
     "loss.args.delta: expected a number > 0. Received: -1"),
    ({"name": "huber", "args": {"delta": "one"}},
     "loss.args.delta: expected a number > 0. Received: 'one'"),
    ({"name": "categorical_crossentropy", "args": {"label_smoothing": 5}},
     "loss.args.label_smoothing: expected a number in [0, 1]. Received: 5"),
    ({"name": "binary_focal_crossentropy", "args": {"gamma": "two"}},
     "loss.args.gamma: expected a number >= 0. Received: 'two'"),
])
def test_loss_arguments_are_checked(data, tmp_path, write_config, capsys,
                                    loss, message):
  root, path, _, _, models = data
  config = _config(root, path, models["softmax"], tmp_path, **loss)
  if loss.get("name") in ("mse", "tweedie", "huber"):
    config["input"]["label_column"] = "label"
  assert _refused(config, write_config, capsys) == message


def test_flag_score_deviance_needs_a_deviance_loss(data, tmp_path,
                                                   write_config, capsys):
  root, path, _, _, models = data
  config = _config(root, path, models["softmax"], tmp_path)
  config["flag"]["score"] = "deviance"
  assert _refused(config, write_config, capsys) == (
      "flag.score: 'deviance' needs loss.name to be one of ['poisson',"
      " 'gamma', 'tweedie'] (count and positive regression). Received:"
      " flag.score='deviance' with"
      " loss.name='sparse_categorical_crossentropy'")


def test_integer_labels_with_a_dense_crossentropy_name_the_fix(
    data, tmp_path, write_config, capsys):
  root, path, _, _, models = data
  config = _config(root, path, models["softmax"], tmp_path,
                   name="categorical_crossentropy")
  assert _refused(config, write_config, capsys) == (
      f"input: none of the first {N} records of {path} can be scored; first"
      f" problem: label 'label' has 1 values, expected {NUM_CLASSES}: class"
      " indices (one integer a row) need sparse_categorical_crossentropy")


def test_one_hot_labels_with_the_sparse_crossentropy_name_the_fix(
    data, tmp_path, write_config, capsys):
  root, path, _, _, models = data
  config = _config(root, path, models["softmax"], tmp_path)
  config["input"]["label_column"] = "onehot"
  assert _refused(config, write_config, capsys) == (
      f"input: none of the first {N} records of {path} can be scored; first"
      f" problem: label 'onehot' has {NUM_CLASSES} values, expected 1:"
      " one-hot labels (one value per class) need categorical_crossentropy")


def test_custom_losses_take_loss_args(data, tmp_path, write_config):
  root, path, _, label, models = data
  config = _config(root, path, models["softmax"], tmp_path,
                   custom="tests.custom_losses:generalized_nll",
                   args={"q": 0.3})
  audit.run(["--config", write_config(config)])
  got = pd.read_parquet(tmp_path / "out" / "losses").sort_values("id")
  p = models["softmax_values"][np.arange(N), label]
  np.testing.assert_allclose(got["loss"], (1 - p**0.3) / 0.3, rtol=1e-5)


def test_a_custom_loss_without_the_argument_is_refused(data, tmp_path,
                                                       write_config, capsys):
  root, path, _, _, models = data
  config = _config(root, path, models["softmax"], tmp_path,
                   custom="tests.custom_losses:per_sample_nll",
                   args={"q": 0.3})
  assert _refused(config, write_config, capsys) == (
      "loss.args: expected keyword arguments that"
      " tests.custom_losses:per_sample_nll takes: got an unexpected keyword"
      " argument 'q'. Received: {'q': 0.3}")


def _sequence_spec(**args):
  term = LossTerm(output="p", name="p", label_column="label",
                  loss_name="sparse_categorical_crossentropy",
                  label_shape=(2,), label_dtype="int64", num_classes=3,
                  args=tuple(sorted(args.items())))
  return ScoringSpec(model_path="", signature="serving_default",
                     features=(Feature("x", "x", (2,), "float32"),),
                     terms=(term,), id_column="id")


@pytest.mark.parametrize("args, errors", [
    ({"ignore_class": -1},
     [None, "label 3 out of range: expected an integer class in [0, 3) or"
            " ignore_class -1",
      "label -2 out of range: expected an integer class in [0, 3) or"
      " ignore_class -1"]),
    ({}, ["label -1 out of range: expected an integer class in [0, 3)",
          "label -1 out of range: expected an integer class in [0, 3)",
          "label -2 out of range: expected an integer class in [0, 3)"]),
])
def test_ignore_class_passes_the_range_check_and_errors_name_the_label(
    args, errors):
  batch = pa.RecordBatch.from_pydict({
      "id": ["a", "b", "c"], "x": [[0.0, 1.0]] * 3,
      "label": [[-1, 2], [-1, 3], [-2, 0]]})
  checked = read_model_inputs(_sequence_spec(**args), batch)
  dead = {d["id"]: d["error"] for d in dead_letters.from_problems(
      "f", checked.inputs.ids, checked.problems, checked.bad)}
  assert [dead.get(i) for i in "abc"] == errors


def test_dice_and_tversky_default_to_each_examples_axes():
  for name in ("dice", "tversky"):
    assert planning.loss_term(
        _FixedModel((4, 4, 1)), "out", "out", "label", name, 1.0, False,
        "mean", {}, None, "loss").args == (("axis", (1, 2, 3)),)


class _FixedModel:
  """A model with one output of a fixed shape, for `planning.loss_term`."""

  def __init__(self, shape):
    self.shape = shape

  def output(self, name, key=None):
    del key
    return TensorInfo(name, self.shape, "float32")


def _one_unit_model(root, name, activation):
  keras.utils.set_random_seed(2)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  outputs = keras.layers.Dense(1, activation=activation, name="out")(inputs)
  model = keras.Model(inputs, outputs)
  path = str(root / f"{name}.keras")
  model.save(path)
  return model, path


def test_a_categorical_crossentropy_of_one_unit_names_the_binary_loss(
    data, tmp_path, write_config, capsys):
  root, path, _, _, _ = data
  _, model = _one_unit_model(tmp_path, "sigmoid", "sigmoid")
  config = _config(root, path, model, tmp_path,
                   name="categorical_crossentropy")
  assert _refused(config, write_config, capsys) == (
      "loss.name: expected binary_crossentropy for output 'out' of one unit:"
      " categorical_crossentropy over one class is 0 for every example."
      " Received: 'categorical_crossentropy'")


def test_a_count_loss_of_a_linear_output_is_refused(data, tmp_path,
                                                    write_config, capsys):
  root, path, x, _, _ = data
  linear, model = _one_unit_model(tmp_path, "linear", None)
  values = linear.predict(x, verbose=0)
  assert values.min() < 0
  config = _config(root, path, model, tmp_path, name="poisson")
  assert _refused(config, write_config, capsys) == (
      f"loss.name: 'poisson' reads output 'out' as a mean mu >= 0 (an exp or"
      f" softplus output layer), but it has values down to"
      f" {values.min():.4g} in the first {N} records"
      f" ({np.mean(values < 0):.0%} of its values); expected a model of such"
      f" means. Received: 'poisson'")


@pytest.mark.parametrize("model, loss", [
    ("softmax", {"from_logits": True}),
    ("sigmoid", {"name": "categorical_crossentropy"})])
def test_keras_warnings_of_a_refused_config_are_not_shown(
    data, tmp_path, write_config, capsys, model, loss):
  """Only the refusal's line: Keras' own warning of the same mistake
  (`from_logits=True` on a Softmax output, one class) is held back."""
  root, path, _, _, models = data
  if model == "sigmoid":
    _, models = _one_unit_model(tmp_path, "sigmoid", "sigmoid")
  else:
    models = models[model]
  with warnings.catch_warnings(record=True) as shown:
    warnings.simplefilter("always")
    _refused(_config(root, path, models, tmp_path, **loss), write_config,
             capsys)
  assert not [w for w in shown if "y_pred" in str(w.message) or
              "from_logits" in str(w.message)]


@pytest.mark.parametrize("name, labels, errors", [
    ("poisson", [-1.0, 0.0, 3.0],
     ["label -1 out of range: poisson expects a count or rate y >= 0", None,
      None]),
    ("gamma", [0.0, -2.0, 0.5],
     ["label 0 out of range: gamma expects a positive target y > 0",
      "label -2 out of range: gamma expects a positive target y > 0", None]),
    ("tweedie", [-2.0, 0.0, 1.0],
     ["label -2 out of range: tweedie expects a target y >= 0", None, None]),
    ("mse", [-2.0, 0.0, 1.0], [None, None, None]),
])
def test_count_and_positive_targets_outside_their_range_are_dead_letters(
    name, labels, errors):
  term = LossTerm(output="p", name="p", label_column="label",
                  loss_name=name, label_shape=(), label_dtype="float32")
  spec = ScoringSpec(model_path="", signature="serving_default",
                     features=(Feature("x", "x", (2,), "float32"),),
                     terms=(term,), id_column="id")
  batch = pa.RecordBatch.from_pydict({
      "id": ["a", "b", "c"], "x": [[0.0, 1.0]] * 3, "label": labels})
  checked = read_model_inputs(spec, batch)
  dead = {d["id"]: d["error"] for d in dead_letters.from_problems(
      "f", checked.inputs.ids, checked.problems, checked.bad)}
  assert [dead.get(i) for i in "abc"] == errors
  assert {d["reason"] for d in dead_letters.from_problems(
      "f", checked.inputs.ids, checked.problems, checked.bad)} <= {
          dead_letters.LABEL_OUT_OF_RANGE}
