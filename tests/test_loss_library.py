"""Every Keras loss, per sample: the scorer's `loss` equals Keras' own.

Each case goes through the real pre-run planning (label shapes, class
signals) and the real `BatchScorer` on a saved multi-head model, and is
compared with `keras.losses.<Loss>(reduction=None)` reduced over the
remaining non-batch axes by numpy. The pure loss functions are compared with
Keras' own `keras.losses.get(name)`, never with the library's tables.
"""

import inspect

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import yaml

from lossaudit import datasets, losses, preflight
from lossaudit.config import load_config
from lossaudit.scoring import BatchScorer

N = 64

# (loss name, Keras class, model output, label column, from_logits, args)
CASES = [
    ("mean_squared_error", "MeanSquaredError", "linear", "target", False, {}),
    ("mean_absolute_error", "MeanAbsoluteError", "linear", "target", False, {}),
    ("mean_absolute_percentage_error", "MeanAbsolutePercentageError",
     "linear", "positive_target", False, {}),
    ("mean_squared_logarithmic_error", "MeanSquaredLogarithmicError",
     "positive", "positive_target", False, {}),
    ("huber", "Huber", "linear", "target", False, {"delta": 0.5}),
    ("log_cosh", "LogCosh", "linear", "target", False, {}),
    ("binary_crossentropy", "BinaryCrossentropy", "sigmoid", "binary", False,
     {"label_smoothing": 0.1}),
    ("binary_crossentropy", "BinaryCrossentropy", "logit", "binary", True, {}),
    ("binary_focal_crossentropy", "BinaryFocalCrossentropy", "sigmoid",
     "binary", False, {"gamma": 2.0, "alpha": 0.3,
                       "apply_class_balancing": True}),
    ("binary_focal_crossentropy", "BinaryFocalCrossentropy", "logit",
     "binary", True, {}),
    ("categorical_crossentropy", "CategoricalCrossentropy", "softmax",
     "onehot", False, {"label_smoothing": 0.1}),
    ("categorical_crossentropy", "CategoricalCrossentropy", "logits",
     "onehot", True, {}),
    ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
     "softmax", "onehot", False, {"alpha": 0.3, "gamma": 1.5}),
    ("categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
     "logits", "onehot", True, {}),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
     "softmax", "sparse", False, {}),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
     "logits", "sparse", True, {}),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
     "sequence", "sequence_sparse", False, {}),
    ("kl_divergence", "KLDivergence", "softmax", "distribution", False, {}),
    ("poisson", "Poisson", "positive", "positive_target", False, {}),
    ("hinge", "Hinge", "linear", "signs", False, {}),
    ("squared_hinge", "SquaredHinge", "linear", "signs", False, {}),
    ("categorical_hinge", "CategoricalHinge", "softmax", "onehot", False, {}),
    ("cosine_similarity", "CosineSimilarity", "linear", "target", False,
     {"axis": -1}),
    ("mean_squared_error", "MeanSquaredError", "sequence_linear",
     "sequence_target", False, {}),
]


def _heads_model():
  keras.utils.set_random_seed(3)
  inputs = keras.Input((8,), name="x")
  hidden = keras.layers.Dense(16, activation="relu")(inputs)

  def dense(units, **kw):
    return keras.layers.Dense(units, **kw)(hidden)

  sequence = keras.layers.Reshape((5, 4))(dense(20))
  return keras.Model(inputs, {
      "softmax": dense(4, activation="softmax"),
      "logits": dense(4),
      "sigmoid": dense(1, activation="sigmoid"),
      "logit": dense(1),
      "linear": dense(3),
      "positive": dense(3, activation="softplus"),
      "sequence": keras.layers.Softmax(axis=-1)(sequence),
      "sequence_linear": keras.layers.Reshape((5, 3))(dense(15)),
  })


