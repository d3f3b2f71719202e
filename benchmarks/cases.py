"""The text, image and serialized-example cases of `scripts/benchmark`.

Each case builds its data and model once (reused while the sizes match),
says how `lossaudit run` reads them (`audit_sections`) and times the plain
TensorFlow loop it is compared with (`run_plain_tf`):

- `text`: short synthetic sentences in TFRecord shards (`text` bytes,
  `label`, `id`) and a `.keras` model (TextVectorization, Embedding,
  average pooling, Dense softmax) taking the raw strings.
- `image`: small PNGs in TFRecord shards (`image/encoded` bytes) and a
  SavedModel whose serving signature decodes them (`tf.map_fn` of
  `decode_png`) and classifies them.
- `serialized`: the numeric data set (`throughput.build`) with two
  SavedModels of its MLP: one whose serving signature takes serialized
  tf.Examples (`examples`, parsed inside), one taking the parsed `x`
  (lossaudit's own decode path).

Labels are the model's own predictions with 10% flipped, as in the numeric
case, so the losses spread and label issues exist.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, Tuple

import numpy as np

from lossaudit import datasets

CASES = ("numeric", "text", "image", "serialized")
DEFAULT_EXAMPLES = {"numeric": 1_000_000, "text": 200_000, "image": 50_000,
                    "serialized": 1_000_000}
CLASSES = {"text": 4, "image": 10}
TEXT_LENGTH = 16  # TextVectorization's output_sequence_length.
TEXT_VOCABULARY = 2_000
IMAGE_SIZE = 32
SERIALIZED_MODEL = "serialized_model"
FEATURES_MODEL = "features_model"


def _up_to_date(directory: str, meta: Dict) -> bool:
  path = os.path.join(directory, "meta.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f) == meta


def _write_meta(directory: str, meta: Dict) -> None:
  with open(os.path.join(directory, "meta.json"), "w") as f:
    json.dump(meta, f)


def _flip(rng: np.random.Generator, labels: np.ndarray,
          classes: int) -> np.ndarray:
  """`labels` with 10% of them moved to another class."""
  labels = labels.copy()
  flip = rng.random(len(labels)) < 0.1
  labels[flip] = (labels[flip] + rng.integers(1, classes, flip.sum())
                  ) % classes
  return labels


def files(directory: str) -> list:
  """The data shards of a case's directory."""
  return sorted(glob.glob(os.path.join(directory, "data", "*.tfrecord*")))


def compression(directory: str) -> str:
  """The TFRecord compression of a case's shards, for tf.data."""
  return "GZIP" if files(directory)[0].endswith(".gz") else ""


# ---- text ------------------------------------------------------------------


def _sentences(rng: np.random.Generator, n: int) -> np.ndarray:
  """`n` sentences of 4 to 14 words of a Zipf-like vocabulary."""
  words = np.array([f"w{i}" for i in range(TEXT_VOCABULARY)])
  lengths = rng.integers(4, 15, n)
  # Zipf-like word frequencies, so the vocabulary is adapted realistically.
  ranks = np.minimum(rng.zipf(1.3, lengths.sum()), TEXT_VOCABULARY) - 1
  tokens = words[ranks]
  ends = np.cumsum(lengths)
  return np.array([" ".join(tokens[e - k:e]) for e, k in zip(ends, lengths)],
                  dtype=object)


