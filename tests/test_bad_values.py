"""One bad value costs one row, with the right dead-letter reason.

Ids and slices that are not UTF-8, class labels that are not integers,
numbers written as text, and sample weights that are not finite or are
negative: checked through `BatchScorer` on hand-built batches and through
whole runs. Expected losses come from Keras on the saved model's
predictions.
"""

import json

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import columns as cols
from lossaudit import datasets
from lossaudit.pipelines import audit
from lossaudit.scoring import BatchScorer
from lossaudit.spec import Feature, LossTerm, ScoringSpec
from tests.helpers import (
  NUM_CLASSES,
  NUM_FEATURES,
  base_config,
  make_columns,
  run_audit,
  write_predictions,
)

CLASSES = f"expected an integer class in [0, {NUM_CLASSES})"
WEIGHT = "is not a valid sample weight: expected a finite number >= 0"


@pytest.fixture(scope="module")
def keras_losses(classifier_path):
  """`(x (N, F), labels (N,)) -> (N,)` Keras sparse crossentropy losses of the
  saved classifier's predictions."""
  model = keras.models.load_model(classifier_path, compile=False)

  def losses(x, labels):
    pred = model.predict(np.asarray(x, np.float32), verbose=0)
    return keras.losses.SparseCategoricalCrossentropy(reduction=None)(
        np.asarray(labels), pred).numpy()

  return losses


def _spec(model_path, **fields):
  term = LossTerm(output="probs", name="out", label_column="label",
                  loss_name="sparse_categorical_crossentropy",
                  label_dtype="int64", signals="sparse",
                  num_classes=NUM_CLASSES)
  return ScoringSpec(model_path=model_path, signature="serving_default",
                     features=(Feature("x", "x", (NUM_FEATURES,),
                                       "float32"),),
                     terms=(term,), id_column="id", **fields)


def _x(columns, n):
  return pa.array(list(columns["x"][:n]), pa.list_(pa.float32()))


def _assert_scored(scored, keras_losses, columns, keep, labels=None):
  """The scored rows are the `keep` ones `(N,)` bool, with Keras' losses."""
  n = len(keep)
  labels = columns["label"][:n] if labels is None else np.asarray(labels)
  assert scored.column("id").to_pylist() == list(columns["id"][:n][keep])
  np.testing.assert_allclose(
      scored.column("loss").to_numpy(),
      keras_losses(columns["x"][:n][keep], labels[keep]), rtol=1e-5)
  np.testing.assert_array_equal(scored.column("given_label").to_numpy(),
                                labels[keep])


# Ids and slices -------------------------------------------------------------

@pytest.mark.parametrize("id_type", [
    pa.binary(), pa.large_binary(), pa.list_(pa.binary()),
    pa.large_list(pa.large_binary())])
def test_ids_not_utf8_cost_only_their_rows(
    classifier_path, columns, keras_losses, id_type):
  ids = [i.encode() for i in columns["id"][:20]]
  ids[0], ids[7] = b"\xff\xfe", b"ok-\x80"
  if pa.types.is_list(id_type) or pa.types.is_large_list(id_type):
    ids = [[i] for i in ids]
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(ids, id_type), "x": _x(columns, 20),
      "label": pa.array(columns["label"][:20])})
  scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
  assert dead == [
      {"source": "f", "id": None, "reason": "bad_id",
       "error": "id is not valid UTF-8: b'\\xff\\xfe'"},
      {"source": "f", "id": None, "reason": "bad_id",
       "error": "id is not valid UTF-8: b'ok-\\x80'"}]
  keep = ~np.isin(np.arange(20), [0, 7])
  _assert_scored(scored, keras_losses, columns, keep)


def test_slice_not_utf8_costs_only_its_row(classifier_path, columns,
                                           keras_losses):
  groups = [g.encode() for g in columns["group"][:12]]
  groups[4] = b"caf\xe9"  # Latin-1, not UTF-8.
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:12]), "x": _x(columns, 12),
      "label": pa.array(columns["label"][:12]),
      "group": pa.array([[g] for g in groups], pa.list_(pa.binary()))})
  scorer = BatchScorer(_spec(classifier_path, slice_column="group"))
  scored, dead = scorer.score("f", batch)
  assert dead == [{"source": "f", "id": "ex-00004", "reason": "bad_slice",
                   "error": "slice 'group' is not valid UTF-8: b'caf\\xe9'"}]
  keep = np.arange(12) != 4
  _assert_scored(scored, keras_losses, columns, keep)
  assert scored.column("__slice__").to_pylist() == list(
      columns["group"][:12][keep])