def _columns():
  rng = np.random.default_rng(4)
  distribution = rng.dirichlet(np.ones(4), N).astype(np.float32)
  return {
      "id": np.array([f"r{i:03d}" for i in range(N)]),
      "x": rng.normal(size=(N, 8)).astype(np.float32),
      "target": rng.normal(size=(N, 3)).astype(np.float32),
      "positive_target": rng.uniform(0.1, 3, size=(N, 3)).astype(np.float32),
      "binary": rng.integers(0, 2, N).astype(np.float32),
      "onehot": np.eye(4, dtype=np.float32)[rng.integers(0, 4, N)],
      "sparse": rng.integers(0, 4, N),
      "sequence_sparse": rng.integers(0, 4, (N, 5)),
      "distribution": distribution,
      "signs": rng.choice([-1.0, 1.0], (N, 3)).astype(np.float32),
      "sequence_target": rng.normal(size=(N, 15)).astype(np.float32),
  }


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
  root = tmp_path_factory.mktemp("heads")
  model = _heads_model()
  model.save(str(root / "heads.keras"))
  columns = _columns()
  datasets.write_parquet(str(root / "data"), columns, num_shards=1)
  predictions = {k: np.asarray(v) for k, v in model.predict(
      columns["x"], verbose=0).items()}
  return root, columns, predictions


def _plan(root, tmp_path, loss, label_column=None, output=None):
  config = {
      "input": {"pattern": str(root / "data" / "*.parquet"),
                "format": "parquet", "label_column": label_column},
      "model": {"path": str(root / "heads.keras"), "output": output},
      "loss": loss,
      "output": {"dir": str(tmp_path / "out")},
  }
  path = tmp_path / "config.yaml"
  path.write_text(yaml.safe_dump(config))
  return preflight.plan(load_config(str(path)))


def _score(root, plan):
  batch = pq.read_table(str(root / "data")).to_batches()[0]
  scored, dead = BatchScorer(plan.spec).score("data", batch)
  assert dead == []
  return scored


