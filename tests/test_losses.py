"""Per-sample losses equal Keras' `reduction=None`; class signals by formula."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from lossaudit import losses


def _probs(rng, n, k):
  logits = rng.normal(size=(n, k)).astype(np.float32)
  return logits, tf.nn.softmax(logits).numpy()


@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy(from_logits):
  rng = np.random.default_rng(0)
  logits, probs = _probs(rng, 64, 7)
  y = rng.integers(0, 7, 64)
  y_pred = logits if from_logits else probs
  got = losses.reduce_per_sample(
      losses.keras_loss("sparse_categorical_crossentropy", from_logits)(
          y, y_pred)).numpy()
  expected = -np.log(probs[np.arange(64), y])
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert got.shape == (64,)


@pytest.mark.parametrize("name, cls, from_logits", [
    ("categorical_crossentropy", keras.losses.CategoricalCrossentropy, False),
    ("categorical_crossentropy", keras.losses.CategoricalCrossentropy, True),
    ("binary_crossentropy", keras.losses.BinaryCrossentropy, False),
    ("binary_crossentropy", keras.losses.BinaryCrossentropy, True),
    ("mean_squared_error", keras.losses.MeanSquaredError, False),
    ("mse", keras.losses.MeanSquaredError, False),
])
def test_matches_keras_without_reduction(name, cls, from_logits):
  rng = np.random.default_rng(1)
  logits, probs = _probs(rng, 32, 4)
  y_true = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 32)]
  y_pred = logits if from_logits else probs
  kwargs = ({} if "mean" in cls.__name__.lower()
            else {"from_logits": from_logits})
  expected = cls(reduction=None, **kwargs)(y_true, y_pred).numpy()
  got = losses.reduce_per_sample(
      losses.keras_loss(name, from_logits)(y_true, y_pred)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_reduce_over_non_batch_axes(reduce):
  rng = np.random.default_rng(2)
  y_true = rng.normal(size=(8, 5, 3)).astype(np.float32)
  y_pred = rng.normal(size=(8, 5, 3)).astype(np.float32)
  per_step = keras.losses.MeanSquaredError(reduction=None)(y_true, y_pred)
  assert per_step.shape == (8, 5)
  got = losses.reduce_per_sample(
      losses.keras_loss("mean_squared_error")(y_true, y_pred), reduce).numpy()
  squared = ((y_true - y_pred)**2).mean(axis=2)
  expected = squared.sum(axis=1) if reduce == "sum" else squared.mean(axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_canonical_names():
  assert losses.canonical_loss_name("mse") == "mean_squared_error"
  assert losses.canonical_loss_name("KLDivergence") == "kl_divergence"
  assert losses.canonical_loss_name("nope") is None
  assert losses.label_kind("sparse_categorical_crossentropy", 10) == "sparse"
  assert losses.label_kind("binary_crossentropy", 1) == "binary"
  assert losses.label_kind("binary_crossentropy", 5) == "regression"
  assert losses.label_kind("huber", 1) == "regression"


def test_unknown_loss_argument_is_a_type_error():
  with pytest.raises(TypeError):
    losses.keras_loss("mean_squared_error", args={"gamma": 2})


def test_classification_signals_by_formula():
  probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0]],
                   dtype=np.float32)
  given = np.array([0, 1, 1])
  got = {k: v.numpy() for k, v in losses.classification_signals(
      tf.constant(probs), tf.constant(given)).items()}
  np.testing.assert_array_equal(got["predicted_label"], [0, 2, 0])
  np.testing.assert_allclose(got["self_confidence"], [0.7, 0.3, 0.5])
  np.testing.assert_allclose(got["margin"], [0.5, -0.3, 0.0], atol=1e-7)


def test_single_sigmoid_output_is_two_classes():
  p = np.array([[0.9], [0.2]], dtype=np.float32)
  probs = losses.class_probabilities(tf.constant(p), "binary", False).numpy()
  np.testing.assert_allclose(probs, [[0.1, 0.9], [0.8, 0.2]], rtol=1e-6)
  logits = np.log(p / (1 - p))
  probs = losses.class_probabilities(tf.constant(logits), "binary",
                                     True).numpy()
  np.testing.assert_allclose(probs, [[0.1, 0.9], [0.8, 0.2]], rtol=1e-5)


def test_custom_loss_is_imported_by_path():
  fn = losses.import_custom_loss("tests.custom_losses:per_sample_nll")
  assert fn.__name__ == "per_sample_nll"
  with pytest.raises(AttributeError):
    losses.import_custom_loss("tests.custom_losses:nowhere")
  with pytest.raises(ModuleNotFoundError):
    losses.import_custom_loss("tests.no_such_module:f")


@pytest.mark.parametrize("name", [n for n, loss in losses.LOSSES.items()
                                  if loss.keras_class])
def test_a_keras_loss_record_says_what_its_keras_class_takes(name):
  loss = losses.LOSSES[name]
  parameters = inspect.signature(
      getattr(keras.losses, loss.keras_class)).parameters
  assert loss.from_logits == ("from_logits" in parameters)
  assert loss.function is None


def test_each_name_and_alias_names_one_loss():
  names = [n for loss in losses.LOSSES.values()
           for n in (loss.name,) + loss.aliases]
  assert len(names) == len(set(names))
  for loss in losses.LOSSES.values():
    assert (loss.keras_class is None) == (loss.function is not None)
    for alias in loss.aliases:
      assert losses.canonical_loss_name(alias) == loss.name
