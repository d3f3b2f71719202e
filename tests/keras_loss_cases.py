"""Test cases copied from Keras' own loss tests, for checking per-sample losses.

Source: Keras 3.15.1, ``keras/src/losses/losses_test.py`` (the copy installed
in this repo's virtual environment). Inputs and hard-coded expected values are
copied literally from that file; where the test computes its expected value
with a numpy expression, the expression is copied into a small module-level
function below (numpy only) and the line of the test is quoted next to it.
Nothing here was computed with Keras.

Only cases whose expected value can be rebuilt from PER-SAMPLE losses are
listed: ``keras.losses.<Class>(reduction=None, **dict(case.args))(y_true,
y_pred)``, reduced over the non-batch axes by mean, then combined over the
batch with ``case.sample_weight`` (w) per ``case.reduction``:

* ``"sum_over_batch_size"`` (Keras' default): ``sum(w * l) / N``
* ``"sum"``: ``sum(w * l)``
* ``"mean"``: ``sum(w * l) / sum(w)``; this is Keras'
  ``"mean_with_sample_weight"`` reduction (NOT Keras' own ``"mean"``, which is
  an alias of ``sum_over_batch_size``)
* ``"none"``: ``w * l`` (Keras ``reduction=None``)

with ``w = 1`` when ``sample_weight`` is None. Circle, and Dice/Tversky with
``axis=None``, compare or pool examples across the batch and are left out.

Conventions:

* dtypes: arrays keep the dtype the test gives them; untyped float literals
  (numpy float64) are stored as float32, Keras' default float dtype (Keras casts
  them to float32 anyway); untyped integer arrays stay int64 (numpy's default),
  e.g. sparse / CTC labels and the integer regression targets of the MSE tests.
* ``sample_weight`` is always one weight per sample, shape ``(N,)``; a scalar
  weight ``w`` of the test is written ``np.full(N, w)``, a ``(N, 1)`` weight is
  flattened.
* tolerances: ``keras.src.testing.TestCase.assertAlmostEqual`` defaults to
  ``decimal=3`` (``np.testing.assert_almost_equal``, i.e. ``|a - e| <
  1.5 * 10**-decimal``), so every ``assertAlmostEqual`` case has ``decimal`` set
  (3 unless the test passed another). ``decimal=None`` and ``atol=None`` means
  ``assertAllClose`` with its defaults ``atol=1e-6, rtol=1e-6``; an ``atol``
  given by the test is kept in ``atol`` (rtol stays 1e-6). ``assertEqual``
  (exact) is written ``atol=0.0`` with a note.
* ``test_name#k``: the k-th loss call of a test that calls a loss several times
  with different inputs, arguments or weights. Repeated calls with identical
  inputs ("Verify we get the same output when the same input is given") are not
  listed again.
* SparseCategoricalCrossentropy with ``ignore_class``: Keras'
  ``test_ignore_class`` asserts per-position values with ``reduction=None``
  (``[[0.0, 1.480129]]``, the ignored position 0). One example's loss is
  their masked mean over the positions not ignored (lossaudit's
  ``reduce: mean``), 1.480129: its two cases say so in their note.

Known difference with later Keras: Keras 3.16 (commit fa9afd5, "Fix alpha and
beta swap in Tversky loss", #23333) changed TverskyTest expected values with
custom alpha/beta: ``test_binary_segmentation_custom_coefficients`` 0.7916667 ->
0.76190472 and ``test_binary_segmentation_custom_coefficients_with_axis``
[0.5, 0.7222222] -> [0.5, 0.78494626]. The installed 3.15.1 values are the ones
in CASES, and the note of each such case says "Keras 3.16: <new value>
(alpha/beta swap fixed)". Of the two, only the ``_with_axis`` test is in CASES
(the other uses ``axis=None``, which pools the batch); ``CHANGED_AFTER_3_15_1``
maps the listed test to its new value. (The same commit also re-wrote the
axis=None values of test_correctness, test_correctness_custom_coefficients and
test_binary_segmentation, none of which are listed here.)
"""

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class KerasCase:
  test: str            # "MeanSquaredErrorTest.test_unweighted"
  loss: str            # snake-case keras loss name
  y_true: np.ndarray   # exactly as in the test, with the dtype the test uses
  y_pred: np.ndarray
  expected: Any        # the test's hard-coded expected value, literally
  reduction: str       # "sum_over_batch_size", "sum", "none" or "mean"
  sample_weight: Optional[np.ndarray] = None   # per-sample weights, shape (N,)
  args: Tuple[Tuple[str, Any], ...] = ()       # constructor args of the loss
  decimal: Optional[int] = None
  atol: Optional[float] = None
  note: str = ""


# Keras 3.16 values of the Tversky tests listed in CASES (see module docstring).
CHANGED_AFTER_3_15_1 = {
    "TverskyTest.test_binary_segmentation_custom_coefficients_with_axis":
        [0.5, 0.78494626],
}


# --------------------------------------------------------------------------
# Expected values the tests compute with numpy (copied expressions).
# --------------------------------------------------------------------------

def _cosine_l2_norm(x, axis):
  # CosineSimilarityTest.l2_norm
  epsilon = 1e-12
  square_sum = np.sum(np.square(x), axis=axis, keepdims=True)
  x_inv_norm = 1 / np.sqrt(np.maximum(square_sum, epsilon))
  return np.multiply(x, x_inv_norm)


def _cosine_expected_loss(axis=1):
  # CosineSimilarityTest.setup:
  #   self.expected_loss = np.sum(np.multiply(y_true, y_pred), axis=(axis,))
  np_y_true = np.asarray([[1, 9, 2], [-5, -2, 6]], dtype=np.float32)
  np_y_pred = np.asarray([[4, 8, 12], [8, 1, 3]], dtype=np.float32)
  y_true = _cosine_l2_norm(np_y_true, axis)
  y_pred = _cosine_l2_norm(np_y_pred, axis)
  return np.sum(np.multiply(y_true, y_pred), axis=(axis,))


def _huber_loss(y_true, y_pred, delta=1.0):
  # HuberLossTest.huber_loss
  error = y_pred - y_true
  abs_error = np.abs(error)
  quadratic = np.minimum(abs_error, delta)
  linear = np.subtract(abs_error, quadratic)
  return np.add(
      np.multiply(0.5, np.multiply(quadratic, quadratic)),
      np.multiply(delta, linear),
  )


def _huber_expected_losses(delta=1.0):
  # HuberLossTest.setup: self.expected_losses = self.huber_loss(
  #     self.np_y_true, self.np_y_pred, delta)
  np_y_pred = np.array([[0.9, 0.2, 0.2], [0.8, 0.4, 0.6]])
  np_y_true = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  return _huber_loss(np_y_true, np_y_pred, delta)


