"""BatchScorer and ScoreBatches on real saved models, against Keras."""

import apache_beam as beam
import keras
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from lossaudit import datasets, dead_letters
from lossaudit.scoring import BatchScorer
from lossaudit.transforms.score import ScoreBatches
from tests.helpers import NUM_CLASSES, NUM_FEATURES
from tests.helpers import classifier_spec as _spec
from tests.helpers import first_rows as _batch


def _assert_keras_losses(scored, model_path, loss_class, x, y) -> np.ndarray:
  """Asserts `scored`'s losses equal Keras's `loss_class(reduction=None)` on
  the saved model's predictions for `x`; returns those `(N,)` losses."""
  pred = keras.models.load_model(model_path, compile=False).predict(
      x, verbose=0)
  expected = loss_class(reduction=None)(y, pred).numpy()
  np.testing.assert_allclose(scored.column("loss").to_numpy(), expected,
                             rtol=1e-5)
  return expected


@pytest.mark.parametrize("fixture", ["classifier_path", "saved_model_path"])
def test_losses_match_keras_for_keras_file_and_saved_model(
    request, fixture, classifier_path, columns):
  output = "output_0" if fixture == "saved_model_path" else None
  scorer = BatchScorer(_spec(request.getfixturevalue(fixture), output))
  scored, dead = scorer.score("f", _batch(columns))
  assert dead == []
  _assert_keras_losses(scored, classifier_path,
                       keras.losses.SparseCategoricalCrossentropy,
                       columns["x"][:100], columns["label"][:100])
  assert scored.column("id").to_pylist() == list(columns["id"][:100])


def test_batches_of_any_size_reuse_one_trace(classifier_path, columns):
  scorer = BatchScorer(_spec(classifier_path))
  for n in (1, 7, 100, 33):
    scored, _ = scorer.score("f", _batch(columns, n))
    assert scored.num_rows == n
  assert scorer._scores[0].experimental_get_tracing_count() == 1


def test_the_model_takes_max_rows_consecutive_rows_a_call(classifier_path,
                                                          columns):
  calls = []

  class CountingScorer(BatchScorer):

    def score_arrays(self, features, labels, fold=0):
      calls.append(features["x"].copy())
      return super().score_arrays(features, labels, fold)

  scorer = CountingScorer(_spec(classifier_path), max_rows=32)
  scored, dead = scorer.score("f", _batch(columns, 100))
  assert dead == []
  assert [len(x) for x in calls] == [32, 32, 32, 4]
  np.testing.assert_array_equal(np.concatenate(calls), columns["x"][:100])
  _assert_keras_losses(scored, classifier_path,
                       keras.losses.SparseCategoricalCrossentropy,
                       columns["x"][:100], columns["label"][:100])
  assert scored.column("id").to_pylist() == list(columns["id"][:100])


def test_one_hot_labels_and_logits(workdir, columns):
  import tensorflow as tf

  inputs = keras.Input((NUM_FEATURES,), name="x")
  model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES,
                                                 name="logits")(inputs))
  path = str(workdir / "logits.keras")
  model.save(path)
  one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[columns["label"][:50]]
  batch = datasets.to_arrow({"id": columns["id"][:50], "x": columns["x"][:50],
                             "label": one_hot}).to_batches()[0]
  scorer = BatchScorer(_spec(path, "logits", signals="categorical",
                             label_shape=(NUM_CLASSES,), label_dtype="float32",
                             loss_name="categorical_crossentropy",
                             from_logits=True))
  scored, _ = scorer.score("f", batch)
  logits = model.predict(columns["x"][:50], verbose=0)
  expected = keras.losses.CategoricalCrossentropy(
      from_logits=True, reduction=None)(one_hot, logits).numpy()
  np.testing.assert_allclose(scored.column("loss").to_numpy(), expected,
                             rtol=1e-5)
  probs = tf.nn.softmax(logits).numpy()
  np.testing.assert_array_equal(scored.column("given_label").to_numpy(),
                                columns["label"][:50])
  np.testing.assert_allclose(
      scored.column("self_confidence").to_numpy(),
      probs[np.arange(50), columns["label"][:50]], rtol=1e-5)


def test_binary_sigmoid_output(workdir, columns):
  inputs = keras.Input((NUM_FEATURES,), name="x")
  model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid",
                                                 name="p")(inputs))
  path = str(workdir / "binary.keras")
  model.save(path)
  y = (columns["label"][:60] % 2).astype(np.float32)
  batch = datasets.to_arrow({"id": columns["id"][:60], "x": columns["x"][:60],
                             "label": y}).to_batches()[0]
  scorer = BatchScorer(_spec(path, "p", signals="binary",
                             label_shape=(1,), label_dtype="float32",
                             num_classes=2, loss_name="binary_crossentropy"))
  scored, dead = scorer.score("f", batch)
  assert dead == []
  p = model.predict(columns["x"][:60], verbose=0)
  expected = keras.losses.BinaryCrossentropy(reduction=None)(
      y[:, None], p).numpy()
  np.testing.assert_allclose(scored.column("loss").to_numpy(), expected,
                             rtol=1e-5)
  confidence = np.where(y == 1, p[:, 0], 1 - p[:, 0])
  np.testing.assert_allclose(scored.column("self_confidence").to_numpy(),
                             confidence, rtol=1e-5)


