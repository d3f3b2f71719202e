"""Several models per pass: K folds, C checkpoints, or a predictions column.

Golden values come from Keras (each saved model's own predictions) and from
numpy formulas of dataset cartography and the area under the margin.
"""

import dataclasses

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossaudit import preflight
from lossaudit.config import AuditConfig
from lossaudit.errors import ConfigError
from lossaudit.model_inputs import ModelInputs, Ragged, read_model_inputs
from lossaudit.rules import Rows, Thresholds, flag_masks
from lossaudit.scoring import BatchScorer, regions
from lossaudit.spec import Feature
from lossaudit.transforms.flag import flag_batch, flagged_schema
from tests.helpers import NUM_CLASSES, NUM_FEATURES, classifier_spec

N = 120


def _classifier(seed: int, path: str, activation: str = "softmax") -> str:
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  hidden = keras.layers.Dense(16, activation="relu")(inputs)
  outputs = keras.layers.Dense(NUM_CLASSES, activation=activation,
                               name="probs")(hidden)
  keras.Model(inputs, outputs).save(path)
  return path


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(N, NUM_FEATURES)).astype(np.float32)
  label = rng.integers(0, NUM_CLASSES, N)
  return {"id": np.array([f"r{i:04d}" for i in range(N)]), "x": x,
          "label": label, "fold": (np.arange(N) * 7) % 3}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  for k in range(3):
    _classifier(10 + k, str(root / f"fold{k}.keras"))
  for c in range(1, 5):
    _classifier(20 + c, str(root / f"epoch{c}.keras"))
  return root


def _batch(data, **extra) -> pa.RecordBatch:
  columns = {"id": pa.array(data["id"]),
             "x": pa.FixedSizeListArray.from_arrays(
                 pa.array(data["x"].reshape(-1)), NUM_FEATURES),
             "label": pa.array(data["label"]),
             "fold": pa.array(data["fold"])}
  columns.update(extra)
  return pa.RecordBatch.from_pydict(columns)


def _predict(path, x):
  return keras.models.load_model(str(path), compile=False).predict(
      x, verbose=0)


def _sparse_ce(probs, label):
  return keras.losses.SparseCategoricalCrossentropy(reduction=None)(
      label, probs).numpy()