_HUBER_BATCH_SIZE = 6  # HuberLossTest.setup: self.batch_size = 6


def _huber_unweighted():
  # actual_loss = np.sum(self.expected_losses) / self.batch_size
  return np.sum(_huber_expected_losses()) / _HUBER_BATCH_SIZE


def _huber_scalar_weighted(sample_weight=2.3, delta=1.0):
  # actual_loss = (
  #     sample_weight * np.sum(self.expected_losses) / self.batch_size)
  return (sample_weight * np.sum(_huber_expected_losses(delta))
          / _HUBER_BATCH_SIZE)


def _huber_sample_weighted():
  # actual_loss = np.multiply(
  #     self.expected_losses,
  #     np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  # )
  # actual_loss = np.sum(actual_loss) / self.batch_size
  actual_loss = np.multiply(
      _huber_expected_losses(),
      np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  )
  return np.sum(actual_loss) / _HUBER_BATCH_SIZE


def _log_cosh_expected_losses():
  # LogCoshTest.setup:
  #   error = y_pred - y_true
  #   self.expected_losses = np.log((np.exp(error) + np.exp(-error)) / 2)
  y_true = np.asarray([[1, 9, 2], [-5, -2, 6]], dtype=np.float32)
  y_pred = np.asarray([[4, 8, 12], [8, 1, 3]], dtype=np.float32)
  error = y_pred - y_true
  return np.log((np.exp(error) + np.exp(-error)) / 2)


_LOG_COSH_BATCH_SIZE = 6  # LogCoshTest.setup: self.batch_size = 6


def _log_cosh_unweighted():
  # expected_loss = np.sum(self.expected_losses) / self.batch_size
  return np.sum(_log_cosh_expected_losses()) / _LOG_COSH_BATCH_SIZE


def _log_cosh_scalar_weighted(sample_weight=2.3):
  # expected_loss = (
  #     sample_weight * np.sum(self.expected_losses) / self.batch_size)
  return (sample_weight * np.sum(_log_cosh_expected_losses())
          / _LOG_COSH_BATCH_SIZE)


def _log_cosh_sample_weighted():
  # expected_loss = np.multiply(
  #     self.expected_losses,
  #     np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  # )
  # expected_loss = np.sum(expected_loss) / self.batch_size
  expected_loss = np.multiply(
      _log_cosh_expected_losses(),
      np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  )
  return np.sum(expected_loss) / _LOG_COSH_BATCH_SIZE


def _kld_expected_losses():
  # KLDivergenceTest.setup: self.expected_losses = np.multiply(
  #     self.y_true, np.log(self.y_true / self.y_pred))
  y_pred = np.asarray(
      [0.4, 0.9, 0.12, 0.36, 0.3, 0.4], dtype=np.float32).reshape((2, 3))
  y_true = np.asarray(
      [0.5, 0.8, 0.12, 0.7, 0.43, 0.8], dtype=np.float32).reshape((2, 3))
  return np.multiply(y_true, np.log(y_true / y_pred))


_KLD_BATCH_SIZE = 2  # KLDivergenceTest.setup: self.batch_size = 2


def _kld_unweighted():
  # expected_loss = np.sum(self.expected_losses) / self.batch_size
  return np.sum(_kld_expected_losses()) / _KLD_BATCH_SIZE


def _kld_scalar_weighted(sample_weight=2.3):
  # expected_loss = (
  #     sample_weight * np.sum(self.expected_losses) / self.batch_size)
  return sample_weight * np.sum(_kld_expected_losses()) / _KLD_BATCH_SIZE


def _kld_sample_weighted():
  # expected_loss = np.multiply(
  #     self.expected_losses,
  #     np.asarray(
  #         [1.2, 1.2, 1.2, 3.4, 3.4, 3.4], dtype=np.float32
  #     ).reshape(2, 3),
  # )
  # expected_loss = np.sum(expected_loss) / self.batch_size
  expected_loss = np.multiply(
      _kld_expected_losses(),
      np.asarray(
          [1.2, 1.2, 1.2, 3.4, 3.4, 3.4], dtype=np.float32).reshape(2, 3),
  )
  return np.sum(expected_loss) / _KLD_BATCH_SIZE


def _poisson_expected_losses():
  # PoissonTest.setup: self.expected_losses = self.y_pred - np.multiply(
  #     self.y_true, np.log(self.y_pred))
  y_pred = np.asarray([1, 9, 2, 5, 2, 6], dtype=np.float32).reshape((2, 3))
  y_true = np.asarray([4, 8, 12, 8, 1, 3], dtype=np.float32).reshape((2, 3))
  return y_pred - np.multiply(y_true, np.log(y_pred))


_POISSON_BATCH_SIZE = 6  # PoissonTest.setup: self.batch_size = 6


def _poisson_unweighted():
  # expected_loss = np.sum(self.expected_losses) / self.batch_size
  return np.sum(_poisson_expected_losses()) / _POISSON_BATCH_SIZE


def _poisson_scalar_weighted(sample_weight=2.3):
  # expected_loss = (
  #     sample_weight * np.sum(self.expected_losses) / self.batch_size)
  return (sample_weight * np.sum(_poisson_expected_losses())
          / _POISSON_BATCH_SIZE)


def _poisson_sample_weighted():
  # expected_loss = np.multiply(
  #     self.expected_losses,
  #     np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  # )
  # expected_loss = np.sum(expected_loss) / self.batch_size
  expected_loss = np.multiply(
      _poisson_expected_losses(),
      np.asarray([1.2, 1.2, 1.2, 3.4, 3.4, 3.4]).reshape((2, 3)),
  )
  return np.sum(expected_loss) / _POISSON_BATCH_SIZE


def _scce_binary_segmentation():
  # SparseCategoricalCrossentropyTest.test_binary_segmentation:
  #   expected = np.array([-np.log(0.2), -np.log(0.4)])
  #   self.assertAllClose(output, expected.sum() / 16.0)  # 16 pixels
  expected = np.array([-np.log(0.2), -np.log(0.4)])
  return expected.sum() / 16.0


def _scce_multi_class_segmentation():
  # SparseCategoricalCrossentropyTest.test_multi_class_segmentation:
  #   expected = np.array([-np.log(0.2), -np.log(0.3), -np.log(0.5)])
  #   self.assertAllClose(output, expected.sum() / 16.0)  # 16 pixels
  expected = np.array(
      [
          -np.log(0.2),
          -np.log(0.3),
          -np.log(0.5),
      ]
  )
  return expected.sum() / 16.0


