"""Per-sample losses and classification signals, as pure TensorFlow functions.

The per-sample loss is exactly Keras' loss object called with
`reduction=None`, then reduced over any remaining non-batch axes (`mean`, as
Keras does inside a sample, or `sum`). Reduction over the batch is never done
here: statistics are the pipeline's job.

Each loss a config can name is one `Loss` record of `LOSSES`, holding all
lossaudit knows of it; adding a loss is adding its record (and, for a loss
of lossaudit's own, its function). The tuples of names below the table
(`SUPPORTED_LOSSES`, `TAKES_FROM_LOGITS`, ...) are views of it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import numpy as np


class TargetBound(NamedTuple):
  """The targets a loss is defined for: above `low` (`strict`), or at least
  `low`; `what` says it in messages."""

  low: float
  strict: bool
  what: str


@dataclasses.dataclass(frozen=True)
class Loss:
  """One loss `loss.name` can name, and all lossaudit knows of it.

  Attributes:
    name: its snake-case name in configs.
    keras_class: its class in `keras.losses`; None for a loss of lossaudit's
      own (`function`).
    function: lossaudit's own per-value loss `fn(y_true, y_pred, **args)`,
      when Keras has none.
    aliases: other names a config may give it (Keras' short names).
    labels: how its labels are read (`label_kind`): `sparse` (class
      indices), `categorical` (one-hot or probability vectors), `binary`
      (0/1 targets), `sequence` (CTC's sequences of class indices) or
      `regression`. With one of the first three, its outputs are class
      probabilities (or logits, with `from_logits`): `classifies`.
    from_logits: whether it takes Keras' `from_logits` argument.
    logits_op: the activation op whose logits Keras computes it from (a
      crossentropy's `Softmax` or `Sigmoid`; see `scoring.computed_from`).
    per_example_axis: whether its `axis` defaults to every axis but the
      batch's (Keras' default, None, would reduce over the whole batch).
    check_args: raises ValueError for `loss.args` its signature takes but
      it does not (values out of range).
    deviance: its unit deviance `fn(y, mu, args)` → `(deviance, valid)`,
      float64 and bool `(N, ...)` (`flag.score: deviance`); None without.
    target_bound: the targets it is defined for (a row outside is a dead
      letter); None: any.
  """

  name: str
  keras_class: Optional[str] = None
  function: Optional[Callable[..., Any]] = None
  aliases: Tuple[str, ...] = ()
  labels: str = "regression"
  from_logits: bool = False
  logits_op: Optional[str] = None
  per_example_axis: bool = False
  check_args: Optional[Callable[[Mapping[str, Any]], None]] = None
  deviance: Optional[Callable[..., Any]] = None
  target_bound: Optional[TargetBound] = None

  @property
  def classifies(self) -> bool:
    """Whether its outputs are class scores and its labels name classes."""
    return self.labels in ("sparse", "categorical", "binary")


# Keras losses with no per-sample value, and why.
NOT_PER_SAMPLE = {
    "circle": "its value for one example depends on the other examples of"
              " its batch (it compares every pair of embeddings), so an"
              " example's loss would change with the batch it is scored in",
}
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
  key = _BY_ALIAS.get(name, name)
  if key in LOSSES:
    return key
  return _BY_CLASS.get(name.replace("_", "").lower())


def label_kind(loss_name: str, num_outputs: int) -> str:
  """How labels are read for `loss_name`.

  Returns:
    `sparse` (one int class per example), `categorical` (a one-hot or
    probability vector), `binary` (one 0/1 target with a single sigmoid
    output), `sequence` (CTC: a sequence of class indices, of its own
    length) or `regression` (no class signals).
  """
  name = canonical_loss_name(loss_name)
  labels = LOSSES[name].labels if name else "regression"
  if labels == "binary" and num_outputs != 1:
    return "regression"
  return labels


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
  loss = LOSSES[canonical]
  kwargs = dict(args or {})
  if loss.function is not None:
    inspect.signature(loss.function).bind(None, None, **kwargs)
    if loss.check_args is not None:
      loss.check_args(kwargs)
    return functools.partial(loss.function, **kwargs)
  import keras  # pylint: disable=g-import-not-at-top

  if loss.from_logits:
    kwargs.setdefault("from_logits", from_logits)
  cls = getattr(keras.losses, loss.keras_class)
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


def _check_tweedie_args(args: Mapping[str, Any]) -> None:
  _check_power(args.get("power", 1.5))


# Keras' Poisson loss adds this to `y_pred` inside its log.
_POISSON_EPSILON = 1e-7


# Unit deviances, float64 `y` and `mu` `(N, ...)` → `(deviance, valid)`; see
# `unit_deviance`.


def _poisson_deviance(y, mu, args):
  del args  # Takes none.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  mu = mu + _POISSON_EPSILON
  deviance = 2.0 * (tf.math.xlogy(y, y) - tf.math.xlogy(y, mu) - (y - mu))
  return deviance, (y >= 0.0) & (mu > 0.0)


def _gamma_deviance(y, mu, args):
  del args  # Takes none.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  deviance = 2.0 * (tf.math.log(mu / y) + y / mu - 1.0)
  return deviance, (y > 0.0) & (mu > 0.0)


def _tweedie_deviance(y, mu, args):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  p = float(args.get("power", 1.5))
  _check_power(p)
  deviance = 2.0 * (
      tf.pow(tf.maximum(y, 0.0), 2.0 - p) / ((1 - p) * (2 - p)) -
      y * tf.pow(mu, 1.0 - p) / (1 - p) + tf.pow(mu, 2.0 - p) / (2 - p))
  return deviance, (y >= 0.0) & (mu > 0.0)


# Every loss a config can name, by name.
LOSSES: Mapping[str, Loss] = {loss.name: loss for loss in (
    Loss("mean_squared_error", "MeanSquaredError", aliases=("mse",)),
    Loss("mean_absolute_error", "MeanAbsoluteError", aliases=("mae",)),
    Loss("mean_absolute_percentage_error", "MeanAbsolutePercentageError",
         aliases=("mape",)),
    Loss("mean_squared_logarithmic_error", "MeanSquaredLogarithmicError",
         aliases=("msle",)),
    Loss("huber", "Huber"),
    Loss("log_cosh", "LogCosh", aliases=("logcosh",)),
    Loss("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
         labels="sparse", from_logits=True, logits_op="Softmax"),
    Loss("categorical_crossentropy", "CategoricalCrossentropy",
         labels="categorical", from_logits=True, logits_op="Softmax"),
    Loss("categorical_focal_crossentropy", "CategoricalFocalCrossentropy",
         labels="categorical", from_logits=True),
    Loss("binary_crossentropy", "BinaryCrossentropy", labels="binary",
         from_logits=True, logits_op="Sigmoid"),
    Loss("binary_focal_crossentropy", "BinaryFocalCrossentropy",
         labels="binary", from_logits=True),
    Loss("categorical_generalized_cross_entropy",
         "CategoricalGeneralizedCrossEntropy", labels="sparse"),
    Loss("kl_divergence", "KLDivergence",
         aliases=("kld", "kullback_leibler_divergence")),
    Loss("poisson", "Poisson", deviance=_poisson_deviance,
         target_bound=TargetBound(0.0, False, "a count or rate y >= 0")),
    Loss("hinge", "Hinge"),
    Loss("squared_hinge", "SquaredHinge"),
    Loss("categorical_hinge", "CategoricalHinge"),
    Loss("cosine_similarity", "CosineSimilarity"),
    Loss("dice", "Dice", per_example_axis=True),
    Loss("tversky", "Tversky", per_example_axis=True),
    Loss("ctc", "CTC", labels="sequence"),
    # Positive regression, which Keras has no loss for.
    Loss("gamma", function=gamma, deviance=_gamma_deviance,
         target_bound=TargetBound(0.0, True, "a positive target y > 0")),
    Loss("tweedie", function=tweedie, check_args=_check_tweedie_args,
         deviance=_tweedie_deviance,
         target_bound=TargetBound(0.0, False, "a target y >= 0")),
)}
_BY_ALIAS = {alias: loss.name for loss in LOSSES.values()
             for alias in loss.aliases}
_BY_CLASS = {loss.keras_class.lower(): loss.name for loss in LOSSES.values()
             if loss.keras_class}


def _names(holds: Callable[[Loss], bool]) -> Tuple[str, ...]:
  return tuple(name for name, loss in LOSSES.items() if holds(loss))


# Views of `LOSSES`, in its order.
SUPPORTED_LOSSES = tuple(LOSSES)
# Losses whose y_pred are class scores and whose labels name a class.
SPARSE_CLASSIFICATION = _names(lambda loss: loss.labels == "sparse")
DENSE_CLASSIFICATION = _names(lambda loss: loss.labels == "categorical")
BINARY_CLASSIFICATION = _names(lambda loss: loss.labels == "binary")
TAKES_FROM_LOGITS = _names(lambda loss: loss.from_logits)
# Losses of class probabilities (or logits, with `from_logits`).
TAKES_PROBABILITIES = _names(lambda loss: loss.classifies)
PER_EXAMPLE_AXIS = _names(lambda loss: loss.per_example_axis)
# Losses whose unit deviance `flag.score: deviance` can use.
DEVIANCE_LOSSES = _names(lambda loss: loss.deviance is not None)


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

  loss = LOSSES.get(name)
  if loss is None or loss.deviance is None:
    raise ValueError(f"expected one of {DEVIANCE_LOSSES}. Received: {name!r}")
  # In float64: near y = mu a deviance is a small difference of large terms.
  deviance, valid = loss.deviance(tf.cast(y_true, tf.float64),
                                  tf.cast(y_pred, tf.float64),
                                  dict(args or {}))
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