def test_each_example_is_scored_by_its_folds_model(models, data):
  paths = tuple((str(models / f"fold{k}.keras"),) for k in range(3))
  spec = dataclasses.replace(classifier_spec(paths[0][0]),
                             model_paths=paths, fold_column="fold")
  scored, dead = BatchScorer(spec, max_rows=16).score("f", _batch(data))
  assert dead == []
  by_id = dict(zip(scored.column("id").to_pylist(),
                   scored.column("loss").to_pylist()))
  folds = dict(zip(scored.column("id").to_pylist(),
                   scored.column("fold").to_pylist()))
  for k in range(3):
    rows = data["fold"] == k
    expected = _sparse_ce(_predict(paths[k][0], data["x"][rows]),
                          data["label"][rows])
    got = [by_id[i] for i in data["id"][rows]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert {folds[i] for i in data["id"][rows]} == {k}


def test_a_fold_outside_range_is_a_dead_letter(models, data):
  paths = tuple((str(models / f"fold{k}.keras"),) for k in range(3))
  spec = dataclasses.replace(classifier_spec(paths[0][0]),
                             model_paths=paths, fold_column="fold")
  fold = pa.array([3, -1, None, 1.5] + list(data["fold"][4:]),
                  pa.float64())
  scored, dead = BatchScorer(spec).score("f", _batch(data, fold=fold))
  assert scored.num_rows == N - 4
  assert [d["reason"] for d in dead] == ["bad_fold"] * 4
  assert [d["id"] for d in dead] == list(data["id"][:4])
  assert "not an integer in [0, 3)" in dead[0]["error"]


def test_training_dynamics_equal_numpy_over_checkpoints(models, data):
  paths = ((tuple(str(models / f"epoch{c}.keras") for c in range(1, 5))),)
  spec = dataclasses.replace(classifier_spec(paths[0][0]),
                             model_paths=paths, regions=(0.3, 0.05))
  scored, _ = BatchScorer(spec).score("f", _batch(data))
  probs = np.stack([_predict(p, data["x"]) for p in paths[0]])  # (C, N, K)
  given = data["label"]
  own = probs[:, np.arange(N), given]
  log_p = np.log(np.clip(probs.astype(np.float64), 1e-7, 1))
  others = np.where(np.arange(NUM_CLASSES) == given[:, None], -np.inf, log_p)
  aum = (log_p[:, np.arange(N), given] - others.max(axis=2)).mean(axis=0)
  expected = {"confidence": own.mean(axis=0), "variability": own.std(axis=0),
              "correctness": (probs.argmax(axis=2) == given).mean(axis=0),
              "aum": aum}
  for name, values in expected.items():
    np.testing.assert_allclose(scored.column(name).to_numpy(), values,
                               atol=1e-6, err_msg=name)
  # The losses are the last checkpoint's.
  np.testing.assert_allclose(scored.column("loss").to_numpy(),
                             _sparse_ce(probs[-1], given), rtol=1e-5)
  region = np.where(expected["variability"] >= 0.05, "ambiguous",
                    np.where(expected["confidence"] >= 0.3, "easy", "hard"))
  assert scored.column("region").to_pylist() == region.tolist()


def test_aum_from_logits_of_a_logits_model(tmp_path, data):
  paths = ((tuple(_classifier(30 + c, str(tmp_path / f"l{c}.keras"),
                              activation=None) for c in range(2))),)
  spec = classifier_spec(paths[0][0], from_logits=True)
  spec = dataclasses.replace(spec, model_paths=paths)
  scored, _ = BatchScorer(spec).score("f", _batch(data))
  logits = np.stack([_predict(p, data["x"]) for p in paths[0]])
  given = data["label"]
  own = logits[:, np.arange(N), given]
  others = np.where(np.arange(NUM_CLASSES) == given[:, None], -np.inf, logits)
  np.testing.assert_allclose(scored.column("aum").to_numpy(),
                             (own - others.max(axis=2)).mean(axis=0),
                             atol=1e-5)


def test_predictions_column_scores_as_the_model_would(models, data):
  probs = _predict(models / "fold0.keras", data["x"])
  column = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)),
                                             NUM_CLASSES)
  for kind, values in (("probabilities", column),
                       ("logits", pa.FixedSizeListArray.from_arrays(
                           pa.array(np.log(probs).reshape(-1)),
                           NUM_CLASSES))):
    spec = classifier_spec("", from_logits=kind == "logits")
    spec = dataclasses.replace(
        spec, predictions_kind=kind,
        features=(Feature("p", "p", (NUM_CLASSES,), "float32"),),
        terms=(dataclasses.replace(spec.terms[0], output="predictions"),))
    scored, dead = BatchScorer(spec).score("f", _batch(data, p=values))
    assert dead == []
    np.testing.assert_allclose(scored.column("loss").to_numpy(),
                               _sparse_ce(probs, data["label"]), rtol=1e-4)
    np.testing.assert_array_equal(scored.column("predicted_label"),
                                  probs.argmax(axis=1))


def test_rows_taken_in_any_order():
  ragged = Ragged(np.arange(10), np.array([3, 0, 2, 5]))
  taken = ragged.take(np.array([3, 1, 0]))
  np.testing.assert_array_equal(taken.lengths, [5, 0, 3])
  np.testing.assert_array_equal(taken.values, [5, 6, 7, 8, 9, 0, 1, 2])
  inputs = ModelInputs({"x": ragged}, {"y": np.arange(4)},
                       ids=pa.array(list("abcd")), folds=np.arange(4))
  taken = inputs.take(np.array([2, 0]))
  assert taken.ids.to_pylist() == ["c", "a"]
  np.testing.assert_array_equal(taken.folds, [2, 0])