def build_text(directory: str, examples: int, shards: int,
               seed: int = 0) -> Dict:
  """Writes the text shards and `model.keras`; reuses them when the sizes
  match."""
  classes = CLASSES["text"]
  meta = dict(case="text", examples=examples, shards=shards, classes=classes,
              vocabulary=TEXT_VOCABULARY, length=TEXT_LENGTH, seed=seed,
              labels="model argmax, 10% flipped")
  if _up_to_date(directory, meta):
    return meta
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  texts = _sentences(rng, examples)
  vectorize = keras.layers.TextVectorization(
      max_tokens=TEXT_VOCABULARY, output_sequence_length=TEXT_LENGTH)
  vectorize.adapt(tf.constant(texts[:20_000].astype(str)))
  inputs = keras.Input((1,), dtype="string", name="text")
  h = vectorize(inputs)
  h = keras.layers.Embedding(
      TEXT_VOCABULARY, 32,
      embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))(h)
  h = keras.layers.GlobalAveragePooling1D()(h)
  outputs = keras.layers.Dense(classes, activation="softmax", name="probs")(h)
  model = keras.Model(inputs, outputs)
  model.save(os.path.join(directory, "model.keras"))
  predicted = model.predict(tf.constant(texts.astype(str))[:, None],
                            batch_size=4096, verbose=0).argmax(axis=1)
  columns = {"id": np.char.add("t-", np.arange(examples).astype(str)),
             "text": texts.astype(str), "label": _flip(rng, predicted,
                                                       classes)}
  datasets.write_tfrecords(os.path.join(directory, "data"), columns,
                           num_shards=shards)
  _write_meta(directory, meta)
  return meta


# ---- image -----------------------------------------------------------------


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
  """`n` smooth-ish 32×32×3 uint8 images: 8×8 noise upsampled, plus a little
  pixel noise (so the PNGs are small but not trivial)."""
  low = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  up = np.repeat(np.repeat(low, IMAGE_SIZE // 8, axis=1), IMAGE_SIZE // 8,
                 axis=2)
  noise = rng.integers(0, 8, up.shape, dtype=np.uint8)
  return (up // 2 + noise).astype(np.uint8)


def _encode_pngs(images: np.ndarray) -> np.ndarray:
  """PNG bytes of each image, `(N,)` object array."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  encoded = (tf.data.Dataset.from_tensor_slices(images)
             .map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
             .batch(4096))
  out = np.empty(len(images), dtype=object)
  at = 0
  for batch in encoded:
    for value in batch.numpy():
      out[at] = value
      at += 1
  return out


def _image_module(model):
  """A `tf.Module` serving `model` on PNG bytes: `image` `(None,)` string →
  `probs` `(None, K)`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class ImageClassifier(tf.Module):
    """Decodes PNGs, scales them to [0, 1] and classifies them."""

    def __init__(self, model):
      super().__init__()
      self.model = model

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="image")])
    def serve(self, image):
      pixels = tf.map_fn(
          lambda png: tf.io.decode_png(png, channels=3), image,
          fn_output_signature=tf.TensorSpec(
              [IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8))
      pixels = tf.cast(pixels, tf.float32) / 255.0
      return {"probs": self.model(pixels, training=False)}

  return ImageClassifier(model)


def build_image(directory: str, examples: int, shards: int,
                seed: int = 0) -> Dict:
  """Writes the PNG shards and the decoding SavedModel (`model/`); reuses
  them when the sizes match."""
  classes = CLASSES["image"]
  meta = dict(case="image", examples=examples, shards=shards, classes=classes,
              size=IMAGE_SIZE, seed=seed, labels="model argmax, 10% flipped")
  if _up_to_date(directory, meta):
    return meta
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="pixels")
  h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
  h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  outputs = keras.layers.Dense(
      classes, activation="softmax", name="probs",
      kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(h)
  model = keras.Model(inputs, outputs)
  module = _image_module(model)
  tf.saved_model.save(module, os.path.join(directory, "model"),
                      signatures={"serving_default": module.serve})
  images = _images(rng, examples)
  predicted = model.predict(images.astype(np.float32) / 255.0,
                            batch_size=4096, verbose=0).argmax(axis=1)
  columns = {"id": np.char.add("i-", np.arange(examples).astype(str)),
             "image/encoded": _encode_pngs(images),
             "label": _flip(rng, predicted, classes)}
  datasets.write_tfrecords(os.path.join(directory, "data"), columns,
                           num_shards=shards, compression="")
  _write_meta(directory, meta)
  return meta


# ---- serialized tf.Examples ----------------------------------------------


def build_serialized(directory: str, features: int) -> None:
  """Exports the numeric case's `model.keras` (in `directory`, built by
  `throughput.build`) as two SavedModels: `serialized_model/` (input
  `examples`: serialized tf.Examples, parsed inside) and `features_model/`
  (input `x`)."""
  done = os.path.join(directory, "serialized.done")
  if os.path.exists(done):
    return
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  model = keras.models.load_model(os.path.join(directory, "model.keras"),
                                  compile=False)

  class Serving(tf.Module):
    """The MLP behind two signatures: parsed features, serialized
    tf.Examples."""

    def __init__(self, model):
      super().__init__()
      self.model = model

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples):
      parsed = tf.io.parse_example(
          examples, {"x": tf.io.FixedLenFeature([features], tf.float32)})
      return {"probs": self.model(parsed["x"], training=False)}

    @tf.function(input_signature=[
        tf.TensorSpec([None, features], tf.float32, name="x")])
    def serve_features(self, x):
      return {"probs": self.model(x, training=False)}

  module = Serving(model)
  tf.saved_model.save(module, os.path.join(directory, SERIALIZED_MODEL),
                      signatures={"serving_default": module.serve_examples})
  tf.saved_model.save(module, os.path.join(directory, FEATURES_MODEL),
                      signatures={"serving_default": module.serve_features})
  open(done, "w").close()


