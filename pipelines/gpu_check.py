"""`scripts/check-gpu-image`: does this machine (or image) score on a GPU?

Run inside the worker image (`docker run --gpus all --entrypoint
/opt/lossaudit/scripts/check-gpu-image IMAGE`) or on any GPU machine with
the project installed. It asks TensorFlow for its GPUs, then scores one
batch through lossaudit's own scoring path (`BatchScorer`, as
`ScoreBatches` does on a worker) with `runtime.device: gpu`, using a tiny
Keras model saved in a temporary directory, and checks the losses against
the same model's predictions on the CPU. One line says what it found; the
exit code is 0 when a batch was scored on /GPU:0, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Optional, Sequence, Tuple

PROG = "check-gpu-image"
ROWS = 256
FEATURES = 8
CLASSES = 3


def _build_info() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  info = tf.sysconfig.get_build_info()
  if not info.get("is_cuda_build"):
    return f"TensorFlow {tf.__version__} (not built with CUDA)"
  return (f"TensorFlow {tf.__version__} (CUDA {info.get('cuda_version')},"
          f" cuDNN {info.get('cudnn_version')})")


def score_one_batch(workdir: str, device: str = "gpu") -> Tuple[str, float]:
  """Scores `ROWS` rows of a tiny softmax classifier on the GPU.

  Args:
    workdir: where the model is saved.
    device: `runtime.device` (`cpu` checks this check on a machine without
      a GPU).

  Returns:
    `(device, max_error)`: the device `BatchScorer` scored on and the
    largest difference between its losses and `-log p[label]` of the same
    model's predictions on the CPU.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from lossaudit import datasets, scoring  # pylint: disable=g-import-not-at-top
  from lossaudit.spec import Feature, LossTerm, ScoringSpec  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  with tf.device("/CPU:0"):
    inputs = keras.Input((FEATURES,), name="x")
    outputs = keras.layers.Dense(CLASSES, activation="softmax",
                                 name="probs")(inputs)
    model = keras.Model(inputs, outputs)
  path = os.path.join(workdir, "tiny.keras")
  model.save(path)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
  labels = rng.integers(0, CLASSES, ROWS)
  batch = datasets.to_arrow({"id": np.array([f"r{i}" for i in range(ROWS)]),
                             "x": x, "label": labels}).to_batches()[0]
  spec = ScoringSpec(
      model_path=path, signature="serving_default",
      features=(Feature("x", "x", (FEATURES,), "float32"),),
      terms=(LossTerm(output="probs", name="out", label_column="label",
                      loss_name="sparse_categorical_crossentropy",
                      label_shape=(), label_dtype="int64", signals="sparse",
                      num_classes=CLASSES),),
      id_column="id", device=device)
  scorer = scoring.BatchScorer(spec)
  scored, dead = scorer.score("check-gpu-image", batch)
  if dead or scored is None or scored.num_rows != ROWS:
    raise RuntimeError(f"expected {ROWS} scored rows. Received:"
                       f" {0 if scored is None else scored.num_rows} scored,"
                       f" {len(dead)} dead letters")
  with tf.device("/CPU:0"):
    probs = model(x, training=False).numpy()
  expected = -np.log(np.clip(probs[np.arange(ROWS), labels], 1e-7, 1.0))
  losses = scored.column("loss").to_numpy()
  return scorer.device, float(np.max(np.abs(losses - expected)))


def check() -> Tuple[int, str]:
  """Returns `(exit code, the one line to print)`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  build = _build_info()
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return 1, (f"{PROG}: FAILED: no GPU visible to TensorFlow"
               f" (tf.config.list_physical_devices('GPU') is empty); {build};"
               f" LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')!r}")
  names = ", ".join(
      tf.config.experimental.get_device_details(g).get("device_name", g.name)
      for g in gpus)
  try:
    with tempfile.TemporaryDirectory(prefix="check-gpu-image-") as workdir:
      device, error = score_one_batch(workdir)
  except Exception as e:  # pylint: disable=broad-except
    return 1, (f"{PROG}: FAILED: {len(gpus)} GPU(s) visible ({names}) but"
               f" scoring one batch failed: {type(e).__name__}:"
               f" {str(e).splitlines()[0] if str(e) else ''}; {build}")
  if device != "/GPU:0" or not error < 1e-4:
    return 1, (f"{PROG}: FAILED: scored on {device} with a largest loss"
               f" difference from the CPU of {error:.3g} (expected /GPU:0"
               f" and < 1e-4); {build}")
  return 0, (f"{PROG}: ok: {len(gpus)} GPU(s) visible ({names}); {build};"
             f" {ROWS} rows scored by lossaudit on {device}, losses within"
             f" {error:.1g} of the CPU's")


def main(argv: Optional[Sequence[str]] = None) -> int:
  del argv  # No options.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  code, line = check()
  print(line, file=sys.stdout if code == 0 else sys.stderr)
  return code


if __name__ == "__main__":
  sys.exit(main())