def _gce_binary(q):
  # CategoricalGeneralizedCrossEntropyTest.test_basic_correctness_for_binary:
  #   expected = np.array([(1 - np.power(0.7, q)) / q,
  #       (1 - np.power(0.8, q)) / q, (1 - np.power(0.6, q)) / q,
  #       (1 - np.power(0.6, q)) / q])   (q = 0.5, then q = 0.8)
  #   self.assertAllClose(output, expected.sum() / len(expected))
  expected = np.array(
      [
          (1 - np.power(0.7, q)) / q,
          (1 - np.power(0.8, q)) / q,
          (1 - np.power(0.6, q)) / q,
          (1 - np.power(0.6, q)) / q,
      ]
  )
  return expected.sum() / len(expected)


def _gce_multi_class(q):
  # CategoricalGeneralizedCrossEntropyTest
  #     .test_basic_correctness_for_multi_class:
  #   expected = np.array([(1 - np.power(0.7, q)) / q,
  #       (1 - np.power(0.2, q)) / q, (1 - np.power(0.6, q)) / q,
  #       (1 - np.power(0.2, q)) / q])   (q = 0.5, then q = 0.8)
  #   self.assertAllClose(output, expected.sum() / len(expected))
  expected = np.array(
      [
          (1 - np.power(0.7, q)) / q,
          (1 - np.power(0.2, q)) / q,
          (1 - np.power(0.6, q)) / q,
          (1 - np.power(0.2, q)) / q,
      ]
  )
  return expected.sum() / len(expected)


def _gce_binary_segmentation():
  # CategoricalGeneralizedCrossEntropyTest.test_binary_segmentation:
  #   expected = np.array([(1 - np.power(0.2, 0.5)) / 0.5,
  #                        (1 - np.power(0.4, 0.5)) / 0.5])
  #   self.assertAllClose(output, expected.sum() / 16.0)  # 16 pixels
  expected = np.array(
      [
          (1 - np.power(0.2, 0.5)) / 0.5,
          (1 - np.power(0.4, 0.5)) / 0.5,
      ]
  )
  return expected.sum() / 16.0


def _gce_multi_class_segmentation():
  # CategoricalGeneralizedCrossEntropyTest.test_multi_class_segmentation:
  #   expected = np.array([(1 - np.power(0.2, 0.5)) / 0.5,
  #       (1 - np.power(0.0, 0.5)) / 0.5, (1 - np.power(0.5, 0.5)) / 0.5])
  #   self.assertAllClose(output, expected.sum() / 16.0)  # 16 pixels
  expected = np.array(
      [
          (1 - np.power(0.2, 0.5)) / 0.5,
          (1 - np.power(0.0, 0.5)) / 0.5,
          (1 - np.power(0.5, 0.5)) / 0.5,
      ]
  )
  return expected.sum() / 16.0


# --------------------------------------------------------------------------
# Shared inputs (literal copies of the tests' arrays).
# --------------------------------------------------------------------------

def _f32(x):
  return np.array(x, dtype=np.float32)


# MeanSquaredError / MeanAbsoluteError / MAPE / MSLE tests.
_REG_TRUE = np.array([[1, 9, 2], [-5, -2, 6]])
_REG_PRED = np.array([[4, 8, 12], [8, 1, 3]], dtype="float32")
_REG_ALL_CORRECT = np.array([[4, 8, 12], [8, 1, 3]])

# Hinge / SquaredHinge / CategoricalHinge tests.
_HINGE_TRUE = _f32([[0.0, 1.0], [0.0, 0.0]])
_HINGE_PRED = _f32([[0.6, 0.4], [0.4, 0.6]])

# CosineSimilarityTest.setup
_COS_TRUE = np.asarray([[1, 9, 2], [-5, -2, 6]], dtype=np.float32)
_COS_PRED = np.asarray([[4, 8, 12], [8, 1, 3]], dtype=np.float32)

# HuberLossTest.setup
_HUBER_PRED = _f32([[0.9, 0.2, 0.2], [0.8, 0.4, 0.6]])
_HUBER_TRUE = _f32([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

# LogCoshTest.setup
_LOGCOSH_TRUE = np.asarray([[1, 9, 2], [-5, -2, 6]], dtype=np.float32)
_LOGCOSH_PRED = np.asarray([[4, 8, 12], [8, 1, 3]], dtype=np.float32)

# KLDivergenceTest.setup
_KLD_PRED = np.asarray(
    [0.4, 0.9, 0.12, 0.36, 0.3, 0.4], dtype=np.float32).reshape((2, 3))
_KLD_TRUE = np.asarray(
    [0.5, 0.8, 0.12, 0.7, 0.43, 0.8], dtype=np.float32).reshape((2, 3))

# PoissonTest.setup
_POISSON_PRED = np.asarray([1, 9, 2, 5, 2, 6], dtype=np.float32).reshape(
    (2, 3))
_POISSON_TRUE = np.asarray([4, 8, 12, 8, 1, 3], dtype=np.float32).reshape(
    (2, 3))

# BinaryCrossentropyTest
_BCE_EYE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
_BCE_EYE_LOGITS = _f32([
    [10.0, -10.0, -10.0],
    [-10.0, 10.0, -10.0],
    [-10.0, -10.0, 10.0],
])
_BCE_PRED = np.array(
    [[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
_BCE_TRUE_2x2 = np.array([1, 0, 1, 0]).reshape([2, 2])
_BCE_PRED_2x2 = np.array([1, 1, 1, 0], dtype=np.float32).reshape([2, 2])
_BCE_TRUE_2x3 = np.array([[1, 0, 1], [0, 1, 1]])
_BCE_LOGITS_2x3 = _f32([[10.0, -10.0, 10.0], [10.0, 10.0, -10.0]])

# CategoricalCrossentropyTest / CategoricalFocalCrossentropyTest
_CCE_EYE_INT64 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="int64")
_CCE_EYE_PRED = np.array(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype="float32")
_CCE_EYE_LOGITS = _f32([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
_CCE_TRUE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
_CCE_PRED = np.array(
    [[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]], dtype="float32")
_CCE_LOGITS = _f32([[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]])
_CCE_SAMPLE_WEIGHT = np.array([[1.2], [3.4], [5.6]]).reshape((3,))

# SparseCategoricalCrossentropyTest
_SCCE_TRUE_COL_INT64 = np.array([[0], [1], [2]], dtype="int64")
_SCCE_TRUE_FLAT = np.array([0, 1, 2])
_SCCE_TRUE_COL = np.array([[0], [1], [2]])
_SEG_TRUE_BINARY = np.array(
    [[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])
_SEG_PRED_BINARY_CORRECT = _f32([
    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]],
    [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
    [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]],
])
_SEG_PRED_BINARY = _f32([
    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.2, 0.8]],
    [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
    [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.4]],
])
_SEG_TRUE_MULTI = np.array(
    [[0, 1, 2, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])
_SEG_PRED_MULTI_CORRECT = _f32([
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0],
    ],
    [
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
    ],
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
    ],
    [
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
    ],
])
# SparseCategoricalCrossentropyTest.test_multi_class_segmentation, 2nd call.
_SCCE_SEG_PRED_MULTI = _f32([
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.2, 0.0, 0.8],
    ],
    [
        [0.7, 0.3, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
    ],
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
    ],
    [
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.0, 1.0, 0.0],
    ],
])
# CategoricalGeneralizedCrossEntropyTest.test_multi_class_segmentation, 2nd
# call (differs from the SCCE one in row 2, pixel 1: [1.0, 0.0, 0.0]).
_GCE_SEG_PRED_MULTI = _f32([
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.2, 0.0, 0.8],
    ],
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
    ],
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
    ],
    [
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.0, 1.0, 0.0],
    ],
])

