"""Custom losses imported by path in the tests (`loss.custom`)."""

import keras
import tensorflow as tf


def batch_mean(y_true, y_pred):
  """Wrong on purpose: reduces over the batch to a scalar."""
  return tf.reduce_mean(
      keras.losses.sparse_categorical_crossentropy(y_true, y_pred))


def per_sample_nll(y_true, y_pred):
  """Right: one negative log-likelihood per example."""
  return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


def per_class_mean(y_true, y_pred):
  """Wrong on purpose: reduces over the batch axis, one value per class."""
  y_true = tf.one_hot(tf.cast(y_true, tf.int32), tf.shape(y_pred)[-1])
  return tf.reduce_mean(tf.square(y_true - y_pred), axis=0)


_BATCHES_SEEN = []


def blocking_nll(y_true, y_pred):
  """Right, but its Nth batch (env LOSSAUDIT_TEST_BLOCK_AT) prints
  "lossaudit-test: blocked" to stderr and waits for a line on stdin: lets a
  test act while a run holds its output directory, without sleeping."""
  import os
  import sys

  block_at = int(os.environ.get("LOSSAUDIT_TEST_BLOCK_AT", "0"))

  def maybe_block(values):
    _BATCHES_SEEN.append(1)
    if len(_BATCHES_SEEN) == block_at:
      print("lossaudit-test: blocked", file=sys.stderr, flush=True)
      sys.stdin.readline()
    return values

  waited = tf.py_function(maybe_block, [y_pred], y_pred.dtype)
  return keras.losses.sparse_categorical_crossentropy(
      y_true, tf.reshape(waited, tf.shape(y_pred)))


def per_sample_nll_branching(y_true, y_pred):
  """Right, with Python control flow on a tensor (AutoGraph makes it a
  `tf.cond`): the same values as `per_sample_nll`."""
  if tf.reduce_min(y_pred) < 0.0:
    y_pred = tf.nn.softmax(y_pred)
  return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


def generalized_nll(y_true, y_pred, q=0.7):
  """Right, and takes an argument: the generalized crossentropy
  `(1 - p^q) / q` of the given class (`loss.args: {q: ...}`)."""
  p = tf.gather(y_pred, tf.cast(y_true, tf.int32), axis=1, batch_dims=1)
  return (1.0 - tf.pow(p, q)) / q