# Class labels ---------------------------------------------------------------

@pytest.mark.parametrize("label_type", [pa.float32(), pa.float64(),
                                        pa.list_(pa.float32())])
def test_class_labels_that_are_not_integers(
    classifier_path, columns, keras_losses, label_type):
  labels = columns["label"][:16].astype(np.float64)
  bad = {1: 2.5, 3: -0.5, 5: 9.99, 6: np.nan, 8: np.inf, 9: -np.inf,
         11: 10.0, 12: -1.0}
  for row, value in bad.items():
    labels[row] = value
  values = [[v] for v in labels] if pa.types.is_list(label_type) else labels
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:16]), "x": _x(columns, 16),
      "label": pa.array(values, label_type)})
  scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      ("ex-00001", "label_not_integer",
       f"label 2.5 is not an integer class: {CLASSES}"),
      ("ex-00003", "label_not_integer",
       f"label -0.5 is not an integer class: {CLASSES}"),
      ("ex-00005", "label_not_integer",
       f"label 9.99 is not an integer class: {CLASSES}"),
      ("ex-00006", "label_not_integer",
       f"label nan is not an integer class: {CLASSES}"),
      ("ex-00008", "label_not_integer",
       f"label inf is not an integer class: {CLASSES}"),
      ("ex-00009", "label_not_integer",
       f"label -inf is not an integer class: {CLASSES}"),
      ("ex-00011", "label_out_of_range", f"label 10 out of range: {CLASSES}"),
      ("ex-00012", "label_out_of_range", f"label -1 out of range: {CLASSES}"),
  ]
  keep = ~np.isin(np.arange(16), list(bad))
  _assert_scored(scored, keras_losses, columns, keep)


def test_int64_labels_are_read_exactly(classifier_path, columns,
                                       keras_losses):
  labels = columns["label"][:6].copy()
  labels[2] = 2**62 + 1  # Not representable as a float64.
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:6]), "x": _x(columns, 6),
      "label": pa.array(labels, pa.int64())})
  scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
  assert [(d["reason"], d["error"]) for d in dead] == [
      ("label_out_of_range",
       f"label 4611686018427387905 out of range: {CLASSES}")]
  _assert_scored(scored, keras_losses, columns, np.arange(6) != 2)


# Numbers written as text ----------------------------------------------------

def test_string_labels_parse_and_one_that_is_not_a_number_costs_its_row(
    classifier_path, columns, keras_losses):
  text = [str(v) for v in columns["label"][:10]]
  text[2], text[5], text[7] = "cat", " 4 ", "2.5"
  for type_ in (pa.string(), pa.large_binary()):
    batch = pa.RecordBatch.from_pydict({
        "id": pa.array(columns["id"][:10]), "x": _x(columns, 10),
        "label": pa.array(text, pa.string()).cast(type_)})
    scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
    assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
        ("ex-00002", "wrong_type", "label 'cat' is not a number"),
        ("ex-00007", "label_not_integer",
         f"label 2.5 is not an integer class: {CLASSES}")]
    labels = columns["label"][:10].copy()
    labels[5] = 4
    _assert_scored(scored, keras_losses, columns,
                   ~np.isin(np.arange(10), [2, 7]), labels)


def test_string_features_parse_and_a_word_costs_its_row(
    classifier_path, columns, keras_losses):
  # repr of a float32 as a Python float parses back to the same float32.
  x = [[repr(float(v)) for v in row] for row in columns["x"][:8]]
  x[3][5] = "n/a"
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:8]),
      "x": pa.array(x, pa.list_(pa.string())),
      "label": pa.array(columns["label"][:8])})
  scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      ("ex-00003", "wrong_type", "feature 'x' value 'n/a' is not a number")]
  _assert_scored(scored, keras_losses, columns, np.arange(8) != 3)


def test_a_column_of_words_is_the_wrong_type_for_every_row(classifier_path,
                                                           columns):
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:3]), "x": _x(columns, 3),
      "label": pa.array(["cat", "dog", "cow"])})
  scored, dead = BatchScorer(_spec(classifier_path)).score("f", batch)
  assert scored is None
  assert {(d["reason"], d["error"]) for d in dead} == {
      ("wrong_type", "label 'label' has type string, expected int64 values")}


