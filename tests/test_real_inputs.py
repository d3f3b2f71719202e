"""Real models on real inputs: text, encoded images, serialized tf.Examples,
sequences, several inputs and class names, checked against Keras,
TensorFlow and cleanlab.

Each model is small, fit for a few epochs on a few hundred rows, and built
once per module. References never come from lossaudit: a `.keras` model's
losses are Keras' own, computed in a graph as `fit` does (from the logits
of its softmax); a SavedModel's are Keras' loss on the probabilities its
signature returns. Label issues are cleanlab's `find_label_issues` on the
model's probabilities.
"""

import dataclasses
import json
import types

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from cleanlab.filter import find_label_issues

from lossaudit.scoring import BatchScorer
from lossaudit.spec import Feature, LossTerm, ScoringSpec
from tests.helpers import base_config, run_audit
from tests.scorers import SmallMemoryScorer

N = 200
K = 3
SEED = 7
FLIPS = 10  # Labels flipped in each dataset, so that there are issues.
CLASS_NAMES = ["negative", "neutral", "positive"]
WORDS = [["awful", "bad", "poor", "sad"], ["fine", "okay", "plain", "usual"],
         ["good", "great", "nice", "superb"]]
IMAGE = 8  # Images are IMAGE x IMAGE, one channel.
RTOL = 1e-6
ATOL = 1e-7  # float32 losses near zero.

# A module's models and data, built once.


def _flipped(truth, seed):
  """`truth` with FLIPS labels moved to the next class."""
  rng = np.random.default_rng(seed)
  given = truth.copy()
  flip = rng.choice(len(truth), FLIPS, replace=False)
  given[flip] = (given[flip] + 1) % K
  return given


def _fit(model, x, y, epochs=3):
  model.compile(keras.optimizers.Adam(0.05),
                "sparse_categorical_crossentropy")
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
  model.fit(data, epochs=epochs, verbose=0, shuffle=False)
  return model


def _feature(value):
  """A tf.train.Feature of bytes, ints or floats."""
  values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
  first = values[0] if len(values) else b""
  if isinstance(first, (bytes, str)):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[
        v.encode() if isinstance(v, str) else v for v in values]))
  if isinstance(first, (int, np.integer)):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _examples(columns):
  """Serialized tf.train.Examples, one per row of `columns`."""
  n = len(next(iter(columns.values())))
  return [tf.train.Example(features=tf.train.Features(feature={
      name: _feature(values[i]) for name, values in columns.items()
  })).SerializeToString() for i in range(n)]