def test_regression_mse_with_weights(regressor_path, columns):
  weights = np.linspace(0.5, 2.0, 40)
  batch = datasets.to_arrow({"id": columns["id"][:40], "x": columns["x"][:40],
                             "target": columns["target"][:40, 0],
                             "w": weights}).to_batches()[0]
  scorer = BatchScorer(_spec(regressor_path, "pred",
                             label_column="target", signals=None,
                             label_shape=(1,), label_dtype="float32",
                             num_classes=None, loss_name="mean_squared_error",
                             weight_column="w"))
  scored, _ = scorer.score("f", batch)
  expected = _assert_keras_losses(scored, regressor_path,
                                  keras.losses.MeanSquaredError,
                                  columns["x"][:40], columns["target"][:40])
  np.testing.assert_allclose(scored.column("weighted_loss").to_numpy(),
                             expected * weights, rtol=1e-5)
  assert "given_label" not in scored.schema.names


def test_bad_rows_are_dead_lettered_with_reasons(classifier_path, columns):
  x = [list(v) for v in columns["x"][:4]]
  x[1] = x[1][:3]
  x[2] = None
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(["a", "b", "c", None]),
      "x": pa.array(x, pa.list_(pa.float32())),
      "label": pa.array([1, 2, 9, 0]),
  })
  scored, dead = BatchScorer(_spec(classifier_path)).score("file-1", batch)
  assert scored.column("id").to_pylist() == ["a"]
  assert dead == [
      {"source": "file-1", "id": "b",
       "error": "feature 'x' has 3 values, expected 16",
       "reason": "wrong_size"},
      {"source": "file-1", "id": "c",
       "error": "missing feature 'x'; label 9 out of range: expected an"
                " integer class in [0, 5)", "reason": "missing_feature"},
      {"source": "file-1", "id": None, "error": "id is null (column 'id')",
       "reason": "missing_id"},
  ]


def test_a_file_without_the_id_column_is_dead_lettered(classifier_path,
                                                       columns):
  batch = pa.RecordBatch.from_pydict({
      "x": pa.array([list(v) for v in columns["x"][:2]],
                    pa.list_(pa.float32())),
      "label": pa.array([1, 2])})
  scored, dead = BatchScorer(_spec(classifier_path)).score("file-2", batch)
  assert scored is None
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      (None, "missing_id", "missing id column 'id'")] * 2


def test_score_batches_transform(classifier_path, columns):
  batches = [("f1", _batch(columns, 30)),
             ("f2", pa.RecordBatch.from_pydict({
                 "id": ["z"], "x": pa.array([[1.0]]), "label": [0]}))]
  with TestPipeline() as p:
    scored = p | beam.Create(batches) | ScoreBatches(_spec(classifier_path))
    assert_that(scored.scored | beam.Map(lambda b: b.num_rows),
                equal_to([30]), label="scored")
    assert_that(scored[dead_letters.TAG] | beam.Map(lambda d: d["id"]),
                equal_to(["z"]), label="dead")


def test_each_batch_is_timed_by_the_injected_clock(classifier_path, columns):
  from apache_beam.utils.windowed_value import WindowedValue

  from lossaudit.timings import Timings
  from lossaudit.transforms.score import TIMING, _ScoreBatchFn

  ticks = iter([10.0, 10.25, 11.0, 11.5])
  fn = _ScoreBatchFn(_spec(classifier_path), None, clock=lambda: next(ticks),
                     wall_clock=lambda: 1000.5)
  fn.setup()
  fn.start_bundle()
  # A batch's outputs leave with the next batch (it is scored meanwhile),
  # the last one's when the bundle finishes, in the global window.
  first = list(fn.process(("f", _batch(columns, 30))))
  second = list(fn.process(("f", _batch(columns, 20))))
  last = list(fn.finish_bundle())
  fn.teardown()

  def timings(outputs):
    return [o.value.value if isinstance(o.value, WindowedValue) else o.value
            for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)
            and o.tag == TIMING]

  assert timings(first) == []
  assert timings(second) == [Timings.of_batch(30, 0.25, 1000.5)]
  assert timings(last) == [Timings.of_batch(20, 0.5, 1000.5)]
  scored = [o.value for o in last if isinstance(o, WindowedValue)]
  assert [b.num_rows for b in scored] == [20]