def test_regions_and_aum_rules():
  confidence = np.array([0.9, 0.9, 0.1, np.nan])
  variability = np.array([0.1, 0.3, 0.1, 0.1])
  assert regions(confidence, variability, (0.5, 0.2)).to_pylist() == [
      "easy", "ambiguous", "hard", None]
  aum = np.array([-1.0, 0.5, np.nan, 2.0])
  rows = Rows(pa.RecordBatch.from_pydict({"aum": aum}), np.zeros(4),
              np.array(list("abcd"), object))
  masks = dict(flag_masks(rows, Thresholds.of(aum_below=0.6,
                                              aum_quantile=-0.5)))
  np.testing.assert_array_equal(masks["aum_below"], [1, 1, 0, 0])
  np.testing.assert_array_equal(masks["aum_quantile"], [1, 0, 0, 0])


def _parquet(tmp_path, data, **extra) -> str:
  path = str(tmp_path / "data.parquet")
  pq.write_table(pa.Table.from_batches([_batch(data, **extra)]), path)
  return path


def _config(pattern, model, **sections):
  raw = {"input": {"pattern": pattern, "format": "parquet"}, "model": model,
         "output": {"dir": "unused"}}
  for name, values in sections.items():
    raw[name] = {**raw.get(name, {}), **values}
  return AuditConfig.from_dict(raw)


def test_set_up_errors(tmp_path, models, data):
  pattern = _parquet(tmp_path, data, p=pa.FixedSizeListArray.from_arrays(
      pa.array(np.full(N * 4, 0.25, np.float32)), 4))
  fold_model = str(models / "fold{fold}.keras")
  with pytest.raises(ConfigError, match=r"fold3\.keras.*no such file"):
    preflight.plan(_config(pattern, {"path": fold_model, "folds": 4}))
  _classifier(1, str(tmp_path / "wide.keras"))
  keras.utils.set_random_seed(1)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
      inputs)).save(str(tmp_path / "narrow.keras"))
  with pytest.raises(ConfigError, match=r"model.path: expected every fold"
                     r".*Received: .*narrow\.keras"):
    preflight.plan(_config(pattern, {"path": str(tmp_path / "{checkpoint}"
                                                 ".keras"),
                                     "checkpoints": ["wide", "narrow"]}))
  with pytest.raises(ConfigError, match=r"model.predictions_column: expected"
                     r" 3 values per row.*Received: 4"):
    preflight.plan(_config(pattern, {"predictions_column": "p"},
                           input={"label_vocabulary": ["a", "b", "c"]}))
  with pytest.raises(ConfigError, match=r"model.predictions_column: column"
                     r" 'q' not found"):
    preflight.plan(_config(pattern, {"predictions_column": "q"}))
  with pytest.raises(ConfigError, match=r"model.checkpoints: needs a"
                     r" classification loss"):
    preflight.plan(_config(pattern, {
        "path": str(models / "epoch{checkpoint}.keras"),
        "checkpoints": [1, 2]}, loss={"name": "mean_squared_error"},
        input={"label_column": "x"}))


def test_plan_of_folds_checkpoints_and_predictions(tmp_path, models, data):
  logits = np.random.default_rng(2).normal(0, 3, N * NUM_CLASSES)
  pattern = _parquet(tmp_path, data, p=pa.FixedSizeListArray.from_arrays(
      pa.array(logits.astype(np.float32)), NUM_CLASSES))
  plan = preflight.plan(_config(pattern, {
      "path": str(models / "fold{fold}.keras"), "folds": 3},
      input={"fold_column": "fold"}))
  assert plan.spec.num_folds == 3 and "fold" in plan.columns
  assert plan.spec.model_paths[2] == (str(models / "fold2.keras"),)
  plan = preflight.plan(_config(pattern, {
      "path": str(models / "epoch{checkpoint}.keras"),
      "checkpoints": [1, 2, 3]}))
  assert plan.spec.dynamics and len(plan.spec.model_paths[0]) == 3
  plan = preflight.plan(_config(pattern, {"predictions_column": "p",
                                          "predictions_kind": "logits"}))
  assert plan.spec.predictions_kind == "logits"
  assert plan.spec.terms[0].from_logits
  assert plan.columns == ("p", "label", "id")
  assert _config(pattern, {"predictions_column": "p"}
                 ).model.path_groups() == ()


