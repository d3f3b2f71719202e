"""Rows of any length: padding, cutting and ragged rows, read per batch."""

import numpy as np
import pyarrow as pa
import pytest

from lossaudit.model_inputs import Ragged, read_model_inputs
from lossaudit.scoring import scored_batch
from lossaudit.spec import Feature, LossTerm, ScoringSpec

TERM = LossTerm(output="probs", name="probs", label_column="label",
                loss_name="sparse_categorical_crossentropy",
                label_dtype="int64", signals="sparse", num_classes=3)


def _spec(shape, dtype="int32", **options):
  return ScoringSpec(model_path="m", signature="serving_default",
                     features=(Feature("tokens", "tokens", shape, dtype),),
                     terms=(TERM,), **{"id_column": "id", **options})


def _batch(rows):
  return pa.RecordBatch.from_pydict({
      "id": [f"r{i}" for i in range(len(rows))],
      "tokens": rows,
      "label": [0] * len(rows),
  })


ROWS = [[1, 2, 3], [4], None, [], [5, 6, 7, 8, 9]]


def test_unknown_length_rows_are_ragged_and_padded_to_the_longest():
  checked = read_model_inputs(_spec((None,)), _batch(ROWS))
  ragged = checked.inputs.features["tokens"]
  assert isinstance(ragged, Ragged)
  np.testing.assert_array_equal(ragged.lengths, [3, 1, 0, 0, 5])
  assert checked.bad.tolist() == [False, False, True, False, False]
  np.testing.assert_array_equal(ragged.padded(-1), [
      [1, 2, 3, -1, -1], [4, -1, -1, -1, -1], [-1] * 5, [-1] * 5,
      [5, 6, 7, 8, 9]])
  kept = ragged.rows(np.array([True, False, False, True, True]))
  np.testing.assert_array_equal(kept.padded(0),
                                [[1, 2, 3, 0, 0], [0] * 5, [5, 6, 7, 8, 9]])


@pytest.mark.parametrize("options, bad, values", [
    ({}, [False, True, True, True, True], None),
    ({"pad_value": 7}, [False, False, True, False, True],
     [[1, 2, 3], [4, 7, 7], [0, 0, 0], [7, 7, 7], [0, 0, 0]]),
    ({"truncate": True}, [False, True, True, True, False],
     [[1, 2, 3], [0, 0, 0], [0, 0, 0], [0, 0, 0], [5, 6, 7]]),
    ({"pad_value": 0, "truncate": True}, [False, False, True, False, False],
     [[1, 2, 3], [4, 0, 0], [0, 0, 0], [0, 0, 0], [5, 6, 7]]),
])
def test_fixed_length_rows_are_padded_or_cut_only_when_asked(options, bad,
                                                            values):
  checked = read_model_inputs(_spec((3,), **options), _batch(ROWS))
  assert checked.bad.tolist() == bad
  reasons = {p.reason for p in checked.problems if p.rows.any()}
  assert reasons == ({"missing_feature", "wrong_size"} if not options or
                     len(options) == 1 else {"missing_feature"})
  if values is not None:
    got = checked.inputs.features["tokens"]
    np.testing.assert_array_equal(got[~checked.bad],
                                  np.array(values)[~np.array(bad)])


def test_wrong_size_names_the_length():
  checked = read_model_inputs(_spec((3,)), _batch([[1, 2]]))
  problem = next(p for p in checked.problems if p.rows.any())
  assert problem.message.replace("{value}", str(problem.values[0])) == (
      "feature 'tokens' has 2 values, expected 3")


def test_a_row_fingerprints_the_same_in_any_batch():
  spec = _spec((None,), id_column=None)
  short = read_model_inputs(spec, _batch([[1, 2], [3]])).inputs
  long = read_model_inputs(spec, _batch([[9, 9, 9, 9], [1, 2]])).inputs
  result = {"loss": np.zeros(2), "given_label": np.zeros(2),
            "predicted_label": np.zeros(2), "self_confidence": np.zeros(2),
            "margin": np.zeros(2)}
  first = scored_batch(spec, short, result).column("id").to_pylist()
  second = scored_batch(spec, long, result).column("id").to_pylist()
  assert first[0] == second[1]
  assert len(set(first + second)) == 3


def test_empty_rows_alone_fingerprint_too():
  spec = _spec((None,), id_column=None)
  empty = read_model_inputs(spec, _batch([[], []])).inputs
  result = {"loss": np.zeros(2), "given_label": np.zeros(2),
            "predicted_label": np.zeros(2), "self_confidence": np.zeros(2),
            "margin": np.zeros(2)}
  ids = scored_batch(spec, empty, result).column("id").to_pylist()
  assert ids[0] == ids[1]


def test_class_names_fit_a_binary_output_of_one_unit():
  term = LossTerm(output="p", name="p", label_column="label",
                  loss_name="binary_crossentropy", label_shape=(1,),
                  label_dtype="float32", signals="binary", num_classes=2)
  spec = ScoringSpec(model_path="m", signature="serving_default",
                     features=(Feature("x", "x", (1,), "float32"),),
                     terms=(term,), id_column="id",
                     class_names=("ham", "spam"))
  checked = read_model_inputs(spec, pa.RecordBatch.from_pydict({
      "id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0],
      "label": ["spam", "ham", "eggs"]}))
  labels = checked.inputs.labels["p"]
  assert labels.shape == (3, 1)
  assert labels[:2, 0].tolist() == [1, 0]
  assert checked.bad.tolist() == [False, False, True]


def test_strings_are_read_as_bytes_from_text_and_binary_columns():
  spec = _spec((), dtype="string")
  for rows in (["a b", "", None], [b"\x89PNG", b"", None]):
    checked = read_model_inputs(spec, _batch(rows))
    got = checked.inputs.features["tokens"]
    assert got.dtype == object
    assert list(got[:2]) == [r if isinstance(r, bytes) else r.encode()
                             for r in rows[:2]]
    assert checked.bad.tolist() == [False, False, True]


def test_numbers_for_a_string_input_are_the_wrong_type():
  checked = read_model_inputs(_spec((), dtype="string"), _batch([1, 2]))
  assert [p.reason for p in checked.problems if p.rows.any()] == [
      "wrong_type"]
  assert [p for p in checked.problems if p.rows.any()][0].message == (
      "feature 'tokens' has type int64, expected string or bytes values")
