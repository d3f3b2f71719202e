"""A real Keras softmax model with 1,000 outputs (issue 33).

The model (`tests.many_classes`) is an MLP fit for a few epochs on 20,000
rows of Gaussian class clusters, 10% of whose labels are flipped. References
never come from lossaudit: the losses are Keras' own, computed in a graph as
`fit` does (from the logits of its softmax); the label issues are cleanlab's
`find_label_issues` on the probabilities of Keras' `model.predict`.
"""

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from cleanlab.filter import find_label_issues

from lossaudit.spec import PROBS_COLUMN
from tests import many_classes
from tests.helpers import base_config, run_audit
from tests.scorers import SmallMemoryScorer

RTOL = 1e-6
ATOL = 1e-6  # float32 losses near zero.
PROBS_ATOL = 1e-7


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  return many_classes.build(str(tmp_path_factory.mktemp("many_classes")))


def _keras_losses(path, x, labels):
  """Keras' loss of the `.keras` model on `x`, in a graph (from the logits
  of its softmax, as `fit`)."""
  model = keras.models.load_model(path, compile=False)
  loss = tf.function(lambda x, y: keras.losses.sparse_categorical_crossentropy(
      y, model(x)))
  return loss(tf.constant(x), tf.constant(labels)).numpy()


def _keras_probs(path, x):
  return keras.models.load_model(path, compile=False).predict(
      x, batch_size=1024, verbose=0)


def test_out_of_memory_halves_the_batch_at_1000_classes(built):
  n = 1000
  rows = slice(0, n)
  scorer = SmallMemoryScorer(many_classes.spec(built.model, keep_probs=True),
                              max_rows=256)
  scored, dead = scorer.score("memory",
                              many_classes.record_batch(built, rows))
  assert dead == []
  assert scorer.halvings == 2  # 256 -> 128 -> 64 rows.
  assert scorer.max_rows == 64
  assert scorer.halvings_in_thread() == 2
  # The last batch of 256 rows holds 232: 64, 64, 64, then 40.
  assert scorer.scored_sizes == [64] * 15 + [40]
  assert scored.column("id").to_pylist() == built.ids[rows].tolist()
  np.testing.assert_allclose(
      scored.column("loss").to_numpy(),
      _keras_losses(built.model, built.x[rows], built.labels[rows]),
      rtol=RTOL, atol=ATOL)
  probs = _keras_probs(built.model, built.x[rows])
  assert probs.shape == (n, many_classes.NUM_CLASSES)
  kept = scored.column(PROBS_COLUMN)
  np.testing.assert_allclose(
      kept.values.to_numpy().reshape(n, -1), probs, rtol=RTOL,
      atol=PROBS_ATOL)
  np.testing.assert_array_equal(scored.column("given_label").to_numpy(),
                                built.labels[rows])
  np.testing.assert_array_equal(
      scored.column("predicted_label").to_numpy(), probs.argmax(axis=1))


@pytest.fixture(scope="module")
def probs(built):
  return _keras_probs(built.model, built.x)


@pytest.fixture(scope="module")
def keras_losses(built):
  return _keras_losses(built.model, built.x, built.labels)


@pytest.mark.slow
@pytest.mark.parametrize("method, workers", [
    ("prune_by_noise_rate", 1), ("confident_learning", 1),
    ("prune_by_noise_rate", 2)])
def test_label_issues_of_a_1000_class_model_are_cleanlabs(
    tmp_path, built, probs, keras_losses, method, workers):
  out = tmp_path / "out"
  flags = [f"--direct_num_workers={workers}",
           "--direct_running_mode=multi_processing"] if workers > 1 else []
  summary = run_audit(base_config(
      f"{built.data}/*", built.model, out,
      flag={"loss_quantile": None, "label_issues": method}), *flags)
  assert summary["examples_scored"] == len(built.ids)
  assert summary["examples_dead_lettered"] == 0
  assert summary["loss"]["computed_from"] == "logits"
  losses = pq.read_table(out / "losses").to_pandas().set_index("id").loc[
      built.ids]
  np.testing.assert_allclose(losses["loss"], keras_losses, rtol=RTOL,
                             atol=ATOL)
  np.testing.assert_array_equal(losses["given_label"], built.labels)
  np.testing.assert_array_equal(losses["predicted_label"],
                                probs.argmax(axis=1))
  expected = set(built.ids[find_label_issues(built.labels, probs,
                                             filter_by=method, n_jobs=1)])
  # Enough issues that a wrong threshold or count shows, mostly flips.
  assert len(expected) > 300
  assert np.isin(list(expected), built.ids[built.noisy]).mean() > 0.9
  flagged = set(pq.read_table(out / "flagged").column("id").to_pylist())
  assert flagged == expected
