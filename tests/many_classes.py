"""A real Keras softmax model with 1,000 outputs and its data (issue 33).

`build(directory)` draws Gaussian class clusters with some labels flipped
(`out_of_sample.make_data`), briefly trains a Keras MLP with a 1,000-way
softmax on the noisy labels, saves it as `.keras` and writes the rows as
TFRecord (`id`, `x`, `label`).

`python -m tests.many_classes DIR [--batch-sizes 256 1024]` builds them in DIR
and prints `BatchScorer`'s scoring throughput on that model at each batch
size, with and without the class probabilities (`keep_probs`, which the
label-issue rules read), beside the floor: the model and Keras' loss alone,
in one `tf.function` on the same numpy batches.
"""

import argparse
import functools
import os
import time
from typing import List, NamedTuple, Sequence

import numpy as np

from tests import out_of_sample

NUM_CLASSES = 1000
NUM_FEATURES = 32
NUM_EXAMPLES = 20000
NOISE = 0.1
HIDDEN = 128
EPOCHS = 3
TRAIN_BATCH_SIZE = 128
LEARNING_RATE = 3e-3
SEED = 0


class ManyClasses(NamedTuple):
  """What `build` wrote."""
  model: str  # The .keras file.
  data: str  # The folder of TFRecord shards.
  ids: np.ndarray  # (N,) str
  x: np.ndarray  # (N, NUM_FEATURES) float32
  labels: np.ndarray  # (N,) int64, the noisy labels the model was fit on.
  true_labels: np.ndarray  # (N,) int64
  noisy: np.ndarray  # (N,) bool


def build(directory: str, n: int = NUM_EXAMPLES, seed: int = SEED
          ) -> ManyClasses:
  """Writes the data and the trained model under `directory`."""
  import keras  # pylint: disable=g-import-not-at-top

  from lossaudit import datasets  # pylint: disable=g-import-not-at-top

  x, labels, true_labels, noisy = out_of_sample.make_data(
      n, NUM_CLASSES, NOISE, seed, NUM_FEATURES)
  ids = np.array([f"row-{i:05d}" for i in range(n)])
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((NUM_FEATURES,), name="x")
  hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(
      NUM_CLASSES, activation="softmax", name="probs")(hidden))
  model.compile(keras.optimizers.Adam(LEARNING_RATE),
                "sparse_categorical_crossentropy")
  model.fit(x, labels, batch_size=TRAIN_BATCH_SIZE, epochs=EPOCHS,
            verbose=0)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "many_classes.keras")
  model.save(path)
  data = os.path.join(directory, "data")
  datasets.write_tfrecords(data, {"id": ids, "x": x, "label": labels},
                           num_shards=2)
  return ManyClasses(path, data, ids, x, labels, true_labels, noisy)


def spec(model: str, keep_probs: bool = False):
  """The `ScoringSpec` of the model: input `x`, sparse labels `label`."""
  from lossaudit.spec import Feature, LossTerm, ScoringSpec  # pylint: disable=g-import-not-at-top

  return ScoringSpec(
      model_path=model, signature="serving_default",
      features=(Feature("x", "x", (NUM_FEATURES,), "float32"),),
      terms=(LossTerm(output="probs", name="out", label_column="label",
                      loss_name="sparse_categorical_crossentropy",
                      label_shape=(), label_dtype="int64", signals="sparse",
                      num_classes=NUM_CLASSES),),
      id_column="id", keep_probs=keep_probs)


def record_batch(built: ManyClasses, rows: slice = slice(None)):
  """`rows` of the data as one Arrow RecordBatch (`id`, `x`, `label`)."""
  from lossaudit import datasets  # pylint: disable=g-import-not-at-top

  return datasets.to_arrow({"id": built.ids[rows], "x": built.x[rows],
                            "label": built.labels[rows]}).to_batches()[0]


def scoring_throughput(built: ManyClasses, batch_sizes: Sequence[int],
                       repeats: int = 3) -> List[dict]:
  """Examples/s on every row, in batches of each size (the best of
  `repeats` passes, after one pass that traces; the ways take turns):
  `BatchScorer.score` on Arrow batches (`what`: `keep_probs` or not), and
  `keras`, the model and its loss alone."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from lossaudit.scoring import BatchScorer  # pylint: disable=g-import-not-at-top

  model = keras.models.load_model(built.model, compile=False)
  keras_loss = tf.function(
      lambda x, y: keras.losses.sparse_categorical_crossentropy(y, model(x)),
      input_signature=[tf.TensorSpec((None, NUM_FEATURES), tf.float32),
                       tf.TensorSpec((None,), tf.int64)])
  ways = {"keras": lambda batch: keras_loss(
      batch.column("x").values.to_numpy().reshape(-1, NUM_FEATURES),
      batch.column("label").to_numpy()).numpy()}
  for keep_probs in (False, True):
    ways[f"keep_probs={keep_probs}"] = functools.partial(
        BatchScorer(spec(built.model, keep_probs)).score, "bench")
  rows = []
  for size in batch_sizes:
    batches = [record_batch(built, slice(at, at + size))
               for at in range(0, len(built.ids), size)]
    # Interleaved, so that a change in the machine's load falls on each.
    times = {what: [] for what in ways}
    for _ in range(repeats + 1):
      for what, score in ways.items():
        start = time.perf_counter()
        for batch in batches:
          score(batch)
        times[what].append(time.perf_counter() - start)
    rows += [{"batch_size": size, "what": what,
              "examples_per_s": len(built.ids) / min(seconds[1:])}
             for what, seconds in times.items()]
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tests.many_classes")
  parser.add_argument("dir")
  parser.add_argument("--batch-sizes", type=int, nargs="+",
                      default=[256, 1024])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  built = build(args.dir)
  print(f"K={NUM_CLASSES}, N={len(built.ids)}, {NUM_FEATURES} features,"
        f" hidden {HIDDEN}")
  for row in scoring_throughput(built, args.batch_sizes, args.repeats):
    print(f"batch_size {row['batch_size']:5d}  {row['what']:16}"
          f" {row['examples_per_s']:10,.0f} examples/s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
