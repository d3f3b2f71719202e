"""Per-sample losses and classification signals, as pure TensorFlow functions.

The per-sample loss is exactly Keras' loss object called with
`reduction=None`, then reduced over any remaining non-batch axes (`mean`, as
Keras does inside a sample, or `sum`). Reduction over the batch is never done
here: statistics are the pipeline's job.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import numpy as np

# Snake-case names users write in configs, mapped to Keras loss classes.
_CLASS_NAMES = {
    "mean_squared_error": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
    "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError",
    "huber": "Huber",
    "log_cosh": "LogCosh",
    "binary_crossentropy": "BinaryCrossentropy",
    "binary_focal_crossentropy": "BinaryFocalCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "categorical_focal_crossentropy": "CategoricalFocalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "kl_divergence": "KLDivergence",
    "poisson": "Poisson",
    "hinge": "Hinge",
    "squared_hinge": "SquaredHinge",
    "categorical_hinge": "CategoricalHinge",
    "cosine_similarity": "CosineSimilarity",
    "dice": "Dice",
    "tversky": "Tversky",
    "ctc": "CTC",
    "categorical_generalized_cross_entropy":
        "CategoricalGeneralizedCrossEntropy",
}
# Losses of lossaudit's own, for positive regression (Keras has none).
_OWN_LOSSES = ("gamma", "tweedie")
# Keras losses with no per-sample value, and why.
NOT_PER_SAMPLE = {
    "circle": "its value for one example depends on the other examples of"
              " its batch (it compares every pair of embeddings), so an"
              " example's loss would change with the batch it is scored in",
}
_ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "logcosh": "log_cosh",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
}
SUPPORTED_LOSSES = tuple(_CLASS_NAMES) + _OWN_LOSSES

# Losses whose y_pred are class scores and whose labels name a class.
SPARSE_CLASSIFICATION = ("sparse_categorical_crossentropy",
                         "categorical_generalized_cross_entropy")
DENSE_CLASSIFICATION = ("categorical_crossentropy",
                        "categorical_focal_crossentropy")
BINARY_CLASSIFICATION = ("binary_crossentropy", "binary_focal_crossentropy")
TAKES_FROM_LOGITS = ("sparse_categorical_crossentropy",) + (
    DENSE_CLASSIFICATION + BINARY_CLASSIFICATION)
# Losses of class probabilities (or logits, with `from_logits`).
TAKES_PROBABILITIES = TAKES_FROM_LOGITS + (
    "categorical_generalized_cross_entropy",)
# Losses whose label at each position is a class index (a sequence for CTC).
INDEX_LABELS = SPARSE_CLASSIFICATION + ("ctc",)
# Losses whose `axis` defaults to every axis but the batch's: Keras' default
# (None) would reduce over the whole batch.
PER_EXAMPLE_AXIS = ("dice", "tversky")
# Loss arguments lossaudit sets itself: what `loss.args` should hold instead.
RESERVED_ARGS = {
    "from_logits": "{key}.from_logits instead (it also says how class signals"
                   " are read from the outputs)",
    "reduction": "no reduction: every example keeps its own loss, and"
                 " {key}.reduce (mean or sum) reduces the axes within one"
                 " example",
}



def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# Keras loss arguments whose values are checked before the run (Keras takes
# any value and gives negative or meaningless losses): what each expects.
ARGUMENT_VALUES: Mapping[str, Tuple[str, Callable[[Any], bool]]] = {
    "label_smoothing": ("a number in [0, 1]",
                        lambda v: _is_number(v) and 0 <= v <= 1),
    "delta": ("a number > 0", lambda v: _is_number(v) and v > 0),
    "gamma": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "alpha": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "beta": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "ignore_class": ("an integer class label, or null",
                     lambda v: v is None or (isinstance(v, int) and
                                             not isinstance(v, bool))),
    "apply_class_balancing": ("true or false",
                              lambda v: isinstance(v, bool)),
}


def canonical_loss_name(name: str) -> Optional[str]:
  """Returns the snake-case Keras loss name for `name`, or None if unknown."""
  key = _ALIASES.get(name, name)
  if key in _CLASS_NAMES or key in _OWN_LOSSES:
    return key
  by_class = {v.lower(): k for k, v in _CLASS_NAMES.items()}
  return by_class.get(name.replace("_", "").lower())


def label_kind(loss_name: str, num_outputs: int) -> str:
  """How labels are read for `loss_name`.

  Returns:
    `sparse` (one int class per example), `categorical` (a one-hot or
    probability vector), `binary` (one 0/1 target with a single sigmoid
    output), `sequence` (CTC: a sequence of class indices, of its own
    length) or `regression` (no class signals).
  """
  name = canonical_loss_name(loss_name)
  if name == "ctc":
    return "sequence"
  if name in SPARSE_CLASSIFICATION:
    return "sparse"
  if name in DENSE_CLASSIFICATION:
    return "categorical"
  if name in BINARY_CLASSIFICATION and num_outputs == 1:
    return "binary"
  return "regression"


def keras_loss(name: str, from_logits: bool = False,
               args: Optional[Mapping[str, Any]] = None) -> Callable:
  """The per-element loss function of `name`, with no reduction over the
  batch: Keras' loss object (`reduction=None`), or lossaudit's own `gamma`
  and `tweedie`.

  Raises:
    TypeError: when `args` holds an argument the loss does not take.
  """
  canonical = canonical_loss_name(name)
  if canonical is None:
    raise ValueError(f"Unknown loss {name!r}")
  kwargs = dict(args or {})
  if canonical in _OWN_LOSSES:
    own = {"gamma": gamma, "tweedie": tweedie}[canonical]
    inspect.signature(own).bind(None, None, **kwargs)
    if canonical == "tweedie":
      _check_power(kwargs.get("power", 1.5))
    return functools.partial(own, **kwargs)
  import keras  # pylint: disable=g-import-not-at-top

  if canonical in TAKES_FROM_LOGITS:
    kwargs.setdefault("from_logits", from_logits)
  cls = getattr(keras.losses, _CLASS_NAMES[canonical])
  return cls(reduction=None, **kwargs)


class LossArgumentsError(TypeError):
  """A custom loss that does not take the arguments of `loss.args`."""


def with_arguments(fn: Callable, args: Mapping[str, Any], path: str
                   ) -> Callable:
  """A custom loss `fn(y_true, y_pred, **args)` with `args` bound.

  Raises:
    LossArgumentsError: `fn` takes no such keyword arguments.
  """
  if not args:
    return fn
  try:
    inspect.signature(fn).bind(None, None, **args)
  except TypeError as e:
    raise LossArgumentsError(
        f"expected keyword arguments that {path} takes: {e}. Received:"
        f" {dict(args)!r}") from None
  except ValueError:  # No signature (a builtin): let the call tell.
    pass
  return functools.partial(fn, **args)


# Positive regression: the negative log-likelihood of each value up to terms
# of `y_true` alone (as scikit-learn's `HalfGammaLoss` and
# `HalfTweedieLoss`), and the unit deviance that makes values comparable.


def gamma(y_true, y_pred):
  """Gamma regression loss `log(mu) + y / mu` per value `(N, ...)`.

  `y_pred` is the mean `mu > 0` (a log link's output, exponentiated).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  y_pred = tf.convert_to_tensor(y_pred)
  y_true = tf.cast(y_true, y_pred.dtype)
  return tf.math.log(y_pred) + y_true / y_pred


def tweedie(y_true, y_pred, power: float = 1.5):
  """Tweedie regression loss `mu^(2-p) / (2-p) - y mu^(1-p) / (1-p)` per
  value `(N, ...)`, for a power `1 < p < 2` (compound Poisson-Gamma).

  Raises:
    ValueError: `power` is not in (1, 2).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  _check_power(power)
  y_pred = tf.convert_to_tensor(y_pred)
  y_true = tf.cast(y_true, y_pred.dtype)
  return (tf.pow(y_pred, 2.0 - power) / (2.0 - power) -
          y_true * tf.pow(y_pred, 1.0 - power) / (1.0 - power))


def _check_power(power) -> None:
  if isinstance(power, bool) or not isinstance(power, (int, float)) or not (
      1 < power < 2):
    raise ValueError(
        "power: expected a number strictly between 1 and 2 (use poisson for"
        f" 1 and gamma for 2). Received: {power!r}")


# Losses whose unit deviance `flag.score: deviance` can use.
DEVIANCE_LOSSES = ("poisson", "gamma", "tweedie")
# Their targets: (bound, strict, what); a row outside is a dead letter.
TARGET_BOUNDS = {
    "poisson": (0.0, False, "a count or rate y >= 0"),
    "tweedie": (0.0, False, "a target y >= 0"),
    "gamma": (0.0, True, "a positive target y > 0"),
}
# Keras' Poisson loss adds this to `y_pred` inside its log.
_POISSON_EPSILON = 1e-7


def unit_deviance(name: str, y_true, y_pred, args=None):
  """The unit deviance `(N, ...)` of each value, for `DEVIANCE_LOSSES`.

  Per-sample losses of count and positive regression are not comparable
  across targets (a Poisson loss `mu - y log mu` is smallest near y = 0 and
  can be negative): the deviance `2 (loglik(y; y) - loglik(y; mu))` is 0
  for a perfect prediction and grows with the surprise of y given mu,
  whatever y is.

  - poisson: `2 (y log(y / mu) - (y - mu))`, with Keras' `mu + 1e-7`;
  - gamma: `2 (log(mu / y) + y / mu - 1)`, for y > 0;
  - tweedie: `2 (y^(2-p) / ((1-p)(2-p)) - y mu^(1-p) / (1-p)
    + mu^(2-p) / (2-p))`, for y >= 0.

  NaN where y is outside those bounds or mu <= 0 (the row is then flagged
  `non_finite`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  # In float64: near y = mu a deviance is a small difference of large terms.
  mu = tf.cast(y_pred, tf.float64)
  y = tf.cast(y_true, tf.float64)
  if name == "poisson":
    mu = mu + _POISSON_EPSILON
    deviance = 2.0 * (tf.math.xlogy(y, y) - tf.math.xlogy(y, mu) - (y - mu))
    valid = (y >= 0.0) & (mu > 0.0)
  elif name == "gamma":
    deviance = 2.0 * (tf.math.log(mu / y) + y / mu - 1.0)
    valid = (y > 0.0) & (mu > 0.0)
  elif name == "tweedie":
    p = float(dict(args or {}).get("power", 1.5))
    _check_power(p)
    deviance = 2.0 * (
        tf.pow(tf.maximum(y, 0.0), 2.0 - p) / ((1 - p) * (2 - p)) -
        y * tf.pow(mu, 1.0 - p) / (1 - p) + tf.pow(mu, 2.0 - p) / (2 - p))
    valid = (y >= 0.0) & (mu > 0.0)
  else:
    raise ValueError(f"expected one of {DEVIANCE_LOSSES}. Received: {name!r}")
  # Outside the model's domain (mu <= 0) a formula can give a finite,
  # negative deviance that would rank the row as the best fit of all.
  return tf.where(valid, deviance, tf.constant(np.nan, tf.float64))


def import_custom_loss(path: str) -> Callable:
  """Imports `package.module:function` by module path (no eval).

  The function may be nested (`module:Class.method`). Importing runs the
  user's module: whatever it raises goes through unchanged (the pre-run check
  turns it into a config error naming the key).

  Raises:
    ValueError: `path` is not `module:attribute`.
    ModuleNotFoundError: the module (or one it imports) is not installed.
    AttributeError: the module has no such attribute.
    TypeError: the attribute is not callable.
  """
  module_name, _, attr = path.partition(":")
  if not module_name or not attr:
    raise ValueError(f"expected 'package.module:function'; got {path!r}")
  module = importlib.import_module(module_name)
  fn = module
  for part in attr.split("."):
    try:
      fn = getattr(fn, part)
    except AttributeError:
      raise AttributeError(f"module {module_name!r} has no attribute"
                           f" {attr!r}") from None
  if not callable(fn):
    raise TypeError(f"{path!r} is not a function: it is of type"
                    f" {type(fn).__name__}")
  return fn


# How far from [0, 1], and from a sum of 1, probabilities may be (float32
# softmax outputs, probabilities written rounded to a few decimals).
PROBABILITY_TOLERANCE = 1e-6
ROW_SUM_TOLERANCE = 1e-2


class OutputRange(NamedTuple):
  """What one output's values look like on a sample of examples.

  Attributes:
    low, high: the smallest and largest value.
    row_sums: the smallest and largest sum over the class axis, for outputs
      that are one distribution over classes (softmax-shaped); else None.
  """

  low: float
  high: float
  row_sums: Optional[Tuple[float, float]] = None

  @property
  def probabilities(self) -> bool:
    """Whether every value is in [0, 1] and every distribution sums to 1."""
    unit = (self.low >= -PROBABILITY_TOLERANCE and
            self.high <= 1 + PROBABILITY_TOLERANCE)
    if self.row_sums is None:
      return unit
    return unit and all(abs(v - 1) <= ROW_SUM_TOLERANCE
                        for v in self.row_sums)

  def describe(self) -> str:
    text = f"min {self.low:.4g}, max {self.high:.4g}"
    if self.row_sums is not None:
      text += f", row sums {self.row_sums[0]:.4g} to {self.row_sums[1]:.4g}"
    return text


def output_range(values: np.ndarray, distribution: bool
                 ) -> Optional[OutputRange]:
  """The `OutputRange` of an output's finite rows; None when none is.

  Args:
    values: `(N, ..., K)` one output's values on N examples.
    distribution: whether its last axis holds a distribution over K classes.
  """
  values = np.asarray(values, dtype=np.float64)
  rows = values.reshape(len(values), -1)
  values = values[np.isfinite(rows).all(axis=1)]
  if not values.size:
    return None
  sums = None
  if distribution:
    total = values.sum(axis=-1)
    sums = (float(total.min()), float(total.max()))
  return OutputRange(float(values.min()), float(values.max()), sums)


def reduce_per_sample(values, reduce: str = "mean", mask=None):
  """Reduces `(N, ...)` loss values to `(N,)` over the non-batch axes.

  Args:
    values: `(N, ...)` loss values.
    reduce: `mean` or `sum`.
    mask: `(N, ...)` bool, False at the positions a loss ignores
      (`ignore_class`), or None. A `mean` is then over each example's other
      positions, as Keras' masked mean is (0 when it has none).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  values = tf.convert_to_tensor(values)
  if values.shape.rank is not None and values.shape.rank <= 1:
    return values
  axes = tf.range(1, tf.rank(values))
  if reduce == "sum":
    return tf.reduce_sum(values, axis=axes)
  if mask is not None:
    kept = tf.cast(tf.reshape(mask, tf.shape(values)), values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * kept, axis=axes),
                                 tf.reduce_sum(kept, axis=axes))
  return tf.reduce_mean(values, axis=axes)


def class_probabilities(y_pred, kind: str, from_logits: bool):
  """Class probabilities `(N, K)` from model outputs.

  Args:
    y_pred: `(N, K)` scores, or `(N, 1)` / `(N,)` for a single sigmoid output.
    kind: `sparse`, `categorical` or `binary`, see `label_kind`.
    from_logits: whether `y_pred` are logits.

  Returns:
    `(N, K)` probabilities; a single sigmoid output gives `K = 2`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  y_pred = tf.cast(y_pred, tf.float32)
  if kind == "binary":
    p = tf.reshape(y_pred, [-1])
    if from_logits:
      p = tf.sigmoid(p)
    return tf.stack([1.0 - p, p], axis=1)
  y_pred = tf.reshape(y_pred, [tf.shape(y_pred)[0], -1])
  return tf.nn.softmax(y_pred, axis=-1) if from_logits else y_pred


def classification_signals(probs, given):
  """Predicted label, self-confidence and margin of each example.

  Args:
    probs: `(N, K)` class probabilities.
    given: `(N,)` int given labels, in `[0, K)`.

  Returns:
    A dict of `(N,)` tensors: `predicted_label` (int64), `self_confidence`
    (probability of the given label) and `margin` (self-confidence minus the
    largest other probability).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  given = tf.cast(given, tf.int64)
  num_classes = tf.shape(probs)[1]
  given_mask = tf.one_hot(given, num_classes, on_value=True, off_value=False)
  self_confidence = tf.gather(probs, given, axis=1, batch_dims=1)
  others = tf.where(given_mask, tf.constant(-float("inf"), probs.dtype), probs)
  return {
      "predicted_label": tf.argmax(probs, axis=1, output_type=tf.int64),
      "self_confidence": self_confidence,
      "margin": self_confidence - tf.reduce_max(others, axis=1),
  }


def class_log_probabilities(y_pred, kind: str, from_logits: bool):
  """Class log-probabilities `(N, K)` from model outputs.

  From logits (`from_logits`, or the logits Keras leaves on a softmax or
  sigmoid output as `_keras_logits`) they are exact; from probabilities
  they are `log(clip(p, 1e-7, 1))`, as Keras clips them for crossentropy.
  A difference of log-probabilities of two classes is the difference of
  their logits, so margins are the same either way (up to the clipping).

  Args:
    y_pred: `(N, K)` scores, or `(N, 1)` / `(N,)` for a single sigmoid output.
    kind: `sparse`, `categorical` or `binary`, see `label_kind`.
    from_logits: whether `y_pred` are logits.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  logits = getattr(y_pred, "_keras_logits", None)
  if not from_logits and logits is not None:
    y_pred, from_logits = logits, True
  if not from_logits:
    probs = class_probabilities(y_pred, kind, False)
    return tf.math.log(tf.clip_by_value(probs, 1e-7, 1.0))
  y_pred = tf.cast(y_pred, tf.float32)
  if kind == "binary":
    z = tf.reshape(y_pred, [-1])
    return tf.stack([tf.math.log_sigmoid(-z), tf.math.log_sigmoid(z)], axis=1)
  y_pred = tf.reshape(y_pred, [tf.shape(y_pred)[0], -1])
  return tf.nn.log_softmax(y_pred, axis=-1)


def given_label_signals(probs, log_probs, given):
  """What training dynamics need of one checkpoint's class scores.

  Args:
    probs: `(N, K)` class probabilities.
    log_probs: `(N, K)` their log-probabilities (`class_log_probabilities`).
    given: `(N,)` int given labels, in `[0, K)`.

  Returns:
    A dict of `(N,)` tensors: `own` (the given label's probability),
    `margin` (its log-probability minus the largest other) and `correct`
    (1.0 when the most probable class is the given label, else 0.0).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  given = tf.cast(given, tf.int64)
  mask = tf.one_hot(given, tf.shape(probs)[1], on_value=True,
                    off_value=False)
  own_log = tf.gather(log_probs, given, axis=1, batch_dims=1)
  other_log = tf.reduce_max(
      tf.where(mask, tf.constant(-float("inf"), log_probs.dtype), log_probs),
      axis=1)
  return {
      "own": tf.gather(probs, given, axis=1, batch_dims=1),
      "margin": own_log - other_log,
      "correct": tf.cast(tf.equal(
          tf.argmax(probs, axis=1, output_type=tf.int64), given), tf.float32),
  }


def training_dynamics(own, margin, correct):
  """Dataset cartography and the area under the margin, over checkpoints.

  Swayamdipta et al. (2020), "Dataset Cartography": `confidence` is the mean
  probability of the given label over checkpoints, `variability` its
  standard deviation (ddof 0), `correctness` the fraction of checkpoints
  whose most probable class is the given label. Pleiss et al. (2020),
  "Identifying Mislabeled Data using the Area Under the Margin Ranking":
  `aum` is the mean over checkpoints of the given label's logit minus the
  largest other logit, here its log-probability minus the largest other
  (equal for softmax outputs).

  Args:
    own: `(C, N)` the given label's probability at each of C checkpoints.
    margin: `(C, N)` its log-probability minus the largest other.
    correct: `(C, N)` 1.0 where the checkpoint predicts the given label.

  Returns:
    A dict of `(N,)` float tensors `confidence`, `variability`,
    `correctness` and `aum`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return {
      "confidence": tf.reduce_mean(own, axis=0),
      "variability": tf.math.reduce_std(own, axis=0),
      "correctness": tf.reduce_mean(correct, axis=0),
      "aum": tf.reduce_mean(margin, axis=0),
  }