# ---- what lossaudit reads ------------------------------------------------


def audit_sections(case: str, directory: str, mode: str) -> Tuple[Dict, Dict]:
  """The `input` and `model` config sections of `lossaudit run` for `case`
  (`mode` `d` of `serialized`: the plain-feature SavedModel)."""
  pattern = os.path.join(directory, "data", "*.tfrecord*")
  inputs = {"pattern": pattern, "format": "tfrecord", "id_column": "id",
            "label_column": "label"}
  if case == "text":
    return inputs, {"path": os.path.join(directory, "model.keras")}
  if case == "image":
    return (dict(inputs, feature_columns={"image": "image/encoded"}),
            {"path": os.path.join(directory, "model")})
  if case == "serialized":
    if mode == "d":
      return inputs, {"path": os.path.join(directory, FEATURES_MODEL)}
    return inputs, {"path": os.path.join(directory, SERIALIZED_MODEL),
                    "serialized_examples_input": "examples"}
  raise ValueError(f"no lossaudit sections for case {case!r}")


# ---- plain TensorFlow ------------------------------------------------------


def plain_tf_losses(case: str, directory: str, batch_size: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """The plain tf.data loop of `case`: read and parse in parallel, model and
  Keras loss in one `tf.function`.

  Returns:
    `(ids, losses)`: `(N,)` strings and float64.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  shards = files(directory)
  records = tf.data.TFRecordDataset(
      shards, compression_type=compression(directory),
      num_parallel_reads=len(shards)).batch(batch_size)
  keys = {"id": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([], tf.int64)}
  if case == "text":
    model = keras.models.load_model(os.path.join(directory, "model.keras"),
                                    compile=False)
    spec = dict(keys, text=tf.io.FixedLenFeature([], tf.string))

    @tf.function
    def score(batch):
      probs = model(batch["text"][:, None], training=False)
      return loss_fn(batch["label"], probs)

  elif case == "image":
    loaded = tf.saved_model.load(os.path.join(directory, "model"))
    signature = loaded.signatures["serving_default"]
    spec = dict(keys, **{"image/encoded": tf.io.FixedLenFeature([],
                                                               tf.string)})

    @tf.function
    def score(batch):
      probs = signature(image=batch["image/encoded"])["probs"]
      return loss_fn(batch["label"], probs)

  elif case == "serialized":
    loaded = tf.saved_model.load(os.path.join(directory, SERIALIZED_MODEL))
    signature = loaded.signatures["serving_default"]
    spec = keys

    @tf.function
    def score(batch):
      probs = signature(examples=batch["__record__"])["probs"]
      return loss_fn(batch["label"], probs)

  else:
    raise ValueError(f"no plain TensorFlow loop for case {case!r}")

  def parse(records):
    parsed = tf.io.parse_example(records, spec)
    if case == "serialized":
      parsed["__record__"] = records
    return parsed

  dataset = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=False).prefetch(tf.data.AUTOTUNE)
  ids, losses = [], []
  for batch in dataset:
    losses.append(score(batch).numpy())
    ids.append(batch["id"].numpy())
  losses = np.concatenate(losses).astype(np.float64)
  ids = np.concatenate(ids).astype(str)
  return ids, losses