def test_read_model_inputs_folds_from_ids(models, data):
  paths = tuple((str(models / f"fold{k}.keras"),) for k in range(3))
  spec = dataclasses.replace(classifier_spec(paths[0][0]), model_paths=paths)
  from lossaudit.folds import fold_of
  checked = read_model_inputs(spec, _batch(data))
  np.testing.assert_array_equal(checked.inputs.folds,
                                fold_of(list(data["id"]), 3))


def _nan_bias_copy(source: str, path: str) -> str:
  model = keras.models.load_model(source, compile=False)
  layer = model.get_layer("probs")
  kernel, bias = layer.get_weights()
  layer.set_weights([kernel, np.full_like(bias, np.nan)])
  model.save(path)
  return path


def test_a_non_finite_early_checkpoint_spares_the_last_ones_loss(
    tmp_path, models, data):
  early = _nan_bias_copy(str(models / "epoch1.keras"),
                         str(tmp_path / "nan.keras"))
  last = str(models / "epoch2.keras")
  spec = dataclasses.replace(classifier_spec(last),
                             model_paths=((early, last),))
  scored, _ = BatchScorer(spec).score("f", _batch(data))
  np.testing.assert_allclose(
      scored.column("loss").to_numpy(),
      _sparse_ce(_predict(last, data["x"]), data["label"]), rtol=1e-5)
  assert np.isnan(scored.column("aum").to_numpy()).all()
  assert scored.column("region").null_count == N


def test_folds_of_checkpoints(models, data):
  paths = ((str(models / "epoch1.keras"), str(models / "epoch2.keras")),
           (str(models / "epoch3.keras"), str(models / "epoch4.keras")))
  two = dict(data, fold=data["fold"] % 2)
  spec = dataclasses.replace(classifier_spec(paths[0][0]), model_paths=paths,
                             fold_column="fold")
  scored, _ = BatchScorer(spec).score("f", _batch(two))
  by_id = {i: n for n, i in enumerate(scored.column("id").to_pylist())}
  order = [by_id[i] for i in data["id"]]
  for fold, (first, last) in enumerate(paths):
    rows = two["fold"] == fold
    own = [_predict(p, data["x"][rows])[np.arange(rows.sum()),
                                          data["label"][rows]]
           for p in (first, last)]
    confidence = scored.column("confidence").to_numpy()[order][rows]
    np.testing.assert_allclose(confidence, np.mean(own, axis=0), atol=1e-6)


def _saved_module(path: str, seed: int, fails: bool = False) -> str:
  """A SavedModel `x (None, F)` → `probs (None, K)`; with `fails`, every
  call raises InvalidArgumentError (a data error, as a corrupt record's)."""
  import tensorflow as tf

  class Module(tf.Module):

    def __init__(self):
      super().__init__()
      self.w = tf.Variable(np.random.default_rng(seed).normal(
          size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32))

    @tf.function(input_signature=[
        tf.TensorSpec([None, NUM_FEATURES], tf.float32, name="x")])
    def serve(self, x):
      if fails:
        tf.debugging.assert_less(tf.reduce_sum(x) * 0.0, -1.0)
      return {"probs": tf.nn.softmax(x @ self.w)}

  module = Module()
  tf.saved_model.save(module, path, signatures={"serving_default":
                                                module.serve})
  return path


