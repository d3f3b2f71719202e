"""Per-sample losses and classification signals, as pure TensorFlow functions.

The per-sample loss is exactly Keras' loss object called with
`reduction=None`, then reduced over any remaining non-batch axes (`mean`, as
Keras does inside a sample, or `sum`). Reduction over the batch is never done
here: statistics are the pipeline's job.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Optional

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
SUPPORTED_LOSSES = tuple(_CLASS_NAMES)

# Losses whose y_pred are class scores and whose labels name a class.
SPARSE_CLASSIFICATION = ("sparse_categorical_crossentropy",)
DENSE_CLASSIFICATION = ("categorical_crossentropy",
                        "categorical_focal_crossentropy")
BINARY_CLASSIFICATION = ("binary_crossentropy", "binary_focal_crossentropy")
_TAKES_FROM_LOGITS = SPARSE_CLASSIFICATION + DENSE_CLASSIFICATION + (
    BINARY_CLASSIFICATION)


def canonical_loss_name(name: str) -> Optional[str]:
  """Returns the snake-case Keras loss name for `name`, or None if unknown."""
  key = _ALIASES.get(name, name)
  if key in _CLASS_NAMES:
    return key
  by_class = {v.lower(): k for k, v in _CLASS_NAMES.items()}
  return by_class.get(name.replace("_", "").lower())


def label_kind(loss_name: str, num_outputs: int) -> str:
  """How labels are read for `loss_name`.

  Returns:
    `sparse` (one int class per example), `categorical` (a one-hot or
    probability vector), `binary` (one 0/1 target with a single sigmoid
    output) or `regression` (no class signals).
  """
  name = canonical_loss_name(loss_name)
  if name in SPARSE_CLASSIFICATION:
    return "sparse"
  if name in DENSE_CLASSIFICATION:
    return "categorical"
  if name in BINARY_CLASSIFICATION and num_outputs == 1:
    return "binary"
  return "regression"


def keras_loss(name: str, from_logits: bool = False,
               args: Optional[Mapping[str, Any]] = None):
  """Builds the Keras loss object for `name` with no reduction over the batch.

  Raises:
    TypeError: when `args` holds an argument the Keras loss does not take.
  """
  import keras  # pylint: disable=g-import-not-at-top

  canonical = canonical_loss_name(name)
  if canonical is None:
    raise ValueError(f"Unknown loss {name!r}")
  kwargs = dict(args or {})
  if canonical in _TAKES_FROM_LOGITS:
    kwargs.setdefault("from_logits", from_logits)
  cls = getattr(keras.losses, _CLASS_NAMES[canonical])
  return cls(reduction=None, **kwargs)


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


def reduce_per_sample(values, reduce: str = "mean"):
  """Reduces `(N, ...)` loss values to `(N,)` over the non-batch axes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  values = tf.convert_to_tensor(values)
  if values.shape.rank is not None and values.shape.rank <= 1:
    return values
  axes = tf.range(1, tf.rank(values))
  if reduce == "sum":
    return tf.reduce_sum(values, axis=axes)
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