# Weights, and several problems in one row -----------------------------------

def test_weights_must_be_finite_and_not_negative(classifier_path, columns,
                                                 keras_losses):
  weights = np.linspace(0.0, 2.0, 10)
  weights[[1, 4, 6, 8]] = [np.nan, np.inf, -1.0, -0.25]
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array(columns["id"][:10]), "x": _x(columns, 10),
      "label": pa.array(columns["label"][:10]), "w": pa.array(weights)})
  scorer = BatchScorer(_spec(classifier_path, weight_column="w"))
  scored, dead = scorer.score("f", batch)
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      ("ex-00001", "bad_weight", f"weight nan {WEIGHT}"),
      ("ex-00004", "bad_weight", f"weight inf {WEIGHT}"),
      ("ex-00006", "bad_weight", f"weight -1 {WEIGHT}"),
      ("ex-00008", "bad_weight", f"weight -0.25 {WEIGHT}")]
  keep = ~np.isin(np.arange(10), [1, 4, 6, 8])
  _assert_scored(scored, keras_losses, columns, keep)
  expected = keras_losses(columns["x"][:10][keep],
                          columns["label"][:10][keep]) * weights[keep]
  np.testing.assert_allclose(scored.column("weighted_loss").to_numpy(),
                             expected, rtol=1e-5)


def test_several_problems_in_a_row_first_reason_all_messages(
    classifier_path, columns, keras_losses):
  batch = pa.RecordBatch.from_pydict({
      "id": pa.array([b"\xff", b"a", b"b"]), "x": _x(columns, 3),
      "label": pa.array([2.5, 1.0, np.nan]),
      "w": pa.array([np.nan, 1.0, -2.0]),
      "group": pa.array([b"g", b"g", b"\x80"])})
  scorer = BatchScorer(_spec(classifier_path, weight_column="w",
                             slice_column="group"))
  scored, dead = scorer.score("f", batch)
  assert dead == [
      {"source": "f", "id": None, "reason": "bad_id",
       "error": "id is not valid UTF-8: b'\\xff'; label 2.5 is not an integer"
                f" class: {CLASSES}; weight nan {WEIGHT}"},
      {"source": "f", "id": "b", "reason": "label_not_integer",
       "error": f"label nan is not an integer class: {CLASSES}; weight -2"
                f" {WEIGHT}; slice 'group' is not valid UTF-8: b'\\x80'"}]
  assert scored.column("id").to_pylist() == ["a"]
  np.testing.assert_allclose(scored.column("loss").to_numpy(),
                             keras_losses(columns["x"][1:2], [1]), rtol=1e-5)


def test_first_as_text_and_dense_numbers_find_the_bad_rows():
  text = cols.first_as_text(pa.array([[b"a"], None, [], [b"\xfe", b"e"]],
                                     pa.large_list(pa.large_binary())))
  assert text.strings.to_pylist() == ["a", None, None, None]
  np.testing.assert_array_equal(text.not_utf8, [False, False, False, True])
  assert text.raw.to_pylist() == [b"a", None, None, b"\xfe"]
  dense = cols.dense_numbers(pa.array([["1", "2"], ["x", "3"], ["4"],
                                       ["5", "y"], ["-inf", "1e3"]]), 2,
                             np.float32)
  np.testing.assert_array_equal(dense.values, [[1, 2], [0, 0], [0, 0], [0, 0],
                                               [-np.inf, 1000]])
  np.testing.assert_array_equal(dense.counts, [2, 2, 1, 2, 2])
  np.testing.assert_array_equal(dense.not_numbers,
                                [False, True, False, True, False])
  assert dense.text.to_pylist() == [None, "x", None, "y", None]


# Whole runs -----------------------------------------------------------------

def _audited(tmp_path, pattern, model_path, **sections):
  """Audits `pattern`; returns `(summary, dead letters, losses/ by id)`."""
  out = tmp_path / "out"
  summary = run_audit(base_config(pattern, model_path, out, batch_size=100,
                                  flag={"loss_quantile": 0.9}, **sections))
  assert summary["examples_read"] == (summary["examples_scored"] +
                                      summary["examples_dead_lettered"])
  dead = [json.loads(line) for path in sorted((out / "dead_letter").iterdir())
          for line in path.open()]
  return summary, dead, pq.read_table(out / "losses").sort_by("id")