def _golden(cls_name, args, from_logits, y_true, y_pred, reduce):
  kwargs = dict(args)
  if "Crossentropy" in cls_name:
    kwargs["from_logits"] = from_logits
  values = np.asarray(getattr(keras.losses, cls_name)(
      reduction=None, **kwargs)(y_true, y_pred), dtype=np.float64)
  axes = tuple(range(1, values.ndim))
  if not axes:
    return values
  return values.sum(axis=axes) if reduce == "sum" else values.mean(axis=axes)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("name, cls_name, output, label, from_logits, args",
                         CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_scorer_matches_keras(heads, tmp_path, name, cls_name, output, label,
                              from_logits, args, reduce):
  root, columns, predictions = heads
  plan = _plan(root, tmp_path, {"name": name, "from_logits": from_logits,
                                "reduce": reduce, "args": args},
               label_column=label, output=output)
  scored = _score(root, plan)
  y_true = columns[label]
  y_pred = predictions[output]
  if y_true.ndim == 1 and label != "sparse":
    y_true = y_true[:, None]
  y_true = y_true.reshape((N,) + plan.spec.terms[0].label_shape)
  expected = _golden(cls_name, args, from_logits, y_true, y_pred, reduce)
  np.testing.assert_allclose(scored.column("loss").to_numpy(), expected,
                             rtol=1e-6, atol=1e-7)
  term = plan.spec.terms[0]
  assert ("given_label" in scored.schema.names) == (term.signals is not None)
  if plan.spec.target_term:  # Regression: its target and prediction too.
    width = int(np.prod(y_true.shape[1:]))
    target = y_true.reshape(N, width).astype(np.float64)
    prediction = np.asarray(y_pred, np.float64).reshape(N, width)
    np.testing.assert_allclose(
        scored.column("error_norm" if width > 1 else "target").to_numpy(),
        np.linalg.norm(prediction - target, axis=1) if width > 1 else
        target[:, 0], rtol=1e-6)
    if width <= 16:
      got = np.stack(scored.column("prediction").to_pylist()).reshape(
          N, width)
      np.testing.assert_allclose(got, prediction, rtol=1e-6)
  else:
    assert "target" not in scored.schema.names


# Every loss `loss.name` takes, as Keras names its loss function.
KERAS_LOSSES = (
    "mean_squared_error", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "huber", "log_cosh", "binary_crossentropy", "binary_focal_crossentropy",
    "categorical_crossentropy", "categorical_focal_crossentropy",
    "sparse_categorical_crossentropy", "kl_divergence", "poisson", "hinge",
    "squared_hinge", "categorical_hinge", "cosine_similarity",
)


# Keras losses with per-sample values that need their own shapes or
# arguments (tests/test_keras_losses_test.py runs Keras' own cases on them),
# and lossaudit's own positive-regression losses.
OTHER_KERAS_LOSSES = ("dice", "tversky", "ctc",
                      "categorical_generalized_cross_entropy")
OWN_LOSSES = ("gamma", "tweedie")


def test_the_supported_losses_are_the_keras_losses_checked_here():
  assert sorted(losses.SUPPORTED_LOSSES) == sorted(
      KERAS_LOSSES + OTHER_KERAS_LOSSES + OWN_LOSSES)


def test_every_keras_loss_class_is_supported_or_refused_with_a_reason():
  classes = {name for name in dir(keras.losses)
             if name[0].isupper() and name != "Loss"}
  supported = {name for name in classes
               if losses.canonical_loss_name(name) is not None}
  refused = classes - supported
  assert {name.lower() for name in refused} == set(losses.NOT_PER_SAMPLE)
  assert len(supported) == len(KERAS_LOSSES + OTHER_KERAS_LOSSES)


def _keras_function(name, from_logits, y_true, y_pred, reduce):
  """Keras' own loss function `keras.losses.get(name)`, reduced over the
  non-batch axes it leaves by numpy."""
  kwargs = {"from_logits": True} if from_logits else {}
  values = np.asarray(keras.losses.get(name)(y_true, y_pred, **kwargs),
                      dtype=np.float64)
  axes = tuple(range(1, values.ndim))
  if not axes:
    return values
  return values.sum(axis=axes) if reduce == "sum" else values.mean(axis=axes)


@pytest.mark.parametrize("name", KERAS_LOSSES)
@pytest.mark.parametrize("shape", [(16, 4), (16, 3, 4), (16, 2, 3, 4)])
def test_pure_losses_on_random_shapes(name, shape):
  rng = np.random.default_rng(5)
  logits = rng.normal(size=shape).astype(np.float32)
  if name == "sparse_categorical_crossentropy":
    y_true = rng.integers(0, shape[-1], shape[:-1])
  elif "hinge" in name and name != "categorical_hinge":
    y_true = rng.choice([-1.0, 1.0], shape).astype(np.float32)
  elif "binary" in name:
    y_true = rng.integers(0, 2, shape).astype(np.float32)
  elif name in ("categorical_crossentropy", "categorical_focal_crossentropy",
                "categorical_hinge"):
    y_true = np.eye(shape[-1], dtype=np.float32)[
        rng.integers(0, shape[-1], shape[:-1])]
  else:
    y_true = rng.uniform(0.1, 2, shape).astype(np.float32)
  # Whether Keras' function takes logits: Keras says, not the library.
  takes_logits = "from_logits" in inspect.signature(
      keras.losses.get(name)).parameters
  for from_logits in ((False, True) if takes_logits else (False,)):
    if from_logits:
      y_pred = logits
    elif takes_logits:
      y_pred = (tf.nn.sigmoid(logits) if "binary" in name else
                tf.nn.softmax(logits)).numpy()
    else:
      y_pred = tf.nn.softplus(logits).numpy()
    for reduce in ("mean", "sum"):
      got = losses.reduce_per_sample(
          losses.keras_loss(name, from_logits)(y_true, y_pred), reduce).numpy()
      expected = _keras_function(name, from_logits, y_true, y_pred, reduce)
      np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
      assert got.shape == (shape[0],)