def test_every_fold_model_is_checked_before_the_run(tmp_path, data):
  pattern = _parquet(tmp_path, data)
  for k in range(3):
    _saved_module(str(tmp_path / f"f{k}"), k, fails=k == 2)
  with pytest.raises(ConfigError) as info:
    preflight.plan(_config(pattern, {"path": str(tmp_path / "f{fold}"),
                                     "folds": 3},
                           input={"fold_column": "fold"}))
  assert str(info.value).startswith(
      f"model.path: the model of fold 2, {str(tmp_path / 'f2')!r}, does not"
      f" fit the data of {pattern}: ")


def test_fold_models_of_other_outputs_are_refused(tmp_path, models, data):
  pattern = _parquet(tmp_path, data)
  for k in (0, 2):
    keras.models.load_model(str(models / f"fold{k}.keras"),
                            compile=False).save(str(tmp_path / f"f{k}.keras"))
  keras.utils.set_random_seed(4)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  wide = keras.layers.Dense(NUM_CLASSES + 1, activation="softmax",
                            name="probs")(inputs)
  keras.Model(inputs, wide).save(str(tmp_path / "f1.keras"))
  with pytest.raises(ConfigError) as info:
    preflight.plan(_config(pattern, {
        "path": str(tmp_path / "f{fold}.keras"), "folds": 3},
        input={"fold_column": "fold"}))
  assert str(info.value) == (
      f"model.path: expected every fold and checkpoint model to have the"
      f" outputs of {str(tmp_path / 'f0.keras')!r} (shapes and dtypes, in"
      f" order): probs (None, 5) float32."
      f" Received: {str(tmp_path / 'f1.keras')!r} with probs (None, 6)"
      f" float32")


def test_predictions_column_errors(tmp_path, data):
  pattern = _parquet(tmp_path, data, p=pa.array(np.ones(N, np.float32)),
                     one=pa.array([[0.5]] * N, pa.list_(pa.float32())))
  with pytest.raises(ConfigError) as info:
    preflight.plan(_config(pattern, {"predictions_column": "p"}))
  assert str(info.value) == (
      f"model.predictions_column: expected a column of lists of class"
      f" probabilities or logits. Received: 'p' of type float in {pattern}")
  with pytest.raises(ConfigError) as info:
    preflight.plan(_config(pattern, {"predictions_column": "one"}))
  assert str(info.value) == (
      f"model.predictions_column: expected rows of at least 2 class"
      f" probabilities or logits. Received: 'one' with 1 values in the first"
      f" records of {pattern}")
  with pytest.raises(ConfigError) as info:
    preflight.plan(_config(pattern, {"predictions_column": "x",
                                     "output": "probs"}))
  assert str(info.value) == (
      "model.output: expected null or 'predictions' with"
      " model.predictions_column. Received: 'probs'")


def test_a_bad_fold_names_its_value(models, data):
  paths = tuple((str(models / f"fold{k}.keras"),) for k in range(3))
  spec = dataclasses.replace(classifier_spec(paths[0][0]),
                             model_paths=paths, fold_column="fold")
  fold = pa.array([7] + list(data["fold"][1:]))
  _, dead = BatchScorer(spec).score("f", _batch(data, fold=fold))
  assert dead == [{"source": "f", "id": data["id"][0],
                   "error": "fold 7 is not an integer in [0, 3)",
                   "reason": "bad_fold"}]


def test_rows_flagged_by_aum_alone_are_scored_by_minus_aum():
  scored = pa.RecordBatch.from_pydict({
      "id": ["a", "b", "c"], "loss": [0.1, 5.0, 0.2],
      "aum": [-3.0, -2.0, 1.0], "region": ["hard", "hard", "easy"]})
  schema = flagged_schema(scored.schema)
  flagged = flag_batch(scored, Thresholds.of(loss_threshold=1.0, aum_below=0.0),
                       schema)
  assert flagged.to_pydict() == {
      "id": ["a", "b"], "loss": [0.1, 5.0],
      "reasons": [["aum_below"], ["loss_threshold", "aum_below"]],
      "score": [3.0, 5.0], "aum": [-3.0, -2.0], "region": ["hard", "hard"]}