def _byte_ids(n):
  ids = np.array([f"ex-{i:05d}".encode() for i in range(n)], dtype=object)
  ids[0] = b"\xff\xfe"
  return ids


def test_run_tfrecord_with_an_id_not_utf8_first(
    tmp_path, classifier_path, keras_losses):
  data = make_columns(n=250, seed=11)
  data["id"] = _byte_ids(250)
  datasets.write_tfrecords(str(tmp_path / "data"), data, num_shards=1)
  summary, dead, losses = _audited(tmp_path, tmp_path / "data" / "*.gz",
                                   classifier_path)
  assert summary["examples_read"] == 250
  assert summary["examples_scored"] == 249
  assert summary["dead_letter"]["by_reason"] == {"bad_id": 1}
  assert [(d["id"], d["error"]) for d in dead] == [
      (None, "id is not valid UTF-8: b'\\xff\\xfe'")]
  np.testing.assert_allclose(losses.column("loss").to_numpy(),
                             keras_losses(data["x"][1:], data["label"][1:]),
                             rtol=1e-5)


@pytest.mark.parametrize("id_type", [pa.binary(), pa.large_binary()])
def test_run_parquet_with_an_id_not_utf8_first(
    tmp_path, classifier_path, keras_losses, id_type):
  data = make_columns(n=250, seed=12)
  (tmp_path / "data").mkdir()
  pq.write_table(pa.table({
      "id": pa.array(list(_byte_ids(250)), id_type),
      "x": pa.array(list(data["x"]), pa.list_(pa.float32())),
      "label": pa.array(data["label"])}),
                 tmp_path / "data" / "part-0.parquet", row_group_size=100)
  summary, dead, losses = _audited(tmp_path, tmp_path / "data" / "*.parquet",
                                   classifier_path, input={"format": "parquet"})
  assert (summary["examples_read"], summary["examples_scored"]) == (250, 249)
  assert summary["dead_letter"]["by_reason"] == {"bad_id": 1}
  assert dead[0]["error"] == "id is not valid UTF-8: b'\\xff\\xfe'"
  np.testing.assert_allclose(losses.column("loss").to_numpy(),
                             keras_losses(data["x"][1:], data["label"][1:]),
                             rtol=1e-5)


def test_run_with_a_slice_not_utf8(tmp_path, classifier_path):
  data = make_columns(n=200, seed=13)
  data["group"] = np.array([g.encode() for g in data["group"]], dtype=object)
  data["group"][0] = b"\xc3\x28"  # An invalid two-byte UTF-8 sequence.
  datasets.write_tfrecords(str(tmp_path / "data"), data, num_shards=2)
  summary, dead, _ = _audited(tmp_path, tmp_path / "data" / "*.gz",
                              classifier_path, stats={"slice_by": "group"})
  assert (summary["examples_read"], summary["examples_scored"]) == (200, 199)
  assert summary["dead_letter"]["by_reason"] == {"bad_slice": 1}
  assert [(d["id"], d["error"]) for d in dead] == [
      ("ex-00000", "slice 'group' is not valid UTF-8: b'\\xc3('")]
  assert sorted(summary["slices"]) == ["a", "b", "c"]
  assert sum(s["count"] for s in summary["slices"].values()) == 199