def _write_tfrecord(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return path


def _texts(labels, rng):
  every = sum(WORDS, [])
  return [" ".join(list(rng.choice(WORDS[c], 4)) + [rng.choice(every)])
          for c in labels]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("real_inputs")


@pytest.fixture(scope="module")
def text(root):
  """A `.keras` text classifier (TextVectorization, Input (1,) string) and
  its data as Parquet (string column) and TFRecord (bytes feature)."""
  rng = np.random.default_rng(SEED)
  truth = rng.integers(0, K, N)
  texts = _texts(truth, rng)
  given = _flipped(truth, SEED)
  ids = np.array([f"text-{i:03d}" for i in range(N)])
  keras.utils.set_random_seed(SEED)
  vectorize = keras.layers.TextVectorization(
      max_tokens=32, output_mode="int", output_sequence_length=6)
  vectorize.adapt(texts)
  inputs = keras.Input((1,), dtype="string", name="text")
  hidden = keras.layers.GlobalAveragePooling1D()(
      keras.layers.Embedding(32, 8)(vectorize(inputs)))
  model = keras.Model(inputs, keras.layers.Dense(K, activation="softmax")(
      hidden))
  _fit(model, tf.constant(texts)[:, None], truth)
  path = root / "text.keras"
  model.save(path)
  pq.write_table(pa.table({"id": ids, "text": texts, "label": given}),
                 root / "text.parquet")
  _write_tfrecord(root / "text.tfrecord", _examples(
      {"id": ids, "text": texts, "label": given}))
  return types.SimpleNamespace(path=path, ids=ids, texts=texts, given=given,
                               x=tf.constant(texts)[:, None])


def _encoded_images(labels, rng):
  """PNG bytes: class c is a bright band in rows 2c..2c+2, over noise."""
  pixels = rng.integers(0, 90, (len(labels), IMAGE, IMAGE, 1))
  for i, c in enumerate(labels):
    pixels[i, 2 * c + 1:2 * c + 3] += 160
  pixels = pixels.astype(np.uint8)
  return [tf.io.encode_png(p).numpy() for p in pixels], pixels


class _ImageClassifier(tf.Module):
  """Decodes PNG bytes, then one trained dense layer and a softmax."""

  def __init__(self, kernel, bias):
    super().__init__()
    self.kernel = tf.Variable(kernel)
    self.bias = tf.Variable(bias)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve(self, image_bytes):
    pixels = tf.map_fn(
        lambda b: tf.io.decode_png(b, channels=1), image_bytes,
        fn_output_signature=tf.TensorSpec([IMAGE, IMAGE, 1], tf.uint8))
    x = tf.reshape(tf.cast(pixels, tf.float32) / 255.0, [-1, IMAGE * IMAGE])
    return {"probs": tf.nn.softmax(tf.matmul(x, self.kernel) + self.bias)}


def _image_model(root, pixels, truth):
  keras.utils.set_random_seed(SEED)
  inputs = keras.Input((IMAGE * IMAGE,))
  dense = keras.layers.Dense(K)
  _fit(keras.Model(inputs, keras.layers.Softmax()(dense(inputs))),
       pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0, truth)
  module = _ImageClassifier(dense.kernel.numpy(), dense.bias.numpy())
  path = root / "png_savedmodel"
  tf.saved_model.save(module, str(path),
                      signatures={"serving_default": module.serve})
  return path


@pytest.fixture(scope="module")
def png(root):
  """A SavedModel decoding PNG bytes, and N PNGs in a TFRecord file whose
  columns have '/' in their names."""
  rng = np.random.default_rng(SEED + 1)
  truth = rng.integers(0, K, N)
  encoded, pixels = _encoded_images(truth, rng)
  given = _flipped(truth, SEED + 1)
  ids = np.array([f"img/{i:03d}" for i in range(N)])
  sources = np.array(["camera/a", "camera/b"])[np.arange(N) % 2]
  path = _image_model(root, pixels, truth)
  data = _write_tfrecord(root / "png.tfrecord", _examples({
      "image/id": ids, "image/encoded": encoded,
      "image/class/label": given, "image/source": sources}))
  return types.SimpleNamespace(path=path, data=data, ids=ids, given=given,
                               encoded=encoded, sources=sources)


def _signature_probs(path, signature="serving_default", **inputs):
  fn = tf.saved_model.load(str(path)).signatures[signature]
  return next(iter(fn(**inputs).values())).numpy()


def _keras_loss_on(labels, probs):
  """Keras' loss on probabilities given as numpy constants (clipped)."""
  return keras.losses.sparse_categorical_crossentropy(
      tf.constant(labels), tf.constant(probs)).numpy()


def _keras_in_graph(path, x, labels):
  """Keras' loss of a `.keras` model on `x`, in a graph (from the logits of
  its softmax, as `fit`), and the model's probabilities."""
  model = keras.models.load_model(path, compile=False)
  loss = tf.function(lambda x, y: keras.losses.sparse_categorical_crossentropy(
      y, model(x)))
  return loss(x, tf.constant(labels)).numpy(), np.asarray(model(x))


# Running audits and reading what they wrote.


def _audited(root, name, pattern, model_path, fmt="parquet", **sections):
  """Runs `lossaudit run` in-process; returns `(output dir, summary)`."""
  out = root / f"out-{name}"
  flag = {"loss_quantile": None, "label_issues": "confident_learning"}
  flag.update(sections.pop("flag", {}))
  config = base_config(pattern, model_path, out, flag=flag, **sections)
  config["input"]["format"] = fmt
  config["output"]["overwrite"] = True
  return out, run_audit(config)


def _losses(out, ids=None):
  table = pq.read_table(out / "losses").to_pandas().set_index("id")
  return table if ids is None else table.loc[ids]


def _flagged(out):
  return set(pq.read_table(out / "flagged").to_pandas()["id"])


def _dead(out):
  return [json.loads(line) for path in sorted((out / "dead_letter").iterdir())
          for line in path.read_text().splitlines()]


def _issues(ids, given, probs):
  """cleanlab's label issues (the method `flag.label_issues` names)."""
  return set(np.asarray(ids)[find_label_issues(
      np.asarray(given), probs, filter_by="confident_learning")])


def _check(out, summary, ids, given, expected_loss, probs):
  """Losses equal `expected_loss`; flagged ids equal cleanlab's issues."""
  losses = _losses(out, ids)
  np.testing.assert_allclose(losses["loss"], expected_loss, rtol=RTOL,
                             atol=ATOL)
  np.testing.assert_array_equal(losses["given_label"], given)
  np.testing.assert_array_equal(losses["predicted_label"],
                                probs.argmax(axis=1))
  expected = _issues(ids, given, probs)
  assert expected, "no label issues: the test would not show anything"
  assert _flagged(out) == expected
  assert summary["examples_scored"] == len(ids)
  assert summary["examples_dead_lettered"] == 0


# 1. Text.


@pytest.fixture(scope="module")
def text_parquet_run(root, text):
  return _audited(root, "text-parquet", root / "text.parquet", text.path)


def test_text_keras_on_parquet_strings(text, text_parquet_run):
  out, summary = text_parquet_run
  expected, probs = _keras_in_graph(text.path, text.x, text.given)
  _check(out, summary, text.ids, text.given, expected, probs)
  assert summary["loss"]["computed_from"] == "logits"


@pytest.mark.slow
def test_text_keras_on_tfrecord_bytes(root, text):
  out, summary = _audited(root, "text-tfrecord", root / "text.tfrecord",
                          text.path, fmt="tfrecord")
  expected, probs = _keras_in_graph(text.path, text.x, text.given)
  _check(out, summary, text.ids, text.given, expected, probs)


# 2. Encoded images, column names with '/'.


def test_png_savedmodel_on_tfrecord(root, png):
  out, summary = _audited(
      root, "png", png.data, png.path, fmt="tfrecord",
      input={"id_column": "image/id", "label_column": "image/class/label",
             "feature_columns": {"image_bytes": "image/encoded"}},
      stats={"slice_by": "image/source"})
  probs = _signature_probs(png.path,
                           image_bytes=tf.constant(png.encoded, tf.string))
  _check(out, summary, png.ids, png.given, _keras_loss_on(png.given, probs),
         probs)
  assert summary["loss"]["computed_from"] == "outputs"
  assert {k: v["count"] for k, v in summary["slices"].items()} == {
      "camera/a": N // 2, "camera/b": N // 2}


# 3. Serialized tf.Examples.

WIDTH = 4


class _ExampleClassifier(tf.Module):
  """Parses serialized tf.Examples (`x`: WIDTH floats), then one trained
  dense layer and a softmax."""

  def __init__(self, kernel, bias):
    super().__init__()
    self.kernel = tf.Variable(kernel)
    self.bias = tf.Variable(bias)

  def _probs(self, records):
    parsed = tf.io.parse_example(records, {
        "x": tf.io.FixedLenFeature([WIDTH], tf.float32)})
    return {"probs": tf.nn.softmax(tf.matmul(parsed["x"], self.kernel) +
                                   self.bias)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def examples(self, examples):
    return self._probs(examples)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def records(self, records):
    return self._probs(records)


@pytest.fixture(scope="module")
def serialized(root):
  """A SavedModel whose `serving_default` takes serialized tf.Examples as
  `examples` (and whose `by_name` takes them as `records`), and N of them."""
  rng = np.random.default_rng(SEED + 2)
  truth = rng.integers(0, K, N)
  x = (rng.normal(size=(N, WIDTH)) + 2.0 * np.eye(K, WIDTH)[truth]).astype(
      np.float32)
  keras.utils.set_random_seed(SEED)
  inputs = keras.Input((WIDTH,))
  dense = keras.layers.Dense(K)
  _fit(keras.Model(inputs, keras.layers.Softmax()(dense(inputs))), x, truth)
  module = _ExampleClassifier(dense.kernel.numpy(), dense.bias.numpy())
  path = root / "examples_savedmodel"
  tf.saved_model.save(module, str(path), signatures={
      "serving_default": module.examples, "by_name": module.records})
  given = _flipped(truth, SEED + 2)
  ids = np.array([f"ex-{i:03d}" for i in range(N)])
  columns = {"id": ids, "x": x, "label": given}
  records = _examples(columns)
  _write_tfrecord(root / "examples.tfrecord", records)
  pq.write_table(pa.table({"id": ids, "x": list(x), "label": given}),
                 root / "examples.parquet")
  probs = _signature_probs(path, examples=tf.constant(records))
  return types.SimpleNamespace(path=path, ids=ids, given=given, probs=probs)


def test_serialized_examples_input_is_detected(root, serialized):
  out, summary = _audited(root, "examples-auto", root / "examples.tfrecord",
                          serialized.path, fmt="tfrecord")
  _check(out, summary, serialized.ids, serialized.given,
         _keras_loss_on(serialized.given, serialized.probs), serialized.probs)


@pytest.mark.slow
def test_serialized_examples_input_named(root, serialized):
  out, summary = _audited(root, "examples-named", root / "examples.tfrecord",
                          serialized.path, fmt="tfrecord",
                          model={"signature": "by_name",
                                 "serialized_examples_input": "records"})
  _check(out, summary, serialized.ids, serialized.given,
         _keras_loss_on(serialized.given, serialized.probs), serialized.probs)


@pytest.mark.parametrize("named, message", [
    (True, "lossaudit: error: model.serialized_examples_input: needs"
     " input.format 'tfrecord' (Parquet rows are not serialized tf.Examples)."
     " Received: 'examples' with input.format 'parquet'"),
    (False, "lossaudit: error: model.serialized_examples_input: the model's"
     " only input, 'examples', is a string input, which usually takes"
     " serialized tf.Examples; they need input.format 'tfrecord'. Received:"
     " input.format 'parquet', and no column 'examples' in "),
])
def test_serialized_examples_input_refuses_parquet(root, serialized, capsys,
                                                   named, message):
  out = root / f"out-examples-parquet-{named}"
  config = base_config(root / "examples.parquet", serialized.path, out,
                       model={"serialized_examples_input": "examples"}
                       if named else {})
  config["input"]["format"] = "parquet"
  run_audit(config, exit_code=2)
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith(message)
  assert not (out / "summary.json").exists()


# 4. Sequences: padded per batch, or ragged.

VOCAB = 30


def _token_rows(truth, rng):
  """Token ids 1..VOCAB-1 of varying lengths; class c favours a third of
  them."""
  third = (VOCAB - 1) // K
  rows = []
  for c in truth:
    length = int(rng.integers(2, 10))
    own = rng.integers(1 + c * third, 1 + (c + 1) * third, length)
    other = rng.integers(1, VOCAB, length)
    rows.append(np.where(rng.random(length) < 0.8, own, other).astype(
        np.int64))
  return rows


def _padded(rows, length=None):
  length = length or max(len(r) for r in rows)
  out = np.zeros((len(rows), length), np.int64)
  for i, r in enumerate(rows):
    out[i, :min(len(r), length)] = r[:length]
  return out


def _token_classifier(length):
  """Token ids `(N, length)` (None: any length) → K softmax classes, over
  the mean of their embeddings (padding counts in the mean)."""
  keras.utils.set_random_seed(SEED)
  inputs = keras.Input((length,), dtype="int32", name="tokens")
  hidden = keras.layers.GlobalAveragePooling1D()(
      keras.layers.Embedding(VOCAB, 8)(inputs))
  return keras.Model(inputs, keras.layers.Dense(
      K, activation="softmax", name="probs")(hidden))


@pytest.fixture(scope="module")
def sequences(root):
  """A `.keras` model on token ids of any length (Input (None,), Embedding,
  GlobalAveragePooling1D: padding counts in the mean), and N rows of 2 to 9
  tokens as a Parquet list<int64> column."""
  rng = np.random.default_rng(SEED + 3)
  truth = rng.integers(0, K, N)
  rows = _token_rows(truth, rng)
  model = _token_classifier(None)
  _fit(model, _padded(rows).astype(np.int32), truth)
  path = root / "tokens.keras"
  model.save(path)
  given = _flipped(truth, SEED + 3)
  ids = np.array([f"seq-{i:03d}" for i in range(N)])
  pq.write_table(pa.table({"id": ids, "tokens": rows, "label": given}),
                 root / "tokens.parquet")
  return types.SimpleNamespace(path=path, ids=ids, given=given, rows=rows,
                               truth=truth)


def test_variable_length_input_padded_per_batch(root, sequences):
  # One file, one row group, a batch larger than the data: one batch, padded
  # with 0 to its longest row.
  out, summary = _audited(root, "tokens", root / "tokens.parquet",
                          sequences.path, batch_size=512)
  x = tf.constant(_padded(sequences.rows).astype(np.int32))
  expected, probs = _keras_in_graph(sequences.path, x, sequences.given)
  _check(out, summary, sequences.ids, sequences.given, expected, probs)



class _RaggedClassifier(tf.Module):
  """The mean of each row's token embeddings (no padding), then a dense
  layer and a softmax, on a tf.RaggedTensor of token ids."""

  def __init__(self, embeddings, kernel, bias):
    super().__init__()
    self.embeddings = tf.Variable(embeddings)
    self.kernel = tf.Variable(kernel)
    self.bias = tf.Variable(bias)

  @tf.function(input_signature=[tf.RaggedTensorSpec(
      [None, None], tf.int64, ragged_rank=1, row_splits_dtype=tf.int64)])
  def serve(self, tokens):
    mean = tf.reduce_mean(tf.gather(self.embeddings, tokens), axis=1)
    return {"probs": tf.nn.softmax(tf.matmul(mean, self.kernel) + self.bias)}


@pytest.mark.slow
def test_ragged_savedmodel_input(root, sequences):
  model = keras.models.load_model(sequences.path, compile=False)
  embedding, dense = model.layers[1], model.layers[-1]
  module = _RaggedClassifier(embedding.embeddings.numpy(),
                             dense.kernel.numpy(), dense.bias.numpy())
  path = root / "ragged_savedmodel"
  tf.saved_model.save(module, str(path),
                      signatures={"serving_default": module.serve})
  out, summary = _audited(root, "ragged", root / "tokens.parquet", path)
  # The signature takes the tf.RaggedTensor flat: values and row splits.
  splits = np.concatenate([[0], np.cumsum([len(r) for r in sequences.rows])])
  probs = _signature_probs(path, tokens=tf.constant(np.concatenate(
      sequences.rows)), tokens_1=tf.constant(splits))
  _check(out, summary, sequences.ids, sequences.given,
         _keras_loss_on(sequences.given, probs), probs)


# 5. Two inputs: text and numbers.


@pytest.fixture(scope="module")
def two_inputs(root):
  """A `.keras` model on a string input (Input (), multi-hot words) and a
  float vector, and N rows of both in Parquet."""
  rng = np.random.default_rng(SEED + 4)
  truth = rng.integers(0, K, N)
  texts = _texts(truth, rng)
  numbers = (rng.normal(size=(N, WIDTH)) + np.eye(K, WIDTH)[truth]).astype(
      np.float32)
  keras.utils.set_random_seed(SEED)
  vectorize = keras.layers.TextVectorization(max_tokens=32,
                                             output_mode="multi_hot")
  vectorize.adapt(texts)
  text_in = keras.Input((), dtype="string", name="text")
  number_in = keras.Input((WIDTH,), name="numbers")
  joined = keras.layers.Concatenate()([vectorize(text_in), number_in])
  model = keras.Model([text_in, number_in], keras.layers.Dense(
      K, activation="softmax")(joined))
  x = {"text": tf.constant(texts), "numbers": tf.constant(numbers)}
  _fit(model, x, truth)
  path = root / "two_inputs.keras"
  model.save(path)
  given = _flipped(truth, SEED + 4)
  ids = np.array([f"two-{i:03d}" for i in range(N)])
  pq.write_table(pa.table({"id": ids, "text": texts, "numbers": list(numbers),
                           "label": given}), root / "two_inputs.parquet")
  return types.SimpleNamespace(path=path, ids=ids, given=given, x=x)


@pytest.mark.slow
def test_text_and_numbers_inputs(root, two_inputs):
  out, summary = _audited(root, "two-inputs", root / "two_inputs.parquet",
                          two_inputs.path)
  expected, probs = _keras_in_graph(two_inputs.path, two_inputs.x,
                                    two_inputs.given)
  _check(out, summary, two_inputs.ids, two_inputs.given, expected, probs)


# 6. Class names.


@pytest.mark.slow
def test_label_vocabulary_list_on_tfrecord(root, text, text_parquet_run):
  names = np.array(CLASS_NAMES)[text.given]
  _write_tfrecord(root / "named.tfrecord", _examples(
      {"id": text.ids, "text": text.texts, "label": names}))
  out, summary = _audited(root, "named-list", root / "named.tfrecord",
                          text.path, fmt="tfrecord",
                          input={"label_vocabulary": CLASS_NAMES})
  assert summary["examples_scored"] == N
  assert _flagged(out) == _flagged(text_parquet_run[0])
  losses = _losses(out, text.ids)
  np.testing.assert_array_equal(losses["given_label"], text.given)
  np.testing.assert_array_equal(losses["given_class"], names)
  _, probs = _keras_in_graph(text.path, text.x, text.given)
  np.testing.assert_array_equal(losses["predicted_class"],
                                np.array(CLASS_NAMES)[probs.argmax(axis=1)])


@pytest.mark.slow
def test_label_vocabulary_file_and_an_unknown_name(root, text,
                                                   text_parquet_run):
  vocabulary = root / "classes.txt"
  vocabulary.write_text("\n".join(CLASS_NAMES) + "\n")
  names = list(np.array(CLASS_NAMES)[text.given]) + ["ecstatic"]
  pq.write_table(pa.table({"id": list(text.ids) + ["text-unknown"],
                           "text": text.texts + ["great good nice"],
                           "label": names}), root / "named.parquet")
  out, summary = _audited(root, "named-file", root / "named.parquet",
                          text.path,
                          input={"label_vocabulary": str(vocabulary)})
  assert _flagged(out) == _flagged(text_parquet_run[0])
  np.testing.assert_array_equal(_losses(out, text.ids)["given_class"],
                                names[:N])
  (dead,) = _dead(out)
  assert dead["id"] == "text-unknown"
  assert dead["reason"] == "label_out_of_range"
  assert "ecstatic" in dead["error"]
  assert summary["examples_read"] == N + 1
  assert summary["examples_scored"] == N
  assert summary["examples_dead_lettered"] == 1


# 7. Corrupt images.


@pytest.mark.slow
def test_corrupt_pngs_are_model_errors(root, png):
  n, corrupt = 1000, {"img/0005": "truncated", "img/0500": "garbage",
                      "img/0999": "bad crc"}
  rng = np.random.default_rng(SEED + 5)
  labels = rng.integers(0, K, n)
  encoded, _ = _encoded_images(labels, rng)
  ids = np.array([f"img/{i:04d}" for i in range(n)])
  for i, kind in enumerate(corrupt.values()):
    at = int(list(corrupt)[i].split("/")[1])
    good = encoded[at]
    encoded[at] = {"truncated": good[:len(good) // 2],
                   "garbage": bytes(rng.integers(0, 256, 64, np.uint8)),
                   "bad crc": good[:-5] + b"\x00" + good[-4:]}[kind]
    with pytest.raises(tf.errors.InvalidArgumentError):
      tf.io.decode_png(encoded[at])
  data = _write_tfrecord(root / "pngs.tfrecord", _examples({
      "image/id": ids, "image/encoded": encoded,
      "image/class/label": labels}))
  out, summary = _audited(
      root, "pngs", data, png.path, fmt="tfrecord", flag={"label_issues": None},
      input={"id_column": "image/id", "label_column": "image/class/label",
             "feature_columns": {"image_bytes": "image/encoded"}})
  dead = _dead(out)
  assert sorted(d["id"] for d in dead) == sorted(corrupt)
  assert {d["reason"] for d in dead} == {"model_error"}
  assert all(d["error"].startswith("InvalidArgumentError") for d in dead)
  assert summary["examples_scored"] == n - len(corrupt)
  assert summary["examples_read"] == (summary["examples_scored"] +
                                      summary["examples_dead_lettered"])
  keep = ~np.isin(ids, list(corrupt))
  probs = _signature_probs(png.path, image_bytes=tf.constant(
      [e for e, k in zip(encoded, keep) if k], tf.string))
  np.testing.assert_allclose(
      _losses(out, ids[keep])["loss"], _keras_loss_on(labels[keep], probs),
      rtol=RTOL, atol=ATOL)


# 8. The scorer alone: out of memory, and a model's data errors.


def _sparse_term(output):
  return LossTerm(output=output, name="out", label_column="label",
                  loss_name="sparse_categorical_crossentropy",
                  label_shape=(), label_dtype="int64", signals="sparse",
                  num_classes=K)


def test_out_of_memory_halves_the_batch(sequences):
  n = 1000
  rows = [sequences.rows[i % N] for i in range(n)]
  labels = np.resize(sequences.given, n)
  ids = [f"row-{i:04d}" for i in range(n)]
  spec = ScoringSpec(
      model_path=str(sequences.path), signature="serving_default",
      features=(Feature("tokens", "tokens", (None,), "int32"),),
      terms=(_sparse_term("probs"),), id_column="id")
  scorer = SmallMemoryScorer(spec)
  batch = pa.RecordBatch.from_pydict(
      {"id": ids, "tokens": rows, "label": labels})
  scored, dead = scorer.score("memory", batch)
  assert dead == []
  assert scorer.halvings == 4  # 1000 -> 500 -> 250 -> 125 -> 62.
  assert scorer.max_rows == 62
  assert sum(scorer.scored_sizes) == n
  assert max(scorer.scored_sizes) <= scorer.max_rows
  assert scored.column("id").to_pylist() == ids
  # Each part is padded to its own longest row.
  expected, start = [], 0
  for size in scorer.scored_sizes:
    part = slice(start, start + size)
    loss, _ = _keras_in_graph(sequences.path, tf.constant(_padded(
        rows[part]).astype(np.int32)), labels[part])
    expected.append(loss)
    start += size
  np.testing.assert_allclose(scored.column("loss").to_numpy(),
                             np.concatenate(expected), rtol=RTOL, atol=ATOL)
  assert scorer.halvings_in_thread() == 4


def test_a_record_too_large_alone_is_one_dead_letter(sequences):
  spec = ScoringSpec(
      model_path=str(sequences.path), signature="serving_default",
      features=(Feature("tokens", "tokens", (None,), "int32"),),
      terms=(_sparse_term("probs"),), id_column="id")
  batch = pa.RecordBatch.from_pydict({
      "id": ["a", "b", "c"], "tokens": [[1], [2, 3], [4]],
      "label": [0, 1, 2]})
  unchecked = SmallMemoryScorer(spec)
  unchecked.limit = 0  # Not even one row fits: not the data's fault...
  with pytest.raises(tf.errors.ResourceExhaustedError):
    unchecked.score("memory", batch)
  # ... unless the model is known to score this data.
  scorer = SmallMemoryScorer(spec, models=unchecked.models,
                              model_checked=True)
  scorer.limit = 0
  scored, dead = scorer.score("memory", batch)
  assert scored is None
  assert [(d["id"], d["reason"], d["error"]) for d in dead] == [
      (i, "model_error", "ResourceExhaustedError: OOM: test")
      for i in ("a", "b", "c")]
  assert scorer.max_rows == 1


def _png_spec(png):
  term = dataclasses.replace(_sparse_term("probs"),
                             label_column="image/class/label")
  return ScoringSpec(
      model_path=str(png.path), signature="serving_default",
      features=(Feature("image_bytes", "image/encoded", (), "string"),),
      terms=(term,), id_column="image/id")


def _png_batch(ids, encoded, labels):
  return pa.RecordBatch.from_pydict({
      "image/id": list(ids), "image/encoded": pa.array(encoded, pa.binary()),
      "image/class/label": list(labels)})


def test_model_errors_are_bisected_to_their_rows(png):
  scorer = BatchScorer(_png_spec(png))
  encoded = list(png.encoded[:16])
  encoded[3] = b"not a png"
  encoded[11] = encoded[11][:40]
  scored, dead = scorer.score("images", _png_batch(
      png.ids[:16], encoded, png.given[:16]))
  assert [(d["id"], d["reason"]) for d in dead] == [
      (png.ids[3], "model_error"), (png.ids[11], "model_error")]
  assert all(d["error"].startswith("InvalidArgumentError") and "DecodePng"
             in d["error"] and "\n" not in d["error"] for d in dead)
  keep = [i for i in range(16) if i not in (3, 11)]
  assert scored.column("id").to_pylist() == list(png.ids[keep])
  probs = _signature_probs(png.path, image_bytes=tf.constant(
      [encoded[i] for i in keep], tf.string))
  np.testing.assert_allclose(scored.column("loss").to_numpy(),
                             _keras_loss_on(png.given[keep], probs),
                             rtol=RTOL, atol=ATOL)
  # When every row fails alone, the model is at fault, not the data...
  corrupt = _png_batch(png.ids[:3], [b"x", b"y", b"z"], png.given[:3])
  with pytest.raises(tf.errors.InvalidArgumentError):
    scorer.score("images", corrupt)
  # ... unless the model is known to score this data (a run's workers,
  # after the pre-run check): then a shard of corrupt records is dead
  # letters.
  checked = BatchScorer(_png_spec(png), models=scorer.models,
                        model_checked=True)
  scored, dead = checked.score("images", corrupt)
  assert scored is None
  assert [(d["id"], d["reason"]) for d in dead] == [
      (i, "model_error") for i in png.ids[:3]]


def test_first_records_all_rejected_stop_the_run_with_the_cause(
    root, png, tmp_path, capsys):
  data = tmp_path / "corrupt.tfrecord"
  with tf.io.TFRecordWriter(str(data)) as writer:
    for record in _examples({
        "image/id": [f"bad-{i}" for i in range(5)],
        "image/encoded": [b"\x89PNG garbage"] * 5,
        "image/class/label": [0] * 5}):
      writer.write(record)
  config = {
      "input": {"pattern": str(data), "format": "tfrecord",
                "id_column": "image/id", "label_column": "image/class/label",
                "feature_columns": {"image_bytes": "image/encoded"}},
      "model": {"path": str(png.path)},
      "output": {"dir": str(tmp_path / "out")},
  }
  run_audit(config, exit_code=2)
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("lossaudit: error: model.path: the model")
  assert "InvalidArgumentError at " in err and "DecodePng" in err


# 9. A fixed-length input fed rows of other lengths.

LENGTH = 6


@pytest.fixture(scope="module")
def fixed(root, sequences):
  """A `.keras` model on exactly LENGTH token ids (rows here have 2 to 9)."""
  model = _token_classifier(LENGTH)
  _fit(model, _padded(sequences.rows, LENGTH).astype(np.int32),
       sequences.truth)
  path = root / "fixed.keras"
  model.save(path)
  return path


def _expected_fit(rows, pad_value, truncate):
  """Which rows fit LENGTH (rows of other lengths not padded or cut are
  wrong_size), and the fitted rows."""
  lengths = np.array([len(r) for r in rows])
  fits = ((lengths >= LENGTH) | (pad_value is not None)) & (
      (lengths <= LENGTH) | truncate)
  x = np.full((len(rows), LENGTH), 0 if pad_value is None else pad_value)
  for i, r in enumerate(rows):
    x[i, :min(len(r), LENGTH)] = r[:LENGTH]
  return fits, lengths, x.astype(np.int32)


@pytest.mark.parametrize("pad_value,truncate", [
    (None, False), (1, False), (None, True), (2, True)])
def test_fixed_length_input_pads_or_cuts(sequences, fixed, pad_value,
                                         truncate):
  spec = ScoringSpec(
      model_path=str(fixed), signature="serving_default",
      features=(Feature("tokens", "tokens", (LENGTH,), "int32"),),
      terms=(_sparse_term("probs"),), id_column="id", pad_value=pad_value,
      truncate=truncate)
  batch = pa.RecordBatch.from_pydict({
      "id": sequences.ids, "tokens": sequences.rows,
      "label": sequences.given})
  scored, dead = BatchScorer(spec).score("fixed", batch)
  fits, lengths, x = _expected_fit(sequences.rows, pad_value, truncate)
  assert fits.any() and fits.all() == (pad_value is not None and truncate)
  assert sorted(d["id"] for d in dead) == list(sequences.ids[~fits])
  for d in dead:
    length = lengths[list(sequences.ids).index(d["id"])]
    assert d["reason"] == "wrong_size"
    assert d["error"] == (f"feature 'tokens' has {length} values, expected"
                          f" {LENGTH}")
  assert scored.column("id").to_pylist() == list(sequences.ids[fits])
  expected, _ = _keras_in_graph(fixed, tf.constant(x[fits]),
                                sequences.given[fits])
  np.testing.assert_allclose(scored.column("loss").to_numpy(), expected,
                             rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_fixed_length_input_in_a_run(root, sequences, fixed):
  default, summary = _audited(root, "fixed", root / "tokens.parquet", fixed,
                              flag={"label_issues": None})
  fits, lengths, _ = _expected_fit(sequences.rows, None, False)
  assert summary["examples_scored"] == fits.sum()
  assert summary["dead_letter"]["by_reason"] == {"wrong_size": (~fits).sum()}
  out, summary = _audited(root, "fixed-fitted", root / "tokens.parquet",
                          fixed, input={"pad_value": 0, "truncate": True})
  _, _, x = _expected_fit(sequences.rows, 0, True)
  expected, probs = _keras_in_graph(fixed, tf.constant(x), sequences.given)
  _check(out, summary, sequences.ids, sequences.given, expected, probs)