# The checkpoints of a model trained on every row (`model.dynamics_path`) --


def _margins(probs, label):
  """`log p_given - max_other log p` `(N,)` of probabilities `(N, K)`."""
  logs = np.log(probs.astype(np.float64))
  others = np.where(np.arange(logs.shape[1]) == label[:, None], -np.inf, logs)
  return logs[np.arange(len(label)), label] - others.max(axis=1)


def test_a_diverged_dynamics_checkpoint_spares_the_others(tmp_path, models,
                                                          data):
  full = [str(models / "epoch1.keras"),
          _nan_bias_copy(str(models / "epoch2.keras"),
                         str(tmp_path / "nan.keras")),
          str(models / "epoch3.keras")]
  spec = dataclasses.replace(classifier_spec(""), model_paths=tuple(
      (str(models / f"fold{k}.keras"),) for k in range(3)),
                             fold_column="fold", dynamics_paths=tuple(full),
                             checkpoint_margins=True)
  scored, _ = BatchScorer(spec).score("f", _batch(data))
  order = np.argsort(scored.column("id").to_numpy(zero_copy_only=False))
  margins = np.stack(scored.column("__checkpoint_margins__").to_numpy(
      zero_copy_only=False))[order]
  correct = np.stack(scored.column("__checkpoint_correct__").to_numpy(
      zero_copy_only=False))[order]
  assert np.isnan(margins[:, 1]).all() and not correct[:, 1].any()
  for c in (0, 2):
    probs = _predict(full[c], data["x"])
    np.testing.assert_allclose(margins[:, c], _margins(probs, data["label"]),
                               atol=1e-5)
    np.testing.assert_array_equal(correct[:, c],
                                  probs.argmax(axis=1) == data["label"])


def test_a_predictions_column_keeps_its_loss_where_the_full_model_cannot(
    models, data):
  probs = _predict(models / "fold0.keras", data["x"])
  x = data["x"].copy()
  x[:5, 0] = np.nan  # Only the full model reads x.
  spec = classifier_spec("", output="predictions")
  spec = dataclasses.replace(
      spec, predictions_kind="probabilities",
      features=(Feature("p", "p", (NUM_CLASSES,), "float32"),
                Feature("x", "x", (NUM_FEATURES,), "float32")),
      dynamics_paths=(str(models / "epoch1.keras"),
                      str(models / "epoch2.keras")), checkpoint_margins=True)
  scored, dead = BatchScorer(spec).score("f", _batch(
      dict(data, x=x), p=pa.FixedSizeListArray.from_arrays(
          pa.array(probs.reshape(-1)), NUM_CLASSES)))
  assert dead == []
  np.testing.assert_allclose(scored.column("loss").to_numpy(),
                             _sparse_ce(probs, data["label"]), rtol=1e-4)
  margins = np.stack(scored.column("__checkpoint_margins__").to_numpy(
      zero_copy_only=False))
  assert np.isnan(margins[:5]).all() and np.isfinite(margins[5:]).all()
  assert np.isnan(scored.column("aum").to_numpy()[:5]).all()


def _grid(tmp_path, models) -> str:
  """3 folds × 2 checkpoints (copies of the module's models):
  `f{fold}-c{checkpoint}.keras`."""
  sources = sorted(models.glob("*.keras"))
  for k in range(3):
    for c in range(2):
      (tmp_path / f"f{k}-c{c}.keras").write_bytes(
          sources[2 * k + c].read_bytes())
  return str(tmp_path / "f{fold}-c{checkpoint}.keras")