def test_run_parquet_with_bad_labels_and_weights(
    tmp_path, classifier_path, keras_losses):
  data = make_columns(n=300, seed=14)
  labels = data["label"].astype(np.float64)
  labels[[0, 1, 2, 3]] = [2.5, -0.5, 9.99, np.nan]
  weights = np.linspace(0.5, 1.5, 300)
  weights[[4, 5, 6]] = [np.nan, np.inf, -1.0]
  text = data["label"].astype(str)
  text[157] = "cat"
  (tmp_path / "data").mkdir()
  x = pa.array(list(data["x"]), pa.list_(pa.float32()))
  # a.parquet: float labels and weights; b.parquet: labels as text.
  pq.write_table(pa.table({
      "id": data["id"][:150], "x": x[:150], "label": labels[:150],
      "w": weights[:150]}), tmp_path / "data" / "a.parquet")
  pq.write_table(pa.table({
      "id": data["id"][150:], "x": x[150:], "label": list(text[150:]),
      "w": weights[150:]}), tmp_path / "data" / "b.parquet")
  summary, dead, losses = _audited(
      tmp_path, tmp_path / "data" / "*.parquet", classifier_path,
      input={"format": "parquet", "weight_column": "w"})
  assert (summary["examples_read"], summary["examples_scored"]) == (300, 292)
  assert summary["dead_letter"]["by_reason"] == {
      "label_not_integer": 4, "bad_weight": 3, "wrong_type": 1}
  assert sorted((d["id"], d["error"]) for d in dead) == [
      ("ex-00000", f"label 2.5 is not an integer class: {CLASSES}"),
      ("ex-00001", f"label -0.5 is not an integer class: {CLASSES}"),
      ("ex-00002", f"label 9.99 is not an integer class: {CLASSES}"),
      ("ex-00003", f"label nan is not an integer class: {CLASSES}"),
      ("ex-00004", f"weight nan {WEIGHT}"),
      ("ex-00005", f"weight inf {WEIGHT}"),
      ("ex-00006", f"weight -1 {WEIGHT}"),
      ("ex-00157", "label 'cat' is not a number")]
  keep = ~np.isin(np.arange(300), [0, 1, 2, 3, 4, 5, 6, 157])
  assert losses.column("id").to_pylist() == list(data["id"][keep])
  expected = keras_losses(data["x"][keep], data["label"][keep])
  np.testing.assert_allclose(losses.column("loss").to_numpy(), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.column("weighted_loss").to_numpy(),
                             expected * weights[keep], rtol=1e-5)


def _dead_letters(out):
  return [json.loads(line) for path in sorted((out / "dead_letter").iterdir())
          for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["probabilities", "logits"])
def test_every_row_of_a_predictions_column_is_checked(tmp_path, write_config,
                                                      kind):
  """Rows past the first 64 (the pre-run sample) that are not of
  `predictions_kind` are dead-lettered one by one; the rest of each batch
  is scored, with Keras' losses."""
  n, k = 300, 3
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(n, k))
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  values = (probs if kind == "probabilities" else logits).astype(np.float32)
  bad = {"probabilities": {100: [2, -1, 0], 150: [0.5, 0.6, 0.1],
                           200: [np.nan, 0.5, 0.5], 299: [0.2, 0.3, 1.5]},
         "logits": {100: [np.inf, 0, 1], 200: [0, np.nan, 1],
                    299: [-np.inf, 2, 3]}}[kind]
  for row, value in bad.items():
    values[row] = value
  labels = rng.integers(0, k, n)
  ids = np.array([f"row-{i:03d}" for i in range(n)])
  write_predictions(tmp_path / "data.parquet", ids, labels, values)
  out = tmp_path / "out"
  config = base_config(tmp_path / "data.parquet", "", out, batch_size=128,
                       model={"predictions_column": "p",
                              "predictions_kind": kind},
                       loss={"from_logits": kind == "logits"})
  config["input"]["format"] = "parquet"
  summary = audit.run(["--config", write_config(config)])
  dead = sorted(_dead_letters(out), key=lambda d: d["id"])
  assert [(d["id"], d["reason"]) for d in dead] == [
      (ids[row], "bad_prediction") for row in sorted(bad)]
  described = ("is not a probability vector (values in [0, 1] summing to 1"
               " within 0.001)" if kind == "probabilities" else
               "holds a logit that is not finite")
  for d, row in zip(dead, sorted(bad)):
    shown = [float(f"{v:.6g}") for v in values[row].tolist()]
    assert d["error"] == (f"prediction {shown} in 'p' {described};"
                          f" model.predictions_kind: {kind}")
  assert (summary["examples_scored"], summary["examples_dead_lettered"]) == (
      n - len(bad), len(bad))
  good = np.array([i for i in range(n) if i not in bad])
  losses = pd.read_parquet(out / "losses").set_index("id").loc[ids[good]]
  expected = keras.losses.SparseCategoricalCrossentropy(
      from_logits=kind == "logits", reduction=None)(
          labels[good], values[good]).numpy()
  np.testing.assert_allclose(losses["loss"], expected, rtol=1e-5, atol=1e-6)
  assert (losses["self_confidence"] >= 0).all()