# BinaryFocalCrossentropyTest
_BFCE_EYE_LOGITS = _f32([
    [100.0, -100.0, -100.0],
    [-100.0, 100.0, -100.0],
    [-100.0, -100.0, 100.0],
])
_BFCE_TRUE_2x2 = np.asarray([1, 0, 1, 0]).reshape([2, 2])
_BFCE_PRED_2x2 = np.asarray([0.9, 0.8, 0.7, 0.2], dtype=np.float32).reshape(
    [2, 2])
_BFCE_TRUE_2x3 = np.array([[1, 1, 0], [0, 1, 0]], dtype="float32")
_BFCE_LOGITS_2x3 = _f32([[1.5, -2.7, 2.9], [-3.8, 1.2, -4.5]])

# DiceTest / TverskyTest *_with_axis
_SEG4D_TRUE = _f32(
    [[[[1.0], [1.0]], [[0.0], [0.0]]], [[[1.0], [1.0]], [[0.0], [0.0]]]])
_SEG4D_PRED = _f32(
    [[[[0.0], [1.0]], [[0.0], [1.0]]], [[[0.4], [0.0]], [[0.0], [0.9]]]])

# CategoricalGeneralizedCrossEntropyTest basic correctness
_GCE_TRUE = np.array([0, 1, 0, 1])
_GCE_PRED_BINARY = _f32([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
_GCE_PRED_MULTI = _f32(
    [[0.7, 0.3, 0.0], [0.2, 0.2, 0.6], [0.6, 0.4, 0.0], [0.2, 0.2, 0.6]])

_SOBS = "sum_over_batch_size"


CASES: Tuple[KerasCase, ...] = (
    # ---------------------------------------------------------------- MSE
    KerasCase("MeanSquaredErrorTest.test_all_correct_unweighted",
              "mean_squared_error", _REG_ALL_CORRECT, _REG_ALL_CORRECT,
              0.0, _SOBS, decimal=3),
    KerasCase("MeanSquaredErrorTest.test_unweighted", "mean_squared_error",
              _REG_TRUE, _REG_PRED, 49.5, _SOBS, decimal=3),
    KerasCase("MeanSquaredErrorTest.test_scalar_weighted",
              "mean_squared_error", _REG_TRUE, _REG_PRED, 113.85, _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanSquaredErrorTest.test_sample_weighted",
              "mean_squared_error", _REG_TRUE, _REG_PRED, 767.8 / 6, _SOBS,
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    KerasCase("MeanSquaredErrorTest.test_zero_weighted", "mean_squared_error",
              _REG_TRUE, _REG_PRED, 0.0, _SOBS,
              sample_weight=np.full(2, 0), decimal=3),
    KerasCase("MeanSquaredErrorTest.test_no_reduction", "mean_squared_error",
              _REG_TRUE, _REG_PRED, [84.3333, 143.3666], "none",
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanSquaredErrorTest.test_sum_reduction", "mean_squared_error",
              _REG_TRUE, _REG_PRED, 227.69998, "sum",
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanSquaredErrorTest.test_mean_with_sample_weight_reduction",
              "mean_squared_error", _REG_TRUE, _REG_PRED,
              (110 / 3 * 1.2 + 187 / 3 * 3.4) / (1.2 + 3.4), "mean",
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    # ---------------------------------------------------------------- MAE
    KerasCase("MeanAbsoluteErrorTest.test_all_correct_unweighted",
              "mean_absolute_error", _REG_ALL_CORRECT, _REG_ALL_CORRECT,
              0.0, _SOBS, decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_unweighted", "mean_absolute_error",
              _REG_TRUE, _REG_PRED, 5.5, _SOBS, decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_scalar_weighted",
              "mean_absolute_error", _REG_TRUE, _REG_PRED, 12.65, _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_sample_weighted",
              "mean_absolute_error", _REG_TRUE, _REG_PRED, 81.4 / 6, _SOBS,
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_zero_weighted",
              "mean_absolute_error", _REG_TRUE, _REG_PRED, 0.0, _SOBS,
              sample_weight=np.full(2, 0), decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_no_reduction",
              "mean_absolute_error", _REG_TRUE, _REG_PRED,
              [10.7333, 14.5666], "none",
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_sum_reduction",
              "mean_absolute_error", _REG_TRUE, _REG_PRED, 25.29999, "sum",
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanAbsoluteErrorTest.test_mean_with_sample_weight_reduction",
              "mean_absolute_error", _REG_TRUE, _REG_PRED,
              (14 / 3 * 1.2 + 19 / 3 * 3.4) / (1.2 + 3.4), "mean",
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    # --------------------------------------------------------------- MAPE
    KerasCase("MeanAbsolutePercentageErrorTest.test_all_correct_unweighted",
              "mean_absolute_percentage_error", _REG_ALL_CORRECT,
              _REG_ALL_CORRECT, 0.0, _SOBS, decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest.test_unweighted",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              211.8518, _SOBS, decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest.test_scalar_weighted",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              487.259, _SOBS, sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest.test_sample_weighted",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              422.8888, _SOBS,
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest.test_zero_weighted",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              0.0, _SOBS, sample_weight=np.full(2, 0), decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest.test_no_reduction",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              [621.8518, 352.6666], "none",
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanAbsolutePercentageErrorTest"
              ".test_mean_with_sample_weight_reduction",
              "mean_absolute_percentage_error", _REG_TRUE, _REG_PRED,
              183.865, "mean",
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    # --------------------------------------------------------------- MSLE
    KerasCase("MeanSquaredLogarithmicErrorTest.test_unweighted",
              "mean_squared_logarithmic_error", _REG_TRUE, _REG_PRED,
              1.4370, _SOBS, decimal=3),
    KerasCase("MeanSquaredLogarithmicErrorTest.test_scalar_weighted",
              "mean_squared_logarithmic_error", _REG_TRUE, _REG_PRED,
              3.3051, _SOBS, sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("MeanSquaredLogarithmicErrorTest.test_sample_weighted",
              "mean_squared_logarithmic_error", _REG_TRUE, _REG_PRED,
              3.7856, _SOBS,
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    KerasCase("MeanSquaredLogarithmicErrorTest.test_zero_weighted",
              "mean_squared_logarithmic_error", _REG_TRUE, _REG_PRED,
              0.0, _SOBS, sample_weight=np.full(2, 0), decimal=3),
    KerasCase("MeanSquaredLogarithmicErrorTest"
              ".test_mean_with_sample_weight_reduction",
              "mean_squared_logarithmic_error", _REG_TRUE, _REG_PRED,
              1.646, "mean",
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    # -------------------------------------------------------------- Hinge
    KerasCase("HingeTest.test_unweighted#1", "hinge", _HINGE_TRUE,
              _HINGE_PRED, 1.3, "sum_over_batch_size", decimal=3),
    KerasCase("HingeTest.test_unweighted#2", "hinge", _HINGE_TRUE,
              _HINGE_PRED, 2.6, "sum", decimal=3),
    KerasCase("HingeTest.test_unweighted#3", "hinge", _HINGE_TRUE,
              _HINGE_PRED, [1.1, 1.5], "none"),
    KerasCase("HingeTest.test_weighted#1", "hinge", _HINGE_TRUE, _HINGE_PRED,
              0.55, "sum_over_batch_size", sample_weight=np.array([1, 0]),
              decimal=3),
    KerasCase("HingeTest.test_weighted#2", "hinge", _HINGE_TRUE, _HINGE_PRED,
              1.1, "sum", sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("HingeTest.test_weighted#3", "hinge", _HINGE_TRUE, _HINGE_PRED,
              [1.1, 0.0], "none", sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("HingeTest.test_zero_weighted", "hinge", _HINGE_TRUE,
              _HINGE_PRED, 0.0, _SOBS, sample_weight=np.full(2, 0.0),
              atol=0.0, note="assertEqual (exact)"),
    # ------------------------------------------------------- SquaredHinge
    KerasCase("SquaredHingeTest.test_unweighted#1", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, 1.86, "sum_over_batch_size",
              decimal=3),
    KerasCase("SquaredHingeTest.test_unweighted#2", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, 3.72, "sum", decimal=3),
    KerasCase("SquaredHingeTest.test_unweighted#3", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, [1.46, 2.26], "none"),
    KerasCase("SquaredHingeTest.test_weighted#1", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, 0.73, "sum_over_batch_size",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("SquaredHingeTest.test_weighted#2", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, 1.46, "sum",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("SquaredHingeTest.test_weighted#3", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, [1.46, 0.0], "none",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("SquaredHingeTest.test_zero_weighted", "squared_hinge",
              _HINGE_TRUE, _HINGE_PRED, 0.0, _SOBS,
              sample_weight=np.full(2, 0.0), atol=0.0,
              note="assertEqual (exact)"),
    # --------------------------------------------------- CategoricalHinge
    KerasCase("CategoricalHingeTest.test_unweighted#1", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, 1.4, "sum_over_batch_size",
              decimal=3),
    KerasCase("CategoricalHingeTest.test_unweighted#2", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, 2.8, "sum", decimal=3),
    KerasCase("CategoricalHingeTest.test_unweighted#3", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, [1.2, 1.6], "none"),
    KerasCase("CategoricalHingeTest.test_weighted#1", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, 0.6, "sum_over_batch_size",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("CategoricalHingeTest.test_weighted#2", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, 1.2, "sum",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("CategoricalHingeTest.test_weighted#3", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, [1.2, 0.0], "none",
              sample_weight=np.array([1, 0]), decimal=3),
    KerasCase("CategoricalHingeTest.test_zero_weighted", "categorical_hinge",
              _HINGE_TRUE, _HINGE_PRED, 0.0, _SOBS,
              sample_weight=np.full(2, 0.0), atol=0.0,
              note="assertEqual (exact)"),
    # --------------------------------------------------- CosineSimilarity
    # expected_loss = -np.mean(self.expected_loss)
    KerasCase("CosineSimilarityTest.test_unweighted", "cosine_similarity",
              _COS_TRUE, _COS_PRED, -np.mean(_cosine_expected_loss()),
              _SOBS, decimal=3),
    # expected_loss = -np.mean(self.expected_loss * sample_weight)  (2.3)
    KerasCase("CosineSimilarityTest.test_scalar_weighted",
              "cosine_similarity", _COS_TRUE, _COS_PRED,
              -np.mean(_cosine_expected_loss() * 2.3), _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    # expected_loss = -np.mean(self.expected_loss * sample_weight)
    #   (sample_weight = np.asarray([1.2, 3.4]))
    KerasCase("CosineSimilarityTest.test_sample_weighted",
              "cosine_similarity", _COS_TRUE, _COS_PRED,
              -np.mean(_cosine_expected_loss() * np.asarray([1.2, 3.4])),
              _SOBS, sample_weight=np.asarray([1.2, 3.4]), decimal=3),
    KerasCase("CosineSimilarityTest.test_zero_weighted", "cosine_similarity",
              _COS_TRUE, _COS_PRED, 0.0, _SOBS,
              sample_weight=np.full(2, 0), decimal=3),
    # self.setup(axis=1); expected_loss = -np.mean(self.expected_loss)
    KerasCase("CosineSimilarityTest.test_axis", "cosine_similarity",
              _COS_TRUE, _COS_PRED, -np.mean(_cosine_expected_loss(axis=1)),
              _SOBS, args=(("axis", 1),), decimal=3),
    # -------------------------------------------------------------- Huber
    KerasCase("HuberLossTest.test_all_correct", "huber", _HUBER_TRUE,
              _HUBER_TRUE, 0.0, _SOBS, decimal=3),
    KerasCase("HuberLossTest.test_unweighted", "huber", _HUBER_TRUE,
              _HUBER_PRED, _huber_unweighted(), _SOBS, decimal=3),
    KerasCase("HuberLossTest.test_scalar_weighted", "huber", _HUBER_TRUE,
              _HUBER_PRED, _huber_scalar_weighted(2.3), _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("HuberLossTest.test_sample_weighted", "huber", _HUBER_TRUE,
              _HUBER_PRED, _huber_sample_weighted(), _SOBS,
              sample_weight=np.array([[1.2], [3.4]]).reshape((2,)),
              decimal=3),
    KerasCase("HuberLossTest.test_zero_weighted", "huber", _HUBER_TRUE,
              _HUBER_PRED, 0.0, _SOBS, sample_weight=np.full(2, 0),
              decimal=3),
    KerasCase("HuberLossTest.test_non_default_delta", "huber", _HUBER_TRUE,
              _HUBER_PRED, _huber_scalar_weighted(2.3, delta=0.8), _SOBS,
              sample_weight=np.full(2, 2.3), args=(("delta", 0.8),),
              decimal=3),
    # ------------------------------------------------------------ LogCosh
    KerasCase("LogCoshTest.test_unweighted", "log_cosh", _LOGCOSH_TRUE,
              _LOGCOSH_PRED, _log_cosh_unweighted(), _SOBS, decimal=3),
    KerasCase("LogCoshTest.test_scalar_weighted", "log_cosh", _LOGCOSH_TRUE,
              _LOGCOSH_PRED, _log_cosh_scalar_weighted(2.3), _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("LogCoshTest.test_sample_weighted", "log_cosh", _LOGCOSH_TRUE,
              _LOGCOSH_PRED, _log_cosh_sample_weighted(), _SOBS,
              sample_weight=np.asarray([1.2, 3.4]), decimal=3),
    KerasCase("LogCoshTest.test_zero_weighted", "log_cosh", _LOGCOSH_TRUE,
              _LOGCOSH_PRED, 0.0, _SOBS, sample_weight=np.full(2, 0),
              decimal=3),
    # ------------------------------------------------------- KLDivergence
    KerasCase("KLDivergenceTest.test_unweighted", "kl_divergence", _KLD_TRUE,
              _KLD_PRED, _kld_unweighted(), _SOBS, decimal=3),
    KerasCase("KLDivergenceTest.test_scalar_weighted", "kl_divergence",
              _KLD_TRUE, _KLD_PRED, _kld_scalar_weighted(2.3), _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("KLDivergenceTest.test_sample_weighted", "kl_divergence",
              _KLD_TRUE, _KLD_PRED, _kld_sample_weighted(), _SOBS,
              sample_weight=np.asarray([1.2, 3.4], dtype=np.float32),
              decimal=3),
    KerasCase("KLDivergenceTest.test_zero_weighted", "kl_divergence",
              _KLD_TRUE, _KLD_PRED, 0.0, _SOBS, sample_weight=np.full(2, 0),
              decimal=3),
    # ------------------------------------------------------------ Poisson
    KerasCase("PoissonTest.test_unweighted", "poisson", _POISSON_TRUE,
              _POISSON_PRED, _poisson_unweighted(), _SOBS, decimal=3),
    KerasCase("PoissonTest.test_scalar_weighted", "poisson", _POISSON_TRUE,
              _POISSON_PRED, _poisson_scalar_weighted(2.3), _SOBS,
              sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("PoissonTest.test_sample_weighted", "poisson", _POISSON_TRUE,
              _POISSON_PRED, _poisson_sample_weighted(), _SOBS,
              sample_weight=np.asarray([1.2, 3.4]), decimal=3),
    KerasCase("PoissonTest.test_zero_weighted", "poisson", _POISSON_TRUE,
              _POISSON_PRED, 0.0, _SOBS, sample_weight=np.full(2, 0),
              decimal=3),
    # ------------------------------------------------- BinaryCrossentropy
    KerasCase("BinaryCrossentropyTest.test_all_correct_unweighted#1",
              "binary_crossentropy", _BCE_EYE, _BCE_EYE, 0.0, _SOBS,
              decimal=3),
    KerasCase("BinaryCrossentropyTest.test_all_correct_unweighted#2",
              "binary_crossentropy", _BCE_EYE, _BCE_EYE_LOGITS, 0.0, _SOBS,
              args=(("from_logits", True),), decimal=3),
    KerasCase("BinaryCrossentropyTest.test_unweighted#1",
              "binary_crossentropy", _BCE_EYE, _BCE_PRED, 0.20046903, _SOBS),
    KerasCase("BinaryCrossentropyTest.test_unweighted#2",
              "binary_crossentropy", _BCE_TRUE_2x2, _BCE_PRED_2x2, 3.98559,
              _SOBS, decimal=3),
    KerasCase("BinaryCrossentropyTest.test_unweighted#3",
              "binary_crossentropy", _BCE_TRUE_2x3, _BCE_LOGITS_2x3, 3.3333,
              _SOBS, args=(("from_logits", True),), decimal=3),
    KerasCase("BinaryCrossentropyTest.test_scalar_weighted#1",
              "binary_crossentropy", _BCE_TRUE_2x2, _BCE_PRED_2x2, 9.1668,
              _SOBS, sample_weight=np.full(2, 2.3), decimal=3),
    KerasCase("BinaryCrossentropyTest.test_scalar_weighted#2",
              "binary_crossentropy", _BCE_TRUE_2x3, _BCE_LOGITS_2x3, 7.666,
              _SOBS, sample_weight=np.full(2, 2.3),
              args=(("from_logits", True),), decimal=3),
    KerasCase("BinaryCrossentropyTest.test_sample_weighted#1",
              "binary_crossentropy", _BCE_TRUE_2x2, _BCE_PRED_2x2, 4.7827,
              _SOBS, sample_weight=np.array([1.2, 3.4]).reshape((2,)),
              decimal=3),
    KerasCase("BinaryCrossentropyTest.test_sample_weighted#2",
              "binary_crossentropy", _BCE_TRUE_2x3, _BCE_LOGITS_2x3, 10.0,
              _SOBS, sample_weight=np.array([4, 3]),
              args=(("from_logits", True),), decimal=3),
    KerasCase("BinaryCrossentropyTest.test_no_reduction",
              "binary_crossentropy", _BCE_TRUE_2x3, _BCE_LOGITS_2x3,
              [0.0, 6.666], "none", args=(("from_logits", True),),
              atol=1e-3),
    # expected_value = (10.0 + 5.0 * label_smoothing) / 3.0
    KerasCase("BinaryCrossentropyTest.test_label_smoothing",
              "binary_crossentropy", np.array([[1, 0, 1]]),
              _f32([[10.0, -10.0, -10.0]]), (10.0 + 5.0 * 0.1) / 3.0, _SOBS,
              args=(("from_logits", True), ("label_smoothing", 0.1)),
              decimal=3),
    # -------------------------------------------- CategoricalCrossentropy
    KerasCase("CategoricalCrossentropyTest.test_all_correct_unweighted#1",
              "categorical_crossentropy", _CCE_EYE_INT64, _CCE_EYE_PRED, 0.0,
              _SOBS, decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_all_correct_unweighted#2",
              "categorical_crossentropy", _CCE_EYE_INT64, _CCE_EYE_LOGITS,
              0.0, _SOBS, args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_unweighted#1",
              "categorical_crossentropy", _CCE_TRUE, _CCE_PRED, 0.3239,
              _SOBS, decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_unweighted#2",
              "categorical_crossentropy", _CCE_TRUE, _CCE_LOGITS, 0.0573,
              _SOBS, args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_scalar_weighted#1",
              "categorical_crossentropy", _CCE_TRUE, _CCE_PRED, 0.7449,
              _SOBS, sample_weight=np.full(3, 2.3), decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_scalar_weighted#2",
              "categorical_crossentropy", _CCE_TRUE, _CCE_LOGITS, 0.1317,
              _SOBS, sample_weight=np.full(3, 2.3),
              args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_sample_weighted#1",
              "categorical_crossentropy", _CCE_TRUE, _CCE_PRED, 1.0696,
              _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT, decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_sample_weighted#2",
              "categorical_crossentropy", _CCE_TRUE, _CCE_LOGITS, 0.31829,
              _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT,
              args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_no_reduction",
              "categorical_crossentropy", _CCE_TRUE, _CCE_LOGITS,
              (0.001822, 0.000459, 0.169846), "none",
              args=(("from_logits", True),)),
    # expected_value = 400.0 * label_smoothing / 3.0
    KerasCase("CategoricalCrossentropyTest.test_label_smoothing",
              "categorical_crossentropy", np.array([[1, 0, 0]]),
              _f32([[100.0, -100.0, -100.0]]), 400.0 * 0.1 / 3.0, _SOBS,
              args=(("from_logits", True), ("label_smoothing", 0.1)),
              decimal=3),
    KerasCase("CategoricalCrossentropyTest.test_label_smoothing_ndarray",
              "categorical_crossentropy", np.asarray([[1, 0, 0]]),
              _f32([[100.0, -100.0, -100.0]]), 400.0 * 0.1 / 3.0, _SOBS,
              args=(("from_logits", True), ("label_smoothing", 0.1)),
              decimal=3),
    # -------------------------------------- SparseCategoricalCrossentropy
    KerasCase("SparseCategoricalCrossentropyTest.test_all_correct_unweighted#1",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL_INT64,
              _CCE_EYE_PRED, 0.0, _SOBS, decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_all_correct_unweighted#2",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL_INT64,
              _CCE_EYE_LOGITS, 0.0, _SOBS, args=(("from_logits", True),),
              decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_unweighted#1",
              "sparse_categorical_crossentropy", _SCCE_TRUE_FLAT, _CCE_PRED,
              0.3239, _SOBS, decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_unweighted#2",
              "sparse_categorical_crossentropy", _SCCE_TRUE_FLAT, _CCE_LOGITS,
              0.0573, _SOBS, args=(("from_logits", True),), decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_scalar_weighted#1",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL, _CCE_PRED,
              0.7449, _SOBS, sample_weight=np.full(3, 2.3), decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_scalar_weighted#2",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL, _CCE_LOGITS,
              0.1317, _SOBS, sample_weight=np.full(3, 2.3),
              args=(("from_logits", True),), decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_sample_weighted#1",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL, _CCE_PRED,
              1.0696, _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT, decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_sample_weighted#2",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL, _CCE_LOGITS,
              0.31829, _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT,
              args=(("from_logits", True),), decimal=3),
    KerasCase("SparseCategoricalCrossentropyTest.test_no_reduction",
              "sparse_categorical_crossentropy", _SCCE_TRUE_COL, _CCE_LOGITS,
              (0.001822, 0.000459, 0.169846), "none",
              args=(("from_logits", True),)),
    KerasCase("SparseCategoricalCrossentropyTest.test_binary_segmentation#1",
              "sparse_categorical_crossentropy", _SEG_TRUE_BINARY,
              _SEG_PRED_BINARY_CORRECT, 0.0, _SOBS,
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("SparseCategoricalCrossentropyTest.test_binary_segmentation#2",
              "sparse_categorical_crossentropy", _SEG_TRUE_BINARY,
              _SEG_PRED_BINARY, _scce_binary_segmentation(), _SOBS,
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("SparseCategoricalCrossentropyTest"
              ".test_multi_class_segmentation#1",
              "sparse_categorical_crossentropy", _SEG_TRUE_MULTI,
              _SEG_PRED_MULTI_CORRECT, 0.0, _SOBS,
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("SparseCategoricalCrossentropyTest"
              ".test_multi_class_segmentation#2",
              "sparse_categorical_crossentropy", _SEG_TRUE_MULTI,
              _SCCE_SEG_PRED_MULTI, _scce_multi_class_segmentation(), _SOBS,
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    # ------------------------------------------- BinaryFocalCrossentropy
    KerasCase("BinaryFocalCrossentropyTest.test_all_correct_unweighted#1",
              "binary_focal_crossentropy", _BCE_EYE, _BCE_EYE, 0.0, _SOBS,
              args=(("gamma", 1.5),), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_all_correct_unweighted#2",
              "binary_focal_crossentropy", _BCE_EYE, _BFCE_EYE_LOGITS, 0.0,
              _SOBS, args=(("gamma", 2.0), ("from_logits", True)),
              decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_unweighted#1",
              "binary_focal_crossentropy", _BFCE_TRUE_2x2, _BFCE_PRED_2x2,
              0.268, _SOBS, args=(("gamma", 2.0),), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_unweighted#2",
              "binary_focal_crossentropy", _BFCE_TRUE_2x3, _BFCE_LOGITS_2x3,
              0.799, _SOBS, args=(("gamma", 3.0), ("from_logits", True)),
              decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_scalar_weighted#1",
              "binary_focal_crossentropy", _BFCE_TRUE_2x2, _BFCE_PRED_2x2,
              0.3296, _SOBS, sample_weight=np.full(2, 1.23),
              args=(("gamma", 2.0),), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_scalar_weighted#2",
              "binary_focal_crossentropy", _BFCE_TRUE_2x3, _BFCE_LOGITS_2x3,
              2.565, _SOBS, sample_weight=np.full(2, 3.21),
              args=(("gamma", 3.0), ("from_logits", True)), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_sample_weighted#1",
              "binary_focal_crossentropy", _BFCE_TRUE_2x2, _BFCE_PRED_2x2,
              0.34415, _SOBS,
              sample_weight=np.array([1.2, 3.4]).reshape((2,)),
              args=(("gamma", 2.0),), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_sample_weighted#2",
              "binary_focal_crossentropy", _BFCE_TRUE_2x3, _BFCE_LOGITS_2x3,
              0.95977, _SOBS,
              sample_weight=np.array([1.2, 3.4]).reshape((2,)),
              args=(("gamma", 3.0), ("from_logits", True)), decimal=3),
    KerasCase("BinaryFocalCrossentropyTest.test_no_reduction",
              "binary_focal_crossentropy", _BFCE_TRUE_2x2, _BFCE_PRED_2x2,
              (0.515547, 0.020513), "none", args=(("gamma", 2.0),)),
    # -------------------------------------- CategoricalFocalCrossentropy
    KerasCase("CategoricalFocalCrossentropyTest.test_all_correct_unweighted#1",
              "categorical_focal_crossentropy", _CCE_EYE_INT64, _CCE_EYE_PRED,
              0.0, _SOBS, args=(("alpha", 0.25), ("gamma", 2.0)), decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_all_correct_unweighted#2",
              "categorical_focal_crossentropy", _CCE_EYE_INT64,
              _CCE_EYE_LOGITS, 0.0, _SOBS, args=(("from_logits", True),),
              decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_unweighted#1",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_PRED,
              0.02059, _SOBS, decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_unweighted#2",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_LOGITS,
              0.000345, _SOBS, args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_scalar_weighted#1",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_PRED,
              0.047368, _SOBS, sample_weight=np.full(3, 2.3), decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_scalar_weighted#2",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_LOGITS,
              0.000794, _SOBS, sample_weight=np.full(3, 2.3),
              args=(("from_logits", True),), decimal=4),
    KerasCase("CategoricalFocalCrossentropyTest.test_sample_weighted#1",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_PRED,
              0.06987, _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT, decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_sample_weighted#2",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_LOGITS,
              0.001933, _SOBS, sample_weight=_CCE_SAMPLE_WEIGHT,
              args=(("from_logits", True),), decimal=3),
    KerasCase("CategoricalFocalCrossentropyTest.test_no_reduction",
              "categorical_focal_crossentropy", _CCE_TRUE, _CCE_LOGITS,
              (1.5096224e-09, 2.4136547e-11, 1.0360638e-03), "none",
              args=(("from_logits", True),)),
    KerasCase("CategoricalFocalCrossentropyTest.test_label_smoothing",
              "categorical_focal_crossentropy", np.array([[1, 0, 0]]),
              _f32([[4.9, -0.5, 2.05]]), 0.06685, _SOBS,
              args=(("from_logits", True), ("label_smoothing", 0.1)),
              decimal=3),
    # ---------------------------------------------------------------- CTC
    # logits = (np.arange(24).reshape((2, 4, 3)).astype("float32") - 12) / 100
    # Keras asserts the per-position values [[0.0, 1.480129]] (the ignored
    # position is 0): one example's loss is their masked mean over the
    # positions not ignored, 1.480129 (lossaudit's `reduce: mean`).
    KerasCase("SparseCategoricalCrossentropyTest.test_ignore_class#1",
              "sparse_categorical_crossentropy", np.array([[-1, 2]]),
              np.array([[[0.854, 0.698, 0.598], [0.088, 0.86, 0.018]]],
                       dtype=np.float32),
              [1.480129], "none",
              args=(("from_logits", True), ("ignore_class", -1)),
              note="masked mean of Keras' per-position [[0.0, 1.480129]]"),
    KerasCase("SparseCategoricalCrossentropyTest.test_ignore_class#2",
              "sparse_categorical_crossentropy", np.array([[[-1], [2]]]),
              np.array([[[0.854, 0.698, 0.598], [0.088, 0.86, 0.018]]],
                       dtype=np.float32),
              [1.480129], "none",
              args=(("from_logits", True), ("ignore_class", -1)),
              note="masked mean of Keras' per-position [[0.0, 1.480129]]"),
    KerasCase("CTCTest.test_correctness", "ctc",
              np.array(([[1, 2, 1, 0], [1, 2, 0, 2]])),
              (np.arange(24).reshape((2, 4, 3)).astype("float32") - 12) / 100,
              2.448645, _SOBS,
              note="y_true: int64 label sequences (0 = padding/blank); "
                   "y_pred: logits (batch, time, classes)"),
    # --------------------------------------------------------------- Dice
    KerasCase("DiceTest.test_binary_segmentation_with_axis", "dice",
              _SEG4D_TRUE, _SEG4D_PRED, [0.5, 0.75757575], "none",
              args=(("axis", (1, 2, 3)),)),
    # ------------------------------------------------------------ Tversky
    KerasCase("TverskyTest.test_binary_segmentation_with_axis", "tversky",
              _SEG4D_TRUE, _SEG4D_PRED, [0.5, 0.75757575], "none",
              args=(("axis", (1, 2, 3)),)),
    KerasCase("TverskyTest.test_binary_segmentation_custom_coefficients"
              "_with_axis", "tversky", _SEG4D_TRUE, _SEG4D_PRED,
              [0.5, 0.7222222], "none",
              args=(("alpha", 0.2), ("beta", 0.8), ("axis", (1, 2, 3))),
              note="Keras 3.16: [0.5, 0.78494626] (alpha/beta swap fixed)"),
    # ------------------------------- CategoricalGeneralizedCrossEntropy
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_basic_correctness_for_binary#1",
              "categorical_generalized_cross_entropy", _GCE_TRUE,
              _GCE_PRED_BINARY, _gce_binary(0.5), _SOBS,
              note="y_true: int64 class indices; default q=0.5"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_basic_correctness_for_binary#2",
              "categorical_generalized_cross_entropy", _GCE_TRUE,
              _GCE_PRED_BINARY, _gce_binary(0.8), _SOBS, args=(("q", 0.8),),
              note="y_true: int64 class indices"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_basic_correctness_for_multi_class#1",
              "categorical_generalized_cross_entropy", _GCE_TRUE,
              _GCE_PRED_MULTI, _gce_multi_class(0.5), _SOBS,
              note="y_true: int64 class indices; default q=0.5"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_basic_correctness_for_multi_class#2",
              "categorical_generalized_cross_entropy", _GCE_TRUE,
              _GCE_PRED_MULTI, _gce_multi_class(0.8), _SOBS,
              args=(("q", 0.8),), note="y_true: int64 class indices"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_binary_segmentation#1",
              "categorical_generalized_cross_entropy", _SEG_TRUE_BINARY,
              _SEG_PRED_BINARY_CORRECT, 0.0, _SOBS, args=(("q", 0.5),),
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_binary_segmentation#2",
              "categorical_generalized_cross_entropy", _SEG_TRUE_BINARY,
              _SEG_PRED_BINARY, _gce_binary_segmentation(), _SOBS,
              args=(("q", 0.5),),
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_multi_class_segmentation#1",
              "categorical_generalized_cross_entropy", _SEG_TRUE_MULTI,
              _SEG_PRED_MULTI_CORRECT, 0.0, _SOBS, args=(("q", 0.5),),
              note="4 images of 4 pixels: per-sample = mean over pixels"),
    KerasCase("CategoricalGeneralizedCrossEntropyTest"
              ".test_multi_class_segmentation#2",
              "categorical_generalized_cross_entropy", _SEG_TRUE_MULTI,
              _GCE_SEG_PRED_MULTI, _gce_multi_class_segmentation(), _SOBS,
              args=(("q", 0.5),),
              note="4 images of 4 pixels: per-sample = mean over pixels"),
)