def test_heldout_selection_takes_a_regression_loss(tmp_path, models, data):
  path = _grid(tmp_path, models)
  target = data["x"][:, :NUM_CLASSES]
  column = pa.FixedSizeListArray.from_arrays(pa.array(target.reshape(-1)),
                                             NUM_CLASSES)
  plan = preflight.plan(_config(
      _parquet(tmp_path, data, t=column), {
          "path": path, "folds": 3, "checkpoints": [0, 1],
          "select_checkpoint": "heldout_loss"},
      loss={"name": "mean_squared_error"},
      input={"label_column": "t", "id_column": "id", "fold_column": "fold"}))
  assert plan.spec.select_checkpoint and not plan.spec.dynamics
  scored, _ = BatchScorer(plan.spec).score("f", _batch(data, t=column))
  ids = scored.column("id").to_numpy(zero_copy_only=False)
  checkpoint = scored.column("__checkpoint__").to_numpy()
  for k in range(3):
    rows = data["fold"] == k
    for c in range(2):
      expected = np.mean((_predict(path.format(fold=k, checkpoint=c),
                                   data["x"][rows]) - target[rows]) ** 2,
                         axis=1)
      mine = (checkpoint == c) & np.isin(ids, data["id"][rows])
      by_id = dict(zip(ids[mine], scored.column("loss").to_numpy()[mine]))
      np.testing.assert_allclose([by_id[i] for i in data["id"][rows]],
                                 expected, rtol=1e-5)


def test_the_full_models_errors_name_model_dynamics_path(tmp_path, models,
                                                         data):
  pattern = _parquet(tmp_path, data)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  keras.Model(inputs, keras.layers.Dense(NUM_CLASSES + 1, activation="softmax")(
      inputs)).save(str(tmp_path / "wide-2.keras"))
  (tmp_path / "wide-1.keras").write_bytes(
      (models / "epoch1.keras").read_bytes())
  for full, checkpoints, message in (
      (models / "epoch{checkpoint}.keras", [1, 9],
       r"^model.dynamics_path: expected a .keras file or a SavedModel"
       r" directory. Received: .*epoch9.keras' \(no such file or"
       r" directory\)$"),
      (tmp_path / "wide-{checkpoint}.keras", [1, 2],
       r"^model.dynamics_path: expected every fold and checkpoint model to"
       r" have the outputs of .*Received: .*wide-2.keras")):
    with pytest.raises(ConfigError, match=message):
      preflight.plan(_config(pattern, {
          "path": str(models / "fold{fold}.keras"), "folds": 3,
          "checkpoints": checkpoints, "dynamics_path": str(full)},
          input={"id_column": "id", "fold_column": "fold"}))


def test_feature_columns_map_the_full_models_inputs_beside_predictions(
    tmp_path, data):
  for c in (1, 2):  # Its input is named "z"; the data's column is "x".
    _classifier(30 + c, str(tmp_path / f"z{c}.keras"))
    model = keras.models.load_model(str(tmp_path / f"z{c}.keras"))
    inputs = keras.Input((NUM_FEATURES,), name="z")
    keras.Model(inputs, model(inputs)).save(str(tmp_path / f"z{c}.keras"))
  pattern = _parquet(tmp_path, data, p=pa.FixedSizeListArray.from_arrays(
      pa.array(np.full(N * NUM_CLASSES, 1 / NUM_CLASSES, np.float32)),
      NUM_CLASSES))
  model = {"predictions_column": "p", "checkpoints": [1, 2],
           "dynamics_path": str(tmp_path / "z{checkpoint}.keras")}
  with pytest.raises(ConfigError, match=r"'z'"):
    preflight.plan(_config(pattern, model))
  plan = preflight.plan(_config(pattern, model,
                                input={"feature_columns": {"z": "x"}}))
  assert plan.spec.features == (
      Feature("p", "p", (NUM_CLASSES,), "float32"),
      Feature("z", "x", (NUM_FEATURES,), "float32"))
